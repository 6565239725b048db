#!/usr/bin/env node
// Browser player check for LL-HLS streams: plays a playlist in headless Chromium with
// hls.js (low-latency mode) and reports errors, progress and latency.
//
//   node tests/browser/play.mjs --url http://127.0.0.1:PORT/live/NAME/index.m3u8 \
//        --seconds 30 --screenshot out.png [--json out.json] [--viewport 390x844] \
//        [--page-port 0] [--allow-nonfatal]
//
// The page (player.html + hls.min.js) is served from its own 127.0.0.1 port, so it is a
// different origin from the stream: the stream server must answer CORS.
// Needs: Debian's /usr/bin/chromium, and node_modules with hls.js and playwright-core,
// either next to this script or in a directory on NODE_PATH.
//
// Must run inside a network namespace whose only interface is `lo` (Chromium would
// otherwise send DNS queries out), e.g.
//   ip netns add play; ip -n play link set lo up; ip netns exec play node .../play.mjs ...
// It refuses (exit 2) anywhere else.
//
// Prints one line:  play: advanced 29.1 s of 30, 0 errors (0 fatal), latency p50 1.32 s
// Exit 0 if currentTime advanced by >= 80% of --seconds (wall time counted from page load,
// so start-up is included) and there was no hls.js ERROR event at all (only no fatal one
// with --allow-nonfatal); 1 if the check failed; 2 for usage or environment problems.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const MIN_ADVANCE = 0.8;

function die(msg, code = 2) {
  process.stderr.write(`play: ${msg}\n`);
  process.exit(code);
}

// ---------------------------------------------------------------- arguments
function parseArgs(argv) {
  const o = { seconds: 30, viewport: '1280x720', pagePort: 0, allowNonfatal: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) die(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--url': o.url = val(); break;
      case '--seconds': o.seconds = Number(val()); break;
      case '--screenshot': o.screenshot = val(); break;
      case '--json': o.json = val(); break;
      case '--viewport': o.viewport = val(); break;
      case '--page-port': o.pagePort = Number(val()); break;
      case '--allow-nonfatal': o.allowNonfatal = true; break;
      case '-h': case '--help':
        process.stdout.write(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8')
          .split('\n').filter(l => l.startsWith('//')).map(l => l.slice(3)).join('\n') + '\n');
        process.exit(0);
      default: die(`unknown argument ${a} (see --help)`);
    }
  }
  if (!o.url) die('--url is required');
  if (!o.screenshot) die('--screenshot is required');
  if (!(o.seconds > 0)) die('--seconds must be a positive number');
  if (!Number.isInteger(o.pagePort) || o.pagePort < 0 || o.pagePort > 65535) die('--page-port must be 0..65535');
  const m = /^(\d+)x(\d+)$/.exec(o.viewport);
  if (!m) die('--viewport must look like 1280x720');
  o.width = Number(m[1]);
  o.height = Number(m[2]);
  let u;
  try { u = new URL(o.url); } catch { die(`--url is not a URL: ${o.url}`); }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') die('--url must be http(s)');
  // Name resolution is disabled in the browser (and there is no DNS in the namespace).
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(host) && !host.includes(':')) die(`--url must use an IP literal, not "${host}"`);
  return o;
}

