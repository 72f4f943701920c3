// The SDK on a global WebSocket (the API browsers have, here Node's own): runs a small client
// in a child Node that has one (Node >= 22, or Node 20/21 with --experimental-websocket).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';

import { Gateway, mintToken, unique } from '../testing/gateway.js';

const script = fileURLToPath(new URL('../testing/global-websocket-client.js', import.meta.url));
const flags = typeof globalThis.WebSocket === 'function'
  ? []
  : process.allowedNodeEnvironmentFlags.has('--experimental-websocket')
    ? ['--experimental-websocket']
    : null;

let gateway;
before(async () => {
  if (flags !== null) gateway = await new Gateway().start();
});
after(async () => {
  await gateway?.dispose();
});

test('publish and subscribe through the global WebSocket, JSON and MessagePack', { skip: flags === null && 'no global WebSocket in this Node' }, async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [...flags, script], {
    env: { ...process.env, AGENTMEM_URL: gateway.httpUrl, AGENTMEM_TOKEN: mintToken({ user: unique('browser') }) },
    timeout: 20_000,
  });
  const out = JSON.parse(stdout);
  assert.equal(out.webSocket, 'function');
  assert.deepEqual(out.runs.map((r) => r.encoding), ['json', 'msgpack']);
  for (const run of out.runs) {
    assert.equal(run.record.offset, run.ack.offset);
    assert.equal(run.record.partition, run.ack.partition);
    assert.equal(run.record.data.id, run.ack.eventId);
    assert.equal(run.record.data.payload.message, run.encoding);
    assert.equal(run.batch.duplicate, false);
  }
});
