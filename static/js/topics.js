// The topics of the log: partitions and their offsets, read over HTTP.

import { h, replaceChildren } from './dom.js';
import { explain } from './words.js';

export class TopicsPanel {
  /** @param {{api, list, status, refresh, onFollow: (name) => void}} options */
  constructor(options) {
    Object.assign(this, options);
    this.open = new Set();
    this.refresh.addEventListener('click', () => this.load());
  }

  /** Read the topics again in a moment (after publishes: many publishes, one read). */
  loadSoon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), 1000);
  }

  /** Read the topics and each one's offsets; resolves with the topic list (or [] on failure). */
  async load() {
    if (this.list.children.length === 0) this.status.textContent = 'Reading the topics…';
    let topics;
    try {
      topics = await this.api.topics();
    } catch (error) {
      const { title, message } = explain(error);
      this.status.textContent = `The topics could not be read. ${title} ${message}`.trim();
      return [];
    }
    const described = await Promise.all(topics.map((t) => this.api.topic(t.name).catch(() => null)));
    // Re-rendering must not lose the keyboard focus.
    const focused = this.list.contains(document.activeElement) ? document.activeElement.dataset.key : undefined;
    replaceChildren(this.list, topics.map((topic, i) => this.#item(topic, described[i])));
    if (focused) this.list.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
    this.status.textContent = `${topics.length} topics.`;
    return topics;
  }

  #item(topic, description) {
    const partitions = description?.partitions ?? [];
    const stored = partitions.reduce((n, p) => n + (p.end_offset - p.start_offset), 0);
    const written = partitions.reduce((n, p) => n + p.end_offset, 0);
    const detailId = `topic-${topic.name}-partitions`;
    const open = this.open.has(topic.name);
    const table = h('table', { class: 'offsets', id: detailId, hidden: !open },
      h('caption', { class: 'visually-hidden' }, `Partitions of ${topic.name}`),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Partition'), h('th', { scope: 'col' }, 'Oldest offset'), h('th', { scope: 'col' }, 'Next offset'))),
      h('tbody', {}, partitions.map((p) => h('tr', { class: p.end_offset > p.start_offset ? 'has-records' : '' },
        h('th', { scope: 'row' }, String(p.partition)), h('td', {}, String(p.start_offset)), h('td', {}, String(p.end_offset))))));
    const toggle = h('button', {
      type: 'button', class: 'small', 'aria-expanded': String(open), 'aria-controls': detailId,
      'data-key': `${topic.name}/partitions`,
      onclick: () => {
        const opening = table.hidden;
        table.hidden = !opening;
        toggle.setAttribute('aria-expanded', String(opening));
        if (opening) this.open.add(topic.name);
        else this.open.delete(topic.name);
      },
    }, 'Partitions');
    const follow = h('button', {
      type: 'button', class: 'small', 'data-key': `${topic.name}/follow`,
      onclick: () => this.onFollow(topic.name), 'aria-label': `Subscribe to ${topic.name}`,
    }, 'Subscribe…');
    const accepts = topic.client_writable === false
      ? 'written by the memory pipeline only'
      : `accepts ${topic.event_types.length ? topic.event_types.join(', ') : 'any type'}`;
    return h('li', { class: 'topic-card' },
      h('h3', { class: 'topic-name' }, topic.name),
      h('p', { class: 'topic-meta' },
        `${topic.partitions} partitions · ${stored} stored record${stored === 1 ? '' : 's'}`,
        written !== stored ? ` (${written} written)` : '', ` · ${retention(topic.retention_ms)}`),
      h('p', { class: 'hint' }, accepts),
      topic.description ? h('p', { class: 'topic-description' }, topic.description) : null,
      h('div', { class: 'button-row' }, toggle, follow),
      table);
  }
}

function retention(ms) {
  if (ms == null) return 'kept forever';
  const days = ms / 86_400_000;
  if (days >= 1 && Number.isInteger(days)) return `kept ${days} day${days === 1 ? '' : 's'}`;
  const hours = ms / 3_600_000;
  return `kept ${Number.isInteger(hours) ? hours : hours.toFixed(1)} h`;
}
