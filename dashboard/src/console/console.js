// Kodis console: polls GET /api/v1/overview every 2 s and draws the cluster; actions
// call the dashboard's REST API (the admin token, if the dashboard has one, is asked
// for on a 401 and kept in this tab's sessionStorage). No library, no build step.
"use strict";

const POLL_MS = 2000;
const HISTORY_MS = 5 * 60 * 1000;
const SLOTS = 16384;
const TOKEN_KEY = "kodis.token";

const state = {
  overview: null,
  history: [], // {t, ops, mem, keys}
  proxyPrev: new Map(), // id -> {t, commands}
  proxyRate: new Map(), // id -> ops/s
  batchTotal: 0, // slots in flight at the largest, since the current migrations began
  lastBatch: null, // {total} of the last batch that finished
  timer: null,
  needToken: false,
};

// ---- small helpers ----------------------------------------------------------

/** An element with attributes and children (strings become text, never HTML). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function fmtInt(n) {
  return n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US");
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
}

function fmtSecs(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function range(start, end) {
  return start === end ? String(start) : start + "–" + end;
}

/** The palette class of a group (Okabe-Ito colours, cycled). */
function gclass(id) {
  return "g" + (((id - 1) % 8) + 8) % 8;
}

// ---- the API ----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch (_) {
    return "";
  }
}

/** Calls the API; the JSON answer, or an ApiError with the API's own error text. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 30000);
  init.signal = ctl.signal;
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "cannot reach the dashboard: " + (e && e.message ? e.message : e));
  } finally {
    clearTimeout(timer);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!resp.ok) {
    const msg = data && data.error ? data.error : text || resp.statusText;
    throw new ApiError(resp.status, resp.status + " " + msg);
  }
  return data;
}

// ---- polling ----------------------------------------------------------------

function schedule(ms) {
  clearTimeout(state.timer);
  state.timer = setTimeout(poll, ms);
}

async function poll() {
  // Nothing to show in a hidden tab: ask again once it is visible.
  if (document.hidden || (state.needToken && $("token").open)) {
    schedule(POLL_MS);
    return;
  }
  try {
    const ov = await api("GET", "/api/v1/overview");
    state.needToken = false;
    showBanner(null);
    render(ov);
  } catch (e) {
    if (e.status === 401) {
      state.needToken = true;
      showBanner("The dashboard needs its admin token (" + e.message + ").");
      askToken(token() ? e.message : null);
    } else {
      showBanner(e.message);
      $("freshness").textContent = "not updated since " + lastUpdate();
    }
  }
  schedule(POLL_MS);
}

function lastUpdate() {
  const last = state.history[state.history.length - 1];
  return last ? new Date(last.t).toLocaleTimeString() : "never";
}

function showBanner(msg) {
  const b = $("banner");
  b.hidden = !msg;
  b.textContent = msg || "";
}

function say(msg) {
  $("status").textContent = msg;
}

// ---- rendering ----------------------------------------------------------------

/**
 * Makes `parent`'s children look like `nodes`, changing the nodes already there in
 * place (text, attributes, inline style) rather than replacing them: a button being
 * clicked or focused when a poll redraws stays the same element. A child is replaced
 * only when its kind or its `data-key` differs.
 */
