/**
 * Chorus JavaScript SDK: a client for the Chorus pub/sub broker (wire protocol v1,
 * proto/PROTOCOL.md) that runs unchanged in browsers and in Node.js >= 20.
 *
 * One ES module, no runtime dependencies. The invariant it keeps: for every
 * channel it holds, it remembers the {epoch, seq} of the last message handed to
 * the application, resubscribes with `since` after every reconnect, and never
 * hands the application a message whose seq it has already delivered in that
 * epoch. So across reconnects a subscriber sees every message exactly once, or
 * is told (`recovered: false`) that it must refetch its state.
 *
 * @example
 *   import { Chorus } from '/sdk/chorus.js';
 *   const c = new Chorus('wss://chat.example.com/ws');
 *   c.connect();
 *   const sub = await c.subscribe('chat:lobby', (data, msg) => console.log(msg.seq, data));
 *   const seq = await c.publish('chat:lobby', { text: 'hi' });
 *
 * @module chorus
 */

/** Version of this SDK. */
export const VERSION = '0.1.0';

/** Wire protocol version this SDK speaks. */
export const PROTOCOL_VERSION = 1;

/**
 * WebSocket close codes the broker sends (PROTOCOL.md section 5) that an
 * application may want to tell apart in `disconnected` / `reconnecting` events.
 * @readonly
 * @enum {number}
 */
export const CloseCodes = Object.freeze({
  /** Normal close (also what `close()` reports). */
  NORMAL: 1000,
  /**
   * The node is shutting down; the SDK reconnects, resumes, and retries with
   * their keys the publishes the node did not answer before closing.
   */
  SHUTDOWN: 1001,
  /**
   * The connection was lost without a close frame (a dropped TCP connection,
   * a node that closed with data still unread). The SDK reconnects, resumes,
   * and retries with their keys the publishes that got no answer.
   */
  LOST: 1006,
  /** Authentication failed after the upgrade; get a new token. */
  AUTH: 4001,
  /** The connection could not keep up with its messages; the SDK reconnects and resumes. */
  SLOW_CONSUMER: 4008,
  /**
   * The application's backend disconnected this user (`POST /api/disconnect`,
   * with its reason). The SDK does not reconnect: `state` becomes `closed` and
   * `disconnected` reports `willReconnect: false`; call `connect()` to come back.
   */
  DISCONNECT: 4009,
  /**
   * The node is cut off from its cluster's majority and acknowledges nothing; the
   * SDK reconnects at once (ideally reaching another node behind a balancer),
   * resumes every subscription with `since` and retries the publishes that were
   * waiting for an ack, with their keys.
   */
  CUT_OFF: 4013,
});

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/**
 * Codes the SDK itself produces (the broker's codes, such as `bad_channel`,
 * `forbidden` or `unavailable`, are passed through unchanged from `err` replies).
 * @readonly
 * @enum {string}
 */
export const ErrorCodes = Object.freeze({
  /** No reply within `requestTimeout` (including time spent queued offline). */
  TIMEOUT: 'timeout',
  /** The connection dropped after the request was sent; its outcome is unknown. */
  DISCONNECTED: 'disconnected',
  /** `close()` was called while the request was pending or queued. */
  CLOSED: 'closed',
  /** The offline queue already holds `maxOfflineQueue` requests. */
  QUEUE_FULL: 'queue_full',
  /** `subscribe()` on a channel this client already holds. */
  ALREADY_SUBSCRIBED: 'already_subscribed',
  /** The server sent something this SDK cannot understand. */
  PROTOCOL: 'protocol_error',
  /** `getToken` or a subscription token callback gave no token (threw a non-Error, or returned nothing). */
  TOKEN: 'token_error',
  /** The client is connected over SSE (the `transports` fallback), which only receives. */
  RECEIVE_ONLY: 'receive_only',
});

/**
 * An error with a stable string `code`. For errors reported by the broker,
 * `code` is the `code` of the `err` frame and `reply` holds that frame.
 */
export class ChorusError extends Error {
  /**
   * @param {string} code  stable machine-readable code
   * @param {string} message  human-readable text
   * @param {object} [reply]  the server's `err` frame, when there was one
   */
  constructor(code, message, reply) {
    super(message);
    this.name = 'ChorusError';
    /** @type {string} */
    this.code = code;
    /** @type {object|undefined} */
    this.reply = reply;
  }
}

/* ------------------------------------------------------------------------ */
/* A minimal event emitter (no dependency on Node's events module)          */
/* ------------------------------------------------------------------------ */

class Emitter {
  constructor() {
    /** @type {Map<string, Array<Function & {_orig?: Function}>>} */
    this._listeners = new Map();
  }

  /**
   * Adds a listener.
   * @param {string} event
   * @param {Function} fn
   * @returns {this}
   */
  on(event, fn) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    const list = this._listeners.get(event);
    if (list) list.push(fn);
    else this._listeners.set(event, [fn]);
    return this;
  }

  /**
   * Removes a listener added with on() or once(); without `fn`, removes all
   * listeners of `event`.
   * @param {string} event
   * @param {Function} [fn]
   * @returns {this}
   */
  off(event, fn) {
    const list = this._listeners.get(event);
    if (!list) return this;
    if (fn === undefined) {
      this._listeners.delete(event);
      return this;
    }
    const i = list.findIndex((l) => l === fn || l._orig === fn);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this._listeners.delete(event);
    return this;
  }

  /**
   * Adds a listener that is removed after its first call.
   * @param {string} event
   * @param {Function} fn
   * @returns {this}
   */
  once(event, fn) {
    const wrapper = (...args) => {
      this.off(event, wrapper);
      fn.apply(this, args);
    };
    wrapper._orig = fn;
    return this.on(event, wrapper);
  }

  /** @returns {number} */
  listenerCount(event) {
    const list = this._listeners.get(event);
    return list ? list.length : 0;
  }

  /**
   * Calls every listener; a listener that throws does not stop the others,
   * and its exception is reported through `_listenerError`.
   * @returns {boolean} whether there was a listener
   */
  emit(event, ...args) {
    const list = this._listeners.get(event);
    if (!list || list.length === 0) return false;
    for (const fn of list.slice()) {
      try {
        fn.apply(this, args);
      } catch (e) {
        this._listenerError(e, event);
      }
    }
    return true;
  }

  _listenerError(e, event) {
    if (event !== 'error' && this.listenerCount('error') > 0) this.emit('error', e);
    else reportUncaught(e);
  }
}

function reportUncaught(e) {
  // Never let an application callback break the SDK's state machine, but do not
  // hide the bug either.
  if (typeof console !== 'undefined' && console.error) console.error('chorus: uncaught error in listener:', e);
}

/* ------------------------------------------------------------------------ */
/* Subscription                                                             */
/* ------------------------------------------------------------------------ */

/**
 * A channel held by a {@link Chorus} client. Created by `Chorus#subscribe`;
 * one per channel per client.
 *
 * Events:
 * - `message` (data, msg): a new message (also passed to the handler given to subscribe()).
 *   For a binary message (PROTOCOL.md 9) `data` is a `Uint8Array` of its payload.
 * - `subscribed` (ctx): after every ack, the first and each one after a reconnect.
 *   `ctx = {channel, epoch, seq, resubscribed, wasRecovering, recovered, byServer}`;
 *   `byServer` is true when the server subscribed the connection (`subscribed` op).
 * - `unrecovered` (ctx): a resume with `since` failed (`recovered: false`): messages
 *   may have been missed; the application should refetch its state (e.g. `history()`).
 * - `epoch` (ev): the channel's epoch changed while subscribed (`{channel, epoch, seq}`).
 * - `gap` (ev): messages `from`..`to` of the channel are missing and will not be
 *   delivered (`{channel, epoch, from, to, source}`); the application should refetch.
 *   `source: 'broker'`: the broker's `gap` event (in a cluster, messages lost between
 *   nodes that could not be repaired); `source: 'sdk'`: a message arrived whose seq
 *   skipped ahead without one (never with a conforming broker; also carries
 *   `expected` = from and `got` = to + 1).
 * - `join` / `leave` (frame): a member arrived in / left the channel (namespaces with
 *   presence only; `frame = {op, ch, user?, info?, client?}`).
 * - `error` (err): the broker refused a resubscribe (or a subscription token callback
 *   failed); the subscription is then dropped.
 * - `unsubscribed` ({channel, byServer, reason?}): the subscription ended; `byServer`
 *   with the server's `reason` when the server ended it (`unsubscribed` op).
 *
 * Timing of the first ack: `subscribe()` resolves first, and the first ack's
 * `subscribed` (and `unrecovered`) are emitted afterwards, in a later task
 * (`setTimeout(0)`), so listeners attached right after `await c.subscribe(...)`
 * receive them. Its outcome is also available at once as `sub.lastAck` /
 * `sub.recovered`. Acks after a reconnect emit their events immediately.
 */
