// Distributed compute between browser nodes in real Chromium, through a real relay: each tab
// lends its node a pool of worker-cpu dedicated workers running the built-in wasm kernels.
import { expect, test } from '@playwright/test';

import { openNode, useRelay } from './relay.mjs';

test.describe.configure({ mode: 'serial' });

const currentRelay = useRelay(test);

/** Opens `n` browser nodes (one context each) whose workers are ready and who see each other compute. */
async function computeNodes(browser, n) {
  const contexts = [];
  const nodes = [];
  for (let i = 0; i < n; i++) {
    const ctx = await browser.newContext();
    contexts.push(ctx);
    const node = await openNode(ctx, currentRelay());
    await node.page.evaluate(() => window.node.executors);
    nodes.push(node);
  }
  for (const node of nodes) {
    const others = nodes.filter((o) => o !== node).map((o) => o.peerId);
    await expect
      .poll(
        () =>
          node.page.evaluate(
            async (ids) => {
              const peers = await window.node.peers();
              return ids.every((id) => peers.some((p) => p.peerId === id && p.connected && p.compute?.cpu > 0));
            },
            others,
          ),
        { timeout: 30_000, intervals: [100] },
      )
      .toBe(true);
  }
  return { nodes, close: () => Promise.all(contexts.map((c) => c.close())), contexts };
}

/** Runs a mandelbrot task on `page`'s node; returns the result as a plain array and the report. */
function runMandelbrot(page, { id, width, height, maxIter, view = {}, chunks, local = false, workStealing = true }) {
  return page.evaluate(
    async (t) => {
      const task = window.node.submitTask({
        id: t.id,
        type: 'cpu',
        kernel: 'mandelbrot',
        data: { params: { maxIter: t.maxIter, ...t.view } },
        output: { type: 'u32', length: t.width * t.height },
        grid: [t.width, t.height],
        split: { axis: 1, chunks: t.chunks },
        local: t.local,
        workStealing: t.workStealing,
      });
      const progress = [];
      task.on('progress', (p) => progress.push(p));
      const done = await task.done;
      return {
        values: Array.from(done.result),
        isU32: done.result instanceof Uint32Array,
        workers: done.workers,
        chunks: done.chunks,
        progress,
      };
    },
    { id, width, height, maxIter, view, chunks, local, workStealing },
  );
}

test('a task split across three browser nodes returns exactly the local result', async ({ browser }) => {
  const { nodes, close } = await computeNodes(browser, 3);
  const [a, b, c] = nodes;
  const shape = { width: 160, height: 120, maxIter: 1500, chunks: 12 };
  const local = await runMandelbrot(a.page, { ...shape, id: 'local', local: true });
  expect(local.workers).toEqual([a.peerId]);
  // Without work stealing every peer's first chunk is its own to finish: with it, a's local
  // workers, done first, may win every duplicate and leave b or c with no accepted result.
  const spread = await runMandelbrot(a.page, { ...shape, id: 'spread', workStealing: false });
  expect(spread.isU32).toBe(true);
  expect(spread.values.length).toBe(160 * 120);
  expect(spread.values).toEqual(local.values);
  expect(spread.chunks).toBe(12);
  expect(spread.workers).toEqual(expect.arrayContaining([b.peerId, c.peerId]));
  expect(spread.progress.at(-1)).toMatchObject({ done: 12, total: 12 });

  // Map/reduce over an array, across the same peers.
  const sum = await a.page.evaluate(async () => {
    const xs = Uint32Array.from({ length: 10_000 }, (_, i) => i);
    const task = window.node.submitTask({
      type: 'cpu', kernel: 'sum', reduce: 'sum',
      inputs: [{ binding: 2, data: xs }],
      output: { type: 'u32', length: 1 }, grid: [xs.length], split: { chunks: 9 },
    });
    return Array.from(await task.result);
  });
  expect(sum).toEqual([49_995_000]);

  // Bad tasks get their codes; the node keeps working.
  const errors = await a.page.evaluate(async () => {
    const codeOf = (spec) => window.node.submitTask(spec).result.then(() => 'resolved', (e) => e.code);
    return Promise.all([
      codeOf({ type: 'cpu', kernel: 'rm -rf', output: { type: 'u32', length: 1 }, grid: [1] }),
      codeOf({ type: 'cpu', kernel: 'mandelbrot', output: { type: 'u32', length: 3 }, grid: [2] }),
    ]);
  });
  expect(errors).toEqual(['TASK_UNKNOWN_KERNEL', 'TASK_INVALID']);
  for (const n of nodes) expect(n.errors).toEqual([]);
  await close();
});