// ---------------------------------------------------------------- environment
// Refuse unless this process is in a network namespace whose only interface is lo.
// /proc/net/dev always shows the reader's own namespace; `ip -o link` (netlink) is
// checked too when available. Both must agree.
function checkNetns() {
  const names = new Set();
  let dev;
  try { dev = fs.readFileSync('/proc/net/dev', 'utf8'); } catch (e) { die(`cannot read /proc/net/dev (${e.message}); refusing to run`); }
  for (const line of dev.split('\n').slice(2)) {
    const m = /^\s*([^:\s]+):/.exec(line);
    if (m) names.add(m[1]);
  }
  let loUp = null;
  try {
    const out = execFileSync('ip', ['-o', 'link'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    for (const line of out.split('\n')) {
      const m = /^\d+:\s+([^:@\s]+)(?:@[^:\s]+)?:\s+<([^>]*)>/.exec(line);
      if (!m) continue;
      names.add(m[1]);
      if (m[1] === 'lo') loUp = m[2].split(',').includes('UP');
    }
  } catch { /* no iproute2: /proc/net/dev alone */ }
  const others = [...names].filter(n => n !== 'lo');
  if (others.length) {
    die(`refusing to run: this network namespace has interfaces other than lo (${others.join(', ')}).\n` +
        'Headless Chromium must only run in a loopback-only namespace, e.g.\n' +
        '  ip netns add play && ip -n play link set lo up && ip netns exec play node tests/browser/play.mjs ...\n' +
        '  (afterwards: ip netns del play)');
  }
  if (!names.has('lo')) die('refusing to run: no lo interface in this network namespace');
  if (loUp === false) die('lo is down in this namespace: run `ip -n NAME link set lo up` first');
}

// node_modules next to this script, then every directory on NODE_PATH.
function findModule(rel) {
  const dirs = [path.join(HERE, 'node_modules'),
    ...(process.env.NODE_PATH || '').split(path.delimiter).filter(Boolean)];
  for (const d of dirs) {
    const p = path.join(d, rel);
    if (fs.existsSync(p)) return p;
  }
  die(`cannot find ${rel} in ${dirs.join(' or ')}; run npm install in tests/browser or set NODE_PATH`);
}

// ---------------------------------------------------------------- page server
function startPageServer(port, hlsPath) {
  const files = {
    '/player.html': { file: path.join(HERE, 'player.html'), type: 'text/html; charset=utf-8' },
    '/hls.min.js': { file: hlsPath, type: 'text/javascript; charset=utf-8' },
  };
  const server = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    const f = files[p === '/' ? '/player.html' : p];
    if (!f || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(p === '/favicon.ico' ? 204 : 404, { 'cache-control': 'no-store' });
      return res.end();
    }
    fs.readFile(f.file, (err, body) => {
      if (err) { res.writeHead(500); return res.end(String(err)); }
      res.writeHead(200, { 'content-type': f.type, 'content-length': body.length, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

// What the stream server says to a cross-origin GET from the page's origin.
async function probeCors(url, origin) {
  const r = { origin };
  try {
    const res = await fetch(url, { headers: { Origin: origin }, signal: AbortSignal.timeout(5000) });
    r.status = res.status;
    r.content_type = res.headers.get('content-type');
    r.allow_origin = res.headers.get('access-control-allow-origin');
    await res.arrayBuffer();
  } catch (e) {
    r.fetch_error = String(e.cause ? `${e.message}: ${e.cause.message || e.cause.code}` : e.message);
  }
  r.ok = r.allow_origin === '*' || r.allow_origin === origin;
  return r;
}

// ---------------------------------------------------------------- summary
function quantile(xs, q) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q, lo = Math.floor(pos), hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}
const r3 = x => (typeof x === 'number' && isFinite(x) ? Number(x.toFixed(3)) : null);

function summarize(o, P, extra) {
  const samples = P.samples || [];
  // every hole between two buffered ranges of one SourceBuffer that a sample saw
  const holes = new Map();
  for (const s of samples) {
    for (const [track, rs] of Object.entries(s.tracks || {})) {
      for (let i = 1; i < rs.length; i++) {
        const k = `${track} ${rs[i - 1][1]}-${rs[i][0]}`;
        if (!holes.has(k)) holes.set(k, { track, from: rs[i - 1][1], to: rs[i][0], first_seen: s.t });
      }
    }
  }
  // hls.js joins a live stream with its timeline at 0 and, when the first media it buffers
  // starts at the stream's own timestamps, may get there through its gap controller before
  // playback starts: a non-fatal bufferStalledError and bufferSeekOverHole at currentTime 0,
  // before the first "playing". That is the join (its time is time_to_first_play_s), not a
  // stall or a hole in the stream: kept in join_seeks, not counted. Any stall or hole once
  // playing, or anywhere but at 0, is an error.
  const firstPlayT = P.first_playing ? P.first_playing.t : Infinity;
  // (the position a seek left: hls.js may have moved currentTime already when the event
  // is seen, so its reason's "seeking from X to Y" tells)
  const seekFrom = e => {
    const m = /seeking from ([0-9.]+)/.exec(e.reason || '');
    return m ? Number(m[1]) : e.currentTime;
  };
  const isJoinSeek = e => !e.fatal && (e.details === 'bufferSeekOverHole' || e.details === 'bufferStalledError')
    && e.t <= firstPlayT && typeof seekFrom(e) === 'number' && seekFrom(e) < 0.5
    && (e.details === 'bufferSeekOverHole' || !e.buffer);
  const joinSeeks = (P.errors || []).filter(isJoinSeek);
  const errors = (P.errors || []).filter(e => !isJoinSeek(e));
  const fatal = errors.filter(e => e.fatal).length;
  const start = P.first_playing ? P.first_playing.currentTime : null;
  const last = samples.length ? samples[samples.length - 1] : null;
  const end = extra.final ? extra.final.currentTime : last && last.currentTime;
  const advanced = start == null || end == null ? 0 : Math.max(0, end - start);
  const playT = P.first_playing ? P.first_playing.t : Infinity;
  const lat = samples.filter(s => s.t >= playT && typeof s.latency === 'number' && s.latency > 0).map(s => s.latency);
  const tgt = samples.filter(s => typeof s.targetLatency === 'number' && s.targetLatency > 0).map(s => s.targetLatency);
  // Playing at the end: not paused, has data, and currentTime moved over the last ~2 s.
  const f = extra.final;
  const before = samples.filter(s => f && s.t <= f.t - 1.5).pop();
  const playing = !!(f && !f.paused && !f.ended && f.readyState >= 2 && before && f.currentTime > before.currentTime + 0.5);
  return {
    url: o.url,
    page_url: extra.pageUrl,
    seconds: o.seconds,
    viewport: `${o.width}x${o.height}`,
    browser: extra.browserVersion,
    hls_version: P.hls_version,
    // page times (every t) are seconds after this wall-clock time (s since the Unix epoch)
    time_origin_unix: P.time_origin_unix,
    cors: extra.cors,
    errors,
    join_seeks: joinSeeks,
    error_count: errors.length,
    fatal_errors: fatal,
    current_time_start: r3(start),
    current_time_end: r3(end),
    advanced_s: r3(advanced),
    time_to_first_play_s: P.first_playing ? r3(P.first_playing.t - (extra.navT || 0)) : null,
    latency_p50: r3(quantile(lat, 0.5)),
    latency_max: lat.length ? r3(Math.max(...lat)) : null,
    latency_min: lat.length ? r3(Math.min(...lat)) : null,
    target_latency_p50: r3(quantile(tgt, 0.5)),
    track_holes: [...holes.values()],
    // "waiting" before the first frame is start-up, not a stall.
    stall_count: (P.stalls || []).filter(s => s.t > playT).length,
    stalls: (P.stalls || []).filter(s => s.t > playT),
    startup_waiting: (P.stalls || []).filter(s => s.t <= playT).length,
    playing,
    final: f,
    video: last ? { width: last.width, height: last.height, frames: last.frames, dropped: last.dropped } : null,
    frags_buffered: P.frags_buffered,
    parts_loaded: P.parts_loaded,
    playlists_loaded: P.playlists_loaded,
    events: P.events || [],
    video_errors: P.video_errors || [],
    console_errors: extra.consoleErrors,
    failed_requests: extra.failedRequests,
    http_errors: extra.httpErrors,
    samples,
    requests: extra.requests,
  };
}

// ---------------------------------------------------------------- main
async function main() {
  const o = parseArgs(process.argv.slice(2));
  checkNetns();
  if (!fs.existsSync(CHROMIUM)) die(`${CHROMIUM} is missing (apt-get install -y chromium)`);
  const hlsPath = findModule('hls.js/dist/hls.min.js');
  const pwPath = path.dirname(findModule('playwright-core/package.json'));
  const { chromium } = createRequire(import.meta.url)(pwPath);

  const server = await startPageServer(o.pagePort, hlsPath);
  const pageOrigin = `http://127.0.0.1:${server.address().port}`;
  const pageUrl = `${pageOrigin}/player.html?src=${encodeURIComponent(o.url)}`;
  const cors = await probeCors(o.url, pageOrigin);

  let browser, context;
  const cleanup = async () => {
    try { if (context) await context.close(); } catch {}
    try { if (browser) await browser.close(); } catch {}
    server.close();
  };
  const watchdog = setTimeout(async () => {
    process.stderr.write('play: timed out\n');
    await cleanup();
    process.exit(1);
  }, (o.seconds + 90) * 1000);

  const consoleErrors = [], failedRequests = [], httpErrors = [];
  // the stream's last requests (a bounded log, for the artifact): when each went out, when
  // its answer came, its status; it shows which part a player asked for and when
  const requests = [];
  const REQUESTS_KEPT = 4000;
  let t0 = Date.now(); // set again at navigation: times as the page's own (about)
  const sinceStart = () => Math.round(Date.now() - t0) / 1000;
  const short = u => u.replace(/^https?:\/\/[^/]+/, '');
  let summary;
  try {
    // chromium.launch() always starts Chromium with a fresh temporary --user-data-dir
    // (Playwright creates and deletes it; it refuses a --user-data-dir in args).
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--disable-domain-reliability', '--no-pings',
        '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
      ],
      timeout: 30000,
    });
    context = await browser.newContext({ viewport: { width: o.width, height: o.height } });
    const page = await context.newPage();
    page.on('console', m => {
      if (m.type() === 'error' || m.type() === 'warning') consoleErrors.push({ type: m.type(), text: m.text().slice(0, 500) });
    });
    page.on('pageerror', e => consoleErrors.push({ type: 'pageerror', text: String(e).slice(0, 500) }));
    page.on('requestfailed', r => failedRequests.push({ url: r.url(), failure: r.failure() && r.failure().errorText }));
    page.on('response', r => { if (r.status() >= 400) httpErrors.push({ url: r.url(), status: r.status() }); });
    page.on('request', r => {
      if (!r.url().startsWith(o.url.replace(/[^/]*$/, ''))) return;
      requests.push({ t: sinceStart(), url: short(r.url()) });
      if (requests.length > REQUESTS_KEPT) requests.shift();
    });
    page.on('requestfinished', async r => {
      const e = requests.findLast(x => x.url === short(r.url()) && x.done === undefined);
      if (!e) return;
      e.done = sinceStart();
      try { e.status = (await r.response())?.status(); } catch {}
    });

    t0 = Date.now();
    await page.goto(pageUrl, { waitUntil: 'load', timeout: 15000 });
    const navT = 0; // page times are seconds since navigation start
    await page.waitForTimeout(o.seconds * 1000);
    const final = await page.evaluate(() => {
      const v = document.getElementById('video');
      return { t: performance.now() / 1000, currentTime: v.currentTime, paused: v.paused, ended: v.ended, readyState: v.readyState };
    });
    fs.mkdirSync(path.dirname(path.resolve(o.screenshot)), { recursive: true });
    await page.screenshot({ path: o.screenshot });
    const P = await page.evaluate(() => window.__play || { errors: [{ type: 'setup', details: 'player.html did not run', fatal: true }] });
    const browserVersion = browser ? browser.version() : null;
    summary = summarize(o, P, { pageUrl, cors, final, navT, consoleErrors, failedRequests, httpErrors, browserVersion, requests });
  } catch (e) {
    clearTimeout(watchdog);
    await cleanup();
    die(`browser run failed: ${e.message.split('\n')[0]}`, 1);
  }
  clearTimeout(watchdog);
  await cleanup();

  // Verdict.
  const reasons = [];
  if (summary.advanced_s < MIN_ADVANCE * o.seconds) reasons.push(`advanced ${summary.advanced_s.toFixed(1)} s < ${(MIN_ADVANCE * o.seconds).toFixed(1)} s`);
  if (summary.fatal_errors > 0) reasons.push(`${summary.fatal_errors} fatal error(s): ${[...new Set(summary.errors.filter(e => e.fatal).map(e => e.details))].join(', ')}`);
  else if (!o.allowNonfatal && summary.error_count > 0) reasons.push(`${summary.error_count} error(s): ${[...new Set(summary.errors.map(e => e.details))].join(', ')}`);
  // Why the stream could not be fetched, most basic first.
  const corsMsg = summary.console_errors.find(c => /CORS policy/i.test(c.text));
  const browserFail = summary.failed_requests.length ? summary.failed_requests[0].failure : null;
  if (!reasons.length && !corsMsg) {
    // played fine: the Node-side probe is only used to explain failures
  } else if (cors.fetch_error) {
    reasons.unshift(`stream unreachable (${cors.fetch_error}${browserFail ? `; browser: ${browserFail}` : ''})`);
  } else if (cors.status >= 400) {
    reasons.unshift(`stream playlist answered HTTP ${cors.status}`);
  } else if (!cors.ok) {
    reasons.unshift(`CORS: stream sent Access-Control-Allow-Origin: ${cors.allow_origin === null ? '(none)' : cors.allow_origin}` +
      ` for page origin ${pageOrigin}, so the browser blocks it`);
  } else if (corsMsg) {
    const m = /at '([^']+)'/.exec(corsMsg.text);
    reasons.unshift(`CORS: browser blocked ${m ? m[1] : 'a stream request'} (${corsMsg.text.replace(/^.*blocked by CORS policy: /, '')})`);
  }
  summary.pass = reasons.length === 0;
  summary.fail_reasons = reasons;
  if (o.json) fs.writeFileSync(o.json, JSON.stringify(summary, null, 2) + '\n');

  const lat = summary.latency_p50 == null ? 'n/a' : `${summary.latency_p50.toFixed(2)} s`;
  let line = `play: advanced ${summary.advanced_s.toFixed(1)} s of ${o.seconds}, ` +
    `${summary.error_count} errors (${summary.fatal_errors} fatal), latency p50 ${lat}`;
  if (reasons.length) line += `; FAIL: ${reasons.join('; ')}`;
  process.stdout.write(line + '\n');
  process.exit(summary.pass ? 0 : 1);
}

main().catch(e => die(`internal error: ${e.stack || e}`, 2));
