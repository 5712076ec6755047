// Shared documents in the SDK. The authoritative copy lives in the worker (a yrs document);
// each tab keeps a plain-JSON mirror, filled once when the document opens and kept current by
// the batched changes the worker pushes. Reads are synchronous from the mirror; writes go to
// the worker and resolve once they are durable in IndexedDB.

const MAX_PATH_KEYS = 32;
const MAX_KEY_BYTES = 256;
const MAX_DEPTH = 64;
// Mirrors of the node's bounds (core/src/limits.rs), so an oversized write fails here
// without a copy to the worker.
const MAX_STATE_UPDATE_BYTES = 1024 * 1024;
const MAX_DOC_BYTES = 32 * 1024 * 1024;
const MAX_DOC_NAME_BYTES = 128;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const encoder = new TextEncoder();

function fail(makeError, code, message) {
  throw makeError(code, message);
}

/**
 * Whether string `s` is at most `max` bytes as UTF-8. A UTF-16 unit is at most 3 bytes, so
 * the bytes are counted only when that bound could pass `max` (encoding every key of a large
 * write was a third of the tab's cost of it).
 */
export function utf8Within(s, max) {
  return s.length * 3 <= max || encoder.encode(s).length <= max;
}

function checkKey(makeError, key, code) {
  if (typeof key !== 'string' || key.length === 0 || CONTROL.test(key) || !utf8Within(key, MAX_KEY_BYTES)) {
    fail(makeError, code, `key ${JSON.stringify(String(key))} must be a non-empty string of at most ${MAX_KEY_BYTES} bytes without control characters`);
  }
}

/** Throws unless `name` is a valid document name (the worker checks the same). */
export function checkDocName(makeError, name) {
  if (typeof name !== 'string' || name.length === 0 || CONTROL.test(name) || !utf8Within(name, MAX_DOC_NAME_BYTES)) {
    fail(makeError, 'STATE_INVALID_DOC_NAME', `a document name is 1 to ${MAX_DOC_NAME_BYTES} bytes without control characters`);
  }
}

/** `'a.b'` or `['a', 'b']` → `['a', 'b']`, validated. */
export function toPath(makeError, path) {
  const keys = typeof path === 'string' ? path.split('.') : path;
  if (!Array.isArray(keys) || keys.length === 0 || keys.length > MAX_PATH_KEYS) {
    fail(makeError, 'STATE_INVALID_PATH', `a path is a dotted string or an array of 1 to ${MAX_PATH_KEYS} keys`);
  }
  for (const k of keys) checkKey(makeError, k, 'STATE_INVALID_PATH');
  return keys;
}

/** Throws unless `value` is plain JSON: no functions, cycles, non-finite numbers or class instances. */
export function checkValue(makeError, value, depth = 0, seen = null) {
  const bad = (why) => fail(makeError, 'STATE_INVALID_VALUE', `value is not plain JSON: ${why}`);
  if (depth > MAX_DEPTH) bad(`nested deeper than ${MAX_DEPTH} levels`);
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return;
    case 'number':
      if (!Number.isFinite(value)) bad(`${value} is not a finite number`);
      return;
    case 'object':
      break;
    default:
      bad(`a ${typeof value} cannot be stored`);
  }
  if (value === null) return;
  // Made for the first object only: most values are scalars.
  seen ??= new Set();
  if (seen.has(value)) bad('it contains a cycle');
  seen.add(value);
  if (Array.isArray(value)) {
    for (const item of value) checkValue(makeError, item, depth + 1, seen);
  } else {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) bad(`a ${value.constructor?.name ?? 'class'} instance cannot be stored`);
    for (const [k, v] of Object.entries(value)) {
      checkKey(makeError, k, 'STATE_INVALID_VALUE');
      checkValue(makeError, v, depth + 1, seen);
    }
  }
  seen.delete(value);
}

function lookup(tree, keys) {
  let node = tree;
  for (const k of keys) {
    if (node === null || typeof node !== 'object' || Array.isArray(node) || !Object.hasOwn(node, k)) return undefined;
    node = node[k];
  }
  return node;
}

