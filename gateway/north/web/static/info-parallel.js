/* INFO · Parallel group: the bank as the inverter sees it (policy decision, limiting factors,
   the selected CAN and RS485 protocols and what they send). */
"use strict";
(() => {
  const { t, $, el, num, time } = UI;
  function kv(dl, rows) { dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])); }
  function renderBank(doc) {
    const b = doc.bank || {};
    kv($("#bank"), [
      [t("par.packs"), `${b.packs_online ?? 0} / ${b.packs_configured ?? 0} ${t("par.online")}, ${b.packs_stale ?? 0} ${t("avail.stale")}, ${b.packs_offline ?? 0} ${t("avail.offline")}`],
      [t("f.voltage"), num(b.voltage_v, 2, "V")], [t("f.current"), num(b.current_a, 2, "A")], [t("f.power"), num(b.power_w, 0, "W")],
      [t("f.soc"), num(b.soc_pct, 1, "%")], [t("f.soh"), num(b.soh_pct, 1, "%")],
      [t("f.full_cap"), num(b.full_capacity_ah, 1, "Ah")], [t("f.remain_cap"), num(b.remaining_capacity_ah, 1, "Ah")],
      ["V_MAX", b.cell_max ? `${num(b.cell_max.value, 3, "V")} (${b.cell_max.bus}/${b.cell_max.address} #${b.cell_max.index})` : "–"],
      ["V_MIN", b.cell_min ? `${num(b.cell_min.value, 3, "V")} (${b.cell_min.bus}/${b.cell_min.address} #${b.cell_min.index})` : "–"],
      ["V_DIFF", num(b.cell_diff_v === null || b.cell_diff_v === undefined ? null : b.cell_diff_v * 1000, 0, "mV")],
    ]);
    const d = doc.decision;
    if (!d) { $("#limits tbody").replaceChildren(el("tr", {}, el("td", { colspan: 3, text: t("par.no_decision") }))); return; }
    const lim = d.limiting || {};
    const rows = [
      ["charge_voltage_v", "CVL", num(d.charge_voltage_v, 2, "V")], ["discharge_voltage_v", "DVL", num(d.discharge_voltage_v, 2, "V")],
      ["charge_current_a", "CCL", num(d.charge_current_a, 1, "A")], ["discharge_current_a", "DCL", num(d.discharge_current_a, 1, "A")],
      ["charge_enabled", t("par.charge_enabled"), d.charge_enabled ? t("state.on") : t("state.off")],
      ["discharge_enabled", t("par.discharge_enabled"), d.discharge_enabled ? t("state.on") : t("state.off")],
      ["force_charge_1", t("par.force1"), d.force_charge_1 ? t("state.on") : t("state.off")],
      ["force_charge_2", t("par.force2"), d.force_charge_2 ? t("state.on") : t("state.off")],
      ["full_charge_request", t("par.full_req"), d.full_charge_request ? t("state.on") : t("state.off")],
    ];
    $("#limits tbody").replaceChildren(...rows.map(([k, label, v]) => el("tr", { dataset: { key: k } }, el("td", { text: label }), el("td", { class: "num", text: v }), el("td", { text: lim[k] ? t("lim." + lim[k]) === "lim." + lim[k] ? lim[k] : t("lim." + lim[k]) : "–" }))));
    $("#flags").replaceChildren(
      el("span", { class: "chip " + (d.stale ? "bad" : "ok"), text: d.stale ? t("par.stale") : t("par.fresh") }),
      el("span", { class: "note", text: " " + t("par.computed", { t: time(d.computed_at) }) + " · " }),
      ...UI.chips(d.alarms, "bad"), ...UI.chips(d.warnings, "warn"));
  }
  async function refreshPolicy() {
    let p;
    try { p = await UI.api("GET", "/api/policy"); $("#can-error").textContent = ""; } catch (e) { $("#can-error").textContent = String(e); return; }
    const c = p.can;
    const st = c.stats || {};
    kv($("#can"), [
      [t("par.protocol"), c.protocol], [t("par.enabled"), c.enabled ? t("state.on") : t("state.off") + " · " + t("par.preview")],
      [t("par.running"), c.running ? t("state.on") : t("state.off")],
      [t("par.frames_sent"), c.stats ? String(st.frames_sent ?? "–") : "–"],
      [t("par.keepalive"), c.stats ? String(st.keepalive ?? "–") : "–"],
    ]);
    $("#can-error").textContent = c.error || "";
    $("#frames tbody").replaceChildren(...c.frames.map((f) => el("tr", {},
      el("td", { text: f.message }), el("td", { text: "0x" + f.id.toString(16).toUpperCase().padStart(f.extended ? 8 : 3, "0") }),
      el("td", { text: f.data }), el("td", { class: "note", text: Object.entries(f.signals).map(([k, v]) => `${k}=${typeof v === "number" ? +v.toFixed(3) : v}`).join("  ") }))));
    const r = p.rs485;
    const l = r.limits || {};
    kv($("#rs485"), [
      [t("par.protocol"), r.protocol], [t("par.enabled"), r.enabled ? t("state.on") : t("state.off")],
      [t("par.running"), r.running ? t("state.on") : t("state.off")],
      ["CVL / DVL", `${num(l.charge_voltage_v, 2, "V")} / ${num(l.discharge_voltage_v, 2, "V")}`],
      ["CCL / DCL", `${num(l.charge_current_a, 1, "A")} / ${num(l.discharge_current_a, 1, "A")}`],
      [t("par.enables"), `${l.charge_enabled ? "CHG" : "–"} ${l.discharge_enabled ? "DSG" : "–"}${l.stale ? " · " + t("par.stale") : ""}`],
      [t("par.inverter_present"), r.stats ? String(r.stats.inverter_present ?? "–") : "–"],
      [t("par.requests"), r.stats ? `${r.stats.requests} / ${r.stats.answered}` : "–"],
    ]);
  }
  UI.live(renderBank);
  UI.ready.then(async () => { for (;;) { await refreshPolicy(); await UI.sleep(2000); } });
})();
