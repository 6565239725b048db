// The gateway's status page: reads /api/events (server-sent events, with the admin token)
// and draws what it says; the buttons call the same admin API. No framework, no CDN;
// /operator.js is loaded first.
"use strict";

const KEY = "canopy-admin-token";
const KEEP_S = 300;
const LEVELS = ["auto", "full", "substream", "transcode", "keyframes", "audio"];
const linkHistory = new Map(); // link name -> points, oldest first
let updates = 0;

const mbit = (bps) => (bps == null ? "-" : (bps / 1e6).toFixed(2));
const bytes = (n) => {
  n = n || 0;
  if (n >= 1e9) return (n / 1e9).toFixed(1) + " GB";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + " MB";
  if (n >= 1e3) return (n / 1e3).toFixed(0) + " kB";
  return n + " B";
};

// operator.js: $, el, live, showLogin, showMain, keepToken
const token = keepToken(KEY, connect);

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: { Authorization: "Bearer " + token(), "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401) { showLogin("The gateway refused that token."); throw new Error("401"); }
  const text = await r.text();
  let v = {};
  try { v = JSON.parse(text); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error(v.error || text || r.status);
  return v;
}

function say(text, bad) {
  const s = $("said");
  s.textContent = text;
  s.className = bad ? "bad" : "";
}

async function act(what, method, path, body) {
  try {
    await api(method, path, body);
    say(what + ": done");
  } catch (e) {
    if (e.message !== "401") say(what + ": " + e.message, true);
  }
}

function addHistory(h) {
  for (const l of (h && h.links) || []) {
    const pts = linkHistory.get(l.name) || [];
    for (const p of l.points) if (!pts.length || p.at_s > pts[pts.length - 1].at_s) pts.push(p);
    while (pts.length > KEEP_S) pts.shift();
    linkHistory.set(l.name, pts);
  }
}

function draw(canvas, pts) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth * dpr, h = canvas.clientHeight * dpr;
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, w, h);
  if (!pts.length) return;
  // the last 5 minutes once there are; until then at least one, filled from the left
  const end = pts[pts.length - 1].at_s;
  const span = Math.min(KEEP_S, Math.max(60, end - pts[0].at_s + 1));
  const start = end - span + 1;
  const x = (t) => ((t - start) / (span - 1)) * w;
  const top = Math.max(1e5, ...pts.map((p) => Math.max(p.up_bps, p.down_bps))) * 1.1;
  const y = (v) => h - (v / top) * h;
  g.fillStyle = "#cf222e33";
  for (const p of pts) if (!p.usable) g.fillRect(x(p.at_s), 0, Math.max(1, w / span), h);
  for (const [key, color] of [["down_bps", "#1a7f37"], ["up_bps", "#0969da"]]) {
    g.strokeStyle = color;
    g.lineWidth = 1.5 * dpr;
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(x(p.at_s), y(p[key])) : g.moveTo(x(p.at_s), y(p[key]))));
    g.stroke();
  }
  g.fillStyle = "#888";
  g.font = 11 * dpr + "px system-ui";
  g.fillText((top / 1e6).toFixed(1) + " Mbit/s", 4, 12 * dpr);
}

function linkCard(l) {
  let card = document.querySelector(`[data-link="${CSS.escape(l.name)}"]`);
  if (!card) {
    card = el("div", { className: "card" });
    card.dataset.link = l.name;
    card.append(
      el("h3", {}, el("span", { textContent: l.name }), el("span", { className: "state" })),
      el("div", { className: "figures" }),
      el("canvas", { role: "img", ariaLabel: l.name + " throughput" }),
    );
    const controls = el("div", { className: "controls" });
    for (const [hold, label] of [["prefer", "Prefer"], ["avoid", "Avoid"], ["auto", "As configured"]]) {
      controls.append(el("button", {
        type: "button", textContent: label,
        onclick: () => act(label + " " + l.name, "PUT", "/api/uplinks/" + encodeURIComponent(l.name), { hold }),
      }));
    }
    card.append(controls);
    $("links").append(card);
  }
  card.dataset.state = l.state;
  card.dataset.usable = l.usable;
  const st = card.querySelector(".state");
  st.textContent = l.state + (l.tier !== l.configured_tier ? " · " + l.tier : l.tier === "backup" ? " · backup" : "") +
    (l.held_by_hand ? (l.held_by_hand === "prefer" ? " · preferred" : " · avoided") + " by hand" : "");
  card.dataset.held = l.held_by_hand || "";
  st.className = "state state-" + (l.usable ? "up" : l.state);
  const f = card.querySelector(".figures");
  f.replaceChildren(
    el("span", { className: "up", textContent: "up " + mbit(l.up_bps) }),
    el("span", { className: "down", textContent: "down " + mbit(l.down_bps) }),
    el("span", { textContent: "RTT " + (l.usable ? l.srtt_ms.toFixed(0) + " ms" : "-") }),
    el("span", { textContent: "loss " + (100 * (l.loss || 0)).toFixed(1) + "%" }),
  );
  if (l.cap_bytes) f.append(el("span", { textContent: "cap " + bytes(l.cap_used_bytes) + " of " + bytes(l.cap_bytes) }));
  draw(card.querySelector("canvas"), linkHistory.get(l.name) || []);
}

