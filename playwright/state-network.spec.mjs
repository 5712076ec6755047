// Shared documents when the network comes and goes: a partition healed by the relay's return,
// a reload with no relay at all, and a pinning relay serving a newcomer after everyone left.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { expect, test } from '@playwright/test';

import { openDoc, tree, until } from './docs.mjs';
import { openNode, serveStatic, startRelay, waitForPeer, waitForStatus } from './relay.mjs';

test('relay stopped, both sides edit, relay back: they converge', async ({ browser }) => {
  const relay = await startRelay();
  let restarted;
  try {
    const a = await openNode(await browser.newContext(), relay);
    const b = await openNode(await browser.newContext(), relay);
    await waitForPeer(a.page, b.peerId);
    await openDoc(a.page, 'split');
    await openDoc(b.page, 'split');
    await a.page.evaluate(() => window.docs.split.set('before', 1));
    await until(b.page, 'split', (t) => t.before === 1);

    await relay.kill();
    await waitForStatus(a.page, (s) => s.online, false);
    await waitForStatus(b.page, (s) => s.online, false);
    // Each side writes while cut off (durable locally), and a shared key both ways.
    await a.page.evaluate(() => window.docs.split.update([{ set: 'fromA', value: 'a' }, { set: 'both.a', value: 1 }]));
    await b.page.evaluate(() => window.docs.split.update([{ set: 'fromB', value: 'b' }, { set: 'both.b', value: 2 }]));
    expect(await tree(a.page, 'split')).toEqual({ before: 1, fromA: 'a', both: { a: 1 } });
    expect(await tree(b.page, 'split')).toEqual({ before: 1, fromB: 'b', both: { b: 2 } });

    restarted = await startRelay({ httpPort: relay.httpPort, wsPort: relay.wsPort, identityDir: relay.identityDir });
    const merged = { before: 1, fromA: 'a', fromB: 'b', both: { a: 1, b: 2 } };
    await until(a.page, 'split', (t) => t.fromB === 'b' && t.both?.b === 2);
    await until(b.page, 'split', (t) => t.fromA === 'a' && t.both?.a === 1);
    expect(await tree(a.page, 'split')).toEqual(merged);
    expect(await tree(b.page, 'split')).toEqual(merged);
    expect(a.errors.concat(b.errors)).toEqual([]);
  } finally {
    await restarted?.stop();
    await relay.stop();
  }
});

test('reload with no relay: the document comes back from IndexedDB, and writes are durable', async ({ browser }) => {
  const relay = await startRelay();
  const context = await browser.newContext();
  let files;
  try {
    const first = await openNode(context, relay);
    await openDoc(first.page, 'offline');
    await first.page.evaluate(() => window.docs.offline.set('saved', { at: 'online' }));
    await first.page.close();
    const closedAt = Date.now();
    // The network goes away: only the app's files are still served, on the same origin.
    await relay.kill();
    files = await serveStatic(relay.httpPort);
    const offline = { relay: relay.relays, waitForRelay: false };
    const n = await openNode(context, files, offline);
    const status = await n.page.evaluate(() => window.node.getStatus());
    expect(status.online).toBe(false);
    // A new worker, not the one that held the document in memory.
    expect(status.uptimeMs).toBeLessThanOrEqual(Date.now() - closedAt);
    await openDoc(n.page, 'offline');
    expect(await tree(n.page, 'offline')).toEqual({ saved: { at: 'online' } });
    // Written offline, then reloaded, still offline.
    await n.page.evaluate(() => window.docs.offline.set('saved2', 'offline'));
    await n.page.reload();
    await n.page.waitForFunction(() => window.sdkReady === true);
    await n.page.evaluate(async (opts) => {
      window.node = await window.PeerCompute.connect(opts);
    }, offline);
    await openDoc(n.page, 'offline');
    expect(await tree(n.page, 'offline')).toEqual({ saved: { at: 'online' }, saved2: 'offline' });
    expect(n.errors).toEqual([]);
  } finally {
    await files?.close();
    await context.close();
  }
});

test('a pinning relay serves a newcomer when every other browser is gone', async ({ browser }) => {
  const stateDir = mkdtempSync(join(tmpdir(), 'pc-state-'));
  const relay = await startRelay({ stateDir });
  let restarted;
  try {
    const context = await browser.newContext();
    const a = await openNode(context, relay);
    await openDoc(a.page, 'pinned');
    await a.page.evaluate(async () => {
      await window.docs.pinned.set('world.name', 'overworld');
      await window.docs.pinned.update([{ set: 'world.players.alice', value: { x: 1 } }, { set: 'tick', value: 42 }]);
    });
    // The relay holds all three leaves before the last browser leaves.
    await expect
      .poll(async () => (await relay.status()).pinned?.pinned?.entries, { timeout: 20_000, intervals: [50] })
      .toBe(3);
    await context.close();
    const expected = { world: { name: 'overworld', players: { alice: { x: 1 } } }, tick: 42 };

    // A newcomer (a fresh profile: empty IndexedDB) with no other browser around.
    const newcomer = await openNode(await browser.newContext(), relay);
    expect((await relay.status()).peers[a.peerId]).toBeUndefined();
    await openDoc(newcomer.page, 'pinned');
    await until(newcomer.page, 'pinned', (t) => t.tick === 42);
    expect(await tree(newcomer.page, 'pinned')).toEqual(expected);

    // And after the relay restarts from its state directory, too.
    await relay.stop();
    restarted = await startRelay({ stateDir });
    const later = await openNode(await browser.newContext(), restarted);
    await openDoc(later.page, 'pinned');
    await until(later.page, 'pinned', (t) => t.tick === 42);
    expect(await tree(later.page, 'pinned')).toEqual(expected);
  } finally {
    await restarted?.stop();
    await relay.stop();
  }
});
