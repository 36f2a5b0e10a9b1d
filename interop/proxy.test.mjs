// Interop tests of the backend proxy: the official JS SDK against a Spindle
// gateway whose connect, rpc and subscribe events go to an HTTP backend.
// proxy_test.go starts both and runs this file with `node --test`. The
// backend authenticates every connection as user "js-user" (answering
// data {greeting}), answers rpc with {method, got: data}, and refuses
// subscriptions to room:secret with error 403 "not for you" (others pass).
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const WS_URL = process.env.SPINDLE_WS_URL;
if (!WS_URL) throw new Error('SPINDLE_WS_URL is not set (proxy_test.go sets it)');
const WAIT = 3000;
const CASE = { timeout: 15000 };

function withTimeout(promise, what, ms = WAIT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const once = (emitter, event) => withTimeout(new Promise((resolve) => emitter.once(event, resolve)), `event "${event}"`);

const clients = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.disconnect();
});

// connected makes a client with no token at all and waits for its connect.
async function connected() {
  const c = new Centrifuge(WS_URL, { websocket: WebSocket, timeout: WAIT, minReconnectDelay: 100, maxReconnectDelay: 300 });
  clients.push(c);
  const ctx = once(c, 'connected');
  c.connect();
  return [c, await ctx];
}

test('P1. connects with no token through the connect proxy', CASE, async () => {
  const [, ctx] = await connected();
  assert.ok(ctx.client, 'a client id');
  assert.deepEqual(ctx.data, { greeting: 'hello js-user' });
});

test('P2. an rpc call is answered by the backend', CASE, async () => {
  const [c] = await connected();
  const res = await withTimeout(c.rpc('echo', { n: 1 }), 'rpc reply');
  assert.deepEqual(res.data, { method: 'echo', got: { n: 1 } });
});

test('P3. a subscription refused by the subscribe proxy', CASE, async () => {
  const [c] = await connected();
  const sub = c.newSubscription('room:secret');
  const unsubscribed = once(sub, 'unsubscribed');
  sub.subscribe();
  const ctx = await unsubscribed;
  assert.equal(ctx.code, 403);
  assert.equal(ctx.reason, 'not for you');
  // The backend allows another room: the client is still fine.
  const ok = c.newSubscription('room:open');
  const subscribed = once(ok, 'subscribed');
  ok.subscribe();
  await subscribed;
});

test('P4. a subscription made before connect rides in the connect frame and is allowed', CASE, async () => {
  const c = new Centrifuge(WS_URL, { websocket: WebSocket, timeout: WAIT });
  clients.push(c);
  const sub = c.newSubscription('room:early');
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  c.connect();
  const ctx = await subscribed;
  assert.equal(ctx.channel, 'room:early');
});
