// The JS SDK's protocol features of issue 14 in Node.js:
//  - against a real chorusd (HS256 tokens, a `token` namespace): the scenarios
//    of parity-scenarios.mjs (keys, binary, subscription tokens, in-band token
//    refresh), which tests/browser/test_sdk_parity.mjs runs in Chromium too,
//    and the SDK files served with CORS and their content types;
//  - against FakeBroker: the server's `subscribed` / `unsubscribed` ops and a
//    close with 4009, which the broker's server API (planned) will send;
//  - the CommonJS build (build-cjs.mjs) loaded with require() through the
//    package's "exports", and its types through TypeScript's node16 resolution.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { FakeBroker } from './fake-broker.mjs';
import { sdk, SRC, chorusdPath, startChorusd, waitFor, nextEvent } from './helpers.mjs';
import { scenarios, runScenario } from './parity-scenarios.mjs';

const { Chorus, CloseCodes } = sdk;
const here = path.dirname(fileURLToPath(import.meta.url));
const sdkDir = path.join(SRC, 'client-sdk', 'js');
const bin = chorusdPath();
const SECRET = 'parity-test-secret-0123456789abcdef';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-parity-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('SDK parity against chorusd', { skip: !bin && 'chorusd not built (set CHORUSD)' }, () => {
  let srv;
  before(async () => {
    const config = path.join(tmp, 'chorus.json');
    fs.writeFileSync(config, JSON.stringify({ namespaces: { secret: { subscribe: 'token' } } }));
    srv = await startChorusd({
      args: ['--config', config, '--jwt-secret', SECRET, '--jwt-leeway', '0', '--sdk-dir', sdkDir, '--log-level', 'warn'],
    });
  });
  after(async () => {
    if (srv) await srv.stop();
  });

  for (const name of Object.keys(scenarios)) {
    test(name, { timeout: 30000 }, () => runScenario(name, { Chorus, url: srv.url, secret: SECRET, opts: { WebSocket } }));
  }

  test('/sdk/ serves the SDK and its types to any origin with their content types', async () => {
    for (const [file, type] of [
      ['chorus.js', /^text\/javascript/],
      ['chorus.d.ts', /^application\/typescript/],
      ['package.json', /^application\/json/],
    ]) {
      const res = await fetch(`${srv.httpUrl}/sdk/${file}`, { headers: { Origin: 'https://app.example.com' } });
      assert.equal(res.status, 200, file);
      assert.match(res.headers.get('content-type') || '', type, file);
      assert.equal(res.headers.get('access-control-allow-origin'), '*', `${file}: CORS`);
      assert.equal(await res.text(), fs.readFileSync(path.join(sdkDir, file), 'utf8'), file);
    }
    const api = await fetch(`${srv.httpUrl}/healthz`, { headers: { Origin: 'https://app.example.com' } });
    assert.equal(api.headers.get('access-control-allow-origin'), null, 'only /sdk/ is open to other origins');
  });
});

