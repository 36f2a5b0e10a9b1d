// Helpers of the SDK interop cases (sdk.test.mjs with the SDK's JSON build,
// sdk-protobuf.test.mjs with its Protobuf build): the environment
// interop_test.go sets, tokens, the server API, and waiting on SDK events.
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import WebSocket from 'ws';

export const WS_URL = need('SPINDLE_WS_URL');
export const API_URL = need('SPINDLE_API_URL');
export const API_KEY = need('SPINDLE_API_KEY');
export const SECRET = need('SPINDLE_SECRET');

// Every wait is short: a gateway on loopback answers in milliseconds, so a
// hang fails the case quickly instead of running into node:test's timeout.
export const WAIT = 3000;
export const CASE = { timeout: 15000 };

export function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (interop_test.go sets it)`);
  return v;
}

export const b64url = (buf) => Buffer.from(buf).toString('base64url');

// mintToken makes an HS256 JWT the way a Centrifugo app backend would.
export function mintToken(claims, secret = SECRET) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${header}.${payload}`).digest();
  return `${header}.${payload}.${b64url(sig)}`;
}

export const now = () => Math.floor(Date.now() / 1000);
export const userToken = (user) => mintToken({ sub: user, exp: now() + 300 });

export function uniq(prefix) {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

// api calls the server HTTP API and returns its result, throwing on an error
// reply so a broken API call cannot pass silently.
export async function api(method, params) {
  const res = await fetch(`${API_URL}/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': API_KEY },
    body: JSON.stringify(params),
    signal: AbortSignal.timeout(WAIT),
  });
  assert.equal(res.status, 200, `API ${method}: HTTP ${res.status}`);
  const body = await res.json();
  if (body.error) throw new Error(`API ${method}: error ${JSON.stringify(body.error)}`);
  return body.result;
}

export function withTimeout(promise, what, ms = WAIT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// once resolves with the next `event` of an SDK client or subscription.
export function once(emitter, event, ms = WAIT) {
  return withTimeout(new Promise((resolve) => emitter.once(event, resolve)), `event "${event}"`, ms);
}

// collect records every `event` so a case can wait for a count and then
// assert on exactly what arrived.
export function collect(emitter, event) {
  const got = [];
  const waiters = [];
  emitter.on(event, (ctx) => {
    got.push(ctx);
    for (const w of waiters.filter((w) => w.done())) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  // until waits for an event matching pred and returns it.
  got.until = (pred, what, ms = WAIT) => {
    const find = () => got.find(pred);
    return withTimeout(
      find() ? Promise.resolve() : new Promise((resolve) => waiters.push({ done: () => !!find(), resolve })),
      `"${event}" ${what} (have ${JSON.stringify(got)})`,
      ms,
    ).then(find);
  };
  got.atLeast = (n, ms = WAIT) => {
    const done = () => got.length >= n;
    return withTimeout(
      done() ? Promise.resolve() : new Promise((resolve) => waiters.push({ done, resolve })),
      `${n} "${event}" events (have ${got.length})`,
      ms,
    ).then(() => got);
  };
  return got;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const clients = [];

// newClient makes a client of the SDK build Centrifuge the way an app would
// in Node, with short timeouts; disconnectAll (after each case) ends it.
export function newClient(Centrifuge, token, opts = {}) {
  const c = new Centrifuge(WS_URL, {
    websocket: WebSocket,
    token,
    timeout: WAIT,
    minReconnectDelay: 100,
    maxReconnectDelay: 300,
    ...opts,
  });
  clients.push(c);
  return c;
}

export async function connected(c) {
  const ev = once(c, 'connected');
  c.connect();
  return ev;
}

export function disconnectAll() {
  for (const c of clients.splice(0)) c.disconnect();
}