// The digest core/src/compute/kernels.rs asserts for the native kernel: same bytes in wasm.
const GOLDEN_MANDELBROT_SHA256 = '77283d09fa10cf983b110e5629d6162dbf96418505a52801c6d1922381fd17ac';

test('the wasm kernels give the native kernels\' bytes', async ({ browser }) => {
  const { nodes, close } = await computeNodes(browser, 1);
  const digest = await nodes[0].page.evaluate(async () => {
    const task = window.node.submitTask({
      id: 'golden', type: 'cpu', kernel: 'mandelbrot',
      data: { params: { maxIter: 300, x0: { f32: -0.75 }, y0: { f32: 0.05 }, x1: { f32: -0.7 }, y1: { f32: 0.1 } } },
      output: { type: 'u32', length: 64 * 48 }, grid: [64, 48], split: { chunks: 3 },
    });
    const result = await task.result;
    const hash = await crypto.subtle.digest('SHA-256', result);
    return Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, '0')).join('');
  });
  expect(digest).toBe(GOLDEN_MANDELBROT_SHA256);
  await close();
});

test('a node closed mid-task does not stop the task', async ({ browser }) => {
  const { nodes, contexts, close } = await computeNodes(browser, 3);
  const [a] = nodes;
  // A view inside the main cardioid: every cell runs all `maxIter` iterations, so each of the
  // 6 chunks takes a known while (~0.2 s here) and b still holds its first ones when it goes.
  const inside = { x0: { f32: -0.3 }, y0: { f32: -0.2 }, x1: { f32: 0.1 }, y1: { f32: 0.2 } };
  const shape = { width: 64, height: 48, maxIter: 100_000, view: inside, chunks: 6 };
  const expected = await runMandelbrot(a.page, { ...shape, id: 'expected', local: true });
  // No work stealing: b's chunks finish only if the scheduler sends them elsewhere when b leaves.
  const running = runMandelbrot(a.page, { ...shape, id: 'survives', workStealing: false });
  // Close b while it holds chunks. b watches its own status (a round trip every few ms): a
  // poll from the test, at tens of ms a round, can miss chunks that short altogether.
  const sawRunning = await nodes[1].page.evaluate(async () => {
    const deadline = performance.now() + 20_000;
    while (performance.now() < deadline) {
      if ((await window.node.getStatus()).compute.runningChunks > 0) return true;
      await new Promise((r) => setTimeout(r, 2));
    }
    return false;
  });
  expect(sawRunning).toBe(true);
  await contexts[1].close();
  const result = await running;
  expect(result.values).toEqual(expected.values);
  expect(result.values.every((v) => v === shape.maxIter)).toBe(true);
  expect(result.progress.at(-1)).toMatchObject({ done: 6, total: 6 });
  await close();
});

test('cancel stops the work on every peer', async ({ browser }) => {
  const { nodes, close } = await computeNodes(browser, 2);
  const [a, b] = nodes;
  await a.page.evaluate(() => {
    window.longTask = window.node.submitTask({
      id: 'long', type: 'cpu', kernel: 'mandelbrot', data: { params: { maxIter: 100_000 } },
      // Chunks of seconds each: a pool that kept running them would show below.
      output: { type: 'u32', length: 512 * 512 }, grid: [512, 512], split: { chunks: 8 },
    });
    window.longOutcome = window.longTask.result.then(() => 'resolved', (e) => e.code);
  });
  await expect
    .poll(() => b.page.evaluate(async () => (await window.node.getStatus()).compute.runningChunks), {
      timeout: 20_000,
      intervals: [20],
    })
    .toBeGreaterThan(0);
  await a.page.evaluate(() => window.longTask.cancel());
  expect(await a.page.evaluate(() => window.longOutcome)).toBe('TASK_CANCELLED');
  await expect
    .poll(() => b.page.evaluate(async () => (await window.node.getStatus()).compute.runningChunks), {
      timeout: 20_000,
      intervals: [50],
    })
    .toBe(0);
  expect(await a.page.evaluate(async () => (await window.node.getStatus()).compute.tasks)).toBe(0);
  // b's workers are free at once: its pool replaced the ones still in a cancelled chunk.
  const ms = await b.page.evaluate(async () => {
    const t0 = performance.now();
    await window.node.submitTask({
      type: 'cpu', kernel: 'mandelbrot', output: { type: 'u32', length: 64 }, grid: [8, 8], local: true,
    }).result;
    return performance.now() - t0;
  });
  expect(ms, 'a small task on b right after the cancel').toBeLessThan(5000);
  await close();
});
