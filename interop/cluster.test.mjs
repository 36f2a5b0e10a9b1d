// Cross-node recovery with the official Centrifugo JS SDK (npm "centrifuge"):
// three `spindle serve` nodes share one Redis; cluster_test.go starts them
// and runs this file with `node --test`.
//
// An SDK client holds one endpoint URL for its life (with a list of
// transports it keeps the first one that opened), so an app that moves a
// user to another node makes a new Centrifuge for that node's URL and
// hands the subscription's last stream position to it with the `since`
// option. That is what these cases do: subscribe on node A, lose A (a
// clean disconnect, or A killed with SIGKILL), subscribe on node B from
// the position held, and get exactly what was published meanwhile.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const WS_A = need('SPINDLE_WS_A');
const WS_B = need('SPINDLE_WS_B');
const WS_K = need('SPINDLE_WS_K');
const PID_K = Number(need('SPINDLE_PID_K'));
const API_A = need('SPINDLE_API_A');
const API_B = need('SPINDLE_API_B');
const API_KEY = need('SPINDLE_API_KEY');
const SECRET = need('SPINDLE_SECRET');

const WAIT = 5000;
const CASE = { timeout: 20000 };

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (cluster_test.go sets it)`);
  return v;
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function userToken(user) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify({ sub: user, exp: Math.floor(Date.now() / 1000) + 300 }));
  const sig = createHmac('sha256', SECRET).update(`${header}.${payload}`).digest();
  return `${header}.${payload}.${b64url(sig)}`;
}

// publish goes through one node's server API and returns the offset the
// API acknowledged.
async function publish(apiURL, channel, data) {
  const res = await fetch(`${apiURL}/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': API_KEY },
    body: JSON.stringify({ channel, data }),
    signal: AbortSignal.timeout(WAIT),
  });
  assert.equal(res.status, 200, `publish through ${apiURL}: HTTP ${res.status}`);
  const body = await res.json();
  if (body.error) throw new Error(`publish through ${apiURL}: ${JSON.stringify(body.error)}`);
  return body.result.offset;
}

function withTimeout(promise, what, ms = WAIT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function once(emitter, event) {
  return withTimeout(new Promise((resolve) => emitter.once(event, resolve)), `event "${event}"`);
}

// collect records every `event`; atLeast waits for a count.
function collect(emitter, event) {
  const got = [];
  const waiters = [];
  emitter.on(event, (ctx) => {
    got.push(ctx);
    for (const w of waiters.filter((w) => got.length >= w.n)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  got.atLeast = (n) =>
    withTimeout(
      got.length >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve })),
      `${n} "${event}" events (have ${got.length}: ${JSON.stringify(got.map((e) => e.offset ?? e))})`,
    );
  return got;
}

const clients = [];

function newClient(url, user) {
  const c = new Centrifuge(url, {
    websocket: WebSocket,
    token: userToken(user),
    timeout: WAIT,
    minReconnectDelay: 100,
    maxReconnectDelay: 300,
  });
  clients.push(c);
  return c;
}

afterEach(() => {
  for (const c of clients.splice(0)) c.disconnect();
});

// follow subscribes on url (from `since` when given) and tracks the stream
// position the way an app would: the epoch from the subscribed event, the
// offset from the last publication.
async function follow(url, user, channel, since) {
  const c = newClient(url, user);
  const opts = { recoverable: true, positioned: true };
  if (since) opts.since = since;
  const sub = c.newSubscription(channel, opts);
  const pubs = collect(sub, 'publication');
  const subs = collect(sub, 'subscribed');
  const pos = { offset: since ? since.offset : 0, epoch: since ? since.epoch : '' };
  sub.on('subscribed', (ctx) => {
    if (ctx.streamPosition) pos.epoch = ctx.streamPosition.epoch;
  });
  sub.on('publication', (ctx) => {
    pos.offset = ctx.offset;
  });
  sub.subscribe();
  c.connect();
  await subs.atLeast(1);
  assert.equal(subs[0].recoverable, true, 'the subscription on the first node is not recoverable');
  return { c, sub, pubs, subs, pos };
}

const ns = (pubs) => pubs.map((p) => [p.offset, p.data.n]);

async function acrossNodes(lose, apiWhileAway) {
  const ch = `moving-${randomBytes(4).toString('hex')}`;
  const a = await follow(lose.url, 'walker', ch);
  assert.equal(a.subs[0].wasRecovering, false);
  for (let n = 1; n <= 2; n++) assert.equal(await publish(n === 1 ? API_A : API_B, ch, { n }), n);
  await a.pubs.atLeast(2);
  assert.deepEqual(ns(a.pubs), [[1, 1], [2, 2]]);
  assert.ok(a.pos.epoch, 'no epoch in the subscribed event');

  await lose.node(a.c);
  for (let n = 3; n <= 5; n++) assert.equal(await publish(apiWhileAway, ch, { n }), n);

  const b = await follow(WS_B, 'walker', ch, { offset: a.pos.offset, epoch: a.pos.epoch });
  const s = b.subs[0];
  assert.deepEqual(
    { wasRecovering: s.wasRecovering, recovered: s.recovered, epoch: s.streamPosition?.epoch },
    { wasRecovering: true, recovered: true, epoch: a.pos.epoch },
    'node B did not recover the position held on the first node',
  );
  await b.pubs.atLeast(3);
  assert.equal(await publish(API_A, ch, { n: 6 }), 6);
  await b.pubs.atLeast(4);
  // One more round trip through the server, so a late duplicate would be here.
  await b.sub.presenceStats();
  assert.deepEqual(ns(b.pubs), [[3, 3], [4, 4], [5, 5], [6, 6]]);
  assert.deepEqual(ns(a.pubs), [[1, 1], [2, 2]], 'the first client got publications after it left');
}

test('recovery on node B of a subscription made on node A, after a disconnect', CASE, async () => {
  await acrossNodes(
    {
      url: WS_A,
      node: async (c) => {
        const gone = once(c, 'disconnected');
        c.disconnect();
        await gone;
      },
    },
    API_A,
  );
});

test('recovery on node B after the first node is killed with SIGKILL', CASE, async () => {
  await acrossNodes(
    {
      url: WS_K,
      node: async (c) => {
        const lost = once(c, 'connecting');
        process.kill(PID_K, 'SIGKILL');
        const why = await lost;
        assert.equal(why.reason, 'transport closed', `connecting for another reason: ${JSON.stringify(why)}`);
        c.disconnect(); // the app gives up on this node and moves to another
      },
    },
    API_B,
  );
});
