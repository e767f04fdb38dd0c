// Every export, class, method, property and event of chorus.d.ts used the way
// an application would, compiled with `tsc --noEmit --strict` (tsconfig.json
// here) and never run. A declaration that is wrong, missing or loose enough to
// accept what the SDK refuses fails the compile: each `@ts-expect-error` line
// must stay an error. tests/sdk/dts-check.test.mjs compares the same
// declarations with what chorus.js exports at run time.

import Default, {
  Chorus,
  ChorusError,
  CloseCodes,
  ErrorCodes,
  PROTOCOL_VERSION,
  Subscription,
  VERSION,
  tokenExpiry,
} from '../../../client-sdk/js/chorus.js';
import type {
  BinaryData,
  BlobLike,
  BrokerErrorCode,
  ClientSubscribedEvent,
  ChorusEvents,
  ChorusOptions,
  ClientErrorCode,
  ConnectedEvent,
  ConnectingEvent,
  ConnectionState,
  DisconnectedEvent,
  EpochEvent,
  ErrFrame,
  ErrorCode,
  GapEvent,
  HistoryOptions,
  HistoryResult,
  Json,
  Message,
  PresenceEvent,
  PresenceMember,
  PresenceResult,
  PublishOptions,
  PublishRetryOptions,
  ReconnectingEvent,
  StreamPosition,
  SubscribeOptions,
  SubscribedContext,
  SubscriptionEvents,
  TokenEvent,
  UnsubscribedEvent,
  WebSocketConstructor,
  WebSocketLike,
} from '../../../client-sdk/js/chorus.js';

// Exactly this type, neither wider nor narrower.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
function exact<A, B>(_proof: Equal<A, B>): void {}

// ---- constants and errors ---------------------------------------------------

const version: string = VERSION;
const protocol: 1 = PROTOCOL_VERSION;
exact<typeof ErrorCodes.TIMEOUT, 'timeout'>(true);
exact<ClientErrorCode, 'timeout' | 'disconnected' | 'closed' | 'queue_full' | 'already_subscribed' | 'protocol_error' | 'token_error' | 'receive_only'>(true);
// @ts-expect-error ErrorCodes is read-only
ErrorCodes.TIMEOUT = 'x';
const brokerCode: BrokerErrorCode = 'rate_limited';
const anyCode: ErrorCode = 'a code of a later broker';
const errFrame: ErrFrame = { op: 'err', id: 3, code: brokerCode, msg: 'slow down' };
const err = new ChorusError(ErrorCodes.QUEUE_FULL, 'full', errFrame);
const errName: 'ChorusError' = err.name;
const errCode: ErrorCode = err.code;
const errReply: ErrFrame | undefined = err.reply;
const asError: Error = err;
new ChorusError(anyCode, 'without a reply');
exact<typeof CloseCodes.CUT_OFF, 4013>(true);
exact<typeof CloseCodes.DISCONNECT, 4009>(true);
const exp: number | null = tokenExpiry('a.b.c');
// @ts-expect-error a token is a string
tokenExpiry(42);
const closeCodes: number[] = [CloseCodes.NORMAL, CloseCodes.SHUTDOWN, CloseCodes.AUTH, CloseCodes.SLOW_CONSUMER];
// @ts-expect-error CloseCodes is read-only
CloseCodes.CUT_OFF = 4000;

// ---- a client ------------------------------------------------------------------

class FakeSocket implements WebSocketLike {
  readonly readyState = 0;
  readonly protocol = '';
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onopen: ((ev: unknown) => void) | null = null;
  constructor(readonly url: string, readonly protocols?: string | string[]) {}
  binaryType = 'blob';
  send(_data: string | Uint8Array): void {}
  close(_code?: number, _reason?: string): void {}
}
const socketCtor: WebSocketConstructor = FakeSocket;

