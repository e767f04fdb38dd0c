// The JS SDK through cluster faults (issue 13), against FakeBroker scripted by
// its `intercept` hook: a node that answers publishes `unavailable` for a
// while (the SDK retries with the same idempotency key until its deadline, and
// only that code), and a node that closes its clients with 4013 because it is
// cut off from the cluster majority (the SDK reconnects at once, resumes every
// subscription with `since` and retries what was waiting for an ack).
// Runs without chorusd.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { FakeBroker } from './fake-broker.mjs';
import { sdk, waitFor, nextEvent, rejectionOf, within, collector } from './helpers.mjs';

const { Chorus, CloseCodes } = sdk;

const CUT_OFF_REASON = 'this node is cut off from the cluster majority; reconnect';
// Short delays so the tests are quick; the deadline is what each test sets.
const FAST_RETRY = { deadlineMs: 10000, minDelayMs: 5, maxDelayMs: 40 };

let broker;
const clients = [];

function client(opts = {}) {
  const c = new Chorus(broker.url, {
    WebSocket,
    minReconnectDelay: 20,
    maxReconnectDelay: 100,
    requestTimeout: 5000,
    publishRetry: FAST_RETRY,
    ...opts,
  });
  clients.push(c);
  return c;
}

/** The pub frames the broker received for a channel, in order. */
const pubsOf = (ch) => broker.framesOf('pub').filter((f) => f.ch === ch);

/** Answers the first `n` publishes of channel `ch` with `err` `code`; the rest go through. */
function refuseFirst(ch, n, code = 'unavailable') {
  let left = n;
  broker.intercept = (conn, f) => {
    if (f.op !== 'pub' || f.ch !== ch || left === 0) return false;
    left--;
    broker.sendRaw(conn, { op: 'err', id: f.id, code, msg: `refused by the test (${code})` });
    return true;
  };
}

before(async () => {
  broker = await new FakeBroker().start();
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  broker.intercept = null;
});
after(async () => {
  await broker.stop();
});

