// Bad input gets a clear error with a stable code, and nothing else breaks.
import { expect, test } from '@playwright/test';

import { deliver, openNode, useRelay, subscribe, waitForPeer } from './relay.mjs';

test.describe.configure({ mode: 'serial' });

const currentRelay = useRelay(test);

async function sandbox(context) {
  const page = await context.newPage();
  await page.goto(`${currentRelay().url}/sandbox.html`);
  await page.waitForFunction(() => window.sdkReady === true);
  return page;
}

const connectError = (page, options) =>
  page.evaluate(async (opts) => {
    const t0 = performance.now();
    try {
      await window.PeerCompute.connect(opts);
      return { code: 'NO_ERROR' };
    } catch (e) {
      return { code: e.code, name: e.name, message: e.message, ms: performance.now() - t0 };
    }
  }, options);

test('a malformed relay multiaddr is refused with INVALID_RELAY_ADDR', async ({ browser }) => {
  const ctx = await browser.newContext();
  const page = await sandbox(ctx);
  for (const relayAddr of ['not a multiaddr', '/ip4/127.0.0.1/tcp/9090/ws', `/ip4/127.0.0.1/tcp/${currentRelay().wsPort}/p2p/${currentRelay().peerId}`]) {
    const e = await connectError(page, { relay: relayAddr });
    expect(e, relayAddr).toMatchObject({ code: 'INVALID_RELAY_ADDR', name: 'PeerComputeError' });
  }
  expect(await connectError(page, { relay: 42 })).toMatchObject({ code: 'INVALID_RELAY_ADDR' });
  // Other bad options are refused before anything starts.
  for (const cpuWorkers of [0, 1.5, 65, '2']) {
    expect(await connectError(page, { cpuWorkers }), String(cpuWorkers)).toMatchObject({ code: 'BAD_REQUEST' });
  }
  await ctx.close();
});

test('an unreachable relay rejects after timeoutMs while the node keeps retrying', async ({ browser }) => {
  const ctx = await browser.newContext();
  const page = await sandbox(ctx);
  // Nothing listens on port 9, and no relay has this id.
  const dead = '/ip4/127.0.0.1/tcp/9/ws/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN';
  const e = await connectError(page, { relay: dead, timeoutMs: 1500 });
  expect(e.code).toBe('CONNECT_TIMEOUT');
  expect(e.ms).toBeGreaterThanOrEqual(1400);
  expect(e.ms).toBeLessThan(1500 + 3000);
  // The same node still retries the dead relay in the background, and works with a live one.
  const status = await page.evaluate(async (live) => {
    const node = await window.PeerCompute.connect({ relay: live });
    return node.getStatus();
  }, currentRelay().relays[0]);
  expect(status.online).toBe(true);
  expect(status.relays).toHaveLength(2);
  expect(status.relays.find((r) => r.addr === dead)).toMatchObject({ connected: false, reserved: false });
  await ctx.close();
});