function patch(parent, nodes) {
  const old = Array.from(parent.childNodes);
  nodes.forEach((n, i) => {
    const o = old[i];
    if (!o) {
      parent.append(n);
    } else if (o.nodeType !== n.nodeType || o.nodeName !== n.nodeName ||
      (o.nodeType === Node.ELEMENT_NODE && o.dataset.key !== n.dataset.key)) {
      parent.replaceChild(n, o);
    } else if (o.nodeType === Node.TEXT_NODE) {
      if (o.data !== n.data) o.data = n.data;
    } else if (o.nodeType === Node.ELEMENT_NODE) {
      for (const at of Array.from(o.attributes)) {
        if (at.name !== "style" && !n.hasAttribute(at.name)) o.removeAttribute(at.name);
      }
      for (const at of Array.from(n.attributes)) {
        if (at.name !== "style" && o.getAttribute(at.name) !== at.value) o.setAttribute(at.name, at.value);
      }
      // Through the CSSOM: the CSP forbids style attributes, not style properties.
      if (o.style.cssText !== n.style.cssText) o.style.cssText = n.style.cssText;
      if (o instanceof HTMLProgressElement) {
        o.value = n.value;
        o.max = n.max;
      }
      patch(o, Array.from(n.childNodes));
    }
  });
  for (let i = old.length - 1; i >= nodes.length; i--) old[i].remove();
}

function render(ov) {
  state.overview = ov;
  const now = Date.now();
  $("cluster").textContent = ov.cluster;
  $("sum-epoch").textContent = ov.epoch;
  $("sum-groups").textContent = ov.groups.length;
  $("sum-unassigned").textContent = fmtInt(ov.unassigned_slots);
  $("sum-ha").textContent = ov.ha
    ? (ov.ha.age_secs > 10 ? "silent for " + fmtSecs(ov.ha.age_secs) : "reporting")
    : "no report";
  $("freshness").textContent = "updated " + new Date(now).toLocaleTimeString();
  trackProxies(ov, now);
  record(ov, now);
  renderGroups(ov);
  renderSlots(ov);
  renderMigrations(ov);
  renderProxies(ov);
  drawCharts();
}

function haServer(ov, addr) {
  if (!ov.ha) return null;
  return ov.ha.servers.find((s) => s.name === addr) || null;
}

function haProxy(ov, id) {
  if (!ov.ha) return null;
  return ov.ha.proxies.find((s) => s.name === id) || null;
}

function renderGroups(ov) {
  const cards = ov.groups.map((g) => {
    const master = g.servers[0];
    const rows = g.servers.map((s) => serverRow(ov, g, s));
    const actions = h("div", { class: "actions" },
      h("button", {
        type: "button", class: "small", "data-key": "add-server:" + g.id,
        "data-action": "add-server", "data-group": g.id,
      }, "Add server"),
      h("button", {
        type: "button", class: "small danger", "data-key": "drain:" + g.id,
        disabled: g.slots === 0, title: g.slots === 0 ? "owns no slot" : null,
        "data-action": "drain", "data-group": g.id,
      }, "Drain"),
      g.slots === 0 && g.servers.length === 0
        ? h("button", {
          type: "button", class: "small danger", "data-key": "remove-group:" + g.id,
          "data-action": "remove-group", "data-group": g.id,
        }, "Remove")
        : null);
    return h("article", {
      class: "card " + gclass(g.id), "data-group": g.id, "aria-labelledby": "group-h-" + g.id,
    },
    h("header", {},
      h("span", { class: "swatch", "aria-hidden": "true" }),
      h("h3", { id: "group-h-" + g.id }, "Group " + g.id),
      h("span", { class: "badge", "data-slots": g.slots }, fmtInt(g.slots) + " slots"),
      master && !master.reachable ? h("span", { class: "badge down" }, "master down") : null,
      master && master.reachable && master.reported_role !== "master"
        ? h("span", { class: "badge down", title: "the topology's master reports " + master.reported_role + ": writes to this group fail" },
          "master says " + master.reported_role)
        : null,
      actions),
    g.servers.length === 0
      ? h("p", { class: "muted" }, "No server yet: add one (the first becomes the master).")
      : h("div", { class: "scroll" },
        h("table", { class: "stack servers" },
          h("thead", {}, h("tr", {},
            ["Server", "Role", "State", "Memory", "ops/s", "Clients", "Keys", "Replica lag", ""].map((c, i) =>
              h("th", { scope: "col", class: i >= 3 && i <= 7 ? "num" : null },
                c || h("span", { class: "sr-only" }, "Actions"))))),
          h("tbody", {}, rows))));
  });
  if (cards.length === 0) cards.push(h("p", { class: "muted" }, "No group yet."));
  patch($("groups"), cards);
}

