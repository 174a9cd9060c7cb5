// Tether's status page: polls GET /status and draws it. No framework, no
// build step. Everything is built with createElement and textContent (never
// innerHTML: backend names come from DNS and files), and the page's CSP
// allows no inline script or style, so the charts are SVG elements with
// attributes and classes only.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "tether-admin-token";
const SVG = "http://www.w3.org/2000/svg";
const CHARTS = [
  ["requests", "Requests / s", ""],
  ["errors", "5xx answers / s", "errors"],
  ["sessions_created", "Sessions created / s", ""],
  ["sessions_orphaned", "Requests orphaned / s", "errors"],
  ["invalid_tokens", "Invalid session references / s", "errors"],
  ["streams", "Open event streams", ""],
];

let last = null;
let timer = null;

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// The token stays in this tab's sessionStorage at most, never in a URL.
function token() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; }
}
function setToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) { /* storage disabled: the token lives until reload */ }
  memoryToken = value;
}
let memoryToken = token();

function say(text, isError) {
  const out = $("action-result");
  out.textContent = text;
  out.className = isError ? "error" : "";
}

async function poll() {
  clearTimeout(timer);
  try {
    const response = await fetch("/status", { cache: "no-store" });
    if (!response.ok) throw new Error(`GET /status: ${response.status}`);
    last = await response.json();
    render(last);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    const ready = $("ready");
    ready.textContent = "unreachable";
    ready.className = "pill not-ready";
    $("updated").textContent = String(e.message || e);
  }
  timer = setTimeout(poll, POLL_MS);
}

function render(s) {
  $("version").textContent = `v${s.version}`;
  const ready = $("ready");
  ready.textContent = s.ready ? "ready" : `not ready: ${s.not_ready_because}`;
  ready.className = s.ready ? "pill ready" : "pill not-ready";
  renderTiles(s);
  renderCharts(s.history);
  renderAdmin(s);
  renderPools(s);
}

