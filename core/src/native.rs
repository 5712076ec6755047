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
    compute::{kernels, task::ChunkJob},
    error::ErrorCode,
    limits::TAB_INPUT_QUEUE,
    node::{Input, Node, NodeConfig, Output},
    tab_protocol::{Event, ReplyValue, Request, RequestId, TabId},
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
    /// Test-only fault switch: flip a bit in every chunk result this node produces, so tests
    /// can check that redundancy catches a peer returning wrong results.
    pub corrupt_results: bool,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ComputeConfig {
            cpu_threads: cores.clamp(1, 4) as u32,
            corrupt_results: false,
        }
    }
}

type Jobs = Arc<Mutex<std::sync::mpsc::Receiver<(u64, ChunkJob)>>>;

/// CPU chunks on a fixed pool of threads. `waiting` holds the jobs queued and not started:
/// an abort takes a job out, and a thread skips a job that is no longer in it.
struct CpuPool {
    queue: std::sync::mpsc::Sender<(u64, ChunkJob)>,
    waiting: Arc<Mutex<HashSet<u64>>>,
}

impl CpuPool {
    fn start(config: &ComputeConfig, done: mpsc::Sender<Input>) -> Self {
        let (queue, rx) = std::sync::mpsc::channel::<(u64, ChunkJob)>();
        let rx: Jobs = Arc::new(Mutex::new(rx));
        let waiting = Arc::new(Mutex::new(HashSet::new()));
        for i in 0..config.cpu_threads {
            let (rx, waiting, mut done) = (rx.clone(), waiting.clone(), done.clone());
            let corrupt = config.corrupt_results;
            let spawned = std::thread::Builder::new()
                .name(format!("peercompute-cpu-{i}"))
                .spawn(move || loop {
                    let next = rx.lock().ok().and_then(|r| r.recv().ok());
                    let Some((job, chunk)) = next else { return };
                    if !waiting.lock().is_ok_and(|mut w| w.remove(&job)) {
                        continue; // aborted while queued
                    }
                    let mut result = kernels::run(&chunk);
                    if corrupt {
                        if let Ok(bytes) = &mut result {
                            if let Some(b) = bytes.first_mut() {
                                *b ^= 1;
                            }
                        }
                    }
                    use futures::SinkExt;
                    if futures::executor::block_on(done.send(Input::ChunkDone { job, result }))
                        .is_err()
                    {
                        return; // the node stopped
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start a CPU worker thread: {e}");
            }
        }
        CpuPool { queue, waiting }
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
        let pool = CpuPool::start(&compute, tx.clone());
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
        if compute.cpu_threads > 0 {
            this.send(Input::Executors {
                cpu_slots: compute.cpu_threads,
                gpu: false,
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
    pool: &CpuPool,
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
            if let Ok(mut w) = pool.waiting.lock() {
                w.insert(job);
            }
            if let Err(e) = pool.queue.send((job, chunk)) {
                let failed = Input::ChunkDone {
                    job: e.0 .0,
                    result: Err(NodeError::new(ErrorCode::Internal, "no CPU worker thread")),
                };
                let _ = loopback.try_send(failed);
            }
        }
        Output::AbortChunk { job } => {
            if let Ok(mut w) = pool.waiting.lock() {
                w.remove(&job);
            }
        }
        other => {
            if out.try_send(other).is_err() {
                tracing::warn!("native node output queue full; dropping an output");
            }
        }
    }
}
