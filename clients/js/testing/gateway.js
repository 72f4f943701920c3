// Test support: a real gateway process (`python -m gateway serve`) on a free loopback port,
// tokens minted with node:crypto, and reads of the log over HTTP.
//
// The repository root is found relative to this file; AGENTMEM_TEST_GATEWAY_ROOT and
// AGENTMEM_TEST_PYTHON override the gateway's source tree and the Python interpreter.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const SECRET = 'js-sdk-test-secret-0123456789abcdef-0123456789';

const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone
    }
  }
});

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `predicate` until it is truthy (returns its value) or `timeoutMs` passes (throws). */
export async function waitFor(predicate, { timeoutMs = 10_000, intervalMs = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** `agentmem-gateway serve` in a child process, on its own port and data directory. */
export class Gateway {
  constructor({ env = {}, port, dataDir } = {}) {
    this.extraEnv = env;
    this.port = port;
    this.ownsDataDir = dataDir === undefined;
    this.dataDir = dataDir ?? mkdtempSync(join(tmpdir(), 'agentmem-js-'));
    this.logPath = `${this.dataDir}-gateway.log`;
    this.proc = null;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  async start(timeoutMs = 30_000) {
    this.port ??= await freePort();
    const root = process.env.AGENTMEM_TEST_GATEWAY_ROOT ?? REPO_ROOT;
    const python = process.env.AGENTMEM_TEST_PYTHON ?? join(REPO_ROOT, '.venv', 'bin', 'python');
    const log = openSync(this.logPath, 'a');
    const proc = spawn(python, ['-m', 'gateway', 'serve', '--port', String(this.port)], {
      cwd: root,
      env: {
        ...process.env,
        AGENTMEM_DATA_DIR: this.dataDir,
        AGENTMEM_JWT_SECRET: SECRET,
        AGENTMEM_LOG_LEVEL: 'warning',
        ...this.extraEnv,
      },
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    this.proc = proc;
    running.add(proc);
    let exited = null;
    proc.once('exit', (code, signal) => {
      exited = { code, signal };
      running.delete(proc);
    });
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (exited) throw new Error(`gateway exited (${JSON.stringify(exited)}):\n${this.logTail()}`);
      try {
        const response = await fetch(`${this.httpUrl}/health`, { signal: AbortSignal.timeout(1000) });
        if (response.status === 200) return this;
      } catch {
        // not up yet
      }
      await sleep(50);
    }
    throw new Error(`gateway did not become healthy in time:\n${this.logTail()}`);
  }

  logTail(lines = 40) {
    try {
      return readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  _signal(signal) {
    const proc = this.proc;
    if (proc === null || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
    return new Promise((resolveExit) => {
      proc.once('exit', () => resolveExit());
      proc.kill(signal);
    });
  }

  /** SIGKILL: the gateway dies at once, nothing is flushed or drained. */
  async kill() {
    await this._signal('SIGKILL');
    this.proc = null;
  }

  /** SIGSTOP / SIGCONT: the process freezes (connections stay open, nothing answers). */
  pause() {
    this.proc?.kill('SIGSTOP');
  }

  resume() {
    this.proc?.kill('SIGCONT');
  }

  /** SIGTERM (graceful drain), SIGKILL after `timeoutMs`. */
  async stop(timeoutMs = 15_000) {
    const proc = this.proc;
    if (proc === null) return;
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    await this._signal('SIGTERM');
    clearTimeout(timer);
    this.proc = null;
  }

  /** Stop and remove the data directory (when this object made it). */
  async dispose() {
    await this.stop();
    if (this.ownsDataDir) {
      rmSync(this.dataDir, { recursive: true, force: true });
      rmSync(this.logPath, { force: true });
    }
  }

  // -- HTTP ---------------------------------------------------------------------------------------

  async http(path, token) {
    const response = await fetch(this.httpUrl + path, {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(10_000),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${JSON.stringify(body)}`);
    return body;
  }

  /** One stored record (or undefined) of `topic`/`partition` at `offset`. */
  async record(token, topic, partition, offset) {
    const body = await this.http(
      `/api/v1/topics/${encodeURIComponent(topic)}/records?partition=${partition}&offset=${offset}&limit=1`,
      token,
    );
    return body.records.find((r) => r.offset === offset);
  }

  /** Every stored record of `topic` the token may see, partition by partition. */
  async records(token, topic) {
    const description = await this.http(`/api/v1/topics/${encodeURIComponent(topic)}`, token);
    const all = [];
    for (const { partition, start_offset: start, end_offset: end } of description.partitions) {
      let offset = start;
      while (offset < end) {
        const page = await this.http(
          `/api/v1/topics/${encodeURIComponent(topic)}/records?partition=${partition}&offset=${offset}&limit=1000`,
          token,
        );
        all.push(...page.records);
        if (page.next_offset <= offset) break;
        offset = page.next_offset;
      }
    }
    return all;
  }
}

// -- tokens -------------------------------------------------------------------------------------

const b64url = (value) => Buffer.from(value).toString('base64url');

/** An HS256 JWT with the gateway's claims: `sub`, `org`, `scopes`, `iat`, `exp`. */
export function mintToken({
  user = 'alice',
  org = 'acme',
  scopes = ['publish', 'subscribe'],
  ttlS = 3600,
  secret = SECRET,
} = {}) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify({ sub: user, org, scopes, iat: now, exp: now + ttlS }));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

/** A unique-enough name for test users and organizations. */
export function unique(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** A valid event of type log_entry (system-metrics, audit-logs accept it). */
export function logEvent(message, extra = {}) {
  return { type: 'log_entry', payload: { level: 'info', message, ...extra } };
}
