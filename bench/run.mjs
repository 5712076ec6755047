// `npm run bench`: PeerCompute's foundation benchmarks. Prints a table and writes JSON to
// bench/results/latest.json. Browser numbers come from Debian Chromium (headless) driven by
// Playwright; the native baseline is two native nodes through the same relay process, run in
// the same invocation, so the ratio is measured on one machine at one time.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';

import { chromium } from '@playwright/test';

import { chromiumArgs } from '../playwright.config.mjs';
import { relayBinary, startRelay } from '../playwright/relay.mjs';
import { benchBrowserCompute } from './compute.mjs';
import { benchBrowserState } from './state.mjs';

const SKIP_BUILD = process.env.BENCH_SKIP_BUILD === '1';
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
if (!SKIP_BUILD) {
  run('bash', ['scripts/setup.sh']);
  run('bash', ['scripts/build-web.sh']);
  run('cargo', ['build', '--release', '-p', 'relay-server', '-p', 'peercompute-bench']);
}
process.env.RELAY_BIN = 'target/release/relay-server';

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.round((s.length - 1) * p))];
};

const relay = await startRelay();
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: chromiumArgs });
const results = {};
try {
  // 1. Page load → relay connected (cold: a fresh profile starts a fresh SharedWorker).
  const cold = [];
  const warm = [];
  for (let i = 0; i < 10; i++) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${relay.url}/sandbox.html?connect`);
    cold.push(await page.waitForFunction(() => window.connectedAt).then((h) => h.jsonValue()));
    const second = await ctx.newPage(); // the worker is already up: a second tab
    await second.goto(`${relay.url}/sandbox.html?connect`);
    warm.push(await second.waitForFunction(() => window.connectedAt).then((h) => h.jsonValue()));
    await ctx.close();
  }
  results.connect_cold_ms = { p50: pct(cold, 0.5), samples: cold.length };
  results.connect_warm_ms = { p50: pct(warm, 0.5), samples: warm.length };

  // 1b. A returning visit: one profile (its HTTP cache, V8's code cache and the node's key in
  // IndexedDB stay) whose every tab has closed, so the SharedWorker has ended and starts again.
  // The relay seeing the node's connection close is the sign that the worker has ended.
  const returning = [];
  {
    const ctx = await browser.newContext();
    for (let i = 0; i < 11; i++) {
      const page = await ctx.newPage();
      await page.goto(`${relay.url}/sandbox.html?connect`);
      const at = await page.waitForFunction(() => window.connectedAt).then((h) => h.jsonValue());
      const peerId = await page.evaluate(() => window.node.peerId);
      if (i > 0) returning.push(at); // the first visit fills the caches
      await page.close();
      const deadline = Date.now() + 15_000;
      while ((await relay.status()).peers[peerId]) {
        if (Date.now() > deadline) throw new Error('the worker did not end with its last tab');
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    await ctx.close();
  }
  results.connect_returning_ms = { p50: pct(returning, 0.5), samples: returning.length };

  // 2. Tab ↔ worker round trip.
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  for (const p of [a, b]) {
    await p.goto(`${relay.url}/sandbox.html?connect`);
    await p.waitForFunction(() => window.connectedAt);
  }
  const rtt = await a.evaluate(async () => {
    for (let i = 0; i < 200; i++) await window.node.ping(); // warm-up
    const xs = [];
    for (let i = 0; i < 2000; i++) {
      const t = performance.now();
      await window.node.ping();
      xs.push(performance.now() - t);
    }
    return xs;
  });
  results.tab_worker_rtt_ms = { p50: pct(rtt, 0.5), p99: pct(rtt, 0.99), samples: rtt.length };

  // 3. Browser → browser pubsub latency (echo round trip / 2) at a steady 100 msg/s.
  const bId = await b.evaluate(() => window.node.peerId);
  await b.evaluate(() => {
    let received = 0;
    window.node.subscribe('bench-ping', (m) => window.node.publish('bench-pong', m.data));
    window.node.subscribe('bench-bulk', (m) => {
      received += m.data.byteLength;
      if (received >= window.bulkTotal) {
        received = 0; // the next transfer counts afresh
        window.node.publish('bench-done', 1);
      }
    });
  });
  const latency = await a.evaluate(async (peer) => {
    const node = window.node;
    while (!(await node.peers()).some((p) => p.peerId === peer && p.connected)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const sent = new Map();
    const oneWay = [];
    let warmed = false;
    node.subscribe('bench-pong', (m) => {
      if (m.data === -1) warmed = true;
      const t = sent.get(m.data);
      if (t !== undefined) oneWay.push((performance.now() - t) / 2);
    });
    while (!warmed) {
      await node.publish('bench-ping', -1);
      await new Promise((r) => setTimeout(r, 200));
    }
    const N = 500;
    for (let i = 0; i < N; i++) {
      sent.set(i, performance.now());
      node.publish('bench-ping', i);
      await new Promise((r) => setTimeout(r, 10));
    }
    const t0 = performance.now();
    while (oneWay.length < N && performance.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 20));
    return oneWay;
  }, bId);
  results.pubsub_one_way_ms = { p50: pct(latency, 0.5), p99: pct(latency, 0.99), samples: latency.length, rate_per_s: 100 };

  // 4. Relayed throughput browser → browser: one 16 MiB transfer to warm up, then the median of
  //    three. The first transfer runs while V8 is still tiering the bulk path up (SHA-512 of
  //    the signatures, ChaCha20-Poly1305, the copies) and compiling it on the same two cores:
  //    it is reported too, as `throughput_first_mb_s`.
  const MESSAGES = 64;
  const BYTES = 256 * 1024;
  await b.evaluate((total) => (window.bulkTotal = total), MESSAGES * BYTES);
  const transfer = () => a.evaluate(async ([n, size]) => {
    const node = window.node;
    let done;
    const finished = new Promise((r) => (done = r));
    const stop = node.subscribe('bench-done', () => done(performance.now()));
    const blob = new Uint8Array(size).fill(7);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      for (;;) {
        try {
          await node.publish('bench-bulk', blob);
          break;
        } catch (e) {
          if (e.code !== 'BUSY') throw e;
          await new Promise((r) => setTimeout(r, 1));
        }
      }
    }
    // Pubsub is best effort: a lost message would leave the receiver short of the total.
    let timer;
    const lost = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('the receiver did not acknowledge the transfer in 60 s')), 60_000);
    });
    const t1 = await Promise.race([finished, lost]);
    clearTimeout(timer);
    stop();
    return (n * size) / 1e6 / ((t1 - t0) / 1000);
  }, [MESSAGES, BYTES]);
  const transfers = [];
  for (let i = 0; i < 4; i++) transfers.push(await transfer());
  results.throughput_first_mb_s = transfers[0];
  results.throughput_runs_mb_s = transfers.slice(1);
  results.throughput_mb_s = pct(transfers.slice(1), 0.5);
  results.bulk_bytes = MESSAGES * BYTES;

  // 5. Native baseline through the same relay.
  const native = spawnSync('target/release/bench-native', ['--relay', relay.relays[0]], { encoding: 'utf8' });
  if (native.status !== 0) throw new Error(`bench-native failed: ${native.stderr}`);
  results.native = JSON.parse(native.stdout.trim().split('\n').at(-1));

  // 6. Shared state in the browser, and the `yjs` baseline in Node on the same workload.
  results.state = await benchBrowserState(browser, relay);
  const yjs = spawnSync(process.execPath, ['--expose-gc', 'bench/state-yjs.mjs'], { encoding: 'utf8' });
  if (yjs.status !== 0) throw new Error(`state-yjs failed: ${yjs.stderr}`);
  results.yjs = JSON.parse(yjs.stdout.trim().split('\n').at(-1));

  // 7. Compute in the browser (worker-gpu, worker-cpu); bench-native measured its half in 5.
  results.compute = await benchBrowserCompute(browser, relay, {
    shader: readFileSync('core/src/compute/shaders/matmul.wgsl', 'utf8'),
  });
} finally {
  await browser.close();
  await relay.stop();
}

const n = results.native;
const fmt = (x, d = 2) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '–');
const rows = [
  ['page load → relay connected, cold p50 (ms)', results.connect_cold_ms.p50, null, '≤ 300'],
  ['page load → relay connected, returning visit p50 (ms)', results.connect_returning_ms.p50, null, ''],
  ['page load → relay connected, 2nd tab p50 (ms)', results.connect_warm_ms.p50, null, ''],
  ['tab ↔ worker round trip p50 (ms)', results.tab_worker_rtt_ms.p50, null, '≤ 0.2'],
  ['tab ↔ worker round trip p99 (ms)', results.tab_worker_rtt_ms.p99, null, ''],
  ['pubsub one-way p50 (ms)', results.pubsub_one_way_ms.p50, n.pubsub_one_way_ms.p50, '≤ 2'],
  ['pubsub one-way p99 (ms)', results.pubsub_one_way_ms.p99, n.pubsub_one_way_ms.p99, '≤ 10'],
  ['relayed throughput, median of 3 (MB/s)⁰', results.throughput_mb_s, n.throughput_mb_s, '≥ 50'],
  ['relayed throughput, first transfer (MB/s)⁰', results.throughput_first_mb_s, n.throughput_first_mb_s, ''],
];
const table = [
  '| metric | browser | native | browser/native | target |',
  '|---|---:|---:|---:|---|',
  ...rows.map(([name, br, na, target]) =>
    `| ${name} | ${fmt(br)} | ${fmt(na)} | ${na == null ? '' : fmt(br / na)} | ${target} |`),
].join('\n');
console.log(`\n${table}\n`);
console.log('⁰ 16 MiB of 256 KiB pubsub messages; the first transfer also warms V8 up on the bulk path.\n');
const st = results.state;
const ns = n.state;
const y = results.yjs;
const stateRows = [
  ['map updates applied, local ops (ops/s)¹', st.apply_ops_per_s, ns.apply_ops_per_s, y.apply_ops_per_s, '≥ 3× Yjs', 0],
  ['map updates applied, from a peer (ops/s)⁴', null, ns.remote_apply_ops_per_s, y.remote_apply_ops_per_s, '≥ 3× Yjs', 0],
  ['write → remote observer p50 (ms)', st.write_to_remote_observer_ms.p50, null, null, '', 2],
  ['write → remote observer p99 (ms)', st.write_to_remote_observer_ms.p99, null, null, '', 2],
  ['newcomer sync, 100k ops (ms)²', st.newcomer_sync_ms, ns.newcomer_sync_ms, y.newcomer_sync_ms, '≤ 1000', 0],
  ['memory of the 100k-op document (MiB)³', null, ns.heap_growth_mib, y.heap_growth_mib, '', 1],
  ['encoded document (KiB)', null, ns.encoded_bytes / 1024, y.encoded_bytes / 1024, '', 0],
];
const stateTable = [
  '| shared state | browser | native core | yjs (Node) | native/yjs | target |',
  '|---|---:|---:|---:|---:|---|',
  ...stateRows.map(([name, br, na, yj, target, d]) =>
    `| ${name} | ${fmt(br, d)} | ${fmt(na, d)} | ${fmt(yj, d)} | ${na == null || yj == null ? '' : fmt(na / yj)} | ${target} |`),
].join('\n');
console.log(`${stateTable}\n`);
console.log('¹ browser: tab → worker → IndexedDB, each update acknowledged once durable, median of 3 runs');
console.log('  on 3 documents (the first also warms V8 up on the worker\'s wasm); native core and');
console.log('  yjs: in memory, each update encoded, median of 3 runs (Yjs\'s first is its JIT warming up).');
console.log('² browser and native: through the relay, from opening the document (once connected to the');
console.log('  writer) until the view holds every key, median of 3 newcomers; yjs: encode + apply + toJSON');
console.log('  in one process, median of 3.');
console.log('³ native: the heap bytes building the document left allocated (counted by the bench\'s allocator, size-class rounding not included); yjs: V8 heap growth after GC; both over the first run.');
console.log('⁴ the 100 updates of the local run applied to a replica that reports each changed key,');
console.log('  median of 3 runs.\n');
const bc = results.compute;
const nc = n.compute;
const gpuNote = (g) => (g ? `${g.adapter}${g.software_adapter ? ', software' : ''}` : 'no adapter');
const computeRows = [
  [`WGSL matmul GFLOPS, browser n=${bc.gpu_matmul?.n ?? '–'} (${gpuNote(bc.gpu_matmul)})`, bc.gpu_matmul?.gflops, null, ''],
  [`WGSL matmul GFLOPS, native wgpu n=${nc.gpu_matmul.n} (${gpuNote(nc.gpu_matmul)})`, null, nc.gpu_matmul.gflops, ''],
  [`WGSL matmul GFLOPS, the dispatch alone, native wgpu n=${nc.gpu_matmul.n}`, null, nc.gpu_matmul.kernel_gflops, '≥ 50% cuBLAS⁵'],
  [`CPU matmul kernel GFLOPS, n=${nc.cpu_kernels.matmul_n}, one worker/thread`, bc.cpu_kernels.matmul_gflops, nc.cpu_kernels.matmul_gflops, ''],
  [`CPU mandelbrot ${nc.cpu_kernels.mandelbrot_size}², maxIter ${nc.cpu_kernels.mandelbrot_max_iter} (ms)`, bc.cpu_kernels.mandelbrot_ms, nc.cpu_kernels.mandelbrot_ms, ''],
  [`the same mandelbrot as a wasm kernel (ms)⁸`, bc.cpu_kernels.wasm_kernel_mandelbrot_ms, nc.cpu_kernels.wasm_kernel_mandelbrot_ms, 'browser: V8; native: wasmi'],
  [`dispatch overhead per chunk to a peer (ms)⁶`, null, nc.chunk_overhead.per_chunk_ms, '≤ 5'],
  ...nc.speedup.runs.map((r) => [`one task on ${r.peers} native peer(s): ms / speedup⁷`, null, r.ms, r.peers === 1 ? '' : `×${fmt(r.speedup)}`]),
];
/** The latest real-GPU run recorded in bench/device/ (not this run), for footnote 5. */
function realGpuNote() {
  const files = readdirSync('bench/device').filter((f) => /-matmul-\d{4}-\d{2}-\d{2}\.json$/.test(f)).sort();
  if (files.length === 0) return 'No run is recorded in bench/device/.';
  const file = files.at(-1);
  const run = JSON.parse(readFileSync(`bench/device/${file}`, 'utf8'));
  const rows = run.rows.filter((r) => r.shader === 'matmul.wgsl');
  const cells = rows.map((r) => `n=${r.n} ${(r.wgsl_gflops / 1000).toFixed(1)} TFLOPS = ${r.ratio.toFixed(2)}`);
  return `Last recorded (bench/device/${file}, ${run.adapter}):\n  ${cells.join(', ')} of cuBLAS FP32.`;
}
const computeTable = [
  '| compute | browser | native | browser/native | note |',
  '|---|---:|---:|---:|---|',
  ...computeRows.map(([name, br, na, note]) =>
    `| ${name} | ${fmt(br)} | ${fmt(na)} | ${br == null || na == null ? '' : fmt(br / na)} | ${note} |`),
].join('\n');
console.log(`${computeTable}\n`);
console.log(`⁵ cuBLAS FP32 needs an NVIDIA GPU: bench/gpu-device.sh there. ${realGpuNote()}`);
console.log(`⁶ ${nc.chunk_overhead.chunks} tiny chunks sent one at a time to one peer through the relay.`);
console.log(`⁷ ${nc.speedup.task}; one CPU thread per peer, on ${nc.speedup.cores} cores.`);
console.log('⁸ kernels/mandelbrot built to wasm, same bits as the built-in kernel; native peers interpret it\n  (wasmi, fuel metered), the browser compiles it.\n');
const report = {
  date: new Date().toISOString(),
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, memGiB: Math.round(os.totalmem() / 2 ** 30) },
  relayBinary: relayBinary(),
  results,
};
mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/latest.json', `${JSON.stringify(report, null, 2)}\n`);
console.log('wrote bench/results/latest.json');