export class Subscription extends Emitter {
  /** @internal */
  constructor(client, channel) {
    super();
    this._client = client;
    /** The channel name. @type {string} */
    this.channel = channel;
    /**
     * `subscribing` until the first ack, then `subscribed`; `unsubscribed` once ended.
     * While the client is offline a subscribed channel stays `subscribed` and is
     * resumed automatically.
     * @type {'subscribing'|'subscribed'|'unsubscribed'}
     */
    this.state = 'subscribing';
    /** Epoch of the last position seen, or null before the first ack. @type {string|null} */
    this.epoch = null;
    /** Seq of the last message delivered (or the ack position). @type {number} */
    this.seq = 0;
    this._live = false; // acked on the current connection
    this._reqId = 0; // id of the sub request in flight on this connection
    this._token = null; // subscription token: a string or a (channel) => token callback
    this._everAcked = false;
    this._pending = null; // {resolve, reject, timer} of the initial subscribe()
    this._deferred = null; // events of the first ack, emitted after subscribe() resolved
    this._deferTimer = null;
    /**
     * What the last ack said (the object passed to `subscribed`), or null before the
     * first ack: `{channel, epoch, seq, resubscribed, wasRecovering, recovered}`.
     * Set before `subscribe()` resolves.
     * @type {{channel: string, epoch: string, seq: number, resubscribed: boolean, wasRecovering: boolean, recovered: boolean|undefined}|null}
     */
    this.lastAck = null;
  }

  /**
   * Outcome of the last ack's resume: `true` when every message after `since` is
   * being delivered, `false` when they could not be (refetch your state),
   * `undefined` before the first ack and when the ack's `sub` carried no `since`.
   * After `await c.subscribe(ch, fn, {since})`, `sub.recovered === false` means
   * the stored position could not be resumed.
   * @returns {boolean|undefined}
   */
  get recovered() {
    return this.lastAck ? this.lastAck.recovered : undefined;
  }

  /**
   * The position to resume from, or null when none is known yet.
   * @returns {{epoch: string, seq: number}|null}
   */
  get position() {
    return this.epoch === null ? null : { epoch: this.epoch, seq: this.seq };
  }

  /**
   * Stops the subscription. No message is delivered to its handlers after this
   * call. Resolves once the broker acknowledged it (or at once when offline);
   * it never rejects.
   * @returns {Promise<void>}
   */
  unsubscribe() {
    return this._client._unsubscribe(this);
  }

  /**
   * History of this channel; see `Chorus#history`.
   * @param {HistoryOptions} [opts]
   */
  history(opts) {
    return this._client.history(this.channel, opts);
  }

  /** Publishes to this channel; see `Chorus#publish`. */
  publish(data, opts) {
    return this._client.publish(this.channel, data, opts);
  }

  /** Presence of this channel (`{count, members}`); see `Chorus#presence`. */
  presence() {
    return this._client.presence(this.channel);
  }

  _listenerError(e, event) {
    if (event !== 'error' && this.listenerCount('error') > 0) this.emit('error', e);
    else this._client._listenerError(e, event);
  }

  /** Holds the first ack's events until the current task (and its microtasks) is over. */
  _defer(events) {
    this._flushDeferred();
    this._deferred = events;
    this._deferTimer = setTimeout(() => this._flushDeferred(), 0);
  }

  /**
   * Emits the held first-ack events now. Called by their timer, and before any
   * later event of the subscription other than `message`, so that the events
   * of a subscription keep their order (`subscribed` before `epoch`, `gap`,
   * `join`, a resubscribe's `subscribed`, `unsubscribed`, `error`).
   */
  _flushDeferred() {
    const events = this._deferred;
    if (!events) return;
    this._deferred = null;
    clearTimeout(this._deferTimer);
    this._deferTimer = null;
    for (const [event, arg] of events) this.emit(event, arg);
  }
}

/* ------------------------------------------------------------------------ */
/* Client                                                                   */
/* ------------------------------------------------------------------------ */

const DEFAULTS = {
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  pingInterval: 25000,
  pingTimeout: 10000,
  requestTimeout: 10000,
  connectTimeout: 10000,
  maxOfflineQueue: 100,
  tokenRefreshMargin: 5000,
};

/** Retrying publishes answered `unavailable` (see ChorusOptions.publishRetry). */
const PUBLISH_RETRY_DEFAULTS = Object.freeze({ deadlineMs: 10000, minDelayMs: 100, maxDelayMs: 2000 });

/** PROTOCOL.md 2.3: an idempotency key is a string of 1-64 bytes (UTF-8), without NUL. */
const KEY_MAX_BYTES = 64;
const KEY_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * A fresh idempotency key: 22 url-safe characters (132 random bits), so two
 * publishes of one channel never share one by chance.
 */
function newPublishKey() {
  const bytes = new Uint8Array(22);
  const c = globalThis.crypto;
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  let key = '';
  for (const b of bytes) key += KEY_ALPHABET[b & 63];
  return key;
}

function validKey(key) {
  if (typeof key !== 'string' || key.length === 0 || key.includes('\0')) return false;
  // A lone surrogate has no UTF-8 form: the broker would refuse the whole frame.
  if (typeof key.isWellFormed === 'function' && !key.isWellFormed()) return false;
  return new TextEncoder().encode(key).length <= KEY_MAX_BYTES;
}

/** The publishRetry option with defaults filled in, or null when retrying is off. */
function publishRetryOptions(opt) {
  if (opt === false || opt === null) return null;
  const o = { ...PUBLISH_RETRY_DEFAULTS, ...(typeof opt === 'object' ? opt : {}) };
  if (!(o.deadlineMs > 0)) return null;
  o.minDelayMs = Math.max(1, Number(o.minDelayMs) || PUBLISH_RETRY_DEFAULTS.minDelayMs);
  o.maxDelayMs = Math.max(o.minDelayMs, Number(o.maxDelayMs) || PUBLISH_RETRY_DEFAULTS.maxDelayMs);
  return o;
}

const WS_OPEN = 1;

/** PROTOCOL.md 9: a binary frame starts with a 4-byte big-endian header length. */
const BIN_HEADER_MAX = 1024;

/** Whether `data` is published as a binary message (PROTOCOL.md 9) rather than JSON. */
function isBinaryData(data) {
  return data instanceof ArrayBuffer || ArrayBuffer.isView(data) || isBlob(data);
}

function isBlob(data) {
  return typeof Blob !== 'undefined' && data instanceof Blob;
}

/** The bytes of an ArrayBuffer or of any view (Uint8Array, other typed arrays, DataView). */
function bytesOf(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** [H][header JSON][payload]: one binary WebSocket frame. */
function encodeBinary(header, payload) {
  const head = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(4 + head.length + payload.length);
  new DataView(out.buffer).setUint32(0, head.length);
  out.set(head, 4);
  out.set(payload, 4 + head.length);
  return out;
}

/**
 * A server's binary frame as a `msg` object whose `data` is the payload
 * (a Uint8Array over a copy of its bytes), or null when it is malformed.
 */
function decodeBinary(raw) {
  const bytes = raw instanceof ArrayBuffer ? new Uint8Array(raw) : ArrayBuffer.isView(raw) ? bytesOf(raw) : null;
  if (!bytes || bytes.length < 4) return null;
  const hl = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0);
  if (hl === 0 || hl > bytes.length - 4) return null;
  let m;
  try {
    m = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(4, 4 + hl)));
  } catch (_) {
    return null;
  }
  if (!m || typeof m !== 'object' || Array.isArray(m)) return null;
  // A copy: the payload must not keep the frame's buffer (header included) alive,
  // and Node's `ws` may hand out views of a shared pool.
  m.data = bytes.slice(4 + hl);
  return m;
}

/** A history entry of a binary message (`bin`, base64) gets its bytes as `data`. */
function decodeHistoryMsg(m) {
  if (m && typeof m === 'object' && typeof m.bin === 'string' && !('data' in m)) {
    try {
      const text = atob(m.bin);
      const bytes = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
      m.data = bytes;
    } catch (_) {
      /* left as it came */
    }
  }
  return m;
}

/**
 * The `exp` claim (seconds since the Unix epoch) of a JWT, read without
 * verifying it (the SDK only needs to know when to refresh), or null.
 */
export function tokenExpiry(token) {
  if (typeof token !== 'string') return null;
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const text = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(text, (ch) => ch.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp : null;
  } catch (_) {
    return null;
  }
}

/**
 * When to refresh a token that expires in `remainingMs`: at 85% of what is
 * left, or `marginMs` before `exp` when that is sooner; halfway for a token
 * that lives less than two margins (never a refresh loop with no delay).
 */
