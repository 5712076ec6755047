// Presence between browser nodes through a real relay.
import { expect, test } from '@playwright/test';

import { openNode, useRelay, waitForPeer } from './relay.mjs';

const currentRelay = useRelay(test);

/** Records the page's presence changes in `window.presence`. */
async function watchPresence(page) {
  await page.evaluate(() => {
    window.presence = [];
    window.node.presence.on('change', (peers) => window.presence.push(peers));
  });
}

const latest = (page) => page.evaluate(() => window.node.presence.get());

async function untilPresence(page, check, timeout = 20_000) {
  await expect.poll(async () => check(await latest(page)), { timeout, intervals: [50] }).toBe(true);
}

test('presence is seen by peers, shared by tabs, cleared, and gone when a node leaves', async ({ browser }) => {
  const contextA = await browser.newContext();
  const a = await openNode(contextA, currentRelay());
  const a2 = await openNode(contextA, currentRelay());
  const b = await openNode(await browser.newContext(), currentRelay());
  await waitForPeer(b.page, a.peerId);
  await watchPresence(b.page);
  await watchPresence(a2.page);

  await a.page.evaluate(() => window.node.presence.set({ name: 'alice', cursor: [3, 4] }));
  await untilPresence(b.page, (p) => p[a.peerId]?.name === 'alice');
  expect((await latest(b.page))[a.peerId]).toEqual({ name: 'alice', cursor: [3, 4] });
  // The other tab of the same node shows the same state under the same peer id.
  await untilPresence(a2.page, (p) => p[a.peerId]?.name === 'alice');
  // Events reached b's handler, not only `get()`.
  expect(await b.page.evaluate((id) => window.presence.some((p) => p[id]?.name === 'alice'), a.peerId)).toBe(true);

  await b.page.evaluate(() => window.node.presence.set({ name: 'bob' }));
  await untilPresence(a.page, (p) => p[b.peerId]?.name === 'bob' && p[a.peerId]?.name === 'alice');

  // Bad states get codes and change nothing.
  const codes = await a.page.evaluate(async () => {
    const code = (p) => p.then(() => 'resolved', (e) => e.code);
    return {
      fn: await code(window.node.presence.set({ f() {} })),
      nan: await code(window.node.presence.set(NaN)),
      big: await code(window.node.presence.set({ s: 'x'.repeat(5000) })),
      undef: await code(window.node.presence.set(undefined)),
    };
  });
  expect(codes).toEqual({ fn: 'PRESENCE_INVALID_VALUE', nan: 'PRESENCE_INVALID_VALUE', big: 'PAYLOAD_TOO_LARGE', undef: 'PRESENCE_INVALID_VALUE' });
  expect((await latest(b.page))[a.peerId]).toEqual({ name: 'alice', cursor: [3, 4] });

  // Cleared: gone from b at once.
  await a2.page.evaluate(() => window.node.presence.clear());
  await untilPresence(b.page, (p) => !(a.peerId in p));
  await a.page.evaluate(() => window.node.presence.set('back'));
  await untilPresence(b.page, (p) => p[a.peerId] === 'back');

  // A's browser goes away without a word: b forgets its presence.
  await contextA.close();
  await untilPresence(b.page, (p) => !(a.peerId in p) && p[b.peerId]?.name === 'bob');
  expect(b.errors).toEqual([]);
});
