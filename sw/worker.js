// PeerCompute SharedWorker entry (module worker). One instance per origin hosts the node;
// every tab's port is attached to it. `connect` events can arrive before the wasm module is
// ready, so ports wait in a queue (a MessagePort buffers messages until it is started).
import init, { WorkerNode } from './pkg/peercompute_sw.js';

// Relative to this script: the build bundles the glue above into it, and the glue's own default
// (the wasm next to the glue's module) would then look in this folder instead of pkg/.
const wasmUrl = new URL('./pkg/peercompute_sw_bg.wasm', import.meta.url);

const waiting = [];
let node = null;
let failure = null;

function refuse(port, error) {
  port.onmessage = (event) => {
    const id = typeof event.data?.id === 'number' ? event.data.id : null;
    port.postMessage({
      v: 1,
      id,
      ok: false,
      error: { code: 'WORKER_START_FAILED', message: String(error?.message ?? error) },
    });
  };
}

self.onconnect = (event) => {
  const port = event.ports[0];
  if (node) node.attach(port);
  else if (failure) refuse(port, failure);
  else waiting.push(port);
};

// One node per origin, whatever URL its worker was started from: two would share one
// IndexedDB identity and write over each other's records. A worker of the same URL that is
// still shutting down (the last tab just reloaded) lets go within moments, so wait a little.
const NODE_LOCK_WAIT_MS = 3000;
// Resolves with a function that lets the lock go (a worker that failed to start must not keep
// the next one out); held otherwise for the worker's life.
function holdNodeLock() {
  if (!navigator.locks) return Promise.resolve(() => {});
  return new Promise((resolve, reject) => {
    const signal = AbortSignal.timeout(NODE_LOCK_WAIT_MS);
    navigator.locks
      .request('peercompute-node', { signal }, () => new Promise((release) => resolve(release)))
      .catch(() =>
        reject(new Error('another PeerCompute node of this origin is running (its worker has a different URL?)')),
      );
  });
}

const nodeLock = holdNodeLock();
Promise.all([nodeLock, init({ module_or_path: wasmUrl })])
  .then(() => WorkerNode.start())
  .then(
    (started) => {
      node = started;
      for (const port of waiting.splice(0)) node.attach(port);
    },
    (error) => {
      nodeLock.then((release) => release(), () => {});
      failure = error;
      console.error('PeerCompute worker failed to start:', error);
      for (const port of waiting.splice(0)) refuse(port, error);
    },
  );
