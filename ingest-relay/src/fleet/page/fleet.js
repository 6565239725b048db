// The relay's fleet page: reads /api/fleet each second (with the fleet token) and draws
// every gateway the relay hears from. No framework, no CDN; /operator.js is loaded first.
"use strict";

const KEY = "canopy-fleet-token";
const EVERY_MS = 1000;
// the last hour's points come with every tenth answer (they change every 10 s)
const HOUR_EVERY = 10;
const hours = new Map(); // gateway name.event -> its last hour
const id = (g) => g.name + "." + g.event;
let updates = 0;

const mbit = (kbps) => (kbps == null ? "-" : (kbps / 1000).toFixed(2));

function graph(canvas, hour) {
  const w = (canvas.width = canvas.clientWidth * devicePixelRatio);
  const h = (canvas.height = canvas.clientHeight * devicePixelRatio);
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, w, h);
  if (!hour.length) return;
  const now = Date.now() / 1000;
  const x = (at) => w - ((now - at) / 3600) * w;
  const max = Math.max(1, ...hour.map((p) => Math.max(p.up_kbps, p.down_kbps)));
  const y = (v) => h - 2 - (v / max) * (h - 4);
  for (const p of hour) {
    if (!p.online) {
      g.fillStyle = "#cf222e55";
      g.fillRect(x(p.at) - w / 360, 0, w / 360 + 1, h);
    }
  }
  for (const [key, color] of [["down_kbps", "#1a7f37"], ["up_kbps", "#0969da"]]) {
    g.strokeStyle = color;
    g.lineWidth = 2 * devicePixelRatio;
    g.beginPath();
    hour.forEach((p, i) => (i ? g.lineTo(x(p.at), y(p[key])) : g.moveTo(x(p.at), y(p[key]))));
    g.stroke();
  }
}

function card(gw) {
  const c = el("div", { className: "card " + (gw.online ? "online" : "offline") });
  c.dataset.gateway = gw.name;
  c.dataset.online = String(gw.online);
  const state = gw.online ? "online" : "offline: " + (gw.why_offline || "");
  c.append(
    el("h2", {}, el("span", { textContent: gw.name + (gw.event ? " \u00b7 " + gw.event : "") }),
      el("span", { className: "state", textContent: state })),
  );
  const f = el("div", { className: "figures" });
  const fig = (label, v) => f.append(el("span", { textContent: label + " " + v }));
  fig("up", mbit(gw.up_kbps) + " Mbit/s");
  fig("down", mbit(gw.down_kbps) + " Mbit/s");
  fig("links up", gw.links_up + "/" + gw.links.length);
  fig("viewers", gw.viewers);
  if (gw.bids) {
    fig("bids", gw.bids.accepted);
    fig("waiting", gw.bids.pending);
  }
  if (gw.stream_capacity_kbps != null) fig("stream room", mbit(gw.stream_capacity_kbps) + " Mbit/s");
  c.append(f);
  if (gw.problems.length) {
    const p = el("div", { className: "problems" });
    for (const t of gw.problems) p.append(el("div", { textContent: t }));
    c.append(p);
  }
  if (gw.cameras.length) {
    c.append(el("div", { className: "figures",
      textContent: "cameras: " + gw.cameras.map((k) => k.name + " " + k.level + (k.pinned ? " (pinned)" : "")).join(", ") }));
  }
  const heads = [gw.online ? "link" : "link (as last reported)", "state", "up", "down", "RTT ms", "loss %"];
  const t = el("table", {}, el("tr", {}, ...heads.map((h) => el("th", { textContent: h }))));
  for (const l of gw.links) {
    t.append(el("tr", {},
      el("td", { textContent: l.name + (l.kind ? " (" + l.kind + ")" : "") }),
      el("td", { className: "link-" + l.state, textContent: l.state }),
      el("td", { textContent: mbit(l.up_kbps) }),
      el("td", { textContent: mbit(l.down_kbps) }),
      el("td", { textContent: l.rtt_ms ?? "-" }),
      el("td", { textContent: l.loss_pct ?? "-" })));
  }
  c.append(t);
  const canvas = el("canvas");
  c.append(canvas);
  requestAnimationFrame(() => graph(canvas, hours.get(id(gw)) || []));
  return c;
}

async function poll() {
  let r;
  try {
    const hour = updates % HOUR_EVERY === 0 ? "?hour=1" : "";
    r = await fetch("/api/fleet" + hour, { headers: { Authorization: "Bearer " + token() } });
  } catch (e) {
    live(false, "relay unreachable");
    return;
  }
  if (r.status === 401) { localStorage.removeItem(KEY); showLogin("The relay refused that token."); return; }
  if (!r.ok) { live(false, "error " + r.status); return; }
  const v = await r.json();
  for (const g of v.gateways) if (g.hour) hours.set(id(g), g.hour);
  showMain();
  $("relay").textContent = "Canopy fleet \u00b7 " + v.relay;
  const online = v.gateways.filter((g) => g.online).length;
  $("summary").textContent = v.gateways.length + " gateways, " + online + " online";
  const box = $("gateways");
  box.replaceChildren(...v.gateways
    .slice()
    .sort((a, b) => Number(a.online) - Number(b.online) || a.name.localeCompare(b.name))
    .map(card));
  updates += 1;
  document.body.dataset.updates = String(updates);
  live(true, "live");
}

// operator.js: $, el, live, showLogin, showMain, keepToken
const token = keepToken(KEY, poll);

function start() {
  if (!token()) showLogin("");
  else poll();
  setInterval(() => { if (token()) poll(); }, EVERY_MS);
}

start();
