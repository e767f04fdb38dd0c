// The JavaScript SDK (client-sdk/js/chorus.js) against a real chorusd on
// loopback: requests and acks, two clients talking, error codes, history,
// presence, resuming with `since` after a cut connection, dead-peer detection,
// reconnecting to a restarted broker, the offline queue, and the static files
// the demo depends on. Needs $CHORUSD (set by ctest); skipped without a binary.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { WebSocket } from 'ws';
import {
  sdk,
  SRC,
  chorusdPath,
  startChorusd,
  startProxy,
  freePort,
  waitFor,
  nextEvent,
  rejectionOf,
  within,
  collector,
} from './helpers.mjs';

const { Chorus, ChorusError } = sdk;
const bin = chorusdPath();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-sdk-'));
const configFile = path.join(tmp, 'chorus.json');
fs.writeFileSync(
  configFile,
  JSON.stringify({
    namespaces: {
      pres: { presence: true },
      crowd: { presence: true, presence_max_members: 1 },
      ro: { client_publish: false },
    },
  })
);
const brokerArgs = [
  '--config', configFile,
  '--static-dir', path.join(SRC, 'broker', 'www'),
  '--sdk-dir', path.join(SRC, 'client-sdk', 'js'),
  '--log-level', 'warn',
];

let srv; // shared broker for the tests that do not restart it
const clients = [];
const cleanups = [];
let chan = 0;
/** A channel name no other test uses. */
const uniq = (ns = 'sdk') => `${ns}:t${process.pid}-${++chan}`;

function client(url = srv.url, opts = {}) {
  const c = new Chorus(url, {
    WebSocket,
    minReconnectDelay: 20,
    maxReconnectDelay: 200,
    requestTimeout: 3000,
    connectTimeout: 3000,
    ...opts,
  });
  clients.push(c);
  return c;
}

