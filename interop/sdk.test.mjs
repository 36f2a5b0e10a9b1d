// Interop tests: the official Centrifugo JS SDK (npm "centrifuge") against a
// running Spindle gateway. interop_test.go starts the gateway and runs this
// file with `node --test`; it can also be run by hand against any gateway:
//
//   SPINDLE_WS_URL=ws://127.0.0.1:8000/connection/websocket \
//   SPINDLE_API_URL=http://127.0.0.1:8000/api SPINDLE_API_KEY=… \
//   SPINDLE_SECRET=… node --test sdk.test.mjs
//
// The gateway must have the default channel rules for namespace-less channels
// (history, presence, join/leave, recovery) and a namespace "readonly" whose
// channels clients may neither publish to (nor need to subscribe to), with
// history on so a refused publish can be shown not to have been stored.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Centrifuge } from 'centrifuge';
import * as h from './helpers.mjs';
import { WAIT, CASE, mintToken, now, userToken, uniq, api, once, collect, sleep, connected } from './helpers.mjs';

const newClient = (token, opts) => h.newClient(Centrifuge, token, opts);

afterEach(h.disconnectAll);

// --- cases -----------------------------------------------------------------

test('1. connects with a JWT and gets its client id', CASE, async () => {
  const c = newClient(userToken('alice'));
  const errors = collect(c, 'error');
  const ctx = await connected(c);
  assert.equal(typeof ctx.client, 'string');
  assert.ok(ctx.client.length > 0, 'empty client id');
  assert.equal(ctx.transport, 'websocket');
  assert.equal(c.state, 'connected');

  // The id is the one the server knows: disconnecting that id through the
  // server API reaches this client, with the code and reason given.
  const gone = once(c, 'disconnected');
  await api('disconnect', { client: ctx.client, disconnect: { code: 4501, reason: 'interop bye' } });
  const d = await gone;
  assert.deepEqual({ code: d.code, reason: d.reason }, { code: 4501, reason: 'interop bye' });
  assert.equal(c.state, 'disconnected');
  assert.deepEqual([...errors], []);
});

test('2. receives a publication sent through the server API', CASE, async () => {
  const ch = uniq('news');
  const c = newClient(userToken('bob'));
  const sub = c.newSubscription(ch);
  const pubs = collect(sub, 'publication');
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  c.connect();
  const sctx = await subscribed;
  assert.equal(sctx.channel, ch);

  const res = await api('publish', { channel: ch, data: { text: 'hello', n: 1 } });
  const [p] = await pubs.atLeast(1);
  assert.equal(p.channel, ch);
  assert.deepEqual(p.data, { text: 'hello', n: 1 });
  assert.equal(p.offset, res.offset, 'publication offset differs from the API publish result');
  await sleep(100);
  assert.equal(pubs.length, 1, 'publication delivered more than once');
});

test('3. presence and presence stats show the subscribed clients', CASE, async () => {
  const ch = uniq('room');
  const a = newClient(userToken('carol'));
  const b = newClient(userToken('dave'));
  const subA = a.newSubscription(ch, { joinLeave: true });
  const joins = collect(subA, 'join');
  const subB = b.newSubscription(ch);
  const [ctxA, ctxB] = await Promise.all([connected(a), connected(b)]);
  subA.subscribe();
  await subA.ready(WAIT);
  subB.subscribe();
  await subB.ready(WAIT);

  // A asked for join/leave, so it hears B arrive (and may hear its own join
  // first, as from Centrifugo).
  const j = await joins.until((x) => x.info.client === ctxB.client, `for ${ctxB.client}`);
  assert.equal(j.info.user, 'dave');
  assert.equal(j.channel, ch);
  assert.deepEqual(joins.filter((x) => ![ctxA.client, ctxB.client].includes(x.info.client)), []);

  const pres = await subA.presence();
  assert.deepEqual(Object.keys(pres.clients).sort(), [ctxA.client, ctxB.client].sort());
  assert.equal(pres.clients[ctxA.client].client, ctxA.client);
  assert.equal(pres.clients[ctxA.client].user, 'carol');
  assert.equal(pres.clients[ctxB.client].user, 'dave');

  const stats = await subB.presenceStats();
  assert.deepEqual(stats, { numClients: 2, numUsers: 2 });

  // B leaves: A hears it and presence drops to A alone.
  const leave = once(subA, 'leave');
  subB.unsubscribe();
  const l = await leave;
  assert.equal(l.info.client, ctxB.client);
  assert.deepEqual(await subA.presenceStats(), { numClients: 1, numUsers: 1 });
  assert.deepEqual(Object.keys((await subA.presence()).clients), [ctxA.client]);
});

