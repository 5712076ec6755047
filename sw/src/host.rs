//! Delivers the node loop's outputs: storage requests to IndexedDB, the rest to the tabs.

use std::{cell::RefCell, rc::Rc};

use futures::channel::mpsc;
use peercompute_core::{
    node::{Input, Output},
    ErrorCode, NodeError,
};

use crate::{executors::Executors, ports::Ports, storage::StateStore};

/// Everything the node's outputs go to.
pub(crate) struct Host {
    pub(crate) ports: Rc<RefCell<Ports>>,
    pub(crate) executors: Rc<RefCell<Executors>>,
    pub(crate) store: Rc<StateStore>,
    /// Back into the node loop (answers to `LoadDoc`).
    pub(crate) inputs: mpsc::Sender<Input>,
}

impl Host {
    pub(crate) fn deliver(&mut self, output: Output) {
        match output {
            Output::LoadDoc { doc } => {
                let store = self.store.clone();
                let mut inputs = self.inputs.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let (records, error) = match store.load(&doc).await {
                        Ok(records) => (records, None),
                        Err(e) => (Vec::new(), Some(e)),
                    };
                    use futures::SinkExt;
                    let _ = inputs
                        .send(Input::DocLoaded {
                            doc,
                            records,
                            error,
                        })
                        .await;
                });
            }
            Output::Persist { doc, update, then } => {
                let written = self.store.append(&doc, &update);
                let ports = self.ports.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let result = written.await;
                    if let Err(e) = &result {
                        tracing::error!(doc, "a state write failed: {e}");
                    }
                    for output in then {
                        Ports::deliver(&ports, failed_if(output, &result));
                    }
                });
            }
            Output::Compact { doc, state } => {
                let done = self.store.compact(&doc, &state);
                wasm_bindgen_futures::spawn_local(async move {
                    if let Err(e) = done.await {
                        // The records stay as they were: nothing is lost, only not compacted.
                        tracing::warn!(doc, "compaction failed: {e}");
                    }
                });
            }
            Output::RunChunk { job, chunk } => self.executors.borrow_mut().run(job, chunk),
            Output::AbortChunk { job } => self.executors.borrow_mut().abort(job),
            other => Ports::deliver(&self.ports, other),
        }
    }
}

/// A reply held back for a write that failed becomes a `STATE_PERSIST_FAILED` error.
fn failed_if(output: Output, result: &Result<(), String>) -> Output {
    match (output, result) {
        (Output::Reply { tab, id, .. }, Err(e)) => Output::Reply {
            tab,
            id,
            result: Err(NodeError::new(
                ErrorCode::StatePersistFailed,
                format!("the change is applied but could not be stored: {e}"),
            )),
        },
        (output, _) => output,
    }
}
