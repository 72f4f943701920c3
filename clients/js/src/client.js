// The client: one WebSocket session at a time, reconnected with backoff, carrying publishes
// (re-sent with the same event id until acknowledged) and subscriptions (resumed from their
// next offsets).

import { shouldReconnect } from './constants.js';
import { Emitter } from './emitter.js';
import { AgentMemError, ConnectionClosedError, TimeoutError } from './errors.js';
import { Subscription } from './subscription.js';
import { eventId, makeCodec, normalizeUrl, resolveWebSocket } from './transport.js';

const OPEN = 1;

const DEFAULTS = Object.freeze({
  encoding: 'json',
  backoff: { baseMs: 250, maxMs: 10_000 },
  reconnect: true,
  maxReconnectAttempts: Infinity,
  connectTimeoutMs: 10_000,
  publishTimeoutMs: 30_000,
  requestTimeoutMs: 15_000,
  retryTemporary: true,
  WebSocket: undefined,
});

export class Client extends Emitter {
  /**
   * @param {string | string[]} urls gateway URL(s), tried in turn: `ws://host:8080/ws`
   *   (`http://host:8080` works too)
   * @param {object} options see index.d.ts (`ClientOptions`)
   */
  constructor(urls, options = {}) {
    super();
    const list = (Array.isArray(urls) ? urls : [urls]).map(normalizeUrl);
    if (list.length === 0) throw new TypeError('give at least one gateway URL');
    if (options.token == null && typeof options.getToken !== 'function') {
      throw new TypeError('give a token or a getToken function');
    }
    this.urls = list;
    this.options = {
      ...DEFAULTS,
      ...options,
      backoff: { ...DEFAULTS.backoff, ...(options.backoff ?? {}) },
    };
    if (!['json', 'msgpack'].includes(this.options.encoding)) {
      throw new TypeError('encoding must be "json" or "msgpack"');
    }
    /** `disconnected`, `connecting`, `connected` or `closed`. */
    this.state = 'disconnected';
    /** What the last `welcome` said: `{session, userId, organizationId, scopes, expiresAt, heartbeatMs}`. */
    this.session = null;
    /** The URL of the current (or last) connection. */
    this.url = null;
    this._token = options.token ?? null;
    this._started = false;
    this._gen = 0; // connection generation: callbacks of older sockets are ignored
    this._ws = null;
    this._codec = null;
    this._attempt = 0;
    this._urlIndex = 0;
    this._reconnectTimer = null;
    this._welcomeTimer = null;
    this._errorTimer = null;
    this._heartbeatTimer = null;
    this._lastFrameAt = 0;
    this._lastError = null;
    this._closedError = null;
    this._connectWaiters = [];
    this._nextId = 1;
    this._nextSub = 1;
    this._outbox = new Set(); // publishes and batches not yet acknowledged, in call order
    this._requests = new Map(); // request id → entry, for the current connection
    this._subs = new Map(); // name → Subscription
    this._refreshing = false;
  }

  // -- lifecycle --------------------------------------------------------------------------------

  /**
   * Connect (and stay connected: the client reconnects by itself from now on). Resolves with
   * the `welcome` information once authenticated; rejects when the client closes first.
   */
  connect() {
    if (this.state === 'closed') return Promise.reject(this._closedError ?? this._closed(1000, 'client closed'));
    if (this.state === 'connected') return Promise.resolve(this.session);
    const promise = new Promise((resolve, reject) => this._connectWaiters.push({ resolve, reject }));
    if (!this._started) {
      this._started = true;
      this._open();
    }
    return promise;
  }

