// The GPU executor: one dedicated worker per tab (see sdk/compute.js) that owns the wgpu
// device. The tab hands it a MessagePort whose other end the node holds; over it come
// `{ job, bytes }` (an encoded chunk run request) and `{ abort: job }`, and back go
// `{ job, bytes }` (the encoded response). Chunks run one at a time, in order. No code from
// the network is evaluated as JavaScript: the wasm module checks the chunk and runs its WGSL.
import init, { openGpu, run } from './pkg/peercompute_worker_gpu.js';

// Relative to this script: the build bundles the glue above into it, and the glue's own default
// (the wasm next to the glue's module) would then look in this folder instead of pkg/.
const wasmUrl = new URL('./pkg/peercompute_worker_gpu_bg.wasm', import.meta.url);

// wgpu's WebGPU backend reports no adapter name and no fallback flag: ask WebGPU itself.
async function describeAdapter() {
  const adapter = await navigator.gpu?.requestAdapter();
  const info = adapter?.info ?? {};
  return {
    name: [info.vendor, info.architecture, info.description].filter(Boolean).join(' '),
    fallback: Boolean(info.isFallbackAdapter ?? adapter?.isFallbackAdapter),
  };
}

const ready = init({ module_or_path: wasmUrl })
  .then(() => Promise.all([openGpu(), describeAdapter()]))
  .then(
    ([json, described]) => {
      const gpu = JSON.parse(json);
      gpu.name ||= described.name || 'WebGPU adapter';
      gpu.fallback ||= described.fallback;
      postMessage({ ready: true, gpu });
      return true;
    },
    (e) => {
      postMessage({ ready: false, error: String(e?.message ?? e) });
      return false;
    },
  );

const queue = [];
let busy = false;

async function pump(port) {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const { job, bytes } = queue.shift();
    try {
      const out = await run(bytes);
      port.postMessage({ job, bytes: out }, [out.buffer]);
    } catch (e) {
      // No answer: the node's chunk timeout runs it elsewhere; the queue goes on.
      console.error('worker-gpu: a chunk failed', e);
    }
  }
  busy = false;
}

onmessage = async ({ data }) => {
  const port = data?.port;
  if (!(port instanceof MessagePort) || !(await ready)) return;
  port.onmessage = ({ data: msg }) => {
    if (msg?.abort !== undefined) {
      // Not started yet: dropped, bytes and all. Running: it finishes and the node ignores
      // the answer (WebGPU cannot interrupt a dispatch).
      const i = queue.findIndex((q) => q.job === msg.abort);
      if (i >= 0) queue.splice(i, 1);
      return;
    }
    queue.push(msg);
    pump(port);
  };
};
