//! The task scheduler: which worker runs which chunk, what happens when one fails, lags,
//! leaves or lies, and when a task is done.
//!
//! A sans-IO state machine: the caller reports what happened (`on_result`, `on_error`,
//! `remove_worker`, `on_tick` with the current time) and carries out the [`Action`]s it gets
//! back (start a chunk on a worker, or abort one). The local node is a worker like any other,
//! so a node alone runs everything itself.
//!
//! - **Assignment** is pull-based: a worker with a free slot takes the lowest chunk that still
//!   needs a result, heaviest worker (`score × (1 − load)`) first, so fast and idle workers end
//!   up with more chunks.
//! - **Work stealing**: a worker with nothing left to take duplicates the chunk that has been
//!   running longest elsewhere (once per chunk); the first accepted result wins.
//! - **Timeouts and failures**: a chunk that errors or exceeds `chunk_timeout` is retried on
//!   another worker; after `max_failures_per_chunk` the task fails.
//! - **Verification**: with redundancy *k*, a chunk runs on *k* distinct workers and its result
//!   is accepted when at least *k* results agree (by SHA-256) and form a strict majority. On
//!   disagreement it runs on up to [`MAX_EXTRA_REPLICAS`] more workers; workers whose result
//!   lost the vote are excluded from the task and reported.
//! - Only results of chunks this scheduler assigned to that worker are counted.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use sha2::{Digest, Sha256};
use thiserror::Error;
use web_time::Instant;

/// Highest redundancy a task may ask for.
pub const MAX_REDUNDANCY: u8 = 5;
/// Replicas beyond the redundancy a chunk may get to settle a disagreement.
pub const MAX_EXTRA_REPLICAS: u8 = 2;

/// Index of a chunk in its task.
pub type ChunkId = u32;
type Digest32 = [u8; 32];

/// A worker that can run chunks: a peer, or the local node.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    /// Its id (a peer id; any string unique within the task).
    pub id: String,
    /// Measured speed, higher is faster (any positive scale, the same for all workers).
    pub score: f64,
    /// Current load, 0 (idle) to 1 (busy).
    pub load: f64,
    /// Chunks it may run at once.
    pub slots: u32,
}

impl Worker {
    fn weight(&self) -> f64 {
        self.score.max(0.0) * (1.0 - self.load.clamp(0.0, 1.0))
    }
}

/// How a task runs.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// Number of chunks.
    pub chunks: u32,
    /// Distinct workers whose agreeing results a chunk needs (1 = no verification).
    pub redundancy: u8,
    /// A chunk running longer than this on a worker is retried elsewhere.
    pub chunk_timeout: Duration,
    /// Failures and timeouts one chunk may have before the task fails.
    pub max_failures_per_chunk: u32,
    /// Duplicate long-running chunks onto idle workers.
    pub work_stealing: bool,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run `chunk` on `worker`.
    Run {
        /// The chunk.
        chunk: ChunkId,
        /// The worker.
        worker: String,
    },
    /// Stop running `chunk` on `worker`: its result is no longer wanted.
    Abort {
        /// The chunk.
        chunk: ChunkId,
        /// The worker.
        worker: String,
    },
}

/// Why a task did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The configuration is out of bounds.
    #[error("invalid task: {0}")]
    InvalidConfig(String),
    /// A chunk failed or timed out too often.
    #[error("chunk {chunk} failed {failures} times")]
    ChunkFailed {
        /// The chunk.
        chunk: ChunkId,
        /// How often.
        failures: u32,
    },
    /// Workers disagreed on a chunk and no majority emerged.
    #[error("chunk {chunk}: workers disagree and no majority emerged")]
    Unverifiable {
        /// The chunk.
        chunk: ChunkId,
    },
    /// No worker is left to run the remaining chunks.
    #[error("no worker left to run the remaining chunks")]
    NoWorkers,
    /// Too few distinct workers remain to verify a chunk at the task's redundancy.
    #[error("chunk {chunk} needs {needed} distinct workers' results; only {available} can still give one")]
    NotEnoughWorkers {
        /// The chunk.
        chunk: ChunkId,
        /// Results it needs.
        needed: usize,
        /// Results it has, plus workers that could still add one.
        available: usize,
    },
    /// The task was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// Why a worker was excluded from a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    /// Its result for a chunk lost the majority vote.
    WrongResult {
        /// The chunk it got wrong.
        chunk: ChunkId,
    },
}

/// Progress of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Chunks with an accepted result.
    pub done: u32,
    /// All chunks.
    pub total: u32,
    /// Workers that contributed an accepted result.
    pub peers: usize,
}