const options: ChorusOptions = {
  token: async () => 'a token',
  getToken: async () => 'a fresh token',
  tokenRefreshMargin: 5000,
  WebSocket: socketCtor,
  protocols: ['chorus.v1'],
  transports: ['websocket', 'sse'],
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  pingInterval: 25000,
  pingTimeout: 10000,
  requestTimeout: 10000,
  connectTimeout: 10000,
  maxOfflineQueue: 100,
  publishRetry: { deadlineMs: 10000, minDelayMs: 100, maxDelayMs: 2000 },
};
const retryOff: ChorusOptions = { publishRetry: false };
const retryOptions: PublishRetryOptions = { deadlineMs: 500 };
// @ts-expect-error publishRetry is options or false, not true
new Chorus('ws://x/ws', { publishRetry: true });
const client = new Chorus('ws://127.0.0.1:8080/ws', options);
const fromOptions: Chorus = new Default({ token: 'static token' });
new Chorus();
// @ts-expect-error requestTimeout is a number of ms
new Chorus('ws://x/ws', { requestTimeout: '10s' });

const url: string = client.url;
const state: ConnectionState = client.state;
const clientId: string | null = client.clientId;
const nodeId: string | null = client.nodeId;
const transport: 'websocket' | 'sse' = client.transport;
// @ts-expect-error the state is the SDK's to change
client.state = 'connected';

// Every event of the client, with its argument types.
client
  .on('connecting', (ev: ConnectingEvent) => void [ev.url, ev.attempt])
  .on('connected', (ev: ConnectedEvent) => void [ev.client, ev.node, ev.v])
  .on('disconnected', (ev: DisconnectedEvent) => void [ev.code, ev.reason, ev.willReconnect])
  .on('reconnecting', (ev: ReconnectingEvent) => void [ev.attempt, ev.delay, ev.code, ev.reason])
  .on('epoch', (ev: EpochEvent) => void [ev.channel, ev.epoch, ev.seq])
  .on('gap', (ev: GapEvent) => void [ev.channel, ev.epoch, ev.from, ev.to, ev.source, ev.expected, ev.got])
  .on('message', (msg: Message) => void [msg.op, msg.ch, msg.seq, msg.ts, msg.client, msg.data])
  .on('error', (e: Error) => void e.message)
  .on('state', (now: ConnectionState, previous: ConnectionState) => void [now, previous])
  .on('join', (frame) => void [frame.op satisfies 'join', frame.ch, frame.user, frame.info, frame.client])
  .on('leave', (frame) => void [frame.op satisfies 'leave', frame.ch])
  .on('subscribed', (ev: ClientSubscribedEvent) => void [ev.subscription.channel, ev.byServer, ev.seq])
  .on('unsubscribed', (ev: UnsubscribedEvent) => void [ev.channel, ev.byServer, ev.reason])
  .on('token', (ev: TokenEvent) => void [ev.user, ev.exp]);
// @ts-expect-error getToken returns a token, not a number
new Chorus('ws://x/ws', { getToken: () => 42 });
// @ts-expect-error no such event
client.on('hello', () => {});
// @ts-expect-error a state listener gets states, not events
client.on('state', (ev: DisconnectedEvent) => void ev);
const onState: ChorusEvents['state'] = () => {};
client.once('state', onState).off('state', onState).off('state');
const hadListener: boolean = client.emit('state', 'connected', 'connecting');
const listeners: number = client.listenerCount('message');

interface Chat {
  text: string;
}