describe('server-initiated events (FakeBroker)', () => {
  let broker;
  const clients = [];
  const client = (opts = {}) => {
    const c = new Chorus(broker.url, { WebSocket, minReconnectDelay: 20, maxReconnectDelay: 50, requestTimeout: 2000, ...opts });
    clients.push(c);
    return c;
  };
  const connOf = (c) => [...broker.conns].find((x) => x.id === c.clientId);
  before(async () => {
    broker = await new FakeBroker().start();
  });
  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });
  after(() => broker.stop());

  test('a server subscribe hands the application a Subscription that delivers and resumes', async () => {
    const c = client();
    await c.connect();
    broker.channel('room:srv'); // exists, seq 0
    broker.publish('room:srv', 'before'); // seq 1: not for this connection
    const ev = nextEvent(c, 'subscribed');
    const ch = broker.channels.get('room:srv');
    const conn = connOf(c);
    ch.subs.add(conn);
    conn.subs.add('room:srv');
    broker.sendRaw(conn, { op: 'subscribed', ch: 'room:srv', epoch: ch.epoch, seq: ch.seq });
    const got = [];
    const e = await ev;
    assert.equal(e.byServer, true);
    assert.equal(e.channel, 'room:srv');
    assert.equal(e.seq, 1);
    assert.equal(e.subscription, c.getSubscription('room:srv'));
    e.subscription.on('message', (d) => got.push(d));
    broker.publish('room:srv', 'after');
    await waitFor(() => got.length === 1, { what: 'the message after the server subscribe' });
    assert.deepEqual(got, ['after']);
    // A reconnect resumes it with since, like one the application made.
    broker.killAll();
    await nextEvent(c, 'connected');
    await waitFor(() => broker.framesOf('sub').some((f) => f.ch === 'room:srv' && f.since && f.since.seq === 2), { what: 'resubscribe with since' });
  });

  test('a server unsubscribe ends the subscription with its reason and it is not resumed', async () => {
    const c = client();
    await c.connect();
    const got = [];
    const sub = await c.subscribe('room:kick', (d) => got.push(d));
    const subEv = nextEvent(sub, 'unsubscribed');
    const clientEv = nextEvent(c, 'unsubscribed');
    const conn = connOf(c);
    broker.channels.get('room:kick').subs.delete(conn);
    conn.subs.delete('room:kick');
    broker.sendRaw(conn, { op: 'unsubscribed', ch: 'room:kick', reason: 'removed by a moderator' });
    assert.deepEqual(await subEv, { channel: 'room:kick', byServer: true, reason: 'removed by a moderator' });
    assert.deepEqual(await clientEv, { channel: 'room:kick', byServer: true, reason: 'removed by a moderator' });
    assert.equal(sub.state, 'unsubscribed');
    assert.equal(c.getSubscription('room:kick'), undefined);
    broker.sendRaw(conn, { op: 'msg', ch: 'room:kick', seq: 99, data: 'late' });
    const subsBefore = broker.framesOf('sub').filter((f) => f.ch === 'room:kick').length;
    broker.killAll();
    await nextEvent(c, 'connected');
    await c.ping(); // the resubscribes, if any, went out before this
    assert.equal(broker.framesOf('sub').filter((f) => f.ch === 'room:kick').length, subsBefore, 'not resubscribed');
    assert.deepEqual(got, []);
  });

  test('close 4009 (the backend disconnected the user) reports code and reason and does not reconnect', async () => {
    const c = client();
    await c.connect();
    const ev = nextEvent(c, 'disconnected');
    broker.closeAll(4009, 'banned for spam');
    assert.deepEqual(await ev, { code: CloseCodes.DISCONNECT, reason: 'banned for spam', willReconnect: false });
    assert.equal(c.state, 'closed');
    let reconnecting = false;
    c.on('reconnecting', () => (reconnecting = true));
    c.on('connecting', () => (reconnecting = true));
    await new Promise((r) => setTimeout(r, 200)); // several backoff periods (max 50 ms)
    assert.equal(reconnecting, false);
    await c.connect(); // the application may come back on its own
    assert.equal(c.state, 'connected');
  });

  test('other server closes report code and reason and reconnect with a token from getToken', async () => {
    let asked = 0;
    const c = client({ getToken: () => `tok${++asked}` });
    await c.connect();
    assert.equal(asked, 1);
    assert.match(connOf(c).url, /token=tok1/);
    const ev = nextEvent(c, 'disconnected');
    broker.closeAll(4001, 'token expired');
    assert.deepEqual(await ev, { code: 4001, reason: 'token expired', willReconnect: true });
    await nextEvent(c, 'connected');
    assert.equal(asked, 2);
    assert.match(connOf(c).url, /token=tok2/);
  });

  test('a refresh the broker refuses as forbidden (no keys) is reported and not retried', async () => {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const jwt = (s) => `${Buffer.from('{"alg":"HS256"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: s, exp })).toString('base64url')}.sig`;
    broker.intercept = (conn, f) => {
      if (f.op !== 'auth') return false;
      broker.sendRaw(conn, { op: 'err', id: f.id, code: 'forbidden', msg: 'this node has no keys' });
      return true;
    };
    try {
      const c = client({ getToken: () => jwt('u'), tokenRefreshMargin: 1900 });
      const err = nextEvent(c, 'error', 3000);
      await c.connect();
      assert.equal((await err).code, 'forbidden');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(broker.framesOf('auth').length, 1, 'one auth, not a loop');
    } finally {
      broker.intercept = null;
    }
  });

  test('a token shorter-lived than two margins is refreshed halfway, not in a loop', async () => {
    const jwt = (exp) => `e30.${Buffer.from(JSON.stringify({ sub: 'u', exp })).toString('base64url')}.sig`;
    broker.intercept = (conn, f) => {
      if (f.op !== 'auth') return false;
      broker.sendRaw(conn, { op: 'ack', id: f.id, user: 'u' });
      return true;
    };
    try {
      const authsBefore = broker.framesOf('auth').length;
      // exp 2 s ahead in whole seconds: 1-2 s left, under the default 5 s margin.
      const c = client({ getToken: () => jwt(Math.floor(Date.now() / 1000) + 2) });
      const token = nextEvent(c, 'token', 3000);
      await c.connect();
      const t0 = Date.now();
      const ev = await token;
      const after = Date.now() - t0;
      assert.equal(ev.user, 'u');
      assert.equal(typeof ev.exp, 'number');
      assert.ok(after >= 400 && after <= 1900, `refreshed ${after} ms after connecting (halfway through 1-2 s)`);
      c.close();
      assert.equal(broker.framesOf('auth').length - authsBefore, 1, 'one auth');
    } finally {
      broker.intercept = null;
    }
  });

  test('a subscription token callback that fails ends that subscription only', async () => {
    const c = client();
    await c.connect();
    const e = await c.subscribe('secret:a', () => {}, { token: async () => { throw new Error('no token for you'); } }).catch((x) => x);
    assert.equal(e.message, 'no token for you');
    assert.equal(c.getSubscription('secret:a'), undefined);
    const e2 = await c.subscribe('secret:b', { token: () => Promise.reject('plain') }).catch((x) => x);
    assert.equal(e2.code, 'token_error');
    const ok = await c.subscribe('secret:c', { token: () => 'tok-c' });
    assert.equal(ok.state, 'subscribed');
    assert.equal(broker.framesOf('sub').find((f) => f.ch === 'secret:c').token, 'tok-c');
    assert.equal(broker.framesOf('sub').filter((f) => f.ch === 'secret:a' || f.ch === 'secret:b').length, 0, 'no sub without its token');
  });

  test('a malformed binary frame is a protocol error, not a message', async () => {
    const c = client();
    await c.connect();
    await c.subscribe('room:bad');
    const err = nextEvent(c, 'error');
    connOf(c).ws.send(Buffer.from([0, 0, 0, 9, 0x7b]));
    assert.equal((await err).code, 'protocol_error');
  });
});

