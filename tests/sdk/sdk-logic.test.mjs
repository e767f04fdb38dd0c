// SDK logic tests against FakeBroker (fake-broker.mjs): the parts of the
// client's behaviour that need faults a real broker will not produce on demand
// (duplicated frames, epoch changes, a peer that stops answering, exact backoff
// bounds). Runs without chorusd. The same behaviours against the real broker
// are in sdk.test.mjs.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { FakeBroker } from './fake-broker.mjs';
import { sdk, waitFor, nextEvent, rejectionOf, within, collector, freePort } from './helpers.mjs';

const { Chorus, ChorusError } = sdk;

let broker;
const clients = [];

function client(opts = {}, url = broker.url) {
  const c = new Chorus(url, { WebSocket, minReconnectDelay: 20, maxReconnectDelay: 100, requestTimeout: 2000, ...opts });
  clients.push(c);
  return c;
}

before(async () => {
  broker = await new FakeBroker().start();
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  broker.mute = false;
  broker.presenceMaxMembers = 1000;
  broker.afterSubAck = null;
});
after(async () => {
  await broker.stop();
});

describe('requests', () => {
  test('request ids are distinct integers and the client reports hello', async () => {
    const c = client();
    const connected = nextEvent(c, 'connected', 3000);
    c.connect();
    const info = await connected;
    assert.equal(info.node, 'fake-node');
    assert.equal(c.clientId, info.client);
    await c.ping();
    await c.publish('t:ids', 1);
    await c.history('t:ids');
    const ids = broker.received.filter((r) => r.conn.id === c.clientId).map((r) => r.frame.id);
    assert.ok(ids.length >= 3);
    for (const id of ids) assert.ok(Number.isInteger(id) && id >= 0 && id < 2 ** 53, `id ${id}`);
    assert.equal(new Set(ids).size, ids.length, 'ids are unique');
  });

  test('publish resolves with the seq; handler gets (data, msg) after the ack', async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    const sub = await c.subscribe('t:basic', h);
    assert.equal(sub.state, 'subscribed');
    const s1 = await c.publish('t:basic', { text: 'a' });
    const s2 = await c.publish('t:basic', 'b');
    assert.equal(s2, s1 + 1);
    await waitFor(() => got.length === 2, { what: 'two messages' });
    assert.deepEqual(got.map((m) => m.data), [{ text: 'a' }, 'b']);
    assert.deepEqual(got.map((m) => m.seq), [s1, s2]);
  });

  test('an err reply rejects with a ChorusError carrying the code', async () => {
    const c = client();
    c.connect();
    const e = await rejectionOf(c.publish('bad channel!', 1));
    assert.ok(e instanceof ChorusError);
    assert.equal(e.code, 'bad_channel');
    assert.equal(e.reply.op, 'err');
    const f = await rejectionOf(c.publish('ro:x', 1));
    assert.equal(f.code, 'forbidden');
    const g = await rejectionOf(c.subscribe('', () => {}));
    assert.equal(g.code, 'bad_channel');
    assert.equal(c.getSubscription(''), undefined, 'failed subscription is dropped');
  });

  test('subscribing twice to one channel is refused locally', async () => {
    const c = client();
    c.connect();
    await c.subscribe('t:twice');
    const e = await rejectionOf(c.subscribe('t:twice'));
    assert.equal(e.code, 'already_subscribed');
  });

  test('close rejects pending requests with code closed', async () => {
    broker.mute = true;
    const c = client();
    await c.connect();
    const p = c.publish('t:close', 1);
    const q = c.subscribe('t:close');
    c.close();
    assert.equal((await rejectionOf(p)).code, 'closed');
    assert.equal((await rejectionOf(q)).code, 'closed');
    assert.equal((await rejectionOf(c.ping())).code, 'closed');
  });

  test('a request without a reply rejects with timeout', async () => {
    broker.mute = true;
    const c = client({ requestTimeout: 200, pingInterval: 0 });
    await c.connect();
    const e = await rejectionOf(c.history('t:mute'));
    assert.equal(e.code, 'timeout');
  });
});

