// Shared pieces of the browser tests (tests/browser/test_*.mjs): headless
// Debian Chromium driven by playwright-core against real chorusd processes,
// built on tests/lib/chorus_harness.mjs (servers, bounded waits, the
// test runner).
//
// Chromium (/usr/bin/chromium or $CHROMIUM) and playwright-core (from
// tests/node_modules) are required: CI installs both (deploy/setup.sh), so a
// missing one makes the test fail, never skip. Each launch gets a new,
// temporary user-data-dir (playwright creates it and deletes it on close), and
// every page is its own browser context (own localStorage).
//
// Screenshots go to $CHORUS_BUILD/tests/browser/artifacts/ and their paths are
// printed ("artifact: ..."), so a CI run can keep them.

import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, assert, sleep, t, tmpdir } from '../lib/chorus_harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SRC = process.env.CHORUS_SRC || path.resolve(here, '..', '..');
export const BUILD = process.env.CHORUS_BUILD ||
  (process.env.CHORUSD ? path.resolve(path.dirname(process.env.CHORUSD), '..') : path.join(SRC, 'build'));

function fatal(what) {
  console.log(`not ok - ${what}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}

const chromiumPath = [process.env.CHROMIUM, '/usr/bin/chromium'].find((p) => p && fs.existsSync(p));
let playwright;
try {
  playwright = createRequire(path.join(here, '..', 'package.json'))('playwright-core');
} catch (e) {
  fatal(`playwright-core loads from tests/node_modules (${e.code || e.message}); run npm ci in tests/`);
}
if (!chromiumPath) fatal('Chromium is installed at /usr/bin/chromium (or $CHROMIUM); deploy/setup.sh installs it');

/** The demo pages and the SDK of this source tree, whatever chorusd was built with. */
export const PAGE_ARGS = ['--static-dir', path.join(SRC, 'broker', 'www'), '--sdk-dir', path.join(SRC, 'client-sdk', 'js')];

export async function launchBrowser() {
  return playwright.chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
    timeout: t(30000),
  });
}

/**
 * A page in its own context that records what would show up as a bug:
 * uncaught exceptions and console errors (a CSP violation is one). Chromium's
 * own "WebSocket connection to ... failed" lines are expected while a node is
 * down and are not counted.
 */
export async function newPage(browser, errors, label, opts = {}) {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 }, ...opts });
  const page = await context.newPage();
  page.setDefaultTimeout(t(10000));
  page.on('pageerror', (e) => errors.push(`${label}: uncaught ${e}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/WebSocket connection to/.test(m.text())) errors.push(`${label}: console error: ${m.text()}`);
  });
  page.on('close', () => context.close().catch(() => {}));
  return page;
}

export const ARTIFACTS = path.join(BUILD, 'tests', 'browser', 'artifacts');

/**
 * Saves a full-page screenshot as an artifact and prints its path. CSS
 * animations are stopped (finished) unless `animations: 'allow'`.
 */
export async function screenshot(page, name, { animations = 'disabled' } = {}) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true, animations });
  assert(fs.statSync(file).size > 1000, `screenshot ${file} is empty`);
  console.log(`    artifact: ${file}`);
  return file;
}

/** Throws listing the page errors collected so far, if any. */
export function assertNoPageErrors(errors) {
  assert(errors.length === 0, () => `page errors:\n      ${errors.join('\n      ')}`);
}

/* ---------------------------------------------------------------- */
/* Clusters                                                         */
/* ---------------------------------------------------------------- */

function bindable(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * n loopback ports for cluster endpoints, bindable now. They come from below
 * the kernel's ephemeral range, so the nodes' own outgoing connections (libzmq
 * connecting to peers) never take a port a node has yet to bind.
 */
export async function clusterPorts(n) {
  let low = 32768;
  try {
    low = Math.min(low, Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0]) || low);
  } catch { /* default */ }
  const out = [];
  for (let tries = 0; out.length < n; tries++) {
    if (tries > 2000) throw new Error('no free loopback ports for the cluster');
    // p + 1 stays free too: a node's Raft port is its cluster port + 1.
    const p = 20000 + Math.floor(Math.random() * Math.max(1, low - 20002));
    if (!out.some((q) => Math.abs(q - p) <= 1) && await bindable(p) && await bindable(p + 1)) out.push(p);
  }
  return out;
}

/**
 * Nodes of a mesh on loopback: node i binds tcp://127.0.0.1:ports[i] and lists
 * every node (itself included) as a peer; links in plaintext.
 */
export async function meshNodes(ids, extraArgs = []) {
  const ports = await clusterPorts(ids.length);
  const dataRoot = tmpdir(); // Raft logs, one directory per node
  const peers = ports.flatMap((p) => ['--peer', `tcp://127.0.0.1:${p}`]);
  return ids.map((id, i) => new Server({
    nodeId: id,
    args: ['--cluster-bind', `tcp://127.0.0.1:${ports[i]}`, ...peers, '--cluster-insecure', 'true',
      '--data-dir', path.join(dataRoot, id), ...extraArgs],
  }));
}

/** Waits until every node's /metrics shows chorus_cluster_peer_up{peer=...} 1 for every other node. */
export async function waitPeersUp(nodes, timeoutMs = t(20000)) {
  const deadline = Date.now() + timeoutMs;
  let missing = [];
  for (;;) {
    missing = [];
    for (const n of nodes) {
      const m = await n.metrics();
      for (const o of nodes) {
        if (o !== n && m.get(`chorus_cluster_peer_up{peer="${o.nodeId}"}`) !== 1) missing.push(`${n.nodeId} sees ${o.nodeId}`);
      }
    }
    if (missing.length === 0) return;
    if (Date.now() > deadline) throw new Error(`peers not up within ${timeoutMs} ms: ${missing.join(', ')}`);
    await sleep(100);
  }
}

/* ---------------------------------------------------------------- */
/* Helper processes                                                 */
/* ---------------------------------------------------------------- */

const haveSetpriv = spawnSync('setpriv', ['--help'], { stdio: 'ignore' }).status === 0;
const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* gone */ }
  }
});

/**
 * Starts a helper program (dies with this process). Returns
 * {proc, output(), exited: Promise<code>, stop()}.
 */
export function startProcess(bin, args) {
  const [cmd, ...rest] = haveSetpriv ? ['setpriv', '--pdeathsig', 'KILL', '--', bin, ...args] : [bin, ...args];
  const proc = spawn(cmd, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { out += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => {
    children.delete(proc);
    resolve(code ?? `signal ${sig}`);
  }));
  return {
    proc,
    exited,
    output: () => out,
    /** SIGTERM, SIGKILL after graceMs; resolves to the exit code. */
    async stop(graceMs = t(5000)) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(graceMs).then(() => null)]);
      if (code === null) {
        proc.kill('SIGKILL');
        return exited;
      }
      return code;
    },
  };
}

/** Resolves to the process' exit code, or throws after timeoutMs. */
export async function waitExit(p, timeoutMs, what) {
  const code = await Promise.race([p.exited, sleep(timeoutMs).then(() => undefined)]);
  if (code === undefined) throw new Error(`${what} did not exit within ${timeoutMs} ms:\n${p.output().slice(-2000)}`);
  return code;
}
