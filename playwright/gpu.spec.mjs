// GPU compute in real Chromium on its SwiftShader WebGPU adapter (headless Chromium has no
// other): each tab lends its node a worker-gpu (wgpu on WebGPU). Signed shaders travel to
// peers and give the local result; a tampered one is refused by the peers it reaches; an
// unsigned one never leaves its node. A missing adapter fails these tests, it does not skip.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { expect, test } from '@playwright/test';

import { openNode, relayBinary, useRelay } from './relay.mjs';

test.describe.configure({ mode: 'serial' });

const MATMUL_PATH = 'core/src/compute/shaders/matmul.wgsl';
const MATMUL = readFileSync(MATMUL_PATH, 'utf8');
const keyDir = mkdtempSync(join(tmpdir(), 'pc-root-'));
const rootKey = join(keyDir, 'root.key');
let signature;

// The network's root key and the matmul shader's signature, made with the relay's own CLI.
const currentRelay = useRelay(test, () => {
  execFileSync(relayBinary(), ['root-key', '--key', rootKey]);
  signature = execFileSync(relayBinary(), ['sign', '--key', rootKey, MATMUL_PATH], { encoding: 'utf8' }).trim();
  return { args: ['--root-key', rootKey] };
});

/**
 * Runs C = A·B on `page`'s node, as the matmul shader (`gpu`, signed with `sig` if given) or
 * the built-in CPU kernel. Integer-valued matrices: exact in f32, so GPU and CPU must agree
 * bit for bit. Returns `{ values, workers, chunks }` or `{ code, message }`.
 */
function runMatmul(page, { m, k, n, chunks, gpu, sig, shader = MATMUL, local = false }) {
  return page.evaluate(async (t) => {
    const a = Float32Array.from({ length: t.m * t.k }, (_, i) => (i % 7) - 3);
    const b = Float32Array.from({ length: t.k * t.n }, (_, i) => (i % 5) - 2);
    const common = {
      inputs: [{ binding: 2, data: a }, { binding: 3, data: b }],
      output: { type: 'f32', length: t.m * t.n },
      grid: [t.n, t.m],
      split: { axis: 1, chunks: t.chunks },
      local: t.local,
    };
    const task = window.node.submitTask(
      t.gpu
        ? { ...common, type: 'webgpu', shader: t.shader, tile: [128, 128], ...(t.sig ? { signature: t.sig } : {}) }
        : { ...common, type: 'cpu', kernel: 'matmul' },
    );
    try {
      const done = await task.done;
      return { values: Array.from(done.result), workers: done.workers, chunks: done.chunks };
    } catch (e) {
      return { code: e.code, message: e.message };
    }
  }, { m, k, n, chunks, gpu, sig, shader, local });
}

const computeStatus = (page) => page.evaluate(async () => (await window.node.getStatus()).compute);

test('worker-gpu runs WGSL on the SwiftShader adapter: seed shape, matmul = CPU kernel, bad shaders', async ({ browser }) => {
  const ctx = await browser.newContext();
  const node = await openNode(ctx, currentRelay());
  const adapter = await node.page.evaluate(() => window.node.gpu);
  // The CPU pool registers in the background too; the CPU matmul below needs it.
  await node.page.evaluate(() => window.node.executors);
  expect(adapter, 'headless Chromium with --enable-unsafe-webgpu has an adapter').not.toBeNull();
  expect(adapter.fallback).toBe(true);
  expect(adapter.name).not.toBe('');
  await expect.poll(async () => (await computeStatus(node.page)).gpuAdapter?.name).toBe(adapter.name);

  // The seed's shape: `await node.submitTask({ id, type: 'webgpu', shader, data })`, the
  // page's own unsigned code on its own node.
  const doubled = await node.page.evaluate(async () => {
    const result = await window.node.submitTask({
      id: 'task-1',
      type: 'webgpu',
      shader: `
        struct Chunk { offset: vec4<u32>, size: vec4<u32>, grid: vec4<u32> }
        @group(0) @binding(0) var<uniform> chunk: Chunk;
        @group(0) @binding(1) var<storage, read_write> out: array<f32>;
        @group(0) @binding(2) var<storage, read> x: array<f32>;
        @compute @workgroup_size(64)
        fn main(@builtin(global_invocation_id) id: vec3<u32>) {
          if (id.x < chunk.size.x) { out[id.x] = x[chunk.offset.x + id.x] * 2.0; }
        }`,
      data: { inputs: [Float32Array.from({ length: 1000 }, (_, i) => i / 4)] },
    });
    return { isF32: result instanceof Float32Array, values: Array.from(result) };
  });
  expect(doubled.isF32).toBe(true);
  expect(doubled.values).toEqual(Array.from({ length: 1000 }, (_, i) => i / 2));

  const shape = { m: 40, k: 24, n: 72, chunks: 3 };
  const cpu = await runMatmul(node.page, { ...shape, gpu: false });
  const gpu = await runMatmul(node.page, { ...shape, gpu: true, local: true });
  expect(cpu.code, cpu.message).toBeUndefined();
  expect(gpu.code, gpu.message).toBeUndefined();
  expect(cpu.values.length).toBe(40 * 72);
  expect(gpu.values).toEqual(cpu.values);

  const errors = await node.page.evaluate(async () => {
    const codeOf = (shader) =>
      window.node.submitTask({ type: 'webgpu', shader, workgroupSize: [1], output: { type: 'u32', length: 4 } })
        .result.then(() => 'resolved', (e) => e.code);
    return Promise.all([
      codeOf('this is not WGSL'),
      codeOf('@group(0) @binding(1) var<storage, read> o: array<u32>; @compute @workgroup_size(1) fn main() { _ = o[0]; }'),
    ]);
  });
  expect(errors).toEqual(['TASK_INVALID', 'TASK_INVALID']);
  // And the GPU worker still runs the next task.
  const again = await runMatmul(node.page, { ...shape, gpu: true, local: true });
  expect(again.values).toEqual(cpu.values);
  expect(node.errors).toEqual([]);
  await ctx.close();
});

