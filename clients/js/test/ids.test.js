// Event ids the SDK makes up: UUIDv7 of the current millisecond, unique, growing with time.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { eventId } from '../src/index.js';

const UUID7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const millis = (id) => parseInt(id.replace(/-/g, '').slice(0, 12), 16);

test('event ids are UUIDv7 of now, unique, and grow with time', async () => {
  const start = Date.now();
  const first = Array.from({ length: 5000 }, () => eventId());
  const end = Date.now();
  for (const id of first) {
    assert.match(id, UUID7);
    assert.ok(start <= millis(id) && millis(id) <= end, `${id} is not of ${start}..${end}`);
  }
  await new Promise((resolve) => setTimeout(resolve, 3));
  const later = Array.from({ length: 5000 }, () => eventId());
  assert.equal(new Set([...first, ...later]).size, 10_000);
  const newest = first.reduce((a, b) => (a > b ? a : b));
  const oldest = later.reduce((a, b) => (a < b ? a : b));
  assert.ok(newest < oldest, 'ids made later sort after earlier ones');
});
