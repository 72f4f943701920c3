// The console page: wires the connection, the live stream, the charts, the subscription
// builder, the publish forms, the topics and the memory search together.

import { Api } from './api.js';
import { Connection } from './connection.js';
import { byId } from './dom.js';
import { MemorySearch } from './memory.js';
import { LiveMetrics } from './metrics.js';
import { PublishPanel } from './publish.js';
import { StreamView } from './stream.js';
import { SubscriptionsPanel } from './subscriptions.js';
import { TopicsPanel } from './topics.js';

let connection = null;
const api = new Api(() => connection?.currentToken() ?? '');

const metrics = new LiveMetrics({
  rateCanvas: byId('rate-chart'),
  rateText: byId('rate-text'),
  latencyCanvas: byId('latency-chart'),
  latencyText: byId('latency-text'),
});

const stream = new StreamView({
  list: byId('stream-list'),
  status: byId('stream-status'),
  count: byId('stream-count'),
  empty: byId('stream-empty'),
  search: byId('stream-search'),
  topic: byId('stream-topic'),
  kind: byId('stream-kind'),
  pause: byId('stream-pause'),
  clear: byId('stream-clear'),
});

let client = null;

const subscriptions = new SubscriptionsPanel({
  api,
  client: () => client,
  onRecord: (record) => {
    stream.add(record);
    metrics.event();
  },
  form: byId('subscribe-form'),
  topic: byId('sub-topic'),
  offsets: byId('sub-offsets'),
  chain: byId('sub-chain'),
  addModule: byId('sub-add-module'),
  addButton: byId('sub-add'),
  modulesStatus: byId('sub-modules-status'),
  error: byId('sub-error'),
  list: byId('sub-list'),
});

const publisher = new PublishPanel({
  client: () => client,
  onAck: (ms) => {
    metrics.ack(ms);
    topics.loadSoon();
  },
  form: byId('publish-form'),
  topic: byId('pub-topic'),
  type: byId('pub-type'),
  typeHint: byId('pub-type-hint'),
  key: byId('pub-key'),
  times: byId('pub-times'),
  fields: byId('pub-fields'),
  raw: byId('pub-raw'),
  rawText: byId('pub-raw-text'),
  error: byId('pub-error'),
  acks: byId('ack-list'),
});

const topics = new TopicsPanel({
  api,
  list: byId('topics-list'),
  status: byId('topics-status'),
  refresh: byId('topics-refresh'),
  onFollow: (name) => subscriptions.choose(name),
});

new MemorySearch({
  api,
  form: byId('memory-form'),
  query: byId('memory-query'),
  limit: byId('memory-limit'),
  status: byId('memory-status'),
  results: byId('memory-results'),
});

/** Topics and SmartModules, read again whenever a connection (re)starts. */
async function loadGatewayLists() {
  const list = await topics.load();
  if (list.length > 0) {
    subscriptions.setTopics(list);
    publisher.setTopics(list);
    stream.setTopics(list.map((t) => t.name));
  }
  try {
    subscriptions.setModules(await api.smartmodules());
  } catch (error) {
    subscriptions.modulesFailed(error);
  }
}

connection = new Connection({
  api,
  url: new URL('ws', location.href).href,
  form: byId('connect-form'),
  token: byId('token'),
  show: byId('token-show'),
  button: byId('connect-button'),
  badge: byId('connection-badge'),
  status: byId('connection-status'),
  reconnects: byId('connection-reconnects'),
  history: byId('connection-history'),
  historyCount: byId('connection-history-count'),
  note: byId('token-note'),
  onConnected: () => loadGatewayLists(),
  onClient: (next) => {
    client = next;
  },
});

if (await connection.prefill()) await loadGatewayLists();
document.documentElement.dataset.ready = 'true';
