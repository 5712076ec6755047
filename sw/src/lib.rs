//! PeerCompute's node hosted in a module SharedWorker: one node per origin, shared by every tab.
//!
//! This crate is the thin browser adapter around `peercompute-core`: it turns `MessagePort`
//! messages into core [`Input`]s and core [`Output`]s back into port messages, keeps the node's
//! identity in IndexedDB, and watches each tab's Web Lock to learn when the tab is gone.
//! All protocol logic lives in the core crate and is tested natively.
#![cfg(all(target_family = "wasm", target_os = "unknown"))]

mod db;
mod executors;
mod host;
mod identity;
mod ports;
mod storage;

use std::{cell::RefCell, rc::Rc};

use futures::channel::mpsc;
use peercompute_core::{limits::TAB_INPUT_QUEUE, Node, NodeConfig};
use wasm_bindgen::prelude::*;
use web_sys::MessagePort;

use crate::ports::Ports;

/// The worker's node. Created once by `worker.js`; every connecting tab's port is attached.
#[wasm_bindgen]
pub struct WorkerNode {
    ports: Rc<RefCell<Ports>>,
}

#[wasm_bindgen]
impl WorkerNode {
    /// Loads (or creates) the identity, builds the swarm and starts the node loop.
    pub async fn start() -> Result<WorkerNode, JsValue> {
        console_error_panic_hook::set_once();
        tracing_wasm::set_as_global_default_with_config(
            tracing_wasm::WASMLayerConfigBuilder::new()
                .set_max_level(tracing::Level::INFO)
                .set_report_logs_in_timings(false)
                .build(),
        );
        let db = db::open().await?;
        let keypair = identity::load_or_create(&db).await?;
        let node = Node::browser(keypair, NodeConfig::default())
            .map_err(|e| JsValue::from_str(&e.to_string()))?;
        tracing::info!(peer_id = %node.peer_id(), "PeerCompute node started");
        let (inputs, rx) = mpsc::channel(TAB_INPUT_QUEUE);
        let executors = Rc::new(RefCell::new(executors::Executors::new(inputs.clone())));
        let ports = Rc::new(RefCell::new(Ports::new(inputs.clone(), executors.clone())));
        let mut host = host::Host {
            ports: ports.clone(),
            executors,
            store: storage::StateStore::new(db),
            inputs,
        };
        wasm_bindgen_futures::spawn_local(node.run(rx, move |output| host.deliver(output)));
        Ok(WorkerNode { ports })
    }

    /// Attaches a tab's port.
    pub fn attach(&self, port: MessagePort) {
        Ports::attach(&self.ports, port);
    }
}
