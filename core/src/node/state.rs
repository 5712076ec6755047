//! The node's shared documents: tabs' state requests, the y-sync exchange with peers,
//! incremental updates over gossipsub, and durability through the host's storage.
//!
//! Storage is the host's (IndexedDB in the worker, memory in native tests): the node asks for
//! a document's records with [`Output::LoadDoc`], appends updates with [`Output::Persist`] (whose
//! `then` outputs, the write's reply among them, the host delivers only once the write is
//! durable) and rewrites a document as one record with [`Output::Compact`].

use std::collections::{HashMap, HashSet};

use libp2p::{
    gossipsub::{self, MessageAcceptance, PublishError},
    request_response::{self, ResponseChannel},
    PeerId,
};
use tracing::{debug, info, warn};
use web_time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Node, Output};
use crate::{
    error::ErrorCode,
    limits::{COMPACT_ALWAYS_AFTER_RECORDS, MAX_OPEN_DOCS},
    state::{
        path::decode_ops,
        replica::DocState,
        response_budget::ResponseBudget,
        sync_protocol::{state_topic, SyncFrame},
        Applied, Replica,
    },
    tab_protocol::{Event, ReplyValue, Request, RequestId, TabId},
    NodeError,
};

/// How often documents are re-synced with every connected peer (anti-entropy), on top of the
/// sync on every new connection: it repairs updates lost while a gossip route was re-forming.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// The node's documents and who watches them.
pub(super) struct NodeState {
    pub(super) replica: Replica,
    /// Tabs that opened each document (they get `state` events).
    watchers: HashMap<String, HashSet<TabId>>,
    /// Documents being loaded from storage, with the `stateOpen` requests waiting for them.
    loading: HashMap<String, Vec<(TabId, RequestId)>>,
    /// When every document was last synced with every peer (the node's tests read it).
    pub(super) last_resync: Option<Instant>,
    /// Answers to peers' sync requests not yet sent: bounded per peer and in all.
    answers: ResponseBudget<request_response::InboundRequestId>,
}

impl NodeState {
    pub(super) fn new() -> Self {
        NodeState {
            replica: Replica::new(MAX_OPEN_DOCS),
            watchers: HashMap::new(),
            loading: HashMap::new(),
            last_resync: None,
            answers: ResponseBudget::default(),
        }
    }

    pub(super) fn forget_tab(&mut self, tab: TabId) {
        for tabs in self.watchers.values_mut() {
            tabs.remove(&tab);
        }
        for waiting in self.loading.values_mut() {
            waiting.retain(|(t, _)| *t != tab);
        }
    }