test('4. history returns the publications with offsets and epoch', CASE, async () => {
  const ch = uniq('log');
  const published = [];
  for (let i = 1; i <= 3; i++) published.push(await api('publish', { channel: ch, data: { i } }));
  const epoch = published[0].epoch;
  assert.ok(epoch, 'API publish gave no epoch');

  const c = newClient(userToken('erin'));
  // positioned: Centrifugo gives a stream position only to subscriptions
  // that ask for it (or in namespaces with force_positioning).
  const sub = c.newSubscription(ch, { positioned: true });
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  c.connect();
  const sctx = await subscribed;
  assert.equal(sctx.positioned, true, 'history channel not positioned');
  assert.deepEqual(sctx.streamPosition, { offset: published[2].offset, epoch });

  const h = await sub.history({ limit: 10 });
  assert.equal(h.epoch, epoch);
  assert.equal(h.offset, published[2].offset);
  assert.deepEqual(
    h.publications.map((p) => [p.offset, p.data]),
    published.map((r, k) => [r.offset, { i: k + 1 }]),
  );
  assert.deepEqual(published.map((r) => r.offset), [1, 2, 3]);

  const since = await sub.history({ limit: 10, since: { offset: 1, epoch } });
  assert.deepEqual(since.publications.map((p) => p.data.i), [2, 3]);

  const last = await sub.history({ limit: 1, reverse: true });
  assert.deepEqual(last.publications.map((p) => p.data.i), [3]);

  // Without a limit the SDK asks for the stream position only.
  const top = await sub.history();
  assert.deepEqual([top.publications.length, top.offset, top.epoch], [0, 3, epoch]);
});

// recoveringSub subscribes to a fresh channel, receives one live publication
// (so the SDK holds a position), and returns what the case needs.
async function recoveringSub(user, opts) {
  const ch = uniq('feed');
  const c = newClient(userToken(user), opts);
  const sub = c.newSubscription(ch, { recoverable: true, positioned: true });
  const pubs = collect(sub, 'publication');
  const subs = collect(sub, 'subscribed');
  sub.subscribe();
  const ctx = await connected(c);
  await subs.atLeast(1);
  assert.equal(subs[0].recoverable, true, 'server did not make the subscription recoverable');
  assert.equal(subs[0].wasRecovering, false);
  await api('publish', { channel: ch, data: { n: 1 } });
  await pubs.atLeast(1);
  return { ch, c, sub, pubs, subs, client: ctx.client };
}

test('5a. recovery after the client reconnects: missed publications arrive in order', CASE, async () => {
  const { ch, c, pubs, subs } = await recoveringSub('frank');
  const gone = once(c, 'disconnected');
  c.disconnect();
  await gone;
  for (let n = 2; n <= 4; n++) await api('publish', { channel: ch, data: { n } });

  c.connect();
  await subs.atLeast(2);
  const s = subs[1];
  assert.deepEqual(
    { wasRecovering: s.wasRecovering, recovered: s.recovered, hasRecoveredPublications: s.hasRecoveredPublications },
    { wasRecovering: true, recovered: true, hasRecoveredPublications: true },
  );
  await pubs.atLeast(4);
  await api('publish', { channel: ch, data: { n: 5 } });
  await pubs.atLeast(5);
  await sleep(100);
  assert.deepEqual(pubs.map((p) => [p.offset, p.data.n]), [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]);
});

test('5b. recovery after the server forces a reconnect', CASE, async () => {
  // A reconnect delay of at least 500ms leaves time to publish while away.
  const { ch, c, pubs, subs, client } = await recoveringSub('grace', { minReconnectDelay: 500, maxReconnectDelay: 700 });
  const connecting = once(c, 'connecting');
  await api('disconnect', { client, disconnect: { code: 3011, reason: 'force reconnect' } });
  const why = await connecting;
  assert.equal(why.code, 3011, `connecting for another reason: ${JSON.stringify(why)}`);
  for (let n = 2; n <= 4; n++) await api('publish', { channel: ch, data: { n } });

  const again = await once(c, 'connected');
  assert.notEqual(again.client, client, 'a new connection should have a new client id');
  await subs.atLeast(2);
  assert.equal(subs[1].wasRecovering, true);
  assert.equal(subs[1].recovered, true);
  await pubs.atLeast(4);
  await sleep(100);
  assert.deepEqual(pubs.map((p) => [p.offset, p.data.n]), [[1, 1], [2, 2], [3, 3], [4, 4]]);
});

