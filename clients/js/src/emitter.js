// A small event emitter, the same in browsers and Node.

export class Emitter {
  #listeners = new Map();

  /** Call `fn(value)` on every `name` event. Returns this. */
  on(name, fn) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    let set = this.#listeners.get(name);
    if (set === undefined) this.#listeners.set(name, (set = new Set()));
    set.add(fn);
    return this;
  }

  /** Stop calling `fn` on `name` events (every listener of `name` without `fn`). Returns this. */
  off(name, fn) {
    if (fn === undefined) this.#listeners.delete(name);
    else this.#listeners.get(name)?.delete(fn);
    return this;
  }

  /** Call `fn` on the next `name` event only. Returns this. */
  once(name, fn) {
    const wrapper = (value) => {
      this.off(name, wrapper);
      fn(value);
    };
    return this.on(name, wrapper);
  }

  /** How many listeners `name` has. */
  listenerCount(name) {
    return this.#listeners.get(name)?.size ?? 0;
  }

  /** Call the listeners of `name`; an exception of a listener is re-thrown asynchronously. */
  emit(name, value) {
    const set = this.#listeners.get(name);
    if (set === undefined || set.size === 0) return false;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    return true;
  }
}