function renderTiles(s) {
  const t = s.totals;
  const states = Object.entries(t.states).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`);
  const tiles = [
    [t.backends, "backends", states.join(", ") || "none"],
    [t.outstanding, "outstanding requests", ""],
    [t.streams, "open streams", ""],
    [s.counters.sessions_created, "sessions created", "since start"],
    [s.counters.sessions_orphaned, "requests orphaned", "owner gone: 404"],
    [s.counters.requests, "requests answered", `${s.counters.errors} with 5xx`],
  ];
  $("summary").replaceChildren(...tiles.map(([value, label, note]) => {
    const tile = el("div", "tile");
    tile.append(el("div", "value", value), el("div", "label", label));
    if (note) tile.append(el("div", "label", note));
    return tile;
  }));
}

function renderCharts(history) {
  const points = history.points || [];
  const window = history.window_seconds || 900;
  $("charts").replaceChildren(...CHARTS.map(([key, title, kind]) => {
    const chart = el("div", `chart ${kind}`.trim());
    chart.dataset.series = key;
    const values = points.map((p) => Number(p[key]) || 0);
    const now = values.length ? values[values.length - 1] : 0;
    const head = el("div", "head");
    head.append(el("span", "", title), el("span", "now", format(now)));
    chart.append(head, sparkline(points, values, window));
    const axis = el("div", "axis");
    axis.append(el("span", "", `${Math.round(window / 60)} min ago`),
      el("span", "", `max ${format(Math.max(0, ...values))}`), el("span", "", "now"));
    chart.append(axis);
    return chart;
  }));
}

function sparkline(points, values, window) {
  const width = 300, height = 56;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  if (!points.length) return svg;
  const top = Math.max(...values) || 1;
  const xy = points.map((p, i) => {
    const x = width * Math.max(0, Math.min(1, 1 - p.seconds_ago / window));
    const y = height - 2 - (height - 4) * (values[i] / top);
    return [x.toFixed(1), y.toFixed(1)];
  });
  const line = xy.map(([x, y], i) => `${i ? "L" : "M"}${x} ${y}`).join(" ");
  const area = document.createElementNS(SVG, "path");
  area.setAttribute("class", "area");
  area.setAttribute("d", `${line} L${xy[xy.length - 1][0]} ${height} L${xy[0][0]} ${height} Z`);
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("class", "line");
  path.setAttribute("d", xy.length > 1 ? line : `${line} L${xy[0][0]} ${xy[0][1]}`);
  svg.append(area, path);
  return svg;
}

function format(n) {
  if (n >= 100 || Number.isInteger(n)) return String(Math.round(n));
  return n.toFixed(n >= 10 ? 1 : 2);
}

function renderAdmin(s) {
  const note = $("actions-note");
  const box = $("token-box");
  if (!s.actions_need_token) {
    note.textContent = "Read-only: no admin.token is configured, and the admin listener takes no " +
      "action from a browser without one. Set admin.token (or admin.token_file) to drain and " +
      "undrain from this page.";
    box.hidden = true;
    return;
  }
  box.hidden = false;
  $("token-forget").hidden = !memoryToken;
  note.textContent = memoryToken
    ? "Actions enabled with the token given in this tab (kept in this tab's session storage only)."
    : "Give the admin token to drain and undrain backends from this page.";
}

function renderPools(s) {
  const canAct = s.actions_need_token && !!memoryToken;
  if (!s.pools.length) {
    $("pools").replaceChildren(el("p", "empty", "No pools."));
    return;
  }
  $("pools").replaceChildren(...s.pools.map((pool) => {
    const section = el("div", "pool");
    section.dataset.pool = pool.name;
    const title = el("h2", "", `Pool ${pool.name}`);
    const meta = [pool.configured ? null : "removed, draining", pool.balance && `balance ${pool.balance}`,
      pool.health && `health check ${pool.health}`].filter(Boolean).join(" · ");
    title.append(el("span", "meta", meta));
    section.append(title);
    if (!pool.backends.length) {
      section.append(el("p", "empty", "No backends."));
      return section;
    }
    const table = el("table");
    const head = el("tr");
    for (const [label, cls] of [["Backend", ""], ["State", ""], ["Health", ""], ["Drained by", ""],
      ["Outstanding", "num"], ["Streams", "num"], ["Sessions created", "num"],
      ["Requests orphaned", "num"], ["Source", ""]]) {
      head.append(el("th", cls, label));
    }
    if (canAct) head.append(el("th", "", "Action"));
    table.append(head);
    for (const b of pool.backends) table.append(row(b, canAct));
    section.append(table);
    return section;
  }));
}

function row(b, canAct) {
  const tr = el("tr");
  tr.dataset.backend = b.address;
  const reasons = Object.entries(b.drain).filter(([, on]) => on).map(([why]) => why);
  tr.append(
    el("td", "address", b.address),
    el("td", `state ${b.state}`, b.state),
    el("td", `health ${b.health}`, b.health),
    el("td", "drain", reasons.join(", ") || "-"),
    el("td", "num outstanding", b.outstanding),
    el("td", "num streams", b.streams),
    el("td", "num sessions-created", b.sessions_created),
    el("td", "num sessions-orphaned", b.sessions_orphaned),
    el("td", "source muted", b.source),
  );
  if (canAct) {
    const action = b.drain.admin ? "undrain" : "drain";
    const button = el("button", action, action === "drain" ? "Drain" : "Undrain");
    button.type = "button";
    button.dataset.action = action;
    button.addEventListener("click", () => act(b.address, action));
    const td = el("td");
    td.append(button);
    tr.append(td);
  }
  return tr;
}

async function act(address, action) {
  if (!/^[A-Za-z0-9._:\[\]-]+$/.test(address)) {
    say(`Not a backend address: ${address}`, true);
    return;
  }
  say(`${action} ${address}...`, false);
  try {
    const response = await fetch(`/backends/${address}/${action}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${memoryToken}` },
      cache: "no-store",
    });
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      say(`${address}: ${action === "drain" ? "drained" : "undrained"}, now ${body.state}.`, false);
    } else if (response.status === 401) {
      setToken("");
      say("The admin token was refused (401). Give it again.", true);
    } else {
      say(`${action} ${address}: ${response.status} ${body.error || ""}`, true);
    }
  } catch (e) {
    say(`${action} ${address}: ${e.message || e}`, true);
  }
  poll();
}

function useToken() {
  const input = $("token");
  const value = input.value.trim();
  input.value = "";
  setToken(value);
  say(value ? "Token kept for this tab." : "No token given.", !value);
  if (last) render(last);
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-use").addEventListener("click", useToken);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") useToken(); });
  $("token-forget").addEventListener("click", () => {
    setToken("");
    say("Token forgotten.", false);
    if (last) render(last);
  });
  poll();
});
