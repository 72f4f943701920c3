// The live stream: every record the console's subscriptions deliver, newest first, with
// search, topic and kind filters, pause, clear, and each record expandable to its JSON.
// The list is one tab stop; arrow keys, Home and End move between records.

import { clock, h, replaceChildren, throttleFrame, throttleTime } from './dom.js';
import { summarize } from './schemas.js';

const KEEP = 5000; // records kept in memory
const SHOW = 300; // rows in the page

export class StreamView {
  constructor({ list, status, count, search, topic, kind, pause, clear, empty }) {
    Object.assign(this, { list, status, count, search, topic, kind, pause, clear, empty });
    this.entries = [];
    this.held = [];
    this.paused = false;
    this.seq = 0;
    this.expanded = new Set();
    this.current = null; // seq of the row holding the list's tab stop
    this.pending = [];
    this.flush = throttleFrame(() => this.#flushPending());
    search.addEventListener('input', () => this.render());
    topic.addEventListener('change', () => this.render());
    kind.addEventListener('change', () => this.render());
    pause.addEventListener('click', () => this.setPaused(!this.paused));
    clear.addEventListener('click', () => this.clearAll());
    list.addEventListener('keydown', (event) => this.#onKey(event));
    list.addEventListener('focusin', (event) => {
      const row = event.target.closest('[data-seq]');
      if (row) this.current = Number(row.dataset.seq);
    });
    this.#describe();
  }

  /** A delivered record (`{sub, topic, partition, offset, timestamp, key, data}`). */
  add(record, extra = {}) {
    this.seq += 1;
    const entry = {
      seq: this.seq,
      record,
      arrived: Date.now(),
      memory: record.data?.type === 'memory_update' || record.topic === 'memory-updates',
      text: JSON.stringify(record).toLowerCase(),
      ...extra,
    };
    if (this.paused) {
      this.held.push(entry);
      this.#describeSoon();
      return;
    }
    this.#keep([entry]);
    this.pending.push(entry);
    this.flush();
  }

  /** Topic names offered by the topic filter. */
  setTopics(names) {
    const selected = this.topic.value;
    replaceChildren(
      this.topic,
      h('option', { value: '' }, 'All topics'),
      names.map((name) => h('option', { value: name }, name)),
    );
    this.topic.value = names.includes(selected) ? selected : '';
  }

  setPaused(paused) {
    this.paused = paused;
    this.pause.setAttribute('aria-pressed', String(paused));
    this.pause.textContent = paused ? 'Resume' : 'Pause';
    if (!paused && this.held.length > 0) {
      const held = this.held;
      this.held = [];
      this.#keep(held);
      this.render();
      this.#describe(`Resumed: ${held.length} held record${held.length === 1 ? '' : 's'} added.`);
      setTimeout(() => this.#describe(), 5000);
      return;
    }
    this.#describe();
  }

  clearAll() {
    this.entries = [];
    this.held = [];
    this.pending = [];
    this.expanded.clear();
    this.current = null;
    this.render();
    this.#describe('Cleared.');
  }

  /** Rebuild the rows from the kept records and the filters. */
  render() {
    this.pending = [];
    const rows = [];
    for (let i = this.entries.length - 1; i >= 0 && rows.length < SHOW; i--) {
      const entry = this.entries[i];
      if (this.#matches(entry)) rows.push(this.#row(entry));
    }
    replaceChildren(this.list, rows);
    this.#fixTabStop();
    this.#count();
  }

  #keep(entries) {
    this.entries.push(...entries);
    if (this.entries.length > KEEP) {
      for (const old of this.entries.splice(0, this.entries.length - KEEP)) this.expanded.delete(old.seq);
    }
  }

  #flushPending() {
    const fresh = this.pending.filter((entry) => this.#matches(entry));
    this.pending = [];
    if (fresh.length > 0) {
      const rows = fresh.reverse().map((entry) => this.#row(entry));
      this.list.prepend(...rows);
      while (this.list.children.length > SHOW) this.list.lastElementChild.remove();
      this.#fixTabStop();
    }
    this.#count();
  }

  #matches(entry) {
    const topic = this.topic.value;
    if (topic && entry.record.topic !== topic) return false;
    const kind = this.kind.value;
    if (kind === 'memory' && !entry.memory) return false;
    if (kind === 'events' && entry.memory) return false;
    const words = this.search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    return words.every((word) => entry.text.includes(word));
  }

  #row(entry) {
    const { record } = entry;
    const open = this.expanded.has(entry.seq);
    const detailId = `record-${entry.seq}`;
    const type = record.data?.type ?? (record.encoding === 'base64' ? 'bytes' : 'record');
    const button = h(
      'button',
      {
        type: 'button',
        class: 'record-summary',
        'aria-expanded': String(open),
        'aria-controls': detailId,
        tabindex: '-1',
        onclick: () => this.#toggle(entry, button),
      },
      h('time', { class: 'record-time', datetime: new Date(record.timestamp).toISOString() }, clock(record.timestamp)),
      h('span', { class: 'record-where' },
        h('span', { class: 'topic' }, record.topic),
        h('span', { class: 'position' }, ` partition ${record.partition} · offset ${record.offset}`)),
      h('span', { class: `record-type${entry.memory ? ' memory' : ''}` }, entry.memory ? `memory ${record.data?.payload?.op ?? 'update'}` : type),
      h('span', { class: 'record-text' }, summarize(record.data)),
      entry.note ? h('span', { class: 'record-note' }, entry.note) : null,
    );
    const detail = h('pre', { id: detailId, class: 'record-json', hidden: !open, tabindex: '-1' }, open ? pretty(record) : '');
    return h('li', { class: entry.memory ? 'record memory' : 'record', 'data-seq': String(entry.seq) }, button, detail);
  }

  #toggle(entry, button) {
    const detail = button.nextElementSibling;
    const open = button.getAttribute('aria-expanded') !== 'true';
    button.setAttribute('aria-expanded', String(open));
    detail.hidden = !open;
    if (open) {
      this.expanded.add(entry.seq);
      detail.textContent = pretty(entry.record);
    } else {
      this.expanded.delete(entry.seq);
    }
  }

  /** Exactly one row button is reachable with Tab: the current one, else the newest. */
  #fixTabStop() {
    const buttons = [...this.list.querySelectorAll('.record-summary')];
    if (buttons.length === 0) return;
    let target = buttons.find((b) => Number(b.parentElement.dataset.seq) === this.current);
    if (target === undefined) target = buttons[0];
    for (const button of buttons) button.tabIndex = button === target ? 0 : -1;
  }

