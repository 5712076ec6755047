/** Stable error codes carried by `PeerComputeError.code`. */
export type ErrorCode =
  | 'BAD_REQUEST'
  | 'UNSUPPORTED_VERSION'
  | 'UNKNOWN_OP'
  | 'INVALID_RELAY_ADDR'
  | 'CONNECT_TIMEOUT'
  | 'INVALID_TOPIC'
  | 'PAYLOAD_TOO_LARGE'
  | 'INVALID_JSON'
  | 'BUSY'
  | 'TOO_MANY_SUBSCRIPTIONS'
  | 'STATE_INVALID_DOC_NAME'
  | 'STATE_INVALID_PATH'
  | 'STATE_INVALID_VALUE'
  | 'STATE_INVALID_UPDATE'
  | 'STATE_NOT_OPEN'
  | 'STATE_TOO_MANY_DOCS'
  | 'STATE_DOC_TOO_LARGE'
  | 'STATE_UNKNOWN_VERSION'
  | 'STATE_VERSION_INCOMPLETE'
  | 'STATE_MISSING_HISTORY'
  | 'STATE_TOO_MANY_VERSIONS'
  | 'STATE_PERSIST_FAILED'
  | 'PRESENCE_INVALID_VALUE'
  | 'TASK_INVALID'
  | 'TASK_UNKNOWN_KERNEL'
  | 'CODE_UNSIGNED'
  | 'CODE_SIGNATURE_INVALID'
  | 'TASK_UNSUPPORTED'
  | 'TASK_CHUNK_FAILED'
  | 'TASK_FAILED'
  | 'TASK_UNVERIFIABLE'
  | 'TASK_TIMEOUT'
  | 'TASK_CANCELLED'
  | 'TASK_DUPLICATE_ID'
  | 'TASK_UNKNOWN'
  | 'INTERNAL'
  | 'BOOTSTRAP_FAILED'
  | 'NO_SHARED_WORKER'
  | 'WORKER_START_FAILED'
  | 'WORKER_UNAVAILABLE'
  | 'CLOSED';

export class PeerComputeError extends Error {
  readonly code: ErrorCode;
}

export interface ConnectOptions {
  /** Relay multiaddr(s) ending in `/p2p/<relay peer id>`; default: this origin's `/peercompute.json`. */
  relay?: string | string[];
  /** URL of the PeerCompute worker script; default: `../sw/worker.js` next to the SDK. */
  worker?: string | URL;
  /** How long to wait for a relay, in ms (default 10000, at most 120000). */
  timeoutMs?: number;
  /**
   * `false`: resolve once the worker is attached, without waiting for a relay (offline use).
   * Documents load from IndexedDB, writes are durable locally, and the node syncs once a relay
   * answers. Default `true`.
   */
  waitForRelay?: boolean;
  /** The network's root public key (hex); default: `rootKey` of `/peercompute.json`. */
  rootKey?: string;
  /** `false`: this tab lends the node no workers (CPU or GPU). Default `true`. */
  compute?: boolean;
  /** `false`: this tab lends the node no GPU worker. Default `true` (where WebGPU exists). */
  gpu?: boolean;
  /** Size of this tab's CPU worker pool, 1 to 64 (default hardwareConcurrency − 1, 1 to 4). */
  cpuWorkers?: number;
}

/** What a node computes for peers. */
export interface Capabilities {
  /** CPU chunks it runs at once. */
  cpu: number;
  gpu: boolean;
  /** Measured speed (built-in mandelbrot, Mcells/s). */
  score: number;
  /** 0 (idle) to 1 (busy). */
  load: number;
}

export type ElementType = 'f32' | 'u32' | 'i32';
/** A scalar parameter: a non-negative integer is u32, a negative one i32, anything else f32. */
export type ParamValue = number | { f32: number } | { u32: number } | { i32: number };

