/* PARAM: the pack's protection and alarm tables as the vendor tool lists them; read, edit one or
   many, dry-run diff, write with read-back per parameter, export/import, load origin. */
"use strict";
(() => {
  const { t, $, $$, el, num, time } = UI;
  let pack = null;
  let params = [];

  function fmtVal(p, v) {
    if (v === null || v === undefined) return "–";
    if (p.choices && p.choices.length) {
      const c = p.choices.find((x) => x.value === v);
      return c ? `${v} · ${c.meaning}` : String(v);
    }
    return String(+Number(v).toFixed(4));
  }
  function editor(p) {
    const id = "new-" + p.name.replace(/[^A-Za-z0-9_-]/g, "_");
    const label = t("param.new_value_of", { name: p.label });
    let input;
    if (p.choices && p.choices.length) {
      input = el("select", { id, "aria-label": label, "data-min-role": "admin", dataset: { name: p.name } },
        el("option", { value: "", text: "—" }), ...p.choices.map((c) => el("option", { value: c.value, text: `${c.value} · ${c.meaning}` })));
    } else {
      input = el("input", { id, class: "num", type: "number", step: "any", "aria-label": label, "data-min-role": "admin",
        min: p.min ?? null, max: p.max ?? null, dataset: { name: p.name } });
    }
    input.addEventListener("input", () => input.classList.toggle("changed", input.value !== ""));
    return input;
  }
  function renderTables() {
    const groups = {};
    for (const p of params) (groups[p.group] = groups[p.group] || []).push(p);
    $("#tables").replaceChildren(...Object.entries(groups).map(([g, rows]) => el("section", { class: "card", "aria-labelledby": "h-g-" + g },
      el("h2", { id: "h-g-" + g, text: t("pgroup." + g) }),
      el("div", { class: "scroll" }, el("table", { class: "params", dataset: { group: g } },
        el("thead", {}, el("tr", {}, ...["No.", t("col.name"), t("col.value"), t("col.new"), t("col.unit"), t("col.set_range"), t("col.default"), t("col.note")].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows.map((p) => el("tr", { dataset: { name: p.name } },
          el("td", { class: "num", text: p.no ?? "" }),
          el("td", {}, p.label, p.section ? el("div", { class: "note", text: p.section }) : null),
          el("td", { class: "num cur", text: fmtVal(p, p.value) }),
          el("td", {}, editor(p)),
          el("td", { text: p.unit }),
          el("td", { text: p.range }),
          el("td", { class: "num", text: fmtVal(p, p.default) }),
          el("td", { class: "note" }, p.inferred ? el("span", { class: "chip warn", title: t("param.inferred_help"), text: t("param.inferred") }) : null,
            p.note || "")))))))));
    UI.applyRole();
  }
  async function load(fresh) {
    if (!pack || !UI.can("operator")) return;
    const query = fresh ? "?fresh=true" : "";
    const d = await UI.api("GET", `${UI.packPath(pack)}/parameters` + query);
    params = d.parameters;
    $("#readinfo").textContent = t("param.read_at", { t: time(d.read_at), source: d.source, family: d.family });
    renderTables();
  }
  function edits() {
    const values = {};
    for (const i of $$("#tables input[data-name], #tables select[data-name]")) {
      if (i.value === "") continue;
      values[i.dataset.name] = Number(i.value);
    }
    return values;
  }
  function resultTable(res) {
    const packs = res.packs || [];
    return el("div", {},
      el("p", { class: res.outcome === "ok" || res.outcome === "dry_run" ? "ok-text" : "err", text: t("param.outcome", { o: t("outcome." + res.outcome) === "outcome." + res.outcome ? res.outcome : t("outcome." + res.outcome) }) }),
      ...packs.map((p) => el("div", {},
        el("h3", { text: `${p.pack}: ${p.outcome}${p.detail ? " · " + p.detail : ""}` }),
        ...(p.warnings || []).map((w) => el("p", { class: "note", text: "⚠ " + w })),
        el("table", { class: "result" }, el("thead", {}, el("tr", {}, ...[t("col.name"), t("col.requested"), t("col.before"), t("col.after"), t("col.outcome"), t("col.detail")].map((h) => el("th", { text: h })))),
          el("tbody", {}, ...(p.items || []).map((it) => el("tr", { dataset: { name: it.name, outcome: it.outcome } },
            el("td", { text: it.name }), el("td", { class: "num", text: num(it.requested, 3) }), el("td", { class: "num", text: num(it.before, 3) }),
            el("td", { class: "num", text: num(it.after, 3) }), el("td", { class: it.outcome === "verified" || it.outcome === "would_change" ? "ok-text" : it.outcome === "unchanged" ? "" : "err", text: it.outcome }),
            el("td", { class: "note", text: it.detail || "" }))))))));
  }
  async function write(dry) {
    const values = edits();
    if (!Object.keys(values).length) throw new UI.ApiError(0, t("param.nothing"));
    const body = { values, dry_run: dry, allow_inferred: $("#inferred").checked };
    let res;
    if ($("#allpacks").checked) res = await UI.api("PUT", "/api/parameters", body);
    else res = await UI.api("PUT", `${UI.packPath(pack)}/parameters`, body);
    $("#result").replaceChildren(resultTable(res));
    if (!dry) { await load(false); }
  }
  UI.act($("#read"), () => load(true));
  UI.act($("#dryrun"), () => write(true));
  UI.act($("#write"), () => write(false));
  $("#revert").addEventListener("click", () => { $$("#tables input[data-name], #tables select[data-name]").forEach((i) => { i.value = ""; i.classList.remove("changed"); }); $("#result").replaceChildren(); });
  UI.act($("#export"), () => UI.download(`${UI.packPath(pack)}/parameters/export?format=${$("#expfmt").value}`, "parameters." + $("#expfmt").value));
  async function importFile(apply) {
    const text = await UI.fileText($("#impfile"));
    const fmt = $("#impfmt").value;
    const q = new URLSearchParams({ apply: String(apply), allow_inferred: String($("#inferred").checked) });
    if (fmt) q.set("format", fmt);
    const r = await UI.api("POST", `${UI.packPath(pack)}/parameters/import?${q}`, text, { headers: { "Content-Type": "text/plain" } });
    const tbl = el("table", {}, el("thead", {}, el("tr", {}, ...[t("col.name"), t("col.current"), t("col.new"), t("col.unit"), t("col.set_range")].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...r.changes.map((c) => el("tr", {}, el("td", { text: c.name }), el("td", { class: "num", text: num(c.current, 3) }), el("td", { class: "num", text: num(c.new, 3) }), el("td", { text: c.unit }), el("td", { text: c.set_range })))));
    $("#impresult").replaceChildren(el("p", { text: t("param.import_summary", { rows: r.rows, unchanged: r.unchanged, changes: r.changes.length }) }), tbl, r.result ? resultTable(r.result) : el("span"));
    $("#apply").dataset.locked = apply || !r.changes.length ? "1" : "0";
    if (apply) await load(false);
  }
  UI.act($("#preview"), () => importFile(false));
  UI.act($("#apply"), () => importFile(true));
  async function origin(dry) {
    if (!dry && !confirm(t("param.load_origin_confirm"))) return;
    const body = { packs: $("#allpacks").checked ? null : [pack], dry_run: dry, allow_inferred: $("#inferred").checked };
    const res = await UI.api("POST", "/api/parameters/load-origin", body);
    $("#originresult").replaceChildren(resultTable(res));
    if (!dry) await load(false);
  }
  UI.act($("#origin-dry"), () => origin(true));
  UI.act($("#origin"), () => origin(false));
  UI.onRole(() => { if (params.length === 0) load(false).catch((e) => UI.showError($("#read"), e)); });
  UI.ready.then(() => UI.packPicker($("#pack"), (key) => { pack = key; params = []; $("#tables").replaceChildren(); $("#result").replaceChildren(); load(false).catch((e) => UI.showError($("#read"), e)); }))
    .catch((e) => UI.showError($("#pack"), e));
  UI.live(() => {});
})();
