// The gateway's HTTP API, called with the console's token.

/** An HTTP answer that is not 2xx: `code`, `message`, `details` from the gateway's error body. */
export class HttpError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.name = 'HttpError';
    this.status = status;
    this.code = body?.code ?? (status === 404 ? 'not_found' : 'internal');
    this.details = Array.isArray(body?.details) ? body.details : [];
  }
}

export class Api {
  /** @param {() => string} token the current token */
  constructor(token, base = new URL('.', location.href)) {
    this.token = token;
    this.base = base;
  }

  async request(method, path, body) {
    const headers = { Accept: 'application/json' };
    const token = this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(new URL(path, this.base), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (cause) {
      const error = new Error(`No answer from ${this.base.host}: ${cause.message}`);
      error.code = 'network';
      throw error;
    }
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!response.ok) throw new HttpError(response.status, json);
    return json;
  }

  topics() {
    return this.request('GET', 'api/v1/topics').then((body) => body.topics);
  }

  topic(name) {
    return this.request('GET', `api/v1/topics/${encodeURIComponent(name)}`);
  }

  smartmodules() {
    return this.request('GET', 'api/v1/smartmodules').then((body) => body.smartmodules);
  }

  searchMemories(query, limit) {
    return this.request('POST', 'api/v1/memories/search', { query, limit });
  }

  /** The development token, or null when this gateway gives none. */
  async devToken() {
    try {
      const body = await this.request('GET', 'api/v1/dev/token');
      return typeof body?.token === 'string' ? body : null;
    } catch {
      return null;
    }
  }
}
