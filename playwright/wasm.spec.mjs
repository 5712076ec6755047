// Wasm kernels (ABI v1) in real Chromium: the example kernel (kernels/mandelbrot, built by
// scripts/build-web.sh) runs in worker-cpu on the browser's engine and gives the built-in
// kernel's bits; bad modules get codes; a kernel stuck in a loop loses its worker, not the
// pool. Signed, it travels to browser peers and to a native peer (wasmi) and still gives the
// same bits; tampered, the peers refuse it; unsigned, it stays on its node.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { expect, test } from '@playwright/test';

import { openNode, relayBinary, startNativePeer, useRelay } from './relay.mjs';

test.describe.configure({ mode: 'serial' });

const KERNEL_PATH = 'dist/web/kernels/mandelbrot.wasm';
const keyDir = mkdtempSync(join(tmpdir(), 'pc-root-'));
const rootKey = join(keyDir, 'root.key');
let signature;
let rootPublicKey;

const currentRelay = useRelay(test, () => {
  rootPublicKey = execFileSync(relayBinary(), ['root-key', '--key', rootKey], { encoding: 'utf8' }).trim();
  signature = execFileSync(relayBinary(), ['sign', '--key', rootKey, KERNEL_PATH], { encoding: 'utf8' }).trim();
  return { args: ['--root-key', rootKey] };
});

/**
 * Renders a 150×90 Mandelbrot view on `page`'s node in `chunks` chunks, with the built-in
 * kernel or with the wasm kernel at /kernels/mandelbrot.wasm (`wasm`, its bytes `tamper`ed
 * if asked). Returns `{ values, workers, chunks }` or `{ code, message }`.
 */
function render(page, { wasm, chunks = 5, sig, local = false, tamper = false, workStealing = true }) {
  return page.evaluate(async (t) => {
    const common = {
      // The wasm kernel reads raw words: the view's corners must be f32 even when integral.
      params: { maxIter: 300, x0: { f32: -2 }, y0: { f32: -1.2 }, x1: { f32: 0.6 }, y1: { f32: 1.2 } },
      output: { type: 'u32', length: 150 * 90 },
      grid: [150, 90],
      split: { axis: 1, chunks: t.chunks },
      local: t.local,
      workStealing: t.workStealing,
    };
    let spec = { ...common, type: 'cpu', kernel: 'mandelbrot' };
    if (t.wasm) {
      const bytes = new Uint8Array(await (await fetch('/kernels/mandelbrot.wasm')).arrayBuffer());
      // The last byte (a custom section's): still a valid module, but not the one signed.
      if (t.tamper) bytes[bytes.length - 1] ^= 1;
      spec = { ...common, type: 'cpu', wasm: bytes, ...(t.sig ? { signature: t.sig } : {}) };
    }
    try {
      const done = await window.node.submitTask(spec).done;
      return { values: Array.from(done.result), workers: done.workers, chunks: done.chunks };
    } catch (e) {
      return { code: e.code, message: e.message };
    }
  }, { wasm, chunks, sig, local, tamper, workStealing });
}

const computeStatus = (page) => page.evaluate(async () => (await window.node.getStatus()).compute);