function serverRow(ov, g, s) {
  const st = s.stats || null;
  const ha = haServer(ov, s.addr);
  const reported = s.reported_role && s.reported_role !== s.role
    ? h("span", { class: "badge warn" }, "server says " + s.reported_role)
    : null;
  const state = h("td", { "data-label": "State", class: "state" }, h("span", {},
    h("span", { class: "badge " + (s.reachable ? "up" : "down"), title: s.error || null },
      s.reachable ? "up" : "down"),
    ha ? [" ", h("span", { class: "badge " + (ha.up ? "up" : "down"), title: ha.error || null },
      "HA: " + (ha.up ? "up" : "down"))] : null));
  let lag = "–";
  if (s.role === "replica" && st) {
    lag = st.link_up === false ? "link down" : fmtBytes(st.lag_bytes);
  }
  const promoteBtn = s.role === "replica"
    ? h("button", {
      type: "button", class: "small", "data-key": "promote:" + g.id + ":" + s.addr,
      disabled: !s.reachable, "data-action": "promote", "data-group": g.id, "data-addr": s.addr,
    }, "Promote")
    : null;
  return h("tr", { "data-addr": s.addr },
    h("td", { "data-label": "Server" }, h("code", {}, s.addr)),
    h("td", { "data-label": "Role", class: "role role-" + s.role }, h("span", { class: "role-name" }, s.role), reported ? [" ", reported] : null),
    state,
    h("td", { "data-label": "Memory", class: "num" }, st ? fmtBytes(st.used_memory) : "–"),
    h("td", { "data-label": "ops/s", class: "num" }, st ? fmtInt(st.ops_per_sec) : "–"),
    h("td", { "data-label": "Clients", class: "num" }, st ? fmtInt(st.clients) : "–"),
    h("td", { "data-label": "Keys", class: "num" }, st ? fmtInt(st.keys) : "–"),
    h("td", { "data-label": "Replica lag", class: "num" }, lag),
    h("td", { "data-label": promoteBtn ? "Actions" : "" }, promoteBtn));
}

/** Slot runs: [{start, end, group (0: none), to (0: not migrating), state}]. */
function slotRuns(ov) {
  const owner = new Int32Array(SLOTS);
  const to = new Int32Array(SLOTS);
  for (const r of ov.slots || []) owner.fill(r.group, r.start, r.end + 1);
  const migs = ov.migrations ? ov.migrations.migrations : [];
  for (const m of migs) to.fill(m.to, m.start, m.end + 1);
  const runs = [];
  let start = 0;
  for (let s = 1; s <= SLOTS; s++) {
    if (s === SLOTS || owner[s] !== owner[start] || to[s] !== to[start]) {
      runs.push({ start, end: s - 1, group: owner[start], to: to[start] });
      start = s;
    }
  }
  return runs;
}