describe('ordering and deduplication', () => {
  test('duplicate and stale seqs are delivered once', async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    const sub = await c.subscribe('t:dup', h);
    const conn = [...broker.conns].find((x) => x.id === c.clientId);
    const m1 = broker.publish('t:dup', 'one');
    broker.sendRaw(conn, m1); // duplicate
    const m2 = broker.publish('t:dup', 'two');
    broker.sendRaw(conn, m1); // stale
    broker.sendRaw(conn, m2); // duplicate
    broker.publish('t:dup', 'three');
    await waitFor(() => got.length >= 3, { what: 'three messages' });
    await c.ping(); // everything sent before the pong has been processed
    assert.deepEqual(got.map((m) => m.data), ['one', 'two', 'three']);
    assert.equal(sub.seq, 3);
  });

  test('an epoch event resets the position and is reported', async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    const sub = await c.subscribe('t:epoch', h);
    broker.publish('t:epoch', 'old1');
    broker.publish('t:epoch', 'old2');
    await waitFor(() => got.length === 2);
    const ev = nextEvent(c, 'epoch');
    const subEv = nextEvent(sub, 'epoch');
    broker.newEpoch('t:epoch');
    const e = await ev;
    await subEv;
    assert.equal(e.channel, 't:epoch');
    assert.equal(e.epoch, broker.channel('t:epoch').epoch);
    broker.publish('t:epoch', 'new1'); // seq 1 again: must not be taken for a duplicate
    await waitFor(() => got.length === 3, { what: 'first message of the new epoch' });
    assert.equal(got[2].seq, 1);
    assert.deepEqual(sub.position, { epoch: e.epoch, seq: 1 });
  });

  test('a seq that skips ahead is reported as a gap and still delivered', async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    const sub = await c.subscribe('t:gap', h);
    const gap = nextEvent(sub, 'gap');
    const conn = [...broker.conns].find((x) => x.id === c.clientId);
    broker.sendRaw(conn, { op: 'msg', ch: 't:gap', seq: 5, ts: Date.now(), data: 'x' });
    const g = await gap;
    assert.equal(g.source, 'sdk');
    assert.equal(g.from, 1);
    assert.equal(g.to, 4);
    assert.equal(g.expected, 1);
    assert.equal(g.got, 5);
    await waitFor(() => got.length === 1);
  });

  test('a conflated msg whose seq jumps by skipped + 1 is delivered without a gap', async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    const sub = await c.subscribe('t:conflated', h);
    const gaps = [];
    sub.on('gap', (g) => gaps.push(g));
    const conn = [...broker.conns].find((x) => x.id === c.clientId);
    broker.sendRaw(conn, { op: 'msg', ch: 't:conflated', seq: 1, ts: Date.now(), data: 'a' });
    broker.sendRaw(conn, { op: 'msg', ch: 't:conflated', seq: 5, skipped: 3, ts: Date.now(), data: 'e' });
    // More than skipped accounts for: the rest is still a gap.
    broker.sendRaw(conn, { op: 'msg', ch: 't:conflated', seq: 9, skipped: 1, ts: Date.now(), data: 'i' });
    await waitFor(() => got.length === 3, { what: 'three messages' });
    assert.deepEqual(got.map((m) => m.seq), [1, 5, 9]);
    assert.equal(got[1].skipped, 3);
    assert.equal(gaps.length, 1);
    assert.equal(gaps[0].from, 6);
    assert.equal(gaps[0].to, 7);
  });

  test("the broker's gap event is reported once, and delivery continues after it", async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    const sub = await c.subscribe('t:lost-msgs', h);
    const gaps = [];
    const clientGaps = [];
    sub.on('gap', (g) => gaps.push(g));
    c.on('gap', (g) => clientGaps.push(g));
    broker.publish('t:lost-msgs', 'one');
    broker.loseMessages('t:lost-msgs', 2, 4); // {"op":"gap","ch","epoch","from":2,"to":4}
    await waitFor(() => gaps.length === 1, { what: 'the gap event' });
    const epoch = broker.channel('t:lost-msgs').epoch;
    assert.deepEqual(gaps[0], { channel: 't:lost-msgs', epoch, from: 2, to: 4, source: 'broker' });
    assert.deepEqual(clientGaps, gaps, 'the client emits it too');
    assert.deepEqual(sub.position, { epoch, seq: 4 }, 'a resume will not ask for the lost messages');
    broker.publish('t:lost-msgs', 'five');
    await waitFor(() => got.length === 2, { what: 'the message after the gap' });
    await c.ping();
    assert.deepEqual(got.map((m) => [m.seq, m.data]), [[1, 'one'], [5, 'five']]);
    assert.equal(gaps.length, 1, 'seq 5 is not reported as a second gap');
    // After a drop, the resume starts after the gap.
    const resumed = nextEvent(sub, 'subscribed', 5000);
    broker.killAll();
    assert.equal((await resumed).recovered, true);
    assert.deepEqual(broker.framesOf('sub').filter((f) => f.ch === 't:lost-msgs').at(-1).since, { epoch, seq: 5 });
  });

  test('a malformed gap event is a protocol error and changes nothing', async () => {
    const c = client();
    c.connect();
    const sub = await c.subscribe('t:badgap');
    const gaps = [];
    sub.on('gap', (g) => gaps.push(g));
    const err = nextEvent(c, 'error');
    const conn = [...broker.conns].find((x) => x.id === c.clientId);
    broker.sendRaw(conn, { op: 'gap', ch: 't:badgap', epoch: sub.epoch, from: 5, to: 'x' });
    assert.equal((await err).code, 'protocol_error');
    assert.deepEqual(gaps, []);
    assert.equal(sub.seq, 0);
  });

  test('messages of other channels and after unsubscribe are not delivered', async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    const sub = await c.subscribe('t:unsub', h);
    broker.publish('t:unsub', 1);
    await waitFor(() => got.length === 1);
    await sub.unsubscribe();
    assert.equal(sub.state, 'unsubscribed');
    const conn = [...broker.conns].find((x) => x.id === c.clientId);
    broker.sendRaw(conn, { op: 'msg', ch: 't:unsub', seq: 2, data: 2 }); // a late one
    broker.publish('t:unsub', 3);
    await c.ping();
    assert.equal(got.length, 1);
    // and the channel can be subscribed again
    await c.subscribe('t:unsub', h);
  });
});

