// JS SDK clients for tests/deploy/test_haproxy_rolling.py: subscribers and
// keyed publishers through one URL (haproxy), each a plain application of
// client-sdk/js/chorus.js with its defaults (reconnect, resume with `since`,
// publish retry with the same key) except for shorter reconnect delays.
//
// Everything the SDK hands the application that is not a message or an ack
// counts as an error: an `error` event, a rejected publish or subscribe, an
// `unsubscribed`, a `gap`, an `epoch`, an `unrecovered`, a resume with
// `recovered` not true. The Python side reads this report; it checks nothing
// here but what needs the raw streams (exactly once, one order, acked seq).
//
// argv[2]: JSON {url, channels, subscribers, rate} (rate: publishes/s per
// channel, one publisher per channel). stdin: "stop" ends the publishing;
// then every publish settles, the subscribers get what was acked (bounded),
// and the report is printed as one JSON line: {"report": {...}}. Before that,
// "ready" once every subscription is acked and publishing runs.

import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const { Chorus } = await import(path.join(here, '..', '..', 'client-sdk', 'js', 'chorus.js'));

const cfg = JSON.parse(process.argv[2]);
const t0 = Date.now();
const ms = () => Date.now() - t0;
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

/** A client with the SDK's own handling; `errors` are what the application saw. */
function client(name) {
  const me = { name, errors: [], connects: [], closes: [], wsErrors: [] };
  // What the socket itself reports (the SDK sinks it: a close follows), kept
  // to tell a close without a close frame (1006) from a broken frame.
  class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.on('error', (e) => me.wsErrors.push({ at: ms(), msg: String(e && e.message) }));
    }
  }
  const c = new Chorus(cfg.url, { WebSocket: RecordingWebSocket, minReconnectDelay: 50,
    maxReconnectDelay: 500 });
  me.c = c;
  const bad = (what, detail) => me.errors.push({ at: ms(), what, detail });
  c.on('connected', (e) => me.connects.push({ at: ms(), node: e.node }));
  c.on('disconnected', (e) => me.closes.push({ at: ms(), code: e.code, reason: e.reason }));
  c.on('error', (e) => bad('error', `${e.code}: ${e.message}`));
  c.on('gap', (e) => bad('gap', e));
  c.on('epoch', (e) => bad('epoch', e));
  c.on('unsubscribed', (e) => bad('unsubscribed', e));
  c.on('subscribed', (e) => {
    if (e.resubscribed && e.recovered !== true) bad('not_recovered', { ...e, subscription: undefined });
  });
  me.bad = bad;
  return me;
}

const subs = [];
for (let k = 0; k < cfg.subscribers; k++) {
  const s = client(`sub${k}`);
  s.got = Object.fromEntries(cfg.channels.map((ch) => [ch, []]));
  s.resumes = 0;
  s.c.on('subscribed', (e) => { if (e.resubscribed) s.resumes++; });
  s.c.connect();
  subs.push(s);
}
for (const s of subs) {
  for (const ch of cfg.channels) {
    try {
      const sub = await s.c.subscribe(ch, (data, m) => s.got[ch].push([m.epoch, m.seq, data.k]));
      sub.on('unrecovered', (e) => s.bad('unrecovered', e));
    } catch (e) {
      s.bad('subscribe', `${ch}: ${e.code}: ${e.message}`);
    }
  }
}

// One publisher per channel, keyed publishes {k} at cfg.rate per second.
let stopping = false;
const pubs = cfg.channels.map((ch, i) => {
  const p = client(`pub${i}`);
  Object.assign(p, { ch, sent: 0, acked: new Map(), pending: new Set(), lastAck: null, maxPause: 0,
    maxLatency: 0 });
  p.c.connect();
  return p;
});
await Promise.all(pubs.map((p) => p.c.ready()));