function renderSlots(ov) {
  const runs = slotRuns(ov);
  const counts = new Map(ov.groups.map((g) => [g.id, g.slots]));
  const legend = ov.groups.map((g) => h("li", { class: gclass(g.id), "data-group": g.id },
    h("span", { class: "swatch", "aria-hidden": "true" }),
    "Group " + g.id + ": " + fmtInt(counts.get(g.id) || 0) + " slots"));
  if (ov.unassigned_slots > 0) legend.push(h("li", {}, "Unassigned: " + fmtInt(ov.unassigned_slots)));
  const migrating = runs.filter((r) => r.to).reduce((n, r) => n + r.end - r.start + 1, 0);
  if (migrating > 0) legend.push(h("li", {}, "Migrating (hatched): " + fmtInt(migrating)));
  patch($("slot-legend"), legend);
  const map = $("slot-map");
  map.setAttribute("aria-label", "Slot map: " + ov.groups.map((g) =>
    "group " + g.id + " owns " + (counts.get(g.id) || 0)).join(", ") +
    (migrating ? ", " + migrating + " migrating" : ""));
  patch(map, runs.map((r) => {
    const n = r.end - r.start + 1;
    const who = r.group ? "G" + r.group : "none";
    const label = r.to ? who + "→G" + r.to : who;
    const seg = h("div", {
      class: "slot-seg " + (r.group ? gclass(r.group) : "unassigned") + (r.to ? " migrating" : ""),
      title: "slots " + range(r.start, r.end) + " (" + n + "): " +
        (r.group ? "group " + r.group : "unassigned") + (r.to ? ", migrating to group " + r.to : ""),
      "aria-hidden": "true",
    }, h("span", { class: "lbl" }, label), h("span", {}, range(r.start, r.end)));
    seg.style.flexGrow = String(n);
    seg.style.flexBasis = "0";
    return seg;
  }));
  patch($("slot-ranges").tBodies[0], runs.map((r) => h("tr", {},
    h("td", {}, range(r.start, r.end)),
    h("td", { class: "num" }, fmtInt(r.end - r.start + 1)),
    h("td", {}, r.group ? [h("span", { class: "swatch " + gclass(r.group), "aria-hidden": "true" }), "Group " + r.group] : "unassigned"),
    h("td", {}, r.to ? "group " + r.to : "–"))));
}

function renderMigrations(ov) {
  const m = ov.migrations || { migrations: [], keys_moved_total: 0, keys_per_sec: 0 };
  const remaining = m.migrations.reduce((n, x) => n + x.end - x.start + 1, 0);
  if (remaining > 0) {
    state.batchTotal = Math.max(state.batchTotal, remaining);
  } else if (state.batchTotal > 0) {
    state.lastBatch = { total: state.batchTotal, at: Date.now() };
    state.batchTotal = 0;
  }
  const out = [];
  out.push(h("div", { class: "migration-summary" },
    h("span", {}, "Keys moved: ", h("strong", { id: "mig-keys" }, fmtInt(m.keys_moved_total))),
    h("span", {}, "Rate: ", h("strong", {}, fmtInt(m.keys_per_sec) + " keys/s")),
    h("span", {}, "ETA: ", h("strong", {}, remaining > 0 ? fmtSecs(m.eta_secs) : "–"))));
  if (remaining > 0) {
    const done = state.batchTotal - remaining;
    out.push(progressRow("mig-progress", done, state.batchTotal,
      fmtInt(done) + " of " + fmtInt(state.batchTotal) + " slots moved"));
    out.push(h("div", { class: "scroll" }, h("table", { class: "stack", id: "mig-table" },
      h("thead", {}, h("tr", {}, ["Slots", "From", "To", "State", "Keys moved", "Waiting for / error"].map((c) =>
        h("th", { scope: "col" }, c)))),
      h("tbody", {}, m.migrations.map((x) => h("tr", { "data-state": x.state },
        h("td", { "data-label": "Slots" }, range(x.start, x.end)),
        h("td", { "data-label": "From" }, "group " + x.from),
        h("td", { "data-label": "To" }, "group " + x.to),
        h("td", { "data-label": "State" }, h("span", {
          class: "badge " + (x.state === "paused" ? "down" : x.state === "waiting_for_proxies" ? "warn" : ""),
        }, x.state.replace(/_/g, " "))),
        h("td", { "data-label": "Keys moved", class: "num" }, fmtInt(x.keys_moved)),
        h("td", { "data-label": "Waiting for / error" },
          x.error ? h("span", { class: "error" }, x.error) : null,
          x.blocking_proxies.length ? "proxies " + x.blocking_proxies.join(", ") : null)))))));
  } else if (state.lastBatch) {
    const t = state.lastBatch.total;
    out.push(progressRow("mig-progress", t, t, "done: " + fmtInt(t) + " of " + fmtInt(t) +
      " slots moved (finished " + new Date(state.lastBatch.at).toLocaleTimeString() + ")"));
  } else {
    out.push(h("p", { class: "muted" }, "No migration in flight."));
  }
  patch($("migrations"), out);
}

