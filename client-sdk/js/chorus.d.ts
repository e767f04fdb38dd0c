// TypeScript declarations for @chorus/client (chorus.js), wire protocol v1.

/** SDK version. */
export const VERSION: string;
/** Wire protocol version the SDK speaks. */
export const PROTOCOL_VERSION: 1;

/** WebSocket close codes of the broker (PROTOCOL.md section 5) seen in `disconnected` / `reconnecting`. */
export const CloseCodes: Readonly<{
  NORMAL: 1000;
  /** The node is shutting down; the SDK reconnects, resumes and retries with their keys the publishes it did not answer. */
  SHUTDOWN: 1001;
  /** The connection was lost without a close frame; keyed publishes that got no answer are retried. */
  LOST: 1006;
  AUTH: 4001;
  SLOW_CONSUMER: 4008;
  /** The backend disconnected this user (`POST /api/disconnect`); the SDK does not reconnect. */
  DISCONNECT: 4009;
  /** The node is cut off from its cluster's majority; the SDK reconnects at once and resumes. */
  CUT_OFF: 4013;
}>;

/** Codes produced by the SDK itself; broker codes are passed through unchanged. */
export const ErrorCodes: Readonly<{
  TIMEOUT: 'timeout';
  DISCONNECTED: 'disconnected';
  CLOSED: 'closed';
  QUEUE_FULL: 'queue_full';
  ALREADY_SUBSCRIBED: 'already_subscribed';
  PROTOCOL: 'protocol_error';
  /** `getToken` or a subscription token callback gave no token. */
  TOKEN: 'token_error';
  RECEIVE_ONLY: 'receive_only';
}>;

/** Error codes of the broker (PROTOCOL.md section 3). */
export type BrokerErrorCode =
  | 'bad_request'
  | 'unknown_op'
  | 'bad_channel'
  | 'too_large'
  | 'forbidden'
  | 'not_subscribed'
  | 'limit_reached'
  | 'rate_limited'
  | 'unavailable';

/** Error codes of the SDK. */
export type ClientErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export type ErrorCode = BrokerErrorCode | ClientErrorCode | (string & {});

/** An `err` frame sent by the broker. */
export interface ErrFrame {
  op: 'err';
  id?: number;
  code: string;
  msg: string;
}

/** An error with a stable `code`; `reply` is the broker's `err` frame when there was one. */
export class ChorusError extends Error {
  constructor(code: ErrorCode, message: string, reply?: ErrFrame);
  readonly name: 'ChorusError';
  code: ErrorCode;
  reply?: ErrFrame;
}

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * The `exp` claim (seconds since the Unix epoch) of a JWT, read without verifying it;
 * null when the token is not a JWT or has no numeric `exp`.
 */
export function tokenExpiry(token: string | null | undefined): number | null;

