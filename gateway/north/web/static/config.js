/* CONFIG: capacities, cell count, SN, MOS/heater/fan/buzzer/sleep controls, anti-theft, the pack's
   own inverter protocol (PACE) and the firmware upgrade with its live progress. */
"use strict";
(() => {
  const { t, $, el, num, time, dur } = UI;
  let pack = null, info = null, job = null, jobCtrl = null;
  const path = () => UI.packPath(pack);
  function kv(dl, rows) { dl.replaceChildren(...rows.flatMap(([k, v, id]) => [el("dt", { text: k }), el("dd", { text: v, id: id || null })])); }
  function summary(res) {
    if (!res || typeof res !== "object") return String(res);
    if (res.packs) return res.packs.map((p) => `${p.pack}: ${p.outcome}${p.detail ? " · " + p.detail : ""}` + (p.items || []).map((i) => ` [${i.name}: ${i.outcome}${i.after !== undefined && i.after !== null ? " → " + i.after : ""}]`).join("")).join("\n");
    return JSON.stringify(res);
  }

  async function loadCapacities() {
    if (!UI.can("operator")) return;
    const c = await UI.api("GET", path() + "/capacities");
    $("#cap-full").value = c.full_ah ?? "";
    $("#cap-remain").value = c.remaining_ah ?? "";
    $("#cap-nominal").value = c.nominal_ah ?? "";
    $("#cap-info").textContent = [t("param.read_at", { t: time(c.measured_at), source: c.nominal_source || "-", family: "" }), ...(c.warnings || [])].join(" · ");
  }
  UI.act($("#cap-write"), async () => {
    const v = (id) => ($(id).value === "" ? null : Number($(id).value));
    const res = await UI.api("PUT", path() + "/capacities", { full_ah: v("#cap-full"), remaining_ah: v("#cap-remain"), nominal_ah: v("#cap-nominal"), allow_inferred: $("#cap-inferred").checked });
    $("#cap-info").textContent = summary(res);
  });
  UI.act($("#cells-write"), async () => {
    const res = await UI.api("PUT", path() + "/cell-count", { cells: Number($("#cells").value), confirm: $("#cells-confirm").checked });
    $("#cells-info").textContent = summary(res);
  });
  UI.act($("#serial-write"), async () => {
    const res = await UI.api("PUT", path() + "/serial", { serial: $("#serial").value });
    $("#serial-info").textContent = summary(res);
  });

  async function loadControls() {
    if (!UI.can("operator")) return;
    const c = await UI.api("GET", path() + "/controls");
    const tm = (info && info.telemetry) || {};
    const state = { charge_mos: tm.charge_mos_on, discharge_mos: tm.discharge_mos_on, heater: tm.heater_on, fan: tm.fan_on };
    $("#controls tbody").replaceChildren(...c.actions.map((a) => {
      const on = el("button", { id: `ctl-${a.action}-on`, type: "button", "data-min-role": "admin", text: t("state.on") });
      const off = el("button", { id: `ctl-${a.action}-off`, type: "button", class: "secondary", "data-min-role": "admin", text: t("state.off") });
      for (const [b, v] of [[on, true], [off, false]]) UI.act(b, async () => {
        if (a.action === "forced_sleep" && v && !confirm(t("cfg.sleep_confirm"))) return;
        const res = await UI.api("POST", path() + "/control", { action: a.action, on: v, allow_inferred: $("#ctl-inferred").checked });
        UI.showError(b, null);
        b.closest("tr").querySelector(".res").textContent = summary(res);
      });
      const st = state[a.action];
      return el("tr", {}, el("td", { text: t("ctl." + a.action) === "ctl." + a.action ? a.action : t("ctl." + a.action) }),
        el("td", { text: st === undefined || st === null ? "–" : st ? t("state.on") : t("state.off") }),
        el("td", {}, on, " ", off), el("td", { class: "note" }, a.note || "", el("div", { class: "res" })));
    }));
    if (c.refuses_both_mos_off) $("#controls tbody").append(el("tr", {}, el("td", { colspan: 4, class: "note", text: t("cfg.both_mos") })));
    UI.applyRole();
  }

  async function loadAntiTheft() {
    if (!UI.can("operator")) return;
    const a = await UI.api("GET", path() + "/anti-theft");
    kv($("#at-state"), [
      [t("at.locked"), a.locked === null || a.locked === undefined ? "–" : a.locked ? t("state.on") : t("state.off")],
      [t("at.mode"), a.mode ? Object.entries(a.mode).map(([k, v]) => `${t("at." + k)}: ${v ? t("state.on") : t("state.off")}`).join(", ") : (a.mode_source || "–")],
      [t("at.timeout"), a.comm_timeout_h === null || a.comm_timeout_h === undefined ? (a.comm_timeout_note || "–") : num(a.comm_timeout_h, 0, "h")],
    ]);
  }
  UI.act($("#at-write"), async () => {
    const body = {};
    for (const k of ["communication", "physical", "charge_activation", "sleep_voltage"]) {
      const v = $("#at-" + k).value;
      if (v !== "") body[k] = v === "true";
    }
    if ($("#at-timeout").value !== "") body.comm_timeout_h = Number($("#at-timeout").value);
    const res = await UI.api("PUT", path() + "/anti-theft", body);
    $("#at-info").textContent = summary(res);
    await loadAntiTheft();
  });
  UI.act($("#at-disable"), async () => {
    const res = await UI.api("PUT", path() + "/anti-theft", { communication: false, physical: false, charge_activation: false, sleep_voltage: false });
    $("#at-info").textContent = summary(res);
    await loadAntiTheft();
  });
  UI.act($("#at-unlock"), async () => {
    const res = await UI.api("POST", path() + "/unlock", {});
    $("#at-info").textContent = summary(res);
    await loadAntiTheft();
  });

  async function loadPackProtocol() {
    const family = info && info.identity && info.identity.protocol;
    if (family !== "pace") {
      kv($("#pp-state"), [[t("f.protocol"), family || "–"], ["", t("cfg.pack_protocol_na")]]);
      for (const id of ["#pp-can", "#pp-rs485", "#pp-mode", "#pp-write"]) $(id).dataset.locked = "1";
      UI.applyRole();
      return;
    }
    for (const id of ["#pp-can", "#pp-rs485", "#pp-mode", "#pp-write"]) $(id).dataset.locked = "0";
    UI.applyRole();
    if (!UI.can("operator")) return;
    const p = await UI.api("GET", path() + "/inverter-protocol");
    kv($("#pp-state"), Object.entries(p).filter(([k]) => k !== "pack").map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]));
  }
  UI.act($("#pp-write"), async () => {
    const body = {};
    if ($("#pp-can").value !== "") body.can = Number($("#pp-can").value);
    if ($("#pp-rs485").value !== "") body.rs485 = Number($("#pp-rs485").value);
    if ($("#pp-mode").value) body.mode = $("#pp-mode").value;
    const res = await UI.api("PUT", path() + "/inverter-protocol", body);
    UI.showError($("#pp-write"), null);
    kv($("#pp-state"), [[t("col.outcome"), summary(res)]]);
  });

  // ---- firmware --------------------------------------------------------------------------------
  async function loadImages() {
    if (!UI.can("admin")) return;
    const imgs = await UI.api("GET", "/api/firmware/images");
    $("#fw-image").replaceChildren(...imgs.map((i) => el("option", { value: i.id, dataset: { size: i.size }, text: `${i.version} · ${i.family} · ${i.target} · ${UI.bytes(i.size)}` })));
  }
  UI.act($("#fw-upload"), async () => {
    const f = $("#fw-file").files[0];
    if (!f) throw new UI.ApiError(0, t("err.no_file"));
    const data = await f.arrayBuffer();
    const info2 = await UI.api("POST", `/api/firmware/images?filename=${encodeURIComponent(f.name)}`, data, { headers: { "Content-Type": "application/octet-stream" } });
    await loadImages();
    $("#fw-image").value = info2.id;
  });
  let rate = null; // [t0 ms, blocks at t0] of the current run, for the time left
  function imageSize(id) {
    const o = Array.from($("#fw-image").options).find((x) => x.value === id);
    return o ? Number(o.dataset.size) : null;
  }
  function showJob(j) {
    if (!job || job.id !== j.id || j.blocks_done < (rate ? rate[1] : 0)) rate = null;
    job = j;
    const total = j.blocks_total || 0, done = j.blocks_done || 0;
    if (!rate && j.state === "running") rate = [Date.now(), done];
    let eta = null;
    if (rate && done > rate[1]) eta = ((total - done) * (Date.now() - rate[0])) / 1000 / (done - rate[1]);
    $("#fw-progress").max = total || 1;
    $("#fw-progress").value = Math.min(done, total || 1);
    const size = imageSize(j.image_id);
    const rows = [[t("fw.job"), j.id], [t("fw.state"), t("fwstate." + j.state) + (j.phase ? " · " + j.phase : ""), "fw-job-state"],
      [t("fw.blocks"), `${done} / ${total} (${num(j.percent, 1, "%")})`, "fw-blocks"]];
    if (size && total) rows.push([t("fw.bytes"), `${UI.bytes(Math.round((size * done) / total))} / ${UI.bytes(size)}`]);
    rows.push([t("fw.eta"), j.state === "running" ? dur(eta) : "–"]);
    rows.push([t("fw.from"), j.old_version || "–"], [t("fw.to"), j.new_version || "–"]);
    const current = info && info.identity && info.identity.version;
    if (j.state === "done") rows.push([t("fw.final"), current || j.new_version, "fw-final"]);
    if (j.detail) rows.push([t("col.detail"), j.detail]);
    if (j.history && j.history.length) rows.push([t("fw.log"), j.history.slice(-4).join(" · ")]);
    kv($("#fw-state"), rows);
    const running = j.state === "running" || j.state === "pending";
    $("#fw-pause").dataset.locked = running ? "0" : "1";
    $("#fw-abort").dataset.locked = running ? "0" : "1";
    $("#fw-resume").dataset.locked = ["interrupted", "aborted", "failed"].includes(j.state) ? "0" : "1";
    UI.applyRole();
  }
  let following = null;
  async function follow(id) {
    if (following === id) return; // already streaming this job's progress
    if (jobCtrl) jobCtrl.abort();
    jobCtrl = new AbortController();
    following = id;
    try { await UI.sse(`/api/firmware/jobs/${encodeURIComponent(id)}/events`, showJob, jobCtrl.signal); }
    catch (e) { if (e.name !== "AbortError") UI.showError($("#fw-start"), e); }
    finally { if (following === id) following = null; }
    try { showJob(await UI.api("GET", `/api/firmware/jobs/${encodeURIComponent(id)}`)); } catch (_) { /* shown above */ }
  }
  UI.act($("#fw-start"), async () => {
    const [bus, address] = pack.split("/");
    const j = await UI.api("POST", "/api/firmware/jobs", { bus, address: Number(address), image: $("#fw-image").value });
    showJob(j);
    follow(j.id);
  });
  UI.act($("#fw-pause"), async () => { showJob(await UI.api("POST", `/api/firmware/jobs/${job.id}/abort`, {})); });
  UI.act($("#fw-abort"), async () => { if (!confirm(t("fw.abort_confirm"))) return; showJob(await UI.api("POST", `/api/firmware/jobs/${job.id}/abort`, {})); });
  UI.act($("#fw-resume"), async () => { showJob(await UI.api("POST", `/api/firmware/jobs/${job.id}/resume`, {})); follow(job.id); });
  async function loadJobs() {
    if (!UI.can("operator")) return;
    const s = await UI.api("GET", "/api/firmware/jobs");
    const jobs = (s.jobs || []).filter((j) => j.pack === pack || `${j.bus}/${j.address}` === pack);
    if (jobs.length) {
      const last = jobs[jobs.length - 1];
      showJob(last);
      if (["running", "pending"].includes(last.state)) follow(last.id);
    }
  }

  async function loadAll() {
    const jobs = [[loadCapacities, "#cap-write"], [loadControls, "#ctl-inferred"], [loadAntiTheft, "#at-write"], [loadPackProtocol, "#pp-write"], [loadImages, "#fw-upload"], [loadJobs, "#fw-start"]];
    for (const [fn, ctl] of jobs) { try { await fn(); } catch (e) { UI.showError($(ctl), e); } }
  }
  UI.onRole(() => { if (pack) loadAll(); });
  UI.ready.then(() => UI.packPicker($("#pack"), (key, p) => {
    pack = key; info = p;
    $("#ident").textContent = p ? `${(p.identity && p.identity.serial) || ""} · ${(p.identity && p.identity.version) || ""}` : "";
    $("#serial").value = (p && p.identity && p.identity.serial) || "";
    loadAll();
  })).catch((e) => UI.showError($("#pack"), e));
  UI.live((doc) => {
    const p = doc.packs.find((x) => `${x.bus}/${x.address}` === pack);
    if (p && job && job.state === "done" && `${job.bus}/${job.address}` === pack) { info = p; showJob(job); }
    if (p) { info = p; $("#ident").textContent = `${(p.identity && p.identity.serial) || ""} · ${(p.identity && p.identity.version) || ""} · ${t("avail." + p.availability)}`; }
  });
})();
