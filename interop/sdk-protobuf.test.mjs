// Interop tests of the Protobuf encoding: the official Centrifugo JS SDK's
// Protobuf build (npm "centrifuge", `centrifuge/build/protobuf`, which
// offers the `centrifuge-protobuf` WebSocket subprotocol and speaks binary
// frames) against a running Spindle gateway, beside the JSON build.
// interop_test.go starts the gateway and runs this file with `node --test`;
// the environment is the one helpers.mjs reads (default channel rules:
// history, presence, recovery) and subscribers allowed to publish.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';
import { Centrifuge as CentrifugeJSON } from 'centrifuge';
import { WS_URL, WAIT, CASE, userToken, uniq, api, withTimeout, once, collect, sleep, newClient, connected, disconnectAll } from './helpers.mjs';

// In the Protobuf build publication data is bytes: the apps here put JSON in them.
const enc = (v) => new TextEncoder().encode(JSON.stringify(v));
const dec = (b) => {
  assert.ok(b instanceof Uint8Array, `data is ${typeof b}, not bytes`);
  return JSON.parse(new TextDecoder().decode(b));
};

afterEach(disconnectAll);

test('P0. the upgrade names centrifuge-protobuf when it is offered, and nothing otherwise', CASE, async () => {
  const open = (protocols) =>
    withTimeout(
      new Promise((resolve, reject) => {
        const ws = new WebSocket(WS_URL, protocols);
        ws.once('open', () => {
          resolve(ws.protocol);
          ws.close();
        });
        ws.once('error', reject);
      }),
      'WebSocket open',
    );
  assert.equal(await open(['centrifuge-protobuf']), 'centrifuge-protobuf');
  assert.equal(await open([]), '');
});

test('P1. connects with a JWT over Protobuf and gets its client id', CASE, async () => {
  const c = newClient(CentrifugeProtobuf, userToken('pb-alice'));
  const errors = collect(c, 'error');
  const ctx = await connected(c);
  assert.ok(typeof ctx.client === 'string' && ctx.client.length > 0, 'no client id');
  assert.equal(ctx.transport, 'websocket');
  const gone = once(c, 'disconnected');
  await api('disconnect', { client: ctx.client, disconnect: { code: 4502, reason: 'protobuf bye' } });
  const d = await gone;
  assert.deepEqual({ code: d.code, reason: d.reason }, { code: 4502, reason: 'protobuf bye' });
  assert.deepEqual([...errors], []);
});

test('P2. publications reach Protobuf and JSON subscribers of one channel alike', CASE, async () => {
  const ch = uniq('mixed');
  const pb = newClient(CentrifugeProtobuf, userToken('pb-bob'));
  const js = newClient(CentrifugeJSON, userToken('js-bob'));
  const pbSub = pb.newSubscription(ch);
  const jsSub = js.newSubscription(ch);
  const pbPubs = collect(pbSub, 'publication');
  const jsPubs = collect(jsSub, 'publication');
  pbSub.subscribe();
  jsSub.subscribe();
  await Promise.all([connected(pb), connected(js)]);
  await Promise.all([pbSub.ready(WAIT), jsSub.ready(WAIT)]);

  const a = await api('publish', { channel: ch, data: { text: 'from the API' } });
  // A Protobuf client publishes bytes; here they hold JSON, so the JSON
  // subscriber reads an object.
  await pbSub.publish(enc({ text: 'from protobuf' }));
  await jsSub.publish({ text: 'from json' });

  await Promise.all([pbPubs.atLeast(3), jsPubs.atLeast(3)]);
  await sleep(100);
  assert.deepEqual(
    pbPubs.map((p) => [p.offset, dec(p.data).text]),
    [[a.offset, 'from the API'], [a.offset + 1, 'from protobuf'], [a.offset + 2, 'from json']],
  );
  assert.deepEqual(
    jsPubs.map((p) => [p.offset, p.data.text]),
    [[a.offset, 'from the API'], [a.offset + 1, 'from protobuf'], [a.offset + 2, 'from json']],
  );
});

test('P3. presence and history over Protobuf', CASE, async () => {
  const ch = uniq('log');
  const published = [];
  for (let i = 1; i <= 3; i++) published.push(await api('publish', { channel: ch, data: { i } }));
  const epoch = published[0].epoch;

  const c = newClient(CentrifugeProtobuf, userToken('pb-erin'));
  const sub = c.newSubscription(ch, { positioned: true });
  const subscribed = once(sub, 'subscribed');
  sub.subscribe();
  const ctx = await connected(c);
  const sctx = await subscribed;
  assert.equal(sctx.positioned, true);
  assert.deepEqual(sctx.streamPosition, { offset: 3, epoch });

  const h = await sub.history({ limit: 10 });
  assert.equal(h.epoch, epoch);
  assert.deepEqual(h.publications.map((p) => [p.offset, dec(p.data).i]), [[1, 1], [2, 2], [3, 3]]);
  const since = await sub.history({ limit: 10, since: { offset: 1, epoch } });
  assert.deepEqual(since.publications.map((p) => dec(p.data).i), [2, 3]);
  const last = await sub.history({ limit: 1, reverse: true });
  assert.deepEqual(last.publications.map((p) => dec(p.data).i), [3]);

  const pres = await sub.presence();
  assert.deepEqual(Object.keys(pres.clients), [ctx.client]);
  assert.equal(pres.clients[ctx.client].user, 'pb-erin');
  assert.deepEqual(await sub.presenceStats(), { numClients: 1, numUsers: 1 });
});

test('P4. recovery over Protobuf: publications missed while away arrive in order', CASE, async () => {
  const ch = uniq('feed');
  const c = newClient(CentrifugeProtobuf, userToken('pb-frank'));
  const sub = c.newSubscription(ch, { recoverable: true, positioned: true });
  const pubs = collect(sub, 'publication');
  const subs = collect(sub, 'subscribed');
  sub.subscribe();
  await connected(c);
  await subs.atLeast(1);
  assert.equal(subs[0].recoverable, true);
  await api('publish', { channel: ch, data: { n: 1 } });
  await pubs.atLeast(1);

  const gone = once(c, 'disconnected');
  c.disconnect();
  await gone;
  for (let n = 2; n <= 4; n++) await api('publish', { channel: ch, data: { n } });
  c.connect();
  await subs.atLeast(2);
  assert.deepEqual(
    { wasRecovering: subs[1].wasRecovering, recovered: subs[1].recovered },
    { wasRecovering: true, recovered: true },
  );
  await pubs.atLeast(4);
  await api('publish', { channel: ch, data: { n: 5 } });
  await pubs.atLeast(5);
  await sleep(100);
  assert.deepEqual(pubs.map((p) => [p.offset, dec(p.data).n]), [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]);
});