  /**
   * Close for good: pending publishes are rejected with a ConnectionClosedError (code 1000),
   * subscriptions end. Wait for `flush()` first to let publishes finish.
   */
  close(code = 1000, reason = 'client closed') {
    if (this.state === 'closed') return Promise.resolve();
    const ws = this._ws;
    this._gen += 1;
    this._teardown();
    this._terminate(code, reason, null, true);
    if (ws === null || ws.readyState > OPEN) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, 1000);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      ws.onclose = done;
      ws.onerror = () => {};
      try {
        ws.close(code, reason);
      } catch {
        done();
      }
    });
  }

  /** Resolves once every publish issued so far has been acknowledged or has failed. */
  async flush() {
    await Promise.allSettled([...this._outbox].map((entry) => entry.promise));
  }

  /** Round trip time to the gateway in milliseconds (a `ping` with an id). */
  ping(options = {}) {
    if (this.state !== 'connected') {
      return Promise.reject(this._closedError ?? new ConnectionClosedError('not connected', { code: 1006, reason: 'not connected' }));
    }
    const started = Date.now();
    return this._request({ kind: 'ping', frame: { op: 'ping' } }, options.timeout ?? this.options.requestTimeoutMs)
      .then(() => Date.now() - started);
  }

  // -- publishing -------------------------------------------------------------------------------

  /**
   * Write one event to `topic`. Resolves with the ack `{topic, partition, offset, eventId,
   * duplicate}` once the event is durable. The envelope gets an `id` when it has none, so a
   * re-send after a reconnect is deduplicated by the gateway.
   */
  publish(topic, event, options = {}) {
    if (typeof topic !== 'string' || topic === '') return Promise.reject(new TypeError('topic must be a non-empty string'));
    if (event === null || typeof event !== 'object' || Array.isArray(event)) {
      return Promise.reject(new TypeError('event must be an envelope object: {type, payload, …}'));
    }
    if (this.state === 'closed') return Promise.reject(this._closedError);
    const envelope = event.id == null ? { ...event, id: eventId() } : event;
    const frame = { op: 'publish', id: 0, topic, event: envelope };
    if (options.key != null) frame.key = String(options.key);
    return this._enqueue({ kind: 'publish', frame }, options.timeout ?? this.options.publishTimeoutMs);
  }

  /**
   * Write several events to `topic` (each an envelope, or `{event, key}`). Resolves with one
   * result per event, in order: `{topic, partition, offset, eventId, duplicate}` or
   * `{error: AgentMemError}` for an event that failed alone.
   */
  publishBatch(topic, events, options = {}) {
    if (typeof topic !== 'string' || topic === '') return Promise.reject(new TypeError('topic must be a non-empty string'));
    if (!Array.isArray(events)) return Promise.reject(new TypeError('events must be an array'));
    if (this.state === 'closed') return Promise.reject(this._closedError);
    const items = events.map((item) => {
      const isItem = item !== null && typeof item === 'object' && 'event' in item && !('type' in item);
      const event = isItem ? item.event : item;
      const rawKey = isItem && item.key != null ? item.key : options.key;
      const key = rawKey != null ? String(rawKey) : null;
      const envelope = event !== null && typeof event === 'object' && !Array.isArray(event) && event.id == null
        ? { ...event, id: eventId() }
        : event;
      return key != null ? { key, event: envelope } : { event: envelope };
    });
    const frame = { op: 'publish_batch', id: 0, topic, events: items };
    return this._enqueue({ kind: 'batch', frame }, options.timeout ?? this.options.publishTimeoutMs);
  }

  // -- subscriptions ----------------------------------------------------------------------------

  /**
   * Follow `topic` from `from` (`"end"` by default, `"beginning"`, or `{partition: next
   * offset}`), through optional SmartModule `filters`. Returns the Subscription at once;
   * `await sub.ready` waits for the gateway's answer.
   */
  subscribe(topic, options = {}) {
    if (typeof topic !== 'string' || topic === '') throw new TypeError('topic must be a non-empty string');
    if (this.state === 'closed') throw this._closedError;
    let from = options.from ?? 'end';
    if (typeof from === 'object' && from !== null) {
      from = Object.fromEntries(Object.entries(from).map(([p, o]) => [String(p), Number(o)]));
    } else if (from !== 'end' && from !== 'beginning') {
      throw new TypeError('from must be "end", "beginning" or {partition: offset}');
    }
    let name = options.name;
    if (name === undefined) {
      do name = `s${this._nextSub++}`; while (this._subs.has(name));
    } else if (this._subs.has(name)) {
      throw new TypeError(`a subscription named ${name} exists`);
    }
    const sub = new Subscription(this, name, topic, from, options.filters);
    this._subs.set(name, sub);
    sub._subscribing(null, 'subscribing');
    if (this.state === 'connected') this._sendSubscribe(sub);
    return sub;
  }

  /** The live subscriptions. */
  get subscriptions() {
    return [...this._subs.values()];
  }

  // -- internals: connections -------------------------------------------------------------------

  _setState(state, change = {}) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    const event = { state, previous, code: change.code ?? null, reason: change.reason ?? '', ...change };
    this.emit('state', event);
    this.emit(state, event);
  }

  async _getToken(reason) {
    if (typeof this.options.getToken === 'function') {
      const token = await this.options.getToken({ reason });
      if (typeof token !== 'string' || token === '') throw new TypeError('getToken must return a non-empty string');
      this._token = token;
    }
    return this._token;
  }

  async _open() {
    const gen = ++this._gen;
    const url = this.urls[this._urlIndex % this.urls.length];
    this.url = url;
    this._lastError = null;
    this._setState('connecting', { code: null, reason: `connecting to ${url}`, url, attempt: this._attempt });
    let WebSocketImpl;
    let codec;
    let token;
    try {
      WebSocketImpl = await resolveWebSocket(this.options.WebSocket);
      codec = await makeCodec(this.options.encoding);
      token = await this._getToken(this.session === null ? 'connect' : 'reconnect');
    } catch (error) {
      if (gen !== this._gen) return;
      this.emit('error', wrap(error, 'could not prepare the connection'));
      this._connectionLost(1006, `could not connect: ${error?.message ?? error}`);
      return;
    }
    if (gen !== this._gen) return;
    let ws;
    try {
      ws = new WebSocketImpl(url, [codec.subprotocol]);
    } catch (error) {
      this.emit('error', wrap(error, `could not open ${url}`));
      this._connectionLost(1006, `could not open ${url}: ${error?.message ?? error}`);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    this._codec = codec;
    this._welcomeTimer = setTimeout(() => {
      this._drop(gen, 1006, `no welcome within ${this.options.connectTimeoutMs} ms`);
    }, this.options.connectTimeoutMs);
    ws.onopen = () => {
      if (gen !== this._gen) return;
      this._lastFrameAt = Date.now();
      this._sendFrame({ op: 'auth', token });
    };
    ws.onmessage = (message) => {
      if (gen === this._gen) this._onMessage(message.data);
    };
    ws.onerror = (event) => {
      if (gen !== this._gen) return;
      const cause = event?.error ?? event?.message;
      if (cause) this._socketError = cause;
      // A close event follows an error event; some implementations (Node 20's experimental
      // global WebSocket on a refused connection) never send it.
      this._errorTimer ??= setTimeout(() => {
        this._drop(gen, 1006, describe(this._socketError) || 'connection failed');
      }, 500);
    };
    ws.onclose = (event) => {
      if (gen !== this._gen) return;
      this._teardown();
      this._connectionLost(event.code || 1006, event.reason || describe(this._socketError) || 'connection lost');
    };
  }

  /** Forget the current socket: no more callbacks, no timers. */
  _teardown() {
    clearTimeout(this._errorTimer);
    this._errorTimer = null;
    clearTimeout(this._welcomeTimer);
    clearInterval(this._heartbeatTimer);
    clearTimeout(this._reconnectTimer);
    this._welcomeTimer = this._heartbeatTimer = this._reconnectTimer = null;
    const ws = this._ws;
    this._ws = null;
    this._socketError = null;
    if (ws !== null) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {};
    }
    return ws;
  }

  /** Give up on the current socket at once (dead or silent) and handle it as lost. */
  _drop(gen, code, reason) {
    if (gen !== this._gen) return;
    const ws = this._teardown();
    this._gen += 1;
    if (ws !== null) {
      try {
        if (typeof ws.terminate === 'function') ws.terminate();
        else ws.close();
      } catch {
        // already closed
      }
    }
    this._connectionLost(code, reason);
  }

  _connectionLost(code, reason) {
    if (this.state === 'closed') return;
    // Requests of the lost session: publishes stay in the outbox (re-sent after the next
    // welcome), subscriptions are re-sent, the others end.
    const requests = [...this._requests.values()];
    this._requests.clear();
    for (const entry of requests) {
      entry.requestId = null;
      if (entry.kind === 'ping') {
        this._settle(entry, null, new ConnectionClosedError(`connection lost: ${reason}`, { code, reason }));
      } else if (entry.kind === 'unsubscribe') {
        this._settle(entry, {}, null); // the session, and so the subscription, is gone
      }
    }
    for (const sub of this._subs.values()) sub._subscribing(code, reason);

    const canRetry =
      this.options.reconnect &&
      shouldReconnect(code) &&
      !(code === 4005 && typeof this.options.getToken !== 'function') &&
      this._attempt < this.options.maxReconnectAttempts;
    if (!canRetry) {
      this._terminate(code, reason, this._lastError, false);
      return;
    }
    const { baseMs, maxMs } = this.options.backoff;
    const delayMs = Math.round(Math.random() * Math.min(maxMs, baseMs * 2 ** Math.min(this._attempt, 30)));
    this._attempt += 1;
    this._urlIndex += 1;
    this._setState('disconnected', { code, reason, delayMs, attempt: this._attempt });
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (this.state !== 'closed') this._open();
    }, delayMs);
  }

  _closed(code, reason, cause) {
    return new ConnectionClosedError(
      reason ? `connection closed (${code}): ${reason}` : `connection closed (${code})`,
      { code, reason, reconnectable: false, cause: cause ?? undefined },
    );
  }

  /** Move to `closed`: reject everything pending, end the subscriptions. */
  _terminate(code, reason, cause, byUser) {
    const error = this._closed(code, reason, cause);
    this._closedError = error;
    this._setState('closed', { code, reason, error: byUser ? null : error });
    for (const entry of [...this._outbox, ...this._requests.values()]) this._settle(entry, null, error);
    this._outbox.clear();
    this._requests.clear();
    for (const sub of [...this._subs.values()]) {
      sub._end('unsubscribed', code, reason, byUser ? null : error);
    }
    this._subs.clear();
    const waiters = this._connectWaiters;
    this._connectWaiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }

  // -- internals: frames ------------------------------------------------------------------------

  _sendFrame(frame) {
    const ws = this._ws;
    if (ws === null || ws.readyState !== OPEN) return false;
    ws.send(this._codec.encode(frame));
    return true;
  }

  _onMessage(data) {
    this._lastFrameAt = Date.now();
    let frame;
    try {
      frame = this._codec.decode(data);
    } catch (error) {
      this.emit('error', wrap(error, 'could not decode a frame from the gateway'));
      return;
    }
    if (frame === null || typeof frame !== 'object') return;
    switch (frame.op) {
      case 'welcome':
        this._onWelcome(frame);
        break;
      case 'ack':
      case 'batch_ack':
      case 'unsubscribed':
      case 'pong': {
        const entry = frame.id != null ? this._requests.get(frame.id) : undefined;
        if (entry !== undefined) this._settle(entry, frame, null);
        break;
      }
      case 'subscribed': {
        const entry = this._requests.get(frame.id);
        if (entry !== undefined) this._settle(entry, frame, null);
        else this._subs.get(frame.sub)?._onSubscribed(frame);
        break;
      }
      case 'event':
        this._subs.get(frame.sub)?._onEvent(frame);
        break;
      case 'error':
        this._onError(frame);
        break;
      case 'ping':
        this._sendFrame({ op: 'pong' });
        break;
      case 'token_expiring':
        this._onTokenExpiring(frame);
        break;
      default:
        break; // newer frames: ignored
    }
  }

  _onWelcome(frame) {
    const info = {
      session: frame.session,
      userId: frame.user_id,
      organizationId: frame.organization_id,
      scopes: frame.scopes ?? [],
      expiresAt: frame.expires_at,
      heartbeatMs: frame.heartbeat_ms,
    };
    const refreshed = this.state === 'connected';
    this.session = info;
    this.emit('welcome', info);
    this._startHeartbeat(info.heartbeatMs);
    if (refreshed) {
      this.emit('token_refreshed', info);
      return;
    }
    clearTimeout(this._welcomeTimer);
    this._welcomeTimer = null;
    this._attempt = 0;
    // Restore the session before telling anyone: subscriptions resume from their next
    // offsets, unacknowledged publishes go again with the same event ids.
    for (const sub of this._subs.values()) if (sub._unsubscribing === null) this._sendSubscribe(sub);
    for (const entry of this._outbox) if (entry.requestId === null) this._sendEntry(entry);
    this._setState('connected', {
      code: null,
      reason: `authenticated as ${info.userId} of ${info.organizationId}`,
      session: info,
      url: this.url,
    });
    const waiters = this._connectWaiters;
    this._connectWaiters = [];
    for (const waiter of waiters) waiter.resolve(info);
  }

  _startHeartbeat(heartbeatMs) {
    clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
    if (!(heartbeatMs > 0)) return;
    const gen = this._gen;
    const limit = 2.5 * heartbeatMs;
    this._heartbeatTimer = setInterval(() => {
      if (Date.now() - this._lastFrameAt > limit) {
        this._drop(gen, 1006, `no frame from the gateway for ${limit} ms (2.5 heartbeats)`);
      }
    }, Math.max(50, Math.min(1000, heartbeatMs / 4)));
  }

  async _onTokenExpiring(frame) {
    this.emit('token_expiring', { expiresAt: frame.expires_at });
    if (typeof this.options.getToken !== 'function' || this._refreshing) return;
    this._refreshing = true;
    const gen = this._gen;
    try {
      const token = await this._getToken('refresh');
      if (gen === this._gen) this._sendFrame({ op: 'auth', token });
    } catch (error) {
      // The gateway closes the session with 4005 when the token expires: the reconnect
      // asks getToken again.
      this.emit('error', wrap(error, 'getToken failed while refreshing the token'));
    } finally {
      this._refreshing = false;
    }
  }

  _onError(frame) {
    const error = AgentMemError.fromFrame(frame);
    const entry = frame.id != null ? this._requests.get(frame.id) : undefined;
    if (entry !== undefined) {
      if ((entry.kind === 'publish' || entry.kind === 'batch') && error.temporary && this.options.retryTemporary) {
        this._retryLater(entry, error);
        return;
      }
      if (entry.kind === 'unsubscribe') {
        this._settle(entry, {}, null); // unknown_subscription: it is gone all the same
        return;
      }
      this._settle(entry, null, error);
      return;
    }
    if (frame.sub != null && this._subs.has(frame.sub)) {
      this._subs.get(frame.sub)._onError(error, false);
      return;
    }
    this._lastError = error;
    this.emit('error', error);
  }

  // -- internals: requests ----------------------------------------------------------------------

  /** A publish or batch: kept in the outbox until acknowledged, re-sent after reconnects. */
  _enqueue(entry, timeoutMs) {
    entry.requestId = null;
    entry.settled = false;
    entry.attempts = 0;
    entry.promise = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    this._outbox.add(entry);
    this._arm(entry, timeoutMs);
    if (this.state === 'connected') this._sendEntry(entry);
    return entry.promise;
  }

  /** A request of the current connection only (subscribe, unsubscribe, ping). */
  _request(entry, timeoutMs) {
    entry.requestId = null;
    entry.settled = false;
    entry.attempts = 0;
    entry.promise = new Promise((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    this._arm(entry, timeoutMs);
    this._sendEntry(entry);
    return entry.promise;
  }

  _arm(entry, timeoutMs) {
    if (timeoutMs != null && Number.isFinite(timeoutMs) && timeoutMs > 0) {
      entry.timer = setTimeout(() => {
        const what = entry.kind === 'publish' || entry.kind === 'batch' ? `${entry.kind} to ${entry.frame.topic}` : entry.kind;
        this._settle(entry, null, new TimeoutError(`${what} not answered within ${timeoutMs} ms`, { cause: entry.lastError }));
      }, timeoutMs);
    }
  }

  _sendEntry(entry) {
    if (entry.settled) return;
    const id = this._nextId++;
    entry.frame.id = id;
    entry.requestId = id;
    entry.attempts += 1;
    this._requests.set(id, entry);
    if (!this._sendFrame(entry.frame)) {
      this._requests.delete(id);
      entry.requestId = null;
    }
  }

  _retryLater(entry, error) {
    this._requests.delete(entry.requestId);
    entry.requestId = null;
    entry.lastError = error;
    const { baseMs, maxMs } = this.options.backoff;
    const delay = Math.random() * Math.min(maxMs, baseMs * 2 ** Math.min(entry.attempts, 30));
    clearTimeout(entry.retryTimer);
    entry.retryTimer = setTimeout(() => {
      if (!entry.settled && entry.requestId === null && this.state === 'connected') this._sendEntry(entry);
    }, delay);
  }

  /** Resolve or reject a request exactly once. */
  _settle(entry, frame, error) {
    if (entry.settled) return;
    entry.settled = true;
    clearTimeout(entry.timer);
    clearTimeout(entry.retryTimer);
    if (entry.requestId !== null) this._requests.delete(entry.requestId);
    this._outbox.delete(entry);
    if (error !== null) {
      if (entry.kind === 'subscribe') entry.sub._onError(error, true);
      entry.reject(error);
      return;
    }
    switch (entry.kind) {
      case 'publish':
        entry.resolve({
          topic: frame.topic,
          partition: frame.partition,
          offset: frame.offset,
          eventId: frame.event_id,
          duplicate: Boolean(frame.duplicate),
        });
        break;
      case 'batch':
        entry.resolve(
          (frame.results ?? []).map((result) =>
            result.error !== undefined
              ? { error: AgentMemError.fromFrame(result.error) }
              : {
                  topic: frame.topic,
                  partition: result.partition,
                  offset: result.offset,
                  eventId: result.event_id,
                  duplicate: Boolean(result.duplicate),
                },
          ),
        );
        break;
      case 'subscribe':
        entry.sub._onSubscribed(frame);
        entry.resolve(frame);
        break;
      default:
        entry.resolve(frame);
    }
  }

  _sendSubscribe(sub) {
    const entry = { kind: 'subscribe', sub, frame: null };
    entry.frame = sub._frame(0);
    this._request(entry, null).catch(() => {}); // failures reach the subscription
  }

  /** @internal: called by Subscription.unsubscribe. */
  _unsubscribe(sub) {
    if (!this._subs.has(sub.name)) return Promise.resolve();
    if (this.state !== 'connected') {
      this._forget(sub);
      return Promise.resolve();
    }
    return this._request({ kind: 'unsubscribe', frame: { op: 'unsubscribe', id: 0, sub: sub.name } }, this.options.requestTimeoutMs)
      .finally(() => this._forget(sub));
  }

  /** @internal: the subscription has ended. */
  _forget(sub) {
    if (this._subs.get(sub.name) === sub) this._subs.delete(sub.name);
  }
}

function wrap(error, message) {
  if (error instanceof AgentMemError) return error;
  return new AgentMemError(`${message}: ${error?.message ?? error}`, { code: 'internal', temporary: true, cause: error });
}

function describe(error) {
  if (!error) return '';
  return typeof error === 'string' ? error : error.message ?? String(error);
}
