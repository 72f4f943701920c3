// Close codes and error codes of the agentmem.v1 WebSocket protocol (docs/protocol.md).

/** Close codes the gateway (and the WebSocket layer) use. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  ENDPOINT_GOING_AWAY: 1001,
  NO_STATUS: 1005,
  ABNORMAL: 1006,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  GOING_AWAY: 4000,
  SLOW_CONSUMER: 4001,
  NO_PONG: 4002,
  SERVER_ERROR: 4003,
  AUTH_TIMEOUT: 4004,
  TOKEN_EXPIRED: 4005,
  TOO_MANY_CONNECTIONS: 4006,
  INVALID_TOKEN: 4500,
  FORBIDDEN: 4501,
  PROTOCOL_VIOLATION: 4502,
});

/** The protocol's name of each close code (`4005` → `"token_expired"`). */
export const CloseCodeName = Object.freeze({
  1000: 'normal',
  1001: 'endpoint_going_away',
  1005: 'no_status',
  1006: 'abnormal',
  1009: 'message_too_big',
  1011: 'internal_error',
  1012: 'service_restart',
  1013: 'try_again_later',
  4000: 'going_away',
  4001: 'slow_consumer',
  4002: 'no_pong',
  4003: 'server_error',
  4004: 'auth_timeout',
  4005: 'token_expired',
  4006: 'too_many_connections',
  4500: 'invalid_token',
  4501: 'forbidden',
  4502: 'protocol_violation',
});

/**
 * Whether a client should reconnect (with backoff) after a close with `code`:
 * 4000–4499, and the transient WebSocket codes 1001, 1006, 1011, 1012, 1013.
 * 4500–4999, 1000 and 1009 mean: do not reconnect without fixing something first.
 */
export function shouldReconnect(code) {
  return (code >= 4000 && code < 4500) || code === 1001 || code === 1006 ||
    code === 1011 || code === 1012 || code === 1013;
}

/** Error codes of `error` frames (and of batch item errors). */
export const ErrorCode = Object.freeze({
  INVALID_FRAME: 'invalid_frame',
  INVALID_EVENT: 'invalid_event',
  UNKNOWN_OP: 'unknown_op',
  UNKNOWN_TOPIC: 'unknown_topic',
  UNAUTHORIZED: 'unauthorized',
  FORBIDDEN: 'forbidden',
  TOO_LARGE: 'too_large',
  RATE_LIMITED: 'rate_limited',
  LIMIT_EXCEEDED: 'limit_exceeded',
  UNAVAILABLE: 'unavailable',
  INVALID_OFFSET: 'invalid_offset',
  UNKNOWN_SUBSCRIPTION: 'unknown_subscription',
  UNKNOWN_SMARTMODULE: 'unknown_smartmodule',
  INVALID_SMARTMODULE_PARAMS: 'invalid_smartmodule_params',
  SMARTMODULE_RECORD_ERROR: 'smartmodule_record_error',
  SMARTMODULE_TRAP: 'smartmodule_trap',
  SMARTMODULE_FUEL_EXHAUSTED: 'smartmodule_fuel_exhausted',
  SMARTMODULE_MEMORY_LIMIT: 'smartmodule_memory_limit',
  SMARTMODULE_FAILED: 'smartmodule_failed',
  SMARTMODULE_BAD_OUTPUT: 'smartmodule_bad_output',
  INTERNAL: 'internal',
  // Raised by the SDK itself, never sent by the gateway.
  TIMEOUT: 'timeout',
  CONNECTION_CLOSED: 'connection_closed',
});

/** Codes whose errors are temporary: retrying later may succeed. */
export const TEMPORARY_ERROR_CODES = Object.freeze(['rate_limited', 'unavailable', 'internal']);

/** Subscription errors after which the gateway has ended the subscription. */
export const FATAL_SUBSCRIPTION_ERROR_CODES = Object.freeze([
  'smartmodule_trap',
  'smartmodule_fuel_exhausted',
  'smartmodule_memory_limit',
  'smartmodule_failed',
  'smartmodule_bad_output',
]);

/** Client states. */
export const ClientState = Object.freeze({
  DISCONNECTED: 'disconnected',
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  CLOSED: 'closed',
});

/** Subscription states. */
export const SubscriptionState = Object.freeze({
  UNSUBSCRIBED: 'unsubscribed',
  SUBSCRIBING: 'subscribing',
  SUBSCRIBED: 'subscribed',
});

/** WebSocket subprotocols, by encoding. */
export const Subprotocol = Object.freeze({
  json: 'agentmem.v1.json',
  msgpack: 'agentmem.v1.msgpack',
});