function publishOne(p) {
  const k = p.sent++;
  const start = Date.now();
  const pr = p.c.publish(p.ch, { k }, { key: `${p.ch}-${k}` }).then(
    (seq) => {
      const now = Date.now();
      if (p.lastAck !== null) p.maxPause = Math.max(p.maxPause, now - p.lastAck);
      p.lastAck = now;
      p.maxLatency = Math.max(p.maxLatency, now - start);
      // The epoch an ack names is the one its subscribers see the message in.
      p.acked.set(k, seq);
    },
    (e) => p.bad('publish', `${p.ch}-${k}: ${e.code}: ${e.message}`),
  );
  p.pending.add(pr);
  pr.finally(() => p.pending.delete(pr));
}

const timers = pubs.map((p) => {
  // Publishes are paced by the clock, not by a timer's drift.
  const period = 1000 / cfg.rate;
  const began = Date.now();
  return setInterval(() => {
    while (!stopping && p.sent < (Date.now() - began) / period) publishOne(p);
  }, 10);
});
say({ ready: true, at: ms() });

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === 'stop') break;
}
stopping = true;
timers.forEach(clearInterval);
for (const p of pubs) while (p.pending.size) await Promise.allSettled([...p.pending]);

// Every subscriber should get every acked message; wait (bounded) until it has.
const want = (ch) => pubs.find((p) => p.ch === ch).acked.size;
const deadline = Date.now() + (cfg.settleMs || 20000);
while (Date.now() < deadline) {
  if (subs.every((s) => cfg.channels.every((ch) => new Set(s.got[ch].map((m) => m[2])).size >= want(ch)))) break;
  await new Promise((r) => setTimeout(r, 50));
}

// Exactly once, one order per channel, at the acked seq.
const checks = { lost: 0, duplicated: 0, reordered: 0, not_at_acked_seq: 0, epochs_per_channel: {} };
const examples = [];
for (const s of subs) {
  for (const p of pubs) {
    const got = s.got[p.ch];
    const ks = got.map((m) => m[2]);
    const have = new Set(ks);
    checks.duplicated += ks.length - have.size;
    for (const k of p.acked.keys()) {
      if (!have.has(k)) {
        checks.lost++;
        if (examples.length < 5) examples.push(`${s.name} lacks ${p.ch}-${k}`);
      }
    }
    const epochs = new Set(got.map((m) => m[0]));
    checks.epochs_per_channel[p.ch] = Math.max(checks.epochs_per_channel[p.ch] || 0, epochs.size);
    for (let i = 1; i < got.length; i++) {
      if (got[i][0] === got[i - 1][0] && got[i][1] <= got[i - 1][1]) {
        checks.reordered++;
        if (examples.length < 5) examples.push(`${s.name} ${p.ch}: seq ${got[i][1]} after ${got[i - 1][1]}`);
      }
    }
    for (const [, seq, k] of got) {
      if (p.acked.has(k) && p.acked.get(k) !== seq) checks.not_at_acked_seq++;
    }
  }
}

const all = [...subs, ...pubs];
const report = {
  published: pubs.reduce((a, p) => a + p.sent, 0),
  acked: pubs.reduce((a, p) => a + p.acked.size, 0),
  errors: all.flatMap((x) => x.errors.map((e) => ({ client: x.name, ...e }))),
  reconnects: Object.fromEntries(all.map((x) => [x.name, x.connects.length - 1])),
  closes: Object.fromEntries(all.map((x) => [x.name, x.closes.map((e) => e.code)])),
  timeline: Object.fromEntries(all.map((x) => [x.name, { connects: x.connects, closes: x.closes, wsErrors: x.wsErrors }])),
  nodes: Object.fromEntries(all.map((x) => [x.name, x.connects.map((e) => e.node)])),
  resumes: Object.fromEntries(subs.map((s) => [s.name, s.resumes])),
  max_ack_pause_ms: Object.fromEntries(pubs.map((p) => [p.ch, p.maxPause])),
  max_publish_latency_ms: Object.fromEntries(pubs.map((p) => [p.ch, p.maxLatency])),
  ...checks,
  examples,
};
say({ report });
for (const x of all) x.c.close();
process.exit(0);