#[derive(Debug)]
struct Replica {
    worker: String,
    started: Instant,
}

#[derive(Debug, Default)]
struct Chunk {
    running: Vec<Replica>,
    results: Vec<(String, Digest32)>,
    payloads: HashMap<Digest32, Vec<u8>>,
    failed_on: HashSet<String>,
    failures: u32,
    accepted: Option<Digest32>,
    speculated: bool,
}

impl Chunk {
    fn has_worker(&self, w: &str) -> bool {
        self.running.iter().any(|r| r.worker == w) || self.results.iter().any(|(x, _)| x == w)
    }

    fn disagreement(&self) -> bool {
        self.results.windows(2).any(|p| p[0].1 != p[1].1)
    }

    /// Results this chunk wants in total, given what came back so far.
    fn target(&self, k: u8) -> usize {
        let k = usize::from(k);
        if self.disagreement() {
            (self.results.len() + 1).min(k + usize::from(MAX_EXTRA_REPLICAS))
        } else {
            k
        }
    }

    fn needs(&self, k: u8) -> usize {
        if self.accepted.is_some() {
            return 0;
        }
        self.target(k)
            .saturating_sub(self.results.len() + self.running.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Running,
    Done,
    Failed(TaskError),
}

/// The scheduler of one task.
#[derive(Debug)]
pub struct Scheduler {
    config: TaskConfig,
    workers: BTreeMap<String, Worker>,
    busy: HashMap<String, u32>,
    excluded: BTreeMap<String, Exclusion>,
    chunks: Vec<Chunk>,
    done: u32,
    contributors: HashSet<String>,
    state: State,
}

impl Scheduler {
    /// A scheduler for a task over `workers`.
    pub fn new(config: TaskConfig, workers: Vec<Worker>) -> Result<Self, TaskError> {
        if config.chunks == 0 || config.chunks > super::split::MAX_CHUNKS {
            return Err(TaskError::InvalidConfig(format!(
                "{} chunks (1..={})",
                config.chunks,
                super::split::MAX_CHUNKS
            )));
        }
        if config.redundancy == 0 || config.redundancy > MAX_REDUNDANCY {
            return Err(TaskError::InvalidConfig(format!(
                "redundancy {} (1..={MAX_REDUNDANCY})",
                config.redundancy
            )));
        }
        let chunks = (0..config.chunks).map(|_| Chunk::default()).collect();
        let mut s = Scheduler {
            config,
            workers: BTreeMap::new(),
            busy: HashMap::new(),
            excluded: BTreeMap::new(),
            chunks,
            done: 0,
            contributors: HashSet::new(),
            state: State::Running,
        };
        for w in workers {
            s.add_worker(w);
        }
        Ok(s)
    }

    /// Adds (or updates) a worker; an excluded worker stays excluded.
    pub fn add_worker(&mut self, worker: Worker) {
        if !self.excluded.contains_key(&worker.id) {
            self.workers.insert(worker.id.clone(), worker);
        }
    }

    /// Whether it still hands out chunks (not done, failed or cancelled).
    pub fn is_running(&self) -> bool {
        self.state == State::Running
    }

    /// Progress so far.
    pub fn progress(&self) -> Progress {
        Progress {
            done: self.done,
            total: self.config.chunks,
            peers: self.contributors.len(),
        }
    }

    /// Workers excluded from this task, and why.
    pub fn excluded(&self) -> &BTreeMap<String, Exclusion> {
        &self.excluded
    }

    /// `None` while running; then the accepted results in chunk order, or the error.
    pub fn outcome(&self) -> Option<Result<Vec<&[u8]>, TaskError>> {
        match &self.state {
            State::Running => None,
            State::Failed(e) => Some(Err(e.clone())),
            State::Done => Some(Ok(self
                .chunks
                .iter()
                .filter_map(|c| c.accepted.and_then(|h| c.payloads.get(&h)))
                .map(Vec::as_slice)
                .collect())),
        }
    }

    /// Assigns chunks to workers with free slots.
    pub fn next_actions(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state != State::Running {
            return actions;
        }
        if self.workers.is_empty() {
            self.fail(TaskError::NoWorkers, &mut actions);
            return actions;
        }
        if let Some(error) = self.infeasible() {
            self.fail(error, &mut actions);
            return actions;
        }
        let mut order: Vec<(f64, String)> = self
            .workers
            .values()
            .map(|w| (w.weight(), w.id.clone()))
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        loop {
            let mut assigned = false;
            for (_, id) in &order {
                let slots = self.workers.get(id).map_or(0, |w| w.slots.max(1));
                if self.busy.get(id).copied().unwrap_or(0) >= slots {
                    continue;
                }
                if let Some(chunk) = self.pick_chunk(id) {
                    self.start(chunk, id, now, &mut actions);
                    assigned = true;
                }
            }
            if !assigned {
                break;
            }
        }
        actions
    }

    /// A chunk that can no longer collect enough distinct results: each worker gives a chunk
    /// at most one result, so fail now rather than wait forever.
    fn infeasible(&self) -> Option<TaskError> {
        let k = self.config.redundancy;
        self.chunks.iter().enumerate().find_map(|(i, c)| {
            if c.accepted.is_some() {
                return None;
            }
            let could = self
                .workers
                .keys()
                .filter(|w| !c.results.iter().any(|(x, _)| x == *w))
                .count();
            let available = c.results.len() + could;
            let needed = c.target(k);
            (available < needed).then_some(TaskError::NotEnoughWorkers {
                chunk: i as ChunkId,
                needed,
                available,
            })
        })
    }

    fn pick_chunk(&mut self, worker: &str) -> Option<ChunkId> {
        let k = self.config.redundancy;
        let workers = &self.workers;
        // A chunk still short of results, that this worker has no part in. A worker that
        // failed a chunk retries it only once every worker that could still contribute to it
        // (no result or replica there yet) has failed it too.
        let fresh = self.chunks.iter().position(|c| {
            let failed_by_all = workers
                .keys()
                .filter(|w| !c.has_worker(w))
                .all(|w| c.failed_on.contains(w));
            c.needs(k) > 0
                && !c.has_worker(worker)
                && (!c.failed_on.contains(worker) || failed_by_all)
        });
        if let Some(i) = fresh {
            return Some(i as ChunkId);
        }
        if !self.config.work_stealing {
            return None;
        }
        // Work stealing: duplicate the chunk running longest elsewhere.
        let (i, _) = self
            .chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.accepted.is_none()
                    && !c.speculated
                    && !c.running.is_empty()
                    && !c.has_worker(worker)
                    && !c.failed_on.contains(worker)
            })
            .min_by_key(|(_, c)| c.running.iter().map(|r| r.started).min())?;
        self.chunks[i].speculated = true;
        Some(i as ChunkId)
    }

