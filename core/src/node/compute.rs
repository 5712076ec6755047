//! The node's compute side: tasks its tabs submit (split, scheduled over this node's
//! executors and its peers', verified, reduced) and chunks its peers send it.
//!
//! The host owns the executors (the browser's worker pools, a native thread pool): the node
//! asks it to run a chunk with [`Output::RunChunk`] and hears back with [`Input::ChunkDone`].
//! Chunks travel between peers over [`COMPUTE_PROTOCOL`]; a chunk from a peer runs only when
//! it is a built-in kernel or code signed by the network's root key.

use std::collections::{BTreeSet, HashMap, VecDeque};

use libp2p::{
    request_response::{self, OutboundRequestId, ResponseChannel},
    PeerId,
};
use tracing::{debug, info, warn};
use web_time::Instant;

use super::{Node, Output};
use crate::{
    compute::{
        kernels::KERNELS,
        protocol::{ComputeRequest, ComputeResponse},
        reduce::{reduce, ElementType, Reduce},
        scheduler::{Action, Scheduler, TaskConfig, TaskError, Worker},
        signing::RootKey,
        task::{ChunkJob, Code, TaskKind, TaskRequest},
    },
    discovery::Capabilities,
    error::ErrorCode,
    limits::{MAX_COMPUTE_STREAMS, MAX_RUNNING_CHUNKS, MAX_RUNNING_TASKS},
    tab_protocol::{
        ComputeStatus, Event, ExcludedWorker, GpuAdapter, ReplyValue, RequestId, TabId, TaskResult,
    },
    NodeError,
};

/// Failures one chunk may have before its task fails.
const MAX_FAILURES_PER_CHUNK: u32 = 4;
/// Excluded workers remembered for the status.
const MAX_EXCLUDED_SHOWN: usize = 32;
/// Chunks this node has running on one peer at once, over all its tasks. A connection's
/// [`MAX_COMPUTE_STREAMS`] streams serve both directions (our Runs, the peer's Runs) and the
/// Cancels; past that the stream is refused and the chunk would fail. So a peer's advertised
/// slots count up to this, and further chunks for it wait in [`NodeCompute::queued`].
const MAX_RUNS_PER_PEER: usize = (MAX_COMPUTE_STREAMS - 4) / 2;

/// What the host's executors can do.
#[derive(Debug, Clone, Default)]
pub(super) struct Executors {
    cpu_slots: u32,
    gpu: Option<GpuAdapter>,
    score: f64,
}

enum JobOwner {
    /// A chunk of one of this node's tasks.
    Local { nonce: u64, chunk: u32 },
    /// A peer's chunk; the answer goes back on `channel`.
    Remote {
        peer: PeerId,
        nonce: u64,
        chunk: u32,
        channel: ResponseChannel<ComputeResponse>,
    },
}

struct RunningTask {
    tab: TabId,
    request: RequestId,
    id: String,
    kind: TaskKind,
    travels: bool,
    reduce: Reduce,
    ty: ElementType,
    jobs: Vec<ChunkJob>,
    scheduler: Scheduler,
    started: Instant,
    deadline: Instant,
    reported: (u32, usize),
    contributors: BTreeSet<String>,
    /// The last refusal or failure a peer reported, to tell the submitter why.
    last_peer_error: Option<(PeerId, NodeError)>,
}

/// Compute state of a node.
#[derive(Default)]
pub(super) struct NodeCompute {
    executors: Executors,
    root_key: Option<RootKey>,
    next_job: u64,
    next_nonce: u64,
    jobs: HashMap<u64, JobOwner>,
    remote_jobs: HashMap<(PeerId, u64, u32), u64>,
    tasks: HashMap<u64, RunningTask>,
    outbound: HashMap<OutboundRequestId, (u64, u32, PeerId)>,
    /// Chunks assigned to a peer that already runs [`MAX_RUNS_PER_PEER`] of ours, in order;
    /// sent as its runs finish (the scheduler's chunk timeout covers the wait).
    queued: VecDeque<(u64, u32, PeerId)>,
    served: u64,
    refused: u64,
    excluded: VecDeque<ExcludedWorker>,
}

impl NodeCompute {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// What this node advertises, when it takes chunks at all.
    pub(super) fn capabilities(&self) -> Option<Capabilities> {
        let e = &self.executors;
        (e.cpu_slots > 0 || e.gpu.is_some()).then(|| Capabilities {
            cpu: e.cpu_slots,
            gpu: e.gpu.is_some(),
            score: e.score,
            load: self.load(),
        })
    }

