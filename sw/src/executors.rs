//! The executors tabs lend the node (a SharedWorker cannot start workers itself): each tab
//! runs a pool of `worker-cpu` dedicated workers and, where the browser has WebGPU, one
//! `worker-gpu`, and hands the node one `MessagePort` to each. Chunks go, as encoded
//! compute-protocol frames, to an executor of their kind (CPU kernel or WGSL), the one with
//! the most free slots; a tab that closes takes its executors with it, and their running
//! chunks are reported failed so the scheduler runs them elsewhere.

use std::{cell::RefCell, collections::HashSet, rc::Rc};

use futures::channel::mpsc;
use js_sys::{Array, Object, Reflect, Uint8Array};
use peercompute_core::{
    compute::{
        protocol::{ComputeRequest, ComputeResponse},
        task::{ChunkJob, TaskKind},
    },
    node::{queue_lifecycle, Input},
    tab_protocol::{GpuAdapter, TabId},
    ErrorCode, NodeError,
};
use wasm_bindgen::{prelude::*, JsCast};
use web_sys::{MessageEvent, MessagePort};

/// Most worker slots one tab may lend.
pub(crate) const MAX_POOL_SLOTS: u32 = 64;

struct Pool {
    tab: TabId,
    /// A GPU worker (one slot) on this adapter; `None`: a CPU pool.
    gpu: Option<GpuAdapter>,
    port: MessagePort,
    slots: u32,
    score: f64,
    running: HashSet<u64>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

/// Every pool lent by a tab (each knows the jobs it runs).
pub(crate) struct Executors {
    inputs: mpsc::Sender<Input>,
    pools: Vec<Pool>,
}

impl Executors {
    pub(crate) fn new(inputs: mpsc::Sender<Input>) -> Self {
        Executors {
            inputs,
            pools: Vec::new(),
        }
    }

