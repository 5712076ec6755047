//! Native host of a [`Node`]: the counterpart of the browser's SharedWorker adapter, used by
//! native peers, integration tests and benchmarks.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use futures::channel::mpsc;
use libp2p::{identity::Keypair, PeerId};
use tokio::sync::mpsc as tokio_mpsc;

use crate::{
    compute::{
        kernels,
        task::{ChunkJob, TaskKind},
        wasm_native,
    },
    error::ErrorCode,
    limits::{MAX_RUNNING_CHUNKS, TAB_INPUT_QUEUE},
    node::{Input, Node, NodeConfig, Output},
    tab_protocol::{Event, GpuAdapter, ReplyValue, Request, RequestId, TabId},
    NodeError,
};

/// Depth of the output queue; the node never blocks on it, so a consumer that stops reading
/// loses events beyond this (and is told so in the log), never replies it is waiting for.
const OUTPUT_QUEUE: usize = 65_536;

/// Documents' stored records, in memory: the native stand-in for IndexedDB. Shared through an
/// `Arc` so a test can stop a node and start another on the same storage.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore(Arc<Mutex<HashMap<String, Vec<Vec<u8>>>>>);

impl MemoryStore {
    /// Records stored for `doc`.
    pub fn records(&self, doc: &str) -> Vec<Vec<u8>> {
        self.0
            .lock()
            .map(|m| m.get(doc).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Vec<Vec<u8>>>) -> R) -> Option<R> {
        self.0.lock().ok().map(|mut m| f(&mut m))
    }
}

/// The native executors.
#[derive(Debug, Clone)]
pub struct ComputeConfig {
    /// Threads running CPU chunks (0: the node takes no chunks).
    pub cpu_threads: u32,
    /// Run WGSL chunks on a GPU (wgpu: Vulkan, lavapipe where there is no GPU). Starting the
    /// node fails when no adapter opens (build with the core crate's `gpu` feature).
    pub gpu: bool,
    /// Test-only fault switch: flip a bit in every chunk result this node produces, so tests
    /// can check that redundancy catches a peer returning wrong results.
    pub corrupt_results: bool,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ComputeConfig {
            cpu_threads: cores.clamp(1, 4) as u32,
            gpu: false,
            corrupt_results: false,
        }
    }
}

type Jobs = Arc<Mutex<std::sync::mpsc::Receiver<(u64, ChunkJob)>>>;
type Waiting = Arc<Mutex<HashSet<u64>>>;

/// The native executors: CPU chunks on a fixed pool of threads, WGSL chunks on one GPU
/// thread. `waiting` holds the jobs queued and not started: an abort takes a job out, and
/// an executor skips a job that is no longer in it.
struct NativeExecutors {
    cpu: JobQueue,
    gpu: Option<JobQueue>,
    gpu_adapter: Option<GpuAdapter>,
    waiting: Waiting,
}

type GpuQueue = (JobQueue, GpuAdapter);

/// A bounded job queue: an aborted job leaves `waiting` at once but its bytes stay queued
/// until a thread skips it, so a peer that runs and cancels in a loop meets `BUSY` here
/// instead of growing the queue.
type JobQueue = std::sync::mpsc::SyncSender<(u64, ChunkJob)>;

fn job_queue() -> (JobQueue, Jobs) {
    let (tx, rx) = std::sync::mpsc::sync_channel(MAX_RUNNING_CHUNKS);
    (tx, Arc::new(Mutex::new(rx)))
}

/// Takes the next job still wanted, runs it and reports it; false once the node stopped.
fn serve_one(
    rx: &Jobs,
    waiting: &Waiting,
    corrupt: bool,
    done: &mut mpsc::Sender<Input>,
    run: &mut impl FnMut(&ChunkJob) -> Result<Vec<u8>, NodeError>,
) -> bool {
    let next = rx.lock().ok().and_then(|r| r.recv().ok());
    let Some((job, chunk)) = next else {
        return false;
    };
    if !waiting.lock().is_ok_and(|mut w| w.remove(&job)) {
        return true; // aborted while queued
    }
    let mut result = run(&chunk);
    if corrupt {
        if let Ok(bytes) = &mut result {
            if let Some(b) = bytes.first_mut() {
                *b ^= 1;
            }
        }
    }
    use futures::SinkExt;
    futures::executor::block_on(done.send(Input::ChunkDone { job, result })).is_ok()
}

