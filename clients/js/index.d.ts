// Type declarations of @agentmem/client (hand-written; the package ships plain ES modules).

// -- constants ------------------------------------------------------------------------------------

/** Close codes of the protocol (docs/protocol.md) and of the WebSocket layer. */
export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  ENDPOINT_GOING_AWAY: 1001;
  NO_STATUS: 1005;
  ABNORMAL: 1006;
  MESSAGE_TOO_BIG: 1009;
  INTERNAL_ERROR: 1011;
  SERVICE_RESTART: 1012;
  TRY_AGAIN_LATER: 1013;
  GOING_AWAY: 4000;
  SLOW_CONSUMER: 4001;
  NO_PONG: 4002;
  SERVER_ERROR: 4003;
  AUTH_TIMEOUT: 4004;
  TOKEN_EXPIRED: 4005;
  TOO_MANY_CONNECTIONS: 4006;
  INVALID_TOKEN: 4500;
  FORBIDDEN: 4501;
  PROTOCOL_VIOLATION: 4502;
}>;
export type CloseCodeValue = (typeof CloseCode)[keyof typeof CloseCode];

/** The protocol's name of each close code (`4005` → `"token_expired"`). */
export declare const CloseCodeName: Readonly<Record<number, string>>;

/** Whether to reconnect after a close with `code`: 4000–4499, 1001, 1006, 1011–1013. */
export declare function shouldReconnect(code: number): boolean;

/** Error codes of `error` frames, plus the SDK's own `timeout` and `connection_closed`. */
export declare const ErrorCode: Readonly<{
  INVALID_FRAME: 'invalid_frame';
  INVALID_EVENT: 'invalid_event';
  UNKNOWN_OP: 'unknown_op';
  UNKNOWN_TOPIC: 'unknown_topic';
  UNAUTHORIZED: 'unauthorized';
  FORBIDDEN: 'forbidden';
  TOO_LARGE: 'too_large';
  RATE_LIMITED: 'rate_limited';
  LIMIT_EXCEEDED: 'limit_exceeded';
  UNAVAILABLE: 'unavailable';
  INVALID_OFFSET: 'invalid_offset';
  UNKNOWN_SUBSCRIPTION: 'unknown_subscription';
  UNKNOWN_SMARTMODULE: 'unknown_smartmodule';
  INVALID_SMARTMODULE_PARAMS: 'invalid_smartmodule_params';
  SMARTMODULE_RECORD_ERROR: 'smartmodule_record_error';
  SMARTMODULE_TRAP: 'smartmodule_trap';
  SMARTMODULE_FUEL_EXHAUSTED: 'smartmodule_fuel_exhausted';
  SMARTMODULE_MEMORY_LIMIT: 'smartmodule_memory_limit';
  SMARTMODULE_FAILED: 'smartmodule_failed';
  SMARTMODULE_BAD_OUTPUT: 'smartmodule_bad_output';
  INTERNAL: 'internal';
  TIMEOUT: 'timeout';
  CONNECTION_CLOSED: 'connection_closed';
}>;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Codes of temporary errors: `rate_limited`, `unavailable`, `internal`. */
export declare const TEMPORARY_ERROR_CODES: readonly string[];
/** Subscription errors after which the gateway has ended the subscription. */
export declare const FATAL_SUBSCRIPTION_ERROR_CODES: readonly string[];

export type ClientStateName = 'disconnected' | 'connecting' | 'connected' | 'closed';
export type SubscriptionStateName = 'unsubscribed' | 'subscribing' | 'subscribed';

export declare const ClientState: Readonly<{
  DISCONNECTED: 'disconnected';
  CONNECTING: 'connecting';
  CONNECTED: 'connected';
  CLOSED: 'closed';
}>;
export declare const SubscriptionState: Readonly<{
  UNSUBSCRIBED: 'unsubscribed';
  SUBSCRIBING: 'subscribing';
  SUBSCRIBED: 'subscribed';
}>;
export declare const Subprotocol: Readonly<{ json: 'agentmem.v1.json'; msgpack: 'agentmem.v1.msgpack' }>;

/** A UUIDv7, time-ordered (the SDK's default event id). */
export declare function eventId(): string;

/** A random UUID v4. */
export declare function randomId(): string;

// -- errors ---------------------------------------------------------------------------------------

export interface ErrorDetail {
  /** A JSON path into the request: `$.event.payload.importance`, `$.events[1].event.type`. */
  path: string;
  problem: string;
}