    /// A tab lends a pool of `slots` CPU workers (1 to [`MAX_POOL_SLOTS`], checked by the
    /// port handler), or a GPU worker on `gpu`, behind `port`. A tab lends at most
    /// [`MAX_POOL_SLOTS`] CPU workers and one GPU worker in all: more is refused.
    pub(crate) fn attach(
        this: &Rc<RefCell<Executors>>,
        tab: TabId,
        port: MessagePort,
        slots: u32,
        score: f64,
        gpu: Option<GpuAdapter>,
    ) -> Result<(), NodeError> {
        let refused = {
            let me = this.borrow();
            let lent = me.pools.iter().filter(|p| p.tab == tab);
            let cpu: u32 = lent
                .clone()
                .filter(|p| p.gpu.is_none())
                .map(|p| p.slots)
                .sum();
            if gpu.is_some() && lent.clone().any(|p| p.gpu.is_some()) {
                Some("this tab already lends a GPU worker".to_string())
            } else if gpu.is_none() && cpu + slots > MAX_POOL_SLOTS {
                Some(format!("a tab lends at most {MAX_POOL_SLOTS} CPU workers"))
            } else {
                None
            }
        };
        if let Some(why) = refused {
            port.close();
            return Err(NodeError::new(ErrorCode::BadRequest, why));
        }
        let weak = Rc::downgrade(this);
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            if let Some(this) = weak.upgrade() {
                this.borrow_mut().on_result(tab, ev.data());
            }
        });
        port.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        port.start();
        let mut me = this.borrow_mut();
        me.pools.push(Pool {
            tab,
            slots: if gpu.is_some() { 1 } else { slots },
            gpu,
            port,
            score,
            running: HashSet::new(),
            _on_message: on_message,
        });
        me.report();
        Ok(())
    }

    /// The tab is gone: its executors' running chunks fail (and run elsewhere).
    pub(crate) fn detach_tab(&mut self, tab: TabId) {
        let (gone, kept): (Vec<Pool>, Vec<Pool>) = std::mem::take(&mut self.pools)
            .into_iter()
            .partition(|p| p.tab == tab);
        self.pools = kept;
        if gone.is_empty() {
            return;
        }
        for pool in gone {
            pool.port.set_onmessage(None);
            pool.port.close();
            for job in pool.running {
                self.done(
                    job,
                    Err(NodeError::new(
                        ErrorCode::TaskChunkFailed,
                        "the tab running this chunk closed",
                    )),
                );
            }
        }
        self.report();
    }

    /// Runs a chunk on the executor of its kind with the most free slots.
    pub(crate) fn run(&mut self, job: u64, chunk: ChunkJob) {
        let gpu = chunk.code.kind() == TaskKind::Webgpu;
        let best = self
            .pools
            .iter_mut()
            .filter(|p| p.gpu.is_some() == gpu)
            .max_by_key(|p| i64::from(p.slots) - p.running.len() as i64);
        let Some(pool) = best else {
            let what = if gpu { "a GPU worker" } else { "CPU workers" };
            self.done(
                job,
                Err(NodeError::new(
                    ErrorCode::TaskUnsupported,
                    format!("no tab lends this node {what}"),
                )),
            );
            return;
        };
        let frame = ComputeRequest::Run {
            nonce: job,
            chunk: 0,
            job: Box::new(chunk),
        }
        .encode();
        let bytes = Uint8Array::from(frame.as_slice());
        let msg = Object::new();
        let _ = Reflect::set(&msg, &"job".into(), &JsValue::from_f64(job as f64));
        let _ = Reflect::set(&msg, &"bytes".into(), &bytes);
        match pool
            .port
            .post_message_with_transferable(&msg, &Array::of1(&bytes.buffer()))
        {
            Ok(()) => {
                pool.running.insert(job);
            }
            Err(e) => self.done(
                job,
                Err(NodeError::new(
                    ErrorCode::TaskChunkFailed,
                    format!("posting to the worker pool failed: {e:?}"),
                )),
            ),
        }
    }

    /// The node no longer wants a job's result; the pool drops it if it has not started.
    pub(crate) fn abort(&mut self, job: u64) {
        if let Some(pool) = self
            .pools
            .iter_mut()
            .find_map(|p| p.running.remove(&job).then_some(p))
        {
            let msg = Object::new();
            let _ = Reflect::set(&msg, &"abort".into(), &JsValue::from_f64(job as f64));
            let _ = pool.port.post_message(&msg);
        }
    }

    fn on_result(&mut self, tab: TabId, data: JsValue) {
        let job = Reflect::get(&data, &"job".into())
            .ok()
            .and_then(|j| j.as_f64())
            .map(|j| j as u64);
        let bytes = Reflect::get(&data, &"bytes".into())
            .ok()
            .and_then(|b| b.dyn_into::<Uint8Array>().ok());
        let (Some(job), Some(bytes)) = (job, bytes) else {
            tracing::warn!(tab, "a worker pool sent a malformed message");
            return;
        };
        // Only jobs this tab's executors were given count; a late answer to an aborted job
        // is dropped.
        if !self
            .pools
            .iter_mut()
            .any(|p| p.tab == tab && p.running.remove(&job))
        {
            return;
        }
        let result = match ComputeResponse::decode(&bytes.to_vec()) {
            Ok(ComputeResponse::Result(b)) => Ok(b),
            Ok(ComputeResponse::Error(e)) => Err(e),
            Ok(ComputeResponse::Ack) | Err(_) => Err(NodeError::new(
                ErrorCode::TaskChunkFailed,
                "the worker's answer could not be read",
            )),
        };
        self.done(job, result);
    }

    fn done(&mut self, job: u64, result: Result<Vec<u8>, NodeError>) {
        if queue_lifecycle(&self.inputs, Input::ChunkDone { job, result }).is_err() {
            tracing::warn!(job, "the node loop has stopped: a chunk result is lost");
        }
    }

    fn report(&mut self) {
        let cpu = self.pools.iter().filter(|p| p.gpu.is_none());
        let cpu_slots = cpu.clone().map(|p| p.slots).sum();
        let score = cpu.map(|p| p.score).fold(0.0, f64::max);
        let gpu = self.pools.iter().find_map(|p| p.gpu.clone());
        let _ = queue_lifecycle(
            &self.inputs,
            Input::Executors {
                cpu_slots,
                gpu,
                score,
            },
        );
    }
}