function refreshDelay(remainingMs, marginMs) {
  if (remainingMs < 2 * marginMs) return Math.max(0, remainingMs / 2);
  return Math.min(remainingMs * 0.85, remainingMs - marginMs);
}

/**
 * @typedef {object} ChorusOptions
 * @property {string|(() => string|Promise<string>)} [token] connection token (a JWT,
 *   PROTOCOL.md 8.1), sent as the `token` query parameter of the WebSocket URL (a
 *   function is called before every connection attempt). With `getToken` too, a string
 *   `token` is used for the first connection only.
 * @property {() => string|Promise<string>} [getToken] returns a fresh connection token.
 *   Called before every connection attempt, and before the current token's `exp` (read
 *   from the JWT without verifying it): at 85% of its remaining lifetime, or
 *   `tokenRefreshMargin` before `exp` when that is sooner (halfway for a token living
 *   less than two margins). The new token is sent in band
 *   with the `auth` op (PROTOCOL.md 2.8), so the connection, its subscriptions and its
 *   queued requests carry on untouched. A failed refresh emits `error` and is retried
 *   until `exp`; past it the broker closes the connection with 4001 and the SDK
 *   reconnects with a token from `getToken`. The new token must have the same `sub`.
 * @property {number} [tokenRefreshMargin=5000] ms before `exp` by which a refreshed token
 *   must be in place (short-lived tokens).
 * @property {Function} [WebSocket] WebSocket constructor; defaults to `globalThis.WebSocket`
 *   (in Node.js 20 pass `WebSocket` from the `ws` package).
 * @property {string|string[]} [protocols] WebSocket sub-protocols to offer (e.g. `'chorus.v1'`); none by default.
 * @property {Array<'websocket'|'sse'>} [transports] how to reach the broker, in order of preference
 *   (default `['websocket']`). With `['websocket', 'sse']` a WebSocket that cannot open (a proxy
 *   that strips the upgrade) is followed by an attempt over Server-Sent Events (`GET /sse`,
 *   PROTOCOL.md 10), and each later reconnect tries the WebSocket first again. Over SSE the
 *   client only receives: subscriptions, resume and `unsubscribe` work (a new channel reopens
 *   the stream), while `publish`, `history`, `presence` and token refresh reject with
 *   `receive_only` (publish from your backend with `POST /api/publish`). `client.transport`
 *   says which one is in use.
 * @property {Function} [EventSource] EventSource constructor for the SSE transport; defaults
 *   to `globalThis.EventSource`.
 * @property {number} [minReconnectDelay=500] ms; base of the exponential backoff.
 * @property {number} [maxReconnectDelay=20000] ms; cap of the backoff.
 * @property {number} [pingInterval=25000] ms between application pings; 0 disables them.
 * @property {number} [pingTimeout=10000] ms to wait for a pong before the connection is
 *   declared dead and replaced.
 * @property {number} [requestTimeout=10000] ms a request (publish, history, presence, ping,
 *   subscribe) may take from the call to the reply, including time queued while offline.
 * @property {number} [connectTimeout=10000] ms from opening a socket to the server's `hello`.
 * @property {number} [maxOfflineQueue=100] requests held while offline; more are rejected
 *   with code `queue_full`.
 * @property {PublishRetryOptions|false} [publishRetry] how a publish answered `unavailable`
 *   (a cluster node that cannot make it durable now) is retried: with the same idempotency
 *   key, after a jittered exponential delay, until `deadlineMs` after the call; then it
 *   rejects with `unavailable`. On by default (`{deadlineMs: 10000}`); `false` turns it
 *   off, and publishes then carry only the keys the caller gives.
 */

/**
 * @typedef {object} PublishRetryOptions
 * @property {number} [deadlineMs=10000] no retry starts later than this after the
 *   `publish()` call (each attempt still waits up to `requestTimeout` for its reply);
 *   0 turns retrying off.
 * @property {number} [minDelayMs=100] ms before the first retry; it doubles per retry.
 * @property {number} [maxDelayMs=2000] cap of the delay. Each delay is uniform in [d/2, d].
 */

/**
 * @typedef {object} PublishOptions
 * @property {string} [key] idempotency key (1-64 bytes, PROTOCOL.md 2.3): a publish
 *   with a key already used in the channel's current epoch is not published again, and
 *   resolves with the first one's seq. Without it the SDK makes one (when `publishRetry`
 *   is on), so its own retries never duplicate a message.
 */

/**
 * @typedef {object} SubscribeOptions
 * @property {{epoch: string, seq: number}} [since] resume from a stored position (messages
 *   after it are delivered first if still in the broker's history).
 * @property {string|((channel: string) => string|Promise<string>)} [token] subscription
 *   token (PROTOCOL.md 8.3: a JWT with `ch` equal to the channel), for namespaces with
 *   `subscribe: "token"`. A function is called for every (re)subscribe, so resubscribing
 *   after a reconnect gets a fresh one; the `sub` is then sent once it resolves.
 */

/**
 * @typedef {object} HistoryOptions
 * @property {number} [limit] newest N messages (the server caps it at the namespace's history size).
 * @property {{epoch: string, seq: number}} [since] only messages after this position.
 */

/**
 * A Chorus client: one logical session made of successive WebSocket connections.
 *
 * The client does not connect by itself: call `connect()`. Calls made before
 * that, or while reconnecting, wait for the connection (subscriptions without
 * limit, requests within `requestTimeout` and `maxOfflineQueue`).
 *
 * Events (`on`/`off`/`once`):
 * - `connecting` ({url, attempt})
 * - `connected` ({client, node, v}): the server's `hello` arrived; subscriptions are
 *   being restored and queued requests flushed.
 * - `disconnected` ({code, reason, willReconnect}): a connected session ended, with the
 *   server's close code and reason (PROTOCOL.md 5). `code` 4013 (`CloseCodes.CUT_OFF`): the
 *   node lost its cluster's majority; the client reconnects at once (small jitter) and
 *   resumes. `code` 4009 (`CloseCodes.DISCONNECT`): the backend disconnected the user; the
 *   client does not reconnect (`willReconnect: false`, state `closed`).
 * - `subscribed` (ctx): an ack of any subscription, or the server subscribed this
 *   connection (`byServer: true`); `ctx` is the Subscription's `subscribed` argument plus
 *   `subscription`. Emitted at once, before `subscribe()` resolves.
 * - `unsubscribed` ({channel, byServer, reason?}): a subscription ended, by
 *   `unsubscribe()`, a refused resubscribe, or the server (`byServer: true`, its `reason`).
 * - `token` ({user, exp}): a token from `getToken` was accepted in band (`auth`).
 * - `reconnecting` ({attempt, delay, code, reason}): the next attempt is scheduled in `delay` ms.
 * - `epoch` ({channel, epoch, seq}): a subscribed channel's epoch changed.
 * - `gap` ({channel, epoch, from, to, source}): messages of a subscribed channel are
 *   missing and will not be delivered (see the Subscription's `gap`).
 * - `join` / `leave` (frame): presence events (see the Subscription's `join` / `leave`).
 * - `message` (msg): every `msg` frame delivered to a subscription.
 * - `error` (err): a protocol problem, an `err` without id, or an exception thrown by a listener.
 * - `state` (state, previous)
 */
