/* INFO · Single pack: every value of one pack, live. */
"use strict";
(() => {
  const { t, $, el, num, time, dur } = UI;
  let current = null;
  let lastDoc = null;

  function kv(dl, rows) {
    dl.replaceChildren(...rows.flatMap(([k, v, id]) => [el("dt", { text: k }), el("dd", { text: v, id: id || null })]));
  }
  function render() {
    if (!lastDoc || !current) return;
    const p = lastDoc.packs.find((x) => `${x.bus}/${x.address}` === current);
    if (!p) return;
    UI.setAge($("#age"), p);
    const tm = p.telemetry || {};
    kv($("#summary"), [
      [t("f.voltage"), num(tm.voltage_v, 2, "V"), "v-voltage"],
      [t("f.current"), num(tm.current_a, 2, "A"), "v-current"],
      [t("f.power"), num(tm.power_w, 0, "W")],
      [t("f.soc"), num(tm.soc_pct, 1, "%"), "v-soc"],
      [t("f.soh"), num(tm.soh_pct, 1, "%")],
      [t("f.cycles"), num(tm.cycles, 0)],
      [t("f.full_cap"), num(tm.full_capacity_ah, 2, "Ah")],
      [t("f.remain_cap"), num(tm.remaining_capacity_ah, 2, "Ah")],
      [t("f.nominal_cap"), num(tm.nominal_capacity_ah, 2, "Ah")],
      [t("f.remain_chg"), dur(tm.remaining_charge_time_s)],
      [t("f.remain_dsg"), dur(tm.remaining_discharge_time_s)],
      [t("f.measured_at"), time(tm.measured_at)],
    ]);
    $("#mos").replaceChildren(
      UI.onOff(tm.charge_mos_on, "CHG_MOS"), UI.onOff(tm.discharge_mos_on, "DSG_MOS"),
      UI.onOff(tm.heater_on, t("f.heater")), UI.onOff(tm.fan_on, t("f.fan")),
      el("span", { class: "chip " + (tm.balancing ? "warn" : "off"), text: tm.balancing ? t("f.balancing") : t("f.not_balancing") }),
    );
    $("#protections").replaceChildren(...UI.chips(tm.protections, "bad"));
    $("#alarms").replaceChildren(...UI.chips(tm.alarms, "warn"));
    $("#faults").replaceChildren(...UI.chips(tm.faults, "bad"));
    $("#states").replaceChildren(...UI.chips(tm.states, "info"));
    const id = p.identity || {};
    const link = p.link || {};
    kv($("#identity"), [
      [t("f.serial"), id.serial || "–", "v-serial"],
      [t("f.version"), id.version || "–", "v-version"],
      [t("f.barcode"), id.barcode || "–"],
      [t("f.model"), id.model || "–"],
      [t("f.protocol"), id.protocol || "–"],
      [t("f.comm"), t("avail." + p.availability)],
      [t("f.success_ratio"), link.success_ratio === null || link.success_ratio === undefined ? "–" : num(link.success_ratio * 100, 1, "%")],
      [t("f.last_error"), link.last_error || "–"],
    ]);
    const cells = tm.cell_voltages_v || [];
    const bal = new Set(tm.balancing_cells || []);
    $("#cells").replaceChildren(...cells.map((v, i) => {
      const n = i + 1;
      let cls = "cell";
      if (n === tm.cell_max_index) cls += " max";
      if (n === tm.cell_min_index) cls += " min";
      if (bal.has(n)) cls += " bal";
      const extra = [n === tm.cell_max_index ? t("f.max") : "", n === tm.cell_min_index ? t("f.min") : "", bal.has(n) ? t("f.balancing") : ""].filter(Boolean).join(", ");
      return el("div", { class: cls, dataset: { cell: n }, title: extra || null }, el("small", { text: "#" + n + (extra ? " · " + extra : "") }), el("span", { class: "v", text: num(v, 3) }), " V");
    }));
    kv($("#cellstats"), [
      ["V_SUM", num(tm.cell_sum_v, 3, "V")], ["V_AVG", num(tm.cell_avg_v, 3, "V")],
      ["V_MAX", num(tm.cell_max_v, 3, "V") + (tm.cell_max_index ? ` (#${tm.cell_max_index})` : "")],
      ["V_MIN", num(tm.cell_min_v, 3, "V") + (tm.cell_min_index ? ` (#${tm.cell_min_index})` : "")],
      ["V_DIFF", num(tm.cell_diff_v === null || tm.cell_diff_v === undefined ? null : tm.cell_diff_v * 1000, 0, "mV")],
    ]);
    $("#temps tbody").replaceChildren(...(tm.temperatures || []).map((x) =>
      el("tr", {}, el("td", { text: x.label }), el("td", { text: t("trole." + x.role) }), el("td", { class: "num", text: num(x.value_c, 1) }))));
  }
  UI.packPicker($("#pack"), (key) => { current = key; render(); }).catch((e) => UI.showError($("#pack"), e));
  UI.live((doc) => { lastDoc = doc; render(); });
})();
