// What differs between browsers and Node: the WebSocket class, MessagePack, random ids.

import { Subprotocol } from './constants.js';

// Specifiers in variables: bundlers leave these imports alone, so a browser bundle does not
// pull in `ws` or `node:crypto` (MessagePack is imported with a literal: bundlers split it off).
const WS_MODULE = 'ws';
const NODE_CRYPTO = 'node:crypto';

let wsClass;

/** The WebSocket class: `custom`, else the global one (browsers, Node >= 22), else `ws`. */
export async function resolveWebSocket(custom) {
  if (custom) return custom;
  if (typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  if (wsClass === undefined) {
    const mod = await import(/* webpackIgnore: true */ /* @vite-ignore */ WS_MODULE);
    wsClass = mod.WebSocket ?? mod.default;
  }
  return wsClass;
}

let msgpackModule;

/** The frame codec of `encoding`: `{encoding, subprotocol, binary, encode(frame), decode(data)}`. */
export async function makeCodec(encoding) {
  if (encoding === 'json') {
    return {
      encoding,
      subprotocol: Subprotocol.json,
      binary: false,
      encode: (frame) => JSON.stringify(frame),
      decode: (data) => JSON.parse(typeof data === 'string' ? data : textDecoder().decode(toBytes(data))),
    };
  }
  if (encoding === 'msgpack') {
    msgpackModule ??= await import('@msgpack/msgpack');
    const encoder = new msgpackModule.Encoder({ ignoreUndefined: true });
    const decoder = new msgpackModule.Decoder();
    return {
      encoding,
      subprotocol: Subprotocol.msgpack,
      binary: true,
      encode: (frame) => encoder.encode(frame),
      decode: (data) => {
        if (typeof data === 'string') return JSON.parse(data);
        return decoder.decode(toBytes(data));
      },
    };
  }
  throw new TypeError(`encoding must be "json" or "msgpack", not ${JSON.stringify(encoding)}`);
}

let decoder;
function textDecoder() {
  decoder ??= new TextDecoder();
  return decoder;
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) return concat(data); // ws "fragments"
  throw new TypeError('unexpected WebSocket message data');
}

function concat(chunks) {
  const total = chunks.reduce((n, c) => n + c.byteLength, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    out.set(toBytes(chunk), at);
    at += chunk.byteLength;
  }
  return out;
}

// -- random ids -------------------------------------------------------------------------------

let cryptoImpl = globalThis.crypto;
if (cryptoImpl?.getRandomValues === undefined && typeof process !== 'undefined' && process.versions?.node) {
  // Node 18 has no global `crypto` without a flag.
  cryptoImpl = (await import(/* webpackIgnore: true */ /* @vite-ignore */ NODE_CRYPTO)).webcrypto;
}

function randomBytes(count) {
  const bytes = new Uint8Array(count);
  if (typeof cryptoImpl?.getRandomValues === 'function') cryptoImpl.getRandomValues(bytes);
  else for (let i = 0; i < count; i++) bytes[i] = Math.floor(Math.random() * 256);
  return bytes;
}

/** The UUID of 16 bytes, stamped with `version` and the RFC 9562 variant. */
function formatUuid(bytes, version) {
  bytes[6] = (bytes[6] & 0x0f) | (version << 4);
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A random UUID (v4). */
export function randomId() {
  if (typeof cryptoImpl?.randomUUID === 'function') return cryptoImpl.randomUUID();
  return formatUuid(randomBytes(16), 4);
}

/**
 * A UUIDv7 (RFC 9562): the default event id, the SDK's idempotency key. It starts with the
 * time in milliseconds, so a client's ids grow and the gateway's log adds their keys at the
 * end of its idempotency index instead of on random pages of it.
 */
export function eventId() {
  const bytes = randomBytes(16);
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    bytes[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  return formatUuid(bytes, 7);
}

/** `ws://host/ws` from `http://host`, `ws://host` or `ws://host/ws`. */
export function normalizeUrl(url) {
  const text = String(url);
  let parsed;
  try {
    parsed = new URL(text);
  } catch {
    throw new TypeError(`not a URL: ${text}`);
  }
  if (parsed.protocol === 'http:') parsed.protocol = 'ws:';
  else if (parsed.protocol === 'https:') parsed.protocol = 'wss:';
  else if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new TypeError(`expected a ws://, wss://, http:// or https:// URL, not ${text}`);
  }
  if (parsed.pathname === '' || parsed.pathname === '/') parsed.pathname = '/ws';
  return parsed.toString();
}