/** The shape of a `Blob` the SDK needs (a DOM or Node.js `Blob`; publish checks `instanceof Blob`). */
export interface BlobLike {
  readonly size: number;
  readonly type: string;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/** Bytes published as a binary message (PROTOCOL.md 9). */
export type BinaryData = ArrayBuffer | ArrayBufferView | BlobLike;

/** A position in a channel's sequence. */
export interface StreamPosition {
  epoch: string;
  seq: number;
}

/**
 * A `msg` frame: one message published in a channel. For a binary message
 * (PROTOCOL.md 9) `data` is a `Uint8Array` of its payload (in history replies the
 * broker's base64 `bin` is kept too); use `Message<Uint8Array>` on binary channels.
 */
export interface Message<T = Json> {
  op: 'msg';
  ch: string;
  seq: number;
  /** Server time (ms since the Unix epoch) when the message was sequenced. */
  ts?: number;
  /** Id of the publishing connection; absent for HTTP API publishes. */
  client?: string;
  /** The publisher's user as the node attests it (its token's `sub`, or the `user` an HTTP
   * publish named); absent for anonymous publishes. A client cannot set it. */
  user?: string;
  /** The publisher's token `info`, in namespaces with `publish_info: true`. */
  info?: unknown;
  /**
   * Namespaces with `"slow_consumer": "conflate"`: this message replaced that many
   * older ones of the channel while the connection lagged (seq jumped by skipped + 1;
   * not a gap). Absent otherwise.
   */
  skipped?: number;
  data: T;
  /** History replies only: a binary message's payload in base64 (also decoded into `data`). */
  bin?: string;
}

export interface HistoryOptions {
  /** Newest N messages (capped by the namespace's history size). */
  limit?: number;
  /** Only messages after this position (none when the epoch differs). */
  since?: StreamPosition;
}

export interface HistoryResult<T = Json> {
  ch: string;
  epoch: string;
  /** Last seq published in the channel. */
  seq: number;
  /** Oldest first, each exactly as it was delivered. */
  msgs: Message<T>[];
}

/** A user (token `sub`, with the token's public `info`) or an anonymous connection. */
export interface PresenceMember {
  user?: string;
  info?: unknown;
  client?: string;
  [key: string]: unknown;
}

/** What `presence()` resolves with. */
export interface PresenceResult {
  /** Number of members in the channel. */
  count: number;
  /**
   * The members; `undefined` when the channel has more than the namespace's
   * `presence_max_members` (the broker then sends only `count`).
   */
  members: PresenceMember[] | undefined;
}

/** A `join` or `leave` presence event (PROTOCOL.md 2.7): the member that arrived or left. */
export interface PresenceEvent {
  op: 'join' | 'leave';
  ch: string;
  /** The member's user id (token `sub`), for authenticated members. */
  user?: string;
  /** The token's public `info`, for users whose token had one. */
  info?: unknown;
  /** The connection id, for anonymous members. */
  client?: string;
  [key: string]: unknown;
}

/** Minimal shape of a WebSocket the SDK needs (browser WebSocket or `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol?: string;
  send(data: string | Uint8Array): void;
  /** Set to `'arraybuffer'` by the SDK so binary messages arrive as bytes. */
  binaryType?: string;
  close(code?: number, reason?: string): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onopen: ((ev: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ChorusOptions {
  /**
   * Connection token (JWT), sent as the `token` query parameter of the URL. A function
   * is called before every connection attempt. With `getToken` too, a string is used
   * for the first connection only.
   */
  token?: string | (() => string | Promise<string>);
  /**
   * Returns a fresh connection token: called before every connection attempt, and
   * before the current token's `exp` (85% of its remaining lifetime, or
   * `tokenRefreshMargin` before `exp` if sooner), when the new token is sent in band
   * with the `auth` op: no reconnect, subscriptions untouched. Same `sub` only.
   */
  getToken?: () => string | Promise<string>;
  /** ms before `exp` by which a refreshed token must be in place (default 5000). */
  tokenRefreshMargin?: number;
  /** WebSocket constructor; default `globalThis.WebSocket` (in Node.js 20: `WebSocket` from `ws`). */
  WebSocket?: WebSocketConstructor | (new (...args: any[]) => any);
  /** WebSocket sub-protocols to offer, e.g. `'chorus.v1'`. None by default. */
  protocols?: string | string[];
  /**
   * Transports in order of preference (default `['websocket']`). With `['websocket', 'sse']`
   * a WebSocket that cannot open is followed by Server-Sent Events (`GET /sse`, receive
   * only: publish, history, presence and token refresh reject with `receive_only`).
   */
  transports?: Array<'websocket' | 'sse'>;
  /** EventSource constructor for the SSE transport; default `globalThis.EventSource`. */
  EventSource?: new (url: string) => any;
  /** ms; base of the exponential reconnect backoff (default 500). */
  minReconnectDelay?: number;
  /** ms; cap of the reconnect backoff (default 20000). */
  maxReconnectDelay?: number;
  /** ms between application pings; 0 disables them (default 25000). */
  pingInterval?: number;
  /** ms to wait for a pong before the connection is declared dead (default 10000). */
  pingTimeout?: number;
  /** ms a request may take from the call to the reply, including time queued offline (default 10000). */
  requestTimeout?: number;
  /** ms from opening a socket to the server's hello (default 10000). */
  connectTimeout?: number;
  /** Requests held while offline; more reject with `queue_full` (default 100). */
  maxOfflineQueue?: number;
  /**
   * Retrying publishes answered `unavailable` with the same idempotency key; on by
   * default (`{deadlineMs: 10000}`), `false` turns it off.
   */
  publishRetry?: PublishRetryOptions | false;
}

/** How a publish answered `unavailable` is retried (ChorusOptions.publishRetry). */
export interface PublishRetryOptions {
  /** No retry starts later than this many ms after the publish() call (default 10000); 0 turns retrying off. */
  deadlineMs?: number;
  /** ms before the first retry; doubles per retry (default 100). */
  minDelayMs?: number;
  /** Cap of the delay in ms (default 2000); each delay is uniform in [d/2, d]. */
  maxDelayMs?: number;
}

export interface PublishOptions {
  /**
   * Idempotency key, 1-64 bytes (PROTOCOL.md 2.3). A key already used in the channel's
   * current epoch publishes nothing new and resolves with the first publish's seq.
   * Without one the SDK makes one (while `publishRetry` is on).
   */
  key?: string;
}

export type ConnectionState = 'disconnected' | 'connecting' | 'connected' | 'closed';

export interface ConnectedEvent {
  client: string | null;
  node: string | null;
  v: number;
}
export interface DisconnectedEvent {
  code: number;
  reason: string;
  willReconnect: boolean;
}
export interface ReconnectingEvent {
  attempt: number;
  /** ms until the next attempt. */
  delay: number;
  code: number;
  reason: string;
}
export interface ConnectingEvent {
  url: string;
  attempt: number;
}
export interface EpochEvent {
  channel: string;
  epoch: string;
  seq: number;
}
/** Messages `from`..`to` (inclusive) of a channel are missing and will not be delivered. */
export interface GapEvent {
  channel: string;
  epoch: string;
  /** First missing seq. */
  from: number;
  /** Last missing seq; delivery continues at `to + 1`. */
  to: number;
  /**
   * `'broker'`: the broker's `gap` event (messages lost between cluster nodes that
   * could not be repaired). `'sdk'`: a message arrived whose seq skipped ahead
   * without a `gap` event (never with a conforming broker).
   */
  source: 'broker' | 'sdk';
  /** Only with `source: 'sdk'`: the seq that was expected (= `from`). */
  expected?: number;
  /** Only with `source: 'sdk'`: the seq that arrived (= `to + 1`). */
  got?: number;
}
/** A subscription ended (`unsubscribe()`, a refused resubscribe, or the server's `unsubscribed` op). */
export interface UnsubscribedEvent {
  channel: string;
  /** True when the server ended it (`{"op":"unsubscribed","ch","reason"}`). */
  byServer: boolean;
  /** The server's reason, when `byServer`. */
  reason?: string;
}
/** A token from `getToken` was accepted in band (`auth` ack). */
export interface TokenEvent {
  /** The connection's user (the token's `sub`), from the ack. */
  user: string | null;
  /** The new token's `exp` (seconds since the Unix epoch), or null. */
  exp: number | null;
}
export interface SubscribedContext {
  channel: string;
  epoch: string;
  /** Last seq in the channel at the time of the ack. */
  seq: number;
  /** False for the first ack, true after a reconnect. */
  resubscribed: boolean;
  /** Whether `since` was sent. */
  wasRecovering: boolean;
  /** With `since`: whether every missed message is being delivered; undefined without `since`. */
  recovered: boolean | undefined;
  /** True when the server subscribed the connection (the `subscribed` op), not `subscribe()`. */
  byServer: boolean;
}
/** The client's `subscribed` event: the context plus the subscription (new for `byServer`). */
export interface ClientSubscribedEvent extends SubscribedContext {
  subscription: Subscription;
}

export interface ChorusEvents {
  connecting: (ev: ConnectingEvent) => void;
  connected: (ev: ConnectedEvent) => void;
  disconnected: (ev: DisconnectedEvent) => void;
  reconnecting: (ev: ReconnectingEvent) => void;
  epoch: (ev: EpochEvent) => void;
  gap: (ev: GapEvent) => void;
  message: (msg: Message) => void;
  error: (err: Error) => void;
  state: (state: ConnectionState, previous: ConnectionState) => void;
  join: (frame: PresenceEvent & { op: 'join' }) => void;
  leave: (frame: PresenceEvent & { op: 'leave' }) => void;
  /**
   * Any subscription was acknowledged, or the server subscribed this connection
   * (`byServer`: attach listeners to `ev.subscription`). Emitted at once.
   */
  subscribed: (ev: ClientSubscribedEvent) => void;
  /** Any subscription ended; `byServer` with the server's `reason`. */
  unsubscribed: (ev: UnsubscribedEvent) => void;
  /** A token from `getToken` was accepted in band. */
  token: (ev: TokenEvent) => void;
}

export interface SubscriptionEvents<T = Json> {
  message: (data: T, msg: Message<T>) => void;
  /**
   * After every ack. The first ack's is emitted after `subscribe()` resolved (in a
   * later task), so listeners attached right after `await c.subscribe()` get it.
   */
  subscribed: (ctx: SubscribedContext) => void;
  /** A resume with `since` was refused (`recovered: false`); same timing as `subscribed`. */
  unrecovered: (ctx: SubscribedContext) => void;
  epoch: (ev: EpochEvent) => void;
  /** Messages were lost and will not be delivered: refetch. */
  gap: (ev: GapEvent) => void;
  error: (err: ChorusError) => void;
  unsubscribed: (ev: UnsubscribedEvent) => void;
  /** A member's first connection subscribed (presence namespaces; not for your own joins). */
  join: (frame: PresenceEvent & { op: 'join' }) => void;
  /** A member's last connection left (presence namespaces). */
  leave: (frame: PresenceEvent & { op: 'leave' }) => void;
}

declare class TypedEmitter<E extends { [K in keyof E]: (...args: any[]) => void }> {
  on<K extends keyof E>(event: K, fn: E[K]): this;
  once<K extends keyof E>(event: K, fn: E[K]): this;
  off<K extends keyof E>(event: K, fn?: E[K]): this;
  emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): boolean;
  listenerCount(event: keyof E): number;
}

export class Subscription<T = Json> extends TypedEmitter<SubscriptionEvents<T>> {
  private constructor();
  readonly channel: string;
  readonly state: 'subscribing' | 'subscribed' | 'unsubscribed';
  /** Epoch of the last position seen (null before the first ack). */
  readonly epoch: string | null;
  /** Seq of the last message delivered, or the ack position. */
  readonly seq: number;
  /** The position to resume from, or null before the first ack. */
  readonly position: StreamPosition | null;
  /** What the last ack said (the context of the last `subscribed`); set before `subscribe()` resolves. */
  readonly lastAck: SubscribedContext | null;
  /**
   * `lastAck.recovered`: with `since`, whether every missed message is being
   * delivered (`false`: refetch); `undefined` without `since` or before the first ack.
   */
  readonly recovered: boolean | undefined;
  /** Stops delivery at once; resolves when the broker acknowledged (never rejects). */
  unsubscribe(): Promise<void>;
  history(opts?: HistoryOptions): Promise<HistoryResult<T>>;
  publish(data: T, opts?: PublishOptions): Promise<number>;
  presence(): Promise<PresenceResult>;
}

export interface SubscribeOptions {
  /** Resume from a stored position: messages after it are delivered first if still in history. */
  since?: StreamPosition;
  /**
   * Subscription token (PROTOCOL.md 8.3, a JWT whose `ch` is the channel) for
   * namespaces with `subscribe: "token"`. A function is called for every
   * (re)subscribe, so a resubscribe after a reconnect gets a fresh one.
   */
  token?: string | ((channel: string) => string | Promise<string>);
}

export class Chorus extends TypedEmitter<ChorusEvents> {
  /**
   * @param url `ws://` / `wss://` URL of the broker's `/ws` endpoint; in a browser it
   *   defaults to `ws(s)://<location.host>/ws`.
   */
  constructor(url?: string, options?: ChorusOptions);
  constructor(options: ChorusOptions);
  readonly url: string;
  readonly state: ConnectionState;
  /** Connection id from the current connection's hello. */
  readonly clientId: string | null;
  /** Node id from the current connection's hello. */
  readonly nodeId: string | null;
  /** The transport of the current or last connection. */
  readonly transport: 'websocket' | 'sse';

  /** Starts connecting (and reconnecting until close()). Resolves at the next `connected`. */
  connect(): Promise<void>;
  /** Resolves at the next `connected`; rejects with `closed`, or `timeout` after timeoutMs. */
  ready(timeoutMs?: number): Promise<void>;
  /** Closes and stops reconnecting; pending requests reject with `closed`. */
  close(): void;

  subscribe<T = Json>(channel: string, onMessage?: (data: T, msg: Message<T>) => void, opts?: SubscribeOptions): Promise<Subscription<T>>;
  subscribe<T = Json>(channel: string, opts: SubscribeOptions): Promise<Subscription<T>>;
  /**
   * Resolves with the seq given to the message (the first publish's seq when its key
   * was already used). Bytes (`ArrayBuffer`, typed arrays, `DataView`, `Blob`) go as a
   * binary message; anything else as JSON. An `unavailable` answer is retried with the
   * same key until `publishRetry.deadlineMs`.
   */
  publish(channel: string, data: Json | BinaryData | unknown, opts?: PublishOptions): Promise<number>;
  history<T = Json>(channel: string, opts?: HistoryOptions): Promise<HistoryResult<T>>;
  /** `{count, members}`; `members` is undefined past the namespace's `presence_max_members`. */
  presence(channel: string): Promise<PresenceResult>;
  /** Resolves with the round-trip time in ms. */
  ping(): Promise<number>;
  getSubscription(channel: string): Subscription | undefined;
  subscriptions(): Subscription[];
}

export default Chorus;
