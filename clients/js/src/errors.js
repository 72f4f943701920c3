// The SDK's error classes.

import { CloseCodeName, TEMPORARY_ERROR_CODES, shouldReconnect } from './constants.js';

/** An error of the gateway (an `error` frame) or of the SDK. */
export class AgentMemError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string|number, temporary?: boolean, details?: Array<{path: string, problem: string}>, cause?: unknown}} [options]
   */
  constructor(message, options = {}) {
    super(message, options.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'AgentMemError';
    /** The error code (`unknown_topic`, `invalid_event`, …; see ErrorCode). */
    this.code = options.code ?? 'internal';
    /** Whether retrying later may succeed. */
    this.temporary = options.temporary ?? TEMPORARY_ERROR_CODES.includes(this.code);
    /** `[{path, problem}]` pointing into the request, when the gateway gave them. */
    this.details = options.details ?? [];
  }

  /** An error from the body of an `error` frame or of a batch item's `error`. */
  static fromFrame(frame) {
    return new AgentMemError(frame.message ?? frame.code ?? 'error', {
      code: frame.code ?? 'internal',
      temporary: frame.temporary,
      details: Array.isArray(frame.details) ? frame.details : [],
    });
  }
}

/**
 * The connection closed for good (or the call could not be sent because it did): `code` is
 * the WebSocket close code, `reason` the close reason, `reconnectable` whether the protocol
 * allows reconnecting after it.
 */
export class ConnectionClosedError extends AgentMemError {
  /**
   * @param {string} message
   * @param {{code: number, reason?: string, reconnectable?: boolean, cause?: unknown}} options
   */
  constructor(message, options) {
    const reconnectable = options.reconnectable ?? shouldReconnect(options.code);
    super(message, { code: options.code, temporary: reconnectable, cause: options.cause });
    this.name = 'ConnectionClosedError';
    this.reason = options.reason ?? '';
    this.reconnectable = reconnectable;
    /** The protocol's name of the close code (`token_expired`, …), when it has one. */
    this.codeName = CloseCodeName[options.code] ?? null;
  }
}

/** A call did not complete in time. */
export class TimeoutError extends AgentMemError {
  constructor(message, options = {}) {
    super(message, { code: 'timeout', temporary: true, cause: options.cause });
    this.name = 'TimeoutError';
  }
}
