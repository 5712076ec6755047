//! Native host of a [`Node`]: the counterpart of the browser's SharedWorker adapter, used by
//! native peers, integration tests and benchmarks.

use std::collections::VecDeque;

use futures::channel::mpsc;
use libp2p::{identity::Keypair, PeerId};
use tokio::sync::mpsc as tokio_mpsc;

use crate::{
    error::ErrorCode,
    limits::TAB_INPUT_QUEUE,
    node::{Input, Node, NodeConfig, Output},
    tab_protocol::{Event, ReplyValue, Request, RequestId, TabId},
    NodeError,
};

/// Depth of the output queue; the node never blocks on it, so a consumer that stops reading
/// loses events beyond this (and is told so in the log), never replies it is waiting for.
const OUTPUT_QUEUE: usize = 65_536;

/// A node running on the tokio runtime, driven like a single tab.
pub struct NativeNode {
    inputs: mpsc::Sender<Input>,
    outputs: tokio_mpsc::Receiver<Output>,
    events: VecDeque<Event>,
    peer_id: PeerId,
    tab: TabId,
    next_id: RequestId,
    task: tokio::task::JoinHandle<()>,
}

impl NativeNode {
    /// Builds the node and spawns its loop.
    pub async fn spawn(keypair: Keypair, config: NodeConfig) -> Result<Self, NodeError> {
        let node = Node::native(keypair, config).await?;
        let peer_id = node.peer_id();
        let (tx, rx) = mpsc::channel(TAB_INPUT_QUEUE);
        let (out_tx, out_rx) = tokio_mpsc::channel(OUTPUT_QUEUE);
        let task = tokio::spawn(node.run(rx, move |output| {
            if out_tx.try_send(output).is_err() {
                tracing::warn!("native node output queue full; dropping an output");
            }
        }));
        let mut this = NativeNode {
            inputs: tx,
            outputs: out_rx,
            events: VecDeque::new(),
            peer_id,
            tab: 1,
            next_id: 1,
            task,
        };
        this.send(Input::Attach(this.tab)).await?;
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
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.send(Input::Request {
            tab: self.tab,
            id,
            request,
        })
        .await?;
        loop {
            match self.outputs.recv().await {
                Some(Output::Reply {
                    id: got, result, ..
                }) if got == id => return result,
                Some(Output::Reply { .. } | Output::Forget { .. }) => {}
                Some(Output::Event { event, .. }) => self.events.push_back(event),
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
            match self.outputs.recv().await? {
                Output::Event { event, .. } => return Some(event),
                Output::Reply { .. } | Output::Forget { .. } => {}
            }
        }
    }

    /// Stops the node.
    pub fn stop(self) {
        self.task.abort();
    }
}