export class Chorus extends Emitter {
  /**
   * @param {string} [url] `ws://` or `wss://` URL of the broker's `/ws` endpoint. In a
   *   browser it defaults to `ws(s)://<location.host>/ws`.
   * @param {ChorusOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    if (url && typeof url === 'object' && options && Object.keys(options).length === 0) {
      options = url;
      url = undefined;
    }
    if (!url) url = defaultUrl();
    if (!url) throw new TypeError('Chorus: a ws:// or wss:// URL is required');
    /** The endpoint URL. @type {string} */
    this.url = String(url);
    this._opts = { ...DEFAULTS, ...options };
    /** @type {any} */
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError(
        "Chorus: no WebSocket implementation; pass one: new Chorus(url, {WebSocket: (await import('ws')).WebSocket})"
      );
    }
    /** @type {'disconnected'|'connecting'|'connected'|'closed'} */
    this.state = 'disconnected';
    /** Connection id given by the server's hello (changes on every reconnect). @type {string|null} */
    this.clientId = null;
    /** Node id given by the server's hello. @type {string|null} */
    this.nodeId = null;
    /** The transport of the current or last connection. @type {'websocket'|'sse'} */
    this.transport = 'websocket';
    this._EventSource = options.EventSource || globalThis.EventSource;
    /** The next attempt goes over SSE: the last WebSocket could not open. */
    this._sseNext = false;

    this._ws = null;
    this._nextId = 1;
    /** @type {Map<number, object>} requests sent and awaiting a reply, by id */
    this._inflight = new Map();
    /** @type {Array<object>} requests waiting for a connection */
    this._queue = [];
    /** @type {Map<string, Subscription>} */
    this._subs = new Map();
    this._attempt = 0;
    this._reconnectTimer = null;
    this._connectTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._wantConnected = false;
    this._openGen = 0;
    this._connectWaiters = [];
    this._retry = publishRetryOptions(this._opts.publishRetry);
    /** @type {Set<object>} publishes waiting for their next attempt (answered `unavailable`) */
    this._retrying = new Set();
    /** @type {Promise<void>|null} set while a Blob publish is being read (publish order) */
    this._blobGate = null;
    /** The token the current connection presented (or last refreshed), if any. */
    this._token = null;
    this._refreshTimer = null;
    this._usedStaticToken = false;
  }

  /* ---------------------------------------------------------------- */
  /* Lifecycle                                                        */
  /* ---------------------------------------------------------------- */

  /**
   * Starts connecting (and keeps reconnecting until `close()`). Resolves at the
   * next `connected`, at once if already connected; rejects with code `closed`
   * if `close()` is called first. It is safe not to await it.
   * @returns {Promise<void>}
   */
  connect() {
    const p = this.ready();
    if (this.state === 'closed' || this.state === 'disconnected') {
      this._wantConnected = true;
      this._attempt = 0;
      if (!this._reconnectTimer) this._open();
    }
    return p;
  }

  /**
   * Resolves at the next `connected` (at once if connected); rejects with code
   * `closed` if `close()` is called first, or `timeout` after `timeoutMs`.
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  ready(timeoutMs) {
    if (this.state === 'connected') return Promise.resolve();
    const p = new Promise((resolve, reject) => {
      const w = { resolve, reject, timer: null };
      if (timeoutMs > 0) {
        w.timer = setTimeout(() => {
          this._connectWaiters = this._connectWaiters.filter((x) => x !== w);
          reject(new ChorusError(ErrorCodes.TIMEOUT, `not connected within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this._connectWaiters.push(w);
    });
    p.catch(() => {}); // callers may ignore it without an unhandled rejection
    return p;
  }

  /**
   * Closes the connection and stops reconnecting. Pending and queued requests
   * reject with code `closed`; subscriptions that were acknowledged are kept
   * and resumed (with `since`) if `connect()` is called again.
   */
  close() {
    this._wantConnected = false;
    this._openGen++;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    const ws = this._ws;
    const wasConnected = this.state === 'connected';
    this._teardownSocket();
    if (ws) {
      try {
        ws.close(1000);
      } catch (_) {
        /* already closing */
      }
    }
    this._closeAll(1000, 'client closed', wasConnected);
  }

  /** Ends the session: settles everything pending, keeps acked subscriptions for a later connect(). */
  _closeAll(code, reason, wasConnected = true) {
    this._setState('closed');
    const err = () => new ChorusError(ErrorCodes.CLOSED, code === 1000 ? 'client closed' : `closed by the server (${code}${reason ? ' ' + reason : ''})`);
    this._failInflight(
      code === 1000 ? err : () => new ChorusError(ErrorCodes.DISCONNECTED, `connection closed by the server (${code}${reason ? ' ' + reason : ''}); the outcome of the request is unknown`)
    );
    for (const r of this._queue.splice(0)) this._settle(r, err());
    for (const r of [...this._retrying]) {
      this._retrying.delete(r);
      clearTimeout(r.retryTimer);
      this._settle(r, err());
    }
    for (const sub of [...this._subs.values()]) {
      if (!sub._everAcked) this._dropSub(sub, err());
    }
    for (const w of this._connectWaiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err());
    }
    if (wasConnected) this.emit('disconnected', { code, reason, willReconnect: false });
  }

  /* ---------------------------------------------------------------- */
  /* Public requests                                                  */
  /* ---------------------------------------------------------------- */

  /**
   * Subscribes to a channel. Resolves with the {@link Subscription} once the
   * broker acknowledged it; rejects with the broker's code (`bad_channel`,
   * `forbidden`, `limit_reached`, ...), with `already_subscribed`, or with
   * `timeout` when no ack came within `requestTimeout` of the call.
   *
   * The first ack's `subscribed` event (and `unrecovered`, when a resume with
   * `since` was refused) is emitted after the promise resolved, in a later task,
   * so listeners attached right after `await c.subscribe(...)` (or before the ack,
   * through `getSubscription()`) receive it exactly once. The same outcome is on
   * the resolved subscription at once: `sub.lastAck`, `sub.recovered`. Messages are
   * not held back: the handler may get the messages that follow the ack (such as
   * the replay of a resume) before that event.
   *
   * @param {string} channel
   * @param {(data: any, msg: object) => void} [onMessage] called for each message with its
   *   `data` and the whole `msg` frame (`{op, ch, seq, ts, client, data}`).
   * @param {SubscribeOptions} [opts]
   * @returns {Promise<Subscription>}
   */
  subscribe(channel, onMessage, opts = {}) {
    if (onMessage && typeof onMessage === 'object') {
      opts = onMessage;
      onMessage = undefined;
    }
    if (this._subs.has(channel)) {
      return Promise.reject(new ChorusError(ErrorCodes.ALREADY_SUBSCRIBED, `already subscribed to '${channel}'`));
    }
    const sub = new Subscription(this, channel);
    if (opts.token !== undefined && opts.token !== null) sub._token = opts.token;
    if (onMessage) sub.on('message', onMessage);
    if (opts.since && typeof opts.since.epoch === 'string') {
      sub.epoch = opts.since.epoch;
      sub.seq = Number(opts.since.seq) || 0;
    }
    this._subs.set(channel, sub);
    const p = new Promise((resolve, reject) => {
      sub._pending = { resolve, reject, timer: null };
      sub._pending.timer = setTimeout(() => {
        const sent = sub._reqId !== 0 && this.state === 'connected';
        this._dropSub(sub, new ChorusError(ErrorCodes.TIMEOUT, `subscribe '${channel}': no ack within ${this._opts.requestTimeout} ms`));
        if (sent) this._sendUnsub(sub.channel, () => {});
      }, this._opts.requestTimeout);
    });
    if (this.state === 'connected') this._sendSub(sub);
    return p;
  }

  /**
   * Publishes `data` to a channel: any JSON value, or bytes (an `ArrayBuffer`, a
   * `Uint8Array` or other typed array / `DataView`, or a `Blob`), which go as a
   * binary message (PROTOCOL.md 9) and reach subscribers as a `Uint8Array`.
   * Resolves with the seq the
   * broker gave the message (for a key the broker had seen, the first publish's
   * seq: the message was published once). Rejects with the broker's code
   * (`bad_channel`, `forbidden`, `too_large`, `unavailable` once retries are
   * exhausted, ...), with `bad_request` for a malformed key, or with
   * `queue_full`, `timeout`, `disconnected` (sent, but the connection dropped
   * before the ack: it may or may not have been published) or `closed`.
   *
   * While offline the publish is queued (at most `maxOfflineQueue`) and sent
   * after the next `connected`. Every publish carries an idempotency key (the
   * caller's, or one the SDK makes) that it keeps through retries and
   * reconnects; an `unavailable` answer is retried with it (`publishRetry`).
   * Publishes go out in the order of the calls, a `Blob` (read asynchronously)
   * included.
   *
   * @param {string} channel
   * @param {any} data
   * @param {PublishOptions} [opts]
   * @returns {Promise<number>}
   */
  publish(channel, data, opts = {}) {
    const binary = isBinaryData(data);
    const frame = binary ? { op: 'pub', ch: channel } : { op: 'pub', ch: channel, data };
    const key = opts ? opts.key : undefined;
    if (key !== undefined && key !== null) {
      if (!validKey(key)) {
        return Promise.reject(new ChorusError('bad_request', 'a publish key must be a string of 1-64 bytes without NUL'));
      }
      frame.key = key;
    } else if (this._retry) {
      frame.key = newPublishKey();
    }
    const seqOf = (reply) => reply.seq;
    if (!binary) {
      if (!this._blobGate) return this._request(frame, seqOf);
    } else if (!isBlob(data) && !this._blobGate) {
      return this._request(frame, seqOf, bytesOf(data).slice());
    }
    // A Blob is read asynchronously; publishes made meanwhile wait behind it so
    // that they still reach the broker in the order of the calls.
    const bytes = binary ? (isBlob(data) ? data.arrayBuffer().then((b) => new Uint8Array(b)) : bytesOf(data).slice()) : undefined;
    const before = this._blobGate || Promise.resolve();
    let open;
    const gate = new Promise((resolve) => (open = resolve));
    this._blobGate = gate;
    const release = () => {
      if (this._blobGate === gate) this._blobGate = null;
      open();
    };
    return before
      .then(() => bytes)
      .then(
        (payload) => {
          const p = this._request(frame, seqOf, payload);
          release();
          return p;
        },
        (e) => {
          release();
          throw e;
        }
      );
  }

  /**
   * Fetches the newest messages kept for a channel, oldest first. Subscribing is
   * not required. A binary message comes with its payload base64-encoded in `bin`
   * (PROTOCOL.md 9); the SDK also puts its bytes in `data`, as a `Uint8Array`.
   * @param {string} channel
   * @param {HistoryOptions} [opts]
   * @returns {Promise<{ch: string, epoch: string, seq: number, msgs: Array<object>}>}
   */
  history(channel, opts = {}) {
    const frame = { op: 'history', ch: channel };
    if (opts.limit !== undefined) frame.limit = opts.limit;
    if (opts.since) frame.since = { epoch: opts.since.epoch, seq: opts.since.seq };
    return this._request(frame, (r) => ({ ch: r.ch, epoch: r.epoch, seq: r.seq, msgs: Array.isArray(r.msgs) ? r.msgs.map(decodeHistoryMsg) : [] }));
  }

  /**
   * Who is in a channel (namespaces with presence only; elsewhere rejects with
   * `forbidden`). Resolves with `{count, members}`: `count` is the number of
   * members; `members` lists them, users once each (with their token's `info`)
   * and anonymous connections by client id, and is `undefined` when the channel
   * has more members than the namespace's `presence_max_members` (the broker
   * then sends only the count). In a cluster, presence is cluster-wide.
   * @param {string} channel
   * @returns {Promise<{count: number, members: Array<{user?: string, info?: any, client?: string}>|undefined}>}
   */
  presence(channel) {
    return this._request({ op: 'presence', ch: channel }, (r) => {
      const members = Array.isArray(r.members) ? r.members : undefined;
      const count = typeof r.count === 'number' ? r.count : members ? members.length : 0;
      return { count, members };
    });
  }

  /**
   * Application-level round trip. Resolves with the round-trip time in ms.
   * @returns {Promise<number>}
   */
  ping() {
    const t0 = now();
    return this._request({ op: 'ping' }, () => now() - t0);
  }

  /**
   * The subscription of a channel, if held.
   * @param {string} channel
   * @returns {Subscription|undefined}
   */
  getSubscription(channel) {
    return this._subs.get(channel);
  }

  /** All subscriptions held. @returns {Subscription[]} */
  subscriptions() {
    return [...this._subs.values()];
  }

  /* ---------------------------------------------------------------- */
  /* Internals: requests                                              */
  /* ---------------------------------------------------------------- */

  _request(frame, mapReply, bin) {
    if (this.state === 'closed' && !this._wantConnected) {
      return Promise.reject(new ChorusError(ErrorCodes.CLOSED, 'client closed'));
    }
    return new Promise((resolve, reject) => {
      const r = { id: this._nextId++, frame, bin, mapReply, resolve, reject, timer: null, sent: false, start: now(), attempts: 1, retryTimer: null };
      frame.id = r.id;
      if (this.state !== 'connected') {
        if (this._queue.length >= this._opts.maxOfflineQueue) {
          reject(new ChorusError(ErrorCodes.QUEUE_FULL, `offline queue full (${this._opts.maxOfflineQueue} requests); '${frame.op}' rejected`));
          return;
        }
        this._queue.push(r);
      }
      this._armTimeout(r);
      if (this.state === 'connected') this._sendRequest(r);
    });
  }

  /** Bounds the wait for the reply (of this attempt, for a retried publish). */
  _armTimeout(r) {
    clearTimeout(r.timer);
    r.timer = setTimeout(() => {
      if (r.sent) this._inflight.delete(r.id);
      else this._queue = this._queue.filter((x) => x !== r);
      r.reject(new ChorusError(ErrorCodes.TIMEOUT, `'${r.frame.op}' got no reply within ${this._opts.requestTimeout} ms${r.sent ? '' : ' (still waiting for a connection)'}`));
    }, this._opts.requestTimeout);
  }

  /**
   * Schedules another attempt of a publish that was answered `unavailable` (or
   * was in flight on a connection closed with 4013), with the same key, after a
   * jittered exponential delay. Returns false when retrying is off or the next
   * attempt would start after the deadline: the caller then settles it.
   */
  _retryPublish(r) {
    const pr = this._retry;
    if (!pr || r.frame.op !== 'pub' || typeof r.frame.key !== 'string') return false;
    const cap = Math.min(pr.maxDelayMs, pr.minDelayMs * Math.pow(2, Math.min(r.attempts - 1, 30)));
    const delay = Math.floor(cap / 2 + Math.random() * (cap / 2));
    if (now() - r.start + delay > pr.deadlineMs) return false;
    clearTimeout(r.timer);
    r.timer = null;
    r.sent = false;
    this._retrying.add(r);
    r.retryTimer = setTimeout(() => {
      r.retryTimer = null;
      if (!this._retrying.delete(r)) return;
      r.attempts++;
      // A new id for the new attempt; the key, which makes it safe, stays.
      r.id = this._nextId++;
      r.frame.id = r.id;
      this._armTimeout(r);
      if (this.state === 'connected') this._sendRequest(r);
      else this._queue.unshift(r); // already accepted: not bounded by maxOfflineQueue again
    }, delay);
    return true;
  }

  _sendRequest(r) {
    r.sent = true;
    this._inflight.set(r.id, r);
    if (r.bin) this._sendRaw(encodeBinary(r.frame, r.bin));
    else this._send(r.frame);
  }

  _settle(r, errOrFn, reply) {
    clearTimeout(r.timer);
    if (typeof errOrFn === 'function') r.reject(errOrFn());
    else if (errOrFn) r.reject(errOrFn);
    else {
      let v;
      try {
        v = r.mapReply ? r.mapReply(reply) : reply;
      } catch (e) {
        r.reject(e);
        return;
      }
      r.resolve(v);
    }
  }

  /**
   * Settles what was sent on a connection that is gone. Reads that are safe to
   * repeat (history, presence) go back to the front of the queue when
   * `requeueReads`, keeping their original deadline; a publish is not
   * repeated here, since the broker may have sequenced it already (after 4013
   * and 1001 `_drop` has taken the keyed ones out for a retry).
   */
  _failInflight(errFn, requeueReads = false) {
    const list = [...this._inflight.values()];
    this._inflight.clear();
    const again = [];
    for (const r of list) {
      if (r.kind === 'sub') clearTimeout(r.timer); // resent after the next hello
      else if (r.kind === 'unsub') {
        clearTimeout(r.timer); // the broker drops the subscription with the connection
        r.resolve();
      } else if (r.kind === 'ping') continue;
      else if (requeueReads && (r.frame.op === 'history' || r.frame.op === 'presence')) {
        r.sent = false;
        again.push(r);
      } else this._settle(r, errFn);
    }
    if (again.length) this._queue.unshift(...again.sort((a, b) => a.id - b.id));
  }

  _send(frame) {
    return this._sendRaw(JSON.stringify(frame));
  }

  /** Sends a text (string) or binary (Uint8Array) frame on the open socket. */
  _sendRaw(data) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WS_OPEN) return false;
    try {
      ws.send(data);
      return true;
    } catch (e) {
      this._listenerError(e, 'send');
      return false;
    }
  }

  /* ---------------------------------------------------------------- */
  /* Internals: subscriptions                                         */
  /* ---------------------------------------------------------------- */

  _sendSub(sub) {
    if (typeof sub._token === 'function') {
      // A subscription token from a callback: fetched for every (re)subscribe,
      // since the one of the last connection may have expired.
      const id = this._nextId++;
      const ws = this._ws;
      sub._reqId = id;
      sub._live = false;
      let timer;
      const limit = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new ChorusError(ErrorCodes.TIMEOUT, `subscription token for '${sub.channel}': none within ${this._opts.requestTimeout} ms`)), this._opts.requestTimeout);
      });
      Promise.race([Promise.resolve().then(() => sub._token(sub.channel)), limit])
        .finally(() => clearTimeout(timer))
        .then(
          (tok) => {
            if (this._ws === ws && this.state === 'connected' && sub._reqId === id && this._subs.get(sub.channel) === sub) this._sendSubFrame(sub, tok, id);
          },
          (e) => {
            if (sub._reqId !== id || this._subs.get(sub.channel) !== sub) return;
            const err = e instanceof Error ? e : new ChorusError(ErrorCodes.TOKEN, String(e));
            if (sub._pending) this._dropSub(sub, err);
            else {
              this._dropSub(sub, null);
              if (!sub.emit('error', err)) this.emit('error', err);
            }
          }
        );
      return;
    }
    this._sendSubFrame(sub, sub._token, this._nextId++);
  }

  _sendSubFrame(sub, token, id) {
    const frame = { op: 'sub', id, ch: sub.channel };
    const since = sub.position;
    if (since) frame.since = since;
    if (typeof token === 'string' && token !== '') frame.token = token;
    sub._reqId = id;
    sub._live = false;
    const r = { id, kind: 'sub', sub, since: !!since, timer: null };
    // A resubscribe that gets no ack means the connection is not working; an
    // initial subscribe is bounded by its own timer (see subscribe()).
    if (sub._everAcked) {
      r.timer = setTimeout(() => {
        this._inflight.delete(id);
        this._drop(4000, `no ack for resubscribe of '${sub.channel}'`);
      }, this._opts.requestTimeout);
    }
    this._inflight.set(id, r);
    this._send(frame);
  }

  _onSubAck(r, reply) {
    clearTimeout(r.timer);
    const sub = r.sub;
    if (this._subs.get(sub.channel) !== sub || sub._reqId !== r.id) return; // superseded
    const resubscribed = sub._everAcked;
    const wasRecovering = r.since;
    const recovered = reply.recovered === true;
    const epoch = typeof reply.epoch === 'string' ? reply.epoch : sub.epoch;
    const seq = typeof reply.seq === 'number' ? reply.seq : 0;
    if (!wasRecovering || !recovered || epoch !== sub.epoch) {
      // Fresh start (or recovery failed): deliver what comes after the ack position.
      sub.epoch = epoch;
      sub.seq = seq;
    }
    // When recovered, sub.seq stays at our last position and the missed
    // messages, which the broker sends right after this ack, fill the gap.
    sub.state = 'subscribed';
    sub._live = true;
    sub._everAcked = true;
    const ctx = { channel: sub.channel, epoch, seq, resubscribed, wasRecovering, recovered: wasRecovering ? recovered : undefined, byServer: false };
    sub.lastAck = ctx;
    this.emit('subscribed', { ...ctx, subscription: sub });
    const events = [['subscribed', ctx]];
    if (wasRecovering && !recovered) events.push(['unrecovered', ctx]);
    if (sub._pending) {
      const p = sub._pending;
      sub._pending = null;
      clearTimeout(p.timer);
      p.resolve(sub);
    }
    if (!resubscribed) {
      // The first ack: emitted after subscribe() resolved and the code awaiting
      // it ran, so listeners attached right after the await see these events.
      sub._defer(events);
    } else {
      sub._flushDeferred();
      for (const [event, arg] of events) sub.emit(event, arg);
    }
  }

  _onSubErr(r, reply) {
    clearTimeout(r.timer);
    const sub = r.sub;
    if (this._subs.get(sub.channel) !== sub || sub._reqId !== r.id) return;
    const err = new ChorusError(reply.code || 'unknown', reply.msg || `subscribe '${sub.channel}' failed`, reply);
    if (sub._pending) this._dropSub(sub, err);
    else {
      this._dropSub(sub, null);
      if (!sub.emit('error', err)) this.emit('error', err);
    }
  }

  /**
   * Removes a subscription from the client; rejects its pending subscribe() with err.
   * `reason` is the server's, when it ended the subscription.
   */
  _dropSub(sub, err, reason) {
    if (this._subs.get(sub.channel) === sub) this._subs.delete(sub.channel);
    const wasActive = sub.state !== 'unsubscribed';
    sub.state = 'unsubscribed';
    sub._live = false;
    if (sub._pending) {
      const p = sub._pending;
      sub._pending = null;
      clearTimeout(p.timer);
      p.reject(err || new ChorusError(ErrorCodes.CLOSED, 'unsubscribed'));
    }
    sub._flushDeferred();
    if (wasActive) {
      const ev = reason === undefined ? { channel: sub.channel, byServer: false } : { channel: sub.channel, byServer: true, reason };
      sub.emit('unsubscribed', ev);
      this.emit('unsubscribed', ev);
    }
  }

  /**
   * The server subscribed this connection to a channel (the application's
   * backend: `POST /api/subscribe`). A Subscription is made for it, which the
   * SDK then keeps and resumes like its own; the client's `subscribed` event
   * (`byServer: true`) hands it over so the application can listen to it.
   */
  _onServerSub(m) {
    if (typeof m.ch !== 'string') return;
    let sub = this._subs.get(m.ch);
    const created = !sub;
    if (created) {
      sub = new Subscription(this, m.ch);
      this._subs.set(m.ch, sub);
    }
    const epoch = typeof m.epoch === 'string' ? m.epoch : sub.epoch;
    const seq = typeof m.seq === 'number' ? m.seq : 0;
    if (!sub._live) {
      // Ours in flight, or new: deliver what follows the server's position.
      if (sub.epoch !== epoch || sub.epoch === null) {
        sub.epoch = epoch;
        sub.seq = seq;
      }
      sub._live = true;
    }
    sub.state = 'subscribed';
    sub._everAcked = true;
    const ctx = { channel: sub.channel, epoch, seq, resubscribed: !created, wasRecovering: false, recovered: undefined, byServer: true };
    sub.lastAck = ctx;
    this.emit('subscribed', { ...ctx, subscription: sub });
    sub._flushDeferred();
    sub.emit('subscribed', ctx);
  }

  /** The server ended a subscription (`{"op":"unsubscribed","ch","reason"}`): nothing more comes from it. */
  _onServerUnsub(m) {
    const sub = typeof m.ch === 'string' ? this._subs.get(m.ch) : undefined;
    const reason = typeof m.reason === 'string' ? m.reason : '';
    if (!sub) return;
    this._dropSub(sub, new ChorusError('unsubscribed', `unsubscribed from '${sub.channel}' by the server${reason ? ': ' + reason : ''}`), reason);
  }

  _unsubscribe(sub) {
    if (sub.state === 'unsubscribed' || this._subs.get(sub.channel) !== sub) return Promise.resolve();
    const wasLive = sub._live || sub._reqId !== 0;
    this._dropSub(sub, new ChorusError(ErrorCodes.CLOSED, `unsubscribed from '${sub.channel}' before the ack`));
    if (this.state !== 'connected' || !wasLive) return Promise.resolve();
    return new Promise((resolve) => this._sendUnsub(sub.channel, resolve));
  }

  /** Sends an unsub with an id; `done` is called on its reply, a timeout or a disconnect. */
  _sendUnsub(channel, done) {
    const id = this._nextId++;
    const r = { id, kind: 'unsub', resolve: done, timer: null };
    r.timer = setTimeout(() => {
      this._inflight.delete(id);
      done();
    }, this._opts.requestTimeout);
    this._inflight.set(id, r);
    this._send({ op: 'unsub', id, ch: channel });
  }

  _onMsg(m) {
    const sub = this._subs.get(m.ch);
    if (!sub || !sub._live) return; // not (yet / any more) ours
    const seq = m.seq;
    if (typeof seq === 'number') {
      if (seq <= sub.seq) return; // duplicate (e.g. replayed after a resume)
      // A conflated msg (slow_consumer "conflate") stands for `skipped` older
      // ones the server replaced on purpose: that jump is not a gap.
      const skipped = Number.isInteger(m.skipped) && m.skipped > 0 ? m.skipped : 0;
      if (seq > sub.seq + 1 + skipped && sub.epoch !== null) {
        const from = sub.seq + 1;
        this._emitGap(sub, { channel: sub.channel, epoch: sub.epoch, from, to: seq - 1 - skipped, source: 'sdk', expected: from, got: seq });
      }
      sub.seq = seq;
    }
    sub.emit('message', m.data, m);
    this.emit('message', m);
  }

  _onEpoch(m) {
    const sub = this._subs.get(m.ch);
    if (!sub || !sub._live) return;
    sub.epoch = m.epoch;
    sub.seq = typeof m.seq === 'number' ? m.seq : 0;
    const ev = { channel: m.ch, epoch: m.epoch, seq: sub.seq };
    sub._flushDeferred();
    sub.emit('epoch', ev);
    this.emit('epoch', ev);
  }

  /**
   * The broker's `gap` event (PROTOCOL.md 2.7): messages from..to were lost
   * (between cluster nodes) and will not be delivered. The position moves past
   * them, so the next message (to + 1) is not taken for another gap and a
   * resume does not ask for them again.
   */
  _onGap(m) {
    const sub = this._subs.get(m.ch);
    if (!sub || !sub._live) return;
    const { from, to } = m;
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < 1 || to < from) {
      this.emit('error', new ChorusError(ErrorCodes.PROTOCOL, `malformed gap event for '${m.ch}'`));
      return;
    }
    const epoch = typeof m.epoch === 'string' ? m.epoch : sub.epoch;
    if (epoch === sub.epoch && to > sub.seq) sub.seq = to;
    this._emitGap(sub, { channel: sub.channel, epoch, from, to, source: 'broker' });
  }

  _emitGap(sub, ev) {
    sub._flushDeferred();
    sub.emit('gap', ev);
    this.emit('gap', ev);
  }

  /* ---------------------------------------------------------------- */
  /* Internals: connection                                            */
  /* ---------------------------------------------------------------- */

  _setState(s) {
    if (this.state === s) return;
    const prev = this.state;
    this.state = s;
    this.emit('state', s, prev);
  }

  async _open() {
    this._reconnectTimer = null;
    if (!this._wantConnected) return;
    this._setState('connecting');
    const gen = ++this._openGen;
    const attempt = this._attempt;
    let url = this.url;
    try {
      const tok = await this._connectToken();
      if (!this._wantConnected || this._ws || gen !== this._openGen) return;
      this._token = tok || null;
      if (tok) url += (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(tok);
    } catch (e) {
      this.emit('error', e);
      this._scheduleReconnect(0, 'token callback failed');
      return;
    }
    const transports = Array.isArray(this._opts.transports) && this._opts.transports.length ? this._opts.transports : ['websocket'];
    const canSse = transports.includes('sse') && typeof this._EventSource === 'function';
    const sse = canSse && (this._sseNext || !transports.includes('websocket'));
    this.transport = sse ? 'sse' : 'websocket';
    this.emit('connecting', { url: this.url, attempt, transport: this.transport });
    let ws;
    try {
      if (sse) ws = new SseSocket(this._EventSource, this._sseUrl(), [...this._subs.keys()]);
      else ws = this._opts.protocols ? new this._WebSocket(url, this._opts.protocols) : new this._WebSocket(url);
      // Binary messages arrive as ArrayBuffers (browsers default to Blob, `ws` to Buffer).
      ws.binaryType = 'arraybuffer';
    } catch (e) {
      this.emit('error', e);
      this._scheduleReconnect(0, String(e && e.message));
      return;
    }
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (ev) => this._onFrame(ws, ev.data);
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      // A WebSocket that never opened (a proxy refusing the upgrade) is
      // followed by SSE when allowed; after SSE, or after a transport that
      // worked, the WebSocket is tried first again.
      this._sseNext = canSse && !sse && !opened;
      this._drop(ev.code || 1006, ev.reason || '', true);
    };
    ws.onerror = () => {
      /* a close event always follows */
    };
    this._connectTimer = setTimeout(() => {
      if (this._ws === ws) this._drop(4000, `no hello within ${this._opts.connectTimeout} ms`);
    }, this._opts.connectTimeout);
  }

  /** `/sse?ch=...` for every subscription, with their positions and the token. */
  _sseUrl() {
    const u = this.url.replace(/^ws(s?):/i, 'http$1:').replace(/\/ws(\?.*)?$/, '/sse');
    const q = [];
    let since = false;
    const pos = [];
    for (const sub of this._subs.values()) {
      q.push('ch=' + encodeURIComponent(sub.channel));
      const p = sub.position;
      pos.push(p ? `${p.epoch}:${p.seq}` : '');
      since = since || !!p;
    }
    if (since) q.push('since=' + encodeURIComponent(pos.join(',')));
    if (this._token) q.push('token=' + encodeURIComponent(this._token));
    return q.length ? `${u}?${q.join('&')}` : u;
  }

  /**
   * The token for a new connection: from a `token` function, else the string
   * `token` (the first time only when there is `getToken`), else `getToken()`.
   */
  async _connectToken() {
    const { token, getToken } = this._opts;
    if (typeof token === 'function') return token();
    if (token && (!getToken || !this._usedStaticToken)) {
      this._usedStaticToken = true;
      return token;
    }
    if (typeof getToken === 'function') return getToken();
    return token;
  }

  /** Arms the in-band refresh of the current token before its `exp` (getToken only). */
  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (typeof this._opts.getToken !== 'function' || this.state !== 'connected') return;
    const exp = tokenExpiry(this._token);
    if (exp === null) return;
    const remaining = exp * 1000 - Date.now();
    this._refreshTimer = setTimeout(() => this._refreshToken(exp), refreshDelay(remaining, this._opts.tokenRefreshMargin));
  }

  /**
   * Gets a fresh token and sends it with `auth` on the current connection. A
   * failure is reported as `error` and tried again (at most every second)
   * while the old token lasts; past its `exp` the broker closes the
   * connection and the reconnect fetches a new one anyway.
   */
  async _refreshToken(exp) {
    this._refreshTimer = null;
    const ws = this._ws;
    const retry = (e) => {
      this.emit('error', e);
      if (this._ws !== ws || this.state !== 'connected') return;
      const left = exp * 1000 - Date.now();
      if (left > 0) this._refreshTimer = setTimeout(() => this._refreshToken(exp), Math.min(1000, Math.max(50, left / 4)));
    };
    let tok;
    try {
      tok = await this._opts.getToken();
    } catch (e) {
      return retry(e instanceof Error ? e : new ChorusError(ErrorCodes.TOKEN, String(e)));
    }
    if (this._ws !== ws || this.state !== 'connected') return; // a reconnect fetches its own
    if (typeof tok !== 'string' || tok === '') return retry(new ChorusError(ErrorCodes.TOKEN, 'getToken returned no token'));
    try {
      const reply = await this._request({ op: 'auth', token: tok });
      if (this._ws !== ws) return;
      this._token = tok;
      this.emit('token', { user: typeof reply.user === 'string' ? reply.user : null, exp: tokenExpiry(tok) });
      this._scheduleRefresh();
    } catch (e) {
      // `forbidden`: the node has no keys, so nothing ever expires; stop there.
      // `receive_only`: over SSE the token cannot be refreshed in band; the
      // stream is closed (4001) at its expiry and the reconnect takes a new one.
      if (e && e.code === ErrorCodes.RECEIVE_ONLY) return;
      if (e && e.code === 'forbidden') this.emit('error', e);
      else if (e && e.code !== ErrorCodes.DISCONNECTED && e.code !== ErrorCodes.CLOSED) retry(e);
    }
  }

  /** Forgets the current socket without waiting for its close handshake. */
  _teardownSocket() {
    const ws = this._ws;
    this._ws = null;
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    clearTimeout(this._connectTimer);
    clearTimeout(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._connectTimer = this._pingTimer = this._pongTimer = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = ws.onopen = null;
      // ws may still emit 'error' (e.g. closed before established); keep a sink.
      ws.onerror = () => {};
    }
    for (const sub of this._subs.values()) sub._live = false;
    return ws;
  }

  /**
   * Ends the current connection (after a close, an error, a dead-peer
   * detection) and schedules the next attempt.
   */
  _drop(code, reason, alreadyClosed = false) {
    if (code === CloseCodes.DISCONNECT && this._wantConnected) {
      // The backend removed this user: coming straight back would undo that.
      const wasConnected = this.state === 'connected';
      this._wantConnected = false;
      this._openGen++;
      const ws = this._teardownSocket();
      if (ws && !alreadyClosed) {
        try {
          ws.close(1000);
        } catch (_) {
          /* ignore */
        }
      }
      this._closeAll(CloseCodes.DISCONNECT, reason, wasConnected);
      return;
    }
    const ws = this._teardownSocket();
    const wasConnected = this.state === 'connected';
    if (ws && !alreadyClosed) {
      try {
        if (typeof ws.terminate === 'function') ws.terminate(); // ws (Node): no close handshake
        else ws.close(4000, String(reason).slice(0, 100));
      } catch (_) {
        /* ignore */
      }
    }
    if ((code === CloseCodes.CUT_OFF || code === CloseCodes.SHUTDOWN ||
         code === CloseCodes.LOST) && this._wantConnected) {
      // A node cut off from the majority acknowledges nothing, a node that
      // shuts down answers what it took before its 1001 and drops what came
      // after (PROTOCOL.md 5), and a lost connection says nothing (a close
      // frame can be lost to a TCP reset when the node closes with publishes
      // still unread): what got no answer is retried elsewhere with its key,
      // like an `unavailable`, which the key makes safe within the epoch.
      for (const r of [...this._inflight.values()]) {
        if (r.frame && this._retryPublish(r)) this._inflight.delete(r.id);
      }
    }
    this._failInflight(
      () => new ChorusError(ErrorCodes.DISCONNECTED, `connection lost (${code}${reason ? ' ' + reason : ''}); the outcome of the request is unknown`),
      this._wantConnected
    );
    this._setState('disconnected');
    if (wasConnected) this.emit('disconnected', { code, reason, willReconnect: this._wantConnected });
    this._scheduleReconnect(code, reason);
  }

  _scheduleReconnect(code, reason) {
    if (!this._wantConnected) return;
    this._setState('disconnected');
    const { minReconnectDelay: min, maxReconnectDelay: max } = this._opts;
    // A cut-off node asks its clients to go elsewhere now: the first delay of
    // the backoff (at most minReconnectDelay), never the long one. (The counter
    // is reset at every hello too; this keeps it so should that ever change.)
    if (code === CloseCodes.CUT_OFF) this._attempt = 0;
    // Exponential backoff with full jitter: uniform in [0, min(max, min * 2^attempt)].
    const cap = Math.min(max, min * Math.pow(2, Math.min(this._attempt, 30)));
    const delay = Math.floor(Math.random() * cap);
    this._attempt++;
    this.emit('reconnecting', { attempt: this._attempt, delay, code, reason });
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => this._open(), delay);
  }

  _onFrame(ws, raw) {
    if (this._ws !== ws) return;
    if (typeof raw !== 'string') {
      // A binary frame is a binary message (PROTOCOL.md 9): [H][header]<payload>.
      const m = decodeBinary(raw);
      if (!m || m.op !== 'msg') {
        this.emit('error', new ChorusError(ErrorCodes.PROTOCOL, 'malformed binary frame from server'));
        return;
      }
      return this._onMsg(m);
    }
    let m;
    try {
      m = JSON.parse(raw);
    } catch (_) {
      this.emit('error', new ChorusError(ErrorCodes.PROTOCOL, 'server sent invalid JSON: ' + String(text).slice(0, 80)));
      return;
    }
    if (!m || typeof m !== 'object' || typeof m.op !== 'string') {
      this.emit('error', new ChorusError(ErrorCodes.PROTOCOL, 'server frame without op'));
      return;
    }
    switch (m.op) {
      case 'hello':
        return this._onHello(m);
      case 'msg':
        // Over SSE a binary message comes in its JSON form, payload in `bin`.
        return this._onMsg(typeof m.bin === 'string' ? decodeHistoryMsg(m) : m);
      case 'epoch':
        return this._onEpoch(m);
      case 'gap':
        return this._onGap(m);
      case 'subscribed':
        return this._onServerSub(m);
      case 'unsubscribed':
        return this._onServerUnsub(m);
      case 'ack':
      case 'pong':
      case 'history':
      case 'presence':
      case 'err':
        return this._onReply(m);
      case 'join':
      case 'leave': {
        // Presence events, where the namespace enables them.
        const sub = this._subs.get(m.ch);
        if (sub && sub._live) {
          sub._flushDeferred();
          sub.emit(m.op, m);
        }
        this.emit(m.op, m);
        return;
      }
      default:
        // Unknown server events are ignored (forward compatibility).
        return;
    }
  }

  _onHello(m) {
    if (this.state === 'connected') return;
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    this.clientId = typeof m.client === 'string' ? m.client : null;
    this.nodeId = typeof m.node === 'string' ? m.node : null;
    this._attempt = 0;
    this._setState('connected');
    // Order matters: subscriptions first, then queued requests, so that a
    // publish queued after a subscribe reaches the broker after it.
    for (const sub of this._subs.values()) this._sendSub(sub);
    for (const r of this._queue.splice(0)) this._sendRequest(r);
    this._schedulePing();
    this._scheduleRefresh();
    for (const w of this._connectWaiters.splice(0)) {
      clearTimeout(w.timer);
      w.resolve();
    }
    this.emit('connected', { client: this.clientId, node: this.nodeId, v: m.v });
  }

  _onReply(m) {
    if (typeof m.id !== 'number') {
      if (m.op === 'err') this.emit('error', new ChorusError(m.code || 'unknown', m.msg || 'error from server', m));
      return;
    }
    const r = this._inflight.get(m.id);
    if (!r) return; // late reply to a request that timed out
    this._inflight.delete(m.id);
    if (r.kind === 'sub') {
      if (m.op === 'err') this._onSubErr(r, m);
      else this._onSubAck(r, m);
      return;
    }
    if (r.kind === 'unsub') {
      clearTimeout(r.timer);
      r.resolve();
      return;
    }
    if (r.kind === 'ping') {
      clearTimeout(this._pongTimer);
      this._pongTimer = null;
      this._schedulePing();
      return;
    }
    if (m.op === 'err') {
      if (m.code === 'unavailable' && this._retryPublish(r)) return;
      let text = m.msg || `'${r.frame.op}' failed`;
      if (m.code === 'unavailable' && r.attempts > 1) text += ` (gave up after ${r.attempts} attempts in ${Math.round(now() - r.start)} ms)`;
      this._settle(r, new ChorusError(m.code || 'unknown', text, m));
    } else this._settle(r, null, m);
  }

  _schedulePing() {
    clearTimeout(this._pingTimer);
    this._pingTimer = null;
    const { pingInterval, pingTimeout } = this._opts;
    if (!(pingInterval > 0) || this.state !== 'connected') return;
    this._pingTimer = setTimeout(() => {
      this._pingTimer = null;
      if (this.state !== 'connected') return;
      const id = this._nextId++;
      this._inflight.set(id, { id, kind: 'ping' });
      this._pongTimer = setTimeout(() => {
        this._inflight.delete(id);
        this._drop(4000, `no pong within ${pingTimeout} ms`);
      }, pingTimeout);
      this._send({ op: 'ping', id });
    }, pingInterval);
  }
}