/** An error of the gateway (an `error` frame) or of the SDK. */
export declare class AgentMemError<C extends string | number = string> extends Error {
  constructor(
    message: string,
    options?: { code?: C; temporary?: boolean; details?: ErrorDetail[]; cause?: unknown },
  );
  /** `unknown_topic`, `invalid_event`, … (see ErrorCode); a close code for ConnectionClosedError. */
  readonly code: C;
  /** Whether retrying later may succeed. */
  readonly temporary: boolean;
  readonly details: ErrorDetail[];
  static fromFrame(frame: { code: string; message: string; details?: ErrorDetail[]; temporary?: boolean }): AgentMemError;
}

/** The connection closed for good: `code` is the WebSocket close code. */
export declare class ConnectionClosedError extends AgentMemError<number> {
  constructor(message: string, options: { code: number; reason?: string; reconnectable?: boolean; cause?: unknown });
  /** The close reason. */
  readonly reason: string;
  /** Whether the protocol allows reconnecting after this code. */
  readonly reconnectable: boolean;
  /** The protocol's name of the close code (`invalid_token`, …), or null. */
  readonly codeName: string | null;
}

/** A call did not complete in time (`code` is `"timeout"`). */
export declare class TimeoutError extends AgentMemError<'timeout'> {
  constructor(message: string, options?: { cause?: unknown });
}

// -- events and frames ----------------------------------------------------------------------------

/** An event envelope (docs/events.md). `id` is set by the SDK when missing. */
export interface EventEnvelope {
  type: string;
  payload: Record<string, unknown>;
  id?: string;
  timestamp?: number;
  organization_id?: string;
  user_id?: string;
  [field: string]: unknown;
}

/** The answer to a publish: where the event is durable. */
export interface Ack {
  topic: string;
  partition: number;
  offset: number;
  eventId: string;
  /** The event id had been written before: nothing new was written. */
  duplicate: boolean;
}

export type BatchResult = Ack | { error: AgentMemError };

export interface BatchItem {
  event: EventEnvelope;
  key?: string;
}

/** One delivered record. */
export interface DeliveredRecord<T = EventEnvelope> {
  sub: string;
  topic: string;
  partition: number;
  offset: number;
  /** When the log wrote the record (ms since the epoch). */
  timestamp: number;
  key: string | null;
  /** The record value: the stored envelope (or a filter's output); base64 when `encoding` says so. */
  data: T;
  encoding?: 'base64';
}

/** `{"<partition>": <next offset>}` */
export type Positions = Record<string, number>;

export interface Filter {
  smartmodule: string;
  params?: Record<string, string | number | boolean | string[]>;
  aggregate_initial?: string;
  look_back?: { last?: number; age_ms?: number };
}

export interface WelcomeInfo {
  session: string;
  userId: string;
  organizationId: string;
  scopes: string[];
  /** Token expiry, ms since the epoch. */
  expiresAt: number;
  heartbeatMs: number;
}

export interface ClientStateChange {
  state: ClientStateName;
  previous: ClientStateName;
  /** The close code behind the change (`disconnected`, `closed`), else null. */
  code: number | null;
  reason: string;
  url?: string;
  /** `connecting`: the number of failed attempts so far. `disconnected`: this attempt's number. */
  attempt?: number;
  /** `disconnected`: how long until the next attempt. */
  delayMs?: number;
  /** `connected`: the welcome. */
  session?: WelcomeInfo;
  /** `closed`: the error pending calls were rejected with (null when closed by `close()`). */
  error?: ConnectionClosedError | null;
}

export interface SubscriptionStateChange {
  state: SubscriptionStateName;
  previous: SubscriptionStateName;
  /** A close code (connection lost), an error code (subscription failed), or null. */
  code: number | string | null;
  reason: string;
  subscription: Subscription;
}

// -- emitter --------------------------------------------------------------------------------------

export declare class Emitter<Events extends Record<string, unknown> = Record<string, unknown>> {
  on<K extends keyof Events & string>(name: K, fn: (value: Events[K]) => void): this;
  off<K extends keyof Events & string>(name: K, fn?: (value: Events[K]) => void): this;
  once<K extends keyof Events & string>(name: K, fn: (value: Events[K]) => void): this;
  listenerCount(name: keyof Events & string): number;
  emit<K extends keyof Events & string>(name: K, value: Events[K]): boolean;
}

export interface ClientEvents {
  [key: string]: unknown;
  state: ClientStateChange;
  disconnected: ClientStateChange;
  connecting: ClientStateChange;
  connected: ClientStateChange;
  closed: ClientStateChange;
  /** Every `welcome` (after connecting and after each token refresh). */
  welcome: WelcomeInfo;
  token_expiring: { expiresAt: number };
  token_refreshed: WelcomeInfo;
  /** Errors not tied to a call: unreadable frames, getToken failures, auth errors. */
  error: AgentMemError;
}