test('a signed shader runs on peers\' GPUs; a tampered one is refused; an unsigned one stays home', async ({ browser }) => {
  const relay = currentRelay();
  const contexts = await Promise.all([0, 1, 2].map(() => browser.newContext()));
  // `a` lends no GPU, and connects with an explicit relay and no root key, so it checks
  // nothing itself: what the peers answer decides. b and c trust the root key from
  // /peercompute.json and run shaders on SwiftShader.
  const a = await openNode(contexts[0], relay, { relay: relay.relays, gpu: false });
  const [b, c] = await Promise.all([openNode(contexts[1], relay), openNode(contexts[2], relay)]);
  for (const peer of [b, c]) {
    expect(await peer.page.evaluate(() => window.node.gpu)).not.toBeNull();
    expect((await computeStatus(peer.page)).rootKey).toMatch(/^[0-9a-f]{64}$/);
  }
  expect((await computeStatus(a.page)).rootKey).toBeNull();
  // a's CPU pool (for the reference run) registers in the background.
  await a.page.evaluate(() => window.node.executors);
  await expect
    .poll(
      () =>
        a.page.evaluate(async (ids) => {
          const peers = await window.node.peers();
          return ids.every((id) => peers.some((p) => p.peerId === id && p.connected && p.compute?.gpu));
        }, [b.peerId, c.peerId]),
      { timeout: 30_000, intervals: [100] },
    )
    .toBe(true);

  const shape = { m: 48, k: 20, n: 64, chunks: 4 };
  const reference = await runMatmul(a.page, { ...shape, gpu: false, local: true });
  expect(reference.workers).toEqual([a.peerId]);
  const signed = await runMatmul(a.page, { ...shape, gpu: true, sig: signature });
  expect(signed.code).toBeUndefined();
  expect(signed.values).toEqual(reference.values);
  expect(signed.chunks).toBe(4);
  for (const w of signed.workers) expect([b.peerId, c.peerId]).toContain(w);

  // What the peers ran and refused so far (work stealing may have run a chunk twice).
  const peerCounts = async () => {
    const [sb, sc] = await Promise.all([computeStatus(b.page), computeStatus(c.page)]);
    return { served: sb.chunksServed + sc.chunksServed, refused: sb.chunksRefused + sc.chunksRefused };
  };
  // The counts once they hold still: a spare run of a stolen chunk may finish after its task
  // did, and refusals of chunks in flight when a task failed may land a moment later.
  const settledCounts = async () => {
    let last = await peerCounts();
    for (;;) {
      await new Promise((r) => setTimeout(r, 300));
      const now = await peerCounts();
      if (now.served === last.served && now.refused === last.refused) return now;
      last = now;
    }
  };
  const afterSigned = await settledCounts();
  expect(afterSigned.served).toBeGreaterThanOrEqual(4);

  const tamperedShader = MATMUL.replace('fma(vec4(a0.x), b0, c00)', 'fma(vec4(a0.x), b0, -c00)');
  expect(tamperedShader).not.toBe(MATMUL);
  const tampered = await runMatmul(a.page, { ...shape, gpu: true, sig: signature, shader: tamperedShader });
  expect(tampered.code).toBe('CODE_SIGNATURE_INVALID');
  const afterTampered = await settledCounts();
  expect(afterTampered.served, 'no tampered chunk ran').toBe(afterSigned.served);
  expect(afterTampered.refused, 'the peers refused it').toBeGreaterThan(afterSigned.refused);

  const unsigned = await runMatmul(a.page, { ...shape, gpu: true });
  expect(unsigned.code).toBe('TASK_UNSUPPORTED');
  expect(await peerCounts(), 'the unsigned shader never reached a peer').toEqual(afterTampered);
  for (const n of [a, b, c]) expect(n.errors).toEqual([]);
  await Promise.all(contexts.map((x) => x.close()));
});
