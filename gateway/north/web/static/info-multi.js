/* INFO · Multi packs: the packs side by side and a heat map of every cell voltage. */
"use strict";
(() => {
  const { t, $, el, num } = UI;
  const ROWS = [
    ["f.comm", (p) => t("avail." + p.availability)],
    ["f.voltage", (m) => num(m.voltage_v, 2, "V")],
    ["f.current", (m) => num(m.current_a, 2, "A")],
    ["f.soc", (m) => num(m.soc_pct, 1, "%")],
    ["f.soh", (m) => num(m.soh_pct, 1, "%")],
    ["f.cycles", (m) => num(m.cycles, 0)],
    ["f.remain_cap", (m) => num(m.remaining_capacity_ah, 1, "Ah")],
    ["V_MAX", (m) => num(m.cell_max_v, 3, "V")],
    ["V_MIN", (m) => num(m.cell_min_v, 3, "V")],
    ["V_DIFF", (m) => num(m.cell_diff_v === null || m.cell_diff_v === undefined ? null : m.cell_diff_v * 1000, 0, "mV")],
    ["f.temp_max", (m) => num(m.temp_max_c, 1, "°C")],
    ["f.temp_min", (m) => num(m.temp_min_c, 1, "°C")],
    ["MOS", (m) => `${m.charge_mos_on ? "C" : "–"}/${m.discharge_mos_on ? "D" : "–"}`],
    ["f.flags", (m) => [...(m.protections || []), ...(m.alarms || []), ...(m.faults || [])].join(", ") || t("flags.none")],
  ];
  function render(doc) {
    const packs = doc.packs;
    $("#side thead").replaceChildren(el("tr", {}, el("th", { text: t("pack") }),
      ...packs.map((p) => el("th", {}, el("a", { href: `/ui/info/single?pack=${p.bus}/${p.address}`, text: `${p.bus}/${p.address}` })))));
    const ageRow = el("tr", {}, el("th", { text: t("f.age") }), ...packs.map((p) => { const c = el("td", {}, el("span")); UI.setAge(c.firstChild, p); return c; }));
    $("#side tbody").replaceChildren(ageRow, ...ROWS.map(([k, f]) => el("tr", {}, el("th", { text: t(k) }),
      ...packs.map((p) => el("td", { class: "num", text: k === "f.comm" ? f(p) : p.telemetry ? f(p.telemetry) : "–" })))));
    let lo = Infinity, hi = -Infinity, n = 0;
    for (const p of packs) for (const v of (p.telemetry && p.telemetry.cell_voltages_v) || []) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    for (const p of packs) n = Math.max(n, ((p.telemetry && p.telemetry.cell_voltages_v) || []).length);
    $("#heat-lo").textContent = Number.isFinite(lo) ? num(lo, 3, "V") : "–";
    $("#heat-hi").textContent = Number.isFinite(hi) ? num(hi, 3, "V") : "–";
    $("#heat thead").replaceChildren(el("tr", {}, el("th", { text: t("pack") }), ...Array.from({ length: n }, (_, i) => el("th", { class: "num", text: String(i + 1) }))));
    $("#heat tbody").replaceChildren(...packs.map((p) => {
      const cells = (p.telemetry && p.telemetry.cell_voltages_v) || [];
      const stale = p.availability !== "online";
      return el("tr", {}, el("th", { text: `${p.bus}/${p.address}` + (stale ? " (" + t("avail." + p.availability) + ")" : "") }),
        ...Array.from({ length: n }, (_, i) => {
          const v = cells[i];
          const td = el("td", { class: "h", title: v === undefined ? null : `${p.bus}/${p.address} #${i + 1}: ${num(v, 3)} V`, text: v === undefined ? "" : (v * 1000).toFixed(0) });
          td.style.background = stale ? "repeating-linear-gradient(45deg,#999 0 4px,#bbb 4px 8px)" : UI.heat(v, lo, hi);
          return td;
        }));
    }));
  }
  UI.live(render);
})();