    /// Names of the documents held, for status.
    pub(super) fn documents(&self) -> Vec<String> {
        self.replica.names().map(String::from).collect()
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

impl Node {
    /// Handles a state request; `None` means the reply comes later (after loading, or once
    /// the write is durable).
    pub(super) fn on_state_request(
        &mut self,
        tab: TabId,
        id: RequestId,
        request: Request,
        sink: &mut impl FnMut(Output),
    ) -> Option<Result<ReplyValue, NodeError>> {
        // Reads are answered here; writes fall through to `commit_local`.
        let (doc, written) = match request {
            Request::StateOpen { doc } => return self.open_doc(tab, id, doc, sink),
            Request::StateClose { doc } => {
                if let Some(tabs) = self.state.watchers.get_mut(&doc) {
                    tabs.remove(&tab);
                }
                return Some(Ok(ReplyValue::Done));
            }
            Request::StateVersions { doc } => {
                return Some(
                    self.opened(&doc)
                        .map(|d| ReplyValue::Versions(d.doc.versions())),
                )
            }
            Request::StateAt { doc, version } => {
                return Some(
                    self.opened(&doc)
                        .and_then(|d| d.doc.json_at(&version))
                        .map(|json| ReplyValue::Tree { json }),
                )
            }
            Request::StateExport { doc } => {
                return Some(self.opened(&doc).map(|d| ReplyValue::Update {
                    bytes: d.doc.encode_state(),
                }))
            }
            Request::StateUpdate { doc, ops } => {
                let written = decode_ops(&ops).and_then(|ops| {
                    let state = self.opened(&doc)?;
                    state.check_writable(&doc)?;
                    state.check_room(&doc, 0)?;
                    state.doc.apply_ops(&ops)
                });
                (doc, written.map(|applied| (applied, Ok(ReplyValue::Done))))
            }
            Request::StateImport { doc, bytes } => {
                let written = self.opened(&doc).and_then(|d| {
                    d.check_writable(&doc)?;
                    d.check_room(&doc, bytes.len())?;
                    d.doc.apply_update(&bytes)
                });
                // What yrs holds back for missing history would be neither stored nor
                // acknowledged truthfully: it is dropped (with what peers' updates had waiting,
                // which the sync brings again), and the tab is told what is missing.
                let written = written.map(|mut applied| {
                    if applied.pending_changed {
                        if let Some(d) = self.state.replica.state_mut(&doc) {
                            let missing = missing_history(&d.doc.drop_pending());
                            d.pending_bytes = 0;
                            applied.refused.get_or_insert(missing);
                        }
                    }
                    applied
                });
                // Refused partway: what went in is kept like any write, and the tab hears
                // why the rest did not, once that part is durable.
                let written = written.map(|mut applied| {
                    let reply = applied.refused.take().map_or(Ok(ReplyValue::Done), Err);
                    (applied, reply)
                });
                (doc, written)
            }
            Request::StateSnapshot { doc, label } => {
                let version_id = format!("v{:016x}", rand::random::<u64>());
                let written = self.opened(&doc).and_then(|d| {
                    d.check_writable(&doc)?;
                    d.check_room(&doc, 0)?;
                    d.doc.snapshot(&version_id, &label, now_ms())
                });
                (
                    doc,
                    written.map(|(version, applied)| (applied, Ok(ReplyValue::Version(version)))),
                )
            }
            // No room check: deleting is how a document at its version bound makes room.
            Request::StateDeleteVersion { doc, version } => {
                let written = self.opened(&doc).and_then(|d| {
                    d.check_writable(&doc)?;
                    d.doc.delete_version(&version)
                });
                (doc, written.map(|applied| (applied, Ok(ReplyValue::Done))))
            }
            _ => {
                return Some(Err(NodeError::new(
                    ErrorCode::Internal,
                    "not a state request",
                )))
            }
        };
        match written {
            Ok((applied, reply)) => self.commit_local(tab, id, &doc, applied, reply, sink),
            Err(e) => Some(Err(e)),
        }
    }

    /// A document a tab has opened on this node.
    fn opened(&self, doc: &str) -> Result<&DocState, NodeError> {
        self.state.replica.state(doc).ok_or_else(|| {
            NodeError::new(
                ErrorCode::StateNotOpen,
                format!("open document {doc:?} first"),
            )
        })
    }

    /// A local change: shown to every watching tab now, broadcast now, acknowledged to the
    /// writer once durable.
    fn commit_local(
        &mut self,
        tab: TabId,
        id: RequestId,
        doc: &str,
        applied: Applied,
        reply: Result<ReplyValue, NodeError>,
        sink: &mut impl FnMut(Output),
    ) -> Option<Result<ReplyValue, NodeError>> {
        self.emit_changes(doc, &applied, true, sink);
        let Some(update) = applied.update else {
            return Some(reply); // nothing changed: nothing to make durable
        };
        self.broadcast_update(doc, &update);
        self.persist(
            doc,
            update,
            vec![Output::Reply {
                tab,
                id,
                result: reply,
            }],
            sink,
        );
        None
    }

    fn open_doc(
        &mut self,
        tab: TabId,
        id: RequestId,
        doc: String,
        sink: &mut impl FnMut(Output),
    ) -> Option<Result<ReplyValue, NodeError>> {
        if let Some(d) = self.state.replica.get(&doc) {
            let json = d.to_json_text();
            self.state.watchers.entry(doc).or_default().insert(tab);
            return Some(Ok(ReplyValue::Tree { json }));
        }
        if let Some(waiting) = self.state.loading.get_mut(&doc) {
            waiting.push((tab, id));
            return None;
        }
        if self.state.replica.len() + self.state.loading.len() >= MAX_OPEN_DOCS {
            return Some(Err(NodeError::new(
                ErrorCode::StateTooManyDocs,
                format!("a node holds at most {MAX_OPEN_DOCS} documents"),
            )));
        }
        self.state.loading.insert(doc.clone(), vec![(tab, id)]);
        sink(Output::LoadDoc { doc });
        None
    }

    /// The host read a document's stored records (or failed to: `error`).
    pub(super) fn on_doc_loaded(
        &mut self,
        doc: String,
        records: Vec<Vec<u8>>,
        error: Option<String>,
        sink: &mut impl FnMut(Output),
    ) {
        let waiting = self.state.loading.remove(&doc).unwrap_or_default();
        let report = self
            .state
            .replica
            .load(&doc, records.iter().map(Vec::as_slice));
        if let Some(e) = &error {
            // The node still opens the document, empty, so tabs see what peers send. But
            // nothing is written: an append or a compaction could overwrite or delete the
            // records that could not be read.
            warn!(doc, "loading the document from storage failed: {e}");
            if let Some(state) = self.state.replica.state_mut(&doc) {
                state.storage_unreadable = true;
            }
        }
        let result = match report {
            Ok(report) => {
                if report.corrupt > 0 {
                    warn!(
                        doc,
                        corrupt = report.corrupt,
                        "skipped corrupt stored records"
                    );
                }
                info!(doc, records = report.applied, "document loaded");
                // Past the record cap only (`COMPACT_ALWAYS_AFTER_RECORDS`): a large document's
                // records are not rewritten at every load.
                let keeps_everything = self
                    .state
                    .replica
                    .state(&doc)
                    .is_some_and(|s| s.compaction_keeps_everything());
                if keeps_everything
                    && (report.applied + report.corrupt > COMPACT_ALWAYS_AFTER_RECORDS
                        || report.corrupt > 0)
                {
                    self.compact(&doc, sink);
                }
                let topic = state_topic(&doc);
                if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
                    warn!(doc, "subscribing to the document's updates failed: {e}");
                }
                let peers = self.sync_peers();
                for peer in peers {
                    self.send_sync(peer, [doc.as_str()]);
                }
                // The periodic resync counts from here: the first tick after the first
                // document opened would otherwise ask every peer again at once, and a
                // newcomer got (and applied) the whole document twice.
                self.state.last_resync.get_or_insert_with(Instant::now);
                self.state
                    .replica
                    .get(&doc)
                    .map(|d| d.to_json_text())
                    .ok_or_else(|| NodeError::new(ErrorCode::Internal, "document vanished"))
            }
            Err(e) => Err(e),
        };
        for (tab, id) in waiting {
            if !self.tabs.contains_key(&tab) {
                continue;
            }
            if result.is_ok() {
                self.state
                    .watchers
                    .entry(doc.clone())
                    .or_default()
                    .insert(tab);
            }
            sink(Output::Reply {
                tab,
                id,
                result: result.clone().map(|json| ReplyValue::Tree { json }),
            });
        }
    }

    fn emit_changes(
        &self,
        doc: &str,
        applied: &Applied,
        local: bool,
        sink: &mut impl FnMut(Output),
    ) {
        if !applied.has_changes() {
            return;
        }
        let Some(tabs) = self.state.watchers.get(doc) else {
            return;
        };
        let json = applied.changes_json();
        for &tab in tabs {
            sink(Output::Event {
                tab,
                event: Event::State {
                    doc: doc.to_string(),
                    changes: json.clone(),
                    local,
                },
            });
        }
    }

    fn persist(
        &mut self,
        doc: &str,
        update: Vec<u8>,
        then: Vec<Output>,
        sink: &mut impl FnMut(Output),
    ) {
        // A peer's update to a document whose records could not be read stays in memory;
        // tabs' writes were refused before they were applied (`check_writable`). It still
        // counts against the document's byte bound (and the replica's), as if stored.
        if let Some(s) = self
            .state
            .replica
            .state_mut(doc)
            .filter(|s| s.storage_unreadable)
        {
            s.stored_bytes += update.len();
            let refused = NodeError::new(
                ErrorCode::StatePersistFailed,
                format!("document {doc:?}'s stored records could not be read; kept in memory only"),
            );
            for output in then {
                sink(match output {
                    Output::Reply { tab, id, .. } => Output::Reply {
                        tab,
                        id,
                        result: Err(refused.clone()),
                    },
                    other => other,
                });
            }
            return;
        }
        let compact = self
            .state
            .replica
            .state_mut(doc)
            .is_some_and(|s| s.note_appended(update.len()));
        sink(Output::Persist {
            doc: doc.to_string(),
            update,
            then,
        });
        if compact {
            self.compact(doc, sink);
        }
    }

    fn compact(&mut self, doc: &str, sink: &mut impl FnMut(Output)) {
        let Some(state) = self.state.replica.state_mut(doc) else {
            return;
        };
        if state.storage_unreadable {
            return; // it would delete the records that could not be read
        }
        let full = state.compacted();
        debug!(doc, bytes = full.len(), "compacting");
        sink(Output::Compact {
            doc: doc.to_string(),
            state: full,
        });
    }

    fn broadcast_update(&mut self, doc: &str, update: &[u8]) {
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(state_topic(doc), update.to_vec())
        {
            Ok(_) | Err(PublishError::Duplicate) => {}
            // Too large for one gossip message, no route yet (the relay has not yet heard
            // that we subscribed), queues full: run the y-sync exchange with every connected
            // peer now, which carries the update in a sync frame. A write never waits for the
            // next `RESYNC_INTERVAL` to leave this node, so a pinning relay has it even when
            // the tab closes right after.
            Err(e) => {
                debug!(doc, "state update not gossiped ({e}): syncing instead");
                for peer in self.sync_peers() {
                    self.send_sync(peer, [doc]);
                }
            }
        }
    }

    /// Peers to sync documents with: connected relays and browser peers.
    fn sync_peers(&self) -> Vec<PeerId> {
        self.relays
            .iter()
            .filter(|r| r.connected)
            .map(|r| r.peer_id)
            .chain(
                self.peers
                    .iter()
                    .filter(|(_, p)| p.connections > 0)
                    .map(|(id, _)| *id),
            )
            .collect()
    }

    fn send_sync<'a>(&mut self, peer: PeerId, docs: impl IntoIterator<Item = &'a str>) {
        let frame = self.state.replica.sync_request(docs);
        if !frame.entries.is_empty() {
            self.swarm
                .behaviour_mut()
                .state_sync
                .send_request(&peer, frame);
        }
    }

