// The demo page a person opens after `npm start`: it connects, shows this node's executors,
// and renders a Mandelbrot set split across the network's compute workers, with the built-in
// kernel or the example wasm kernel.
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