describe('the CommonJS build', () => {
  const pkg = path.join(tmp, 'app', 'node_modules', '@chorus', 'client');
  before(() => {
    fs.mkdirSync(pkg, { recursive: true });
    for (const f of ['package.json', 'chorus.js', 'chorus.d.ts', 'README.md']) fs.copyFileSync(path.join(sdkDir, f), path.join(pkg, f));
    const r = spawnSync(process.execPath, [path.join(sdkDir, 'build-cjs.mjs'), pkg], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const listed = JSON.parse(fs.readFileSync(path.join(sdkDir, 'package.json'), 'utf8')).files;
    for (const f of listed) assert.ok(fs.existsSync(path.join(pkg, f)), `package.json lists ${f}, which the build must make`);
  });

  test('require() gets the same API as import, through the package exports', async () => {
    const req = createRequire(path.join(tmp, 'app', 'index.cjs'));
    const cjs = req('@chorus/client');
    const esm = await import(path.join(pkg, 'chorus.js'));
    assert.match(req.resolve('@chorus/client'), /chorus\.cjs$/);
    assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
    assert.equal(cjs.default, cjs.Chorus);
    assert.equal(cjs.VERSION, esm.VERSION);
    assert.deepEqual(cjs.CloseCodes, esm.CloseCodes);
    // A separate process, as a CommonJS application runs it, talking to a broker.
    const broker = await new FakeBroker().start();
    try {
      const script = path.join(tmp, 'app', 'index.cjs');
      fs.writeFileSync(script, `
        const { Chorus } = require('@chorus/client');
        const { WebSocket } = require(${JSON.stringify(createRequire(path.join(here, '..', 'package.json')).resolve('ws'))});
        const c = new Chorus(process.argv[2], { WebSocket });
        c.connect().then(async () => {
          const got = [];
          await c.subscribe('cjs:x', (d) => got.push(d));
          await c.publish('cjs:x', { via: 'require' });
          const t0 = Date.now();
          while (got.length < 1 && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 10));
          console.log(JSON.stringify(got));
          c.close();
        });
      `);
      const r = await new Promise((resolve) => {
        const p = spawn(process.execPath, [script, broker.url], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (out += d));
        const t = setTimeout(() => p.kill('SIGKILL'), 10000);
        p.on('exit', (code) => {
          clearTimeout(t);
          resolve({ code, out });
        });
      });
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /\[\{"via":"require"\}\]/);
    } finally {
      await broker.stop();
    }
  });

  test('TypeScript resolves the require types (chorus.d.cts) under node16', () => {
    const app = path.join(tmp, 'app');
    fs.writeFileSync(path.join(app, 'use.cts'), `
      import chorus = require('@chorus/client');
      const c: chorus.Chorus = new chorus.Chorus('ws://x/ws');
      const code: 4009 = chorus.CloseCodes.DISCONNECT;
      void [c, code];
    `);
    const tsc = createRequire(path.join(here, '..', 'package.json')).resolve('typescript/bin/tsc');
    fs.writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, module: 'node16', moduleResolution: 'node16', target: 'es2022', lib: ['es2022'], types: [] },
      files: ['use.cts'],
    }));
    const r = spawnSync(process.execPath, [tsc, '-p', app, '--traceResolution'], { encoding: 'utf8', timeout: 60000 });
    assert.equal(r.status, 0, `tsc failed:\n${r.stdout.split('\n').filter((l) => /error/.test(l)).join('\n')}`);
    assert.match(r.stdout, /'@chorus\/client' was successfully resolved to '[^']*chorus\.d\.cts'/, 'require() types come from chorus.d.cts');
  });
});