    fn load(&self) -> f64 {
        let slots = self.executors.cpu_slots.max(1) as f64;
        (self.jobs.len() as f64 / slots).min(1.0)
    }

    /// Sets the root key, once; a different key later is refused.
    pub(super) fn set_root_key(&mut self, hex: &str) -> Result<(), NodeError> {
        let key = RootKey::from_hex(hex)?;
        match &self.root_key {
            Some(k) if *k != key => Err(NodeError::new(
                ErrorCode::BadRequest,
                format!("this node already trusts root key {}", k.to_hex()),
            )),
            _ => {
                self.root_key = Some(key);
                Ok(())
            }
        }
    }

    pub(super) fn status(&self) -> ComputeStatus {
        ComputeStatus {
            cpu_slots: self.executors.cpu_slots,
            gpu: self.executors.gpu.is_some(),
            gpu_adapter: self.executors.gpu.clone(),
            score: self.executors.score,
            root_key: self.root_key.as_ref().map(RootKey::to_hex),
            tasks: self.tasks.len(),
            running_chunks: self.jobs.len(),
            chunks_served: self.served,
            chunks_refused: self.refused,
            excluded: self.excluded.iter().cloned().collect(),
        }
    }

    /// Checks a chunk a peer sent before anything runs: the code must be a built-in kernel
    /// or carry a valid root-key signature (a shader, a wasm kernel), and this node must have
    /// an executor for it.
    fn check_inbound(&self, job: &ChunkJob) -> Result<(), NodeError> {
        if let Code::Kernel(name) = &job.code {
            if !KERNELS.contains(&name.as_str()) {
                return Err(NodeError::new(
                    ErrorCode::TaskUnknownKernel,
                    "no such built-in kernel",
                ));
            }
        }
        if let Some(code) = job.code.signed_bytes() {
            let key = self.root_key.as_ref().ok_or_else(|| {
                NodeError::new(
                    ErrorCode::CodeUnsigned,
                    "this node knows no root key, so it runs no code from the network",
                )
            })?;
            key.verify(code, job.signature.as_ref())?;
        }
        match job.code.kind() {
            TaskKind::Cpu if self.executors.cpu_slots == 0 => {
                return Err(NodeError::new(
                    ErrorCode::TaskUnsupported,
                    "this node runs no CPU chunks",
                ))
            }
            TaskKind::Webgpu if self.executors.gpu.is_none() => {
                return Err(NodeError::new(
                    ErrorCode::TaskUnsupported,
                    "this node has no WebGPU adapter",
                ))
            }
            _ => {}
        }
        if self.jobs.len() >= MAX_RUNNING_CHUNKS {
            return Err(NodeError::new(ErrorCode::Busy, "too many chunks running"));
        }
        Ok(())
    }
}

fn task_error(error: &TaskError, last_peer_error: Option<&(PeerId, NodeError)>) -> NodeError {
    let why = last_peer_error
        .map(|(p, e)| {
            format!(
                " (last refusal: peer {p}: {} {})",
                e.code.as_str(),
                e.message
            )
        })
        .unwrap_or_default();
    let code = match error {
        TaskError::Cancelled => ErrorCode::TaskCancelled,
        TaskError::Unverifiable { .. } => ErrorCode::TaskUnverifiable,
        // When workers refused the code itself (unsigned, tampered, a shader that does not
        // compile or bind), that is the answer the submitter needs.
        _ => match last_peer_error {
            Some((_, e))
                if matches!(
                    e.code,
                    ErrorCode::CodeUnsigned
                        | ErrorCode::CodeSignatureInvalid
                        | ErrorCode::TaskInvalid
                ) =>
            {
                e.code
            }
            _ => ErrorCode::TaskFailed,
        },
    };
    NodeError::new(code, format!("{error}{why}"))
}

impl Node {
    fn local_worker_id(&self) -> String {
        self.peer_id().to_string()
    }