test('6. a forged token is refused with 3500 and nothing else happens', CASE, async () => {
  const ch = uniq('secret');
  const forged = mintToken({ sub: 'mallory', exp: now() + 300 }, 'not-the-secret');
  const c = newClient(forged);
  const events = [];
  for (const e of ['connected', 'connecting', 'disconnected', 'error']) c.on(e, (ctx) => events.push([e, ctx]));
  const sub = c.newSubscription(ch);
  const subscribed = collect(sub, 'subscribed');
  sub.subscribe();
  const gone = once(c, 'disconnected');
  c.connect();
  const d = await gone;
  assert.deepEqual({ code: d.code, reason: d.reason }, { code: 3500, reason: 'invalid token' });
  assert.equal(c.state, 'disconnected');

  // The code is terminal for the SDK: it does not reconnect, never connects,
  // never subscribes, and the server has no presence for the channel.
  await sleep(500);
  assert.deepEqual(events.filter(([e]) => e === 'connected'), []);
  assert.equal(events.filter(([e]) => e === 'disconnected').length, 1, JSON.stringify(events));
  // One 'connecting': the one connect() starts; a second would be a reconnect.
  assert.equal(events.filter(([e]) => e === 'connecting').length, 1, `SDK reconnected after 3500: ${JSON.stringify(events)}`);
  assert.deepEqual([...subscribed], []);
  assert.notEqual(sub.state, 'subscribed');
  const pres = await api('presence', { channel: ch });
  assert.deepEqual(pres.presence ?? {}, {});
});

test('6b. an expired token is refreshed through getToken (error 109)', CASE, async () => {
  const expired = mintToken({ sub: 'henry', exp: now() - 60 });
  let asked = 0;
  const c = newClient(expired, {
    getToken: async () => {
      asked++;
      return userToken('henry');
    },
  });
  const ctx = await connected(c);
  assert.ok(ctx.client);
  assert.equal(asked, 1, 'SDK did not ask for a new token after 109');
});

test('7. client publish to a namespace that forbids it fails with 103', CASE, async () => {
  const ch = uniq('readonly:board');
  const c = newClient(userToken('ivan'));
  await connected(c);
  await assert.rejects(c.publish(ch, { x: 1 }), (err) => {
    assert.equal(err.code, 103);
    assert.equal(err.message, 'permission denied');
    return true;
  });

  // Subscribed or not, the answer is the same, and nothing was published.
  const sub = c.newSubscription(ch);
  const pubs = collect(sub, 'publication');
  sub.subscribe();
  await sub.ready(WAIT);
  await assert.rejects(sub.publish({ x: 2 }), { code: 103 });
  await sleep(100);
  assert.deepEqual([...pubs], []);
  const h = await api('history', { channel: ch, limit: 10 });
  assert.deepEqual(h.publications ?? [], []);

  // The connection survives a refused publish.
  assert.equal(c.state, 'connected');
  const top = await sub.history();
  assert.equal(top.offset, 0);
});

test(
  '8. a subscription that did not ask for recovery is not made recoverable',
  CASE,
  async () => {
    // Centrifugo (internal/client/handler.go OnSubscribe) enables recovery
    // only with force_recovery, or when the subscribe request says
    // recoverable:true and the namespace allows recovery (and the same for
    // positioning). The SDK trusts the reply: a reply saying recoverable makes
    // it send recover:true on every resubscribe, so an app that never opted in
    // gets replayed publications and wasRecovering after a reconnect.
    const ch = uniq('plain');
    const c = newClient(userToken('judy'));
    const sub = c.newSubscription(ch); // no recoverable, no positioned
    const pubs = collect(sub, 'publication');
    const subs = collect(sub, 'subscribed');
    sub.subscribe();
    await connected(c);
    await subs.atLeast(1);
    assert.deepEqual(
      { recoverable: subs[0].recoverable, positioned: subs[0].positioned },
      { recoverable: false, positioned: false },
      'server made a subscription recoverable/positioned that did not ask to be',
    );
    await api('publish', { channel: ch, data: { n: 1 } });
    await pubs.atLeast(1);

    const gone = once(c, 'disconnected');
    c.disconnect();
    await gone;
    await api('publish', { channel: ch, data: { n: 2 } });
    c.connect();
    await subs.atLeast(2);
    assert.equal(subs[1].wasRecovering, false, 'SDK was made to recover a subscription that did not opt in');
    await sleep(200);
    assert.deepEqual(pubs.map((p) => p.data.n), [1], 'publication made while away was replayed');
  },
);

test('9. the token channels claim subscribes on connect (server-side subscription)', CASE, async () => {
  const ch = uniq('server-side');
  const c = newClient(mintToken({ sub: 'sam', exp: now() + 300, channels: [ch] }));
  const subscribed = once(c, 'subscribed');
  const pubs = collect(c, 'publication');
  c.connect();
  const sctx = await subscribed;
  assert.equal(sctx.channel, ch);

  const res = await api('publish', { channel: ch, data: { n: 1 } });
  const [p] = await pubs.atLeast(1);
  assert.equal(p.channel, ch);
  assert.deepEqual(p.data, { n: 1 });
  assert.equal(p.offset, res.offset);

  // The server knows the subscription: the client is in the channel's presence.
  const pr = await api('presence', { channel: ch });
  assert.deepEqual(Object.values(pr.presence).map((i) => i.user), ['sam']);
});
