// Distributed compute, the tab's side: `node.submitTask(spec)` and the pool of CPU workers
// this tab lends the node (a SharedWorker cannot start workers itself). The node splits,
// schedules, verifies and reduces; the tab only converts the task and shows its progress.

const TYPED = { f32: Float32Array, u32: Uint32Array, i32: Int32Array };
const DEFAULT_POOL_SIZE = Math.max(1, Math.min(4, (globalThis.navigator?.hardwareConcurrency ?? 2) - 1));

function bytesOf(array, makeError, what) {
  if (ArrayBuffer.isView(array)) return new Uint8Array(array.buffer, array.byteOffset, array.byteLength).slice();
  if (array instanceof ArrayBuffer) return new Uint8Array(array.slice(0));
  throw makeError('TASK_INVALID', `${what} must be a typed array or an ArrayBuffer`);
}

function typeOf(array) {
  if (array instanceof Float32Array) return 'f32';
  if (array instanceof Uint32Array) return 'u32';
  if (array instanceof Int32Array) return 'i32';
  return undefined;
}

/** A random id. `crypto.randomUUID` exists only in secure contexts (https, localhost); a page
 *  served over plain http on a LAN address still has `getRandomValues`. */
export function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Converts the page's task into the tab protocol's `task` (see README, "Compute"). */
export function encodeTask(spec, makeError) {
  if (!spec || typeof spec !== 'object') throw makeError('TASK_INVALID', 'a task is an object');
  const data = spec.data ?? {};
  const params = spec.params ?? data.params ?? {};
  if (typeof params !== 'object' || Array.isArray(params)) {
    throw makeError('TASK_INVALID', '`params` is an object of numbers');
  }
  // An input is `{ binding?, type?, data }` or just the typed array (bindings 2, 3, ...).
  const inputs = (spec.inputs ?? data.inputs ?? []).map((input, i) => {
    const bare = ArrayBuffer.isView(input) || input instanceof ArrayBuffer;
    const array = bare ? input : (input?.data ?? input?.bytes);
    return {
      binding: (bare ? undefined : input?.binding) ?? i + 2,
      type: (bare ? undefined : input?.type) ?? typeOf(array),
      bytes: bytesOf(array, makeError, `input ${i}`),
    };
  });
  // The seed's shape `{ id, type, shader, data: { inputs } }` names no output or grid: a map
  // over the first input (one output element per input element, of its type).
  const output = spec.output ?? (inputs[0] && { type: inputs[0].type, length: inputs[0].bytes.byteLength / 4 });
  if (!output) throw makeError('TASK_INVALID', 'a task says its `output: { type, length }` (or has an input to map over)');
  const task = {
    id: spec.id ?? `task-${randomId()}`,
    type: spec.type,
    params: Object.entries(params),
    inputs,
    output,
    grid: spec.grid ?? [output.length],
  };
  for (const key of ['shader', 'entry', 'workgroupSize', 'tile', 'kernel', 'signature', 'split', 'reduce',
    'redundancy', 'timeoutMs', 'chunkTimeoutMs', 'workStealing', 'local']) {
    if (spec[key] !== undefined) task[key] = spec[key];
  }
  if (spec.grid !== undefined && !Array.isArray(spec.grid)) {
    throw makeError('TASK_INVALID', '`grid` is an array of 1 to 3 numbers');
  }
  const transfer = inputs.map((i) => i.bytes.buffer);
  // A wasm kernel: the module's bytes (what the signature covers), not a WebAssembly.Module.
  if (spec.wasm !== undefined) {
    task.wasm = bytesOf(spec.wasm, makeError, '`wasm`');
    transfer.push(task.wasm.buffer);
  }
  return { task, transfer };
}

/**
 * A running task: `result`, `done`, `on('progress')`, `cancel()`. It is also a thenable of
 * its result, so the seed's `const result = await node.submitTask(spec)` works.
 */
export class Task {
  #listeners = new Set();
  #cancel;

  constructor(id, reply, cancel) {
    this.id = id;
    this.#cancel = cancel;
    /** Resolves with `{ result, workers, excluded, chunks, elapsedMs }`. */
    this.done = reply.then((value) => {
      const Typed = TYPED[value.type];
      const bytes = value.bytes;
      return { ...value, result: new Typed(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4) };
    });
    /** Resolves with the result as a typed array of the output type. */
    this.result = this.done.then((d) => d.result);
    this.result.catch(() => {}); // reported through `done`/`result` to whoever awaits them
  }

  then(onFulfilled, onRejected) {
    return this.result.then(onFulfilled, onRejected);
  }

  /** `progress` handlers get `{ done, total, peers }`. Returns an off function. */
  on(event, handler) {
    if (event !== 'progress') throw new TypeError(`unknown task event ${event}`);
    this.#listeners.add(handler);
    return () => this.#listeners.delete(handler);
  }

  /** Stops the task on every peer; `result` rejects with `TASK_CANCELLED`. */
  cancel() {
    return this.#cancel();
  }

