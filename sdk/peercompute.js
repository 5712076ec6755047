// PeerCompute SDK: the small module pages import. No wasm runs in the tab: it speaks the tab
// protocol (versioned request/reply over a MessagePort) to the node in the SharedWorker that
// all tabs of this origin share.

import { Task, encodeTask, randomId, startCpuPool, startGpuWorker } from './compute.js';
import { Presence } from './presence.js';
import { SharedState, checkDocName, utf8Within } from './state.js';

const PROTOCOL_VERSION = 1;
const MAX_PUBLISH_BYTES = 1024 * 1024;
const MAX_TOPIC_BYTES = 256;
const MAX_PENDING_REQUESTS = 4096;
const DEFAULT_TIMEOUT_MS = 10_000;
// How long close() waits for the worker to confirm the detach.
const CLOSE_WAIT_MS = 2_000;
// The node takes at most this many CPU slots from one tab (sw/src/executors.rs MAX_POOL_SLOTS).
const MAX_CPU_WORKERS = 64;

/** An error with a stable `code` string (see README, "Error codes"). */
export class PeerComputeError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'PeerComputeError';
    this.code = code;
  }
}

function checkTopic(topic) {
  if (typeof topic !== 'string' || topic.length === 0 || !utf8Within(topic, MAX_TOPIC_BYTES)) {
    throw new PeerComputeError('INVALID_TOPIC', `topic must be a non-empty string of at most ${MAX_TOPIC_BYTES} bytes`);
  }
}

function encodePayload(data) {
  if (data instanceof Uint8Array) {
    if (data.byteLength > MAX_PUBLISH_BYTES) {
      throw new PeerComputeError('PAYLOAD_TOO_LARGE', `payload of ${data.byteLength} bytes exceeds ${MAX_PUBLISH_BYTES}`);
    }
    return { bytes: data.slice() };
  }
  let json;
  try {
    json = JSON.stringify(data);
  } catch (e) {
    throw new PeerComputeError('INVALID_JSON', `payload is not JSON-serializable: ${e.message}`);
  }
  if (json === undefined) {
    throw new PeerComputeError('INVALID_JSON', 'payload is not JSON-serializable');
  }
  if (!utf8Within(json, MAX_PUBLISH_BYTES)) {
    throw new PeerComputeError('PAYLOAD_TOO_LARGE', `payload exceeds ${MAX_PUBLISH_BYTES} bytes`);
  }
  return { json };
}

class Channel {
  constructor(port, onEvent) {
    this.port = port;
    this.pending = new Map();
    /** The durable writes in flight (their promises): `close()` lets them finish. */
    this.writes = new Set();
    this.nextId = 1;
    this.closed = null;
    port.onmessage = (event) => this.#receive(event.data);
    port.onmessageerror = () => console.warn('PeerCompute: a message from the worker could not be read');
    port.start();
    this.onEvent = onEvent;
  }

  #receive(msg) {
    if (!msg || msg.v !== PROTOCOL_VERSION) return;
    if (typeof msg.event === 'string') {
      this.onEvent(msg);
      return;
    }
    const waiter = this.pending.get(msg.id);
    if (!waiter) return;
    this.pending.delete(msg.id);
    if (msg.ok) waiter.resolve(msg.value);
    else waiter.reject(new PeerComputeError(msg.error?.code ?? 'INTERNAL', msg.error?.message ?? 'unknown error'));
  }

  request(op, fields = {}, transfer = []) {
    if (this.closed) return Promise.reject(this.closed);
    if (this.pending.size >= MAX_PENDING_REQUESTS) {
      return Promise.reject(new PeerComputeError('BUSY', 'too many requests in flight'));
    }
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      try {
        this.port.postMessage({ v: PROTOCOL_VERSION, id, op, ...fields }, transfer);
      } catch (e) {
        // A value the browser cannot copy (a function, a DOM node…): no message left.
        this.pending.delete(id);
        reject(new PeerComputeError('BAD_REQUEST', `the ${op} request cannot be sent: ${e.message}`));
      }
    });
  }

  /** Tracks a durable write from the moment it is asked for; returns it. */
  trackWrite(write) {
    this.writes.add(write);
    const settled = () => this.writes.delete(write);
    write.then(settled, settled);
    return write;
  }

  fail(error) {
    this.closed = error;
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
  }
}