    /// Workers for a task of `kind`: this node when it has an executor for it, and connected
    /// peers advertising one when the task's code may travel.
    fn workers_for(&self, kind: TaskKind, travels: bool) -> Vec<Worker> {
        let fits = |c: &Capabilities| match kind {
            TaskKind::Cpu => c.cpu > 0,
            TaskKind::Webgpu => c.gpu,
        };
        let slots = |c: &Capabilities| match kind {
            TaskKind::Cpu => c.cpu,
            TaskKind::Webgpu => 1,
        };
        let mut workers = Vec::new();
        if let Some(c) = self.compute.capabilities().filter(fits) {
            workers.push(Worker {
                id: self.local_worker_id(),
                score: c.score.max(1e-3),
                load: c.load,
                slots: slots(&c),
            });
        }
        if travels {
            for (id, peer) in &self.peers {
                if let Some(c) = peer.compute.filter(|c| peer.connections > 0 && fits(c)) {
                    workers.push(Worker {
                        id: id.to_string(),
                        score: c.score.max(1e-3),
                        load: c.load,
                        slots: slots(&c).min(MAX_RUNS_PER_PEER as u32),
                    });
                }
            }
        }
        workers
    }

    pub(super) fn on_executors(&mut self, cpu_slots: u32, gpu: Option<GpuAdapter>, score: f64) {
        let score = if score.is_finite() {
            score.clamp(0.0, 1e6)
        } else {
            0.0
        };
        info!(cpu_slots, ?gpu, score, "executors");
        self.compute.executors = Executors {
            cpu_slots: cpu_slots.min(256),
            gpu,
            score,
        };
        self.announce_wanted = true;
        self.status_dirty = true;
        // Running tasks may use this node now.
        let me = self.local_worker_id();
        let nonces: Vec<u64> = self.compute.tasks.keys().copied().collect();
        for nonce in nonces {
            let kind = self.compute.tasks[&nonce].kind;
            if let Some(w) = self
                .workers_for(kind, false)
                .into_iter()
                .find(|w| w.id == me)
            {
                self.add_worker_to(nonce, w);
            }
        }
    }

    fn add_worker_to(&mut self, nonce: u64, worker: Worker) {
        let Some(t) = self.compute.tasks.get_mut(&nonce) else {
            return;
        };
        t.scheduler.add_worker(worker);
        let actions = t.scheduler.next_actions(Instant::now());
        self.apply_actions(nonce, actions);
    }

    /// A peer's capabilities arrived or changed: running tasks may use it.
    pub(super) fn on_peer_capabilities(&mut self, peer: PeerId) {
        let id = peer.to_string();
        let nonces: Vec<u64> = self.compute.tasks.keys().copied().collect();
        for nonce in nonces {
            let t = &self.compute.tasks[&nonce];
            let (kind, travels) = (t.kind, t.travels);
            if let Some(w) = self
                .workers_for(kind, travels)
                .into_iter()
                .find(|w| w.id == id)
            {
                self.add_worker_to(nonce, w);
            }
        }
    }