describe('publish retry on unavailable', () => {
  test('retries with the same generated key until the broker acks; published once', async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    await c.subscribe('t:retry', h);
    refuseFirst('t:retry', 3);
    const seq = await within(c.publish('t:retry', { n: 1 }), 8000, 'the retried publish');
    assert.equal(seq, 1);
    const frames = pubsOf('t:retry');
    assert.equal(frames.length, 4, 'three refusals, then the ack');
    const key = frames[0].key;
    assert.match(key, /^[A-Za-z0-9_-]{16,64}$/, 'a generated url-safe key');
    assert.ok(frames.every((f) => f.key === key), `one key for every attempt: ${frames.map((f) => f.key)}`);
    assert.equal(new Set(frames.map((f) => f.id)).size, 4, 'each attempt is a request of its own');
    await waitFor(() => got.length === 1, { what: 'the message at the subscriber' });
    assert.deepEqual(got[0].data, { n: 1 });
  });

  test('every publish gets a key of its own; a caller key is kept through retries', async () => {
    const c = client();
    c.connect();
    await c.publish('t:keys', 1);
    await c.publish('t:keys', 2);
    refuseFirst('t:keys', 2);
    await within(c.publish('t:keys', 3, { key: 'order-77' }), 8000, 'the keyed publish');
    const keys = pubsOf('t:keys').map((f) => f.key);
    assert.equal(keys.length, 5);
    assert.notEqual(keys[0], keys[1], 'generated keys differ');
    assert.deepEqual(keys.slice(2), ['order-77', 'order-77', 'order-77']);
  });

  test('an ack of a key already used (duplicate) resolves like the first ack', async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    await c.subscribe('t:dup', h);
    const first = await c.publish('t:dup', 'once', { key: 'k-dup' });
    const again = await c.publish('t:dup', 'once', { key: 'k-dup' });
    assert.equal(again, first, 'the first publish\'s seq');
    const seq2 = await c.publish('t:dup', 'next');
    assert.equal(seq2, first + 1, 'the duplicate published nothing');
    await waitFor(() => got.length === 2, { what: 'two messages' });
    assert.deepEqual(got.map((m) => m.data), ['once', 'next']);
  });

  test('a publish queued while offline keeps its key through the reconnect and the retries', async () => {
    const c = client({ minReconnectDelay: 50 });
    const key = 'queued-key-1';
    const p = c.publish('t:queued', 'q', { key }); // not connected yet: queued
    refuseFirst('t:queued', 1);
    c.connect();
    await within(p, 8000, 'the queued publish');
    assert.deepEqual(pubsOf('t:queued').map((f) => f.key), [key, key]);
  });

  test('the deadline is honoured: always unavailable rejects with unavailable', async () => {
    const deadlineMs = 300;
    const c = client({ publishRetry: { deadlineMs, minDelayMs: 20, maxDelayMs: 80 } });
    c.connect();
    await c.ready(3000);
    refuseFirst('t:deadline', Infinity);
    const e = await rejectionOf(c.publish('t:deadline', 1), 8000);
    assert.equal(e.code, 'unavailable');
    assert.equal(e.reply.code, 'unavailable', 'the broker\'s last err frame');
    const frames = pubsOf('t:deadline');
    // Delays are at least 10, 20, 40, 40, ... ms (half of min * 2^k, capped),
    // and none starts past the deadline: 300 ms leave room for at most 9.
    assert.ok(frames.length >= 2 && frames.length <= 9, `attempts: ${frames.length}`);
    assert.ok(frames.every((f) => f.key === frames[0].key), 'one key');
    assert.match(e.message, new RegExp(`gave up after ${frames.length} attempts`));
    assert.equal(c._retrying.size, 0, 'nothing left scheduled');
  });

  test('other error codes are not retried', async () => {
    const c = client();
    c.connect();
    for (const code of ['rate_limited', 'bad_request', 'too_large']) {
      const ch = `t:other-${code}`;
      refuseFirst(ch, 1, code);
      const e = await rejectionOf(c.publish(ch, 1), 3000);
      assert.equal(e.code, code);
      assert.equal(pubsOf(ch).length, 1, `${code}: sent once`);
    }
    const e = await rejectionOf(c.publish('ro:forbidden', 1), 3000); // the fake's read-only namespace
    assert.equal(e.code, 'forbidden');
    assert.equal(pubsOf('ro:forbidden').length, 1);
  });

  test('publishRetry: false sends no generated key and rejects at once', async () => {
    const c = client({ publishRetry: false });
    c.connect();
    refuseFirst('t:off', 1);
    const e = await rejectionOf(c.publish('t:off', 1), 3000);
    assert.equal(e.code, 'unavailable');
    const frames = pubsOf('t:off');
    assert.equal(frames.length, 1);
    assert.equal('key' in frames[0], false);
    await c.publish('t:off', 2, { key: 'mine' });
    assert.equal(pubsOf('t:off')[1].key, 'mine', 'a caller key is still sent');
  });

  test('a malformed key is refused before sending', async () => {
    const c = client();
    c.connect();
    await c.ready(3000);
    for (const key of ['', 'x'.repeat(65), 'é'.repeat(33), 'a\0b', 'lone \ud800', 42]) {
      const e = await rejectionOf(c.publish('t:badkey', 1, { key }), 3000);
      assert.equal(e.code, 'bad_request', `key ${JSON.stringify(key)}`);
    }
    assert.equal(await c.publish('t:badkey', 1, { key: 'é'.repeat(32) }), 1, '64 bytes is allowed');
    assert.equal(pubsOf('t:badkey').length, 1);
  });

  test('close() ends a publish waiting for its next attempt with closed', async () => {
    const c = client({ publishRetry: { deadlineMs: 60000, minDelayMs: 60000, maxDelayMs: 60000 } });
    c.connect();
    refuseFirst('t:close', 1);
    const p = c.publish('t:close', 1);
    await waitFor(() => c._retrying.size === 1, { what: 'the retry to be scheduled' });
    c.close();
    assert.equal((await rejectionOf(p, 1000)).code, 'closed');
  });
});

