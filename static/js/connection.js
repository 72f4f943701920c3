// The connection: the token (prefilled in development), the SDK client, its states and its
// reconnects, shown as they happen.

import { Client } from '../sdk/index.js';
import { clock, h } from './dom.js';
import { setError } from './forms.js';
import { describeClose, sentence } from './words.js';

const KEEP_HISTORY = 30;

export class Connection {
  /**
   * @param {{api, url: string, form, token, show, button, badge, status, reconnects, history,
   *   historyCount, note, onConnected: (session) => void, onClient: (client) => void}} options
   */
  constructor(options) {
    Object.assign(this, options);
    this.client = null;
    this.devToken = false;
    this.reconnectCount = 0;
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (this.client !== null) this.disconnect();
      else this.connect();
    });
    this.show.addEventListener('click', () => {
      const showing = this.token.type === 'text';
      this.token.type = showing ? 'password' : 'text';
      this.show.setAttribute('aria-pressed', String(!showing));
      this.show.textContent = showing ? 'Show' : 'Hide';
    });
    this.token.addEventListener('input', () => {
      this.devToken = false;
      setError(this.token, '');
    });
    this.#show('idle', 'Not connected. Enter a token and connect.', false);
  }

  /** The token the console uses for HTTP calls and new connections. */
  currentToken() {
    return this.token.value.trim();
  }

  /** Fill in the development token when this gateway hands one out. */
  async prefill() {
    const dev = await this.api.devToken();
    if (dev === null) {
      this.note.textContent = 'Paste a token, e.g. from `agentmem-gateway token --user alice --org acme --scopes publish,subscribe`.';
      return false;
    }
    if (this.token.value.trim() === '') {
      this.token.value = dev.token;
      this.devToken = true;
    }
    this.note.textContent = `Development token prefilled: user ${dev.user_id}, organization ${dev.organization_id}, scopes ${dev.scopes.join(', ')}. This gateway runs with its development secret.`;
    return true;
  }

  connect() {
    const token = this.currentToken();
    if (!token) {
      setError(this.token, 'Enter a token first.');
      this.token.focus();
      return;
    }
    setError(this.token, '');
    this.reconnectCount = 0;
    this.reconnects.textContent = '';
    let client;
    try {
      client = new Client(this.url, { getToken: (request) => this.#getToken(request) });
    } catch (error) {
      this.#show('closed', sentence(error));
      return;
    }
    this.client = client;
    this.button.textContent = 'Disconnect';
    let connectedBefore = false;
    client.on('state', (change) => this.#onState(client, change));
    client.on('connected', (change) => {
      if (connectedBefore) {
        this.reconnectCount += 1;
        this.reconnects.textContent = `Reconnected ${this.reconnectCount} time${this.reconnectCount === 1 ? '' : 's'}; subscriptions resumed from their last offsets.`;
      }
      connectedBefore = true;
      this.onConnected(change.session);
    });
    client.on('error', (error) => this.#log('error', sentence(error)));
    client.on('token_refreshed', () => this.#log('token', 'The token was refreshed.'));
    this.onClient(client);
    client.connect().catch(() => {}); // failures arrive as states
  }

  disconnect() {
    const client = this.client;
    if (client === null) return;
    client.close();
  }

  async #getToken({ reason }) {
    if (this.devToken && reason !== 'connect') {
      const fresh = await this.api.devToken();
      if (fresh !== null) this.token.value = fresh.token;
    }
    return this.currentToken();
  }

  #onState(client, change) {
    if (client !== this.client) return;
    switch (change.state) {
      case 'connecting':
        this.#show('connecting', change.attempt > 0 ? `Reconnecting to ${client.url} (attempt ${change.attempt})…` : `Connecting to ${client.url}…`);
        break;
      case 'connected': {
        const s = change.session;
        this.#show('connected', `Connected as ${s.userId} of ${s.organizationId} (scopes: ${s.scopes.join(', ') || 'none'}).`);
        break;
      }
      case 'disconnected':
        this.#show('retrying', `${describeClose(change.code, change.reason)} Reconnecting in ${(change.delayMs / 1000).toFixed(1)} s.`);
        break;
      case 'closed': {
        this.client = null;
        this.button.textContent = 'Connect';
        this.onClient(null);
        if (change.error) {
          const text = `${describeClose(change.code, change.reason)} Not reconnecting.`;
          this.#show('closed', text);
          if (change.code === 4500 || change.code === 4501 || change.code === 4005) setError(this.token, describeClose(change.code));
        } else {
          this.#show('idle', 'Disconnected.');
        }
        break;
      }
      default:
        break;
    }
  }

  #show(kind, text, log = true) {
    this.badge.dataset.state = kind;
    this.badge.textContent = { idle: 'Offline', connecting: 'Connecting', connected: 'Connected', retrying: 'Reconnecting', closed: 'Closed' }[kind];
    this.status.textContent = text;
    if (log) this.#log(kind, text);
  }

  #log(kind, text) {
    this.history.prepend(h('li', { 'data-kind': kind }, h('time', {}, clock(Date.now())), ' ', text));
    while (this.history.children.length > KEEP_HISTORY) this.history.lastElementChild.remove();
    this.historyCount.textContent = String(this.history.children.length);
  }
}
