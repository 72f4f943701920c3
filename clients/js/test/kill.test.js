// The gateway dies (kill -9) or restarts (SIGTERM) under a publisher and a subscriber: every
// publish is acknowledged exactly once, the log holds each event once, and the subscriber
// gets every record exactly once, in offset order per partition.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { Client } from '../src/index.js';
import { Gateway, freePort, logEvent, mintToken, sleep, unique, waitFor } from '../testing/gateway.js';

const TOPIC = 'system-metrics'; // 4 partitions

/**
 * Publish `total` events (a few in flight at a time, paced) while a subscriber follows the
 * topic; `disrupt(gateway)` is called right after publish number `disruptAt` is sent, and
 * returns the gateway to use afterwards. Returns what happened, checked by the caller.
 */
async function stream(t, { total, disruptAt, disrupt, env = {} }) {
  const dataDir = mkdtempSync(join(tmpdir(), 'agentmem-js-kill-'));
  t.after(() => {
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(`${dataDir}-gateway.log`, { force: true });
  });
  const port = await freePort();
  let gateway = await new Gateway({ port, dataDir, env }).start();
  t.after(() => gateway.stop());
  const token = mintToken({ user: unique('streamer'), org: 'acme' });
  const backoff = { baseMs: 50, maxMs: 400 };

  const publisher = new Client(gateway.wsUrl, { token, backoff, publishTimeoutMs: 60_000 });
  const subscriber = new Client(`http://127.0.0.1:${port}`, { token, backoff, encoding: 'msgpack' });
  const publisherStates = [];
  const subscriberStates = [];
  publisher.on('state', (e) => publisherStates.push(e));
  subscriber.on('state', (e) => subscriberStates.push(e));
  t.after(() => publisher.close());
  t.after(() => subscriber.close());
  await Promise.all([publisher.connect(), subscriber.connect()]);

  const sub = subscriber.subscribe(TOPIC, { from: 'end' });
  const received = [];
  sub.on('event', (record) => received.push(record));
  const start = await sub.ready;

  const run = unique('run');
  const ids = Array.from({ length: total }, (_, i) => `${run}-${i}`);
  const settled = new Array(total).fill(0);
  const acks = new Array(total);
  const failures = [];
  const publishes = [];
  let disrupted = null;
  let ackedAtDisruption = -1;
  let inFlightAtDisruption = -1;
  // Bursts of 20 publishes every 25 ms; the disruption comes in the middle of a burst, right
  // after its first publishes were sent, so some are in flight when the gateway goes away.
  for (let i = 0; i < total; i++) {
    publishes.push(
      publisher
        .publish(TOPIC, { ...logEvent(`event ${i}`), id: ids[i] }, { key: `k${i % 7}` })
        .then((ack) => {
          acks[i] = ack;
        }, (error) => failures.push({ i, error }))
        .finally(() => {
          settled[i] += 1;
        }),
    );
    if (i === disruptAt) {
      ackedAtDisruption = settled.filter((n) => n > 0).length;
      inFlightAtDisruption = publisher._outbox.size;
      disrupted = (async () => {
        gateway = await disrupt(gateway);
      })();
    }
    if (i % 20 === 19) await sleep(25);
  }
  await Promise.all(publishes);
  await disrupted;
  return {
    gateway, token, ids, acks, settled, failures, received, start, sub, publisherStates,
    subscriberStates, ackedAtDisruption, inFlightAtDisruption,
  };
}

async function check(t, outcome, { expectCloseCode }) {
  const { gateway, token, ids, acks, settled, failures, received, sub } = outcome;
  const total = ids.length;
  assert.deepEqual(failures, [], 'every publish is acknowledged');
  assert.ok(settled.every((n) => n === 1), 'each publish promise settled once');
  assert.ok(outcome.ackedAtDisruption > 0 && outcome.ackedAtDisruption < total, 'the disruption came mid-stream');
  acks.forEach((ack, i) => assert.equal(ack.eventId, ids[i]));
  const positions = new Set(acks.map((a) => `${a.partition}/${a.offset}`));
  assert.equal(positions.size, total, 'no two acks name the same record');
  const duplicates = acks.filter((a) => a.duplicate).length;
  t.diagnostic(`acks marked duplicate (re-sent after the disruption): ${duplicates}`);

  // The publisher went down and came back, with the expected close code.
  const lost = outcome.publisherStates.find((e) => e.state === 'disconnected');
  assert.ok(lost, 'the publisher noticed the disruption');
  assert.equal(lost.code, expectCloseCode);
  assert.equal(outcome.publisherStates.at(-1).state, 'connected');
  t.diagnostic(`publishes in flight when the gateway went down: ${outcome.inFlightAtDisruption}`);

  // The log holds each event id exactly once, where its ack says.
  const records = (await gateway.records(token, 'system-metrics')).filter((r) => ids.includes(r.data.id));
  const byId = new Map();
  for (const r of records) byId.set(r.data.id, [...(byId.get(r.data.id) ?? []), r]);
  assert.equal(records.length, total, 'the log holds every event once');
  for (let i = 0; i < total; i++) {
    const stored = byId.get(ids[i]);
    assert.equal(stored?.length, 1, `event ${i} is stored once`);
    assert.equal(stored[0].partition, acks[i].partition);
    assert.equal(stored[0].offset, acks[i].offset);
  }

  // The subscriber got every record exactly once, in offset order per partition, with no gap.
  await waitFor(() => received.length >= total, { timeoutMs: 20_000, what: 'every record at the subscriber' });
  await sleep(300); // anything more would be a duplicate
  assert.equal(received.length, total, 'no record delivered twice');
  assert.equal(sub.stats.duplicates, 0, 'the gateway re-delivered nothing');
  assert.ok(sub.stats.resubscribes >= 1, 'the subscription was resumed');
  assert.equal(outcome.subscriberStates.at(-1).state, 'connected');
  assert.equal(sub.state, 'subscribed');
  assert.deepEqual(new Set(received.map((r) => r.data.id)), new Set(ids));
  const byPartition = new Map();
  for (const r of received) byPartition.set(r.partition, [...(byPartition.get(r.partition) ?? []), r.offset]);
  for (const [partition, offsets] of byPartition) {
    const first = outcome.start[String(partition)];
    assert.deepEqual(offsets, offsets.map((_, k) => first + k), `partition ${partition}: in order, no gap`);
  }
  for (const r of received) {
    const stored = byId.get(r.data.id)[0];
    assert.equal(r.partition, stored.partition);
    assert.equal(r.offset, stored.offset);
  }
}

test('kill -9 mid-stream: acks, log and deliveries stay exactly once', async (t) => {
  const outcome = await stream(t, {
    total: 400,
    disruptAt: 130,
    disrupt: async (gateway) => {
      await gateway.kill();
      await sleep(200);
      return new Gateway({ port: gateway.port, dataDir: gateway.dataDir }).start();
    },
  });
  await check(t, outcome, { expectCloseCode: 1006 });
});

test('graceful restart (SIGTERM, going_away) mid-stream: the same guarantees', async (t) => {
  const outcome = await stream(t, {
    total: 200,
    disruptAt: 70,
    disrupt: async (gateway) => {
      await gateway.stop();
      return new Gateway({ port: gateway.port, dataDir: gateway.dataDir }).start();
    },
  });
  await check(t, outcome, { expectCloseCode: 4000 });
});
