// Errors and close codes in plain words, for people reading the console.

/** What each error code means, said as the first sentence of a message. */
const LEADS = {
  invalid_frame: 'The gateway could not read the request.',
  invalid_event: 'The event does not match its schema.',
  unknown_op: 'The gateway does not know this operation.',
  unknown_topic: 'There is no such topic.',
  unauthorized: 'The gateway did not accept the token.',
  forbidden: 'This is not allowed with this token.',
  too_large: 'This is too large for the gateway.',
  rate_limited: 'Too many publishes per second.',
  limit_exceeded: 'A limit of the gateway was reached.',
  unavailable: 'The gateway cannot take writes right now (it may be restarting).',
  invalid_offset: 'A start offset is not valid for this topic.',
  unknown_subscription: 'The gateway does not know this subscription.',
  unknown_smartmodule: 'There is no SmartModule of that name.',
  invalid_smartmodule_params: 'A SmartModule parameter is not valid.',
  smartmodule_record_error: 'A SmartModule failed on one record; the subscription goes on.',
  smartmodule_trap: 'A SmartModule crashed; the subscription has ended.',
  smartmodule_fuel_exhausted: 'A SmartModule ran out of its compute budget; the subscription has ended.',
  smartmodule_memory_limit: 'A SmartModule ran out of memory; the subscription has ended.',
  smartmodule_failed: 'A SmartModule failed; the subscription has ended.',
  smartmodule_bad_output: 'A SmartModule produced output the gateway cannot read; the subscription has ended.',
  internal: 'The gateway failed unexpectedly.',
  timeout: 'The gateway did not answer in time.',
  connection_closed: 'The connection is closed.',
  not_found: 'The gateway has no such route.',
  network: 'The gateway could not be reached.',
};

/**
 * `{title, message, details}` for an SDK error, an HTTP error body, or anything thrown.
 * `details` are `[{path, problem}]` as the gateway gives them.
 */
export function explain(error) {
  if (error === null || error === undefined) return { title: 'Something failed.', message: '', details: [] };
  if (error.name === 'ConnectionClosedError') {
    return { title: describeClose(error.code, error.reason), message: '', details: [] };
  }
  if (error instanceof TypeError && !error.code) {
    return { title: 'The console could not do that.', message: error.message, details: [] };
  }
  const code = typeof error.code === 'string' ? error.code : '';
  const title = LEADS[code] ?? 'The request failed.';
  let message = typeof error.message === 'string' ? error.message : String(error);
  if (message === code || message === title) message = '';
  // "The event does not match its schema: Expected …" after the same title: keep the rest.
  const lead = title.replace(/\.$/, '');
  if (message.startsWith(`${lead}:`)) {
    const rest = message.slice(lead.length + 1).trim();
    message = rest.charAt(0).toUpperCase() + rest.slice(1);
  }
  return { title, message, details: Array.isArray(error.details) ? error.details : [] };
}

/** One line of text for an error: the title and the gateway's message. */
export function sentence(error) {
  const { title, message } = explain(error);
  return message ? `${title} ${message}` : title;
}

const CLOSES = {
  1000: 'The connection was closed.',
  1001: 'The gateway went away.',
  1006: 'The connection to the gateway was lost (the gateway may be down or restarting).',
  1009: 'A message was larger than the gateway accepts.',
  1011: 'The gateway hit an internal error.',
  1012: 'The gateway is restarting.',
  1013: 'The gateway asked to try again later.',
  4000: 'The gateway is shutting down or restarting.',
  4001: 'The console fell behind the stream; it resumes from its last offsets.',
  4002: 'The gateway heard no answer to its heartbeat.',
  4003: 'The gateway hit an unexpected failure.',
  4004: 'The console did not authenticate in time.',
  4005: 'The token expired.',
  4006: 'This user has too many open sessions.',
  4500: 'The gateway refused the token: it is malformed, expired, or signed with another secret. Paste a valid token and connect again.',
  4501: 'The token lacks the scope needed for a WebSocket session (publish or subscribe).',
  4502: 'The gateway closed the session after too many errors.',
};

/** A close code (and the gateway's reason) in words. */
export function describeClose(code, reason = '') {
  const text = CLOSES[code] ?? `The connection closed (code ${code}).`;
  const extra = reason && !/^(connection lost|client closed)$/.test(reason) ? ` (${reason})` : '';
  return text + extra;
}

/** `$.event.payload.importance` → `importance`; null when the path is not in the payload. */
export function payloadField(path) {
  const match = /^\$\.event\.payload\.([A-Za-z_][A-Za-z0-9_]*)/.exec(path ?? '');
  return match ? match[1] : null;
}
