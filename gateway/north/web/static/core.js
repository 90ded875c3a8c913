/* bms-gateway web UI, shared code: translations, API calls with the bearer token, the live
   snapshot stream, role gating, errors next to their controls, formatting, small SVG charts.
   Our own code only; it never stores the token beyond the browser tab (sessionStorage). */
"use strict";
const UI = (() => {
  const CAT = JSON.parse(document.getElementById("i18n").textContent);
  const RANK = { viewer: 0, operator: 1, admin: 2, factory: 3 };
  const TOKEN_KEY = "bmsg.token", THEME_KEY = "bmsg.theme";
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let who = null;
  const roleListeners = [];

  function t(key, vars) {
    let s = CAT[key] ?? key;
    if (vars) for (const [k, v] of Object.entries(vars)) s = s.split("{" + k + "}").join(String(v));
    return s;
  }
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // ---- formatting ----------------------------------------------------------------------------
  function num(v, digits = 2, unit = "") {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const s = typeof v === "number" ? v.toFixed(digits) : String(v);
    return unit ? s + " " + unit : s;
  }
  function pad(n) { return String(n).padStart(2, "0"); }
  function time(epoch) {
    if (epoch === null || epoch === undefined) return "–";
    const d = new Date(epoch * 1000);
    const off = -d.getTimezoneOffset(), sign = off >= 0 ? "+" : "-";
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${sign}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
  }
  function dur(s) {
    if (s === null || s === undefined || !Number.isFinite(s)) return "–";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function bytes(n) {
    if (n === null || n === undefined) return "–";
    if (n < 1024) return n + " B";
    if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1048576).toFixed(1) + " MiB";
  }

  // ---- API -------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, detail, errors) {
      super(detail);
      this.status = status;
      this.errors = errors || null;
    }
    toString() {
      const head = this.status ? this.status + ": " : "";
      let extra = "";
      if (Array.isArray(this.errors) && this.errors.length) {
        extra = "\n" + this.errors.map((e) => "• " + (typeof e === "string" ? e : Object.entries(e).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join("; ") : typeof v === "object" && v !== null ? JSON.stringify(v) : v}`).join(", "))).join("\n");
      }
      return head + this.message + extra;
    }
  }
  function authHeaders() { return token ? { Authorization: "Bearer " + token } : {}; }
  function detailText(j, fallback) {
    if (!j) return fallback;
    if (typeof j.detail === "string") return j.detail;
    if (Array.isArray(j.detail)) return j.detail.map((d) => (d.loc ? d.loc.filter((x) => x !== "body").join(".") + ": " : "") + d.msg).join("; ");
    return fallback;
  }
  async function api(method, path, body, opts = {}) {
    const headers = { ...authHeaders(), ...(opts.headers || {}) };
    let payload;
    if (body instanceof Blob || body instanceof ArrayBuffer || typeof body === "string") payload = body;
    else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
    let res;
    try {
      res = await fetch(path, { method, headers, body: payload, signal: opts.signal, cache: "no-store" });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, t("err.network", { e: e.message }));
    }
    if (!res.ok) {
      let j = null;
      try { j = await res.json(); } catch (_) { /* not JSON */ }
      throw new ApiError(res.status, detailText(j, res.statusText), j && j.errors);
    }
    if (opts.raw) return res;
    const ct = res.headers.get("content-type") || "";
    return ct.includes("json") ? res.json() : res.text();
  }
  /* Server-sent events over fetch (so the bearer token goes in a header): calls onDoc per `data:`. */
  async function sse(path, onDoc, signal) {
    const res = await fetch(path, { headers: authHeaders(), signal, cache: "no-store" });
    if (!res.ok) {
      let j = null;
      try { j = await res.json(); } catch (_) { /* not JSON */ }
      throw new ApiError(res.status, detailText(j, res.statusText), j && j.errors);
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const chunk = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of chunk.split("\n")) if (line.startsWith("data:")) onDoc(JSON.parse(line.slice(5)));
      }
    }
  }
  async function download(path, fallbackName) {
    const res = await api("GET", path, undefined, { raw: true });
    const cd = res.headers.get("content-disposition") || "";
    const m = /filename="([^"]+)"/.exec(cd);
    const blob = await res.blob();
    const a = el("a", { href: URL.createObjectURL(blob), download: m ? m[1] : fallbackName });
    document.body.append(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  // ---- errors next to the control that caused them ----------------------------------------------
  function errFor(control) {
    let e = document.getElementById(control.id + "-err");
    if (!e) {
      e = el("span", { class: "err", id: control.id + "-err", role: "alert" });
      control.after(e);
    }
    return e;
  }
  function showError(control, err) {
    if (err instanceof Error && !(err instanceof ApiError)) console.error(err); // a bug of ours: make it visible
    errFor(control).textContent = err ? String(err) : "";
  }
  /* Run an action from a button: disables it meanwhile, shows the API's error next to it. */
  function act(button, fn) {
    button.addEventListener("click", async (ev) => {
      ev.preventDefault();
      showError(button, null);
      const was = button.disabled;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      try { await fn(); } catch (e) {
        if (!(e instanceof ApiError)) console.error(e);
        showError(button, e instanceof ApiError ? e : t("err.unexpected", { e: e.message || e }));
      }
      finally { button.disabled = was; button.removeAttribute("aria-busy"); applyRole(); }
    });
  }

  // ---- sign-in and roles -------------------------------------------------------------------------
  function rank() { return who ? RANK[who.role] ?? -1 : -1; }
  function can(role) { return rank() >= RANK[role]; }
  function applyRole() {
    for (const c of $$("[data-min-role]")) {
      const need = c.dataset.minRole;
      const ok = can(need);
      if (c.dataset.busy === "1") continue;
      if ("disabled" in c) c.disabled = !ok || c.dataset.locked === "1";
      if (!ok) c.title = t("auth.needs", { role: t("role." + need) });
      else c.removeAttribute("title");
    }
    for (const n of $$("[data-role-note]")) {
      const need = n.dataset.roleNote;
      n.hidden = can(need);
      n.textContent = t("auth.needs", { role: t("role." + need) });
    }
  }
  function onRole(fn) { roleListeners.push(fn); }
  async function signIn(tok) {
    const prev = token;
    token = tok;
    try {
      who = await api("GET", "/api/admin/whoami");
    } catch (e) {
      token = prev;
      throw e;
    }
    sessionStorage.setItem(TOKEN_KEY, tok);
    showWho();
  }
  function signOut() {
    token = "";
    who = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showWho();
  }
  function showWho() {
    const w = $("#who"), form = $("#login"), out = $("#signout");
    if (who) {
      w.textContent = t("auth.signed", { id: who.token_id, role: t("role." + who.role) });
      w.hidden = false; out.hidden = false; form.hidden = true;
    } else {
      w.hidden = true; out.hidden = true; form.hidden = false;
    }
    applyRole();
    for (const fn of roleListeners) { try { fn(who); } catch (e) { console.warn(e); } }
  }
  const ready = (async () => {
    if (token) {
      try { who = await api("GET", "/api/admin/whoami"); } catch (_) { token = ""; sessionStorage.removeItem(TOKEN_KEY); }
    }
  })();

  // ---- header controls ----------------------------------------------------------------------------
  function applyTheme(v) {
    if (v === "light" || v === "dark") document.documentElement.dataset.theme = v;
    else delete document.documentElement.dataset.theme;
  }
  applyTheme(localStorage.getItem(THEME_KEY) || "auto");
  document.addEventListener("DOMContentLoaded", () => {
    const theme = $("#theme");
    theme.value = localStorage.getItem(THEME_KEY) || "auto";
    theme.addEventListener("change", () => { localStorage.setItem(THEME_KEY, theme.value); applyTheme(theme.value); });
    $("#lang").addEventListener("change", (e) => {
      const u = new URL(location.href);
      u.searchParams.set("lang", e.target.value);
      location.href = u.toString();
    });
    $("#login").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = $("#token");
      $("#token-err").textContent = "";
      try {
        await signIn(input.value.trim());
        input.value = "";
      } catch (e) {
        $("#token-err").textContent = String(e);
      }
    });
    $("#signout").addEventListener("click", signOut);
  });

  // ---- live stream ------------------------------------------------------------------------------
  let lastDocAt = 0;
  function setConn(text, bad) {
    const c = $("#conn");
    c.textContent = text;
    c.classList.toggle("bad", !!bad);
  }
  function live(onDoc) {
    let ctrl = null;
    let backoff = 1000;
    (async () => {
      await ready;
      for (;;) {
        ctrl = new AbortController();
        try {
          await sse("/api/stream?interval_s=1", (doc) => {
            lastDocAt = Date.now();
            backoff = 1000;
            setConn(t("conn.live", { t: time(doc.t) }));
            onDoc(doc);
          }, ctrl.signal);
        } catch (e) {
          if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
            setConn(t("conn.needs_token"), true);
            await new Promise((r) => onRole((w) => { if (w) r(); }));
            continue;
          }
        }
        setConn(t("conn.lost"), true);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 10000);
      }
    })();
    setInterval(() => {
      if (lastDocAt && Date.now() - lastDocAt > 12000 && ctrl) {
        lastDocAt = 0;
        setConn(t("conn.lost"), true);
        ctrl.abort();
      }
    }, 2000);
  }
  /* "data age": elements with data-age (seconds at receive time) and data-recv (ms) count up. */
  function setAge(node, p) {
    node.dataset.age = p.age_s === null ? "" : p.age_s;
    node.dataset.recv = Date.now();
    node.dataset.avail = p.availability;
    tickAge(node);
  }
  function tickAge(node) {
    const base = node.dataset.age;
    const state = node.dataset.avail;
    const label = t("avail." + state);
    if (base === "" || base === undefined) { node.textContent = label + " · " + t("age.never"); }
    else {
      const age = Number(base) + (Date.now() - Number(node.dataset.recv)) / 1000;
      node.textContent = label + " · " + t("age.s", { s: age.toFixed(age < 10 ? 1 : 0) });
    }
    node.className = "age state-" + state;
  }
  setInterval(() => $$("[data-recv]").forEach(tickAge), 1000);

  // ---- packs --------------------------------------------------------------------------------------
  async function packList() {
    await ready;
    for (;;) {
      try {
        return await api("GET", "/api/packs");
      } catch (e) {
        if (!(e instanceof ApiError) || (e.status !== 401 && e.status !== 403)) throw e;
        setConn(t("conn.needs_token"), true); // [admin] data_needs_token: wait for a sign-in
        await new Promise((r) => onRole((w) => { if (w) r(); }));
      }
    }
  }
  /* Fill a <select> with the packs; keeps ?pack=BUS/ADDR in the address bar. */
  async function packPicker(select, onChange) {
    const packs = await packList();
    const wanted = new URL(location.href).searchParams.get("pack");
    select.replaceChildren(...packs.map((p) => el("option", { value: p.bus + "/" + p.address, text: `${p.bus}/${p.address}${p.name ? " " + p.name : ""}` })));
    if (wanted && packs.some((p) => p.bus + "/" + p.address === wanted)) select.value = wanted;
    select.addEventListener("change", () => {
      const u = new URL(location.href);
      u.searchParams.set("pack", select.value);
      history.replaceState(null, "", u.toString());
      onChange(select.value, packs.find((p) => p.bus + "/" + p.address === select.value));
    });
    if (packs.length) onChange(select.value, packs.find((p) => p.bus + "/" + p.address === select.value));
    return packs;
  }
  function packPath(key) { const [bus, addr] = key.split("/"); return `/api/packs/${encodeURIComponent(bus)}/${addr}`; }

  // ---- tables and charts ----------------------------------------------------------------------------
  /* Make a table's columns sortable by clicking (or Enter on) their header buttons. */
  function sortable(table) {
    $$("th[data-key]", table).forEach((th, col) => {
      const b = el("button", { class: "sort", type: "button", text: th.textContent });
      th.replaceChildren(b);
      b.addEventListener("click", () => {
        const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        $$("th", table).forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
        const idx = Array.from(th.parentNode.children).indexOf(th);
        const rows = $$("tbody tr", table);
        rows.sort((a, b2) => {
          const x = a.children[idx].dataset.v ?? a.children[idx].textContent;
          const y = b2.children[idx].dataset.v ?? b2.children[idx].textContent;
          const nx = Number(x), ny = Number(y);
          return (Number.isFinite(nx) && Number.isFinite(ny) && x !== "" && y !== "" ? nx - ny : String(x).localeCompare(String(y))) * dir;
        });
        $("tbody", table).append(...rows);
      });
      void col;
    });
  }
  function heat(v, lo, hi) {
    if (v === null || v === undefined) return "transparent";
    const f = hi > lo ? Math.min(1, Math.max(0, (v - lo) / (hi - lo))) : 0.5;
    return `hsl(${Math.round(220 - 220 * f)} 75% 62%)`;
  }
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  /* A line chart: series = [{name, points: [[x, y|null], ...]}]; x in epoch seconds. */
  function lineChart(svg, series, opts = {}) {
    const W = svg.clientWidth || 800, H = svg.clientHeight || 260;
    const m = { l: 52, r: 10, t: 10, b: 42 };
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.replaceChildren();
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const se of series) for (const [x, y] of se.points) {
      if (y === null || y === undefined) continue;
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    if (!Number.isFinite(x0)) {
      svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, t("chart.empty")));
      return;
    }
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y0 -= 1; y1 += 1; }
    const margin = (y1 - y0) * 0.05; y0 -= margin; y1 += margin;
    const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
    const Y = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
    const g = s("g", { class: "grid" });
    for (let i = 0; i <= 4; i++) {
      const yv = y0 + ((y1 - y0) * i) / 4;
      g.append(s("line", { x1: m.l, x2: W - m.r, y1: Y(yv), y2: Y(yv) }));
      svg.append(s("text", { x: m.l - 4, y: Y(yv) + 4, "text-anchor": "end" }, yv.toFixed(opts.digits ?? 2)));
      const xv = x0 + ((x1 - x0) * i) / 4;
      const d = new Date(xv * 1000);
      const label = x1 - x0 > 86400 * 2 ? `${d.getMonth() + 1}-${d.getDate()} ${pad(d.getHours())}:${pad(d.getMinutes())}` : `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
      svg.append(s("text", { x: X(xv), y: H - m.b + 14, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, label));
    }
    svg.prepend(g);
    if (opts.unit) svg.append(s("text", { x: 4, y: 12 }, opts.unit));
    series.forEach((se, i) => {
      const color = PALETTE[i % PALETTE.length];
      let d = "", pen = false;
      for (const [x, y] of se.points) {
        if (y === null || y === undefined) { pen = false; continue; }
        d += (pen ? "L" : "M") + X(x).toFixed(1) + " " + Y(y).toFixed(1);
        pen = true;
      }
      const path = s("path", { d, fill: "none", stroke: color, "stroke-width": 1.6 });
      path.append(s("title", {}, se.name));
      svg.append(path);
      const lx = m.l + (i % 6) * 120, ly = H - 8 - Math.floor(i / 6) * 0;
      svg.append(s("rect", { x: lx, y: ly - 8, width: 10, height: 10, fill: color }));
      svg.append(s("text", { x: lx + 14, y: ly + 1 }, se.name));
    });
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", opts.label || series.map((x) => x.name).join(", "));
  }
  function chips(values, kind) {
    if (!values || !values.length) return [el("span", { class: "chip off", text: t("flags.none") })];
    return values.map((v) => el("span", { class: "chip " + kind, text: t("flag." + v) === "flag." + v ? v : t("flag." + v) }));
  }
  function onOff(v, label) {
    const cls = v === null || v === undefined ? "chip off" : v ? "chip on" : "chip";
    const state = v === null || v === undefined ? t("state.unknown") : v ? t("state.on") : t("state.off");
    return el("span", { class: cls, text: `${label} ${state}` });
  }
  function fileText(input) {
    return new Promise((resolve, reject) => {
      const f = input.files && input.files[0];
      if (!f) { reject(new ApiError(0, t("err.no_file"))); return; }
      const r = new FileReader();
      r.onload = () => resolve(r.result);
      r.onerror = () => reject(r.error);
      if (input.dataset.binary) r.readAsArrayBuffer(f); else r.readAsText(f);
    });
  }

  document.addEventListener("DOMContentLoaded", () => { ready.then(showWho); });
  return { t, $, $$, el, num, time, dur, bytes, api, sse, download, act, showError, can, applyRole, onRole,
    ready, live, setAge, packPicker, packList, packPath, sortable, heat, lineChart, chips, onOff, fileText,
    ApiError, sleep, who: () => who };
})();
