// Shared harness for the Chorus tests written for Node (integration, browser),
// imported as '../lib/chorus_harness.mjs': starts real
// chorusd processes on free loopback ports, waits for /healthz, and wraps
// Node's `ws` (a client this project did not write) with an inbox so a test can
// wait for the frame it wants. Every server is killed when the test ends, every
// wait is bounded, and run() prints "N passed, N failed" and sets the exit code.
//
// `ws` is resolved from tests/node_modules (npm ci in tests/, which
// deploy/setup.sh runs). Without it the test fails with a message; it never skips.

import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const testsDir = path.dirname(here);
const repo = path.dirname(testsDir);

let WebSocketImpl;
try {
  WebSocketImpl = createRequire(path.join(testsDir, 'package.json'))('ws');
} catch (e) {
  console.error(`chorus_harness.mjs: cannot load 'ws' from ${path.join(testsDir, 'node_modules')}` +
    ` (${e.code || e.message}). Run 'npm ci' in tests/ (deploy/setup.sh does).`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
export const WebSocket = WebSocketImpl;

export const SCALE = Number(process.env.CHORUS_TEST_TIMEOUT_SCALE || '1');
export const t = (ms) => ms * SCALE;

export function chorusdPath() {
  const p = process.env.CHORUSD ||
    path.join(process.env.CHORUS_BUILD || path.join(repo, 'build'), 'broker', 'chorusd');
  try {
    fs.accessSync(p, fs.constants.X_OK);
  } catch {
    console.error(`chorus_harness.mjs: chorusd not found at ${p}; build it or set CHORUSD`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  return p;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A new connection per request (agent: false): Node 20's global agent keeps
// sockets alive, and reusing one the node is closing for idleness fails with
// "socket hang up" (seen after room_burst's long burst on a loaded machine).
export function httpGet(port, p, timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, timeout: timeoutMs, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

// setpriv --pdeathsig KILL makes chorusd die with us even if the test runner
// kills this process with SIGKILL; without setpriv the exit hook still kills it.
const haveSetpriv = spawnSync('setpriv', ['--help'], { stdio: 'ignore' }).status === 0;
const servers = new Set();
process.on('exit', () => { for (const s of servers) s.kill(); });
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { for (const s of servers) s.kill(); process.exit(1); });
}

const SANITIZER = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:',
  'SUMMARY: UndefinedBehaviorSanitizer'];

export class Server {
  constructor({ args = [], nodeId = 'node-js', env = {} } = {}) {
    this.args = args.map(String);
    this.nodeId = nodeId;
    this.extraEnv = env;
    /** Set to restart on the same port (clients that reconnect by URL, e.g. EventSource). */
    this.fixedPort = null;
    this.proc = null;
    this.port = null;
    this.log = '';
    this.exitCode = null;
  }

  get url() { return `ws://127.0.0.1:${this.port}/ws`; }

  async start(timeoutMs = t(20000)) {
    let last = '';
    for (let attempt = 0; attempt < 5; attempt++) {
      this.port = this.fixedPort || await freePort();
      this.log = '';
      this.exitCode = null;
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHORUS_')));
      // Freed memory filled, as chorus_harness.py's clean_env does (why: there).
      env.MALLOC_PERTURB_ ??= '165';
      env.GLIBC_TUNABLES ??= 'glibc.malloc.tcache_count=0';
      Object.assign(env, this.extraEnv);
      const argv = [chorusdPath(), '--port', String(this.port), '--bind', '127.0.0.1',
        '--node-id', this.nodeId, '--log-level', 'info', ...this.args];
      const [cmd, ...rest] = haveSetpriv ? ['setpriv', '--pdeathsig', 'KILL', '--', ...argv] : argv;
      const proc = spawn(cmd, rest, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      this.proc = proc;
      servers.add(this);
      const exited = new Promise((resolve) => proc.on('exit', (code, signal) => {
        this.exitCode = code ?? `signal ${signal}`;
        resolve(this.exitCode);
      }));
      this.exited = exited;
      proc.stdout.on('data', (d) => { this.log += d; });
      proc.stderr.on('data', (d) => { this.log += d; });
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline && this.exitCode === null) {
        try {
          const r = await httpGet(this.port, '/healthz', 1000);
          if (r.status === 200) return this;
          last = `status ${r.status}`;
        } catch (e) {
          last = e.message;
        }
        await sleep(50);
      }
      this.kill();
      if (/in use/i.test(this.log)) continue;
      throw new Error(`chorusd did not become healthy (${last}, exit ${this.exitCode}):\n${this.logTail()}`);
    }
    throw new Error(`chorusd could not start after 5 ports: ${last}`);
  }

  alive() { return this.proc !== null && this.exitCode === null; }

  kill() {
    if (this.alive()) this.proc.kill('SIGKILL');
  }

  // SIGTERM and wait; resolves to the exit code (null if it had to be killed).
  async terminate(timeoutMs = t(15000)) {
    if (!this.proc) return null;
    if (this.alive()) this.proc.kill('SIGTERM');
    const code = await Promise.race([this.exited, sleep(timeoutMs).then(() => null)]);
    if (code === null) this.kill();
    servers.delete(this);
    return code;
  }

  logTail(n = 30) { return this.log.split('\n').slice(-n).join('\n'); }

  sanitizerReport() {
    for (const m of SANITIZER) {
      const i = this.log.indexOf(m);
      if (i >= 0) return this.log.slice(Math.max(0, i - 200), i + 3000);
    }
    return null;
  }

  async metrics() {
    const r = await httpGet(this.port, '/metrics');
    if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`);
    const out = new Map();
    for (const line of r.body.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?)\s+(\S+)/.exec(line);
      if (!m) throw new Error(`bad metrics line ${JSON.stringify(line)}`);
      out.set(m[1], Number(m[2]));
    }
    return out;
  }
}

// A `ws` client with an inbox of parsed frames.
export class Client {
  static nextId = 1;

  constructor(ws) {
    this.ws = ws;
    this.inbox = [];
    this.waiters = [];
    this.closed = null;
    ws.on('message', (data, isBinary) => {
      let f;
      if (isBinary) f = { op: '__binary__' };
      else {
        try { f = JSON.parse(data.toString('utf8')); } catch { f = { op: '__not_json__', text: String(data) }; }
      }
      this.inbox.push(f);
      this.wake();
    });
    ws.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() }; this.wake(); });
    ws.on('error', () => {});
  }

  wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  static async connect(server, opts = {}) {
    const ws = new WebSocket(server.url, opts.protocols || [], { handshakeTimeout: t(10000), ...opts.ws });
    const c = new Client(ws);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('connect timed out')), t(10000));
      ws.once('open', () => { clearTimeout(timer); resolve(); });
      ws.once('error', (e) => { clearTimeout(timer); reject(e); });
      ws.once('unexpected-response', (_req, res) => {
        clearTimeout(timer);
        reject(new Error(`upgrade answered ${res.statusCode}`));
      });
    });
    c.hello = await c.expect((f) => true, t(10000), 'hello');
    if (c.hello.op !== 'hello') throw new Error(`first frame is not hello: ${JSON.stringify(c.hello)}`);
    return c;
  }

  get clientId() { return this.hello.client; }

  send(obj) { this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)); }

  // The first inbox frame matching pred (removed), waiting up to timeoutMs.
  async expect(pred, timeoutMs = t(10000), what = 'a matching frame') {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex(pred);
      if (i >= 0) return this.inbox.splice(i, 1)[0];
      if (this.closed) throw new Error(`connection closed (${this.closed.code} ${this.closed.reason}) waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`timed out waiting for ${what}; inbox tail ${JSON.stringify(this.inbox.slice(-3)).slice(0, 400)}`);
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  async request(obj, timeoutMs) {
    const id = obj.id ?? ++Client.nextId;
    this.send({ ...obj, id });
    return this.expect((f) => f.id === id && ['ack', 'err', 'pong', 'history', 'presence'].includes(f.op),
      timeoutMs, `the reply to ${JSON.stringify(obj).slice(0, 100)}`);
  }

  async ok(obj, op = 'ack') {
    const r = await this.request(obj);
    if (r.op !== op) throw new Error(`expected ${op} for ${JSON.stringify(obj)}, got ${JSON.stringify(r)}`);
    return r;
  }

  // Resolves when `count` msg frames of ch have arrived (removed from the inbox, in order).
  async msgs(ch, count, timeoutMs = t(30000)) {
    const out = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < count) {
      out.push(await this.expect((f) => f.op === 'msg' && f.ch === ch, Math.max(1, deadline - Date.now()),
        `msg ${out.length + 1}/${count} on ${ch}`));
    }
    return out;
  }

  close() {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.ws.terminate(); resolve(); }, t(5000));
      this.ws.once('close', () => { clearTimeout(timer); resolve(); });
      this.ws.close(1000);
    });
  }
}

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${typeof msg === 'function' ? msg() : msg}`);
}

const tests = [];
export function test(name, fn, timeoutMs = 60000) { tests.push({ name, fn, timeoutMs }); }

// Runs every test in order with its time limit, then stops `servers` with
// SIGTERM and checks each exits 0 without a sanitizer report.
export async function run(serverList = []) {
  let passed = 0;
  let failed = 0;
  try {
    // Together: cluster nodes become healthy only once a majority is up.
    await Promise.all(serverList.map((s) => s.start()));
  } catch (e) {
    console.log(`not ok - the servers start and become healthy\n${e.message}`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  for (const { name, fn, timeoutMs } of tests) {
    const began = Date.now();
    let timer;
    try {
      await Promise.race([fn(), new Promise((_r, reject) => {
        timer = setTimeout(() => reject(new Error(`test exceeded its ${t(timeoutMs)} ms limit`)), t(timeoutMs));
      })]);
      for (const s of serverList) {
        if (!s.alive()) throw new Error(`chorusd died (exit ${s.exitCode}):\n${s.logTail()}`);
      }
      passed++;
      console.log(`ok - ${name} (${((Date.now() - began) / 1000).toFixed(2)}s)`);
    } catch (e) {
      failed++;
      console.log(`not ok - ${name}\n    ${String(e.stack || e).replace(/\n/g, '\n    ')}`);
      for (const s of serverList) console.log(`    --- last lines of chorusd log ---\n    ${s.logTail(15).replace(/\n/g, '\n    ')}`);
    } finally {
      clearTimeout(timer);
    }
  }
  for (const s of serverList) {
    const code = await s.terminate();
    const report = s.sanitizerReport();
    const name = `${s.nodeId} exits 0 on SIGTERM and its log has no sanitizer report`;
    if (code === 0 && !report) {
      passed++;
      console.log(`ok - ${name}`);
    } else {
      failed++;
      console.log(`not ok - ${name}\n    exit ${code}\n    ${(report || s.logTail(20)).replace(/\n/g, '\n    ')}`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

export const tmpdir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-js-'));
