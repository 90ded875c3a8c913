/* STORAGE: pack clock vs gateway clock, history download with progress (stop/resume), the
   downloaded records (sortable, filterable, charted, CSV/XLSX), delete, storage interval. */
"use strict";
(() => {
  const { t, $, el, num, time, dur } = UI;
  let pack = null, family = null, records = [], dlCtrl = null;
  const path = () => UI.packPath(pack);
  const busAddr = () => { const [bus, a] = pack.split("/"); return { bus, address: Number(a) }; };
  function kv(dl, rows) { dl.replaceChildren(...rows.flatMap(([k, v, id]) => [el("dt", { text: k }), el("dd", { text: v, id: id || null })])); }
  const epoch = (v) => (v ? new Date(v).getTime() / 1000 : null);

  async function loadClock() {
    if (!UI.can("operator")) return;
    const c = await UI.api("GET", `/api/clock?packs=${encodeURIComponent(pack)}`);
    const p = c.packs[0] || {};
    const bad = p.drift_s !== null && p.drift_s !== undefined && Math.abs(p.drift_s) > c.max_drift_s;
    kv($("#clock"), [
      [t("st.pack_time"), time(p.pack_time)], [t("st.gw_time"), time(c.gateway_time)],
      [t("st.drift"), (p.drift_s === null || p.drift_s === undefined ? "–" : num(p.drift_s, 1, "s")) + (bad ? " ⚠ " + t("st.drift_high", { max: c.max_drift_s }) : ""), "drift"],
      [t("col.detail"), p.error || p.source || "–"],
    ]);
  }
  UI.act($("#clock-read"), loadClock);
  UI.act($("#clock-sync"), async () => {
    await UI.api("POST", "/api/clock/sync", { packs: [pack] });
    await loadClock();
  });

  async function loadInterval() {
    if (!UI.can("operator")) return;
    const r = await UI.api("GET", path() + "/history/interval");
    $("#interval").value = r.interval_min;
    $("#interval-info").textContent = t("st.interval_now", { n: r.interval_min });
    if (family === "tianpower") {
      const rt = await UI.api("GET", path() + "/history/record-time");
      kv($("#rtime"), [[t("st.start"), rt.start || "–"], [t("st.end"), rt.end || "–"]]);
    } else kv($("#rtime"), [["", t("st.record_time_na")]]);
  }
  UI.act($("#interval-write"), async () => {
    const r = await UI.api("PUT", path() + "/history/interval", { interval_min: Number($("#interval").value) });
    $("#interval-info").textContent = t("st.interval_written", { n: r.interval_min ?? $("#interval").value });
  });
  UI.act($("#rt-write"), async () => {
    await UI.api("PUT", path() + "/history/record-time", { which: $("#rt-which").value, when: $("#rt-when").value });
    await loadInterval();
  });

  // ---- download ----------------------------------------------------------------------------------
  function showJob(j) {
    const count = j.count || 0;
    $("#dl-progress").max = count || 1;
    $("#dl-progress").value = Math.min(j.next_index ?? j.read ?? 0, count || 1);
    kv($("#dl-state"), [
      [t("fw.state"), t("dlstate." + j.state) === "dlstate." + j.state ? j.state : t("dlstate." + j.state), "dl-job-state"],
      [t("st.records_read"), `${j.next_index ?? j.read ?? 0} / ${j.count ?? "?"}`, "dl-read"],
      [t("st.stored"), `${j.stored ?? 0} (${t("st.duplicates")}: ${j.duplicates ?? 0})`],
      [t("st.rate"), j.rate_per_s ? num(j.rate_per_s, 1, t("st.per_s")) : "–"], [t("fw.eta"), dur(j.eta_s)],
      [t("col.detail"), j.detail || "–"],
    ]);
  }
  async function follow() {
    if (dlCtrl) dlCtrl.abort();
    dlCtrl = new AbortController();
    const { bus, address } = busAddr();
    let last = null;
    try { await UI.sse(`/api/history/jobs/events?bus=${encodeURIComponent(bus)}&address=${address}`, (j) => { last = j; showJob(j); }, dlCtrl.signal); }
    catch (e) { if (e.name !== "AbortError") UI.showError($("#dl-start"), e); }
    if (last) { await loadEvents(); await loadRecords(); }
  }
  UI.act($("#dl-start"), async () => {
    const jobs = await UI.api("POST", "/api/history/pull", { ...busAddr(), resume: $("#dl-resume").checked });
    if (jobs && jobs[0]) showJob(jobs[0]);
    follow();
  });
  UI.act($("#dl-stop"), async () => {
    const r = await UI.api("POST", "/api/history/stop", busAddr());
    $("#dl-stop").after();
    if (!r.stopped || !r.stopped.length) UI.showError($("#dl-stop"), t("st.nothing_running"));
  });
  async function loadJob() {
    if (!UI.can("operator")) return;
    const s = await UI.api("GET", "/api/history/jobs");
    const run = (s.running || []).find((j) => j.pack === pack);
    if (run) { showJob(run); follow(); return; }
    const last = (s.jobs || []).find((j) => j.pack === pack);
    if (last) showJob({ ...last, next_index: last.next_index, read: last.next_index });
    else kv($("#dl-state"), [[t("fw.state"), t("st.no_download")]]);
  }

  // ---- records -------------------------------------------------------------------------------------
  async function loadEvents() {
    if (!UI.can("viewer")) return;
    const ev = await UI.api("GET", "/api/history/events");
    const keep = $("#f-event").value;
    $("#f-event").replaceChildren(el("option", { value: "", text: t("st.all_events") }), ...ev.map((e) => el("option", { value: e.event, text: `${e.event} (${e.records})` })));
    $("#f-event").value = keep;
  }
  function query() {
    const { bus, address } = busAddr();
    const q = new URLSearchParams({ bus, address });
    if ($("#f-event").value) q.set("event", $("#f-event").value);
    const s = epoch($("#f-since").value), u = epoch($("#f-until").value);
    if (s) q.set("since", s);
    if (u) q.set("until", u);
    return q;
  }
  const mx = (a) => (a && a.length ? Math.max(...a) : null);
  const mn = (a) => (a && a.length ? Math.min(...a) : null);
  async function loadRecords() {
    if (!UI.can("viewer")) return;
    const q = query();
    q.set("limit", $("#f-limit").value || "1000");
    const r = await UI.api("GET", "/api/history/records?" + q);
    records = r.records;
    $("#rec-count").textContent = t("st.count", { shown: records.length, total: r.total });
    $("#records tbody").replaceChildren(...records.map((x) => {
      const cmax = mx(x.cell_voltages_v), cmin = mn(x.cell_voltages_v), tmax = mx(x.temperatures_c);
      const td = (v, d, cls = "num") => el("td", { class: cls, dataset: { v: v ?? "" }, text: num(v, d) });
      return el("tr", {}, el("td", { class: "num", dataset: { v: x.id }, text: x.id }), el("td", { dataset: { v: x.recorded_at }, text: time(x.recorded_at) }),
        el("td", { text: x.event }), td(x.voltage_v, 2), td(x.current_a, 1), td(x.soc_pct, 0), td(cmax, 3), td(cmin, 3), td(tmax, 0));
    }));
    chart();
  }
  function chart() {
    const key = $("#chart-value").value;
    const f = { voltage_v: (x) => x.voltage_v, current_a: (x) => x.current_a, soc_pct: (x) => x.soc_pct,
      cell_max: (x) => mx(x.cell_voltages_v), cell_min: (x) => mn(x.cell_voltages_v), temp_max: (x) => mx(x.temperatures_c) }[key];
    const pts = records.map((x) => [x.recorded_at, f(x)]).sort((a, b) => a[0] - b[0]);
    UI.lineChart($("#rec-chart"), [{ name: $("#chart-value").selectedOptions[0].textContent, points: pts }], { digits: key.startsWith("cell") ? 3 : 1 });
  }
  $("#chart-value").addEventListener("change", chart);
  UI.act($("#rec-load"), loadRecords);
  UI.act($("#rec-csv"), () => UI.download("/api/history/export?format=csv&" + query(), "history.csv"));
  UI.act($("#rec-xlsx"), () => UI.download("/api/history/export?format=xlsx&" + query(), "history.xlsx"));
  UI.sortable($("#records"));

  UI.act($("#del"), async () => {
    const r = await UI.api("POST", path() + "/history/delete", { confirm: $("#del-confirm").value || null });
    $("#del-info").textContent = typeof r === "object" ? Object.entries(r).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ") : String(r);
  });

  async function loadAll() {
    for (const [fn, ctl] of [[loadClock, "#clock-read"], [loadInterval, "#interval-write"], [loadJob, "#dl-start"], [loadEvents, "#rec-load"], [loadRecords, "#rec-load"]]) {
      try { await fn(); } catch (e) { UI.showError($(ctl), e); }
    }
  }
  UI.onRole(() => { if (pack) loadAll(); });
  UI.ready.then(() => UI.packPicker($("#pack"), (key, p) => {
    pack = key; family = p && p.identity && p.identity.protocol;
    if (dlCtrl) dlCtrl.abort();
    loadAll();
  })).catch((e) => UI.showError($("#pack"), e));
  UI.live(() => {});
})();