describe('the first ack', () => {
  test('subscribed reaches a listener attached after await subscribe(); lastAck is set before', async () => {
    const c = client();
    c.connect();
    const sub = await c.subscribe('t:first');
    assert.equal(sub.lastAck.channel, 't:first');
    assert.equal(sub.lastAck.resubscribed, false);
    assert.equal(sub.lastAck.wasRecovering, false);
    assert.equal(sub.lastAck.epoch, sub.epoch);
    assert.equal(sub.recovered, undefined, 'no since: recovered is undefined');
    const ctx = await nextEvent(sub, 'subscribed', 2000);
    assert.equal(ctx, sub.lastAck);
  });

  test('unrecovered of a refused since reaches listeners attached before and after the await, once each', async () => {
    broker.publish('t:stale', 'a');
    const c = client();
    c.connect();
    const seen = [];
    const subP = c.subscribe('t:stale', { since: { epoch: 'gone-epoch', seq: 1 } });
    const early = c.getSubscription('t:stale');
    early.on('subscribed', () => seen.push('early subscribed'));
    early.on('unrecovered', () => seen.push('early unrecovered'));
    const sub = await subP;
    assert.equal(sub, early);
    assert.deepEqual(seen, [], 'nothing emitted before the code awaiting subscribe() ran');
    assert.equal(sub.recovered, false);
    assert.equal(sub.lastAck.wasRecovering, true);
    sub.on('subscribed', (ctx) => seen.push('late subscribed'));
    sub.on('unrecovered', (ctx) => seen.push(`late unrecovered ${ctx.recovered}`));
    await waitFor(() => seen.length === 4, { what: 'first-ack events' });
    await c.ping(); // nothing more comes
    assert.deepEqual(seen, ['early subscribed', 'late subscribed', 'early unrecovered', 'late unrecovered false']);
    assert.deepEqual(sub.position, { epoch: broker.channel('t:stale').epoch, seq: 1 });
  });

  test('the events survive extra promise hops between the ack and the listener', async () => {
    const c = client();
    c.connect();
    const open = async (ch) => {
      const s = await c.subscribe(ch, { since: { epoch: 'gone-epoch', seq: 3 } });
      await null;
      return s;
    };
    const sub = await open('t:hops').then((s) => Promise.resolve(s)).then((s) => s);
    const ctx = await nextEvent(sub, 'unrecovered', 2000);
    assert.equal(ctx.recovered, false);
    assert.equal(ctx.resubscribed, false);
  });

  test('the first ack is reported before later events of the subscription', async () => {
    const c = client();
    c.connect();
    broker.afterSubAck = (conn, f) => {
      if (f.ch === 't:order') broker.newEpoch('t:order'); // right behind the ack
    };
    const order = [];
    const subP = c.subscribe('t:order');
    const sub = c.getSubscription('t:order');
    for (const ev of ['subscribed', 'unrecovered', 'epoch', 'unsubscribed']) sub.on(ev, () => order.push(ev));
    await subP;
    await waitFor(() => order.length === 2, { what: 'subscribed and epoch' });
    assert.deepEqual(order, ['subscribed', 'epoch']);

    broker.afterSubAck = null;
    const quick = await c.subscribe('t:quick');
    const q = [];
    quick.on('subscribed', () => q.push('subscribed'));
    quick.on('unsubscribed', () => q.push('unsubscribed'));
    await quick.unsubscribe(); // before the held events were emitted
    assert.deepEqual(q, ['subscribed', 'unsubscribed']);
  });

  test('a resubscribe after a reconnect emits subscribed at once, with resubscribed true', async () => {
    const c = client();
    c.connect();
    const sub = await c.subscribe('t:again');
    await nextEvent(sub, 'subscribed', 2000);
    const seen = [];
    sub.on('subscribed', (ctx) => seen.push(ctx));
    const back = nextEvent(c, 'connected', 5000);
    broker.killAll();
    await back;
    await c.ping(); // the resubscribe's ack came before the pong
    assert.equal(seen.length, 1);
    assert.equal(seen[0].resubscribed, true);
    assert.equal(sub.lastAck, seen[0]);
    assert.equal(sub.recovered, true);
  });
});