function cameraCard(c) {
  let card = document.querySelector(`[data-camera="${CSS.escape(c.camera)}"]`);
  if (!card) {
    card = el("div", { className: "card" });
    card.dataset.camera = c.camera;
    const select = el("select", { ariaLabel: "level of " + c.camera });
    for (const l of LEVELS) select.append(el("option", { value: l, textContent: l === "auto" ? "automatic" : l }));
    select.onchange = () => act("Level of " + c.camera, "PUT", "/api/levels/" + encodeURIComponent(c.camera), { level: select.value });
    const video = el("video", { muted: true, autoplay: true, playsInline: true, controls: true });
    video.dataset.preview = c.camera;
    card.append(el("h3", {}, el("span", { textContent: c.camera }), el("span", { className: "level" })),
      video, el("div", { className: "figures" }), el("div", { className: "controls" }, select));
    $("cameras").append(card);
    preview(video, "/live/" + encodeURIComponent(c.camera) + "/index.m3u8");
  }
  card.dataset.level = c.level;
  card.querySelector(".level").textContent = c.level + (c.pinned ? " (pinned)" : "");
  const select = card.querySelector("select");
  if (document.activeElement !== select) select.value = c.pinned || "auto";
  const f = card.querySelector(".figures");
  f.replaceChildren();
  if (c.ceiling) f.append(el("span", { textContent: "held at " + c.ceiling + " by an action" }));
  if (c.on_air) f.append(el("span", { textContent: "on air: " + c.on_air }));
}

// the camera's on-site LL-HLS, as venue screens get it, through hls.js (Media Source
// Extensions, or Managed Media Source on an iPhone)
function preview(video, url) {
  if (window.Hls && window.Hls.isSupported()) {
    // the previews need the token too: every request hls.js makes carries it
    const auth = () => "Bearer " + token();
    const hls = new window.Hls({
      lowLatencyMode: true,
      liveSyncDurationCount: 2,
      xhrSetup: (xhr) => xhr.setRequestHeader("Authorization", auth()),
      fetchSetup: (ctx, init) => {
        init.headers = new Headers(init.headers || {});
        init.headers.set("Authorization", auth());
        return new Request(ctx.url, init);
      },
    });
    hls.on(window.Hls.Events.ERROR, (_, d) => {
      if (!d.fatal) return;
      if (d.type === window.Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
      else setTimeout(() => hls.loadSource(url), 2000);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  }
  // (a browser without Media Source Extensions cannot send the token: no preview there)
}

function dl(id, rows) {
  $(id).replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
}

function render(s) {
  $("gateway").textContent = "Canopy · " + s.gateway;
  document.title = s.gateway + " · Canopy";
  const problems = s.problems || [];
  $("problems").replaceChildren(...(problems.length
    ? problems.map((p) => el("div", { textContent: p }))
    : [el("div", { className: "ok", textContent: "All well: every uplink up, nothing waiting." })]));
  for (const l of s.links || []) linkCard(l);
  const cams = s.cameras || [];
  $("cameras").closest("section").hidden = !cams.length;
  for (const c of cams) cameraCard(c);
  const b = s.bids || {};
  dl("bids", [
    ["waiting", String(b.pending || 0) + (b.pending ? " (oldest " + b.oldest_pending_s.toFixed(0) + " s)" : "")],
    ["taken", String(b.accepted || 0)],
    ["went to the queue", String(b.queued || 0)],
    ["journal", bytes(b.journal_bytes)],
  ]);
  const c = s.cache;
  $("purge").hidden = !c;
  dl("cache", c ? [["answers", String(c.entries)], ["in memory", bytes(c.bytes)], ["on disk", bytes(c.disk_bytes)]]
    : [["", "off"]]);
  const acts = s.actions || [];
  $("actions").replaceChildren(...(acts.length ? acts.map((a) => el("div", {
    className: a.active ? "bad" : "",
    textContent: a.name + ": " + (a.active ? "ON" : "off") + (a.dry_run ? " (dry run)" : "") +
      " · " + a.firings + " firings" + (a.cause ? " · " + a.cause : ""),
  })) : [el("div", { textContent: "no [[actions]] rules" })]));
  updates += 1;
  document.body.dataset.updates = updates;
}

// one stream at a time: a new one (a new token) ends the one before
let stream = null;

async function connect() {
  if (stream) stream.abort();
  const mine = new AbortController();
  stream = mine;
  if (!token()) return showLogin();
  try {
    const r = await fetch("/api/events", {
      headers: { Authorization: "Bearer " + token() },
      signal: mine.signal,
    });
    if (r.status === 401) return showLogin("The gateway refused that token.");
    if (!r.ok || !r.body) throw new Error(String(r.status));
    showMain();
    live(true, "live");
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
        if (!data) continue;
        const v = JSON.parse(data);
        // the gateway's clock stepped back: its history starts again
        if (v.reset) linkHistory.clear();
        addHistory(v.history);
        render(v.status);
      }
    }
  } catch (e) {
    /* the gateway went away (or a newer stream took over) */
  }
  if (stream !== mine) return;
  live(false, "reconnecting");
  setTimeout(() => { if (stream === mine) connect(); }, 1000);
}

$("purge").addEventListener("click", () => act("Purge", "POST", "/api/cache/purge", { all: true }));
connect();