export interface SubscriptionEvents<T = EventEnvelope> {
  [key: string]: unknown;
  event: DeliveredRecord<T>;
  /** Errors of the subscription (soft SmartModule errors included: delivery goes on). */
  error: AgentMemError;
  state: SubscriptionStateChange;
  unsubscribed: SubscriptionStateChange;
  subscribing: SubscriptionStateChange;
  subscribed: SubscriptionStateChange;
}

// -- client ---------------------------------------------------------------------------------------

export interface ClientOptions {
  /** A JWT. Either `token` or `getToken` is required. */
  token?: string;
  /** Called for each connection and on `token_expiring`; its token is used from then on. */
  getToken?: (context: { reason: 'connect' | 'reconnect' | 'refresh' }) => string | Promise<string>;
  /** `"json"` (default, agentmem.v1.json) or `"msgpack"` (agentmem.v1.msgpack). */
  encoding?: 'json' | 'msgpack';
  /** Full-jitter exponential backoff between attempts: random(0, min(maxMs, baseMs·2^n)). Defaults 250 / 10000. */
  backoff?: { baseMs?: number; maxMs?: number };
  /** Reconnect after reconnectable closes and network failures (default true). */
  reconnect?: boolean;
  /** Give up (state `closed`) after this many failed attempts in a row (default Infinity). */
  maxReconnectAttempts?: number;
  /** How long a connection may take to be welcomed (default 10000 ms). */
  connectTimeoutMs?: number;
  /** Default publish timeout, from the call (default 30000 ms). */
  publishTimeoutMs?: number;
  /** Timeout of unsubscribe and ping (default 15000 ms). */
  requestTimeoutMs?: number;
  /** Re-send a publish answered with a temporary error (rate_limited, unavailable, internal) until its timeout (default true). */
  retryTemporary?: boolean;
  /** A WebSocket class to use instead of the global one (or `ws`). */
  WebSocket?: unknown;
}

export interface PublishOptions {
  /** Record key: events with one key land on one partition, in order. */
  key?: string;
  /** Milliseconds until the promise rejects with TimeoutError (default `publishTimeoutMs`). */
  timeout?: number;
}

export interface SubscribeOptions {
  /** `"end"` (default), `"beginning"`, or the next offset per partition. */
  from?: 'end' | 'beginning' | Record<string | number, number>;
  /** A SmartModule chain (docs/smartmodules.md). */
  filters?: Filter[];
  /** The subscription's name in the session (default `s1`, `s2`, …). */
  name?: string;
}

export declare class Client extends Emitter<ClientEvents> {
  constructor(urls: string | string[], options: ClientOptions);
  readonly urls: string[];
  readonly state: ClientStateName;
  /** What the last welcome said, or null before the first. */
  readonly session: WelcomeInfo | null;
  /** The URL of the current or last connection. */
  readonly url: string | null;
  readonly subscriptions: Subscription[];
  /** Connect and stay connected (reconnecting by itself); resolves on the first welcome. */
  connect(): Promise<WelcomeInfo>;
  /** Close for good; pending calls reject with ConnectionClosedError (code 1000). */
  close(code?: number, reason?: string): Promise<void>;
  /** Resolves once every publish issued so far has settled. */
  flush(): Promise<void>;
  /** Round trip time in ms. */
  ping(options?: { timeout?: number }): Promise<number>;
  publish(topic: string, event: EventEnvelope, options?: PublishOptions): Promise<Ack>;
  publishBatch(topic: string, events: Array<EventEnvelope | BatchItem>, options?: PublishOptions): Promise<BatchResult[]>;
  subscribe<T = EventEnvelope>(topic: string, options?: SubscribeOptions): Subscription<T>;
}

export declare class Subscription<T = EventEnvelope>
  extends Emitter<SubscriptionEvents<T>>
  implements AsyncIterable<DeliveredRecord<T>>
{
  readonly client: Client;
  readonly name: string;
  readonly topic: string;
  readonly filters: Filter[] | undefined;
  readonly state: SubscriptionStateName;
  readonly ended: boolean;
  /** Next offset per partition (resume point), or null before the first `subscribed`. */
  readonly positions: Positions | null;
  /** `events` delivered, `duplicates` dropped, `resubscribes` after reconnects. */
  readonly stats: { events: number; duplicates: number; resubscribes: number };
  /** Resolves with the start positions once subscribed; rejects if the subscribe fails. */
  readonly ready: Promise<Positions | null>;
  unsubscribe(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<DeliveredRecord<T>>;
}