describe('close code 4013 (node cut off from the majority)', () => {
  test('reconnects at once, resumes with since, retries the unanswered publish with its key', async () => {
    // After 4013 the reconnect must come within the shortest backoff delay.
    const c = client({ minReconnectDelay: 100, maxReconnectDelay: 60000 });
    c.connect();
    const [h, got] = collector();
    const sub = await c.subscribe('t:cut', h);
    for (let i = 1; i <= 3; i++) await c.publish('t:cut', i);
    await waitFor(() => got.length === 3, { what: 'three messages' });
    const epoch = sub.epoch;

    // The node stops answering publishes, then gives up on its clients.
    let holding = true;
    broker.intercept = (conn, f) => f.op === 'pub' && f.ch === 't:cut' && holding;
    const held = c.publish('t:cut', 'held');
    await waitFor(() => pubsOf('t:cut').length === 4, { what: 'the held publish at the broker' });
    const firstConn = c.clientId;
    const disconnected = nextEvent(c, 'disconnected', 3000);
    const reconnecting = nextEvent(c, 'reconnecting', 3000);
    const resubscribed = nextEvent(sub, 'subscribed', 5000);
    broker.closeAll(CloseCodes.CUT_OFF, CUT_OFF_REASON);
    // Published on the majority side while this client was away (the fake
    // drops them for the closing connection).
    broker.publish('t:cut', 'missed-4');
    broker.publish('t:cut', 'missed-5');
    holding = false;

    const d = await disconnected;
    assert.deepEqual(d, { code: 4013, reason: CUT_OFF_REASON, willReconnect: true });
    const r = await reconnecting;
    assert.equal(r.code, 4013);
    assert.ok(r.delay <= 100, `a prompt reconnect (at most minReconnectDelay), got ${r.delay} ms`);

    const ctx = await resubscribed;
    assert.equal(ctx.wasRecovering, true);
    assert.equal(ctx.recovered, true);
    assert.notEqual(c.clientId, firstConn, 'a new connection');
    const subs = broker.framesOf('sub').filter((f) => f.ch === 't:cut');
    assert.deepEqual(subs.at(-1).since, { epoch, seq: 3 }, 'resumed from the last message delivered');

    const seq = await within(held, 5000, 'the held publish');
    const frames = pubsOf('t:cut').slice(3);
    assert.ok(frames.length >= 2, 'sent again after the reconnect');
    assert.ok(frames.every((f) => f.key === frames[0].key), 'with the same key');
    await waitFor(() => got.length === 6, { what: 'the missed messages and the held one' });
    assert.deepEqual(got.map((m) => m.data), [1, 2, 3, 'missed-4', 'missed-5', 'held']);
    assert.equal(seq, 6);
    assert.deepEqual(got.map((m) => m.seq), [1, 2, 3, 4, 5, 6], 'each once, in order');
  });

  test('1001 (node shutting down): the unanswered publish is retried with its key, once', async () => {
    // A node shutting down answers what it took before its 1001 and drops
    // what came after (PROTOCOL.md 5): the dropped publish goes again.
    const c = client();
    c.connect();
    const [h, got] = collector();
    await c.subscribe('t:shutdown', h);
    await c.publish('t:shutdown', 1);
    let dropping = true;
    broker.intercept = (conn, f) => f.op === 'pub' && f.ch === 't:shutdown' && dropping;
    const held = c.publish('t:shutdown', 'held', { key: 'held-key' });
    await waitFor(() => pubsOf('t:shutdown').length === 2, { what: 'the dropped publish at the broker' });
    const disconnected = nextEvent(c, 'disconnected', 3000);
    broker.closeAll(CloseCodes.SHUTDOWN, 'shutdown');
    dropping = false;
    assert.equal((await disconnected).code, 1001);
    const seq = await within(held, 5000, 'the dropped publish');
    const frames = pubsOf('t:shutdown').slice(1);
    assert.ok(frames.length >= 2 && frames.every((f) => f.key === 'held-key'), 'sent again with its key');
    await waitFor(() => got.length === 2, { what: 'both messages' });
    assert.deepEqual(got.map((m) => [m.seq, m.data]), [[1, 1], [2, 'held']]);
    assert.equal(seq, 2);
  });

  test('1006 (connection lost, no close frame): the unanswered publish is retried with its key', async () => {
    const c = client();
    c.connect();
    const [h, got] = collector();
    await c.subscribe('t:lost', h);
    await c.publish('t:lost', 1);
    let dropping = true;
    broker.intercept = (conn, f) => f.op === 'pub' && f.ch === 't:lost' && dropping;
    const held = c.publish('t:lost', 'held', { key: 'lost-key' });
    await waitFor(() => pubsOf('t:lost').length === 2, { what: 'the dropped publish at the broker' });
    const disconnected = nextEvent(c, 'disconnected', 3000);
    broker.killAll();
    dropping = false;
    assert.equal((await disconnected).code, 1006);
    const seq = await within(held, 5000, 'the dropped publish');
    const frames = pubsOf('t:lost').slice(1);
    assert.ok(frames.length >= 2 && frames.every((f) => f.key === 'lost-key'), 'sent again with its key');
    await waitFor(() => got.length === 2, { what: 'both messages' });
    assert.deepEqual(got.map((m) => [m.seq, m.data]), [[1, 1], [2, 'held']]);
    assert.equal(seq, 2);
  });

  test('other close codes still reject the publish in flight with disconnected', async () => {
    const c = client();
    c.connect();
    await c.ready(3000);
    broker.intercept = (conn, f) => f.op === 'pub' && f.ch === 't:inflight4008';
    const p = c.publish('t:inflight4008', 1);
    await waitFor(() => pubsOf('t:inflight4008').length === 1, { what: 'the publish at the broker' });
    broker.closeAll(CloseCodes.SLOW_CONSUMER, 'slow consumer');
    assert.equal((await rejectionOf(p, 3000)).code, 'disconnected');
  });
});
