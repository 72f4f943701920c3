// Subscriptions against a real gateway: start positions, async iteration, state events,
// filters and subscription errors. Each test has its own user: the gateway delivers only the
// user's own records, so tests sharing a topic do not see each other's events.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { AgentMemError, Client, ErrorCode } from '../src/index.js';
import { Gateway, logEvent, mintToken, sleep, unique, waitFor } from '../testing/gateway.js';

const TOPIC = 'system-metrics';

let gateway;
const clients = [];

before(async () => {
  gateway = await new Gateway().start();
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await gateway.dispose();
});

async function connected(options = {}) {
  const token = mintToken({ user: unique('sub'), org: 'acme' });
  const client = new Client(gateway.wsUrl, { token, ...options });
  clients.push(client);
  await client.connect();
  return client;
}

function collect(sub) {
  const records = [];
  sub.on('event', (record) => records.push(record));
  return records;
}

const messages = (records) => records.map((r) => r.data.payload.message);

test('from "beginning" delivers the stored records, then live ones', async () => {
  const client = await connected();
  for (const m of ['a', 'b', 'c']) await client.publish(TOPIC, logEvent(m), { key: 'one-key' });
  const sub = client.subscribe(TOPIC, { from: 'beginning' });
  const records = collect(sub);
  await sub.ready;
  await client.publish(TOPIC, logEvent('d'), { key: 'one-key' });
  await waitFor(() => records.length >= 4, { what: 'four records' });
  assert.deepEqual(messages(records), ['a', 'b', 'c', 'd']);
  const { partition, offset } = records.at(-1);
  assert.equal(sub.positions[String(partition)], offset + 1, 'positions advance past delivered records');
});

test('from "end" (the default) delivers only what is written after subscribing', async () => {
  const client = await connected({ encoding: 'msgpack' });
  await client.publish(TOPIC, logEvent('before'));
  const sub = client.subscribe(TOPIC);
  const records = collect(sub);
  const positions = await sub.ready;
  assert.deepEqual(Object.keys(positions).sort(), ['0', '1', '2', '3']);
  await client.publish(TOPIC, logEvent('after-1'));
  await client.publish(TOPIC, logEvent('after-2'));
  await waitFor(() => records.length >= 2, { what: 'two records' });
  await sleep(100);
  assert.deepEqual(messages(records).sort(), ['after-1', 'after-2']);
});

test('from offsets starts each named partition at its next offset', async () => {
  const client = await connected();
  const acks = [];
  for (let i = 0; i < 6; i++) acks.push(await client.publish(TOPIC, logEvent(`m${i}`), { key: 'same-partition' }));
  const { partition } = acks[0];
  assert.ok(acks.every((a) => a.partition === partition), 'one key, one partition');
  const sub = client.subscribe(TOPIC, { from: { [partition]: acks[2].offset } });
  const records = collect(sub);
  const positions = await sub.ready;
  assert.equal(positions[String(partition)], acks[2].offset);
  await waitFor(() => records.length >= 4, { what: 'four records' });
  await sleep(100);
  assert.deepEqual(messages(records), ['m2', 'm3', 'm4', 'm5']);
  assert.deepEqual(records.map((r) => r.offset), acks.slice(2).map((a) => a.offset));
});

test('async iteration, unsubscribe, and the subscription state events', async () => {
  const client = await connected();
  const sub = client.subscribe(TOPIC, { from: 'end' });
  const states = [];
  sub.on('state', (e) => states.push(`${e.previous}->${e.state}`));
  await sub.ready;
  const publishing = (async () => {
    for (let i = 0; i < 5; i++) await client.publish(TOPIC, logEvent(`it${i}`));
  })();
  const seen = [];
  for await (const record of sub) {
    seen.push(record.data.payload.message);
    if (seen.length === 3) break;
  }
  await publishing;
  assert.deepEqual(seen, ['it0', 'it1', 'it2']);

  // A second iterator ends when the subscription does.
  const rest = [];
  const draining = (async () => {
    for await (const record of sub) rest.push(record);
  })();
  await client.publish(TOPIC, logEvent('it5'));
  await waitFor(() => rest.length >= 1, { what: 'a record at the second iterator' });
  await sub.unsubscribe();
  await draining;
  assert.equal(sub.state, 'unsubscribed');
  assert.equal(sub.ended, true);
  assert.deepEqual(states, ['subscribing->subscribed', 'subscribed->unsubscribed']);
  assert.equal(client.subscriptions.length, 0);

  // Nothing arrives after unsubscribing; the session goes on.
  const late = collect(sub);
  await client.publish(TOPIC, logEvent('after-unsubscribe'));
  await sleep(100);
  assert.equal(late.length, 0);
});

test('subscriptions made before connect() are sent once connected', async () => {
  const client = new Client(gateway.wsUrl, { token: mintToken({ user: unique('early') }) });
  clients.push(client);
  const sub = client.subscribe(TOPIC, { from: 'beginning' });
  assert.equal(sub.state, 'subscribing');
  await client.connect();
  await sub.ready;
  assert.equal(sub.state, 'subscribed');
});

test('filters: a SmartModule chain selects the records', async () => {
  const client = await connected();
  const sub = client.subscribe(TOPIC, {
    filters: [{ smartmodule: 'event-filter', params: { min_importance: 0.8 } }],
  });
  const records = collect(sub);
  await sub.ready;
  await client.publish(TOPIC, logEvent('minor', { importance: 0.1 }));
  await client.publish(TOPIC, logEvent('major', { importance: 0.95 }));
  await waitFor(() => records.length >= 1, { what: 'the important record' });
  await sleep(100);
  assert.deepEqual(messages(records), ['major']);
});

test('subscription errors: unknown topic, unknown SmartModule, invalid offset', async () => {
  const client = await connected();
  const cases = [
    [client.subscribe('no-such-topic'), ErrorCode.UNKNOWN_TOPIC],
    [client.subscribe(TOPIC, { filters: [{ smartmodule: 'no-such-module' }] }), ErrorCode.UNKNOWN_SMARTMODULE],
    [client.subscribe(TOPIC, { from: { 99: 0 } }), ErrorCode.INVALID_OFFSET],
  ];
  for (const [sub, code] of cases) {
    const heard = new Promise((resolve) => sub.once('error', resolve));
    const ended = new Promise((resolve) => sub.once('unsubscribed', resolve));
    const error = await sub.ready.then(() => assert.fail('expected an error'), (e) => e);
    assert.ok(error instanceof AgentMemError);
    assert.equal(error.code, code);
    assert.equal(await heard, error);
    const change = await ended;
    assert.equal(change.code, code);
    assert.equal(sub.state, 'unsubscribed');
    // An iterator over a failed subscription throws its error.
    await assert.rejects(async () => {
      for await (const _ of sub);
    }, (e) => e === error);
  }
  assert.equal(client.state, 'connected');
});