  _progress(p) {
    for (const h of this.#listeners) {
      try {
        h(p);
      } catch (e) {
        console.error('PeerCompute progress handler threw:', e);
      }
    }
  }
}

/**
 * Starts this tab's GPU worker (`worker-gpu`: wgpu on WebGPU) and lends it to the node.
 * Resolves with the adapter (`{ name, backend, fallback, ... }`), or `null` where the browser
 * has no WebGPU or no adapter (the node then says `gpu: false` and GPU work goes to peers).
 */
export async function startGpuWorker(request, options = {}) {
  if (!globalThis.navigator?.gpu) return null;
  const url = options.url ?? new URL('../worker-gpu/worker.js', import.meta.url);
  const worker = new Worker(url, { type: 'module', name: 'peercompute-gpu' });
  let adapter;
  try {
    adapter = await new Promise((resolve, reject) => {
      worker.onmessage = ({ data }) => (data?.ready ? resolve(data.gpu) : reject(new Error(data?.error)));
      worker.onerror = (e) => reject(new Error(e.message || 'worker-gpu failed to load'));
    });
  } catch (e) {
    worker.terminate();
    console.warn('PeerCompute: no GPU worker:', e.message);
    return null;
  }
  const { port1, port2 } = new MessageChannel();
  worker.postMessage({ port: port1 }, [port1]);
  const { name, backend, fallback } = adapter;
  try {
    await request('executorAttach', { port: port2, gpu: { name, backend, fallback } }, [port2]);
  } catch (e) {
    worker.terminate();
    throw e;
  }
  return { ...adapter, close: () => worker.terminate() };
}

/**
 * Starts this tab's pool of CPU workers and lends it to the node. Resolves with
 * `{ slots, score }` once the workers are ready and the node has them.
 */
export async function startCpuPool(request, options = {}) {
  const size = options.size ?? DEFAULT_POOL_SIZE;
  const url = options.url ?? new URL('../worker-cpu/worker.js', import.meta.url);
  let spawned = 0;
  // A worker and the promise of its score, once its wasm module is ready.
  const spawn = () => {
    const worker = new Worker(url, { type: 'module', name: `peercompute-cpu-${spawned++}` });
    const ready = new Promise((resolve, reject) => {
      worker.onmessage = ({ data }) => (data?.ready ? resolve(data.score) : reject(new Error(data?.error)));
      worker.onerror = (e) => reject(new Error(e.message || 'worker-cpu failed to load'));
    });
    return { worker, ready };
  };
  const first = Array.from({ length: size }, spawn);
  const workers = new Set(first.map((w) => w.worker));
  let score;
  try {
    score = Math.max(...(await Promise.all(first.map((w) => w.ready))));
  } catch (e) {
    for (const w of workers) w.terminate();
    throw e;
  }
  const { port1, port2 } = new MessageChannel();
  const idle = [...workers];
  const queue = []; // { job, bytes }
  const running = new Map(); // job → worker
  let closed = false;
  const pump = () => {
    while (idle.length && queue.length) {
      const worker = idle.pop();
      const { job, bytes } = queue.shift();
      running.set(job, worker);
      worker.postMessage({ job, bytes }, [bytes.buffer]);
    }
  };
  const serve = (worker) => {
    worker.onmessage = ({ data }) => {
      // A result already on its way from a worker replaced meanwhile: the node gave up on it.
      if (!workers.has(worker)) return;
      running.delete(data.job);
      idle.push(worker);
      port1.postMessage(data, [data.bytes.buffer]);
      pump();
    };
  };
  workers.forEach(serve);
  port1.onmessage = ({ data }) => {
    if (data.abort !== undefined) {
      // Not started yet: drop it. Running: the node no longer wants it (cancelled, or timed
      // out and retried elsewhere), and a wasm kernel cannot be interrupted, so the worker is
      // replaced: a kernel stuck in a loop does not hold the slot.
      const i = queue.findIndex((q) => q.job === data.abort);
      if (i >= 0) queue.splice(i, 1);
      const stuck = running.get(data.abort);
      if (stuck) {
        running.delete(data.abort);
        stuck.terminate();
        workers.delete(stuck);
        const fresh = spawn();
        workers.add(fresh.worker);
        fresh.ready.then(
          () => {
            if (closed) return fresh.worker.terminate();
            serve(fresh.worker);
            idle.push(fresh.worker);
            pump();
          },
          (e) => {
            // The pool is a slot short from now on; the node's chunk timeouts cover it.
            workers.delete(fresh.worker);
            fresh.worker.terminate();
            console.error('PeerCompute: a replacement CPU worker failed to start:', e);
          },
        );
      }
      return;
    }
    queue.push(data);
    pump();
  };
  port1.start();
  const close = () => {
    closed = true;
    port1.close();
    workers.forEach((w) => w.terminate());
  };
  try {
    await request('executorAttach', { port: port2, cpuSlots: size, score }, [port2]);
  } catch (e) {
    close();
    throw e;
  }
  return { slots: size, score, close };
}