async function useClient(): Promise<void> {
  await client.connect();
  await client.ready(5000);
  await client.ready();

  const seq: number = await client.publish('chat:lobby', { text: 'hi' });
  const publishOptions: PublishOptions = { key: 'order-77' };
  await client.publish('chat:lobby', { text: 'once' }, publishOptions);
  // @ts-expect-error a key is a string
  await client.publish('chat:lobby', 1, { key: 77 });
  const bytes: BinaryData = new Uint8Array([1, 2, 3]);
  await client.publish('files:x', bytes, { key: 'upload-1' });
  await client.publish('files:x', new ArrayBuffer(8));
  await client.publish('files:x', new DataView(new ArrayBuffer(2)));
  const blob: BlobLike = { size: 0, type: '', arrayBuffer: async () => new ArrayBuffer(0) };
  await client.publish('files:x', blob);
  const binSub: Subscription<Uint8Array> = await client.subscribe<Uint8Array>('files:x', (data, msg) => {
    const first: number | undefined = data[0];
    void [first, msg.bin];
  });
  await binSub.publish(new Uint8Array([4]));
  const history: HistoryResult<Chat> = await client.history<Chat>('chat:lobby', { limit: 10 });
  const first: Chat | undefined = history.msgs[0]?.data;
  void [history.ch, history.epoch, history.seq, first];
  const since: StreamPosition = { epoch: history.epoch, seq: history.seq };
  const historyOptions: HistoryOptions = { since, limit: 5 };
  await client.history('chat:lobby', historyOptions);
  await client.history('chat:lobby');

  const presence: PresenceResult = await client.presence('chat:lobby');
  const members: PresenceMember[] | undefined = presence.members;
  void [presence.count, members?.[0]?.user, members?.[0]?.info, members?.[0]?.client];
  const rtt: number = await client.ping();

  const sub: Subscription<Chat> = await client.subscribe<Chat>('chat:lobby', (data, msg) => {
    const text: string = data.text;
    const m: Message<Chat> = msg;
    void [text, m];
  });
  const subscribeOptions: SubscribeOptions = { since };
  await client.subscribe('secret:room', { token: 'a subscription token' });
  await client.subscribe('secret:room2', () => {}, { token: async (ch: string) => `token for ${ch}` });
  // @ts-expect-error a subscription token is a string or a callback
  await client.subscribe('secret:room3', { token: 7 });
  const resumed: Subscription<Json> = await client.subscribe('chat:other', subscribeOptions);
  await client.subscribe('chat:third', undefined, { since });
  await client.subscribe('chat:fourth');
  // @ts-expect-error a channel name is a string
  await client.subscribe(42);

  const held: Subscription | undefined = client.getSubscription('chat:lobby');
  const all: Subscription[] = client.subscriptions();
  void [seq, rtt, resumed, held, all];

  // A subscription: its state, its position and every one of its events.
  const channel: string = sub.channel;
  const subState: 'subscribing' | 'subscribed' | 'unsubscribed' = sub.state;
  const epoch: string | null = sub.epoch;
  const lastSeq: number = sub.seq;
  const position: StreamPosition | null = sub.position;
  const lastAck: SubscribedContext | null = sub.lastAck;
  const recovered: boolean | undefined = sub.recovered;
  void [channel, subState, epoch, lastSeq, position, lastAck, recovered];
  // @ts-expect-error the position is the SDK's to keep
  sub.seq = 0;

  sub
    .on('message', (data: Chat, msg: Message<Chat>) => void [data.text, msg.seq])
    .on('subscribed', (ctx: SubscribedContext) =>
      void [ctx.channel, ctx.epoch, ctx.seq, ctx.resubscribed, ctx.wasRecovering, ctx.recovered, ctx.byServer])
    .on('unrecovered', (ctx: SubscribedContext) => void ctx.recovered)
    .on('epoch', (ev: EpochEvent) => void ev.epoch)
    .on('gap', (ev: GapEvent) => void [ev.from, ev.to])
    .on('error', (e: ChorusError) => void e.code)
    .on('unsubscribed', (ev: UnsubscribedEvent) => void [ev.channel, ev.byServer, ev.reason])
    .on('join', (frame: PresenceEvent & { op: 'join' }) => void frame.user)
    .on('leave', (frame: PresenceEvent & { op: 'leave' }) => void frame.user);
  // @ts-expect-error a subscription has no state event
  sub.on('state', () => {});
  const onGap: SubscriptionEvents<Chat>['gap'] = () => {};
  sub.once('gap', onGap).off('gap', onGap).off('gap');
  const subHadListener: boolean = sub.emit('unsubscribed', { channel: 'chat:lobby', byServer: false });
  const subListeners: number = sub.listenerCount('message');
  void [subHadListener, subListeners];

  const subSeq: number = await sub.publish({ text: 'from the subscription' });
  await sub.publish({ text: 'keyed' }, { key: 'k1' });
  // @ts-expect-error this subscription carries Chat messages
  await sub.publish({ title: 'not a chat message' });
  const subHistory: HistoryResult<Chat> = await sub.history({ limit: 3 });
  await sub.history();
  const subPresence: PresenceResult = await sub.presence();
  const done: void = await sub.unsubscribe();
  void [subSeq, subHistory, subPresence, done];
  // @ts-expect-error subscriptions come from Chorus#subscribe
  new Subscription();

  client.close();
}

void [exp, version, protocol, closeCodes, retryOff, retryOptions, errName, errCode, errReply, asError, fromOptions, url, state, clientId, nodeId, transport,
  hadListener, listeners, useClient];
