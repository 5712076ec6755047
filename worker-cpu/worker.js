// A CPU executor: one dedicated worker of a tab's pool (see sdk/compute.js). It receives
// `{ job, bytes }` (an encoded chunk run request) and answers `{ job, bytes }` (the encoded
// response); the wasm module checks and runs the chunk: a built-in kernel compiled into it, or
// a wasm kernel module the browser compiles (signed by the network's root key when it came
// from a peer: the node checks that before the chunk gets here). No JavaScript from the
// network is ever evaluated.
import init, { run, score } from './pkg/peercompute_worker_cpu.js';

// Relative to this script: the build bundles the glue above into it, and the glue's own default
// (the wasm next to the glue's module) would then look in this folder instead of pkg/.
const wasmUrl = new URL('./pkg/peercompute_worker_cpu_bg.wasm', import.meta.url);

const ready = init({ module_or_path: wasmUrl }).then(
  () => {
    postMessage({ ready: true, score: score() });
    return true;
  },
  (e) => {
    postMessage({ ready: false, error: String(e) });
    return false;
  },
);

onmessage = async ({ data }) => {
  if (!(await ready)) return;
  const out = run(data.bytes);
  postMessage({ job: data.job, bytes: out }, [out.buffer]);
};