export interface TaskSpec {
  /** Unique among this node's running tasks; default: a random id. */
  id?: string;
  /** `cpu`: a built-in kernel or a wasm kernel; `webgpu`: a WGSL shader. */
  type: 'cpu' | 'webgpu';
  /** Built-in kernel (`cpu`): `mandelbrot`, `matmul`, `square`, `sum`. */
  kernel?: string;
  /** A wasm kernel module's bytes (`cpu`; ABI v1, see README "Wasm kernels"). */
  wasm?: Uint8Array | ArrayBuffer;
  /** WGSL source (`webgpu`). */
  shader?: string;
  /** Entry point: of the shader (default `main`) or the wasm kernel (default `run`). */
  entry?: string;
  /** Invocations per workgroup (`webgpu`); read from the shader's `@workgroup_size` when absent. */
  workgroupSize?: number[];
  /** Grid cells one workgroup covers (`webgpu`), default `workgroupSize`: set it when each
   *  invocation computes several cells (the built-in matmul shader: `[128, 128]`). */
  tile?: number[];
  /** Hex Ed25519 signature of the shader or wasm module by the root key (`relay-server sign`):
   *  lets it travel to other peers. */
  signature?: string;
  /** Parameters and inputs, seed style: `data: { params, inputs }`. */
  data?: { params?: Record<string, ParamValue>; inputs?: (TaskInput | Float32Array | Uint32Array | Int32Array)[] };
  params?: Record<string, ParamValue>;
  inputs?: (TaskInput | Float32Array | Uint32Array | Int32Array)[];
  /** Default: a map over the first input (its type and element count). */
  output?: { binding?: number; type: ElementType; length: number };
  /** 1 to 3 dimensions; default `[output.length]`. */
  grid?: number[];
  /** Axis (default the outermost longer than 1) and chunk count (default `auto`). */
  split?: { axis?: number; chunks?: number | 'auto' };
  reduce?: 'concat' | 'sum' | 'min' | 'max';
  /** >1: each chunk runs on that many peers and results are compared (at most 5). */
  redundancy?: number;
  /** Run on this node only. */
  local?: boolean;
  timeoutMs?: number;
  chunkTimeoutMs?: number;
  /** Idle workers duplicate the chunk running longest elsewhere; first result wins (default true). */
  workStealing?: boolean;
}

export interface TaskInput {
  /** Storage binding (default 2, 3, …). */
  binding?: number;
  /** Default: from the typed array. */
  type?: ElementType;
  data: Float32Array | Uint32Array | Int32Array | ArrayBuffer;
}

export interface ExcludedWorker {
  peerId: string;
  task: string;
  chunk: number;
}

export interface TaskReport {
  result: Float32Array | Uint32Array | Int32Array;
  type: ElementType;
  chunks: number;
  /** Peer ids (this node's included) whose results were accepted. */
  workers: string[];
  /** Workers whose results lost a vote, excluded from the task. */
  excluded: ExcludedWorker[];
  elapsedMs: number;
}

/** Also a thenable of its result: `await node.submitTask(spec)` gives the typed array. */
export interface Task extends PromiseLike<Float32Array | Uint32Array | Int32Array> {
  readonly id: string;
  readonly result: Promise<Float32Array | Uint32Array | Int32Array>;
  readonly done: Promise<TaskReport>;
  on(event: 'progress', handler: (p: { done: number; total: number; peers: number }) => void): () => void;
  cancel(): Promise<void>;
}

/** The GPU adapter an executor runs on. */
export interface GpuAdapter {
  name: string;
  backend: string;
  /** A software adapter (SwiftShader, lavapipe): correct but slow. */
  fallback: boolean;
}

/** What `worker-gpu` reports of its adapter. */
export interface GpuAdapterInfo extends GpuAdapter {
  maxStorageBufferBindingSize: number;
  maxWorkgroupsPerDimension: number;
}

export interface ComputeStatus {
  cpuSlots: number;
  gpu: boolean;
  gpuAdapter: GpuAdapter | null;
  score: number;
  rootKey: string | null;
  tasks: number;
  runningChunks: number;
  chunksServed: number;
  chunksRefused: number;
  excluded: ExcludedWorker[];
}

/** Every node's presence state, this node's included. */
export type PresencePeers = { [peerId: string]: Json };

/** `node.presence`: one small JSON state per node, seen by every peer, gone when it leaves. */
export interface Presence {
  /** Sets this node's state (plain JSON, at most 4 KiB as JSON text); `null` clears it. */
  set(state: Json | null): Promise<void>;
  /** Clears this node's state. */
  clear(): Promise<void>;
  /** Every node's state, this one's included. */
  get(): Promise<PresencePeers>;
  /** Called when a state is set, changes, is cleared, or expires (30 s of silence, or gone). */
  on(event: 'change', handler: (peers: PresencePeers) => void): () => void;
}

