// The event types and their payload fields, as in gateway/schemas/payloads.py and
// docs/events.md. Publish forms are generated from this table.
//
// Field kinds: text, number, integer, choice (`choices`), bool, json (any JSON value;
// `object: true` wants a JSON object), numbers (a JSON object of numbers), group (`fields`).

const importance = {
  name: 'importance', kind: 'number', min: 0, max: 1, step: 0.05, placeholder: '0.5',
  hint: 'From 0 to 1; 0.5 when empty.',
};
const metadata = { name: 'metadata', kind: 'json', object: true, hint: 'A JSON object.' };
const MEMORY_TYPES = ['core', 'episodic', 'semantic', 'procedural', 'working'];

export const EVENT_TYPES = {
  user_interaction: {
    summary: 'action',
    fields: [
      { name: 'action', kind: 'text', required: true, placeholder: 'opened settings' },
      { name: 'user_id', kind: 'text', hint: "The envelope's user when empty." },
      { name: 'timestamp', kind: 'integer', min: 0, hint: 'Milliseconds since the epoch.' },
      { name: 'context', kind: 'json', object: true, hint: 'A JSON object.' },
      importance,
    ],
  },
  app_event: {
    summary: 'event_type',
    fields: [
      { name: 'event_type', kind: 'text', required: true, placeholder: 'checkout_completed' },
      { name: 'source', kind: 'text', required: true, placeholder: 'web' },
      { name: 'payload', kind: 'json', object: true, hint: 'A JSON object.' },
      importance,
    ],
  },
  sensor_data: {
    summary: 'sensor_id',
    fields: [
      { name: 'sensor_id', kind: 'text', required: true, placeholder: 'thermo-1' },
      { name: 'readings', kind: 'numbers', required: true, placeholder: '{"celsius": 21.5}', hint: 'A JSON object of numbers.' },
      {
        name: 'location', kind: 'group', hint: 'Both or neither.',
        fields: [
          { name: 'lat', kind: 'number', min: -90, max: 90, step: 'any' },
          { name: 'lon', kind: 'number', min: -180, max: 180, step: 'any' },
        ],
      },
      importance,
    ],
  },
  log_entry: {
    summary: 'message',
    fields: [
      { name: 'level', kind: 'choice', required: true, choices: ['debug', 'info', 'warning', 'error', 'critical'] },
      { name: 'message', kind: 'text', required: true, placeholder: 'disk almost full' },
      metadata,
      importance,
    ],
  },
  api_call: {
    summary: 'endpoint',
    fields: [
      { name: 'endpoint', kind: 'text', required: true, placeholder: '/v1/orders' },
      { name: 'method', kind: 'choice', required: true, choices: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'] },
      { name: 'response_time_ms', kind: 'number', required: true, min: 0, step: 'any', placeholder: '12.5' },
      { name: 'status_code', kind: 'integer', min: 100, max: 599 },
      importance,
    ],
  },
  realtime_message: {
    summary: 'channel',
    fields: [
      { name: 'channel', kind: 'text', required: true, placeholder: 'presence' },
      { name: 'data', kind: 'json', required: true, placeholder: '{"online": true}', hint: 'Any JSON value.' },
      { name: 'priority', kind: 'choice', choices: ['low', 'normal', 'high', 'critical'], hint: 'normal when empty.' },
      importance,
    ],
  },
  chat_message: {
    summary: 'content',
    fields: [
      { name: 'conversation_id', kind: 'text', required: true, placeholder: 'c-1' },
      { name: 'role', kind: 'choice', required: true, choices: ['user', 'assistant', 'system', 'tool'] },
      { name: 'content', kind: 'text', long: true, required: true, placeholder: 'Hello!' },
      { name: 'agent_id', kind: 'text' },
      metadata,
      importance,
    ],
  },
  agent_action: {
    summary: 'action',
    fields: [
      { name: 'agent_id', kind: 'text', required: true, placeholder: 'planner' },
      { name: 'action', kind: 'text', required: true, placeholder: 'search_web' },
      { name: 'parameters', kind: 'json', object: true, hint: 'A JSON object.' },
      { name: 'result', kind: 'json', hint: 'Any JSON value.' },
      { name: 'success', kind: 'bool', hint: 'true when empty.' },
      { name: 'session_id', kind: 'text' },
      { name: 'step', kind: 'integer', min: 0 },
      importance,
    ],
  },
  memory_item: {
    summary: 'content',
    fields: [
      { name: 'content', kind: 'text', long: true, required: true, placeholder: 'Prefers dark mode' },
      { name: 'memory_type', kind: 'choice', choices: MEMORY_TYPES, hint: 'episodic when empty.' },
      { name: 'organization_id', kind: 'text' },
      { name: 'user_id', kind: 'text' },
      { name: 'agent_id', kind: 'text' },
      { name: 'session_id', kind: 'text' },
      importance,
      { name: 'timestamp', kind: 'integer', min: 0, hint: 'Milliseconds since the epoch.' },
      metadata,
    ],
  },
  memory_update: {
    summary: 'content',
    fields: [
      { name: 'op', kind: 'choice', required: true, choices: ['created', 'updated', 'deleted', 'expired'] },
      { name: 'memory_id', kind: 'text', required: true },
      { name: 'memory_type', kind: 'choice', required: true, choices: MEMORY_TYPES },
      { name: 'organization_id', kind: 'text', required: true },
      { name: 'user_id', kind: 'text', required: true },
      { name: 'agent_id', kind: 'text' },
      importance,
      { name: 'content', kind: 'text', long: true },
      { name: 'version', kind: 'integer', min: 1 },
      {
        name: 'source', kind: 'group', hint: 'The record the update came from: all three or none.',
        fields: [
          { name: 'topic', kind: 'text' },
          { name: 'partition', kind: 'integer', min: 0 },
          { name: 'offset', kind: 'integer', min: 0 },
        ],
      },
      { name: 'timestamp', kind: 'integer', min: 0 },
    ],
  },
};

export const TYPE_NAMES = Object.keys(EVENT_TYPES);

/** A short text for a record's data: the type's main field (an action, a message, …). */
export function summarize(data) {
  if (data === null || typeof data !== 'object') return typeof data === 'string' ? data : JSON.stringify(data);
  const payload = data.payload;
  const schema = EVENT_TYPES[data.type];
  if (schema && payload && typeof payload === 'object') {
    const main = payload[schema.summary];
    if (data.type === 'memory_update') return `${payload.op ?? ''} ${payload.memory_type ?? ''}: ${payload.content ?? payload.memory_id ?? ''}`.trim();
    if (main !== undefined) return typeof main === 'string' ? main : JSON.stringify(main);
  }
  if (typeof data.content === 'string') return data.content; // a MemoryItem (data-transform output)
  if (typeof data.event_count === 'number') return `${data.event_count} events, total importance ${data.total_importance}`;
  return JSON.stringify(data).slice(0, 120);
}
