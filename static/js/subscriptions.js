// Building subscriptions (topic, start position, SmartModule chain) and listing the live ones.

import { h, replaceChildren } from './dom.js';
import { checkConstraints, choiceSelect, clearErrors, field, setError } from './forms.js';
import { explain } from './words.js';

const MAX_CHAIN = 8;

export class SubscriptionsPanel {
  /**
   * @param {{api, client: () => any, onRecord: (record) => void, form, topic, offsets,
   *   chain, addModule, addButton, modulesStatus, error, list}} options
   */
  constructor(options) {
    Object.assign(this, options);
    this.topics = [];
    this.modules = [];
    this.links = []; // [{module, controls: Map<param name, control(s)>, initial}]
    this.rows = new Map(); // subscription → list item parts
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.subscribe();
    });
    this.form.addEventListener('change', (event) => {
      if (event.target.name === 'from' || event.target === this.topic) this.#showOffsets();
    });
    this.addButton.addEventListener('click', () => this.#addLink());
    this.#renderChain();
    this.#renderList();
  }

  setTopics(topics) {
    this.topics = topics;
    const selected = this.topic.value;
    replaceChildren(this.topic, topics.map((t) => h('option', { value: t.name }, t.name)));
    if (topics.some((t) => t.name === selected)) this.topic.value = selected;
    this.#showOffsets();
  }

  setModules(modules) {
    this.modules = modules;
    replaceChildren(this.addModule, modules.map((m) => h('option', { value: m.name }, `${m.name} (${m.kind})`)));
    this.addModule.disabled = this.addButton.disabled = modules.length === 0;
    this.modulesStatus.textContent = modules.length === 0
      ? 'This gateway has no SmartModules.'
      : `${modules.length} SmartModules are registered on this gateway.`;
  }

  modulesFailed(error) {
    this.modulesStatus.textContent = `SmartModules could not be listed: ${explain(error).message || explain(error).title}`;
  }

  /** Preselect `topic` in the builder and move the focus to it. */
  choose(topic) {
    this.topic.value = topic;
    this.#showOffsets();
    this.topic.focus();
  }

  // -- the start position -------------------------------------------------------------------

  #from() {
    return this.form.elements.from.value;
  }

  async #showOffsets() {
    const topic = this.topic.value;
    if (this.#from() !== 'offsets' || !topic) {
      this.offsets.hidden = true;
      replaceChildren(this.offsets);
      return;
    }
    this.offsets.hidden = false;
    replaceChildren(this.offsets, h('p', { class: 'hint' }, `Reading the partitions of ${topic}…`));
    let description;
    try {
      description = await this.api.topic(topic);
    } catch (error) {
      replaceChildren(this.offsets, h('p', { class: 'error-text' }, `The partitions of ${topic} could not be read. ${explain(error).message}`));
      return;
    }
    if (this.topic.value !== topic || this.#from() !== 'offsets') return;
    const inputs = description.partitions.map((p) =>
      h('input', {
        type: 'number', min: 0, step: 1, inputmode: 'numeric', name: `offset-${p.partition}`,
        'data-partition': String(p.partition), placeholder: `end (${p.end_offset})`,
        'aria-label': `Next offset of partition ${p.partition} (stored ${p.start_offset} to ${p.end_offset})`,
      }));
    const oldest = h('button', {
      type: 'button', class: 'small',
      onclick: () => description.partitions.forEach((p, i) => { inputs[i].value = String(p.start_offset); }),
    }, 'Fill in the oldest offsets');
    const none = h('button', {
      type: 'button', class: 'small', onclick: () => inputs.forEach((input) => { input.value = ''; }),
    }, 'Empty all');
    replaceChildren(
      this.offsets,
      h('p', { class: 'hint' }, 'The next offset to deliver, per partition; an empty partition starts at its end.'),
      h('div', { class: 'button-row' }, oldest, none),
      h('table', { class: 'offsets' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Partition'), h('th', { scope: 'col' }, 'Stored'), h('th', { scope: 'col' }, 'Next offset'))),
        h('tbody', {}, description.partitions.map((p, i) =>
          h('tr', {}, h('th', { scope: 'row' }, String(p.partition)), h('td', {}, `${p.start_offset}–${p.end_offset}`), h('td', {}, inputs[i]))))),
    );
  }

  #fromValue() {
    const from = this.#from();
    if (from !== 'offsets') return from;
    const positions = {};
    for (const input of this.offsets.querySelectorAll('input[data-partition]')) {
      if (input.value !== '') positions[input.dataset.partition] = Number(input.value);
    }
    return positions;
  }

  // -- the SmartModule chain ----------------------------------------------------------------

  #addLink() {
    const module = this.modules.find((m) => m.name === this.addModule.value);
    if (!module || this.links.length >= MAX_CHAIN) return;
    this.links.push({ module, controls: new Map(), initial: null });
    this.#renderChain();
    this.chain.lastElementChild?.querySelector('input, select, button')?.focus();
  }

  #move(index, by) {
    const [link] = this.links.splice(index, 1);
    this.links.splice(index + by, 0, link);
    this.#renderChain();
    this.chain.children[index + by]?.querySelector(`[data-move="${by}"]`)?.focus();
  }

  #remove(index) {
    this.links.splice(index, 1);
    this.#renderChain();
    (this.chain.children[Math.min(index, this.links.length - 1)]?.querySelector('input, select, button') ?? this.addModule).focus();
  }

  #renderChain() {
    // Keep what was typed: controls are re-used across renders.
    const items = this.links.map((link, index) => {
      const { module } = link;
      const params = module.params ?? [];
      const rows = params.map((param) => this.#paramField(link, param));
      if (module.kind === 'aggregate') {
        link.initial ??= h('input', { type: 'text', placeholder: 'empty' });
        rows.push(field({ label: 'Initial accumulator', control: link.initial, hint: 'Starting state, as the module expects it (JSON for event-aggregate).' }).row);
      }
      const label = `${index + 1}. ${module.name}`;
      return h('li', { class: 'chain-link' },
        h('fieldset', {},
          h('legend', {}, label, h('span', { class: 'kind' }, ` ${module.kind}`)),
          h('p', { class: 'hint' }, module.description),
          rows.length ? rows : h('p', { class: 'hint' }, 'No parameters.'),
          h('div', { class: 'button-row' },
            h('button', { type: 'button', class: 'small', 'data-move': '-1', disabled: index === 0, 'aria-label': `Move ${module.name} up`, onclick: () => this.#move(index, -1) }, 'Up'),
            h('button', { type: 'button', class: 'small', 'data-move': '1', disabled: index === this.links.length - 1, 'aria-label': `Move ${module.name} down`, onclick: () => this.#move(index, 1) }, 'Down'),
            h('button', { type: 'button', class: 'small danger', 'aria-label': `Remove ${module.name} from the chain`, onclick: () => this.#remove(index) }, 'Remove'))));
    });
    replaceChildren(this.chain, items);
    this.chain.hidden = items.length === 0;
    this.addButton.disabled = this.modules.length === 0 || this.links.length >= MAX_CHAIN;
  }

  #paramField(link, param) {
    let control = link.controls.get(param.name);
    const defaultText = param.default != null ? `default ${param.default}` : 'module default';
    if (control === undefined) {
      control = makeParamControl(param, defaultText);
      link.controls.set(param.name, control);
    }
    if (control.tagName === 'FIELDSET') {
      return h('div', { class: 'field' }, control, h('p', { class: 'hint' }, param.description ?? ''));
    }
    return field({ label: param.name, control, hint: param.description ?? '', required: param.required }).row;
  }

  #filters() {
    return this.links.map(({ module, controls, initial }) => {
      const params = {};
      for (const param of module.params ?? []) {
        const value = paramValue(param, controls.get(param.name));
        if (value !== undefined) params[param.name] = value;
      }
      const link = { smartmodule: module.name };
      if (Object.keys(params).length > 0) link.params = params;
      if (initial && initial.value !== '') link.aggregate_initial = initial.value;
      return link;
    });
  }

  // -- subscribing --------------------------------------------------------------------------

  async subscribe() {
    this.#showError(null);
    clearErrors(this.form);
    const invalid = checkConstraints(this.form);
    if (invalid) {
      invalid.focus();
      return;
    }
    const client = this.client();
    if (client === null) {
      this.#showError({ title: 'Connect first.', message: 'Subscriptions run on the WebSocket connection.' });
      return;
    }
    const topic = this.topic.value;
    const filters = this.#filters();
    let sub;
    try {
      sub = client.subscribe(topic, { from: this.#fromValue(), filters: filters.length ? filters : undefined });
    } catch (error) {
      this.#showError(explain(error));
      return;
    }
    this.#track(sub, filters);
    try {
      await sub.ready;
    } catch (error) {
      this.#showError(explain(error), filters);
    }
  }

  #showError(problem, filters = []) {
    if (problem === null) {
      this.error.hidden = true;
      replaceChildren(this.error);
      return;
    }
    // Point at the chain link the gateway names, when it does.
    const culprit = filters.findIndex((f) => (problem.message ?? '').includes(f.smartmodule));
    if (culprit >= 0) {
      const control = this.chain.children[culprit]?.querySelector('input, select');
      if (control) setError(control, problem.message);
    }
    this.error.hidden = false;
    replaceChildren(this.error, h('strong', {}, problem.title), problem.message ? ` ${problem.message}` : '',
      problem.details?.length ? h('ul', {}, problem.details.map((d) => h('li', {}, `${d.path}: ${d.problem}`))) : null);
  }

  #track(sub, filters) {
    const state = h('span', { class: 'sub-state' });
    const info = h('span', { class: 'sub-info' });
    const problem = h('p', { class: 'error-text', hidden: true });
    const stop = h('button', {
      type: 'button', class: 'small', 'aria-label': `Unsubscribe from ${sub.topic}`,
      onclick: () => {
        if (!sub.ended) {
          sub.unsubscribe();
          return;
        }
        this.rows.delete(sub);
        this.#renderList();
        this.topic.focus();
      },
    }, 'Unsubscribe');
    const chain = filters.length ? h('span', { class: 'hint' }, `through ${filters.map((f) => f.smartmodule).join(' → ')}`) : null;
    const item = h('li', { class: 'sub' },
      h('div', { class: 'sub-title' }, h('span', { class: 'topic' }, sub.topic), chain, state),
      stop,
      info, problem);
    const parts = { item, state, info, problem, stop };
    this.rows.set(sub, parts);
    const update = () => this.#updateRow(sub, parts);
    sub.on('state', update);
    sub.on('event', (record) => {
      this.onRecord(record);
      this.#updateInfoSoon(sub, parts);
    });
    sub.on('error', (error) => {
      const { title, message } = explain(error);
      problem.hidden = false;
      problem.textContent = message ? `${title} ${message}` : title;
      update();
    });
    sub.on('unsubscribed', (change) => {
      // A subscription the gateway ended with an error (a string code) stays listed so the
      // error can be read; one ended by the person or with the connection goes away.
      if (typeof change.code === 'string') return;
      this.rows.delete(sub);
      this.#renderList();
    });
    update();
    this.#renderList();
  }

  #updateInfoSoon(sub, parts) {
    if (parts.timer) return;
    parts.timer = setTimeout(() => {
      parts.timer = null;
      this.#updateRow(sub, parts);
    }, 250);
  }

  #updateRow(sub, parts) {
    const words = { subscribing: 'subscribing…', subscribed: 'subscribed', unsubscribed: 'ended' };
    parts.state.textContent = words[sub.state] ?? sub.state;
    parts.state.dataset.state = sub.state;
    if (sub.ended) {
      parts.stop.textContent = 'Remove';
      parts.stop.setAttribute('aria-label', `Remove the ended subscription to ${sub.topic}`);
    }
    const positions = sub.positions;
    const resumed = sub.stats.resubscribes;
    const bits = [`${sub.stats.events} record${sub.stats.events === 1 ? '' : 's'}`];
    if (resumed > 0) bits.push(`resumed from its offsets after ${resumed} reconnect${resumed === 1 ? '' : 's'}`);
    if (positions) {
      const moved = Object.entries(positions).filter(([, offset]) => offset > 0);
      bits.push(moved.length === 0 ? 'all partitions at offset 0' : `next offsets ${moved.slice(0, 6).map(([p, o]) => `p${p}:${o}`).join(', ')}${moved.length > 6 ? ', …' : ''}`);
    }
    parts.info.textContent = bits.join(' · ');
  }

  #renderList() {
    const items = [...this.rows.values()].map((parts) => parts.item);
    replaceChildren(this.list, items.length ? items : h('li', { class: 'hint' }, 'No subscriptions yet: pick a topic above and subscribe.'));
  }
}

function makeParamControl(param, defaultText) {
  const choices = param.choices ?? [];
  switch (param.type) {
    case 'int':
    case 'float':
      return h('input', {
        type: 'number', step: param.type === 'int' ? 1 : 'any', placeholder: defaultText,
        min: param.minimum ?? undefined, max: param.maximum ?? undefined,
      });
    case 'bool':
      return choiceSelect(['true', 'false'], `(${defaultText})`);
    case 'list':
      if (choices.length > 0) {
        return h('fieldset', { class: 'choices' },
          h('legend', {}, param.name, param.required ? ' (required)' : ''),
          choices.map((choice) => h('label', { class: 'inline' }, h('input', { type: 'checkbox', value: choice }), ` ${choice}`)));
      }
      return h('input', { type: 'text', placeholder: `comma separated (${defaultText})` });
    default:
      if (choices.length > 0) return choiceSelect(choices, `(${defaultText})`);
      return h('input', { type: 'text', placeholder: defaultText });
  }
}

function paramValue(param, control) {
  if (control === undefined) return undefined;
  if (control.tagName === 'FIELDSET') {
    const checked = [...control.querySelectorAll('input:checked')].map((input) => input.value);
    return checked.length ? checked : undefined;
  }
  const raw = control.value.trim();
  if (raw === '') return undefined;
  switch (param.type) {
    case 'int':
    case 'float':
      return Number(raw);
    case 'bool':
      return raw === 'true';
    case 'list':
      return raw.split(',').map((item) => item.trim()).filter(Boolean);
    default:
      return raw;
  }
}