describe('presence', () => {
  test('presence resolves with {count, members}; members is undefined past the limit', async () => {
    const a = client();
    const b = client();
    a.connect();
    b.connect();
    await a.subscribe('t:pres');
    await b.subscribe('t:pres');
    const p = await a.presence('t:pres');
    assert.equal(p.count, 2);
    assert.deepEqual(p.members.map((m) => m.client).sort(), [a.clientId, b.clientId].sort());
    broker.presenceMaxMembers = 1; // the broker now answers only the count
    const q = await a.getSubscription('t:pres').presence();
    assert.deepEqual(q, { count: 2, members: undefined });
  });
});

describe('reconnection', () => {
  test('after a drop the client resubscribes with since and gets missed messages once', async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    const sub = await c.subscribe('t:resume', h);
    broker.publish('t:resume', 'a');
    await waitFor(() => got.length === 1);
    const first = c.clientId;
    const dropped = nextEvent(c, 'disconnected');
    broker.killAll();
    const d = await dropped;
    assert.equal(d.willReconnect, true);
    broker.publish('t:resume', 'b'); // missed while offline
    broker.publish('t:resume', 'c');
    const ctx = await nextEvent(sub, 'subscribed', 5000);
    assert.equal(ctx.resubscribed, true);
    assert.equal(ctx.wasRecovering, true);
    assert.equal(ctx.recovered, true);
    assert.notEqual(c.clientId, first);
    const subs = broker.framesOf('sub').filter((f) => f.ch === 't:resume');
    assert.deepEqual(subs.at(-1).since, { epoch: broker.channel('t:resume').epoch, seq: 1 });
    broker.publish('t:resume', 'd');
    await waitFor(() => got.length >= 4, { what: 'missed and live messages' });
    await c.ping();
    assert.deepEqual(got.map((m) => m.data), ['a', 'b', 'c', 'd']);
  });

  test('a failed recovery is reported as unrecovered and the position jumps', async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    const sub = await c.subscribe('t:lost', h);
    broker.publish('t:lost', 'a');
    await waitFor(() => got.length === 1);
    const dropped = nextEvent(c, 'disconnected');
    broker.killAll();
    await dropped;
    broker.channels.delete('t:lost'); // the broker forgot the channel: new epoch
    broker.publish('t:lost', 'x');
    const ctx = await nextEvent(sub, 'unrecovered', 5000);
    assert.equal(ctx.recovered, false);
    assert.equal(ctx.wasRecovering, true);
    assert.deepEqual(sub.position, { epoch: broker.channel('t:lost').epoch, seq: 1 });
    broker.publish('t:lost', 'y');
    await waitFor(() => got.length === 2);
    assert.deepEqual(got.map((m) => [m.data, m.seq]), [['a', 1], ['y', 2]]);
  });

  test('a subscription can resume from a stored position', async () => {
    broker.publish('t:stored', 'a');
    broker.publish('t:stored', 'b');
    broker.publish('t:stored', 'c');
    const ch = broker.channel('t:stored');
    const c = client();
    c.connect();
    const [h, got] = collector();
    const sub = await c.subscribe('t:stored', h, { since: { epoch: ch.epoch, seq: 1 } });
    await waitFor(() => got.length === 2);
    assert.deepEqual(got.map((m) => m.data), ['b', 'c']);
    assert.equal(sub.seq, 3);
  });

  test('a connection that stops answering pings is replaced', async () => {
    const c = client({ pingInterval: 100, pingTimeout: 150 });
    await c.connect();
    const first = c.clientId;
    broker.mute = true;
    const d = await nextEvent(c, 'disconnected', 3000);
    assert.match(d.reason, /pong/);
    broker.mute = false;
    await nextEvent(c, 'connected', 3000);
    assert.notEqual(c.clientId, first);
    const pings = broker.framesOf('ping');
    assert.ok(pings.length >= 2);
  });

  test('reconnect delays use exponential backoff with full jitter', async () => {
    const port = await freePort(); // nothing listens there
    const c = client({ minReconnectDelay: 10, maxReconnectDelay: 80 }, `ws://127.0.0.1:${port}/ws`);
    const delays = [];
    c.on('reconnecting', (e) => delays.push(e));
    c.connect();
    await waitFor(() => delays.length >= 7, { timeoutMs: 5000, what: 'seven attempts' });
    c.close();
    for (const [i, e] of delays.entries()) {
      assert.equal(e.attempt, i + 1);
      const cap = Math.min(80, 10 * 2 ** i);
      assert.ok(e.delay >= 0 && e.delay <= cap, `attempt ${e.attempt}: ${e.delay} <= ${cap}`);
    }
  });
});