impl NativeExecutors {
    /// Starts the threads; fails when a GPU was asked for and none opens.
    fn start(config: &ComputeConfig, done: mpsc::Sender<Input>) -> Result<Self, NodeError> {
        let waiting: Waiting = Arc::new(Mutex::new(HashSet::new()));
        let (cpu, rx) = job_queue();
        for i in 0..config.cpu_threads {
            let (rx, waiting, mut done) = (rx.clone(), waiting.clone(), done.clone());
            let corrupt = config.corrupt_results;
            let spawned = std::thread::Builder::new()
                .name(format!("peercompute-cpu-{i}"))
                .spawn(move || {
                    while serve_one(&rx, &waiting, corrupt, &mut done, &mut wasm_native::run_cpu) {}
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start a CPU worker thread: {e}");
            }
        }
        let (gpu, gpu_adapter) = if config.gpu {
            let (queue, adapter) = Self::start_gpu(config, waiting.clone(), done)?;
            (Some(queue), Some(adapter))
        } else {
            (None, None)
        };
        Ok(NativeExecutors {
            cpu,
            gpu,
            gpu_adapter,
            waiting,
        })
    }

    #[cfg(feature = "gpu")]
    fn start_gpu(
        config: &ComputeConfig,
        waiting: Waiting,
        mut done: mpsc::Sender<Input>,
    ) -> Result<GpuQueue, NodeError> {
        use crate::compute::gpu::GpuExecutor;
        let (tx, rx) = job_queue();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let corrupt = config.corrupt_results;
        std::thread::Builder::new()
            .name("peercompute-gpu".into())
            .spawn(move || {
                let gpu = match futures::executor::block_on(GpuExecutor::new()) {
                    Ok(gpu) => {
                        let _ = ready_tx.send(Ok(gpu.info().adapter.clone()));
                        gpu
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut run = |job: &ChunkJob| futures::executor::block_on(gpu.run(job));
                while serve_one(&rx, &waiting, corrupt, &mut done, &mut run) {}
            })
            .map_err(|e| NodeError::new(ErrorCode::Internal, e.to_string()))?;
        let adapter = ready_rx
            .recv()
            .map_err(|_| NodeError::new(ErrorCode::Internal, "the GPU thread ended"))??;
        Ok((tx, adapter))
    }

    #[cfg(not(feature = "gpu"))]
    fn start_gpu(
        _: &ComputeConfig,
        _: Waiting,
        _: mpsc::Sender<Input>,
    ) -> Result<GpuQueue, NodeError> {
        Err(NodeError::new(
            ErrorCode::TaskUnsupported,
            "built without GPU support (the core crate's `gpu` feature)",
        ))
    }

    fn run(&self, job: u64, chunk: ChunkJob) -> Result<(), NodeError> {
        let queue = match chunk.code.kind() {
            TaskKind::Cpu => Some(&self.cpu),
            TaskKind::Webgpu => self.gpu.as_ref(),
        };
        let Some(queue) = queue else {
            return Err(NodeError::new(
                ErrorCode::TaskUnsupported,
                "this node has no GPU executor",
            ));
        };
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(job);
        }
        queue.try_send((job, chunk)).map_err(|e| {
            self.abort(job);
            match e {
                std::sync::mpsc::TrySendError::Full(_) => {
                    NodeError::new(ErrorCode::Busy, "the executors' queue is full")
                }
                std::sync::mpsc::TrySendError::Disconnected(_) => {
                    NodeError::new(ErrorCode::Internal, "no executor thread")
                }
            }
        })
    }

    fn abort(&self, job: u64) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&job);
        }
    }
}

/// A node running on its own thread (documents are not `Send`), driven like a single tab.
pub struct NativeNode {
    inputs: mpsc::Sender<Input>,
    outputs: tokio_mpsc::Receiver<Output>,
    events: VecDeque<Event>,
    replies: HashMap<RequestId, Result<ReplyValue, NodeError>>,
    peer_id: PeerId,
    tab: TabId,
    next_id: RequestId,
}

impl NativeNode {
    /// Builds the node and starts its loop, with fresh in-memory storage.
    pub async fn spawn(keypair: Keypair, config: NodeConfig) -> Result<Self, NodeError> {
        Self::spawn_with_store(keypair, config, MemoryStore::default()).await
    }

    /// Builds the node and starts its loop on `store`, with the default executors.
    pub async fn spawn_with_store(
        keypair: Keypair,
        config: NodeConfig,
        store: MemoryStore,
    ) -> Result<Self, NodeError> {
        Self::spawn_with(keypair, config, store, ComputeConfig::default()).await
    }

