// Publishing against a real gateway: acks, batches, idempotency, MessagePack, error mapping.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { AgentMemError, Client, ConnectionClosedError, ErrorCode, TimeoutError } from '../src/index.js';
import { Gateway, logEvent, mintToken, unique } from '../testing/gateway.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

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
  const token = options.token ?? mintToken({ user: unique('pub'), org: 'acme' });
  const client = new Client(gateway.wsUrl, { token, ...options });
  clients.push(client);
  await client.connect();
  return { client, token };
}

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('expected a rejection');
}

describe('publish', () => {
  test('is acknowledged with a durable position that reads back over HTTP', async () => {
    const { client, token } = await connected();
    const event = { type: 'user_interaction', payload: { action: 'opened settings', importance: 0.8 } };
    const ack = await client.publish('user-events', event, { key: 'alice-key' });
    assert.equal(ack.topic, 'user-events');
    assert.equal(typeof ack.partition, 'number');
    assert.equal(typeof ack.offset, 'number');
    assert.match(ack.eventId, UUID, 'the SDK gave the envelope an id');
    assert.equal(ack.duplicate, false);
    assert.equal(event.id, undefined, "the caller's object is left alone");

    const record = await gateway.record(token, 'user-events', ack.partition, ack.offset);
    assert.equal(record.key, 'alice-key');
    assert.equal(record.data.id, ack.eventId);
    assert.equal(record.data.type, 'user_interaction');
    assert.equal(record.data.payload.action, 'opened settings');
    assert.equal(record.data.organization_id, 'acme');
  });

  test('an event id already written is answered as a duplicate at the same position', async () => {
    const { client } = await connected();
    const event = { ...logEvent('once'), id: unique('evt') };
    const first = await client.publish('system-metrics', event);
    const second = await client.publish('system-metrics', event);
    assert.equal(first.duplicate, false);
    assert.equal(second.duplicate, true);
    assert.deepEqual([second.partition, second.offset, second.eventId], [first.partition, first.offset, event.id]);
  });

  test('many publishes in flight are each acknowledged once', async () => {
    const { client } = await connected();
    const acks = await Promise.all(
      Array.from({ length: 200 }, (_, i) => client.publish('system-metrics', logEvent(`n${i}`))),
    );
    assert.equal(new Set(acks.map((a) => `${a.partition}/${a.offset}`)).size, 200);
    assert.equal(new Set(acks.map((a) => a.eventId)).size, 200);
  });

  test('publishBatch answers one result per event; an invalid event fails alone', async () => {
    const { client, token } = await connected();
    const results = await client.publishBatch('system-metrics', [
      logEvent('first'),
      { type: 'log_entry', payload: { level: 'loud', message: 'bad level' } },
      { key: 'batch-key', event: logEvent('third') },
    ]);
    assert.equal(results.length, 3);
    const [first, bad, third] = results;
    assert.equal(first.duplicate, false);
    assert.match(first.eventId, UUID);
    assert.ok(bad.error instanceof AgentMemError);
    assert.equal(bad.error.code, ErrorCode.INVALID_EVENT);
    assert.equal(bad.error.details[0].path, '$.events[1].event.payload.level');
    for (const [result, message, key] of [[first, 'first', null], [third, 'third', 'batch-key']]) {
      const record = await gateway.record(token, 'system-metrics', result.partition, result.offset);
      assert.equal(record.data.id, result.eventId);
      assert.equal(record.data.payload.message, message);
      assert.equal(record.key, key);
    }
    const again = await client.publishBatch('system-metrics', [{ ...logEvent('x'), id: first.eventId }]);
    assert.equal(again[0].duplicate, true);
    assert.equal(again[0].offset, first.offset);
  });

  test('msgpack: publish and receive over agentmem.v1.msgpack', async () => {
    const user = unique('mp');
    const token = mintToken({ user, org: 'acme' });
    const { client } = await connected({ token, encoding: 'msgpack' });
    const sub = client.subscribe('agent-actions', { from: 'end' });
    await sub.ready;
    const event = {
      type: 'agent_action',
      payload: {
        agent_id: 'planner',
        action: 'search',
        parameters: { query: 'héllo ✓', limit: 5, ratio: 0.25, nested: { list: [1, 'two', null] } },
        success: true,
        step: 3,
        importance: 0.9,
      },
    };
    const received = new Promise((resolve) => sub.once('event', resolve));
    const ack = await client.publish('agent-actions', event, { key: 'k' });
    const record = await received;
    assert.equal(record.offset, ack.offset);
    assert.equal(record.partition, ack.partition);
    assert.equal(record.key, 'k');
    assert.equal(record.data.id, ack.eventId);
    assert.equal(record.data.user_id, user);
    assert.deepEqual(record.data.payload.parameters, event.payload.parameters);
    assert.equal(record.data.payload.importance, 0.9);
    const stored = await gateway.record(token, 'agent-actions', ack.partition, ack.offset);
    assert.deepEqual(stored.data, record.data);
  });
});

