// A venue site over HTTPS at the gateway, in Debian's Chromium (playwright-core): loads
// --url, and from the page fetches --asset (same origin; the caller has had the gateway
// cache it, so its Cache-Status says where it came from). Chromium's trust store is the NSS database under --home
// (the event CA imported there, or not: then the load must fail with a certificate error).
// Prints one JSON line (also written to --json) and exits 0 when the outcome is the one
// --expect names (trusted | untrusted).
//
// node https_site.mjs --url https://secure.canopy.test:8443/static/menu.html \
//   --asset /static/menu.css --host secure.canopy.test --home DIR --expect trusted \
//   --screenshot shot.png --json out.json
import fs from 'node:fs';
import path from 'node:path';
import { launch } from './chromium.mjs';

function args() {
  const o = { width: 1280, height: 800 };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) {
    const k = a[i].replace(/^--/, '');
    o[k] = a[i + 1];
  }
  for (const k of ['url', 'asset', 'host', 'home', 'expect', 'json']) {
    if (!o[k]) throw new Error(`--${k} is needed`);
  }
  o.width = Number(o.width);
  o.height = Number(o.height);
  return o;
}

const o = args();
const out = { expect: o.expect, url: o.url };
let browser;
try {
  // Chromium on Linux reads its certificate trust from $HOME/.pki/nssdb; the site's name is
  // the gateway on loopback
  browser = await launch({ map: [o.host], env: { ...process.env, HOME: o.home } });
  out.browser = browser.version();
  const context = await browser.newContext({ viewport: { width: o.width, height: o.height } });
  const page = await context.newPage();
  try {
    const resp = await page.goto(o.url, { waitUntil: 'load', timeout: 15000 });
    out.status = resp.status();
    const sec = await resp.securityDetails();
    out.security = sec && { issuer: sec.issuer, subject: sec.subjectName, protocol: sec.protocol };
    out.cache_status = await resp.headerValue('cache-status');
    // the browser's own cache is empty (a fresh profile): this asks the gateway
    out.asset = await page.evaluate(async asset => {
      const f = await fetch(asset);
      return { status: f.status, cache_status: f.headers.get('cache-status'), bytes: (await f.text()).length };
    }, o.asset);
    out.text = (await page.textContent('body') || '').slice(0, 80);
  } catch (e) {
    out.error = String(e.message || e).split('\n')[0];
  }
  if (o.screenshot) {
    fs.mkdirSync(path.dirname(path.resolve(o.screenshot)), { recursive: true });
    await page.screenshot({ path: o.screenshot }).catch(() => {});
  }
} catch (e) {
  out.error = `browser: ${String(e.message || e).split('\n')[0]}`;
} finally {
  if (browser) await browser.close().catch(() => {});
}

const trusted = out.status === 200 && !out.error && out.asset && out.asset.status === 200;
const refused = !out.status && /ERR_CERT_AUTHORITY_INVALID/.test(out.error || '');
out.ok = o.expect === 'trusted' ? trusted : refused;
fs.writeFileSync(o.json, JSON.stringify(out, null, 2));
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