describe('JS SDK against chorusd', { skip: !bin && 'chorusd not built (set CHORUSD)' }, () => {
  before(async () => {
    srv = await startChorusd({ args: brokerArgs });
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const f of cleanups.splice(0).reverse()) await f();
  });
  after(async () => {
    if (srv) {
      const r = await srv.stop();
      if (r.sig === 'SIGKILL') console.error('chorusd ignored SIGTERM:\n' + srv.output());
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('the client receives hello and ping gets a pong', async () => {
    const c = client();
    const connected = nextEvent(c, 'connected');
    c.connect();
    const hello = await connected;
    assert.equal(hello.v, 1);
    assert.equal(typeof hello.client, 'string');
    assert.ok(hello.client.length > 0);
    assert.equal(typeof hello.node, 'string');
    assert.equal(c.state, 'connected');
    const rtt = await c.ping();
    assert.equal(typeof rtt, 'number');
  });

  test('subscribe resolves after the ack and publish resolves with consecutive seqs', async () => {
    const c = client();
    c.connect();
    const ch = uniq();
    const [h, got] = collector();
    const sub = await c.subscribe(ch, h);
    assert.equal(sub.state, 'subscribed');
    assert.equal(typeof sub.epoch, 'string');
    assert.equal(sub.seq, 0, 'a new channel starts at seq 0');
    const s1 = await c.publish(ch, { text: 'one' });
    const s2 = await c.publish(ch, { text: 'two' });
    const s3 = await c.publish(ch, { text: 'three' });
    assert.deepEqual([s1, s2, s3], [1, 2, 3]);
    await waitFor(() => got.length === 3, { what: 'own messages' });
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3]);
    assert.deepEqual(got.map((m) => m.data.text), ['one', 'two', 'three']);
    for (const m of got) {
      assert.equal(m.ch, ch);
      assert.equal(typeof m.ts, 'number');
      assert.equal(m.client, c.clientId, 'msg.client is the publishing connection');
    }
    assert.deepEqual(sub.position, { epoch: sub.epoch, seq: 3 });
  });

  test('two clients exchange messages of every JSON type unchanged', async () => {
    const a = client();
    const b = client();
    a.connect();
    b.connect();
    const ch = uniq('chat');
    const [ha, gotA] = collector();
    const [hb, gotB] = collector();
    await a.subscribe(ch, ha);
    await b.subscribe(ch, hb);
    const values = [{ text: 'hi', from: 'ann', n: [1, 2, { deep: true }] }, [1, 'two', null], 'text ünïcødé ✓', 42, -1.5, true, false, null];
    for (const v of values) await a.publish(ch, v);
    await b.publish(ch, { text: 'hello back', from: 'bob' });
    await waitFor(() => gotA.length === values.length + 1 && gotB.length === values.length + 1, { what: 'both clients to get every message' });
    assert.deepEqual(gotB.map((m) => m.data), [...values, { text: 'hello back', from: 'bob' }]);
    assert.deepEqual(gotA.map((m) => m.seq), gotB.map((m) => m.seq), 'same seqs on both sides');
    assert.equal(gotB.at(-1).client, b.clientId);
    assert.equal(gotB[0].client, a.clientId);
  });

  test('errors from the broker reject with a ChorusError carrying the code', async () => {
    const c = client();
    c.connect();
    const e1 = await rejectionOf(c.publish('bad channel!', 1));
    assert.ok(e1 instanceof ChorusError);
    assert.equal(e1.code, 'bad_channel');
    assert.equal(e1.reply?.op, 'err');
    const e2 = await rejectionOf(c.subscribe('has space', () => {}));
    assert.equal(e2.code, 'bad_channel');
    assert.equal(c.getSubscription('has space'), undefined);
    const e3 = await rejectionOf(c.publish('x'.repeat(256), 1));
    assert.equal(e3.code, 'bad_channel', '256-byte channel name');
    const e4 = await rejectionOf(c.publish(uniq('ro'), 1));
    assert.equal(e4.code, 'forbidden', 'client publish disabled in namespace ro');
    const e5 = await rejectionOf(c.presence(uniq()));
    assert.equal(e5.code, 'forbidden', 'presence off by default');
    // an error never closes the connection
    const first = c.clientId;
    assert.equal(await c.publish(uniq(), 'still fine'), 1);
    assert.equal(c.clientId, first);
  });

  test('unsubscribe stops delivery and a channel can be subscribed again', async () => {
    const c = client();
    const p = client();
    c.connect();
    p.connect();
    const ch = uniq();
    const [h, got] = collector();
    const sub = await c.subscribe(ch, h);
    await p.publish(ch, 1);
    await waitFor(() => got.length === 1);
    await within(sub.unsubscribe(), 3000, 'unsubscribe');
    await p.publish(ch, 2);
    await c.ping(); // a message sent before the pong would have arrived by now
    assert.equal(got.length, 1);
    const [h2, got2] = collector();
    const sub2 = await c.subscribe(ch, h2);
    assert.equal(sub2.seq, 2);
    await p.publish(ch, 3);
    await waitFor(() => got2.length === 1);
    assert.equal(got2[0].seq, 3);
  });

  test('history returns the newest messages oldest first, and since filters', async () => {
    const c = client();
    c.connect();
    const ch = uniq();
    for (let i = 1; i <= 5; i++) await c.publish(ch, { i });
    const all = await c.history(ch);
    assert.equal(all.ch, ch);
    assert.equal(all.seq, 5);
    assert.deepEqual(all.msgs.map((m) => m.seq), [1, 2, 3, 4, 5]);
    assert.deepEqual(all.msgs.map((m) => m.data.i), [1, 2, 3, 4, 5]);
    const last2 = await c.history(ch, { limit: 2 });
    assert.deepEqual(last2.msgs.map((m) => m.seq), [4, 5]);
    const since = await c.history(ch, { since: { epoch: all.epoch, seq: 3 } });
    assert.deepEqual(since.msgs.map((m) => m.seq), [4, 5]);
    const otherEpoch = await c.history(ch, { since: { epoch: 'no-such-epoch', seq: 0 } });
    assert.deepEqual(otherEpoch.msgs, []);
  });

  test('presence resolves with the count and the members of a presence namespace', async () => {
    const a = client();
    const b = client();
    a.connect();
    b.connect();
    const ch = uniq('pres');
    await a.subscribe(ch);
    await b.subscribe(ch);
    const { count, members } = await a.presence(ch);
    assert.equal(count, 2);
    const ids = members.map((m) => m.client).sort();
    assert.deepEqual(ids, [a.clientId, b.clientId].sort());
    const viaSub = await b.getSubscription(ch).presence();
    assert.equal(viaSub.count, 2);
  });

  test('past presence_max_members presence gives the count and no members', async () => {
    const a = client();
    const b = client();
    a.connect();
    b.connect();
    const ch = uniq('crowd'); // presence_max_members: 1
    await a.subscribe(ch);
    const alone = await a.presence(ch);
    assert.deepEqual(alone, { count: 1, members: [{ client: a.clientId }] });
    await b.subscribe(ch);
    const crowded = await a.presence(ch);
    assert.deepEqual(crowded, { count: 2, members: undefined });
  });

  test('a subscription gets join and leave of the other members', async () => {
    const a = client();
    const b = client();
    a.connect();
    b.connect();
    const ch = uniq('pres');
    const sub = await a.subscribe(ch);
    const events = [];
    sub.on('join', (f) => events.push(f));
    sub.on('leave', (f) => events.push(f));
    const clientJoin = nextEvent(a, 'join', 3000, (f) => f.ch === ch);
    const joined = nextEvent(sub, 'join', 3000);
    const bSub = await b.subscribe(ch);
    assert.deepEqual(await joined, { op: 'join', ch, client: b.clientId });
    assert.equal((await clientJoin).client, b.clientId, 'the client emits join too');
    const left = nextEvent(sub, 'leave', 3000);
    await bSub.unsubscribe();
    assert.deepEqual(await left, { op: 'leave', ch, client: b.clientId });
    assert.deepEqual(events.map((f) => f.op), ['join', 'leave'], 'no join or leave for its own subscription');
  });

  test('the first ack\'s subscribed and unrecovered reach listeners attached after await subscribe()', async () => {
    const c = client();
    c.connect();
    const ch = uniq();
    await c.publish(ch, 'before');
    const sub = await c.subscribe(ch, { since: { epoch: 'not-this-epoch', seq: 1 } });
    assert.equal(sub.recovered, false, 'outcome available at once');
    assert.equal(sub.lastAck.seq, 1);
    const subscribed = nextEvent(sub, 'subscribed', 2000);
    const unrecovered = nextEvent(sub, 'unrecovered', 2000);
    const [s, u] = await Promise.all([subscribed, unrecovered]);
    assert.equal(s, u);
    assert.equal(u.recovered, false);
    assert.equal(u.resubscribed, false);
    assert.deepEqual(sub.position, { epoch: u.epoch, seq: 1 });
  });

  test('the chorus.v1 sub-protocol is accepted', async () => {
    const c = client(srv.url, { protocols: 'chorus.v1' });
    await within(c.connect(), 3000, 'connect offering chorus.v1');
    assert.equal(c._ws.protocol, 'chorus.v1');
    await c.ping();
  });

  test('after a cut connection the client resumes with since and gets missed messages exactly once', async () => {
    const proxy = await startProxy(srv.port);
    cleanups.push(() => proxy.close());
    const c = client(proxy.url);
    const pub = client();
    c.connect();
    pub.connect();
    const ch = uniq();
    const [h, got] = collector();
    const sub = await c.subscribe(ch, h);
    for (let i = 1; i <= 3; i++) await pub.publish(ch, i);
    await waitFor(() => got.length === 3, { what: 'messages before the cut' });

    proxy.refuse = true; // keep the client offline while we publish
    const dropped = nextEvent(c, 'disconnected');
    proxy.cut();
    assert.equal((await dropped).willReconnect, true);
    for (let i = 4; i <= 8; i++) await pub.publish(ch, i); // missed while offline

    const resumed = nextEvent(sub, 'subscribed', 8000);
    proxy.refuse = false;
    const ctx = await resumed;
    assert.equal(ctx.resubscribed, true);
    assert.equal(ctx.wasRecovering, true);
    assert.equal(ctx.recovered, true, 'all missed messages were still in history');
    await pub.publish(ch, 9); // live again
    await waitFor(() => got.length >= 9, { what: 'missed and live messages' });
    await c.ping();
    assert.deepEqual(got.map((m) => m.data), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  test('a connection that stops answering is detected by the ping timeout and replaced', async () => {
    const proxy = await startProxy(srv.port);
    cleanups.push(() => proxy.close());
    const c = client(proxy.url, { pingInterval: 200, pingTimeout: 300 });
    const pub = client();
    pub.connect();
    await c.connect();
    const ch = uniq();
    const [h, got] = collector();
    const sub = await c.subscribe(ch, h);
    const first = c.clientId;

    proxy.blackhole = true; // the TCP connection stays up but nothing passes
    await pub.publish(ch, 'lost in the hole');
    const d = await nextEvent(c, 'disconnected', 5000);
    assert.match(d.reason, /pong/);
    proxy.blackhole = false;
    const ctx = await nextEvent(sub, 'subscribed', 5000);
    assert.notEqual(c.clientId, first);
    assert.equal(ctx.recovered, true);
    await pub.publish(ch, 'after');
    await waitFor(() => got.length === 2, { what: 'missed and new message' });
    assert.deepEqual(got.map((m) => m.data), ['lost in the hole', 'after']);
  });

  test('the client reconnects to a restarted broker on the same port and resubscribes', async () => {
    const own = await startChorusd({ args: brokerArgs });
    let current = own;
    cleanups.push(() => current.stop());
    const c = client(own.url);
    c.connect();
    const ch = uniq();
    const [h, got] = collector();
    const sub = await c.subscribe(ch, h);
    await c.publish(ch, 'before');
    await waitFor(() => got.length === 1);

    const disconnected = nextEvent(c, 'disconnected', 8000);
    await own.stop();
    const d = await disconnected;
    assert.equal(d.willReconnect, true);
    // PROTOCOL.md 5: SIGTERM closes clients with 1001 "shutdown"
    assert.equal(d.code, 1001, `close code on shutdown (reason '${d.reason}')`);

    const unrecovered = nextEvent(sub, 'unrecovered', 10000);
    current = await startChorusd({ port: own.port, args: brokerArgs });
    const ctx = await unrecovered; // new process, new epoch: the app must refetch
    assert.equal(ctx.recovered, false);
    assert.equal(ctx.resubscribed, true);
    const other = client(current.url);
    other.connect();
    await other.publish(ch, 'after restart');
    await waitFor(() => got.length === 2, { what: 'message after the restart' });
    assert.equal(got[1].data, 'after restart');
    assert.equal(got[1].seq, 1);
    assert.equal(sub.epoch, ctx.epoch);
  });

  test('requests made while offline are queued, bounded, and flushed in order once connected', async () => {
    const port = await freePort();
    const c = client(`ws://127.0.0.1:${port}/ws`, { maxOfflineQueue: 3, requestTimeout: 8000 });
    c.connect();
    const ch = uniq();
    const [h, got] = collector();
    const subP = c.subscribe(ch, h);
    const queued = [c.publish(ch, 'q1'), c.publish(ch, 'q2'), c.publish(ch, 'q3')];
    const over = await rejectionOf(c.publish(ch, 'q4'));
    assert.equal(over.code, 'queue_full');
    assert.match(over.message, /queue/);
    await nextEvent(c, 'reconnecting', 3000); // it is really failing to connect
    const late = await startChorusd({ port, args: brokerArgs });
    cleanups.push(() => late.stop());
    await within(subP, 8000, 'subscribe after the broker came up');
    assert.deepEqual(await within(Promise.all(queued), 8000, 'queued publishes'), [1, 2, 3]);
    await waitFor(() => got.length === 3);
    assert.deepEqual(got.map((m) => m.data), ['q1', 'q2', 'q3']);
  });

  test('queued requests reject with timeout when no connection comes within requestTimeout', async () => {
    const port = await freePort();
    const c = client(`ws://127.0.0.1:${port}/ws`, { requestTimeout: 300 });
    c.connect();
    const e = await rejectionOf(c.publish(uniq(), 1), 3000);
    assert.equal(e.code, 'timeout');
  });

  test('the broker serves the demo at / and the SDK at /sdk/chorus.js as JavaScript', async () => {
    const res = await fetch(srv.httpUrl + '/sdk/chorus.js');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') || '', /javascript/, 'module scripts need a JavaScript MIME type');
    assert.equal(await res.text(), fs.readFileSync(path.join(SRC, 'client-sdk', 'js', 'chorus.js'), 'utf8'));
    const index = await fetch(srv.httpUrl + '/');
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type') || '', /text\/html/);
    assert.match(await index.text(), /\/sdk\/chorus\.js|chat\.js/);
    const chat = await fetch(srv.httpUrl + '/chat.js');
    assert.equal(chat.status, 200);
    assert.match(chat.headers.get('content-type') || '', /javascript/);
  });
});
