// The JS SDK's protocol features (issue 14, "SDK parity") as scenarios that
// run unchanged in Node.js (sdk-parity.test.mjs) and in headless Chromium
// (tests/browser/test_sdk_parity.mjs, which loads this file into a page on
// another origin than the broker's): idempotency keys, binary publish and
// delivery, subscription tokens, and the in-band token refresh. Each scenario
// gets `env` = {Chorus, url, secret, opts} and throws on failure; it imports
// nothing, so the page can load it as is. Tokens are minted here with WebCrypto
// (HS256), which both runtimes have.
//
// The broker they need: --jwt-secret env.secret --jwt-leeway 0, and the
// namespace "secret" with {"subscribe": "token"}.

function check(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${typeof msg === 'function' ? msg() : msg}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

function b64url(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** An HS256 JWT of `claims` (PROTOCOL.md 8.1). */
export async function mint(secret, claims) {
  const enc = new TextEncoder();
  const head = b64url(enc.encode(JSON.stringify({ alg: 'HS256', typ: 'JWT' })));
  const body = b64url(enc.encode(JSON.stringify(claims)));
  const key = await crypto.subtle.importKey('raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const sig = new Uint8Array(await crypto.subtle.sign('HMAC', key, enc.encode(`${head}.${body}`)));
  return `${head}.${body}.${b64url(sig)}`;
}

const nowSec = () => Math.floor(Date.now() / 1000);
let n = 0;
const uniq = (ns) => `${ns}:p${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}${++n}`;

function clientOf(env, extra = {}) {
  const c = new env.Chorus(env.url, { minReconnectDelay: 20, maxReconnectDelay: 200, requestTimeout: 4000, ...env.opts, ...extra });
  env.clients.push(c);
  return c;
}

const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');

export const scenarios = {
  async 'a publish repeated with the same key gets the same seq and is delivered once'(env) {
    const pub = clientOf(env);
    const sub = clientOf(env);
    await Promise.all([pub.connect(), sub.connect()]);
    const ch = uniq('key');
    const got = [];
    await sub.subscribe(ch, (data, msg) => got.push(msg));
    const first = await pub.publish(ch, { text: 'once' }, { key: 'order-77' });
    const again = await pub.publish(ch, { text: 'once' }, { key: 'order-77' });
    check(first === again, `a repeat with the key got seq ${again}, the first ${first}`);
    const other = await pub.publish(ch, { text: 'another' }, { key: 'order-78' });
    check(other === first + 1, `the next key got seq ${other} after ${first}`);
    await until(() => got.some((m) => m.seq === other), 'the marker message');
    check(got.length === 2, () => `the subscriber got ${got.length} messages: ${JSON.stringify(got.map((m) => m.data))}`);
    check(got[0].seq === first && got[0].data.text === 'once', 'the keyed message arrived once with its seq');
    let bad = null;
    await pub.publish(ch, 1, { key: '' }).catch((e) => (bad = e));
    check(bad && bad.code === 'bad_request', 'an empty key is refused by the SDK');
  },

  async 'binary publishes of every input type arrive as Uint8Array, in order, with keys, and in history'(env) {
    const pub = clientOf(env);
    const sub = clientOf(env);
    await Promise.all([pub.connect(), sub.connect()]);
    const ch = uniq('bin');
    const got = [];
    await sub.subscribe(ch, (data, msg) => got.push({ data, msg }));
    const all = Uint8Array.from({ length: 256 }, (_, i) => i); // every byte value, NUL and 0xff included
    const ints = new Int16Array([1, -2, 300]);
    const inputs = [
      ['ArrayBuffer', all.buffer.slice(0), all],
      ['Uint8Array', all.subarray(10, 20), all.subarray(10, 20)],
      ['Int16Array', ints, new Uint8Array(ints.buffer)],
      ['DataView', new DataView(all.buffer, 250, 6), all.subarray(250, 256)],
      ['Blob', new Blob([all.subarray(0, 3), new Uint8Array([0xfe, 0xff])]), new Uint8Array([0, 1, 2, 0xfe, 0xff])],
      ['empty Uint8Array', new Uint8Array(0), new Uint8Array(0)],
    ];
    const seqs = [];
    for (const [, input] of inputs) seqs.push(await pub.publish(ch, input));
    // A Blob is read asynchronously: a JSON publish made right after it must still come after it.
    const racing = [pub.publish(ch, new Blob([new Uint8Array([7, 7, 7])])), pub.publish(ch, { after: 'blob' })];
    const [blobSeq, jsonSeq] = await Promise.all(racing);
    check(jsonSeq === blobSeq + 1, `the JSON publish made after a Blob got seq ${jsonSeq}, the Blob ${blobSeq}`);
    // A binary publish with a key is published once too (the broker takes `key` in the binary header).
    const k1 = await pub.publish(ch, new Uint8Array([9]), { key: 'bin-key-1' });
    const k2 = await pub.publish(ch, new Uint8Array([9]), { key: 'bin-key-1' });
    check(k1 === k2, `a repeated keyed binary publish got seq ${k2}, the first ${k1}`);
    const total = inputs.length + 3;
    await until(() => got.length >= total, `${total} messages`);
    await sleep(50);
    check(got.length === total, `the subscriber got ${got.length} messages, expected ${total}`);
    inputs.forEach(([what, , bytes], i) => {
      const m = got[i];
      check(m.data instanceof Uint8Array, `${what}: delivered as ${Object.prototype.toString.call(m.data)}`);
      check(hex(m.data) === hex(bytes), `${what}: delivered ${hex(m.data)}, published ${hex(bytes)}`);
      check(m.msg.seq === seqs[i] && m.msg.ch === ch && m.msg.client === pub.clientId, `${what}: the header (${JSON.stringify({ ...m.msg, data: undefined })})`);
    });
    check(hex(got[inputs.length].data) === '070707', 'the racing Blob');
    check(got[inputs.length + 1].data.after === 'blob', 'the JSON publish after the Blob');
    check(hex(got[inputs.length + 2].data) === '09', 'the keyed binary message');
    const h = await sub.history(ch);
    const fromHistory = h.msgs.find((m) => m.seq === seqs[0]);
    check(fromHistory && fromHistory.data instanceof Uint8Array && hex(fromHistory.data) === hex(all), 'history gives a binary message its bytes in data');
    check(typeof fromHistory.bin === 'string', 'history keeps the broker\'s base64 bin');
    check(h.msgs.find((m) => m.seq === jsonSeq).data.after === 'blob', 'history keeps JSON messages as they were');
  },

  async 'a token namespace needs a subscription token, given as a string or fetched per (re)subscribe'(env) {
    const c = clientOf(env);
    await c.connect();
    const pub = clientOf(env);
    await pub.connect();
    const ch = uniq('secret');
    let refused = null;
    await c.subscribe(ch, () => {}).catch((e) => (refused = e));
    check(refused && refused.code === 'forbidden', `without a token: ${refused && refused.code}`);
    let wrong = null;
    const other = await mint(env.secret, { ch: `${ch}x`, exp: nowSec() + 60 });
    await c.subscribe(ch, () => {}, { token: other }).catch((e) => (wrong = e));
    check(wrong && wrong.code === 'forbidden', `with another channel's token: ${wrong && wrong.code}`);

    const got = [];
    const sub = await c.subscribe(ch, (d) => got.push(d), { token: await mint(env.secret, { ch, exp: nowSec() + 60 }) });
    check(sub.state === 'subscribed', 'a string token subscribes');
    await pub.publish(ch, 'one');
    await until(() => got.length === 1, 'the message of the token channel');

    // A callback is asked again for every resubscribe after a reconnect.
    const ch2 = uniq('secret');
    const asked = [];
    const got2 = [];
    await c.subscribe(ch2, (d) => got2.push(d), {
      token: async (channel) => {
        asked.push(channel);
        return mint(env.secret, { ch: channel, exp: nowSec() + 60 });
      },
    });
    check(asked.length === 1 && asked[0] === ch2, `the callback was asked for ${JSON.stringify(asked)}`);
    const before = c.clientId;
    const sub2 = c.getSubscription(ch2);
    const resubscribed = new Promise((resolve) => {
      // (the first ack's own `subscribed` may still be on its way: wait for the next one)
      const on = (ctx) => ctx.resubscribed && (sub2.off('subscribed', on), resolve(ctx));
      sub2.on('subscribed', on);
    });
    c._ws.close(4000, 'test: reconnect'); // drop the connection; the SDK reconnects
    const ctx = await resubscribed;
    check(ctx.resubscribed && c.clientId !== before, 'the subscription came back on a new connection');
    check(asked.length === 2, `the callback was asked ${asked.length} times`);
    await pub.publish(ch2, 'after the reconnect');
    await pub.publish(ch, 'two');
    await until(() => got2.length === 1 && got.length === 2, 'messages after the reconnect');
  },

  async 'getToken refreshes the token in band before exp: the connection outlives its first tokens'(env) {
    const lifetime = 3; // s; the broker runs with --jwt-leeway 0
    let minted = 0;
    const getToken = async () => {
      minted++;
      return mint(env.secret, { sub: 'refresher', exp: nowSec() + lifetime });
    };
    const c = clientOf(env, { getToken, tokenRefreshMargin: 1000 });
    const pub = clientOf(env);
    const drops = [];
    const tokens = [];
    c.on('disconnected', (ev) => drops.push(ev));
    c.on('token', (ev) => tokens.push(ev));
    await Promise.all([c.connect(), pub.connect()]);
    const firstExp = Date.now() + lifetime * 1000;
    const clientId = c.clientId;
    const ch = uniq('refresh');
    const got = [];
    await c.subscribe(ch, (d) => got.push(d));
    // Publish through two and a half lifetimes: well past the first token's exp.
    let sent = 0;
    while (Date.now() < firstExp + (lifetime * 1000 * 3) / 2) {
      await pub.publish(ch, ++sent);
      await sleep(150);
    }
    await until(() => got.length === sent, `all ${sent} messages`);
    check(drops.length === 0, () => `the connection dropped: ${JSON.stringify(drops)}`);
    check(c.state === 'connected' && c.clientId === clientId, 'the same connection all along');
    // (one more may be in flight as the loop ends)
    check(tokens.length >= 2 && minted - tokens.length >= 1 && minted - tokens.length <= 2, `${tokens.length} in-band refreshes, ${minted} tokens minted`);
    check(tokens.every((t, i) => t.user === 'refresher' && typeof t.exp === 'number' && (i === 0 || t.exp >= tokens[i - 1].exp)),
      () => `each refresh acked for the same user, with a later exp: ${JSON.stringify(tokens)}`);
    check(got.every((d, i) => d === i + 1), 'every message once, in order');

    // Without getToken the same token expires: the broker closes with 4001 and its reason.
    const fixed = clientOf(env, { token: await mint(env.secret, { sub: 'fixed', exp: nowSec() + 2 }) });
    const closed = new Promise((resolve) => fixed.once('disconnected', resolve));
    await fixed.connect();
    const ev = await closed;
    check(ev.code === 4001 && ev.reason === 'token expired' && ev.willReconnect, `an expiring token without refresh: ${JSON.stringify(ev)}`);
    fixed.close();

    // A reconnect asks getToken for a fresh token (the old one would be refused).
    const mintedBefore = minted;
    const back = new Promise((resolve) => c.once('connected', resolve));
    c._ws.close(4000, 'test: reconnect');
    await back;
    check(minted === mintedBefore + 1 && c.clientId !== clientId, `the reconnect minted ${minted - mintedBefore} token(s)`);
  },
};

/** Runs one scenario with a fresh set of clients, closing them whatever happens. */
export async function runScenario(name, env) {
  const e = { ...env, clients: [] };
  try {
    await scenarios[name](e);
  } finally {
    for (const c of e.clients) c.close();
  }
}
