// The connection: state events, terminal closes, token refresh, heartbeats, failover.
// This gateway pings every second, warns 3 s before a token expires and takes frames of up
// to 8 KiB.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';

import { AgentMemError, Client, CloseCode, ConnectionClosedError, ErrorCode } from '../src/index.js';
import { Gateway, freePort, logEvent, mintToken, sleep, unique, waitFor } from '../testing/gateway.js';

let gateway;
const clients = [];

before(async () => {
  gateway = await new Gateway({
    env: { AGENTMEM_WS_HEARTBEAT_S: '1', AGENTMEM_WS_TOKEN_WARNING_S: '3', AGENTMEM_WS_MAX_FRAME_BYTES: '8192' },
  }).start();
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await gateway.dispose();
});

function client(options = {}, url = gateway.wsUrl) {
  const c = new Client(url, { token: mintToken({ user: unique('conn') }), ...options });
  clients.push(c);
  return c;
}

function record(c) {
  const states = [];
  c.on('state', (e) => states.push(e));
  return states;
}

test('state events: connecting, connected, closed (with code and reason)', async () => {
  const c = client();
  const states = record(c);
  assert.equal(c.state, 'disconnected');
  const welcome = await c.connect();
  assert.equal(typeof welcome.session, 'string');
  assert.equal(welcome.heartbeatMs, 1000);
  assert.deepEqual(welcome.scopes, ['publish', 'subscribe']);
  assert.equal(await c.connect(), c.session, 'connect() when connected resolves at once');
  assert.equal(typeof (await c.ping()), 'number');
  await c.close();
  assert.deepEqual(states.map((e) => e.state), ['connecting', 'connected', 'closed']);
  assert.equal(states[1].code, null);
  assert.equal(states[2].code, CloseCode.NORMAL);
  assert.equal(states[2].reason, 'client closed');
  await assert.rejects(c.connect(), ConnectionClosedError);
});

test('a forged token closes for good with 4500 and rejects connect()', async () => {
  const c = client({ token: mintToken({ secret: 'not-the-gateway-secret-0123456789abcdef' }) });
  const states = record(c);
  const errors = [];
  c.on('error', (e) => errors.push(e));
  const pending = c.publish('system-metrics', logEvent('never'));
  const error = await c.connect().then(() => assert.fail('expected a rejection'), (e) => e);
  assert.ok(error instanceof ConnectionClosedError);
  assert.ok(error instanceof AgentMemError);
  assert.equal(error.code, CloseCode.INVALID_TOKEN);
  assert.equal(error.codeName, 'invalid_token');
  assert.equal(error.reconnectable, false);
  assert.equal(error.cause?.code, ErrorCode.UNAUTHORIZED, 'the error frame before the close');
  assert.equal(errors[0]?.code, ErrorCode.UNAUTHORIZED);
  assert.deepEqual(states.map((e) => e.state), ['connecting', 'closed']);
  assert.equal(states[1].code, 4500);
  const rejected = await pending.then(() => assert.fail('expected a rejection'), (e) => e);
  assert.equal(rejected, error, 'pending calls are rejected with the same error');
});

test('a token without publish or subscribe scope closes with 4501', async () => {
  const c = client({ token: mintToken({ user: unique('noscope'), scopes: [] }) });
  const error = await c.connect().then(() => assert.fail('expected a rejection'), (e) => e);
  assert.equal(error.code, CloseCode.FORBIDDEN);
  assert.equal(c.state, 'closed');
});

test('a frame over the gateway limit closes for good with 1009; pending calls are rejected', async () => {
  const c = client();
  await c.connect();
  const small = c.publish('system-metrics', logEvent('small'));
  const big = c.publish('system-metrics', logEvent('x'.repeat(10_000)));
  const [first, second] = await Promise.allSettled([small, big]);
  assert.equal(second.status, 'rejected');
  assert.ok(second.reason instanceof ConnectionClosedError);
  assert.equal(second.reason.code, CloseCode.MESSAGE_TOO_BIG);
  assert.equal(second.reason.reconnectable, false);
  // The small one was either acknowledged before the close or rejected with it: never both.
  if (first.status === 'rejected') assert.equal(first.reason, second.reason);
  assert.equal(c.state, 'closed');
});

test('getToken: the token is refreshed on token_expiring without dropping the session', async () => {
  const user = unique('refresh');
  const calls = [];
  const c = client({
    token: undefined,
    getToken: async ({ reason }) => {
      calls.push(reason);
      return mintToken({ user, ttlS: 4 });
    },
  });
  const states = record(c);
  const refreshed = [];
  c.on('token_refreshed', (info) => refreshed.push(info));
  const sub = c.subscribe('system-metrics');
  const first = await c.connect();
  await sub.ready;
  // Past the first token's expiry (4 s), and past several heartbeats answered with pongs.
  await waitFor(() => Date.now() > first.expiresAt + 1200, { timeoutMs: 8000, intervalMs: 100, what: 'expiry' });
  assert.ok(refreshed.length >= 1, 'token_expiring was answered with a fresh token');
  assert.equal(calls[0], 'connect');
  assert.ok(calls.includes('refresh'));
  assert.deepEqual(states.map((e) => e.state), ['connecting', 'connected'], 'never disconnected');
  assert.equal(c.session.session, first.session, 'the same session');
  assert.ok(c.session.expiresAt > first.expiresAt);
  const received = new Promise((resolve) => sub.once('event', resolve));
  const ack = await c.publish('system-metrics', logEvent('still here'));
  assert.equal((await received).offset, ack.offset);
});