function progressRow(id, value, max, text) {
  const pct = max > 0 ? Math.floor((100 * value) / max) : 100;
  return h("div", { class: "progress-row" },
    h("progress", { id, max, value, "aria-label": "Migration progress" }, pct + "%"),
    h("span", { id: id + "-text" }, pct + "% · " + text));
}

function trackProxies(ov, now) {
  for (const s of ov.proxy_stats || []) {
    if (s.commands === undefined || s.commands === null) continue;
    const prev = state.proxyPrev.get(s.id);
    if (prev && now > prev.t && s.commands >= prev.commands) {
      state.proxyRate.set(s.id, ((s.commands - prev.commands) * 1000) / (now - prev.t));
    }
    state.proxyPrev.set(s.id, { t: now, commands: s.commands });
  }
}

function renderProxies(ov) {
  const stats = new Map((ov.proxy_stats || []).map((s) => [s.id, s]));
  const rows = ov.proxies.map((p) => {
    const st = stats.get(p.id) || {};
    const behind = ov.epoch - p.acked_epoch;
    const ha = haProxy(ov, p.id);
    const idle = st.error || st.clients === 0 || (ha && !ha.up);
    return h("tr", { "data-proxy": p.id, class: behind > 0 ? "behind" : null },
      h("td", { "data-label": "Proxy" }, h("code", {}, p.id)),
      h("td", { "data-label": "Client address" }, h("code", {}, p.addr)),
      h("td", { "data-label": "Acknowledged epoch", class: "epoch" }, String(p.acked_epoch),
        behind > 0 ? [" ", h("span", { class: "badge warn" }, "behind by " + behind)] : [" ", h("span", { class: "badge up" }, "current")]),
      h("td", { "data-label": "ops/s", class: "num" }, state.proxyRate.has(p.id) ? fmtInt(state.proxyRate.get(p.id)) : "–"),
      h("td", { "data-label": "Clients", class: "num", title: st.error || null }, st.clients !== undefined ? fmtInt(st.clients) : "–"),
      h("td", { "data-label": "Health (kodis-ha)" }, ha
        ? h("span", { class: "badge " + (ha.up ? "up" : "down"), title: ha.error || null }, ha.up ? "up" : "down")
        : "–"),
      h("td", { "data-label": "Actions" }, h("button", {
        type: "button", class: "small danger", "data-key": "remove-proxy:" + p.id,
        disabled: !idle, title: idle ? null : "has clients: only an idle or gone proxy can be removed",
        "data-action": "remove-proxy", "data-proxy": p.id,
      }, "Remove")));
  });
  if (rows.length === 0) rows.push(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No proxy registered.")));
  const table = $("proxies");
  table.classList.add("stack");
  patch(table.tBodies[0], rows);
}

// ---- live charts ----------------------------------------------------------------

function record(ov, now) {
  let ops = 0;
  let mem = 0;
  let keys = 0;
  for (const g of ov.groups) {
    g.servers.forEach((s, i) => {
      if (!s.stats) return;
      ops += s.stats.ops_per_sec;
      mem += s.stats.used_memory;
      if (i === 0) keys += s.stats.keys;
    });
  }
  state.history.push({ t: now, ops, mem, keys });
  while (state.history.length && state.history[0].t < now - HISTORY_MS) state.history.shift();
  $("now-ops").textContent = fmtInt(ops);
  $("now-mem").textContent = fmtBytes(mem);
  $("now-keys").textContent = fmtInt(keys);
}

function drawCharts() {
  drawChart($("chart-ops"), "ops", fmtInt);
  drawChart($("chart-mem"), "mem", fmtBytes);
  drawChart($("chart-keys"), "keys", fmtInt);
}

function drawChart(canvas, field, fmt) {
  const css = getComputedStyle(document.documentElement);
  const color = css.getPropertyValue("--chart").trim() || "#0072b2";
  const fill = css.getPropertyValue("--chart-fill").trim() || "rgba(0,114,178,0.15)";
  const text = css.getPropertyValue("--muted").trim() || "#555";
  const line = css.getPropertyValue("--line").trim() || "#ccc";
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, canvas.clientWidth);
  const hgt = Math.max(1, canvas.clientHeight);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);
  const pts = state.history;
  const max = Math.max(1, ...pts.map((p) => p[field]));
  const top = 16;
  const bottom = hgt - 14;
  const now = pts.length ? pts[pts.length - 1].t : Date.now();
  // The time axis spans what was kept: from the first point (at least 30 s) up to
  // the last five minutes.
  const span = Math.min(HISTORY_MS, Math.max(30000, pts.length ? now - pts[0].t : 0));
  const x = (t) => w - ((now - t) / span) * w;
  const y = (v) => bottom - (v / max) * (bottom - top);
  ctx.strokeStyle = line;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, bottom + 0.5);
  ctx.lineTo(w, bottom + 0.5);
  ctx.moveTo(0, top + 0.5);
  ctx.lineTo(w, top + 0.5);
  ctx.stroke();
  ctx.fillStyle = text;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.fillText("max " + fmt(max), 4, 2);
  ctx.textBaseline = "bottom";
  ctx.fillText("−" + fmtSecs(Math.round(span / 1000)), 4, hgt);
  const nowLabel = "now";
  ctx.fillText(nowLabel, w - ctx.measureText(nowLabel).width - 4, hgt);
  if (pts.length < 2) return;
  ctx.beginPath();
  pts.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.t), y(p[field])) : ctx.lineTo(x(p.t), y(p[field]))));
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.stroke();
  ctx.lineTo(x(pts[pts.length - 1].t), bottom);
  ctx.lineTo(x(pts[0].t), bottom);
  ctx.closePath();
  ctx.fillStyle = fill;
  ctx.fill();
}

