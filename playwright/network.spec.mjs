// Nodes in real Chromium meeting through a real relay process.
import { expect, test } from '@playwright/test';

import { deliver, openNode, startRelay, useRelay, subscribe, waitForPeer, waitForStatus } from './relay.mjs';

test.describe.configure({ mode: 'serial' });

const currentRelay = useRelay(test);

test('two browser nodes find each other and exchange messages both ways', async ({ browser }) => {
  const [ctxA, ctxB] = [await browser.newContext(), await browser.newContext()];
  const a = await openNode(ctxA, currentRelay());
  const b = await openNode(ctxB, currentRelay());
  expect(a.peerId).not.toEqual(b.peerId);
  await subscribe(a.page, 'chat');
  await subscribe(b.page, 'chat');

  // Discovery through the relay, then a direct circuit both sides see.
  await waitForPeer(a.page, b.peerId);
  await waitForPeer(b.page, a.peerId);

  const atB = await deliver(a, b, 'chat', { text: 'hello from a' });
  expect(atB).toMatchObject({ topic: 'chat', from: a.peerId, local: false, data: { text: 'hello from a' } });
  const atA = await deliver(b, a, 'chat', { text: 'hello from b' });
  expect(atA).toMatchObject({ from: b.peerId, data: { text: 'hello from b' } });

  // Binary payloads arrive as bytes, and a node does not receive its own messages.
  await subscribe(b.page, 'bin');
  await subscribe(a.page, 'bin');
  const deadline = Date.now() + 20_000;
  let got = null;
  while (!got && Date.now() < deadline) {
    await a.page.evaluate(() => window.node.publish('bin', new Uint8Array([1, 2, 3, 250])));
    got = await b.page
      .waitForFunction(() => {
        const m = window.inbox.find((x) => x.topic === 'bin');
        return m && { isBytes: m.data instanceof Uint8Array, values: Array.from(m.data), from: m.from };
      }, null, { timeout: 500, polling: 25 })
      .then((h) => h.jsonValue(), () => null);
  }
  expect(got).toEqual({ isBytes: true, values: [1, 2, 3, 250], from: a.peerId });
  expect(await a.page.evaluate(() => window.inbox.filter((m) => m.topic === 'bin').length)).toBe(0);

  const status = await a.page.evaluate(() => window.node.getStatus());
  expect(status).toMatchObject({ peerId: a.peerId, online: true, connectedPeers: 1 });
  expect(status.relays[0]).toMatchObject({ connected: true, reserved: true });
  await ctxA.close();
  await ctxB.close();
});

test('tabs of one origin share one node, one peer id and one relay connection', async ({ browser }) => {
  const ctx = await browser.newContext();
  const tabs = [];
  for (let i = 0; i < 3; i++) tabs.push(await openNode(ctx, currentRelay()));
  const ids = new Set(tabs.map((t) => t.peerId));
  expect(ids.size).toBe(1);
  const [peerId] = ids;

  const status = await currentRelay().status();
  expect(status.peers[peerId]).toMatchObject({ connections: 1 });
  expect(await tabs[0].page.evaluate(() => window.node.getStatus())).toMatchObject({ tabs: 3 });

  // Tabs see each other's messages locally, without the network.
  await subscribe(tabs[1].page, 'local');
  await subscribe(tabs[2].page, 'local');
  const receipt = await tabs[0].page.evaluate(() => window.node.publish('local', { n: 1 }));
  expect(receipt.localTabs).toBe(2);
  for (const t of [tabs[1], tabs[2]]) {
    const m = await t.page.waitForFunction(() => window.inbox.find((x) => x.topic === 'local')).then((h) => h.jsonValue());
    expect(m).toMatchObject({ from: peerId, local: true, data: { n: 1 } });
  }

  // A tab that closes is forgotten; the others keep working on the same connection.
  await tabs[2].page.close();
  await waitForStatus(tabs[0].page, (s) => s.tabs, 2);
  await tabs[1].page.evaluate(() => window.node.ping());
  expect((await currentRelay().status()).peers[peerId]).toMatchObject({ connections: 1 });
  await ctx.close();
});

