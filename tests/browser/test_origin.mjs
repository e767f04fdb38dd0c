// The Origin allow-list in a real browser (PROTOCOL.md section 1): headless
// Debian Chromium, driven by playwright-core, opens a page from a second
// origin (a Python http.server on another port) whose script tries
// `new WebSocket` to a chorusd started with --allowed-origin set to the
// broker's own origin. The cross-site page must fail to connect (403 at the
// upgrade, counted as reason="origin") while the same page served by the
// broker itself connects and gets hello. The browser, not the test, sets the
// Origin header, so this is the cross-site WebSocket hijacking case for real.
//
// Needs /usr/bin/chromium (or $CHROMIUM) and tests/node_modules/playwright-core
// (deploy/setup.sh installs both); without them the test fails, it never skips.

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, assert, freePort, httpGet, run, sleep, t, test, tmpdir } from '../lib/chorus_harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const chromiumPath = [process.env.CHROMIUM, '/usr/bin/chromium'].find((p) => p && fs.existsSync(p));
let playwright;
try {
  playwright = createRequire(path.join(here, '..', 'package.json'))('playwright-core');
} catch (e) {
  console.log(`not ok - playwright-core loads from tests/node_modules (${e.code || e.message}); run npm ci in tests/`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
if (!chromiumPath) {
  console.log('not ok - Chromium is installed at /usr/bin/chromium (or $CHROMIUM); deploy/setup.sh installs it');
  console.log('0 passed, 1 failed');
  process.exit(1);
}

// The page: probe.js opens a WebSocket to ?broker= and reports in window.result.
// It is a file, not an inline script, because chorusd's CSP allows only 'self' scripts.
const site = tmpdir();
fs.writeFileSync(path.join(site, 'index.html'),
  '<!doctype html><meta charset="utf-8"><title>origin probe</title><script src="probe.js"></script>\n');
fs.writeFileSync(path.join(site, 'probe.js'), `
const broker = new URLSearchParams(location.search).get('broker');
const ws = new WebSocket(broker);
ws.onmessage = (e) => { window.result = 'message:' + JSON.parse(e.data).op; ws.close(); };
ws.onerror = () => { window.result = window.result || 'error'; };
ws.onclose = (e) => { window.result = window.result || 'closed:' + e.code; };
`);

// chorusd allows exactly its own origin; the port is only known at start().
class OriginServer extends Server {
  set args(v) { this._args = v; }
  get args() {
    return [...this._args, '--allowed-origin', `http://127.0.0.1:${this.port}`, '--static-dir', site];
  }
}
const srv = new OriginServer({ nodeId: 'node-origin-browser' });

// The second origin: a static file server on another port.
let other = null;
let otherPort = 0;
async function startOtherOrigin() {
  otherPort = await freePort();
  other = spawn('/usr/bin/python3', ['-m', 'http.server', String(otherPort), '--bind', '127.0.0.1', '--directory', site],
    { stdio: 'ignore' });
  process.on('exit', () => other.kill('SIGKILL'));
  const deadline = Date.now() + t(10000);
  while (Date.now() < deadline) {
    try {
      if ((await httpGet(otherPort, '/probe.js', 500)).status === 200) return;
    } catch { /* not up yet */ }
    await sleep(50);
  }
  throw new Error('python http.server did not start');
}

async function probe(browser, pageOrigin) {
  const page = await browser.newPage();
  try {
    const broker = `ws://127.0.0.1:${srv.port}/ws`;
    await page.goto(`${pageOrigin}/index.html?broker=${encodeURIComponent(broker)}`);
    await page.waitForFunction(() => window.result, null, { timeout: t(10000) });
    return { result: await page.evaluate(() => window.result), origin: await page.evaluate(() => location.origin) };
  } finally {
    await page.close();
  }
}

async function rejectedByOrigin() {
  const r = await httpGet(srv.port, '/metrics');
  const m = r.body.match(/^chorus_connections_rejected_total\{reason="origin"\} (\d+)/m);
  return m ? Number(m[1]) : NaN;
}

let browser;

test('A page from another origin cannot open a WebSocket to a node that allows only its own origin', async () => {
  await startOtherOrigin();
  browser = await playwright.chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
    timeout: t(30000),
  });
  const before = await rejectedByOrigin();
  const cross = await probe(browser, `http://127.0.0.1:${otherPort}`);
  assert(cross.origin === `http://127.0.0.1:${otherPort}`, `page origin ${cross.origin}`);
  assert(cross.result === 'error' || cross.result.startsWith('closed:'),
    `the cross-site page got ${cross.result}`);
  assert(!cross.result.startsWith('message'), 'the cross-site page received a frame');
  assert(await rejectedByOrigin() === before + 1, 'the refusal was not counted as reason="origin"');
});

test('The same page served by the node itself connects and gets hello', async () => {
  const same = await probe(browser, `http://127.0.0.1:${srv.port}`);
  assert(same.result === 'message:hello', `the same-origin page got ${same.result}`);
  await browser.close();
  other.kill('SIGTERM');
  fs.rmSync(site, { recursive: true, force: true });
});

await run([srv]);