// ---- dialogs and actions ----------------------------------------------------------

let pending = null; // the action the confirm dialog runs on OK

/**
 * Opens the confirmation dialog: `body` (nodes), `ok` (button text), and `run`, an
 * async function that does the action and returns the message to show; an error
 * keeps the dialog open with the API's error text.
 */
function confirmAction({ title, body, ok, danger, run }) {
  const d = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-body").replaceChildren(...body);
  const err = $("confirm-error");
  err.hidden = true;
  err.textContent = "";
  const okBtn = $("confirm-ok");
  okBtn.textContent = ok;
  okBtn.disabled = false;
  okBtn.className = danger ? "danger" : "";
  pending = run;
  d.showModal();
  const first = d.querySelector("#confirm-body input");
  (first || okBtn).focus();
}

async function onConfirm(ev) {
  ev.preventDefault();
  if (!pending) return;
  const okBtn = $("confirm-ok");
  const err = $("confirm-error");
  okBtn.disabled = true;
  err.hidden = true;
  try {
    const msg = await pending();
    pending = null;
    $("confirm").close();
    say(msg);
    poll();
  } catch (e) {
    err.textContent = e.message;
    err.hidden = false;
    okBtn.disabled = false;
    if (e.status === 401) state.needToken = true;
  }
}

function input(id, label, attrs) {
  return [h("label", { for: id }, label), h("input", Object.assign({ id }, attrs))];
}