test('a static token that expires closes the client with 4005 (nothing to refresh it with)', async () => {
  const c = client({ token: mintToken({ user: unique('static'), ttlS: 2 }) });
  const expiring = new Promise((resolve) => c.once('token_expiring', resolve));
  await c.connect();
  await expiring;
  const closed = await new Promise((resolve) => c.once('closed', resolve));
  assert.equal(closed.code, CloseCode.TOKEN_EXPIRED);
  assert.equal(closed.error.reconnectable, false);
});

test('getToken: when the session expires (4005) the reconnect asks for a fresh token', async () => {
  const user = unique('reauth');
  const calls = [];
  const c = client({
    token: undefined,
    backoff: { baseMs: 20, maxMs: 100 },
    getToken: async ({ reason }) => {
      calls.push(reason);
      if (reason === 'refresh') throw new Error('the token service is down');
      return mintToken({ user, ttlS: 2 });
    },
  });
  const states = record(c);
  const errors = [];
  c.on('error', (e) => errors.push(e));
  const sub = c.subscribe('system-metrics');
  const records = [];
  sub.on('event', (r) => records.push(r));
  const first = await c.connect();
  await waitFor(() => c.state === 'connected' && c.session.session !== first.session, {
    timeoutMs: 6000,
    what: 'a new session',
  });
  const lost = states.find((e) => e.state === 'disconnected');
  assert.equal(lost.code, CloseCode.TOKEN_EXPIRED);
  assert.deepEqual(calls.slice(0, 3), ['connect', 'refresh', 'reconnect']);
  assert.match(errors[0].message, /token service is down/);
  await waitFor(() => sub.state === 'subscribed', { what: 'the subscription back' });
  const ack = await c.publish('system-metrics', logEvent('after reauth'));
  await waitFor(() => records.length === 1, { what: 'the record' });
  assert.equal(records[0].offset, ack.offset);
});

test('several URLs are tried in turn', async () => {
  const dead = `ws://127.0.0.1:${await freePort()}/ws`;
  const c = client({ backoff: { baseMs: 10, maxMs: 50 } }, [dead, gateway.wsUrl]);
  const states = record(c);
  await c.connect();
  assert.deepEqual(states.map((e) => e.state), ['connecting', 'disconnected', 'connecting', 'connected']);
  assert.equal(states[1].code, CloseCode.ABNORMAL);
  assert.equal(c.url, gateway.wsUrl);
});

test('a server that hangs up before answering the handshake is retried, not terminal', async () => {
  // What a gateway shutting down or restarting looks like: the TCP connection is accepted,
  // then closed before any HTTP response.
  let accepted = 0;
  const hangUp = net.createServer((socket) => {
    accepted += 1;
    socket.destroy();
  });
  await new Promise((resolve) => hangUp.listen(0, '127.0.0.1', resolve));
  try {
    const closing = `ws://127.0.0.1:${hangUp.address().port}/ws`;
    const c = client({ backoff: { baseMs: 10, maxMs: 50 } }, [closing, gateway.wsUrl]);
    const states = record(c);
    await c.connect();
    assert.equal(accepted, 1);
    assert.deepEqual(states.map((e) => e.state), ['connecting', 'disconnected', 'connecting', 'connected']);
    assert.equal(states[1].code, CloseCode.ABNORMAL);
    const ack = await c.publish('system-metrics', logEvent('after a hang-up'));
    assert.equal(ack.duplicate, false);
  } finally {
    hangUp.close();
  }
});

test('a silent connection (gateway frozen) is dropped after 2.5 heartbeats and resumed', async () => {
  const c = client({ backoff: { baseMs: 50, maxMs: 200 }, connectTimeoutMs: 500 });
  const states = record(c);
  const sub = c.subscribe('system-metrics');
  const records = [];
  sub.on('event', (r) => records.push(r));
  await c.connect();
  await sub.ready;
  await c.publish('system-metrics', logEvent('before'));
  const lost = new Promise((resolve) => c.once('disconnected', resolve));
  const frozenAt = Date.now();
  gateway.pause();
  let change;
  try {
    change = await lost;
  } finally {
    await sleep(300);
    gateway.resume();
  }
  const silentFor = Date.now() - frozenAt;
  assert.equal(change.code, CloseCode.ABNORMAL);
  assert.match(change.reason, /2\.5 heartbeats/);
  assert.ok(silentFor >= 1500 && silentFor < 4500, `dropped after ${silentFor} ms`);
  await waitFor(() => c.state === 'connected' && sub.state === 'subscribed', { what: 'reconnection' });
  const ack = await c.publish('system-metrics', logEvent('after'));
  await waitFor(() => records.length >= 2, { what: 'both records' });
  assert.deepEqual(records.map((r) => r.data.payload.message), ['before', 'after']);
  assert.equal(records[1].offset, ack.offset);
  assert.ok(states.some((e) => e.state === 'connecting' && e.attempt >= 1));
});
