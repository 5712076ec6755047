// The demo page a person opens after `npm start`: it connects, shows this node's executors,
// renders a Mandelbrot set split across the network's compute workers (with the built-in
// kernel or the example wasm kernel), and shares a board of notes, names and versions.
import { expect, test } from '@playwright/test';

import { useRelay } from './relay.mjs';

const currentRelay = useRelay(test);

test('the demo connects, lists its executors and renders a Mandelbrot set', async ({ browser }) => {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${currentRelay().url}/`);
  await expect(page.locator('#state')).toHaveText('online', { timeout: 20_000 });
  await expect(page.locator('#executors')).toContainText('GPU: ', { timeout: 20_000 });
  await expect(page.locator('#executors')).toContainText('CPU worker');
  await page.getByRole('button', { name: /Mandelbrot/ }).click();
  await expect(page.locator('#compute-result')).toContainText(' ms on ', { timeout: 30_000 });
  expect(await page.locator('#progress').evaluate((p) => p.value)).toBe(1);
  const lit = await page.locator('#canvas').evaluate((c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 0) n++;
    return n / (c.width * c.height);
  });
  expect(lit, 'outside the set is drawn, the set is black').toBeGreaterThan(0.3);
  expect(lit).toBeLessThan(0.95);
  // The example wasm kernel draws the same picture, pixel for pixel.
  const pixels = () => page.locator('#canvas').evaluate((c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data));
  const builtIn = await pixels();
  await page.locator('#canvas').evaluate((c) => c.getContext('2d').clearRect(0, 0, c.width, c.height));
  await page.locator('#kernel').selectOption('wasm');
  await page.getByRole('button', { name: /Mandelbrot/ }).click();
  await expect(page.locator('#compute-result')).toContainText(' ms on ', { timeout: 30_000 });
  expect(await pixels()).toEqual(builtIn);
  expect(errors).toEqual([]);
  await ctx.close();
});

test('the shared board: two nodes see each other\'s notes and names, and read a saved version', async ({ browser }) => {
  const url = `${currentRelay().url}/`;
  const contexts = [await browser.newContext(), await browser.newContext()];
  const [a, b] = await Promise.all(contexts.map((c) => c.newPage()));
  const errors = [];
  for (const p of [a, b]) p.on('pageerror', (e) => errors.push(e.message));
  await Promise.all([a.goto(url), b.goto(url)]);
  for (const p of [a, b]) {
    await expect(p.locator('#state')).toHaveText('online', { timeout: 20_000 });
    await expect(p.locator('#board-state')).toHaveText('0 notes', { timeout: 20_000 });
  }
  const addNote = async (page, text) => {
    await page.locator('#note').fill(text);
    await page.getByRole('button', { name: 'Add note' }).click();
  };

  // Names travel as presence.
  await b.locator('#name').fill('bea');
  await b.getByRole('button', { name: 'Set name' }).click();
  await expect(b.locator('#here')).toContainText('bea (you)');
  await expect(a.locator('#here')).toContainText('bea', { timeout: 15_000 });

  // A note from one node reaches the other.
  await addNote(a, 'first note');
  await expect(a.locator('#notes li')).toHaveCount(1);
  await expect(b.locator('#notes li')).toHaveText([/first note/], { timeout: 15_000 });

  // A saved version keeps what the board held then.
  await a.getByRole('button', { name: 'Save version' }).click();
  await expect(a.locator('#versions option')).toHaveCount(2);
  await addNote(b, 'second note');
  await expect(a.locator('#notes li')).toHaveText([/first note/, /second note/], { timeout: 15_000 });
  await a.locator('#versions').selectOption({ index: 1 });
  await expect(a.locator('#version-view')).toHaveText('Then: 1 note — first note');

  // A deletion is everyone's.
  await b.locator('#notes li', { hasText: 'first note' }).getByRole('button', { name: 'delete note' }).click();
  await expect(a.locator('#notes li')).toHaveText([/second note/], { timeout: 15_000 });
  await expect(a.locator('#board-state')).toHaveText('1 note');

  // The board outlives a reload (IndexedDB), and so does the name.
  await b.reload();
  await expect(b.locator('#notes li')).toHaveText([/second note/], { timeout: 20_000 });
  await expect(b.locator('#name')).toHaveValue('bea');
  expect(errors).toEqual([]);
  await Promise.all(contexts.map((c) => c.close()));
});