describe('errors', () => {
  test('unknown topic', async () => {
    const { client } = await connected();
    const error = await rejection(client.publish('no-such-topic', logEvent('x')));
    assert.ok(error instanceof AgentMemError);
    assert.equal(error.code, ErrorCode.UNKNOWN_TOPIC);
    assert.equal(error.temporary, false);
    assert.match(error.message, /system-metrics/);
    const batch = await rejection(client.publishBatch('no-such-topic', [logEvent('x')]));
    assert.equal(batch.code, ErrorCode.UNKNOWN_TOPIC);
  });

  test('invalid event, with details naming the path', async () => {
    const { client } = await connected();
    const error = await rejection(client.publish('system-metrics', { type: 'log_entry', payload: { message: 'no level' } }));
    assert.equal(error.code, ErrorCode.INVALID_EVENT);
    assert.equal(error.details[0].path, '$.event.payload');
    const range = await rejection(
      client.publish('system-metrics', { type: 'log_entry', payload: { level: 'info', message: 'm', importance: 2 } }),
    );
    assert.equal(range.details[0].path, '$.event.payload.importance');
    const wrongTopic = await rejection(client.publish('audit-logs', { type: 'user_interaction', payload: { action: 'a' } }));
    assert.equal(wrongTopic.code, ErrorCode.INVALID_EVENT);
  });

  test('forbidden: missing scope, another organization, a pipeline-only topic', async () => {
    const readOnly = await connected({ token: mintToken({ user: unique('ro'), scopes: ['subscribe'] }) });
    const noScope = await rejection(readOnly.client.publish('system-metrics', logEvent('x')));
    assert.equal(noScope.code, ErrorCode.FORBIDDEN);

    const { client } = await connected();
    const otherOrg = await rejection(client.publish('system-metrics', { ...logEvent('x'), organization_id: 'evil-corp' }));
    assert.equal(otherOrg.code, ErrorCode.FORBIDDEN);
    const otherUser = await rejection(client.publish('system-metrics', { ...logEvent('x'), user_id: 'somebody-else' }));
    assert.equal(otherUser.code, ErrorCode.FORBIDDEN);
    const pipelineOnly = await rejection(
      client.publish('memory-updates', {
        type: 'memory_update',
        payload: { op: 'created', memory_id: 'm1', memory_type: 'episodic', organization_id: 'acme', user_id: 'x' },
      }),
    );
    assert.equal(pipelineOnly.code, ErrorCode.FORBIDDEN);

    const writeOnly = await connected({ token: mintToken({ user: unique('wo'), scopes: ['publish'] }) });
    const sub = writeOnly.client.subscribe('system-metrics');
    const subError = await rejection(sub.ready);
    assert.equal(subError.code, ErrorCode.FORBIDDEN);
    assert.equal(sub.state, 'unsubscribed');
    assert.equal(readOnly.client.state, 'connected', 'errors do not end the session');
  });

  test('a publish that is not answered in time rejects with TimeoutError', async () => {
    const client = new Client(gateway.wsUrl, { token: mintToken() }); // never connected
    const error = await rejection(client.publish('system-metrics', logEvent('late'), { timeout: 50 }));
    assert.ok(error instanceof TimeoutError);
    assert.ok(error instanceof AgentMemError);
    assert.equal(error.code, ErrorCode.TIMEOUT);
    await client.close();
    const closed = await rejection(client.publish('system-metrics', logEvent('after close')));
    assert.ok(closed instanceof ConnectionClosedError);
    assert.equal(closed.code, 1000);
    assert.equal(closed.reconnectable, false);
  });

  test('publishes queued before connect() go out once connected', async () => {
    const client = new Client(gateway.wsUrl, { token: mintToken({ user: unique('early') }) });
    clients.push(client);
    const pending = client.publish('system-metrics', logEvent('early'));
    await client.connect();
    const ack = await pending;
    assert.equal(ack.duplicate, false);
  });
});