    /// Builds the node and starts its loop on `store`, with `compute` executors.
    pub async fn spawn_with(
        keypair: Keypair,
        config: NodeConfig,
        store: MemoryStore,
        compute: ComputeConfig,
    ) -> Result<Self, NodeError> {
        let (tx, rx) = mpsc::channel(TAB_INPUT_QUEUE);
        let (out_tx, out_rx) = tokio_mpsc::channel(OUTPUT_QUEUE);
        let (ready_tx, ready_rx) = futures::channel::oneshot::channel();
        let loopback = tx.clone();
        let pool = NativeExecutors::start(&compute, tx.clone())?;
        let gpu_adapter = pool.gpu_adapter.clone();
        std::thread::Builder::new()
            .name("peercompute-node".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ =
                            ready_tx.send(Err(NodeError::new(ErrorCode::Internal, e.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let node = match Node::native(keypair, config).await {
                        Ok(node) => node,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(node.peer_id()));
                    let mut loopback = loopback;
                    node.run(rx, move |output| {
                        host_output(&store, &pool, &mut loopback, &out_tx, output)
                    })
                    .await;
                });
            })
            .map_err(|e| NodeError::new(ErrorCode::Internal, e.to_string()))?;
        let peer_id = ready_rx
            .await
            .map_err(|_| NodeError::new(ErrorCode::Internal, "node thread ended"))??;
        let mut this = NativeNode {
            inputs: tx,
            outputs: out_rx,
            events: VecDeque::new(),
            replies: HashMap::new(),
            peer_id,
            tab: 1,
            next_id: 1,
        };
        this.send(Input::Attach(this.tab)).await?;
        if compute.cpu_threads > 0 || compute.gpu {
            this.send(Input::Executors {
                cpu_slots: compute.cpu_threads,
                gpu: gpu_adapter,
                score: kernels::benchmark_score(),
            })
            .await?;
        }
        Ok(this)
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn send(&mut self, input: Input) -> Result<(), NodeError> {
        use futures::SinkExt;
        self.inputs
            .send(input)
            .await
            .map_err(|_| NodeError::new(ErrorCode::Internal, "node stopped"))
    }

    /// Sends a request and waits for its reply, queueing events that arrive meanwhile.
    pub async fn request(&mut self, request: Request) -> Result<ReplyValue, NodeError> {
        let id = self.send_request(request).await?;
        self.reply(id).await
    }

    /// Sends a request without waiting for its reply; [`NativeNode::reply`] waits for it.
    pub async fn send_request(&mut self, request: Request) -> Result<RequestId, NodeError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.send(Input::Request {
            tab: self.tab,
            id,
            request,
        })
        .await?;
        Ok(id)
    }

    /// Waits for the reply to request `id`, queueing events and other replies that arrive
    /// meanwhile.
    pub async fn reply(&mut self, id: RequestId) -> Result<ReplyValue, NodeError> {
        if let Some(result) = self.replies.remove(&id) {
            return result;
        }
        loop {
            match self.outputs.recv().await {
                Some(Output::Reply {
                    id: got, result, ..
                }) => {
                    if got == id {
                        return result;
                    }
                    self.replies.insert(got, result);
                }
                Some(Output::Event { event, .. }) => self.events.push_back(event),
                Some(_) => {}
                None => return Err(NodeError::new(ErrorCode::Internal, "node stopped")),
            }
        }
    }

    /// The next event (queued first, then new ones).
    pub async fn next_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        loop {
            if let Output::Event { event, .. } = self.outputs.recv().await? {
                return Some(event);
            }
        }
    }

    /// Stops the node: its loop ends once its input queue closes.
    pub fn stop(mut self) {
        self.inputs.close_channel();
    }
}

/// Storage for the node's documents, and delivery of everything else to the tab's queue.
fn host_output(
    store: &MemoryStore,
    pool: &NativeExecutors,
    loopback: &mut mpsc::Sender<Input>,
    out: &tokio_mpsc::Sender<Output>,
    output: Output,
) {
    match output {
        Output::LoadDoc { doc } => {
            let records = store.records(&doc);
            if loopback
                .try_send(Input::DocLoaded {
                    doc,
                    records,
                    error: None,
                })
                .is_err()
            {
                tracing::warn!("native node input queue full; a document load is lost");
            }
        }
        Output::Persist { doc, update, then } => {
            store.with(|m| m.entry(doc).or_default().push(update));
            for o in then {
                host_output(store, pool, loopback, out, o);
            }
        }
        Output::Compact { doc, state } => {
            store.with(|m| m.insert(doc, vec![state]));
        }
        Output::RunChunk { job, chunk } => {
            if let Err(e) = pool.run(job, chunk) {
                let _ = loopback.try_send(Input::ChunkDone {
                    job,
                    result: Err(e),
                });
            }
        }
        Output::AbortChunk { job } => pool.abort(job),
        other => {
            if out.try_send(other).is_err() {
                tracing::warn!("native node output queue full; dropping an output");
            }
        }
    }
}