test('a wasm kernel runs in worker-cpu with the built-in kernel\'s bits; bad and stuck kernels', async ({ browser }) => {
  const ctx = await browser.newContext();
  // One CPU worker: the stuck kernel below would hold the whole pool if it were not replaced.
  const node = await openNode(ctx, currentRelay(), { gpu: false, cpuWorkers: 1 });
  await node.page.evaluate(() => window.node.executors);
  const builtIn = await render(node.page, { wasm: false, local: true });
  expect(builtIn.code, builtIn.message).toBeUndefined();
  expect(builtIn.values.length).toBe(150 * 90);
  expect(new Set(builtIn.values).size, 'a real picture, not a constant').toBeGreaterThan(20);
  const wasm = await render(node.page, { wasm: true, local: true });
  expect(wasm.code).toBeUndefined();
  expect(wasm.values).toEqual(builtIn.values);
  expect(wasm.chunks).toBe(5);

  const outcomes = await node.page.evaluate(async () => {
    // A hand-assembled ABI v1 module: memory 1..1 pages, `pc_alloc` hands out address 1024
    // every time (enough for these tests), `run`'s body is given.
    const kernel = (runBody) => {
      const str = (s) => [s.length, ...new TextEncoder().encode(s)];
      const section = (id, bytes) => [id, bytes.length, ...bytes];
      const body = (code) => [code.length + 1, 0, ...code];
      return new Uint8Array([
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
        ...section(1, [2, 0x60, 1, 0x7f, 1, 0x7f, 0x60, 2, 0x7f, 0x7f, 1, 0x7f]),
        ...section(3, [2, 0, 1]),
        ...section(5, [1, 0x01, 1, 1]),
        ...section(7, [3, ...str('memory'), 2, 0, ...str('pc_alloc'), 0, 0, ...str('run'), 0, 1]),
        ...section(10, [2, ...body([0x41, 0x80, 0x08, 0x0b]), ...body(runBody)]),
      ]);
    };
    const outcome = (wasm, extra = {}) =>
      window.node
        .submitTask({ type: 'cpu', wasm, output: { type: 'u32', length: 8 }, local: true, ...extra })
        .result.then(() => 'resolved', (e) => `${e.code}: ${e.message}`);
    const withImport = new Uint8Array([
      0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
      0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
      0x02, 0x09, 0x01, 0x03, 0x65, 0x6e, 0x76, 0x01, 0x66, 0x00, 0x00,
    ]);
    return {
      notWasm: await outcome(new Uint8Array([1, 2, 3])),
      imports: await outcome(withImport),
      traps: await outcome(kernel([0x00, 0x0b])), // unreachable
      fails: await outcome(kernel([0x41, 0x05, 0x0b])), // return 5
      ok: await outcome(kernel([0x41, 0x00, 0x0b])), // return 0: the zeroed output
      // loop { br 0 }: never returns; the chunk times out, the node aborts it and the pool
      // replaces the worker.
      spins: await outcome(kernel([0x03, 0x40, 0x0c, 0x00, 0x0b, 0x41, 0x00, 0x0b]), {
        timeoutMs: 2000,
        chunkTimeoutMs: 1000,
      }),
    };
  });
  expect(outcomes.notWasm).toMatch(/^TASK_INVALID: .*binary WebAssembly/);
  expect(outcomes.imports).toMatch(/^TASK_INVALID: .*imports a function env\.f/);
  expect(outcomes.traps).toMatch(/^TASK_FAILED: .*trapped/);
  expect(outcomes.fails).toMatch(/^TASK_FAILED: .*returned error 5/);
  expect(outcomes.ok).toBe('resolved');
  expect(outcomes.spins).toMatch(/^TASK_(TIMEOUT|FAILED)/);
  // The pool still serves: the stuck worker was replaced.
  const after = await render(node.page, { wasm: true, local: true });
  expect(after.values).toEqual(builtIn.values);
  expect(node.errors).toEqual([]);
  await ctx.close();
});

test('a signed wasm kernel runs on browser peers and a native peer; tampered refused; unsigned stays home', async ({ browser }) => {
  const relay = currentRelay();
  // A native peer (wasmi) that trusts the root key, with one CPU thread.
  const native = await startNativePeer(relay, ['--cpu-threads', '1', '--root-public-key', rootPublicKey]);
  const contexts = await Promise.all([0, 1].map(() => browser.newContext()));
  try {
    // `a` runs no CPU chunks itself (no pool) and trusts no key: what the peers answer decides.
    const a = await openNode(contexts[0], relay, { relay: relay.relays, compute: false });
    const b = await openNode(contexts[1], relay, { gpu: false });
    await b.page.evaluate(() => window.node.executors);
    await expect
      .poll(
        () =>
          a.page.evaluate(async (ids) => {
            const peers = await window.node.peers();
            return ids.every((id) => peers.some((p) => p.peerId === id && p.connected && p.compute?.cpu > 0));
          }, [b.peerId, native.peerId]),
        { timeout: 30_000, intervals: [100] },
      )
      .toBe(true);
    const reference = await render(b.page, { wasm: false, local: true });

    // Both peers take chunks from the first round; without work stealing the faster one cannot
    // win every duplicate of the other's.
    const signed = await render(a.page, { wasm: true, sig: signature, chunks: 12, workStealing: false });
    expect(signed.code).toBeUndefined();
    expect(signed.values).toEqual(reference.values);
    expect(signed.chunks).toBe(12);
    for (const w of signed.workers) expect([b.peerId, native.peerId]).toContain(w);
    expect(signed.workers, 'the browser peer and the native peer both ran chunks').toEqual(
      expect.arrayContaining([b.peerId, native.peerId]),
    );

    const tampered = await render(a.page, { wasm: true, sig: signature, tamper: true });
    expect(tampered.code).toBe('CODE_SIGNATURE_INVALID');
    expect((await computeStatus(b.page)).chunksRefused).toBeGreaterThan(0);

    // Nothing of the earlier tasks still running on b (a spare run of a stolen chunk).
    await expect.poll(async () => (await computeStatus(b.page)).runningChunks).toBe(0);
    const servedBefore = (await computeStatus(b.page)).chunksServed;
    const unsigned = await render(a.page, { wasm: true });
    expect(unsigned.code).toBe('TASK_UNSUPPORTED');
    expect((await computeStatus(b.page)).chunksServed, 'it never reached a peer').toBe(servedBefore);
    expect(a.errors).toEqual([]);
    expect(b.errors).toEqual([]);
  } finally {
    await Promise.all(contexts.map((c) => c.close()));
    await native.stop();
  }
});
