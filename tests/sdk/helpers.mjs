// Shared helpers for the SDK tests: start and stop a real chorusd, pick free
// loopback ports, a TCP proxy that can cut or black-hole connections, and
// bounded waits (no test waits without a deadline, and none sleeps to "let
// things settle").

import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Root of the source tree: $CHORUS_SRC, or two levels up from this file. */
export const SRC = process.env.CHORUS_SRC || path.resolve(here, '..', '..');

/** The SDK under test, imported from the source tree. */
export const sdk = await import(path.join(SRC, 'client-sdk', 'js', 'chorus.js'));

/** Path of the broker binary: $CHORUSD, or the default build location. */
export function chorusdPath() {
  const p = process.env.CHORUSD || path.join(SRC, 'build', 'broker', 'chorusd');
  return fs.existsSync(p) ? p : null;
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Resolves after ms (only used as the polling interval of waitFor). */
export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `cond` until it returns a truthy value (which is returned) or throws
 * after `timeoutMs` with `what` in the message.
 */
export async function waitFor(cond, { timeoutMs = 5000, intervalMs = 10, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(intervalMs);
  }
}

/** Resolves with the args of the next `event` on `emitter`, or rejects after timeoutMs. */
export function nextEvent(emitter, event, timeoutMs = 5000, filter = () => true) {
  return new Promise((resolve, reject) => {
    const fn = (...args) => {
      if (!filter(...args)) return;
      clearTimeout(t);
      emitter.off(event, fn);
      resolve(args.length <= 1 ? args[0] : args);
    };
    const t = setTimeout(() => {
      emitter.off(event, fn);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for '${event}'`));
    }, timeoutMs);
    emitter.on(event, fn);
  });
}

/** Rejects if `p` does not settle within ms. */
export function within(p, ms, what = 'operation') {
  let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
    }),
  ]);
}

/** Settles `p` and returns the rejection reason (throws if it resolved). */
export async function rejectionOf(p, ms = 5000) {
  let v;
  try {
    v = await within(p, ms);
  } catch (e) {
    return e;
  }
  throw new Error(`expected a rejection, got ${JSON.stringify(v)}`);
}

const running = new Set();
process.on('exit', () => {
  for (const p of running) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/**
 * Starts chorusd on 127.0.0.1:port and waits until GET /healthz answers 200.
 * Returns {port, url, httpUrl, proc, stop(), output()}.
 */
export async function startChorusd({ port, args = [], timeoutMs = 10000 } = {}) {
  const bin = chorusdPath();
  if (!bin) throw new Error('chorusd not found: set CHORUSD');
  port = port || (await freePort());
  const argv = ['--port', String(port), '--bind', '127.0.0.1', ...args];
  const proc = spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
  running.add(proc);
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  let exited = null;
  const exitP = new Promise((resolve) =>
    proc.on('exit', (code, sig) => {
      exited = { code, sig };
      running.delete(proc);
      resolve(exited);
    })
  );
  const httpUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited) throw new Error(`chorusd exited early (${JSON.stringify(exited)}): ${argv.join(' ')}\n${out}`);
    try {
      const res = await fetch(httpUrl + '/healthz', { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`chorusd not healthy within ${timeoutMs} ms: ${argv.join(' ')}\n${out}`);
    }
    await delay(25);
  }
  return {
    port,
    proc,
    httpUrl,
    url: `ws://127.0.0.1:${port}/ws`,
    output: () => out,
    /** SIGTERM, then SIGKILL after graceMs; resolves once the process is gone. */
    async stop(graceMs = 5000) {
      if (exited) return exited;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      const r = await exitP;
      clearTimeout(t);
      return r;
    },
  };
}

/**
 * A TCP proxy on 127.0.0.1 in front of targetPort. `cut()` destroys every
 * proxied connection (both sides see a reset, as when a network path dies);
 * `blackhole = true` silently drops bytes in both directions while keeping the
 * sockets open (a half-dead connection only an application ping can detect).
 */
export async function startProxy(targetPort) {
  const pairs = new Set();
  const state = { blackhole: false, refuse: false };
  const server = net.createServer((client) => {
    if (state.refuse) return client.destroy();
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (d) => state.blackhole || upstream.write(d));
    upstream.on('data', (d) => state.blackhole || client.write(d));
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    get connections() {
      return pairs.size;
    },
    set blackhole(v) {
      state.blackhole = v;
    },
    set refuse(v) {
      state.refuse = v;
    },
    cut() {
      for (const p of [...pairs]) {
        p.client.resetAndDestroy ? p.client.resetAndDestroy() : p.client.destroy();
        p.upstream.destroy();
      }
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Collects the messages a subscription handler receives.
 * Returns [handler, list]; list holds the whole msg frames.
 */
export function collector() {
  const list = [];
  return [(data, msg) => list.push(msg), list];
}
