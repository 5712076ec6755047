// The `yjs` baseline of the shared-state benchmarks, run by bench/run.mjs as its own process
// (`node --expose-gc`, so heap deltas are measured after a full GC). The workload is the one
// the worker and the native core run: `total` map sets in updates of `batch` operations, each
// update encoded (as it would be to persist and broadcast). Prints one JSON object.
import * as Y from 'yjs';

const total = Number(process.argv[2] ?? 100_000);
const batch = Number(process.argv[3] ?? 1000);
const gc = globalThis.gc ?? (() => {});

// Each apply workload runs `RUNS` times; the median is reported, as the native half does.
const RUNS = 3;
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

// Local sets in transactions of `batch`, each update encoded (the `update` event); `keep`:
// the updates are kept (not in the run whose heap is measured).
function applyLocal(keep) {
  const doc = new Y.Doc({ gc: false }); // history kept, like our documents (versions need it)
  const root = doc.getMap('root');
  const updates = [];
  let updateBytes = 0;
  doc.on('update', (u) => {
    updateBytes += u.byteLength;
    if (keep) updates.push(u);
  });
  const t0 = performance.now();
  for (let b = 0; b < total / batch; b++) {
    doc.transact(() => {
      for (let i = b * batch; i < (b + 1) * batch; i++) root.set(`k${i}`, i);
    });
  }
  return { doc, updates, updateBytes, ms: performance.now() - t0 };
}

// The same updates arriving from a peer, applied to a replica whose observer reports each
// changed key with its value (what the worker does for its tabs).
function applyRemote(updates) {
  const replica = new Y.Doc({ gc: false });
  const replicaRoot = replica.getMap('root');
  let reported = 0;
  replicaRoot.observe((event) => {
    const changes = [];
    for (const key of event.keysChanged) changes.push([key, replicaRoot.get(key)]);
    reported += changes.length;
  });
  const t0 = performance.now();
  for (const u of updates) Y.applyUpdate(replica, u);
  const ms = performance.now() - t0;
  if (reported !== total) throw new Error(`yjs replica reported ${reported} changes`);
  return ms;
}

gc();
const heapBefore = process.memoryUsage().heapUsed;
const first = applyLocal(false);
gc();
const heapAfter = process.memoryUsage().heapUsed;
const { doc, updateBytes } = first;
const applyMs = [first.ms];
let updates;
for (let r = 1; r < RUNS; r++) {
  const run = applyLocal(true);
  applyMs.push(run.ms);
  updates = run.updates;
}
const remoteMs = [];
for (let r = 0; r < RUNS; r++) remoteMs.push(applyRemote(updates));

// A newcomer: the full state as one update, applied to an empty document, read as JSON.
function newcomer() {
  const t0 = performance.now();
  const state = Y.encodeStateAsUpdate(doc);
  const fresh = new Y.Doc({ gc: false });
  Y.applyUpdate(fresh, state);
  const keys = Object.keys(fresh.getMap('root').toJSON()).length;
  const ms = performance.now() - t0;
  if (keys !== total) throw new Error(`yjs newcomer has ${keys} keys, expected ${total}`);
  return { ms, bytes: state.byteLength };
}
const newcomers = [newcomer(), newcomer(), newcomer()];
const syncMs = newcomers.map((n) => n.ms);

const perS = (ms) => total / (ms / 1000);
console.log(JSON.stringify({
  apply_ops_per_s: perS(median(applyMs)),
  apply_runs_ops_per_s: applyMs.map(perS),
  remote_apply_ops_per_s: perS(median(remoteMs)),
  remote_apply_runs_ops_per_s: remoteMs.map(perS),
  update_bytes: updateBytes,
  encoded_bytes: newcomers[0].bytes,
  heap_growth_mib: (heapAfter - heapBefore) / 2 ** 20,
  newcomer_sync_ms: median(syncMs),
  newcomer_sync_runs_ms: syncMs,
  yjs_version: (await import('yjs/package.json', { with: { type: 'json' } }).catch(() => null))?.default?.version ?? null,
}));
