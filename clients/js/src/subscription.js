// One subscription: its state, its next offsets, its listeners and async iterators.

import { FATAL_SUBSCRIPTION_ERROR_CODES } from './constants.js';
import { Emitter } from './emitter.js';

export class Subscription extends Emitter {
  /** @internal: created by `Client.subscribe`. */
  constructor(client, name, topic, from, filters) {
    super();
    this.client = client;
    /** The subscription's name in the session (the protocol's `sub`). */
    this.name = name;
    this.topic = topic;
    this.filters = filters;
    /** `unsubscribed`, `subscribing` or `subscribed`. */
    this.state = 'unsubscribed';
    /** Counters: `events` delivered, `duplicates` dropped, `resubscribes` after reconnects. */
    this.stats = { events: 0, duplicates: 0, resubscribes: 0 };
    this._from = from;
    this._positions = null; // {"<partition>": next offset}, once the gateway answered `subscribed`
    this._ended = false;
    this._unsubscribing = null;
    this._iterators = new Set();
    this._endError = null;
    this.ready = new Promise((resolve, reject) => {
      this._readyResolve = resolve;
      this._readyReject = reject;
    });
    this.ready.catch(() => {}); // rejections are also given to 'error' listeners and iterators
  }

  /**
   * The next offset to deliver per partition (`{"0": 12, …}`): the `subscribed` positions,
   * advanced past every delivered record. A reconnect resumes from these. `null` until the
   * gateway has answered the first `subscribe`.
   */
  get positions() {
    return this._positions === null ? null : { ...this._positions };
  }

  /** Whether the subscription has ended (unsubscribed, failed, or its client closed). */
  get ended() {
    return this._ended;
  }

  /** Stop the subscription. Resolves once the gateway confirmed (or at once when offline). */
  unsubscribe() {
    if (this._unsubscribing !== null) return this._unsubscribing;
    if (this._ended) return Promise.resolve();
    const done = () => this._end('unsubscribed', null, 'unsubscribed');
    this._unsubscribing = this.client._unsubscribe(this).then(done, done);
    return this._unsubscribing;
  }

  /** Iterate over the delivered records: `for await (const record of sub) …`. */
  [Symbol.asyncIterator]() {
    const queue = [];
    let head = 0;
    let waiter = null;
    let finished = false;
    let failure = null;
    const sink = {
      push: (record) => {
        if (waiter !== null) {
          const w = waiter;
          waiter = null;
          w.resolve({ value: record, done: false });
        } else {
          queue.push(record);
        }
      },
      end: (error) => {
        finished = true;
        failure = error;
        if (waiter !== null) {
          const w = waiter;
          waiter = null;
          if (error) {
            failure = null;
            w.reject(error);
          } else {
            w.resolve({ value: undefined, done: true });
          }
        }
      },
    };
    if (this._ended) sink.end(this._endError);
    else this._iterators.add(sink);
    const iterator = {
      next: () => {
        if (head < queue.length) {
          const value = queue[head];
          queue[head++] = undefined;
          if (head > 1024 && head * 2 > queue.length) {
            queue.splice(0, head);
            head = 0;
          }
          return Promise.resolve({ value, done: false });
        }
        if (finished) {
          if (failure) {
            const error = failure;
            failure = null;
            return Promise.reject(error);
          }
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          waiter = { resolve, reject };
        });
      },
      return: () => {
        this._iterators.delete(sink);
        finished = true;
        failure = null;
        queue.length = 0;
        head = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  // -- called by the client -------------------------------------------------------------------

  /** The `subscribe` frame for the current connection: resume from the positions once known. */
  _frame(id) {
    const frame = { op: 'subscribe', id, sub: this.name, topic: this.topic };
    frame.from = this._positions !== null ? { ...this._positions } : this._from;
    if (this.filters !== undefined) frame.filters = this.filters;
    return frame;
  }

  _setState(state, code, reason) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    const change = { state, previous, code, reason, subscription: this };
    this.emit('state', change);
    this.emit(state, change);
  }

  _subscribing(code, reason) {
    if (this._ended || this._unsubscribing !== null) return;
    this._setState('subscribing', code, reason);
  }

  _onSubscribed(frame) {
    if (this._ended) return;
    const positions = {};
    for (const [partition, offset] of Object.entries(frame.positions ?? {})) {
      positions[partition] = offset;
    }
    if (this._positions !== null) {
      this.stats.resubscribes += 1;
      // Partitions the gateway did not name keep their resume point.
      for (const [partition, offset] of Object.entries(this._positions)) {
        if (!(partition in positions)) positions[partition] = offset;
      }
    }
    this._positions = positions;
    if (this._unsubscribing !== null) return;
    this._setState('subscribed', null, 'subscribed');
    this._readyResolve(this.positions);
  }

  _onEvent(frame) {
    if (this._ended || this._unsubscribing !== null) return;
    const partition = String(frame.partition);
    const next = this._positions?.[partition];
    if (this.filters === undefined && next !== undefined && frame.offset < next) {
      // Already delivered (a chain may output several records per offset: checked only
      // without filters).
      this.stats.duplicates += 1;
      return;
    }
    if (this._positions !== null && (next === undefined || frame.offset + 1 > next)) {
      this._positions[partition] = frame.offset + 1;
    }
    const record = {
      sub: this.name,
      topic: frame.topic,
      partition: frame.partition,
      offset: frame.offset,
      timestamp: frame.timestamp,
      key: frame.key ?? null,
      data: frame.data,
    };
    if (frame.encoding !== undefined) record.encoding = frame.encoding;
    this.stats.events += 1;
    this.emit('event', record);
    for (const sink of this._iterators) sink.push(record);
  }

  /** An `error` frame naming this subscription (`sub`), or answering its `subscribe` (`id`). */
  _onError(error, answersSubscribe) {
    if (this._ended) return;
    this.emit('error', error);
    if (answersSubscribe || FATAL_SUBSCRIPTION_ERROR_CODES.includes(error.code)) {
      this.client._forget(this);
      this._end('unsubscribed', error.code, error.message, error);
    }
  }

  /** The subscription is over: listeners hear `unsubscribed`, iterators finish. */
  _end(state, code, reason, error = null) {
    if (this._ended) return;
    this._ended = true;
    this._endError = error;
    this.client._forget(this);
    if (error) this._readyReject(error);
    else this._readyResolve(this.positions);
    this._setState(state, code, reason);
    for (const sink of this._iterators) sink.end(error);
    this._iterators.clear();
  }
}
