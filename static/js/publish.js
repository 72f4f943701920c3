// Publishing: forms generated from the event schemas, or raw JSON, and each ACK or error.

import { clock, h, replaceChildren } from './dom.js';
import { checkConstraints, choiceSelect, clearErrors, field, setError } from './forms.js';
import { EVENT_TYPES, TYPE_NAMES } from './schemas.js';
import { explain, payloadField } from './words.js';

const KEEP_ACKS = 50;

export class PublishPanel {
  /**
   * @param {{client: () => any, onAck: (ms) => void, form, topic, type, typeHint, key, times,
   *   fields, raw, rawText, error, acks}} options
   */
  constructor(options) {
    Object.assign(this, options);
    this.topics = [];
    this.typeForms = new Map(); // type → {container, controls: Map<path, control>}
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.publish();
    });
    this.topic.addEventListener('change', () => this.#renderTypes());
    this.type.addEventListener('change', () => this.#showFields());
    for (const radio of this.form.elements.mode) radio.addEventListener('change', () => this.#switchMode());
    this.setTopics([]);
  }

  setTopics(topics) {
    this.topics = topics;
    const selected = this.topic.value;
    replaceChildren(this.topic, topics.map((t) =>
      h('option', { value: t.name }, t.client_writable === false ? `${t.name} (written by the memory pipeline)` : t.name)));
    const writable = topics.find((t) => t.client_writable !== false);
    if (topics.some((t) => t.name === selected)) this.topic.value = selected;
    else if (writable) this.topic.value = writable.name;
    this.#renderTypes();
  }

  #mode() {
    return this.form.elements.mode.value;
  }

  #renderTypes() {
    const topic = this.topics.find((t) => t.name === this.topic.value);
    const accepted = topic?.event_types?.length ? topic.event_types : TYPE_NAMES;
    const others = TYPE_NAMES.filter((name) => !accepted.includes(name));
    const selected = this.type.value;
    const group = (label, names) => (names.length ? h('optgroup', { label }, names.map((n) => h('option', { value: n }, n))) : null);
    replaceChildren(
      this.type,
      topic ? group(`Accepted by ${topic.name}`, accepted) : accepted.map((n) => h('option', { value: n }, n)),
      group(topic ? `Not accepted by ${topic.name}` : 'Other types', others),
    );
    this.type.value = accepted.includes(selected) ? selected : accepted[0];
    if (topic?.client_writable === false) {
      this.typeHint.textContent = `Only the memory pipeline writes to ${topic.name}: the gateway refuses publishes here.`;
    } else if (topic && !accepted.includes(this.type.value)) {
      this.typeHint.textContent = `${topic.name} does not accept ${this.type.value}: the gateway will refuse it.`;
    } else {
      this.typeHint.textContent = topic ? `${topic.name} accepts ${accepted.join(', ')}.` : '';
    }
    this.#showFields();
  }

  #showFields() {
    const type = this.type.value;
    const topic = this.topics.find((t) => t.name === this.topic.value);
    if (topic && topic.event_types?.length && !topic.event_types.includes(type)) {
      this.typeHint.textContent = `${topic.name} does not accept ${type}: the gateway will refuse it.`;
    }
    if (!this.typeForms.has(type)) this.typeForms.set(type, buildTypeForm(type));
    const { container } = this.typeForms.get(type);
    replaceChildren(this.fields, container);
  }

  #switchMode() {
    const raw = this.#mode() === 'json';
    if (raw) {
      const envelope = this.#envelopeFromForm(false);
      this.rawText.value = JSON.stringify(envelope ?? { type: this.type.value, payload: {} }, null, 2);
    } else {
      this.#loadRaw();
    }
    this.raw.hidden = !raw;
    this.fields.hidden = raw;
  }

  /** Raw JSON back into the form, when it reads as an envelope of a known type. */
  #loadRaw() {
    let envelope;
    try {
      envelope = JSON.parse(this.rawText.value);
    } catch {
      return;
    }
    if (!envelope || !EVENT_TYPES[envelope.type]) return;
    if (![...this.type.options].some((o) => o.value === envelope.type)) return;
    this.type.value = envelope.type;
    this.#showFields();
    const { controls } = this.typeForms.get(envelope.type);
    for (const [path, control] of controls) {
      const value = path.split('.').reduce((v, k) => (v == null ? undefined : v[k]), envelope.payload ?? {});
      if (value === undefined || value === null) control.value = '';
      else control.value = typeof value === 'object' || control.dataset.kind === 'json' ? JSON.stringify(value) : String(value);
    }
  }

  /** The envelope the form describes; null (with errors shown) when it cannot be built. */
  #envelopeFromForm(showErrors = true) {
    const type = this.type.value;
    const { container, controls } = this.typeForms.get(type) ?? {};
    if (!container) return null;
    if (showErrors) {
      const invalid = checkConstraints(container);
      if (invalid) {
        invalid.focus();
        return null;
      }
    }
    const payload = {};
    let bad = null;
    for (const [path, control] of controls) {
      const raw = control.value.trim();
      if (raw === '') continue;
      let value;
      try {
        value = readValue(control, raw);
      } catch (problem) {
        if (showErrors) setError(control, problem.message);
        bad ??= control;
        continue;
      }
      const [head, tail] = path.split('.');
      if (tail === undefined) payload[head] = value;
      else (payload[head] ??= {})[tail] = value;
    }
    if (bad) {
      if (showErrors) bad.focus();
      return null;
    }
    return { type, payload };
  }

  #envelopeFromRaw() {
    let envelope;
    try {
      envelope = JSON.parse(this.rawText.value);
    } catch (problem) {
      setError(this.rawText, `This is not JSON: ${problem.message}`);
      this.rawText.focus();
      return null;
    }
    if (envelope === null || typeof envelope !== 'object' || Array.isArray(envelope)) {
      setError(this.rawText, 'The event must be a JSON object: {"type": …, "payload": {…}}.');
      this.rawText.focus();
      return null;
    }
    return envelope;
  }

  async publish() {
    clearErrors(this.form);
    this.#showError(null);
    const topic = this.topic.value;
    const client = this.client();
    if (client === null) {
      this.#showError({ title: 'Connect first.', message: 'Events are published over the WebSocket connection.' });
      return;
    }
    const common = checkConstraints(this.form.querySelector('.publish-common'));
    if (common) {
      common.focus();
      return;
    }
    const envelope = this.#mode() === 'json' ? this.#envelopeFromRaw() : this.#envelopeFromForm();
    if (envelope === null) return;
    const key = this.key.value.trim();
    const times = Math.max(1, Math.min(1000, Number(this.times.value) || 1));
    const sends = [];
    for (let i = 0; i < times; i++) {
      const event = { ...envelope };
      if (times > 1) delete event.id; // each copy gets its own id
      sends.push(this.#send(client, topic, event, key));
    }
    const results = await Promise.all(sends);
    const failure = results.find((r) => r !== null);
    if (failure) this.#showError(failure, this.#mode());
  }

  /** Publish one event; null once acknowledged, else the explained error. */
  async #send(client, topic, event, key) {
    const entry = this.#ackEntry(topic, event.type ?? '?');
    const started = performance.now();
    try {
      const ack = await client.publish(topic, event, key ? { key } : {});
      const ms = performance.now() - started;
      this.onAck(ms);
      entry.done(ack, ms);
      return null;
    } catch (error) {
      const problem = explain(error);
      entry.fail(problem);
      return problem;
    }
  }

  #ackEntry(topic, type) {
    const status = h('span', { class: 'ack-status pending' }, 'waiting');
    const text = h('span', { class: 'ack-text' }, `${type} to ${topic}: waiting for the ACK…`);
    const item = h('li', { class: 'ack' }, h('time', {}, clock(Date.now())), status, text);
    this.acks.prepend(item);
    while (this.acks.children.length > KEEP_ACKS) this.acks.lastElementChild.remove();
    return {
      done: (ack, ms) => {
        status.className = 'ack-status ok';
        status.textContent = ack.duplicate ? 'duplicate' : 'ACK';
        text.textContent = `${type} to ${ack.topic}: partition ${ack.partition} · offset ${ack.offset} · ${ms.toFixed(1)} ms`;
        item.dataset.partition = String(ack.partition);
        item.dataset.offset = String(ack.offset);
      },
      fail: (problem) => {
        status.className = 'ack-status failed';
        status.textContent = 'error';
        text.textContent = `${type} to ${topic}: ${problem.title}${problem.message ? ` ${problem.message}` : ''}`;
      },
    };
  }

  #showError(problem, mode = 'form') {
    if (problem === null) {
      this.error.hidden = true;
      replaceChildren(this.error);
      return;
    }
    // Details that point into the payload go next to their field.
    const unplaced = [];
    for (const detail of problem.details ?? []) {
      const name = payloadField(detail.path);
      const control = mode === 'form' && name ? this.#control(name) : null;
      if (control) setError(control, detail.problem);
      else if (mode === 'json') setError(this.rawText, `${detail.path}: ${detail.problem}`);
      else unplaced.push(detail);
    }
    this.error.hidden = false;
    replaceChildren(this.error, h('strong', {}, problem.title), problem.message ? ` ${problem.message}` : '',
      unplaced.length ? h('ul', {}, unplaced.map((d) => h('li', {}, `${d.path}: ${d.problem}`))) : null);
  }

  #control(name) {
    const form = this.typeForms.get(this.type.value);
    return form?.controls.get(name) ?? [...(form?.controls ?? [])].find(([path]) => path.startsWith(`${name}.`))?.[1] ?? null;
  }
}

