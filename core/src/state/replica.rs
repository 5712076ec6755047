//! A set of shared documents and the y-sync handling between peers, independent of the
//! transport and of storage: used by the browser node and by the pinning relay.

use std::collections::BTreeMap;

use yrs::sync::SyncMessage;

use super::{
    document::{Applied, SharedDoc},
    path::validate_doc_name,
    sync_protocol::{DocMessages, FramePacker, SyncFrame, FRAME_HEADER_BYTES},
};
use crate::{
    error::ErrorCode,
    limits::{
        COMPACT_AFTER_RECORDS, COMPACT_ALWAYS_AFTER_RECORDS, MAX_DOC_BYTES,
        MAX_PENDING_UPDATE_BYTES, MAX_SYNC_FRAME_BYTES,
    },
    NodeError,
};

/// An encoded update with no structs and an empty delete set: nothing to send.
const EMPTY_UPDATE: [u8; 2] = [0, 0];

/// One document and its storage bookkeeping.
#[derive(Debug, Default)]
pub struct DocState {
    /// The document.
    pub doc: SharedDoc,
    /// Update records stored since the last compaction.
    pub records: usize,
    /// Bytes stored: the last compacted state plus the records appended since (and, for a
    /// document whose storage is unreadable, the updates held in memory only).
    pub stored_bytes: usize,
    /// Bytes of the last compacted state this replica wrote (0 until it writes one).
    pub compacted_bytes: usize,
    /// The host could not read the document's stored records. Writing would then overwrite
    /// or compact away records nobody has read, so local writes are refused and nothing is
    /// persisted until the document is loaded again.
    pub storage_unreadable: bool,
    /// Bytes of the peers' updates yrs holds pending (waiting for history this copy lacks),
    /// bounded by [`MAX_PENDING_UPDATE_BYTES`]; back to 0 once nothing is pending.
    pub pending_bytes: usize,
}

impl DocState {
    /// Counts an appended record; says whether the document is due for compaction (see
    /// [`COMPACT_AFTER_RECORDS`]).
    pub fn note_appended(&mut self, bytes: usize) -> bool {
        self.records += 1;
        self.stored_bytes += bytes;
        let appended = self.stored_bytes.saturating_sub(self.compacted_bytes);
        self.records > COMPACT_AFTER_RECORDS
            && (appended >= self.compacted_bytes / 2 || self.records > COMPACT_ALWAYS_AFTER_RECORDS)
            && self.compaction_keeps_everything()
    }

    /// Whether a compaction would keep every stored update. The compacted state holds only
    /// what yrs integrated: updates waiting for one that is missing (a damaged record's, or
    /// history a peer has yet to send) would be dropped from storage.
    pub fn compaction_keeps_everything(&self) -> bool {
        !self.doc.has_pending()
    }

    /// The document's full state, to store as the one record replacing all before it (and
    /// counted as such).
    pub fn compacted(&mut self) -> Vec<u8> {
        let full = self.doc.encode_state();
        self.records = 1;
        self.stored_bytes = full.len();
        self.compacted_bytes = full.len();
        full
    }