    /// A connection to `peer` came up: exchange state vectors for every document.
    pub(super) fn sync_all_with(&mut self, peer: PeerId) {
        let names: Vec<String> = self.state.replica.names().map(String::from).collect();
        self.send_sync(peer, names.iter().map(String::as_str));
    }

    pub(super) fn resync_tick(&mut self, now: Instant) {
        if self.state.replica.is_empty()
            || self
                .state
                .last_resync
                .is_some_and(|t| now.duration_since(t) < RESYNC_INTERVAL)
        {
            return;
        }
        self.state.last_resync = Some(now);
        for peer in self.sync_peers() {
            self.sync_all_with(peer);
        }
    }

    /// An update broadcast on a document's topic.
    pub(super) fn on_state_gossip(
        &mut self,
        doc: &str,
        message: &gossipsub::Message,
        sink: &mut impl FnMut(Output),
    ) -> MessageAcceptance {
        if self.state.replica.get(doc).is_none() {
            return MessageAcceptance::Ignore;
        }
        let outcome = self
            .state
            .replica
            .apply_broadcast(doc, &message.data, false);
        // Applied first: an update refused partway has changed the document all the same.
        self.apply_outcome(outcome.applied, sink);
        if outcome.rejected > 0 {
            return MessageAcceptance::Reject;
        }
        MessageAcceptance::Accept
    }

