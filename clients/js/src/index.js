// @agentmem/client: the JavaScript SDK of agentmem-gateway (protocol agentmem.v1).

export { Client } from './client.js';
export { Subscription } from './subscription.js';
export { Emitter } from './emitter.js';
export { AgentMemError, ConnectionClosedError, TimeoutError } from './errors.js';
export {
  ClientState,
  CloseCode,
  CloseCodeName,
  ErrorCode,
  FATAL_SUBSCRIPTION_ERROR_CODES,
  Subprotocol,
  SubscriptionState,
  TEMPORARY_ERROR_CODES,
  shouldReconnect,
} from './constants.js';
export { eventId, randomId } from './transport.js';