/** Holds a Web Lock for the tab's lifetime; the worker watches it to notice closed tabs. */
async function holdTabLock() {
  if (!navigator.locks) return { name: null, release: () => {} };
  const name = `peercompute-tab-${randomId()}`;
  let release;
  const held = new Promise((resolve) => (release = resolve));
  await new Promise((granted, refused) => {
    navigator.locks
      .request(name, () => {
        granted();
        return held;
      })
      .catch(refused); // (settles only on release, or when the request itself fails)
  });
  return { name, release };
}

async function bootstrapConfig(timeoutMs) {
  let response;
  try {
    // Bounded like the rest of connect: a server that never answers is a failed bootstrap.
    const signal = AbortSignal.timeout(timeoutMs);
    response = await fetch(new URL('/peercompute.json', location.origin), { cache: 'no-cache', signal });
  } catch (e) {
    throw new PeerComputeError('BOOTSTRAP_FAILED', `fetching /peercompute.json failed: ${e.message}`);
  }
  if (!response.ok) {
    throw new PeerComputeError('BOOTSTRAP_FAILED', `/peercompute.json answered ${response.status}`);
  }
  const config = await response.json().catch(() => null);
  if (!config || !Array.isArray(config.relays) || config.relays.length === 0) {
    throw new PeerComputeError('BOOTSTRAP_FAILED', '/peercompute.json lists no relays');
  }
  return { relays: config.relays, rootKey: typeof config.rootKey === 'string' ? config.rootKey : undefined };
}

/** A connected node handle for this tab. All tabs of the origin share the node behind it. */
export class PeerComputeNode {
  #channel;
  #lock;
  #topics = new Map(); // topic -> { handlers: Set, ready: the node's subscription, shared }
  #closing = null;
  #listeners = new Map(); // event -> Set(handler)
  #docs = new Map(); // name -> SharedState
  #tasks = new Map(); // id -> Task

  #forgetPagehide;

  constructor(channel, lock, peerId, forgetPagehide = () => {}) {
    this.#channel = channel;
    this.#lock = lock;
    this.#forgetPagehide = forgetPagehide;
    /** This node's libp2p peer id (the same in every tab of the origin). */
    this.peerId = peerId;
    /** This node's presence and every peer's: `set`, `clear`, `get`, `on('change')`. */
    this.presence = new Presence(
      (op, fields) => this.#channel.request(op, fields),
      (code, message) => new PeerComputeError(code, message),
    );
  }

  _dispatch(msg) {
    if (msg.event === 'message') {
      const handlers = this.#topics.get(msg.topic)?.handlers;
      if (!handlers) return;
      let data;
      if (msg.bytes instanceof Uint8Array) data = msg.bytes;
      else {
        try {
          data = JSON.parse(msg.json);
        } catch {
          return; // the worker validates JSON; this cannot happen with an honest worker
        }
      }
      const message = { topic: msg.topic, from: msg.from, data, local: msg.local };
      for (const h of handlers) safeCall(h, message);
      this.#emit('message', message);
    } else if (msg.event === 'peer:join' || msg.event === 'peer:leave') {
      this.#emit(msg.event, { peerId: msg.peerId });
    } else if (msg.event === 'status') {
      this.#emit('status', msg.status);
    } else if (msg.event === 'state') {
      this.#docs.get(msg.doc)?._applyChanges(msg.changes, msg.local);
    } else if (msg.event === 'presence') {
      this.presence._apply(msg.peers);
    } else if (msg.event === 'taskProgress') {
      this.#tasks.get(msg.task)?._progress({ done: msg.done, total: msg.total, peers: msg.peers });
    }
  }