    fn apply_outcome(&mut self, applied: Vec<(String, Applied)>, sink: &mut impl FnMut(Output)) {
        for (doc, applied) in applied {
            self.emit_changes(&doc, &applied, false, sink);
            if let Some(update) = applied.update {
                self.persist(&doc, update, Vec::new(), sink);
            }
        }
    }

    pub(super) fn on_sync_event(
        &mut self,
        event: request_response::Event<SyncFrame, SyncFrame>,
        sink: &mut impl FnMut(Output),
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => self.on_sync_request(peer, request_id, request, channel, sink),
                request_response::Message::Response { response, .. } => {
                    let (pushes, outcome) = self.state.replica.handle_response(response);
                    if outcome.rejected > 0 {
                        debug!(%peer, rejected = outcome.rejected, "refused parts of a sync response");
                    }
                    self.apply_outcome(outcome.applied, sink);
                    for push in pushes {
                        self.swarm
                            .behaviour_mut()
                            .state_sync
                            .send_request(&peer, push);
                    }
                    // The peer's answer was full: ask for the rest now, not at the next resync.
                    let rest = outcome.ask_again;
                    self.send_sync(peer, rest.iter().map(String::as_str));
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                debug!(%peer, "sync request failed: {error}");
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.state.answers.settle(&request_id);
                debug!(%peer, "sync request from peer failed: {error}");
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.state.answers.settle(&request_id);
            }
        }
    }

    fn on_sync_request(
        &mut self,
        peer: PeerId,
        request_id: request_response::InboundRequestId,
        request: SyncFrame,
        channel: ResponseChannel<SyncFrame>,
        sink: &mut impl FnMut(Output),
    ) {
        let now = Instant::now();
        let limit = self.state.answers.available(&peer, now);
        let (response, outcome) =
            self.state
                .replica
                .handle_request_within(request, &|_| false, limit);
        if outcome.rejected > 0 {
            debug!(%peer, rejected = outcome.rejected, "refused parts of a sync request");
        }
        self.apply_outcome(outcome.applied, sink);
        let bytes = response.encoded_len();
        if self
            .swarm
            .behaviour_mut()
            .state_sync
            .send_response(channel, response)
            .is_ok()
        {
            self.state.answers.spend(peer, request_id, bytes, now);
        }
    }
}

fn missing_history(missing: &yrs::StateVector) -> NodeError {
    let mut needed: Vec<String> = missing
        .iter()
        .take(4)
        .map(|(client, clock)| format!("client {client} from clock {clock}"))
        .collect();
    if missing.len() > needed.len() {
        needed.push("…".into());
    }
    NodeError::new(
        ErrorCode::StateMissingHistory,
        format!(
            "the update builds on changes this document does not have ({}): import those \
             first; whatever did not depend on them went in",
            needed.join(", ")
        ),
    )
}
