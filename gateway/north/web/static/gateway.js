/* Gateway: buses, packs with their DIP switch positions, poll statistics, services (MQTT,
   metrics, ...), inverter protocol selection, Modbus, tokens and the audit log. */
"use strict";
(() => {
  const { t, $, el, num, time, dur } = UI;
  function kv(dl, rows) { dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])); }
  /* The manual's DIP table (4.2.4): switch #k is ON when bit k-1 of the address is set. */
  function dip(address) {
    const box = el("span", { class: "dip", role: "img", "aria-label": t("gw.dip_label", { a: address, s: [1, 2, 3, 4].map((k) => `#${k} ${(address >> (k - 1)) & 1 ? "ON" : "OFF"}`).join(", ") }) });
    for (let k = 1; k <= 4; k++) {
      const on = (address >> (k - 1)) & 1;
      box.append(el("span", {}, el("i", { class: on ? "on" : "off" }), `#${k}`, el("b", { text: on ? "ON" : "OFF" })));
    }
    return box;
  }
  async function system() {
    const s = await UI.api("GET", "/api/system");
    const g = s.gateway;
    kv($("#sys"), [[t("f.version"), g.version], [t("gw.uptime"), dur(g.uptime_s)], [t("gw.ready"), g.ready ? t("state.on") : t("state.off")],
      [t("gw.simulator"), g.simulator ? t("state.on") : t("state.off")], ...Object.entries(g.endpoints).map(([k, v]) => [k, v])]);
    $("#services tbody").replaceChildren(...g.services.map((x) => el("tr", {}, el("td", { text: x.name }),
      el("td", { class: x.state === "ready" ? "ok-text" : "err", text: x.state }), el("td", { class: "num", text: x.restarts }), el("td", { class: "note", text: x.last_error || "" }))));
    $("#buses tbody").replaceChildren(...Object.entries(g.buses).map(([name, b]) => {
      const c = b.counters || {};
      const errs = (c.checksum_errors || 0) + (c.decode_errors || 0) + (c.device_errors || 0) + (c.no_response || 0);
      const cycle = c.poll_duration_s ? c.poll_duration_s.last : null;
      return el("tr", {}, el("td", { text: name }), el("td", { text: b.url || t("gw.builtin_sim") }), el("td", { text: `${b.protocol || "–"}${b.detected_protocol && b.detected_protocol !== b.protocol ? " → " + b.detected_protocol : ""}` }),
        el("td", { class: b.connected ? "ok-text" : "err", text: b.connected ? t("state.on") : t("state.off") }),
        el("td", { class: "num", text: c.requests ?? "–" }), el("td", { class: "num", text: c.responses ?? "–" }), el("td", { class: "num", text: c.timeouts ?? "–" }),
        el("td", { class: "num", text: errs }), el("td", { class: "num", text: num(cycle, 2, "s") }));
    }));
  }
  function packs(doc) {
    $("#packs tbody").replaceChildren(...doc.packs.map((p) => {
      const age = el("span");
      UI.setAge(age, p);
      return el("tr", {}, el("td", {}, el("a", { href: `/ui/info/single?pack=${p.bus}/${p.address}`, text: `${p.bus}/${p.address}` })),
        el("td", { class: "num", text: p.address }), el("td", {}, p.address >= 1 && p.address <= 15 ? dip(p.address) : "–"), el("td", {}, age),
        el("td", { text: (p.identity && p.identity.serial) || "–" }), el("td", { class: "num", text: p.link && p.link.success_ratio !== null ? num(p.link.success_ratio * 100, 1, "%") : "–" }));
    }));
  }
  async function protocols() {
    if (!UI.can("viewer")) return;
    const p = await UI.api("GET", "/api/gateway/protocols");
    kv($("#proto-state"), [["CAN", `${p.can.protocol} · ${p.can.enabled ? t("state.on") : t("state.off")} · ${p.can.running ? t("gw.running") : t("gw.not_running")}`],
      ["RS485", `${p.rs485.protocol} · ${p.rs485.enabled ? t("state.on") : t("state.off")} · ${p.rs485.running ? t("gw.running") : t("gw.not_running")}`],
      [t("gw.config_file"), p.config_file || t("gw.no_config_file")]]);
    $("#proto-can").replaceChildren(...p.can.available.map((n) => el("option", { value: n, text: n })));
    $("#proto-can").value = p.can.protocol;
    $("#proto-rs485").replaceChildren(...p.rs485.available.map((n) => el("option", { value: n, text: n })));
    $("#proto-rs485").value = p.rs485.protocol;
  }
  UI.act($("#proto-write"), async () => {
    await UI.api("PUT", "/api/gateway/protocols", { can: $("#proto-can").value, rs485: $("#proto-rs485").value });
    await protocols();
  });
  async function modbus() {
    try {
      const m = await UI.api("GET", "/api/modbus");
      kv($("#modbus"), [[t("gw.listen"), `${m.listen} (${t("gw.port")} ${m.port})`], [t("gw.writes"), m.writes ? t("state.on") : t("state.off")],
        ...Object.entries(m.units).map(([uid, u]) => [`${t("gw.unit")} ${uid}`, `${u.kind} · ${u.label || ""} · ${u.registers} reg · ${u.online ? t("avail.online") : t("avail.offline")}`])]);
    } catch (e) { kv($("#modbus"), [[t("gw.modbus"), e.status === 404 ? t("gw.modbus_off") : String(e)]]); }
  }
  async function tokens() {
    if (!UI.can("admin")) return;
    const list = await UI.api("GET", "/api/admin/tokens");
    const me = UI.who() && UI.who().token_id;
    $("#tokens tbody").replaceChildren(...list.map((r) => {
      const b = el("button", { id: "revoke-" + r.id, type: "button", class: "secondary", "data-min-role": "admin", text: t("gw.revoke"), "aria-label": t("gw.revoke") + " " + r.id });
      if (r.revoked || r.id === me) b.dataset.locked = "1";
      UI.act(b, async () => { if (!confirm(t("gw.revoke_confirm", { id: r.id }))) return; await UI.api("DELETE", "/api/admin/tokens/" + r.id); await tokens(); });
      return el("tr", {}, el("td", { text: r.id + (r.id === me ? " (" + t("gw.this_token") + ")" : "") }), el("td", { text: t("role." + r.role) }), el("td", { text: r.label }),
        el("td", { text: time(r.created_at) }), el("td", { text: r.revoked ? t("gw.revoked") : t("gw.active") }), el("td", {}, b));
    }));
    UI.applyRole();
  }
  UI.act($("#tok-create"), async () => {
    const r = await UI.api("POST", "/api/admin/tokens", { role: $("#tok-role").value, label: $("#tok-label").value });
    $("#tok-new").textContent = t("gw.token_created", { id: r.id, token: r.token });
    await tokens();
  });
  async function audit() {
    if (!UI.can("admin")) return;
    const q = new URLSearchParams({ limit: $("#au-limit").value || "200" });
    if ($("#au-action").value) q.set("action", $("#au-action").value);
    if ($("#au-token").value) q.set("token_id", $("#au-token").value);
    const s = $("#au-since").value, u = $("#au-until").value;
    if (s) q.set("since", new Date(s).getTime() / 1000);
    if (u) q.set("until", new Date(u).getTime() / 1000);
    const rows = await UI.api("GET", "/api/audit?" + q);
    $("#audit tbody").replaceChildren(...rows.map((r) => el("tr", {},
      el("td", { dataset: { v: r.at }, text: time(r.at) }), el("td", { text: r.token_id }), el("td", { text: r.role }), el("td", { text: r.client }),
      el("td", { text: r.action }), el("td", { text: (r.packs || []).join(", ") }),
      el("td", { class: r.outcome === "ok" ? "ok-text" : r.outcome === "refused" || r.outcome === "failed" ? "err" : "", text: r.outcome }),
      el("td", { class: "note", text: r.detail || "" }))));
  }
  UI.act($("#au-load"), audit);
  UI.sortable($("#audit"));
  async function all() {
    for (const [fn, ctl] of [[system, "#services"], [protocols, "#proto-write"], [modbus, "#modbus"], [tokens, "#tok-create"], [audit, "#au-load"]]) {
      try { await fn(); } catch (e) { UI.showError($(ctl), e); }
    }
  }
  UI.onRole(all);
  UI.ready.then(async () => { await all(); for (;;) { await UI.sleep(5000); try { await system(); } catch (e) { UI.showError($("#services"), e); } } });
  UI.live(packs);
})();
