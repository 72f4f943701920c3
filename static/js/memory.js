// Memory search: `POST /api/v1/memories/search`, where the gateway has it.

import { h, replaceChildren } from './dom.js';
import { explain } from './words.js';

export const NOT_AVAILABLE = 'memory search is not available on this gateway';

export class MemorySearch {
  /** @param {{api, form, query, limit, status, results}} options */
  constructor(options) {
    Object.assign(this, options);
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.search();
    });
  }

  async search() {
    const query = this.query.value.trim();
    if (!query) {
      this.status.textContent = 'Type some words to search for.';
      this.query.focus();
      return;
    }
    this.status.textContent = `Searching for “${query}”…`;
    replaceChildren(this.results);
    let body;
    try {
      body = await this.api.searchMemories(query, Number(this.limit.value) || 10);
    } catch (error) {
      if (error.status === 404 || error.status === 405) {
        this.status.textContent = `${NOT_AVAILABLE[0].toUpperCase()}${NOT_AVAILABLE.slice(1)}.`;
        return;
      }
      const { title, message } = explain(error);
      this.status.textContent = `The search failed. ${title} ${message}`.trim();
      return;
    }
    const items = findResults(body);
    this.status.textContent = `${items.length} memor${items.length === 1 ? 'y' : 'ies'} found for “${query}”.`;
    replaceChildren(this.results, items.map((item) => this.#item(item)));
  }

  #item(item) {
    const memory = item.memory ?? item;
    const score = item.score ?? item.similarity ?? memory.score;
    const bits = [memory.memory_type, memory.importance != null ? `importance ${memory.importance}` : null,
      typeof score === 'number' ? `score ${score.toFixed(3)}` : null].filter(Boolean);
    return h('li', { class: 'memory-hit' },
      h('p', { class: 'memory-content' }, String(memory.content ?? JSON.stringify(memory))),
      bits.length ? h('p', { class: 'hint' }, bits.join(' · ')) : null,
      h('details', {}, h('summary', {}, 'JSON'), h('pre', { class: 'record-json' }, JSON.stringify(item, null, 2))));
  }
}

/** The list of hits in a search answer, whatever it is called. */
function findResults(body) {
  if (Array.isArray(body)) return body;
  for (const name of ['data', 'results', 'memories', 'items', 'hits']) {
    if (Array.isArray(body?.[name])) return body[name];
  }
  return [];
}