  #onKey(event) {
    const button = event.target.closest('.record-summary');
    if (button === null) return;
    const buttons = [...this.list.querySelectorAll('.record-summary')];
    const index = buttons.indexOf(button);
    const moves = { ArrowDown: index + 1, ArrowUp: index - 1, Home: 0, End: buttons.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const next = buttons[Math.max(0, Math.min(buttons.length - 1, moves[event.key]))];
    for (const b of buttons) b.tabIndex = b === next ? 0 : -1;
    next.focus();
  }

  #count() {
    const shown = this.list.children.length;
    const total = this.entries.length;
    this.count.textContent = `Showing ${shown} of ${total} record${total === 1 ? '' : 's'}${total > shown && shown === SHOW ? ` (the newest ${SHOW} that match)` : ''}.`;
    this.empty.hidden = total > 0 || this.held.length > 0;
  }

  #describeSoon = throttleTime(() => this.#describe(), 1000);

  #describe(prefix = '') {
    let text;
    if (this.paused) {
      const n = this.held.length;
      text = `Paused: ${n} new record${n === 1 ? '' : 's'} held until you resume.`;
    } else {
      text = 'Live: new records appear at the top.';
    }
    this.status.textContent = prefix ? `${prefix} ${text}` : text;
    this.#count();
  }
}

function pretty(record) {
  return JSON.stringify(record, null, 2);
}
