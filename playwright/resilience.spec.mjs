// Connections that must stay up, and come back when the relay does.
import { expect, test } from '@playwright/test';

import { deliver, openNode, startRelay, subscribe, waitForPeer, waitForStatus } from './relay.mjs';

async function pair(browser, relay) {
  const a = await openNode(await browser.newContext(), relay);
  const b = await openNode(await browser.newContext(), relay);
  await subscribe(a.page, 'chat');
  await subscribe(b.page, 'chat');
  await waitForPeer(a.page, b.peerId);
  await waitForPeer(b.page, a.peerId);
  await deliver(a, b, 'chat', { text: 'warm-up' });
  return { a, b };
}

test('relay killed and restarted: nodes reconnect and messages flow again within 10 s', async ({ browser }) => {
  const relay = await startRelay();
  const { a, b } = await pair(browser, relay);
  await relay.kill();
  await waitForStatus(a.page, (s) => s.online, false);

  const restarted = await startRelay({ httpPort: relay.httpPort, wsPort: relay.wsPort, identityDir: relay.identityDir });
  const t0 = Date.now();
  try {
    expect(restarted.peerId).toBe(relay.peerId);
    await deliver(a, b, 'chat', { text: 'after restart a→b' }, 10_000);
    await deliver(b, a, 'chat', { text: 'after restart b→a' }, 10_000 - (Date.now() - t0));
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeLessThan(10_000);
    const s = await a.page.evaluate(() => window.node.getStatus());
    expect(s.relays[0]).toMatchObject({ connected: true, reserved: true, reconnects: 1 });
    // Both sides were told: offline, then online again.
    const events = await a.page.evaluate(() => window.events.filter((e) => e.ev === 'status').map((e) => e.value.online));
    expect(events).toContain(false);
    expect(events.at(-1)).toBe(true);
  } finally {
    await restarted.stop();
  }
});

test('connections stay up and carry messages after 120 s idle', async ({ browser }) => {
  test.setTimeout(240_000);
  const relay = await startRelay();
  try {
    const { a, b } = await pair(browser, relay);
    const before = await relay.status();
    // Idle is the point of this test: nothing is sent by the app for 125 s.
    await a.page.waitForTimeout(125_000);
    const after = await relay.status();
    for (const id of [a.peerId, b.peerId]) {
      expect(after.peers[id], `${id} still connected to the relay`).toMatchObject({ connections: 1 });
      expect(after.reservations).toContain(id);
    }
    // No connection was dropped and re-made meanwhile.
    expect(after.circuitsTotal).toBe(before.circuitsTotal);
    expect(after.circuits).toBeGreaterThanOrEqual(1);
    for (const n of [a, b]) {
      const s = await n.page.evaluate(() => window.node.getStatus());
      expect(s.relays[0]).toMatchObject({ connected: true, reserved: true, reconnects: 0 });
      expect(s.connectedPeers).toBe(1);
      expect(await n.page.evaluate(() => window.events.filter((e) => e.ev === 'peer:leave').length)).toBe(0);
    }
    await deliver(a, b, 'chat', { text: 'still here' }, 5_000);
    await deliver(b, a, 'chat', { text: 'me too' }, 5_000);
    // Two minutes outlive every SDK timer: none may have left an error or unhandled rejection.
    expect(a.errors).toEqual([]);
    expect(b.errors).toEqual([]);
  } finally {
    await relay.stop();
  }
});