    fn start(&mut self, chunk: ChunkId, worker: &str, now: Instant, actions: &mut Vec<Action>) {
        self.chunks[chunk as usize].running.push(Replica {
            worker: worker.to_string(),
            started: now,
        });
        *self.busy.entry(worker.to_string()).or_default() += 1;
        actions.push(Action::Run {
            chunk,
            worker: worker.to_string(),
        });
    }

    /// Removes `worker`'s replica of `chunk`; whether it had one.
    fn stop(&mut self, chunk: ChunkId, worker: &str) -> bool {
        let Some(c) = self.chunks.get_mut(chunk as usize) else {
            return false;
        };
        let before = c.running.len();
        c.running.retain(|r| r.worker != worker);
        let had = c.running.len() < before;
        if had {
            if let Some(b) = self.busy.get_mut(worker) {
                *b = b.saturating_sub(1);
            }
        }
        had
    }

    /// A worker returned `bytes` for `chunk`.
    pub fn on_result(
        &mut self,
        worker: &str,
        chunk: ChunkId,
        bytes: Vec<u8>,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        // Only results we asked this worker for count.
        if self.state != State::Running || !self.stop(chunk, worker) {
            return actions;
        }
        let c = &mut self.chunks[chunk as usize];
        if c.accepted.is_none() {
            let digest: Digest32 = Sha256::digest(&bytes).into();
            c.results.push((worker.to_string(), digest));
            c.payloads.entry(digest).or_insert(bytes);
            self.evaluate(chunk, &mut actions);
        }
        if self.state == State::Running {
            actions.extend(self.next_actions(now));
        }
        actions
    }

    fn evaluate(&mut self, chunk: ChunkId, actions: &mut Vec<Action>) {
        let k = usize::from(self.config.redundancy);
        let c = &self.chunks[chunk as usize];
        let mut counts: HashMap<Digest32, usize> = HashMap::new();
        for (_, d) in &c.results {
            *counts.entry(*d).or_default() += 1;
        }
        let n = c.results.len();
        let best = counts
            .iter()
            .max_by_key(|(_, &count)| count)
            .map(|(d, &count)| (*d, count));
        match best {
            Some((digest, count)) if count >= k && count * 2 > n => {
                self.accept(chunk, digest, actions)
            }
            _ if n >= k + usize::from(MAX_EXTRA_REPLICAS) => {
                self.fail(TaskError::Unverifiable { chunk }, actions)
            }
            _ => {}
        }
    }