test('malformed port messages get error replies and the worker keeps serving other tabs', async ({ browser }) => {
  const [ctxA, ctxB] = [await browser.newContext(), await browser.newContext()];
  const a = await openNode(ctxA, currentRelay());
  const b = await openNode(ctxB, currentRelay());
  await subscribe(a.page, 'chat');
  await subscribe(b.page, 'chat');
  await waitForPeer(a.page, b.peerId);

  // A second tab of A's origin speaks to the worker directly, badly.
  const rogue = await sandbox(ctxA);
  const replies = await rogue.evaluate(async () => {
    const worker = new SharedWorker('/sw/worker.js', { type: 'module', name: 'peercompute' });
    const port = worker.port;
    const got = [];
    port.onmessage = (e) => got.push(e.data);
    port.start();
    const big = new Uint8Array(2 * 1024 * 1024);
    const bad = [
      'hello',
      42,
      null,
      { v: 1 },
      { v: 99, id: 1, op: 'ping' },
      { v: 1, id: 2, op: 'launch-missiles' },
      { v: 1, id: 3, op: 'publish', topic: 'chat' },
      { v: 1, id: 4, op: 'publish', topic: 'x'.repeat(300), json: '1' },
      { v: 1, id: 5, op: 'connect', relays: [123] },
      { v: 1, id: 6, op: 'publish', topic: 'chat', bytes: big },
      { v: 1, id: 7, op: 'publish', topic: 'chat', json: '{not json' },
      { v: 1, id: 8, op: 'subscribe', topic: 7 },
      { v: 1, id: 9, op: 'attach', lock: 'someone-elses-lock' },
      { v: 1, id: 1.5, op: 'ping' },
      // Measured before they are decoded (and copied into wasm): too long for their op.
      { v: 1, id: 14, op: 'stateUpdate', doc: 'd', ops: 'x'.repeat(2 * 1024 * 1024) },
      { v: 1, id: 15, op: 'ping', junk: 'y'.repeat(100 * 1024) },
      { v: 1, id: 16, op: 'z'.repeat(100_000) },
      { v: 1, id: 17, op: 'ping', ['k'.repeat(100 * 1024)]: 1 },
    ];
    for (const m of bad) port.postMessage(m);
    // Lent executors: 64 CPU workers and one GPU worker per tab at most. The GPU's name is
    // cut at 256 bytes, here inside a two-byte character.
    const lend = (id, fields) => {
      const { port1, port2 } = new MessageChannel();
      port1.start();
      port.postMessage({ v: 1, id, op: 'executorAttach', port: port2, ...fields }, [port2]);
    };
    const gpu = { name: 'x' + 'é'.repeat(200), backend: 'b', fallback: true };
    lend(10, { cpuSlots: 64, score: 1 });
    lend(11, { cpuSlots: 1, score: 1 });
    lend(12, { gpu });
    lend(13, { gpu });
    port.postMessage({ v: 1, id: 100, op: 'ping' });
    const t0 = performance.now();
    while (!got.some((r) => r.id === 100) && performance.now() - t0 < 10_000) {
      await new Promise((r) => setTimeout(r, 20));
    }
    return got;
  });
  const byId = (id) => replies.find((r) => r.id === id);
  expect(replies.filter((r) => r.id === null).map((r) => r.error.code)).toEqual(
    expect.arrayContaining(['BAD_REQUEST']),
  );
  expect(replies.filter((r) => r.id === null).length).toBe(5); // 'hello', 42, null, {v:1}, id 1.5
  expect(byId(1).error.code).toBe('UNSUPPORTED_VERSION');
  expect(byId(2).error.code).toBe('UNKNOWN_OP');
  expect(byId(3).error.code).toBe('BAD_REQUEST');
  expect(byId(4).error.code).toBe('INVALID_TOPIC');
  expect(byId(5).error.code).toBe('BAD_REQUEST');
  expect(byId(6).error.code).toBe('PAYLOAD_TOO_LARGE');
  expect(byId(7).error.code).toBe('INVALID_JSON');
  expect(byId(8).error.code).toBe('BAD_REQUEST');
  expect(byId(9).error.code).toBe('BAD_REQUEST');
  expect([byId(14).error.code, byId(15).error.code]).toEqual(['PAYLOAD_TOO_LARGE', 'PAYLOAD_TOO_LARGE']);
  expect(byId(16).error.code).toBe('UNKNOWN_OP');
  expect(byId(17).error).toMatchObject({ code: 'PAYLOAD_TOO_LARGE', message: expect.stringContaining('characters long') });
  expect([byId(10).ok, byId(11).error?.code, byId(12).ok, byId(13).error?.code]).toEqual([
    true,
    'BAD_REQUEST',
    true,
    'BAD_REQUEST',
  ]);
  expect(byId(100)).toMatchObject({ ok: true, value: { pong: true } });
  // Every reply (events, such as the status the lent executors changed, aside) is ok or says why.
  for (const r of replies.filter((r) => r.event === undefined)) {
    expect(typeof r.error?.message === 'string' || r.ok).toBeTruthy();
  }

  // The well-behaved tab of the same worker is unaffected.
  await deliver(a, b, 'chat', { text: 'still fine' });
  await deliver(b, a, 'chat', { text: 'still fine too' });
  await ctxA.close();
  await ctxB.close();
});

test('the SDK refuses oversized, non-JSON and badly addressed publishes with codes', async ({ browser }) => {
  const ctx = await browser.newContext();
  const { page } = await openNode(ctx, currentRelay());
  const codes = await page.evaluate(async () => {
    const code = (p) => p.then(() => 'NO_ERROR', (e) => e.code);
    const cyclic = {};
    cyclic.self = cyclic;
    return {
      bytes: await code(window.node.publish('chat', new Uint8Array(1024 * 1024 + 1))),
      json: await code(window.node.publish('chat', { s: 'x'.repeat(1024 * 1024) })),
      cyclic: await code(window.node.publish('chat', cyclic)),
      bigint: await code(window.node.publish('chat', { n: 1n })),
      undef: await code(window.node.publish('chat', undefined)),
      topic: await code(window.node.publish('', 1)),
      subscribe: (() => {
        try {
          window.node.subscribe('', () => {});
          return 'NO_ERROR';
        } catch (e) {
          return e.code;
        }
      })(),
      exactlyMax: await code(window.node.publish('chat', new Uint8Array(1024 * 1024))),
      // The node refuses a topic with a control character; nothing stays subscribed, so a
      // second subscribe asks again (and is refused again) rather than resolving.
      refusedTwice: [
        await code(window.node.subscribe('a\nb', () => {}).ready),
        await code(window.node.subscribe('a\nb', () => {}).ready),
      ],
      // A task field the browser cannot copy to the worker.
      uncloneable: await code(
        window.node.submitTask({ type: 'cpu', kernel: 'square', inputs: [new Float32Array(4)], split: { chunks: () => 2 } })
          .done,
      ),
      // The channel still serves requests after both.
      after: await code(window.node.publish('chat', 1)),
      // close() twice at once: one detach, both resolve; the handle is closed after.
      closeTwice: await Promise.all([window.node.close(), window.node.close()]).then(() => 'resolved', (e) => e.code),
      afterClose: await code(window.node.publish('chat', 1)),
    };
  });
  expect(codes).toEqual({
    bytes: 'PAYLOAD_TOO_LARGE',
    json: 'PAYLOAD_TOO_LARGE',
    cyclic: 'INVALID_JSON',
    bigint: 'INVALID_JSON',
    undef: 'INVALID_JSON',
    topic: 'INVALID_TOPIC',
    subscribe: 'INVALID_TOPIC',
    exactlyMax: 'NO_ERROR',
    refusedTwice: ['INVALID_TOPIC', 'INVALID_TOPIC'],
    uncloneable: 'BAD_REQUEST',
    after: 'NO_ERROR',
    closeTwice: 'resolved',
    afterClose: 'CLOSED',
  });
  await ctx.close();
});