    /// Refuses `incoming` more bytes once the document would pass [`MAX_DOC_BYTES`], whoever
    /// writes them (a tab, an import, a peer): its stored form stays bounded, so its compacted
    /// state always fits in one loadable record.
    pub fn check_room(&self, name: &str, incoming: usize) -> Result<(), NodeError> {
        if self.stored_bytes.saturating_add(incoming) > MAX_DOC_BYTES {
            return Err(NodeError::new(
                ErrorCode::StateDocTooLarge,
                format!("document {name:?} has reached {MAX_DOC_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// Refuses a tab's write to a document whose stored records could not be read (it could
    /// overwrite them). Peers' updates still come in, and stay in memory.
    pub fn check_writable(&self, name: &str) -> Result<(), NodeError> {
        if self.storage_unreadable {
            return Err(NodeError::new(
                ErrorCode::StatePersistFailed,
                format!(
                    "document {name:?}'s stored records could not be read, so writes to it are \
                     refused (they could overwrite them); reload to try again"
                ),
            ));
        }
        Ok(())
    }
}

/// What a batch of records or a sync message did to each document.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// Documents that changed, with what changed (to persist and to show to tabs).
    pub applied: Vec<(String, Applied)>,
    /// Messages refused as malformed (or naming documents this replica does not hold, in
    /// a response): counted, never applied. A gossiped one is reported invalid.
    pub rejected: usize,
    /// Well-formed updates this replica did not take: its copy is at its size bound, or too
    /// much waits for missing history. The sender did nothing wrong, so a gossiped one is
    /// still forwarded (a relay routes for others whatever it pins).
    pub refused: usize,
    /// Documents a peer's response left for another request (its frame was full): ask for
    /// them again. Only filled when the response answered something, so a peer that answers
    /// nothing cannot keep the two nodes asking each other forever.
    pub ask_again: Vec<String>,
}

/// What loading stored records did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// Records applied.
    pub applied: usize,
    /// Records that could not be decoded or applied; skipped.
    pub corrupt: usize,
}

/// The documents a node holds.
#[derive(Debug)]
pub struct Replica {
    docs: BTreeMap<String, DocState>,
    max_docs: usize,
    /// Largest frame this replica builds ([`MAX_SYNC_FRAME_BYTES`]; smaller in tests).
    frame_budget: usize,
    /// Bytes all documents may store together (a pinning relay's disk budget); peers'
    /// updates and new documents past it are not taken.
    max_total_bytes: usize,
}

impl Replica {
    /// An empty replica that holds at most `max_docs` documents.
    pub fn new(max_docs: usize) -> Self {
        Replica {
            docs: BTreeMap::new(),
            max_docs,
            frame_budget: MAX_SYNC_FRAME_BYTES,
            max_total_bytes: usize::MAX,
        }
    }

    /// A replica whose documents store at most `max_total_bytes` together (see
    /// [`Self::stored_total`]).
    pub fn with_total_budget(max_docs: usize, max_total_bytes: usize) -> Self {
        Replica {
            max_total_bytes,
            ..Replica::new(max_docs)
        }
    }

    /// Bytes the documents store: each one's last compacted state and the records since.
    pub fn stored_total(&self) -> usize {
        self.docs.values().map(|d| d.stored_bytes).sum()
    }

    /// A replica whose frames hold at most `budget` bytes, to test splitting without
    /// documents of tens of MiB.
    #[cfg(test)]
    pub(crate) fn with_frame_budget(max_docs: usize, budget: usize) -> Self {
        Replica {
            frame_budget: budget,
            ..Replica::new(max_docs)
        }
    }

    /// The document named `name`, if held.
    pub fn get(&self, name: &str) -> Option<&SharedDoc> {
        self.docs.get(name).map(|d| &d.doc)
    }

    /// The document and its bookkeeping.
    pub fn state(&self, name: &str) -> Option<&DocState> {
        self.docs.get(name)
    }

    /// The document and its bookkeeping, to update.
    pub fn state_mut(&mut self, name: &str) -> Option<&mut DocState> {
        self.docs.get_mut(name)
    }

    /// Names of the documents held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.docs.keys().map(String::as_str)
    }

    /// How many documents are held.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether no document is held.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Creates an empty document (or returns the one held).
    pub fn create(&mut self, name: &str) -> Result<&SharedDoc, NodeError> {
        self.create_within(name, self.max_total_bytes)
    }

    /// [`Self::create`], refusing a new document once the documents store `max_total_bytes`.
    fn create_within(
        &mut self,
        name: &str,
        max_total_bytes: usize,
    ) -> Result<&SharedDoc, NodeError> {
        validate_doc_name(name)?;
        if !self.docs.contains_key(name) && self.docs.len() >= self.max_docs {
            return Err(NodeError::new(
                ErrorCode::StateTooManyDocs,
                format!("at most {} documents at once", self.max_docs),
            ));
        }
        if !self.docs.contains_key(name) && self.stored_total() >= max_total_bytes {
            return Err(NodeError::new(
                ErrorCode::StateDocTooLarge,
                format!("the documents have reached {max_total_bytes} bytes"),
            ));
        }
        Ok(&self.docs.entry(name.to_string()).or_default().doc)
    }

    /// Creates `name` from stored update records; corrupt records are skipped and counted.
    pub fn load<'a>(
        &mut self,
        name: &str,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<LoadReport, NodeError> {
        // What is stored already loads, whatever the budget for new bytes.
        self.create_within(name, usize::MAX)?;
        let mut report = LoadReport::default();
        let state = self
            .docs
            .get_mut(name)
            .ok_or_else(|| NodeError::new(ErrorCode::Internal, "document vanished"))?;
        for record in records {
            match state.doc.apply_stored_record(record) {
                // Applied up to a point yrs refused: counted corrupt, so the document is
                // compacted (the record's good part with it) and the rest not read again.
                Ok(Applied {
                    refused: Some(e), ..
                }) => {
                    tracing::warn!(doc = name, "a stored record applied in part: {}", e.message);
                    report.corrupt += 1;
                    state.stored_bytes += record.len();
                }
                Ok(_) => {
                    if report.applied == 0 {
                        // The first record is the last compacted state (or the first write).
                        state.compacted_bytes = record.len();
                    }
                    report.applied += 1;
                    state.stored_bytes += record.len();
                }
                Err(e) => {
                    tracing::warn!(
                        doc = name,
                        "skipping a corrupt stored record: {}",
                        e.message
                    );
                    report.corrupt += 1;
                }
            }
        }
        state.records = report.applied;
        Ok(report)
    }

    /// A sync request (`SyncStep1` with our state vector) for the given documents.
    pub fn sync_request<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> SyncFrame {
        SyncFrame {
            entries: names
                .into_iter()
                .filter_map(|name| {
                    let doc = self.get(name)?;
                    Some(DocMessages {
                        doc: name.to_string(),
                        messages: vec![SyncMessage::SyncStep1(doc.state_vector())],
                    })
                })
                .collect(),
        }
    }

    /// Handles a peer's request. Documents we do not hold are left out of the response, unless
    /// `adopt` says to take them on (a pinning relay). Answers that would take the response
    /// past its frame bound are left for another request (see [`super::sync_protocol`]).
    /// `frame` comes from [`SyncFrame::decode`], which has checked its updates.
    pub fn handle_request(
        &mut self,
        frame: SyncFrame,
        adopt: &dyn Fn(&str) -> bool,
    ) -> (SyncFrame, SyncOutcome) {
        self.handle_request_within(frame, adopt, usize::MAX)
    }

    /// [`Self::handle_request`], with answers of at most `limit` bytes in all (what the peer
    /// has left of its [`ResponseBudget`](super::response_budget::ResponseBudget)): the
    /// documents past it are answered "ask again", and with no room left none is diffed.
    /// Its updates are applied whatever the limit.
    pub fn handle_request_within(
        &mut self,
        frame: SyncFrame,
        adopt: &dyn Fn(&str) -> bool,
        limit: usize,
    ) -> (SyncFrame, SyncOutcome) {
        let mut response = SyncFrame::default();
        // Room kept for an "ask again" entry per document named.
        let ask_again_room: usize = frame
            .entries
            .iter()
            .map(|e| DocMessages::ask_again_len(&e.doc))
            .sum();
        let frame_room = self
            .frame_budget
            .saturating_sub(FRAME_HEADER_BYTES + ask_again_room);
        // Below a whole frame's room, even the first answer must fit the limit.
        let limited = limit < frame_room;
        let answer_budget = frame_room.min(limit);
        let mut answered_bytes = 0;
        let mut full = answer_budget == 0;
        let mut outcome = SyncOutcome::default();
        for DocMessages {
            doc: name,
            messages,
        } in frame.entries
        {
            if self.get(&name).is_none() {
                if !adopt(&name) {
                    continue;
                }
                // A pinning relay takes a document on when data for it comes, not when it
                // is only named: a request naming a thousand documents must not fill its
                // slots with empty ones. A name alone is answered as an empty document, so
                // the peer pushes what it has (which adopts it then).
                let brings_data = messages.iter().any(|m| {
                    matches!(m, SyncMessage::SyncStep2(u) | SyncMessage::Update(u)
                        if u.as_slice() != EMPTY_UPDATE)
                });
                if brings_data && self.create(&name).is_err() {
                    continue;
                }
            }
            let mut replies = Vec::new();
            let mut asked = false;
            for message in messages {
                match message {
                    SyncMessage::SyncStep1(sv) => {
                        asked = true;
                        // Once full, later documents are not even diffed: asked again, they
                        // are answered then.
                        if full {
                            continue;
                        }
                        let (diff, ours) = match self.get(&name) {
                            Some(doc) => (doc.diff(&sv), doc.state_vector()),
                            None => (EMPTY_UPDATE.to_vec(), yrs::StateVector::default()),
                        };
                        replies.push(SyncMessage::SyncStep2(diff));
                        replies.push(SyncMessage::SyncStep1(ours));
                    }
                    SyncMessage::SyncStep2(update) | SyncMessage::Update(update) => {
                        self.apply_remote(&name, &update, &mut outcome)
                    }
                }
            }
            if !asked {
                continue;
            }
            let entry = DocMessages {
                doc: name,
                messages: replies,
            };
            let bytes = entry.encoded_len();
            // Unlimited, the first answer always goes out: a document is bounded well below a
            // frame.
            full =
                full || ((limited || answered_bytes > 0) && answered_bytes + bytes > answer_budget);
            if full {
                response.entries.push(DocMessages::ask_again(entry.doc));
            } else {
                answered_bytes += bytes;
                response.entries.push(entry);
            }
        }
        (response, outcome)
    }

    /// Handles the response to our request; returns the pushes (`Update`s) for what the peer
    /// lacks, in as many frames as they need. `frame` comes from [`SyncFrame::decode`], as in
    /// [`Self::handle_request`].
    pub fn handle_response(&mut self, frame: SyncFrame) -> (Vec<SyncFrame>, SyncOutcome) {
        let mut push = FramePacker::with_budget(self.frame_budget);
        let mut outcome = SyncOutcome::default();
        let mut ask_again = Vec::new();
        let mut answered = false;
        for DocMessages {
            doc: name,
            messages,
        } in frame.entries
        {
            if self.get(&name).is_none() {
                outcome.rejected += 1;
                continue;
            }
            if messages.is_empty() {
                ask_again.push(name);
                continue;
            }
            answered = true;
            for message in messages {
                match message {
                    SyncMessage::SyncStep1(sv) => {
                        let Some(doc) = self.get(&name) else { continue };
                        let diff = doc.diff(&sv);
                        if diff != EMPTY_UPDATE {
                            push.push(DocMessages {
                                doc: name.clone(),
                                messages: vec![SyncMessage::Update(diff)],
                            });
                        }
                    }
                    SyncMessage::SyncStep2(update) | SyncMessage::Update(update) => {
                        self.apply_remote(&name, &update, &mut outcome)
                    }
                }
            }
        }
        if answered {
            outcome.ask_again = ask_again;
        }
        (push.into_frames(), outcome)
    }

    /// Applies an update a peer broadcast for a document we hold (or adopt). A malformed
    /// update is refused whether or not we hold the document, so a relay that forwards
    /// broadcasts for documents it does not pin can rely on this one check.
    pub fn apply_broadcast(&mut self, name: &str, update: &[u8], adopt: bool) -> SyncOutcome {
        let mut outcome = SyncOutcome::default();
        if let Err(e) = SharedDoc::check_update(update) {
            tracing::debug!(doc = name, "refusing a peer's update: {}", e.message);
            outcome.rejected += 1;
            return outcome;
        }
        if self.get(name).is_none() && !(adopt && self.create(name).is_ok()) {
            return outcome;
        }
        self.apply_remote(name, update, &mut outcome);
        outcome
    }

    /// Applies an update whose layout is checked: a broadcast's by [`Self::apply_broadcast`],
    /// a sync frame's by [`SyncFrame::decode`] (every frame from a peer is decoded; the
    /// frames a replica builds itself carry updates yrs encoded here).
    fn apply_remote(&mut self, name: &str, update: &[u8], outcome: &mut SyncOutcome) {
        if self.stored_total().saturating_add(update.len()) > self.max_total_bytes {
            tracing::debug!(
                doc = name,
                "not taking a peer's update: the budget is spent"
            );
            outcome.refused += 1;
            return;
        }
        let Some(state) = self.docs.get_mut(name) else {
            return;
        };
        if let Err(e) = state.check_room(name, update.len()) {
            // Full here: the update is not the sender's fault.
            tracing::debug!(doc = name, "not taking a peer's update: {}", e.message);
            outcome.refused += 1;
            return;
        }
        let result = state.doc.apply_checked_update(update);
        // Bytes held pending: an update that changed what is pending (all of it went there,
        // or part of it, or it let some integrate) counts whole. It may overcount, never
        // undercount, so a stream of partly integrating updates cannot grow pending unbounded.
        state.pending_bytes = if !state.doc.has_pending() {
            0
        } else if matches!(&result, Ok(applied) if applied.pending_changed) {
            state.pending_bytes.saturating_add(update.len())
        } else {
            state.pending_bytes
        };
        if state.pending_bytes > MAX_PENDING_UPDATE_BYTES {
            // Updates that reference history nobody has sent: forgotten, so they cannot grow
            // without bound. If the history exists, the sync exchange brings them again.
            tracing::debug!(
                doc = name,
                "dropping peers' updates waiting for missing history"
            );
            let _ = state.doc.drop_pending();
            state.pending_bytes = 0;
            outcome.refused += 1;
        }
        match result {
            Ok(mut applied) if applied.update.is_some() || applied.has_changes() => {
                // Refused partway: the integrated part is kept and reported, the sender
                // still counts as having sent something invalid.
                if let Some(e) = applied.refused.take() {
                    tracing::debug!(doc = name, "a peer's update applied in part: {}", e.message);
                    outcome.rejected += 1;
                }
                outcome.applied.push((name.to_string(), applied))
            }
            Ok(_) => {}
            // A well-formed layout yrs still cannot apply (a parent that is no type): made so.
            Err(e) => {
                tracing::debug!(doc = name, "refusing a peer's update: {}", e.message);
                outcome.rejected += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
