// The `yjs` baseline of the shared-state benchmarks, run by bench/run.mjs as its own process
// (`node --expose-gc`, so heap deltas are measured after a full GC). The workload is the one
// the worker and the native core run: `total` map sets in updates of `batch` operations, each
// update encoded (as it would be to persist and broadcast). Prints one JSON object.
import * as Y from 'yjs';

const total = Number(process.argv[2] ?? 100_000);
const batch = Number(process.argv[3] ?? 1000);
const gc = globalThis.gc ?? (() => {});

gc();
const heapBefore = process.memoryUsage().heapUsed;
const doc = new Y.Doc({ gc: false }); // history kept, like our documents (versions need it)
const root = doc.getMap('root');
let updateBytes = 0;
doc.on('update', (u) => (updateBytes += u.byteLength));
const t0 = performance.now();
for (let b = 0; b < total / batch; b++) {
  doc.transact(() => {
    for (let i = b * batch; i < (b + 1) * batch; i++) root.set(`k${i}`, i);
  });
}
const applyMs = performance.now() - t0;
gc();
const heapAfter = process.memoryUsage().heapUsed;

// The same updates arriving from a peer, applied to a replica whose observer reports each
// changed key with its value (what the worker does for its tabs).
const updates = [];
const source = new Y.Doc({ gc: false });
source.on('update', (u) => updates.push(u));
const sourceRoot = source.getMap('root');
for (let b = 0; b < total / batch; b++) {
  source.transact(() => {
    for (let i = b * batch; i < (b + 1) * batch; i++) sourceRoot.set(`k${i}`, i);
  });
}
const replica = new Y.Doc({ gc: false });
const replicaRoot = replica.getMap('root');
let reported = 0;
replicaRoot.observe((event) => {
  const changes = [];
  for (const key of event.keysChanged) changes.push([key, replicaRoot.get(key)]);
  reported += changes.length;
});
const t2 = performance.now();
for (const u of updates) Y.applyUpdate(replica, u);
const remoteMs = performance.now() - t2;
if (reported !== total) throw new Error(`yjs replica reported ${reported} changes`);

// A newcomer: the full state as one update, applied to an empty document, read as JSON.
const t1 = performance.now();
const state = Y.encodeStateAsUpdate(doc);
const fresh = new Y.Doc({ gc: false });
Y.applyUpdate(fresh, state);
const keys = Object.keys(fresh.getMap('root').toJSON()).length;
const syncMs = performance.now() - t1;
if (keys !== total) throw new Error(`yjs newcomer has ${keys} keys, expected ${total}`);

console.log(JSON.stringify({
  apply_ops_per_s: total / (applyMs / 1000),
  remote_apply_ops_per_s: total / (remoteMs / 1000),
  update_bytes: updateBytes,
  encoded_bytes: state.byteLength,
  heap_growth_mib: (heapAfter - heapBefore) / 2 ** 20,
  newcomer_sync_ms: syncMs,
  yjs_version: (await import('yjs/package.json', { with: { type: 'json' } }).catch(() => null))?.default?.version ?? null,
}));