function addGroup() {
  const ov = state.overview;
  const next = ov ? Math.max(0, ...ov.groups.map((g) => g.id)) + 1 : 1;
  confirmAction({
    title: "Add a group",
    body: [h("p", {}, "A new, empty group. Add a server to it next; it gets slots by a rebalance."),
      ...input("f-group-id", "Group id", { type: "number", min: 1, value: next, required: true })],
    ok: "Add group",
    run: async () => {
      const id = Number($("f-group-id").value);
      if (!Number.isInteger(id) || id < 1) throw new ApiError(0, "the group id must be a whole number from 1");
      await api("POST", "/api/v1/groups", { id });
      return "Group " + id + " added.";
    },
  });
}

function addServer(gid) {
  const g = state.overview && state.overview.groups.find((x) => x.id === gid);
  const first = !g || g.servers.length === 0;
  confirmAction({
    title: "Add a server to group " + gid,
    body: [h("p", {}, first
      ? "The group's first server becomes its master."
      : "The server becomes a replica of the group's master (" + g.servers[0].addr + ")."),
    ...input("f-server-addr", "Address (host:port)", { type: "text", placeholder: "127.0.0.1:7010", required: true, autocomplete: "off", spellcheck: "false" }),
    h("label", { class: "inline", for: "f-server-force" },
      h("input", { id: "f-server-force", type: "checkbox" }),
      "Force (the server holds keys or has replicas: they are discarded)")],
    ok: "Add server",
    run: async () => {
      const addr = $("f-server-addr").value.trim();
      if (!addr) throw new ApiError(0, "an address is needed");
      const body = { addr };
      if ($("f-server-force").checked) body.force = true;
      await api("POST", "/api/v1/groups/" + gid + "/servers", body);
      return addr + " added to group " + gid + ".";
    },
  });
}

function promote(gid, addr) {
  const g = state.overview && state.overview.groups.find((x) => x.id === gid);
  const master = g ? g.servers[0] : null;
  confirmAction({
    title: "Promote " + addr,
    body: [h("p", {}, "Make ", h("code", {}, addr), " the master of group " + gid + ". While the master ",
      h("code", {}, master ? master.addr : "?"), master && master.reachable
        ? " answers, the switch is planned: writes pause until the replica has them all, none is lost."
        : " does not answer: this is a forced promotion; what it had not replicated is lost.")],
    ok: "Promote",
    danger: true,
    run: async () => {
      await api("POST", "/api/v1/groups/" + gid + "/promote", { addr });
      return addr + " is now the master of group " + gid + ".";
    },
  });
}

function drain(gid) {
  const g = state.overview && state.overview.groups.find((x) => x.id === gid);
  const slots = g ? g.slots : 0;
  confirmAction({
    title: "Drain group " + gid,
    body: [h("p", {}, "Migrate all " + fmtInt(slots) + " slots of group " + gid +
      " to the other groups, online. Its servers stay until you remove them.")],
    ok: "Drain",
    danger: true,
    run: async () => {
      const plan = await api("POST", "/api/v1/groups/" + gid + "/drain");
      return "Draining group " + gid + ": " + fmtInt(plan.slots) + " slots in " + plan.moves.length + " moves.";
    },
  });
}

function removeGroup(gid) {
  confirmAction({
    title: "Remove group " + gid,
    body: [h("p", {}, "Group " + gid + " has no server and no slot. Remove it?")],
    ok: "Remove group",
    danger: true,
    run: async () => {
      await api("DELETE", "/api/v1/groups/" + gid);
      return "Group " + gid + " removed.";
    },
  });
}

function removeProxy(id) {
  confirmAction({
    title: "Remove proxy " + id,
    body: [h("p", {}, "Remove the registration of ", h("code", {}, id),
      ". Do this for a proxy that is gone: a running proxy stops getting topology pushes (it registers again when it restarts).")],
    ok: "Remove registration",
    danger: true,
    run: async () => {
      await api("DELETE", "/api/v1/proxies/" + encodeURIComponent(id));
      return "Proxy " + id + " removed.";
    },
  });
}

