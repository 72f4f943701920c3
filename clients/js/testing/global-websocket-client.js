// Run by test/global-websocket.test.js in a Node with a global WebSocket (the browser's API):
// connects in both encodings, publishes, subscribes, and prints what happened as JSON.

import { Client } from '../src/index.js';

const url = process.env.AGENTMEM_URL;
const token = process.env.AGENTMEM_TOKEN;
const out = { webSocket: typeof globalThis.WebSocket, runs: [] };
for (const encoding of ['json', 'msgpack']) {
  const client = new Client(url, { token, encoding });
  await client.connect();
  const sub = client.subscribe('system-metrics');
  await sub.ready;
  const got = new Promise((resolve) => sub.once('event', resolve));
  const ack = await client.publish('system-metrics', { type: 'log_entry', payload: { level: 'info', message: encoding } });
  const record = await got;
  const [batch] = await client.publishBatch('system-metrics', [{ type: 'log_entry', payload: { level: 'info', message: 'b' } }]);
  out.runs.push({ encoding, ack, batch, record: { partition: record.partition, offset: record.offset, data: record.data } });
  await client.close();
}
process.stdout.write(JSON.stringify(out));