test('without Web Locks or randomUUID (plain http on a LAN address), closed tabs are still forgotten', async ({ browser }) => {
  const ctx = await browser.newContext();
  // What an insecure context lacks; localhost is a secure context, so take them away.
  await ctx.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined });
    delete Crypto.prototype.randomUUID;
  });
  const tabs = [await openNode(ctx, currentRelay()), await openNode(ctx, currentRelay())];
  expect(await tabs[0].page.evaluate(() => [typeof navigator.locks, typeof crypto.randomUUID])).toEqual([
    'undefined',
    'undefined',
  ]);
  await waitForStatus(tabs[0].page, (s) => s.tabs, 2);
  await tabs[1].page.close();
  await waitForStatus(tabs[0].page, (s) => s.tabs, 1);
  // A task without an id gets one.
  const squared = await tabs[0].page.evaluate(async () => {
    const task = window.node.submitTask({ type: 'cpu', kernel: 'square', inputs: [new Float32Array([2, 3])], local: true });
    return Array.from(await task.result);
  });
  expect(squared).toEqual([4, 9]);
  expect(tabs[0].errors).toEqual([]);
  await ctx.close();
});

test('a second node of the origin (its worker at another URL) is refused; the first keeps working', async ({ browser }) => {
  const ctx = await browser.newContext();
  const first = await openNode(ctx, currentRelay());
  const page = await ctx.newPage();
  await page.goto(`${currentRelay().url}/sandbox.html`);
  const code = await page.evaluate(() =>
    window.PeerCompute.connect({ worker: '/sw/worker.js?another', timeoutMs: 2000 }).then(
      () => 'connected',
      (e) => e.code,
    ),
  );
  expect(code).toBe('WORKER_START_FAILED');
  // A worker URL the browser refuses outright (another origin): the same code, not a throw.
  const crossOrigin = await page.evaluate(() =>
    window.PeerCompute.connect({ worker: 'http://127.0.0.2:1/worker.js', timeoutMs: 2000 }).then(
      () => 'connected',
      (e) => `${e.name}:${e.code}`,
    ),
  );
  expect(crossOrigin).toBe('PeerComputeError:WORKER_START_FAILED');
  expect(await first.page.evaluate(async () => (await window.node.getStatus()).tabs)).toBe(1);
  expect(await first.page.evaluate(async () => (await window.PeerCompute.connect()).peerId)).toBe(first.peerId);
  await ctx.close();
});

test('a reloaded page, and a new worker after every tab closed, keep the peer id', async ({ browser }) => {
  const ctx = await browser.newContext();
  const first = await openNode(ctx, currentRelay());
  await first.page.reload();
  await first.page.waitForFunction(() => window.sdkReady === true);
  const afterReload = await first.page.evaluate(async () => (await window.PeerCompute.connect()).peerId);
  expect(afterReload).toBe(first.peerId);

  // Close every tab: the SharedWorker goes away and the relay sees the node leave.
  await first.page.close();
  await expect.poll(async () => (await currentRelay().status()).peers[first.peerId], { timeout: 30_000 }).toBeUndefined();
  const again = await openNode(ctx, currentRelay());
  expect(again.peerId).toBe(first.peerId);
  await ctx.close();
});

// A relay run for other machines listens on every interface; a page loaded from it dials it at
// the host the page came from (127.0.0.2 here stands for the relay machine's address).
test('a relay listening on every interface is dialed at the host the page came from', async ({ browser }) => {
  const relay = await startRelay({ httpHost: '127.0.0.2', listenHost: '0.0.0.0' });
  try {
    expect(relay.url).toMatch(/^http:\/\/127\.0\.0\.2:/);
    const ctx = await browser.newContext();
    const node = await openNode(ctx, relay);
    const bootstrap = await node.page.evaluate(async () => (await fetch('/peercompute.json')).json());
    expect(bootstrap.relays).toEqual([`/ip4/127.0.0.2/tcp/${relay.wsPort}/ws/p2p/${relay.peerId}`]);
    await expect.poll(async () => (await relay.status()).peers[node.peerId]?.connections, { timeout: 10_000 }).toBe(1);
    await ctx.close();
  } finally {
    await relay.stop();
  }
});
