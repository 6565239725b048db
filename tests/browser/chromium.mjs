// Debian's Chromium as every browser test starts it: headless, no sandbox (root, inside a
// loopback-only network namespace), none of its own network chatter, and no name resolved
// (no DNS query at all) but the hosts in `map`, which go to 127.0.0.1; servers are
// otherwise reached at IP literals. Playwright gives each launch a fresh profile.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export function launch({ map = [], args = [], env } = {}) {
  const rules = [...map.map((h) => `MAP ${h} 127.0.0.1`), 'MAP * ~NOTFOUND', 'EXCLUDE 127.0.0.1'];
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    env,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-domain-reliability', '--no-pings',
      `--host-resolver-rules=${rules.join(', ')}`,
      ...args,
    ],
    timeout: 30000,
  });
}
