// Shared-document helpers for the state specs: pages keep open documents in `window.docs`.
import { expect } from '@playwright/test';

/** Opens document `name` in the page as `window.docs[name]`; its changes go to `window.seen[name]`. */
export async function openDoc(page, name) {
  await page.evaluate(async (n) => {
    window.docs ??= {};
    window.seen ??= {};
    window.seen[n] = [];
    const doc = window.node.state(n);
    await doc.ready;
    doc.observe(undefined, (change) => window.seen[n].push(change));
    window.docs[n] = doc;
  }, name);
}

/** The page's current tree of document `name`. */
export const tree = (page, name) => page.evaluate((n) => window.docs[n].get(), name);

/** Polls until `check(tree)` holds. */
export async function until(page, name, check, timeout = 20_000) {
  await expect.poll(async () => check(await tree(page, name)), { timeout, intervals: [50] }).toBe(true);
}