describe('offline queue', () => {
  test('publishes made before connecting are sent after the hello, in order', async () => {
    const c = client();
    const [h, got] = collector();
    const subP = c.subscribe('t:queued', h);
    const seqs = [c.publish('t:queued', 1), c.publish('t:queued', 2), c.publish('t:queued', 3)];
    c.connect();
    await subP;
    const s = await Promise.all(seqs);
    assert.deepEqual(s, [1, 2, 3]);
    await waitFor(() => got.length === 3);
    assert.deepEqual(got.map((m) => m.data), [1, 2, 3]);
  });

  test('the queue is bounded by maxOfflineQueue and by requestTimeout', async () => {
    const port = await freePort();
    const c = client({ maxOfflineQueue: 3, requestTimeout: 300 }, `ws://127.0.0.1:${port}/ws`);
    c.connect();
    const queued = [1, 2, 3].map((i) => c.publish('t:q', i));
    const over = await rejectionOf(c.publish('t:q', 4));
    assert.equal(over.code, 'queue_full');
    for (const p of queued) assert.equal((await rejectionOf(p, 2000)).code, 'timeout');
    // room again once the old ones expired
    const again = await rejectionOf(c.publish('t:q', 5), 2000);
    assert.equal(again.code, 'timeout');
  });

  test('a history request in flight when the connection drops is repeated after the reconnect', async () => {
    const c = client();
    await c.connect();
    broker.publish('t:reread', 'kept');
    broker.mute = true;
    const p = c.history('t:reread');
    await waitFor(() => broker.framesOf('history').some((f) => f.ch === 't:reread'));
    broker.mute = false;
    broker.killAll();
    const h = await within(p, 3000, 'history after reconnect');
    assert.deepEqual(h.msgs.map((m) => m.data), ['kept']);
  });

  test('with publishRetry off, a publish in flight when the connection drops rejects with disconnected', async () => {
    // (With retries on, the default, it is sent again with its key:
    // sdk.js_retry.)
    const c = client({ publishRetry: false });
    await c.connect();
    broker.mute = true;
    const p = c.publish('t:inflight', 1);
    await waitFor(() => broker.framesOf('pub').some((f) => f.ch === 't:inflight'));
    broker.killAll();
    assert.equal((await rejectionOf(p)).code, 'disconnected');
  });
});

describe('options', () => {
  test('token is sent as a query parameter and may be a function', async () => {
    let n = 0;
    const c = client({ token: async () => `tok${++n}` });
    await c.connect();
    const conn = [...broker.conns].find((x) => x.id === c.clientId);
    assert.match(conn.url, /[?&]token=tok1$/);
  });

  test('the sub-protocol chorus.v1 can be offered', async () => {
    const c = client({ protocols: 'chorus.v1' });
    await c.connect();
    const conn = [...broker.conns].find((x) => x.id === c.clientId);
    assert.equal(conn.ws.protocol, 'chorus.v1');
  });

  test('without a WebSocket implementation the constructor explains what to pass', () => {
    const saved = globalThis.WebSocket;
    delete globalThis.WebSocket;
    try {
      assert.throws(() => new Chorus('ws://127.0.0.1:1/ws'), /WebSocket/);
    } finally {
      if (saved) globalThis.WebSocket = saved;
    }
  });
});