// Keys come from peers: `__proto__` or `constructor` is an ordinary key of the copy, so it is
// read only as an own property and written as one (`node[k] = v` would set the prototype).
const ownChild = (node, k) => (Object.hasOwn(node, k) ? node[k] : undefined);
// Only `__proto__` is an accessor on `Object.prototype`; any other key assigned to a plain
// object becomes an own data property (and `defineProperty` per key was slow).
const putOwn = (node, k, value) => {
  if (k === '__proto__') {
    Object.defineProperty(node, k, { value, writable: true, enumerable: true, configurable: true });
  } else node[k] = value;
};

/** Applies one change to `tree`; returns the tree (a new one for `path: []`, the whole tree). */
function applyChange(tree, { path, value }) {
  if (path.length === 0) return value ?? {};
  let node = tree;
  for (const k of path.slice(0, -1)) {
    let child = ownChild(node, k);
    if (child === null || typeof child !== 'object' || Array.isArray(child)) {
      if (value === undefined) return tree; // deleting below something that is not there
      child = {};
      putOwn(node, k, child);
    }
    node = child;
  }
  const last = path[path.length - 1];
  if (value === undefined) {
    if (Object.hasOwn(node, last)) delete node[last];
  } else putOwn(node, last, value);
  return tree;
}

function related(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

const copy = (v) => (v !== null && typeof v === 'object' ? structuredClone(v) : v);

/** A shared document, as one tab sees it. Get one with `node.state(name)`. */
export class SharedState {
  #request;
  #makeError;
  #tree = {};
  #closed = false;
  #observers = new Set();
  #onClose;
  #trackWrite;

  constructor(name, request, makeError, onClose, trackWrite = (p) => p) {
    /** The document's name. */
    this.name = name;
    this.#request = (op, fields, transfer) => request(op, { doc: name, ...fields }, transfer);
    this.#makeError = makeError;
    this.#onClose = onClose;
    this.#trackWrite = trackWrite;
    /** Settles once the document is open (loaded from IndexedDB and its current tree known). */
    this.ready = this.#request('stateOpen').then(({ json }) => {
      this.#tree = JSON.parse(json);
      return this;
    });
  }

  _applyChanges(changesJson, local) {
    const changes = JSON.parse(changesJson);
    for (const change of changes) this.#tree = applyChange(this.#tree, change);
    for (const { path, handler } of this.#observers) {
      const mine = changes.filter((c) => related(c.path, path));
      if (mine.length === 0) continue;
      try {
        // Copies: an observer that changes what it is given must not change this tab's mirror.
        const given = mine.map((c) => ({ path: c.path, value: copy(c.value), deleted: !('value' in c) }));
        handler({ changes: given, local });
      } catch (e) {
        console.error('PeerCompute state observer threw:', e);
      }
    }
  }

  /** The value at `path` (a copy), or the whole tree without one. `undefined` if absent. */
  get(path) {
    if (path === undefined) return copy(this.#tree);
    return copy(lookup(this.#tree, toPath(this.#makeError, path)));
  }

  /** Writes `value` at `path`; resolves once the change is durable on this device. */
  set(path, value) {
    return this.update([{ set: path, value }]);
  }

  /** Removes `path`; resolves once durable. */
  delete(path) {
    return this.update([{ delete: path }]);
  }

  /** Applies `[{ set: path, value } | { delete: path }]` as one transaction. */
  async update(ops) {
    if (!Array.isArray(ops) || ops.length === 0) {
      throw this.#makeError('STATE_INVALID_VALUE', 'update takes a non-empty array of operations');
    }
    const wire = ops.map((op) => {
      if (op === null || typeof op !== 'object') {
        throw this.#makeError('STATE_INVALID_VALUE', 'each operation is { set: path, value } or { delete: path }');
      }
      if ('set' in op && !('delete' in op)) {
        if (!('value' in op)) throw this.#makeError('STATE_INVALID_VALUE', '`set` needs a `value`');
        checkValue(this.#makeError, op.value);
        return { set: toPath(this.#makeError, op.set), value: op.value };
      }
      if ('delete' in op && !('set' in op)) return { delete: toPath(this.#makeError, op.delete) };
      throw this.#makeError('STATE_INVALID_VALUE', 'each operation is { set: path, value } or { delete: path }');
    });
    const json = JSON.stringify(wire);
    if (!utf8Within(json, MAX_STATE_UPDATE_BYTES)) {
      throw this.#makeError('PAYLOAD_TOO_LARGE', `an update is at most ${MAX_STATE_UPDATE_BYTES} bytes of JSON`);
    }
    await this.#write('stateUpdate', { ops: json });
  }

  /**
   * Calls `handler({ changes: [{ path, value, deleted }], local })` after each transaction
   * that touches `path` (below it, at it, or above it). Returns a function that stops it.
   * A change with `path: []` replaces the whole tree: a peer's large update comes as one (a
   * newcomer's first sync of more than 64 entries, or an update adding at least 1024 items and
   * at least as many as the document had entries).
   */
  observe(path, handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    const entry = { path: path === undefined ? [] : toPath(this.#makeError, path), handler };
    this.#observers.add(entry);
    return () => this.#observers.delete(entry);
  }

  /** A write answered once durable: sent once the document is open, and tracked from this
   * call on, so the node's `close()` right after it still waits for its answer. */
  #write(op, fields, transfer) {
    return this.#trackWrite(this.ready.then(() => this.#request(op, fields, transfer)));
  }

  /** Records a named version of the current state: `{ id, label, time }`. */
  async snapshot(label = '') {
    return this.#write('stateSnapshot', { label: String(label) });
  }

  /** Named versions, oldest first. */
  async versions() {
    await this.ready;
    return this.#request('stateVersions');
  }

  /**
   * Forgets a named version (`id` or a version object) for every peer; resolves once durable.
   * A document keeps at most 256 versions; deleting one makes room for the next.
   */
  async deleteVersion(version) {
    const id = typeof version === 'string' ? version : version?.id;
    if (typeof id !== 'string') throw this.#makeError('BAD_REQUEST', 'a version id (string) or a version object');
    await this.#write('stateDeleteVersion', { version: id });
  }

  /** A read-only view of a past version (`id` or a version object). */
  at(version) {
    const id = typeof version === 'string' ? version : version?.id;
    // Fetched on `get`, so a view that is never read never makes a request (or a rejection).
    const tree = async () => {
      await this.ready;
      return JSON.parse((await this.#request('stateAt', { version: id })).json);
    };
    return {
      get: async (path) => (path === undefined ? tree() : lookup(await tree(), toPath(this.#makeError, path))),
    };
  }

  /** The document as a Yjs v1 update (`Y.applyUpdate(ydoc, bytes)`; the tree is `ydoc.getMap('root')`). */
  async exportUpdate() {
    await this.ready;
    const { bytes } = await this.#request('stateExport');
    return bytes;
  }

  /** Applies a Yjs v1 update; resolves once durable. */
  async importUpdate(bytes) {
    if (!(bytes instanceof Uint8Array)) throw this.#makeError('STATE_INVALID_UPDATE', 'importUpdate takes a Uint8Array');
    if (bytes.byteLength > MAX_DOC_BYTES) {
      throw this.#makeError('STATE_DOC_TOO_LARGE', `an update of ${bytes.byteLength} bytes is over a document's ${MAX_DOC_BYTES}`);
    }
    const copyBytes = bytes.slice();
    await this.#write('stateImport', { bytes: copyBytes }, [copyBytes.buffer]);
  }

  /** Stops this tab's copy; the document stays open in the node for the other tabs. */
  async close() {
    // Once: the node tracks one watch per tab and document, so a second `stateClose` from
    // this old handle would stop the changes a newer handle of the same name relies on.
    if (this.#closed) return;
    this.#closed = true;
    this.#observers.clear();
    // A handle that is no longer the registered one (its open failed and a newer handle was
    // made) says nothing to the node, whose watch now belongs to the newer handle.
    if (!this.#onClose(this.name)) return;
    await this.#request('stateClose');
  }
}