async function rebalance() {
  let plan;
  try {
    plan = await api("POST", "/api/v1/rebalance?dry_run=true");
  } catch (e) {
    if (e.status === 401) askToken(e.message);
    showBanner("Rebalance plan refused: " + e.message);
    return;
  }
  if (plan.moves.length === 0) {
    confirmAction({
      title: "Rebalance",
      body: [h("p", { id: "plan-empty" }, "The slots are already balanced: nothing to move.")],
      ok: "Close",
      run: async () => "Nothing to rebalance.",
    });
    return;
  }
  const moves = h("div", { class: "scroll" }, h("table", { id: "plan-moves" },
    h("thead", {}, h("tr", {}, ["Slots", "Count", "From", "To"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, plan.moves.map((m) => h("tr", {},
      h("td", {}, range(m.start, m.end)),
      h("td", { class: "num" }, fmtInt(m.end - m.start + 1)),
      h("td", {}, "group " + m.from),
      h("td", {}, "group " + m.to))))));
  const after = h("ul", {}, plan.after.map(([g, n]) => h("li", {}, "group " + g + ": " + fmtInt(n) + " slots")));
  confirmAction({
    title: "Rebalance",
    body: [h("p", { id: "plan-summary" }, "Plan (dry run): " + fmtInt(plan.slots) + " slots move in " +
      plan.moves.length + " moves. Keys move online; clients keep working."), moves,
    h("p", {}, "Slots per group afterwards:"), after],
    ok: "Start rebalance",
    run: async () => {
      const started = await api("POST", "/api/v1/rebalance");
      state.batchTotal = Math.max(state.batchTotal, started.slots);
      state.lastBatch = null;
      return "Rebalance started: " + fmtInt(started.slots) + " slots in " + started.moves.length + " moves.";
    },
  });
}

function askToken(error) {
  const d = $("token");
  const err = $("token-error");
  err.hidden = !error;
  err.textContent = error ? "The dashboard refused the token: " + error : "";
  if (!d.open) {
    $("token-input").value = "";
    d.showModal();
  }
  $("token-input").focus();
}

async function onToken(ev) {
  ev.preventDefault();
  const t = $("token-input").value.trim();
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    // Storage refused (private mode): the token lives as long as the page.
  }
  try {
    const ov = await api("GET", "/api/v1/overview");
    state.needToken = false;
    $("token").close();
    showBanner(null);
    say("Token accepted.");
    render(ov);
  } catch (e) {
    askToken(e.message);
  }
}

function init() {
  // The buttons drawn from the overview: one listener, reading what the button names.
  document.addEventListener("click", (ev) => {
    const b = ev.target instanceof Element ? ev.target.closest("button[data-action]") : null;
    if (!b || b.disabled) return;
    const gid = Number(b.dataset.group);
    switch (b.dataset.action) {
      case "add-server": addServer(gid); break;
      case "drain": drain(gid); break;
      case "remove-group": removeGroup(gid); break;
      case "promote": promote(gid, b.dataset.addr); break;
      case "remove-proxy": removeProxy(b.dataset.proxy); break;
      default: break;
    }
  });
  $("act-add-group").addEventListener("click", addGroup);
  $("act-rebalance").addEventListener("click", rebalance);
  $("act-token").addEventListener("click", () => askToken(null));
  $("confirm-form").addEventListener("submit", onConfirm);
  $("confirm-cancel").addEventListener("click", () => {
    pending = null;
    $("confirm").close();
  });
  $("confirm").addEventListener("close", () => {
    pending = null;
  });
  $("token-form").addEventListener("submit", onToken);
  $("token-cancel").addEventListener("click", () => $("token").close());
  window.addEventListener("resize", drawCharts);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });
  if (window.matchMedia) {
    const dark = window.matchMedia("(prefers-color-scheme: dark)");
    if (dark.addEventListener) dark.addEventListener("change", drawCharts);
  }
  poll();
}

document.addEventListener("DOMContentLoaded", init);