    fn accept(&mut self, chunk: ChunkId, digest: Digest32, actions: &mut Vec<Action>) {
        let c = &mut self.chunks[chunk as usize];
        c.accepted = Some(digest);
        c.payloads.retain(|d, _| *d == digest);
        let (agree, liars): (Vec<_>, Vec<_>) =
            c.results.iter().cloned().partition(|(_, d)| *d == digest);
        let running: Vec<String> = c.running.iter().map(|r| r.worker.clone()).collect();
        self.done += 1;
        self.contributors.extend(agree.into_iter().map(|(w, _)| w));
        for w in running {
            self.stop(chunk, &w);
            actions.push(Action::Abort { chunk, worker: w });
        }
        for (liar, _) in liars {
            self.exclude(&liar, Exclusion::WrongResult { chunk }, actions);
        }
        if self.done == self.config.chunks {
            self.state = State::Done;
        }
    }

    /// Takes `worker` out of the task: its running chunks are aborted and its results on
    /// chunks not yet accepted no longer count.
    fn exclude(&mut self, worker: &str, why: Exclusion, actions: &mut Vec<Action>) {
        self.workers.remove(worker);
        self.excluded.insert(worker.to_string(), why);
        self.contributors.remove(worker);
        for i in 0..self.chunks.len() {
            if self.stop(i as ChunkId, worker) {
                actions.push(Action::Abort {
                    chunk: i as ChunkId,
                    worker: worker.to_string(),
                });
            }
            let c = &mut self.chunks[i];
            if c.accepted.is_none() {
                c.results.retain(|(w, _)| w != worker);
                let live: HashSet<Digest32> = c.results.iter().map(|(_, d)| *d).collect();
                c.payloads.retain(|d, _| live.contains(d));
            }
        }
    }

    /// `worker` could not run `chunk` (an error it reported, or a timeout).
    pub fn on_error(&mut self, worker: &str, chunk: ChunkId, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state != State::Running || !self.stop(chunk, worker) {
            return actions;
        }
        self.record_failure(chunk, worker, &mut actions);
        if self.state == State::Running {
            actions.extend(self.next_actions(now));
        }
        actions
    }

    fn record_failure(&mut self, chunk: ChunkId, worker: &str, actions: &mut Vec<Action>) {
        let c = &mut self.chunks[chunk as usize];
        c.failures += 1;
        c.failed_on.insert(worker.to_string());
        let failures = c.failures;
        if failures > self.config.max_failures_per_chunk {
            self.fail(TaskError::ChunkFailed { chunk, failures }, actions);
        }
    }

    /// Times out chunks running longer than `chunk_timeout`, and reassigns them.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state != State::Running {
            return actions;
        }
        let timeout = self.config.chunk_timeout;
        let late: Vec<(ChunkId, String)> = self
            .chunks
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                c.running
                    .iter()
                    .filter(|r| now.duration_since(r.started) >= timeout)
                    .map(move |r| (i as ChunkId, r.worker.clone()))
            })
            .collect();
        for (chunk, worker) in late {
            if self.stop(chunk, &worker) {
                actions.push(Action::Abort {
                    chunk,
                    worker: worker.clone(),
                });
                self.record_failure(chunk, &worker, &mut actions);
            }
        }
        if self.state == State::Running {
            actions.extend(self.next_actions(now));
        }
        actions
    }

    /// A worker left (disconnected, or its node closed). Not a failure of its chunks: they
    /// are simply run elsewhere.
    pub fn remove_worker(&mut self, worker: &str, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.workers.remove(worker).is_none() {
            return actions;
        }
        for i in 0..self.chunks.len() {
            self.stop(i as ChunkId, worker);
        }
        self.busy.remove(worker);
        actions.extend(self.next_actions(now));
        actions
    }

    /// Cancels the task: every running chunk is aborted.
    pub fn cancel(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::Running {
            self.fail(TaskError::Cancelled, &mut actions);
        }
        actions
    }

    fn fail(&mut self, error: TaskError, actions: &mut Vec<Action>) {
        self.state = State::Failed(error);
        for i in 0..self.chunks.len() {
            let workers: Vec<String> = self.chunks[i]
                .running
                .iter()
                .map(|r| r.worker.clone())
                .collect();
            for w in workers {
                self.stop(i as ChunkId, &w);
                actions.push(Action::Abort {
                    chunk: i as ChunkId,
                    worker: w,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