/** The fields of one event type: `{container, controls}` keyed by payload path. */
function buildTypeForm(type) {
  const controls = new Map();
  const rows = [];
  for (const spec of EVENT_TYPES[type].fields) {
    if (spec.kind === 'group') {
      const inner = spec.fields.map((sub) => {
        const control = makeControl(sub);
        controls.set(`${spec.name}.${sub.name}`, control);
        return field({ label: `${spec.name}.${sub.name}`, control, hint: rangeHint(sub) }).row;
      });
      rows.push(h('fieldset', { class: 'group' }, h('legend', {}, spec.name), spec.hint ? h('p', { class: 'hint' }, spec.hint) : null, inner));
      continue;
    }
    const control = makeControl(spec);
    controls.set(spec.name, control);
    rows.push(field({ label: spec.name, control, hint: spec.hint ?? rangeHint(spec), required: spec.required }).row);
  }
  return { container: h('div', { class: 'type-fields' }, rows), controls };
}

function makeControl(spec) {
  let control;
  switch (spec.kind) {
    case 'choice':
      control = choiceSelect(spec.choices, spec.required ? undefined : '(default)');
      break;
    case 'bool':
      control = choiceSelect(['true', 'false'], '(default)');
      break;
    case 'number':
    case 'integer':
      control = h('input', {
        type: 'number', step: spec.kind === 'integer' ? 1 : (spec.step ?? 'any'),
        min: spec.min, max: spec.max, placeholder: spec.placeholder ?? '',
      });
      break;
    case 'json':
    case 'numbers':
      control = h('textarea', { rows: 2, spellcheck: false, placeholder: spec.placeholder ?? (spec.object ? '{}' : '') });
      break;
    default:
      control = spec.long
        ? h('textarea', { rows: 2, placeholder: spec.placeholder ?? '' })
        : h('input', { type: 'text', placeholder: spec.placeholder ?? '', autocomplete: 'off' });
  }
  control.dataset.kind = spec.kind;
  if (spec.object) control.dataset.object = 'true';
  return control;
}

function rangeHint(spec) {
  if (spec.min !== undefined && spec.max !== undefined) return `From ${spec.min} to ${spec.max}.`;
  if (spec.min !== undefined) return `At least ${spec.min}.`;
  return '';
}

/** A control's text as the JSON value its kind wants; throws an Error saying what is wrong. */
function readValue(control, raw) {
  const kind = control.dataset.kind;
  switch (kind) {
    case 'number':
    case 'integer':
      return Number(raw);
    case 'bool':
      return raw === 'true';
    case 'json':
    case 'numbers': {
      let value;
      try {
        value = JSON.parse(raw);
      } catch (problem) {
        throw new Error(`This is not JSON: ${problem.message}`);
      }
      const object = value !== null && typeof value === 'object' && !Array.isArray(value);
      if (kind === 'numbers' && (!object || !Object.values(value).every((v) => typeof v === 'number'))) {
        throw new Error('Expected a JSON object of numbers, like {"celsius": 21.5}.');
      }
      if (control.dataset.object && !object) throw new Error('Expected a JSON object, like {"a": 1}.');
      return value;
    }
    default:
      return raw;
  }
}