  /**
   * Runs a compute task: split into chunks over this node's CPU/GPU workers and its peers',
   * verified when `redundancy > 1`, combined by `reduce`. Returns a {@link Task} at once;
   * `task.result` resolves with a typed array. See README, "Compute".
   */
  submitTask(spec) {
    const makeError = (code, message) => new PeerComputeError(code, message);
    const { task, transfer } = encodeTask(spec, makeError);
    if (this.#tasks.has(task.id)) throw makeError('TASK_DUPLICATE_ID', `task ${task.id} is already running here`);
    const reply = this.#channel.request('taskSubmit', { task }, transfer);
    const handle = new Task(task.id, reply, () => this.#channel.request('taskCancel', { task: task.id }));
    this.#tasks.set(task.id, handle);
    const forget = () => this.#tasks.get(task.id) === handle && this.#tasks.delete(task.id);
    reply.then(forget, forget);
    return handle;
  }

  /**
   * The shared document `name`: one per name for every tab and peer. Reads come from this
   * tab's copy (`await doc.ready` first); writes resolve once durable on this device.
   */
  state(name) {
    checkDocName((code, message) => new PeerComputeError(code, message), name);
    let doc = this.#docs.get(name);
    if (!doc) {
      doc = new SharedState(
        name,
        (op, fields, transfer) => this.#channel.request(op, fields, transfer),
        (code, message) => new PeerComputeError(code, message),
        // Only this handle: a newer one for the same name stays.
        (n) => this.#docs.get(n) === doc && this.#docs.delete(n),
        (write) => this.#channel.trackWrite(write),
      );
      this.#docs.set(name, doc);
      // A failed open is reported through `doc.ready`; forget the handle so a retry can work.
      doc.ready.catch(() => this.#docs.get(name) === doc && this.#docs.delete(name));
    }
    return doc;
  }

  #emit(event, value) {
    for (const h of this.#listeners.get(event) ?? []) safeCall(h, value);
  }

  /** The node's status: relays, peers, connections, topics, tabs, uptime. */
  getStatus() {
    return this.#channel.request('status');
  }

  /** Browser peers known to this node, with connection state and RTT. */
  peers() {
    return this.#channel.request('peers');
  }

  /** Round trip to the worker (liveness, benchmarks). */
  ping() {
    return this.#channel.request('ping');
  }

  /**
   * Publishes `data` (any JSON value, or a Uint8Array) on `topic` to every subscribed node and
   * to the other tabs of this node. Resolves with `{ peers, localTabs }`.
   */
  async publish(topic, data) {
    checkTopic(topic);
    const payload = encodePayload(data);
    const transfer = payload.bytes ? [payload.bytes.buffer] : [];
    return this.#channel.request('publish', { topic, ...payload }, transfer);
  }

  /**
   * Calls `handler({ topic, from, data, local })` for each message on `topic`. Returns a
   * function that unsubscribes; its `ready` promise settles once the node has subscribed.
   */
  subscribe(topic, handler) {
    checkTopic(topic);
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    let entry = this.#topics.get(topic);
    if (!entry) {
      const created = { handlers: new Set(), ready: null };
      entry = created;
      this.#topics.set(topic, created);
      created.ready = this.#channel.request('subscribe', { topic }).catch((e) => {
        // Refused (too many topics, busy, a bad name): nothing stays behind, so a later
        // subscribe asks the node again instead of waiting on a subscription that never was.
        if (this.#topics.get(topic) === created) this.#topics.delete(topic);
        throw e;
      });
    }
    entry.handlers.add(handler);
    const unsubscribe = () => {
      const current = this.#topics.get(topic);
      if (!current || !current.handlers.delete(handler) || current.handlers.size > 0) return Promise.resolve();
      this.#topics.delete(topic);
      return this.#channel.request('unsubscribe', { topic });
    };
    // Every handler of a topic waits on the same subscription, the first one's included.
    unsubscribe.ready = entry.ready;
    return unsubscribe;
  }

  /** Listens for `peer:join`, `peer:leave`, `status` or `message`. Returns an off function. */
  on(event, handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(handler);
    return () => this.#listeners.get(event)?.delete(handler);
  }

  /** Detaches this tab and stops the workers it lent. The shared node keeps running for the
   *  origin's other tabs. */
  close() {
    // Once: a second call (while the first is under way, or after) gets the same promise.
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close() {
    if (this.#channel.closed) return;
    for (const lent of [this.executors, this.gpu]) lent?.then((x) => x?.close?.(), () => {});
    // A worker that stopped answering does not keep close() pending: the handle goes anyway.
    let timer;
    const gone = new Promise((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)));
    try {
      // Writes already sent get their durable answer first (a detach would drop it).
      await Promise.race([Promise.allSettled([...this.#channel.writes]), gone]);
      await Promise.race([this.#channel.request('detach').catch(() => {}), gone]);
    } finally {
      clearTimeout(timer);
      this.#channel.fail(new PeerComputeError('CLOSED', 'this node handle was closed'));
      this.#channel.port.close();
      this.#lock.release();
      this.#forgetPagehide();
    }
  }
}

function safeCall(handler, value) {
  try {
    handler(value);
  } catch (e) {
    console.error('PeerCompute handler threw:', e);
  }
}

export const PeerCompute = {
  /**
   * Connects this tab to the origin's shared node, which joins the network through a relay.
   * Resolves once the node holds a relay reservation (other nodes can reach it).
   *
   * @param {object} [options]
   * @param {string|string[]} [options.relay] relay multiaddr(s) ending in /p2p/<id>; default:
   *   the relays listed at /peercompute.json of this origin
   * @param {string|URL} [options.worker] URL of the PeerCompute worker script
   * @param {number} [options.timeoutMs=10000] how long to wait for a relay; the node keeps
   *   retrying in the background after a timeout
   * @param {boolean} [options.waitForRelay=true] `false`: resolve as soon as the worker is
   *   attached, without a relay (offline use). Documents load from IndexedDB and writes are
   *   durable locally; the node dials the relays in the background and syncs when one answers.
   *   A failed bootstrap (`/peercompute.json` unreachable) is then not an error.
   * @param {string} [options.rootKey] the network's root public key (hex); default: `rootKey`
   *   of /peercompute.json. Code from peers runs only when signed by it.
   * @param {boolean} [options.compute=true] `false`: this tab lends the node no workers.
   * @param {boolean} [options.gpu=true] `false`: this tab lends the node no GPU worker.
   * @param {number} [options.cpuWorkers] size of this tab's CPU worker pool (default:
   *   hardwareConcurrency − 1, 1 to 4; at most 64).
   */
  async connect(options = {}) {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > 120_000) {
      throw new PeerComputeError('BAD_REQUEST', 'timeoutMs must be a number in (0, 120000]');
    }
    const pool = options.cpuWorkers;
    if (pool !== undefined && !(Number.isInteger(pool) && pool >= 1 && pool <= MAX_CPU_WORKERS)) {
      throw new PeerComputeError('BAD_REQUEST', `cpuWorkers must be an integer 1 to ${MAX_CPU_WORKERS}`);
    }
    let relays = null;
    if (options.relay !== undefined) {
      relays = Array.isArray(options.relay) ? options.relay : [options.relay];
      if (!relays.every((r) => typeof r === 'string')) {
        throw new PeerComputeError('INVALID_RELAY_ADDR', 'relay must be a multiaddr string or an array of them');
      }
    }
    if (typeof SharedWorker === 'undefined') {
      throw new PeerComputeError('NO_SHARED_WORKER', 'this browser has no SharedWorker');
    }
    const wait = options.waitForRelay ?? true;
    if (typeof wait !== 'boolean') {
      throw new PeerComputeError('BAD_REQUEST', 'waitForRelay must be a boolean');
    }
    // Every option is checked by now: past this point the worker knows this tab, and each
    // failure below detaches it again.
    // Start the worker first: its wasm compiles while the bootstrap list is fetched.
    const workerUrl = options.worker ?? new URL('../sw/worker.js', import.meta.url);
    let worker;
    try {
      worker = new SharedWorker(workerUrl, { type: 'module', name: 'peercompute' });
    } catch (e) {
      // A URL of another origin, or one the page's CSP forbids.
      throw new PeerComputeError('WORKER_START_FAILED', `the worker at ${workerUrl} could not start: ${e.message}`);
    }
    let node = null;
    const channel = new Channel(worker.port, (msg) => node?._dispatch(msg));
    worker.onerror = () =>
      channel.fail(new PeerComputeError('WORKER_START_FAILED', `the worker at ${workerUrl} failed to load`));
    let bootstrap =
      relays === null ? bootstrapConfig(timeoutMs) : Promise.resolve({ relays, rootKey: options.rootKey });
    // Offline use: no relay list is no reason to fail; the node works locally.
    if (!wait) bootstrap = bootstrap.catch(() => ({ relays: [] }));
    bootstrap.catch(() => {}); // awaited below; this only silences an early rejection
    // The worker enforces timeoutMs; these guards only catch a worker that never answers.
    // One per request, each started when its request is sent: the bootstrap fetch (bounded
    // by timeoutMs itself) does not eat into the connect's time.
    const guardTimers = [];
    const answered = (request) =>
      Promise.race([
        request,
        new Promise((_, reject) => {
          const fail = () => reject(new PeerComputeError('WORKER_UNAVAILABLE', 'the PeerCompute worker did not answer'));
          guardTimers.push(setTimeout(fail, timeoutMs + 5000));
        }),
      ]);
    let lock = { name: null, release: () => {} };
    let forgetPagehide = () => {};
    try {
      lock = await holdTabLock();
      if (lock.name === null) {
        // No Web Locks (a page served over plain http on a LAN address): the worker cannot
        // learn that this tab died, so the tab says goodbye when it is unloaded (a crash
        // still goes unnoticed). A page kept in the back-forward cache is not gone.
        const onPagehide = (event) => {
          if (event.persisted) return;
          if (node) node.close();
          else channel.port.postMessage({ v: PROTOCOL_VERSION, id: 0, op: 'detach' });
        };
        addEventListener('pagehide', onPagehide);
        forgetPagehide = () => removeEventListener('pagehide', onPagehide);
      }
      const [attached, config] = await Promise.all([answered(channel.request('attach', { lock: lock.name })), bootstrap]);
      node = new PeerComputeNode(channel, lock, attached.peerId, forgetPagehide);
      const rootKey = options.rootKey ?? config.rootKey;
      await answered(
        channel.request('connect', { relays: config.relays, timeoutMs, wait, ...(rootKey ? { rootKey } : {}) }),
      );
      // This tab lends the node CPU workers, in the background (connect does not wait).
      node.executors =
        options.compute === false || typeof Worker === 'undefined'
          ? Promise.resolve({ slots: 0, score: 0 })
          : startCpuPool((op, fields, transfer) => channel.request(op, fields, transfer), {
              size: options.cpuWorkers,
            });
      node.executors.catch((e) => console.warn('PeerCompute: CPU workers unavailable:', e.message));
      // And a GPU worker, where the browser has WebGPU.
      node.gpu =
        options.compute === false || options.gpu === false || typeof Worker === 'undefined'
          ? Promise.resolve(null)
          : startGpuWorker((op, fields, transfer) => channel.request(op, fields, transfer));
      node.gpu.catch((e) => console.warn('PeerCompute: GPU worker unavailable:', e.message));
      return node;
    } catch (e) {
      // The node keeps retrying for other tabs; this tab lets go of its handle.
      channel.fail(e);
      channel.port.postMessage({ v: PROTOCOL_VERSION, id: 0, op: 'detach' });
      channel.port.close();
      lock.release();
      forgetPagehide();
      // Whatever failed (Web Locks refused, say), the caller gets a code.
      throw e instanceof PeerComputeError ? e : new PeerComputeError('INTERNAL', String(e?.message ?? e));
    } finally {
      guardTimers.forEach(clearTimeout);
    }
  },
};

export default PeerCompute;
