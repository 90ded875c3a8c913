/* INFO · Record: real-time recording status, a chart of recorded values, CSV/XLSX download. */
"use strict";
(() => {
  const { t, $, el, num, bytes } = UI;
  function kv(dl, rows) { dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])); }
  async function status() {
    try {
      const r = await UI.api("GET", "/api/recording");
      kv($("#recstatus"), [
        [t("rec.state"), t("state.on")], [t("rec.interval"), num(r.interval_s, 1, "s")], [t("rec.rows"), String(r.rows)],
        [t("rec.used"), bytes(r.used_bytes) + " / " + bytes(r.max_bytes)], [t("rec.max_age"), UI.dur(r.max_age_s)],
        [t("rec.cost"), num(r.stats.sample_cost_s_avg * 1000, 3, "ms")],
      ]);
    } catch (e) { UI.showError($("#recstatus"), e); }
  }
  async function chart() {
    const value = $("#value").value;
    const since = Date.now() / 1000 - Number($("#window").value);
    try {
      const d = await UI.api("GET", `/api/recording/compare?value=${encodeURIComponent(value)}&since=${since}`);
      const series = d.packs.map((p, i) => ({ name: p, points: d.rows.map((r) => [r.at, r.values[i]]) }));
      UI.lineChart($("#chart"), series, { label: $("#value").selectedOptions[0].textContent, digits: value.endsWith("_v") ? 3 : 1 });
      UI.showError($("#reload"), null);
    } catch (e) { UI.showError($("#reload"), e); }
  }
  const since = () => Date.now() / 1000 - Number($("#window").value);
  UI.act($("#reload"), chart);
  UI.act($("#csv"), () => UI.download(`/api/recording/export?format=csv&since=${since()}`, "recording.csv"));
  UI.act($("#xlsx"), () => UI.download(`/api/recording/export?format=xlsx&since=${since()}`, "recording.xlsx"));
  $("#value").addEventListener("change", chart);
  $("#window").addEventListener("change", chart);
  UI.live(() => {});
  UI.ready.then(async () => {
    await status();
    await chart();
    // follow short windows only: a day of 1 s samples is re-read on demand, not every 3 s
    for (;;) { await UI.sleep(3000); if ($("#follow").checked && Number($("#window").value) <= 3600) await chart(); }
  });
})();