/**
 * The SSE transport (PROTOCOL.md 10) behind the interface the client uses
 * for a WebSocket, so the rest of the client does not know which one it
 * has. The stream's channels are fixed when it opens: a `sub` for another
 * channel closes it (4000) so the client reconnects with the new set, and
 * the stream's own acks (ids 1..n, one per channel) are answered to the
 * client's `sub` requests. EventSource's own reconnect is not used: an
 * error ends the stream (1006) and the client resumes with `since` as it
 * does over WebSocket. Requests that need to send (publish, history,
 * presence, auth) are answered `receive_only` here.
 */
class SseSocket {
  constructor(EventSourceImpl, url, channels) {
    this.readyState = 0;
    this.binaryType = 'arraybuffer';
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._channels = channels;
    this._gone = new Set(); // unsubscribed while the stream lasts
    this._ids = new Map(); // channel -> the client's sub request id
    this._held = new Map(); // channel -> the stream's reply, until the client's sub is sent
    if (!channels.length) {
      // Nothing to stream yet: a stream needs a channel. Look connected;
      // the first subscribe opens the real stream.
      this._es = null;
      setTimeout(() => this._frame({ op: 'hello', v: 1, node: null, client: null }), 0);
      return;
    }
    this._es = new EventSourceImpl(url);
    this._es.onmessage = (ev) => this._onData(ev.data);
    this._es.onerror = () => this._end(1006, 'SSE stream failed');
  }

