// The browser half of the compute benchmarks: the WGSL matmul in worker-gpu (on whatever
// adapter Chromium gives: headless Chromium has only SwiftShader, a software adapter) and the
// built-in CPU kernels in worker-cpu (wasm), each as a one-chunk local task timed from the
// page (so the tab → node → worker path is included). bench-native runs the same sizes.

export async function benchBrowserCompute(browser, relay, { matmulGpuN = 256, matmulCpuN = 256, mandelSize = 256, mandelIter = 500, shader }) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(`${relay.url}/sandbox.html?connect`);
  await page.waitForFunction(() => window.connectedAt);
  try {
    return await page.evaluate(
      async ({ matmulGpuN, matmulCpuN, mandelSize, mandelIter, shader }) => {
        /** Integer-valued n×n matrices, as in bench/src/compute.rs. */
        function matmulSpec(n, gpu, shader) {
          const a = Float32Array.from({ length: n * n }, (_, i) => (i % 7) - 3);
          const b = Float32Array.from({ length: n * n }, (_, i) => (i % 5) - 2);
          const common = {
            inputs: [{ binding: 2, data: a }, { binding: 3, data: b }],
            output: { type: 'f32', length: n * n },
            grid: [n, n],
            split: { chunks: 1 },
            local: true,
          };
          return gpu ? { ...common, type: 'webgpu', shader, tile: [128, 128] } : { ...common, type: 'cpu', kernel: 'matmul' };
        }
        const node = window.node;
        const adapter = await node.gpu;
        await node.executors;
        /** Median wall time of `reps` runs after a warm-up, in ms. */
        const median = async (reps, makeSpec) => {
          await node.submitTask(makeSpec()).result;
          const xs = [];
          for (let i = 0; i < reps; i++) {
            const spec = makeSpec();
            const t = performance.now();
            await node.submitTask(spec).result;
            xs.push(performance.now() - t);
          }
          xs.sort((x, y) => x - y);
          return xs[Math.floor(xs.length / 2)];
        };
        const out = {};
        if (adapter) {
          const ms = await median(3, () => matmulSpec(matmulGpuN, true, shader));
          out.gpu_matmul = {
            n: matmulGpuN,
            ms,
            gflops: (2 * matmulGpuN ** 3) / (ms / 1000) / 1e9,
            adapter: adapter.name,
            software_adapter: adapter.fallback,
          };
        } else {
          out.gpu_matmul = null;
        }
        const mmMs = await median(3, () => matmulSpec(matmulCpuN, false));
        const mdMs = await median(3, () => ({
          type: 'cpu', kernel: 'mandelbrot', params: { maxIter: mandelIter },
          output: { type: 'u32', length: mandelSize * mandelSize }, grid: [mandelSize, mandelSize],
          split: { chunks: 1 }, local: true,
        }));
        // The same picture from the example wasm kernel, on the browser's engine.
        const wasm = new Uint8Array(await (await fetch('/kernels/mandelbrot.wasm')).arrayBuffer());
        const wasmMs = await median(3, () => ({
          type: 'cpu', wasm: wasm.slice(), params: { maxIter: mandelIter },
          output: { type: 'u32', length: mandelSize * mandelSize }, grid: [mandelSize, mandelSize],
          split: { chunks: 1 }, local: true,
        }));
        out.cpu_kernels = {
          wasm_kernel_mandelbrot_ms: wasmMs,
          matmul_n: matmulCpuN,
          matmul_gflops: (2 * matmulCpuN ** 3) / (mmMs / 1000) / 1e9,
          mandelbrot_size: mandelSize,
          mandelbrot_max_iter: mandelIter,
          mandelbrot_ms: mdMs,
        };
        return out;
      },
      { matmulGpuN, matmulCpuN, mandelSize, mandelIter, shader },
    );
  } finally {
    await ctx.close();
  }
}