export interface RelayStatus {
  addr: string;
  connected: boolean;
  reserved: boolean;
  reconnects: number;
}

export interface NodeStatus {
  peerId: string;
  online: boolean;
  relays: RelayStatus[];
  connectedPeers: number;
  knownPeers: number;
  connections: number;
  topics: string[];
  tabs: number;
  uptimeMs: number;
  compute: ComputeStatus;
}

export interface PeerInfo {
  peerId: string;
  connected: boolean;
  rttMs: number | null;
  compute: Capabilities | null;
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface Message<T = Json | Uint8Array> {
  topic: string;
  /** Peer id of the publishing node. */
  from: string;
  data: T;
  /** Published by another tab of this same node. */
  local: boolean;
}

export interface PublishReceipt {
  /** Network peers subscribed to the topic when it was sent. */
  peers: number;
  /** Other tabs of this node it was delivered to. */
  localTabs: number;
}

export interface Unsubscribe {
  (): Promise<void>;
  /** Settles once the node has subscribed (rejects with the error if it could not). */
  ready: Promise<void>;
}

/** A path: `'players.alice'` or `['players', 'alice']` (keys may then contain dots). */
export type StatePath = string | string[];

export interface StateChange {
  /** `[]`: the whole tree, replaced (a peer's update filling an empty document with more than 64 entries, or adding at least 1024 items and at least as many as the document had entries). */
  path: string[];
  /** The new value (absent when deleted). */
  value?: Json;
  deleted: boolean;
}

export interface Version {
  id: string;
  label: string;
  /** Milliseconds since the Unix epoch. */
  time: number;
}

export type StateOp = { set: StatePath; value: Json } | { delete: StatePath };

/** A shared document, as this tab sees it. */
export interface SharedState {
  readonly name: string;
  /** Settles once the document is open and this tab's copy is filled. */
  readonly ready: Promise<SharedState>;
  /** A copy of the value at `path` (the whole tree without one); `undefined` if absent. */
  get(path?: StatePath): Json | undefined;
  /** Resolves once the write is durable on this device (IndexedDB). */
  set(path: StatePath, value: Json): Promise<void>;
  delete(path: StatePath): Promise<void>;
  /** One transaction. */
  update(ops: StateOp[]): Promise<void>;
  /** Called after each transaction touching `path` (at, below or above it). */
  observe(path: StatePath | undefined, handler: (e: { changes: StateChange[]; local: boolean }) => void): () => void;
  snapshot(label?: string): Promise<Version>;
  versions(): Promise<Version[]>;
  /** Forgets a version for every peer (a document keeps at most 256); resolves once durable. */
  deleteVersion(version: string | Version): Promise<void>;
  at(version: string | Version): { get(path?: StatePath): Promise<Json | undefined> };
  /** A Yjs v1 update of the whole document. */
  exportUpdate(): Promise<Uint8Array>;
  importUpdate(update: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

export interface PeerComputeNode {
  readonly peerId: string;
  /** This node's presence and every peer's. */
  readonly presence: Presence;
  /** The shared document `name` (1–128 bytes, no control characters). */
  state(name: string): SharedState;
  /** Runs a compute task across this node's workers and its peers'. */
  submitTask(spec: TaskSpec): Task;
  /** Settles once this tab's CPU workers are lent to the node. */
  readonly executors: Promise<{ slots: number; score: number }>;
  /** Settles once this tab's GPU worker is lent: its adapter, or `null` without WebGPU. */
  readonly gpu: Promise<GpuAdapterInfo | null>;
  getStatus(): Promise<NodeStatus>;
  peers(): Promise<PeerInfo[]>;
  ping(): Promise<{ pong: true }>;
  publish(topic: string, data: Json | Uint8Array): Promise<PublishReceipt>;
  subscribe(topic: string, handler: (message: Message) => void): Unsubscribe;
  on(event: 'peer:join' | 'peer:leave', handler: (e: { peerId: string }) => void): () => void;
  on(event: 'status', handler: (status: NodeStatus) => void): () => void;
  on(event: 'message', handler: (message: Message) => void): () => void;
  close(): Promise<void>;
}

export declare const PeerCompute: {
  connect(options?: ConnectOptions): Promise<PeerComputeNode>;
};

export default PeerCompute;