  _frame(m) {
    if (this.readyState === 3) return;
    if (m.op === 'hello') {
      this.readyState = 1;
      if (this.onopen) this.onopen();
    }
    if (this.onmessage) this.onmessage({ data: JSON.stringify(m) });
  }

  _onData(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch (_) {
      if (this.onmessage) this.onmessage({ data: text });
      return;
    }
    if (m && m.op === 'close') return this._end(typeof m.code === 'number' ? m.code : 1006, m.reason || '');
    // The stream's replies carry its own ids: n + 1 for its n-th channel.
    if (m && (m.op === 'ack' || m.op === 'err') && Number.isInteger(m.id)) {
      const ch = this._channels[m.id - 1];
      if (ch === undefined) return;
      if (!this._ids.has(ch)) {
        this._held.set(ch, m);
        return;
      }
      m.id = this._ids.get(ch);
    }
    if (m && m.op === 'msg' && this._gone.has(m.ch)) return;
    this._frame(m);
  }

  send(data) {
    let f = null;
    if (typeof data === 'string') {
      try {
        f = JSON.parse(data);
      } catch (_) {
        /* answered below */
      }
    }
    const reply = (m) => setTimeout(() => this._frame(m), 0);
    if (f && f.op === 'sub' && this._channels.includes(f.ch) && !this._gone.has(f.ch)) {
      this._ids.set(f.ch, f.id);
      const held = this._held.get(f.ch);
      if (held) {
        this._held.delete(f.ch);
        held.id = f.id;
        reply(held);
      }
    } else if (f && f.op === 'sub') {
      setTimeout(() => this._end(4000, 'SSE stream reopened for another channel'), 0);
    } else if (f && f.op === 'unsub') {
      this._gone.add(f.ch);
      reply({ op: 'ack', id: f.id, ch: f.ch });
    } else if (f && f.op === 'ping') {
      reply({ op: 'pong', id: f.id });
    } else {
      const id = f && Number.isInteger(f.id) ? f.id : undefined;
      reply({ op: 'err', id, code: ErrorCodes.RECEIVE_ONLY, msg: `'${(f && f.op) || 'binary'}' needs the WebSocket transport: this client is connected over SSE, which only receives` });
    }
  }

  close() {
    this.readyState = 3;
    if (this._es) this._es.close();
  }

  _end(code, reason) {
    if (this.readyState === 3) return;
    this.close();
    if (this.onclose) this.onclose({ code, reason });
  }
}

function now() {
  return typeof performance !== 'undefined' && performance.now ? performance.now() : Date.now();
}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc || !loc.host) return undefined;
  return (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + '/ws';
}

export default Chorus;