    pub(super) fn submit_task(
        &mut self,
        tab: TabId,
        request: RequestId,
        task: TaskRequest,
    ) -> Option<Result<ReplyValue, NodeError>> {
        let task = match task.validate() {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        if self.compute.tasks.values().any(|t| t.id == task.id) {
            return Some(Err(NodeError::new(
                ErrorCode::TaskDuplicateId,
                format!("task {:?} is already running", task.id),
            )));
        }
        if self.compute.tasks.len() >= MAX_RUNNING_TASKS {
            return Some(Err(NodeError::new(
                ErrorCode::Busy,
                format!("at most {MAX_RUNNING_TASKS} tasks run at once"),
            )));
        }
        // Never send code whose signature does not verify against the key this node trusts.
        if let (Some(key), Some(code), Some(signature)) = (
            &self.compute.root_key,
            task.code.signed_bytes(),
            task.signature.as_ref(),
        ) {
            if let Err(e) = key.verify(code, Some(signature)) {
                return Some(Err(e));
            }
        }
        let kind = task.code.kind();
        let travels = task.may_travel();
        let workers = self.workers_for(kind, travels);
        if workers.is_empty() {
            let why = match (kind, travels) {
                (TaskKind::Webgpu, false) => {
                    "this node has no WebGPU adapter, and unsigned code is never sent to peers"
                }
                (TaskKind::Webgpu, true) => "no WebGPU adapter here or on a connected peer",
                (TaskKind::Cpu, _) => "no CPU executor here or on a connected peer",
            };
            return Some(Err(NodeError::new(ErrorCode::TaskUnsupported, why)));
        }
        let jobs = match task.jobs(workers.len()) {
            Ok(j) => j,
            Err(e) => return Some(Err(e)),
        };
        let config = TaskConfig {
            chunks: jobs.len() as u32,
            redundancy: task.redundancy,
            chunk_timeout: std::time::Duration::from_millis(u64::from(task.chunk_timeout_ms)),
            max_failures_per_chunk: MAX_FAILURES_PER_CHUNK,
            work_stealing: task.work_stealing,
        };
        let mut scheduler = match Scheduler::new(config, workers) {
            Ok(s) => s,
            Err(e) => return Some(Err(task_error(&e, None))),
        };
        let now = Instant::now();
        let nonce = self.compute.next_nonce;
        self.compute.next_nonce += 1;
        info!(task = %task.id, chunks = jobs.len(), travels, "task submitted");
        let actions = scheduler.next_actions(now);
        self.compute.tasks.insert(
            nonce,
            RunningTask {
                tab,
                request,
                id: task.id,
                kind,
                travels,
                reduce: task.reduce,
                ty: task.output.ty,
                jobs,
                scheduler,
                started: now,
                deadline: now + std::time::Duration::from_millis(u64::from(task.timeout_ms)),
                reported: (0, 0),
                contributors: BTreeSet::new(),
                last_peer_error: None,
            },
        );
        self.apply_actions(nonce, actions);
        self.status_dirty = true;
        None
    }

    pub(super) fn cancel_task(
        &mut self,
        tab: TabId,
        id: &str,
        sink: &mut impl FnMut(Output),
    ) -> Result<ReplyValue, NodeError> {
        let nonce = self
            .compute
            .tasks
            .iter()
            .find(|(_, t)| t.tab == tab && t.id == id)
            .map(|(&n, _)| n)
            .ok_or_else(|| NodeError::new(ErrorCode::TaskUnknown, "no such running task"))?;
        self.stop_task(nonce, sink);
        Ok(ReplyValue::Done)
    }

    /// Cancels a task: aborts its chunks everywhere and answers its submit.
    fn stop_task(&mut self, nonce: u64, sink: &mut impl FnMut(Output)) {
        if let Some(t) = self.compute.tasks.get_mut(&nonce) {
            let actions = t.scheduler.cancel();
            self.apply_actions(nonce, actions);
            self.finish_if_done(nonce, sink);
        }
    }

    /// A tab went away: its tasks are cancelled (nobody is left to hear the result).
    pub(super) fn compute_forget_tab(&mut self, tab: TabId, sink: &mut impl FnMut(Output)) {
        let nonces: Vec<u64> = self
            .compute
            .tasks
            .iter()
            .filter(|(_, t)| t.tab == tab)
            .map(|(&n, _)| n)
            .collect();
        for nonce in nonces {
            self.stop_task(nonce, sink);
        }
    }

    fn apply_actions(&mut self, nonce: u64, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Run { chunk, worker } => self.start_chunk(nonce, chunk, &worker),
                Action::Abort { chunk, worker } => self.abort_chunk(nonce, chunk, &worker),
            }
        }
    }

    fn start_chunk(&mut self, nonce: u64, chunk: u32, worker: &str) {
        if worker == self.local_worker_id() {
            let Some(job) = self.job(nonce, chunk) else {
                return;
            };
            let id = self.compute.next_job;
            self.compute.next_job += 1;
            self.compute
                .jobs
                .insert(id, JobOwner::Local { nonce, chunk });
            self.pending_outputs.push(Output::RunChunk {
                job: id,
                chunk: job,
            });
            return;
        }
        let Ok(peer) = worker.parse::<PeerId>() else {
            return;
        };
        if self.runs_on(peer) >= MAX_RUNS_PER_PEER {
            self.compute.queued.push_back((nonce, chunk, peer));
            return;
        }
        self.send_run(nonce, chunk, peer);
    }

    fn job(&self, nonce: u64, chunk: u32) -> Option<ChunkJob> {
        let t = self.compute.tasks.get(&nonce)?;
        t.jobs.get(chunk as usize).cloned()
    }

    /// Our chunks running on `peer` now.
    fn runs_on(&self, peer: PeerId) -> usize {
        let outbound = self.compute.outbound.values();
        outbound.filter(|&&(_, _, p)| p == peer).count()
    }

    fn send_run(&mut self, nonce: u64, chunk: u32, peer: PeerId) {
        let Some(job) = self.job(nonce, chunk) else {
            return;
        };
        let request_id = self.swarm.behaviour_mut().compute.send_request(
            &peer,
            ComputeRequest::Run {
                nonce,
                chunk,
                job: Box::new(job),
            },
        );
        self.compute
            .outbound
            .insert(request_id, (nonce, chunk, peer));
    }

    /// Sends the queued chunks whose peer has room again (dropping those of ended tasks).
    fn send_queued(&mut self) {
        let queued = std::mem::take(&mut self.compute.queued);
        for (nonce, chunk, peer) in queued {
            let running = self.compute.tasks.get(&nonce);
            if !running.is_some_and(|t| t.scheduler.is_running()) {
                continue; // ended, or being cancelled: its aborts need not find it
            }
            if self.runs_on(peer) < MAX_RUNS_PER_PEER {
                self.send_run(nonce, chunk, peer);
            } else {
                self.compute.queued.push_back((nonce, chunk, peer));
            }
        }
    }

    fn abort_chunk(&mut self, nonce: u64, chunk: u32, worker: &str) {
        if worker == self.local_worker_id() {
            let found = self.compute.jobs.iter().find_map(|(&id, o)| match o {
                JobOwner::Local { nonce: n, chunk: c } if *n == nonce && *c == chunk => Some(id),
                _ => None,
            });
            if let Some(id) = found {
                self.compute.jobs.remove(&id);
                self.pending_outputs.push(Output::AbortChunk { job: id });
            }
            return;
        }
        let Ok(peer) = worker.parse::<PeerId>() else {
            return;
        };
        let queued = self.compute.queued.len();
        self.compute
            .queued
            .retain(|&(n, c, p)| !(n == nonce && c == chunk && p == peer));
        if self.compute.queued.len() < queued {
            return; // never sent: nothing to cancel
        }
        let sent = self.compute.outbound.len();
        self.compute
            .outbound
            .retain(|_, &mut (n, c, p)| !(n == nonce && c == chunk && p == peer));
        if self.compute.outbound.len() == sent {
            return; // not running there (answered already)
        }
        self.send_queued();
        self.swarm
            .behaviour_mut()
            .compute
            .send_request(&peer, ComputeRequest::Cancel { nonce, chunk });
    }

    /// The host finished (or failed) a chunk.
    pub(super) fn on_chunk_done(
        &mut self,
        job: u64,
        result: Result<Vec<u8>, NodeError>,
        sink: &mut impl FnMut(Output),
    ) {
        let Some(owner) = self.compute.jobs.remove(&job) else {
            return; // aborted meanwhile
        };
        match owner {
            JobOwner::Local { nonce, chunk } => {
                let me = self.local_worker_id();
                self.on_chunk_result(nonce, chunk, &me, result, sink);
            }
            JobOwner::Remote {
                peer,
                nonce,
                chunk,
                channel,
            } => {
                self.compute.remote_jobs.remove(&(peer, nonce, chunk));
                let response = match result {
                    Ok(bytes) => {
                        self.compute.served += 1;
                        ComputeResponse::Result(bytes)
                    }
                    Err(e) => ComputeResponse::Error(e),
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .compute
                    .send_response(channel, response);
            }
        }
        self.status_dirty = true;
    }

    fn on_chunk_result(
        &mut self,
        nonce: u64,
        chunk: u32,
        worker: &str,
        result: Result<Vec<u8>, NodeError>,
        sink: &mut impl FnMut(Output),
    ) {
        let Some(t) = self.compute.tasks.get_mut(&nonce) else {
            return;
        };
        let now = Instant::now();
        let expected = t.jobs.get(chunk as usize).map(|j| j.output.bytes());
        let actions = match result {
            Ok(bytes) if Some(bytes.len()) == expected => {
                t.contributors.insert(worker.to_string());
                t.scheduler.on_result(worker, chunk, bytes, now)
            }
            Ok(bytes) => {
                debug!(
                    worker,
                    chunk,
                    len = bytes.len(),
                    "chunk result of the wrong size"
                );
                t.scheduler.on_error(worker, chunk, now)
            }
            Err(e) => {
                debug!(
                    worker,
                    chunk,
                    code = e.code.as_str(),
                    "chunk failed: {}",
                    e.message
                );
                if let Ok(peer) = worker.parse::<PeerId>() {
                    t.last_peer_error = Some((peer, e));
                }
                t.scheduler.on_error(worker, chunk, now)
            }
        };
        self.apply_actions(nonce, actions);
        self.finish_if_done(nonce, sink);
    }

    /// Reports progress, and answers the submit once the task has an outcome.
    fn finish_if_done(&mut self, nonce: u64, sink: &mut impl FnMut(Output)) {
        let Some(t) = self.compute.tasks.get_mut(&nonce) else {
            return;
        };
        let progress = t.scheduler.progress();
        if (progress.done, progress.peers) != t.reported {
            t.reported = (progress.done, progress.peers);
            sink(Output::Event {
                tab: t.tab,
                event: Event::TaskProgress {
                    task: t.id.clone(),
                    done: progress.done,
                    total: progress.total,
                    peers: progress.peers,
                },
            });
        }
        let result = match t.scheduler.outcome() {
            None => return,
            Some(Ok(parts)) => {
                let parts: Vec<Vec<u8>> = parts.into_iter().map(<[u8]>::to_vec).collect();
                reduce(&parts, t.reduce, t.ty)
                    .map_err(|e| NodeError::new(ErrorCode::TaskFailed, e.to_string()))
            }
            Some(Err(e)) => Err(task_error(&e, t.last_peer_error.as_ref())),
        };
        let Some(t) = self.compute.tasks.remove(&nonce) else {
            return;
        };
        let excluded: Vec<ExcludedWorker> = t
            .scheduler
            .excluded()
            .iter()
            .map(|(peer, e)| {
                let crate::compute::scheduler::Exclusion::WrongResult { chunk } = *e;
                ExcludedWorker {
                    peer_id: peer.clone(),
                    task: t.id.clone(),
                    chunk,
                }
            })
            .collect();
        for x in &excluded {
            warn!(peer = %x.peer_id, task = %x.task, chunk = x.chunk, "worker excluded: wrong result");
            if self.compute.excluded.len() >= MAX_EXCLUDED_SHOWN {
                self.compute.excluded.pop_front();
            }
            self.compute.excluded.push_back(x.clone());
        }
        let elapsed_ms = t.started.elapsed().as_secs_f64() * 1000.0;
        info!(task = %t.id, ok = result.is_ok(), elapsed_ms, "task finished");
        let result = result.map(|bytes| {
            ReplyValue::TaskResult(TaskResult {
                bytes,
                ty: t.ty,
                chunks: t.jobs.len() as u32,
                workers: t
                    .contributors
                    .iter()
                    .filter(|w| !excluded.iter().any(|x| &x.peer_id == *w))
                    .cloned()
                    .collect(),
                excluded,
                elapsed_ms,
            })
        });
        sink(Output::Reply {
            tab: t.tab,
            id: t.request,
            result,
        });
        self.status_dirty = true;
    }

    pub(super) fn on_compute_event(
        &mut self,
        event: request_response::Event<ComputeRequest, ComputeResponse>,
        sink: &mut impl FnMut(Output),
    ) {
        use request_response::{Event as E, Message};
        match event {
            E::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => match request {
                ComputeRequest::Run { nonce, chunk, job } => {
                    if let Err(e) = self.compute.check_inbound(&job) {
                        debug!(%peer, task = %job.task, code = e.code.as_str(), "chunk refused");
                        self.compute.refused += 1;
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .compute
                            .send_response(channel, ComputeResponse::Error(e));
                        return;
                    }
                    let id = self.compute.next_job;
                    self.compute.next_job += 1;
                    if let Some(old) = self.compute.remote_jobs.insert((peer, nonce, chunk), id) {
                        // The same chunk again (a retry): the old run's answer is not wanted.
                        self.compute.jobs.remove(&old);
                        self.pending_outputs.push(Output::AbortChunk { job: old });
                    }
                    self.compute.jobs.insert(
                        id,
                        JobOwner::Remote {
                            peer,
                            nonce,
                            chunk,
                            channel,
                        },
                    );
                    self.pending_outputs.push(Output::RunChunk {
                        job: id,
                        chunk: *job,
                    });
                    self.status_dirty = true;
                }
                ComputeRequest::Cancel { nonce, chunk } => {
                    if let Some(id) = self.compute.remote_jobs.remove(&(peer, nonce, chunk)) {
                        if let Some(JobOwner::Remote { channel, .. }) =
                            self.compute.jobs.remove(&id)
                        {
                            let cancelled = NodeError::new(
                                ErrorCode::TaskCancelled,
                                "cancelled by the submitter",
                            );
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .compute
                                .send_response(channel, ComputeResponse::Error(cancelled));
                        }
                        self.pending_outputs.push(Output::AbortChunk { job: id });
                    }
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .compute
                        .send_response(channel, ComputeResponse::Ack);
                }
            },
            E::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((nonce, chunk, _)) = self.compute.outbound.remove(&request_id) else {
                    return;
                };
                self.send_queued();
                let result = match response {
                    ComputeResponse::Result(bytes) => Ok(bytes),
                    ComputeResponse::Error(e) => Err(e),
                    ComputeResponse::Ack => return,
                };
                self.on_chunk_result(nonce, chunk, &peer.to_string(), result, sink);
            }
            E::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((nonce, chunk, _)) = self.compute.outbound.remove(&request_id) {
                    self.send_queued();
                    let e = NodeError::new(ErrorCode::TaskChunkFailed, error.to_string());
                    self.on_chunk_result(nonce, chunk, &peer.to_string(), Err(e), sink);
                }
            }
            E::InboundFailure { peer, error, .. } => {
                debug!(%peer, "inbound compute request failed: {error}");
            }
            E::ResponseSent { .. } => {}
        }
    }

    /// A peer's last connection closed: its chunks of our tasks run elsewhere, and the chunks
    /// it gave us are dropped.
    pub(super) fn compute_peer_left(&mut self, peer: PeerId, sink: &mut impl FnMut(Output)) {
        let id = peer.to_string();
        let nonces: Vec<u64> = self.compute.tasks.keys().copied().collect();
        let now = Instant::now();
        for nonce in nonces {
            if let Some(t) = self.compute.tasks.get_mut(&nonce) {
                let actions = t.scheduler.remove_worker(&id, now);
                self.apply_actions(nonce, actions);
                self.finish_if_done(nonce, sink);
            }
        }
        self.compute.outbound.retain(|_, &mut (_, _, p)| p != peer);
        self.compute.queued.retain(|&(_, _, p)| p != peer);
        let theirs: Vec<u64> = self
            .compute
            .remote_jobs
            .iter()
            .filter(|((p, _, _), _)| *p == peer)
            .map(|(_, &id)| id)
            .collect();
        self.compute.remote_jobs.retain(|(p, _, _), _| *p != peer);
        for id in theirs {
            self.compute.jobs.remove(&id);
            self.pending_outputs.push(Output::AbortChunk { job: id });
        }
    }

    /// Chunk timeouts and task deadlines.
    pub(super) fn compute_tick(&mut self, now: Instant, sink: &mut impl FnMut(Output)) {
        let nonces: Vec<u64> = self.compute.tasks.keys().copied().collect();
        for nonce in nonces {
            let Some(t) = self.compute.tasks.get_mut(&nonce) else {
                continue;
            };
            if now >= t.deadline {
                let actions = t.scheduler.cancel();
                self.apply_actions(nonce, actions);
                if let Some(t) = self.compute.tasks.remove(&nonce) {
                    sink(Output::Reply {
                        tab: t.tab,
                        id: t.request,
                        result: Err(NodeError::new(
                            ErrorCode::TaskTimeout,
                            format!(
                                "task {:?} did not finish in {} ms",
                                t.id,
                                t.deadline.duration_since(t.started).as_millis()
                            ),
                        )),
                    });
                }
                continue;
            }
            let actions = t.scheduler.on_tick(now);
            self.apply_actions(nonce, actions);
            self.finish_if_done(nonce, sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use libp2p::identity::ed25519;

    use super::*;
    use crate::compute::{signing, task::InputArray};

    fn wgsl_job(source: &str, signature: Option<[u8; 64]>) -> ChunkJob {
        let mut job = serde_json::from_value::<TaskRequest>(serde_json::json!({
            "id": "g", "type": "webgpu", "shader": source,
            "output": { "type": "u32", "length": 4 }, "grid": [4],
        }))
        .unwrap()
        .validate()
        .unwrap()
        .jobs(1)
        .unwrap()
        .remove(0);
        job.signature = signature;
        job.inputs.push(InputArray {
            binding: 2,
            ty: ElementType::U32,
            bytes: Arc::new(vec![0; 16]),
        });
        job
    }

    #[test]
    fn inbound_code_runs_only_when_signed_by_the_root_key() {
        let root = ed25519::Keypair::generate();
        let shader = "@compute @workgroup_size(4) fn main() {}";
        let signed = signing::sign(&root, shader.as_bytes());
        let mut c = NodeCompute::new();
        c.executors = Executors {
            cpu_slots: 2,
            gpu: Some(GpuAdapter {
                name: "test".into(),
                backend: "test".into(),
                fallback: true,
            }),
            score: 1.0,
        };
        let code = |c: &NodeCompute, job: &ChunkJob| c.check_inbound(job).err().map(|e| e.code);
        assert_eq!(
            code(&c, &wgsl_job(shader, Some(signed))),
            Some(ErrorCode::CodeUnsigned),
            "no root key: no code from the network"
        );
        c.set_root_key(&signing::public_hex(&root)).unwrap();
        assert_eq!(code(&c, &wgsl_job(shader, Some(signed))), None);
        assert_eq!(
            code(&c, &wgsl_job(shader, None)),
            Some(ErrorCode::CodeUnsigned)
        );
        let tampered = shader.replace("main", "mian");
        assert_eq!(
            code(&c, &wgsl_job(&tampered, Some(signed))),
            Some(ErrorCode::CodeSignatureInvalid)
        );
        // Signature first: a node without a GPU still refuses tampered code as tampered.
        c.executors.gpu = None;
        assert_eq!(
            code(&c, &wgsl_job(&tampered, Some(signed))),
            Some(ErrorCode::CodeSignatureInvalid)
        );
        assert_eq!(
            code(&c, &wgsl_job(shader, Some(signed))),
            Some(ErrorCode::TaskUnsupported)
        );
        let other = ed25519::Keypair::generate();
        assert!(
            c.set_root_key(&signing::public_hex(&other)).is_err(),
            "the first key stays"
        );
    }

    /// A peer advertising more CPU slots than its connection has compute streams gets at most
    /// [`MAX_RUNS_PER_PEER`] of our chunks at once, over all our tasks; the others wait and go
    /// as its runs answer.
    #[tokio::test]
    async fn chunks_for_one_peer_stay_within_its_connection_streams() {
        use libp2p::{identity::Keypair, swarm::ConnectionId};
        use std::time::Duration;

        use crate::node::{Input, NodeConfig, Peer};
        use crate::tab_protocol::Request;

        let config = NodeConfig::default();
        let mut node = Node::native(Keypair::generate_ed25519(), config)
            .await
            .expect("node");
        let peer = PeerId::random();
        let mut p = Peer::new(
            Instant::now(),
            (Duration::from_secs(1), Duration::from_secs(2)),
        );
        p.connections = 1;
        p.compute = Some(Capabilities {
            cpu: 64,
            gpu: false,
            score: 10.0,
            load: 0.0,
        });
        node.peers.insert(peer, p);
        node.on_input(Input::Attach(1), &mut |_| {});
        for (id, name) in [(1, "a"), (2, "b")] {
            let task = serde_json::from_value(serde_json::json!({
                "id": name, "type": "cpu", "kernel": "mandelbrot",
                "output": { "type": "u32", "length": 64 * 64 }, "grid": [64, 64],
                "split": { "chunks": 16 },
            }))
            .unwrap();
            let request = Request::TaskSubmit {
                task: Box::new(task),
            };
            node.on_input(
                Input::Request {
                    tab: 1,
                    id,
                    request,
                },
                &mut |_| {},
            );
        }
        let nonces = |node: &Node| -> Vec<u64> {
            let mut n: Vec<u64> = node.compute.outbound.values().map(|o| o.0).collect();
            n.sort_unstable();
            n
        };
        // Task a fills the peer; task b's chunks wait.
        assert_eq!(nonces(&node), vec![0; MAX_RUNS_PER_PEER]);
        assert_eq!(node.compute.queued.len(), MAX_RUNS_PER_PEER);
        assert!(node.compute.queued.iter().all(|q| q.0 == 1 && q.2 == peer));
        // One of a's chunks answers: b's first queued chunk goes, a's next one waits.
        let (&request_id, &(_, chunk, _)) = node.compute.outbound.iter().next().unwrap();
        let bytes = node.compute.tasks[&0].jobs[chunk as usize].output.bytes();
        let answer = request_response::Event::Message {
            peer,
            connection_id: ConnectionId::new_unchecked(0),
            message: request_response::Message::Response {
                request_id,
                response: ComputeResponse::Result(vec![0; bytes]),
            },
        };
        node.on_compute_event(answer, &mut |_| {});
        let mut want = vec![0; MAX_RUNS_PER_PEER - 1];
        want.push(1);
        assert_eq!(nonces(&node), want);
        assert_eq!(node.compute.queued.len(), MAX_RUNS_PER_PEER);
        assert_eq!(node.compute.queued.back().map(|q| q.0), Some(0));
        // Cancelling task b drops its queued chunks without a Cancel for them.
        let cancel = Request::TaskCancel { task: "b".into() };
        node.on_input(
            Input::Request {
                tab: 1,
                id: 3,
                request: cancel,
            },
            &mut |_| {},
        );
        assert!(node.compute.queued.is_empty(), "a's waiting chunk went");
        assert_eq!(nonces(&node), vec![0; MAX_RUNS_PER_PEER]);
    }
}
