//! One shared document: a yrs `Doc` whose root map `"root"` holds the application's JSON tree,
//! flattened to one entry per leaf.
//!
//! Why flat: in Yjs two peers that concurrently create the same nested map (say `players`,
//! when the first two players join at once) each make their own, and one of them is dropped
//! with everything written into it. Here every leaf is its own entry of the root map, keyed by
//! its path (keys joined by U+001F), so writes to different leaves always merge and a write to
//! the same leaf is last-writer-wins. Arrays and scalars are leaves; an empty object is a leaf
//! `{}`. Reading rebuilds objects from the leaves under a path (`key_index.rs` keeps that a
//! range scan); where concurrent writes left both a leaf and entries below it, the entries
//! below win, the same on every replica.
//!
//! Every change, local or remote, is reported as a list of [`Change`]s (a path and its new
//! value) that tabs apply to their mirror. History is kept (GC off) so named versions can be
//! read back.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::{Map as JsonMap, Number as JsonNumber, Value};
use yrs::{
    any::Number,
    types::ToJson,
    updates::{
        decoder::Decode,
        encoder::{Encode, Encoder, EncoderV1},
    },
    Any, Doc, In, Map, MapPrelim, MapRef, Options, Out, ReadTxn, Snapshot, StateVector, Transact,
    Update, WriteTxn,
};

use super::{
    key_index::KeyIndex,
    path::{Op, Path},
    update_check::{check_snapshot_v1, check_update_v1},
};
use crate::{
    error::ErrorCode,
    limits::{
        MAX_PATH_SEGMENTS, MAX_STORED_RECORD_BYTES, MAX_SYNC_UPDATE_BYTES, MAX_VERSIONS_PER_DOC,
        MAX_VERSION_LABEL_BYTES,
    },
    NodeError,
};

/// Name of the root map that holds the application's tree (`ydoc.getMap('root')` in Yjs).
pub const ROOT_MAP: &str = "root";
/// Name of the root map that holds named versions.
pub const VERSIONS_MAP: &str = "versions";
/// Joins path keys into an entry key; path keys cannot contain control characters.
pub const KEY_SEPARATOR: char = '\u{1f}';

/// A transaction that fills an empty document with more entries than this is reported to the
/// tabs as one change at the root (the whole tree) rather than one change per entry: for a
/// newcomer's first sync of a 100k-entry document that is a third of the JSON, and the tab
/// replaces its view at once instead of applying 100k changes.
const FILL_REPORTED_PER_ENTRY_MAX: usize = 64;

/// A peer's update that adds at least this many items, and at least as many as the document
/// has entries, is handled like a fill: the key index is rebuilt from the map and the tabs get
/// the whole tree. Rebuilding is one pass over the entries, no more than the items the update
/// brings, and yrs's per-key diff of a large update is the commit's largest cost. A newcomer
/// that got a recent broadcast before its sync's answer is the case in point. Items, not
/// bytes: one large value is one item and stays a change of one entry.
const REBUILD_MIN_ITEMS: u64 = 1024;

/// The most leaves a rebuild's list of the tree is sized for up front. The size is a hint
/// from the update's blocks, which count deleted items and GC ranges too: a history-heavy
/// update, or a hostile one of nothing but tiny GC ranges, would otherwise size the list far
/// past the entries it ends up holding. A larger document's list grows past this as it fills.
const REBUILD_CAPACITY_MAX: usize = 1 << 18;

/// A named version of a document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Version {
    /// Unique id (`at(id)` reads it back).
    pub id: String,
    /// The label given to `snapshot`.
    pub label: String,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub time: f64,
}

/// A path and its value after a transaction; `None` means the entry was removed. Serialized
/// as `{"path": [...], "value": ...}` (no `value` when removed).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The path's entry key, shared with the document (a change costs no copy of its path);
    /// `None` is the root.
    key: Option<Arc<str>>,
    /// The new value, or `None` when deleted.
    pub value: Option<Value>,
}

impl Change {
    /// A change at `path` (empty: the root).
    pub fn new(path: &[String], value: Option<Value>) -> Self {
        Change {
            key: (!path.is_empty()).then(|| entry_key_shared(path)),
            value,
        }
    }

    /// Keys from the document root.
    pub fn path(&self) -> Path {
        self.key.as_deref().map(key_path).unwrap_or_default()
    }
}

impl Serialize for Change {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        struct Segments<'a>(Option<&'a str>);
        impl Serialize for Segments<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self.0 {
                    // Most keys: one segment, written without a `char` search for splits.
                    Some(key) if !nested(key) => serializer.collect_seq([key]),
                    key => {
                        serializer.collect_seq(key.into_iter().flat_map(|k| k.split(KEY_SEPARATOR)))
                    }
                }
            }
        }
        let mut change = serializer.serialize_struct("Change", 2)?;
        change.serialize_field("path", &Segments(self.key.as_deref()))?;
        match &self.value {
            Some(value) => change.serialize_field("value", value)?,
            None => change.skip_field("value")?,
        }
        change.end()
    }
}

/// What applying something to a document did.
#[derive(Debug, Default)]
pub struct Applied {
    /// The Yjs v1 update of what actually changed, to persist (and, when local, broadcast);
    /// `None` when the document already had all of it.
    pub update: Option<Vec<u8>>,
    /// The changed paths for the tabs.
    pub changes: Vec<Change>,
    /// After a large fill: the whole tree, as JSON text, which replaces the tabs' view (a
    /// change at the root; `changes` is then empty). Written straight from the entries: built
    /// as a `Value` first and then serialized, a newcomer's 100k-entry tree took 2–3× as long
    /// in the browser.
    pub tree: Option<String>,
    /// yrs stopped applying the update partway (a layout-valid update can still be invalid,
    /// e.g. an item whose parent is a plain value): why. yrs cannot undo what it integrated
    /// before stopping, so `update` and the changes hold that part, to persist and to show
    /// like any other change; the rest was refused.
    pub refused: Option<NodeError>,
    /// Applying an update changed what yrs holds pending for missing history (some of it
    /// went there, or let some of what waited integrate), and something still waits.
    pub pending_changed: bool,
}

impl Applied {
    /// Whether the tabs have anything to hear about.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty() || self.tree.is_some()
    }

    /// The changes as the JSON array the tabs take (`[{"path": [...], "value": ...}]`).
    pub fn changes_json(&self) -> String {
        match &self.tree {
            Some(tree) => format!(r#"[{{"path":[],"value":{tree}}}]"#),
            None => serde_json::to_string(&self.changes).unwrap_or_else(|_| "[]".into()),
        }
    }
}

/// An entry a transaction touched. `written` is the leaf stored there: by a local write, which
/// makes it the entry's value after the transaction when no later touch of the same key
/// follows (every write and removal of a key records one), or by a peer's update, as yrs
/// read it after the transaction (one touch per key). `None` for a removal, or a value that
/// is a shared type: the report reads it from the map.
struct Touched {
    key: Arc<str>,
    written: Option<Any>,
}

impl Touched {
    fn read(key: Arc<str>) -> Self {
        Touched { key, written: None }
    }
}

/// See [`SharedDoc::pending_mark`].
#[derive(PartialEq, Eq)]
struct PendingMark(StateVector, StateVector, yrs::IdSet);

/// A shared document.
pub struct SharedDoc {
    doc: Doc,
    root: MapRef,
    /// The root map's key index. No transaction of a document builds yrs's type events
    /// (`vendor/yrs` patches) to keep it: a local one knows every key it writes; a peer's
    /// update lists the entries it changed (`record_entry_changes`); after a large one the
    /// index is rebuilt from the map ([`SharedDoc::take_rebuilt`]).
    index: Mutex<KeyIndex>,
    /// What the last transaction actually changed, as a Yjs v1 update.
    effective: Arc<Mutex<Option<Vec<u8>>>>,
}

/// Locks the document's key index, or the update its update observer left. The locks are
/// never contended (a document is used from one thread at a time); they make a document
/// `Send`, so a native host (the pinning relay) can keep it in an async task. A poisoned lock still holds
/// consistent data: every update under it is a single assignment or insertion.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for SharedDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDoc")
            .field("client_id", &self.doc.client_id())
            .field("entries", &locked(&self.index).len())
            .finish()
    }
}

impl Default for SharedDoc {
    fn default() -> Self {
        Self::new()
    }
}

fn internal(e: impl std::fmt::Display) -> NodeError {
    NodeError::new(ErrorCode::Internal, e.to_string())
}

fn bad_update(e: impl std::fmt::Display) -> NodeError {
    NodeError::new(
        ErrorCode::StateInvalidUpdate,
        format!("not a valid Yjs update: {e}"),
    )
}

/// The entry key of a path.
pub fn entry_key(path: &[String]) -> String {
    let mut key = String::with_capacity(path.iter().map(|s| s.len() + 1).sum());
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            key.push(KEY_SEPARATOR);
        }
        key.push_str(segment);
    }
    key
}

/// [`entry_key`] as the shared key yrs and the index hold: a one-segment path (most writes)
/// is copied once, not built and then copied.
pub(crate) fn entry_key_shared(path: &[String]) -> Arc<str> {
    match path {
        [segment] => Arc::from(segment.as_str()),
        _ => entry_key(path).into(),
    }
}

fn key_path(key: &str) -> Path {
    key.split(KEY_SEPARATOR).map(String::from).collect()
}

/// How many separators `key` holds (its segments less one). The separator is one ASCII byte,
/// never part of a multi-byte character, so counting bytes is exact, and much faster than a
/// `char` pattern search (this runs for every key of every transaction).
pub(crate) fn depth(key: &str) -> usize {
    key.bytes().filter(|&b| b == KEY_SEPARATOR as u8).count()
}

/// Whether `key` has more than one segment. A byte search, as in [`depth`]: in the browser's
/// size-optimized wasm a `char` pattern's searcher showed in the profile of a tab's writes.
pub(crate) fn nested(key: &str) -> bool {
    key.as_bytes().contains(&(KEY_SEPARATOR as u8))
}

/// Whether tabs see the entry: its key is a path a tab could write. Another Yjs client can
/// store a key of thousands of segments; as a tree it would nest thousands of levels, which
/// no JSON reader or writer handles (recursion), so it stays in the document, unseen.
fn visible(key: &str) -> bool {
    depth(key) < MAX_PATH_SEGMENTS
}

fn new_doc() -> Doc {
    Doc::with_options(Options {
        skip_gc: true,
        ..Options::default()
    })
}

impl SharedDoc {
    /// An empty document with a fresh random client id and history kept (GC off).
    pub fn new() -> Self {
        let doc = new_doc();
        let root = doc.get_or_insert_map(ROOT_MAP);
        let effective: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let sink = effective.clone();
        // Fired on commit only when the transaction inserted or deleted something.
        let observed = doc.observe_update_v1("peercompute", move |_, event| {
            *locked(&sink) = Some(event.update.clone());
        });
        debug_assert!(observed.is_ok(), "no transaction is open yet");
        SharedDoc {
            doc,
            root,
            index: Mutex::default(),
            effective,
        }
    }

    /// The whole tree as JSON text.
    pub fn to_json_text(&self) -> String {
        let txn = self.doc.transact();
        build_tree(self.root.iter(&txn).map(|(k, v)| (k, Some(v))), &txn)
    }

    /// The whole tree as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::from_str(&self.to_json_text()).unwrap_or_default()
    }

    /// The value at `path`, or `None`.
    pub fn get(&self, path: &[String]) -> Option<Value> {
        let txn = self.doc.transact();
        self.value_at(&txn, &locked(&self.index), &entry_key(path))
    }

    fn value_at<T: ReadTxn>(&self, txn: &T, index: &KeyIndex, key: &str) -> Option<Value> {
        let mut below = index.below(key).filter(|k| visible(k)).peekable();
        // Nothing below (`below` checks `has_below` first, and is empty on a hash collision).
        if below.peek().is_none() {
            return self.root.get(txn, key).map(|v| out_to_json(&v, txn));
        }
        let skip = depth(key) + 1;
        let mut tree = JsonMap::new();
        for k in below {
            let rest: Vec<&str> = k.split(KEY_SEPARATOR).skip(skip).collect();
            if let Some(v) = self.root.get(txn, k) {
                insert_leaf(&mut tree, &rest, out_to_json(&v, txn));
            }
        }
        Some(Value::Object(tree))
    }

    /// Applies `ops` as one transaction and returns the Yjs v1 update to persist and
    /// broadcast, and the changes for the tabs. Writing below a leaf replaces the leaf by an
    /// object (as `_.set` does); a value replaces everything that was at its path.
    pub fn apply_ops(&self, ops: &[Op]) -> Result<Applied, NodeError> {
        // Whether a key can have been touched twice: only once an entry was removed or
        // overwritten. Until then every touch wrote a key the map did not hold, and a key
        // written once is held, so the touches are distinct and need no pass to compact them
        // (a hash set of a batch's keys, a tenth of a batch of new keys).
        let mut repeats = false;
        // Every write and removal, in order, possibly with repeats.
        let mut touched = Vec::new();
        {
            let mut txn = self.doc.transact_mut();
            // Later ops of the batch must see what earlier ones did, so this block keeps the
            // key index itself, and yrs builds no type events for it.
            txn.skip_type_events();
            let mut index = locked(&self.index);
            // Whether `k` held an entry, now removed.
            let remove = |txn: &mut yrs::TransactionMut,
                          index: &mut KeyIndex,
                          touched: &mut Vec<Touched>,
                          k: &str| {
                let removed = self.root.remove(txn, k).is_some();
                if removed {
                    index.remove(k);
                    touched.push(Touched::read(k.into()));
                }
                removed
            };
            let mut leaves = Vec::new();
            for op in ops {
                let key = op.key().clone();
                // Everything below the path goes: a value replaces the whole subtree.
                if index.has_below(&key) {
                    let doomed: Vec<Arc<str>> = index.below(&key).cloned().collect();
                    for k in &doomed {
                        repeats |= remove(&mut txn, &mut index, &mut touched, k);
                    }
                }
                match op {
                    Op::Set { value, .. } => {
                        // A leaf above the path would hide the new value: remove it.
                        if nested(&key) {
                            for (cut, _) in key.match_indices(KEY_SEPARATOR) {
                                repeats |= remove(&mut txn, &mut index, &mut touched, &key[..cut]);
                            }
                        }
                        flatten(key.clone(), value, &mut leaves);
                        // An object goes below the path: a leaf at the path itself (a scalar
                        // set before) would otherwise come back once the object's keys go.
                        if !leaves.iter().any(|(k, _)| *k == key) {
                            repeats |= remove(&mut txn, &mut index, &mut touched, &key);
                        }
                        for (k, v) in leaves.drain(..) {
                            // One allocation of the key, shared by yrs and the index. (An
                            // `Any` clone is a count: its heap variants are `Arc`s.)
                            // `insert_replacing` (a `vendor/yrs` patch) says whether the key
                            // held an entry, from the lookup the insert makes anyway.
                            if self.root.insert_replacing(&mut txn, k.clone(), v.clone()) {
                                repeats = true;
                            } else {
                                index.insert(&k);
                            }
                            touched.push(Touched {
                                key: k,
                                written: Some(v),
                            });
                        }
                    }
                    Op::Delete { .. } => {
                        repeats |= remove(&mut txn, &mut index, &mut touched, &key);
                    }
                }
            }
        }
        let touches = if repeats {
            Touches::Repeated
        } else {
            Touches::Unique
        };
        Ok(self.report(touched, touches))
    }

    /// Applies a Yjs v1 update from a peer, a file or a tab. Missing dependencies are kept
    /// pending by yrs until a later update (or a sync) delivers them.
    pub fn apply_update(&self, update: &[u8]) -> Result<Applied, NodeError> {
        Self::check_update(update)?;
        self.apply_checked_update(update)
    }

    /// Applies a record read back from storage: like [`Self::apply_update`], but a compacted
    /// record (the whole document) may be larger than one update from a peer.
    pub fn apply_stored_record(&self, record: &[u8]) -> Result<Applied, NodeError> {
        check_update_within(record, MAX_STORED_RECORD_BYTES)?;
        self.apply_checked_update(record)
    }

    /// What [`Self::apply_update`] checks before yrs sees an update: its size and its layout.
    pub(crate) fn check_update(update: &[u8]) -> Result<(), NodeError> {
        check_update_within(update, MAX_SYNC_UPDATE_BYTES)
    }

    /// [`Self::apply_update`] for bytes that have passed [`Self::check_update`] already (or
    /// the same checks in [`SyncFrame::decode`](super::sync_protocol::SyncFrame::decode)):
    /// the walk over a newcomer's 1.8 MB update is worth not doing twice.
    pub(crate) fn apply_checked_update(&self, bytes: &[u8]) -> Result<Applied, NodeError> {
        let update = Update::decode_v1(bytes).map_err(bad_update)?;
        // Into an empty document (a newcomer's first sync, a load from IndexedDB) every entry
        // is new, and a large update touches much of the document: the index is rebuilt from
        // the map instead of from yrs's per-key diff.
        let new_items = self.new_items(&update);
        let entries = self.entry_count();
        let rebuild =
            entries == 0 || (new_items >= REBUILD_MIN_ITEMS && new_items >= entries as u64);
        let was_empty = entries == 0;
        // The rebuild reads the map once, so nothing asks for the entries' keys: yrs need not
        // record each one (for the map's type event, the set of 100k keys was ~60 ms of a browser
        // newcomer's sync). The leaves' list is sized from a hint, the entries before plus
        // the update's blocks, without a pass over the map (yrs's `len` is one); bounded, as
        // blocks are not entries.
        let capacity = (entries + (update.block_count() as u64).min(new_items) as usize)
            .min(REBUILD_CAPACITY_MAX);
        let before = self.pending_mark();
        let mut touched = Vec::new();
        let result = {
            let mut txn = self.doc.transact_mut();
            if rebuild {
                txn.skip_type_events();
            } else {
                // The entries the update changes, as the map's type event would list them
                // (`record_entry_changes`, a `vendor/yrs` patch): the event's sets and maps
                // were a third of applying a peer's 1000-entry update.
                txn.record_entry_changes(&self.root);
            }
            let result = txn.apply_update(update);
            if !rebuild {
                let mut index = locked(&self.index);
                for (key, held_before, now) in txn.entry_changes() {
                    match (held_before, now.is_some()) {
                        (false, true) => index.insert(&key),
                        (true, false) => index.remove(&key),
                        _ => {}
                    }
                    // The value yrs read after the transaction: the report need not read it
                    // again (a shared type, from another Yjs client, it reads whole).
                    let written = match now {
                        Some(Out::Any(value)) => Some(value),
                        _ => None,
                    };
                    touched.push(Touched { key, written });
                }
            }
            result
        };
        let mut applied = if rebuild {
            self.take_rebuilt(was_empty, capacity)
        } else {
            self.report(touched, Touches::Unique)
        };
        applied.pending_changed = self.has_pending() && self.pending_mark() != before;
        match result {
            Ok(()) => Ok(applied),
            // Refused at once: nothing changed.
            Err(e) if applied.update.is_none() && !applied.has_changes() => Err(bad_update(e)),
            // Refused partway: what was integrated stays (yrs cannot undo it), so it is
            // reported like any change, or the tabs, the stored records and this copy would
            // no longer agree.
            Err(e) => Ok(Applied {
                refused: Some(bad_update(e)),
                ..applied
            }),
        }
    }

    /// How many items `update` adds that this document lacks: its clock ranges past our state
    /// vector (an estimate when the update has gaps). A map entry is one item.
    fn new_items(&self, update: &Update) -> u64 {
        let ours = self.doc.transact().state_vector();
        let lower = update.state_vector_lower();
        update
            .state_vector()
            .iter()
            .map(|(client, &upper)| {
                let from = lower.get(client).max(ours.get(client));
                u64::from(upper.saturating_sub(from))
            })
            .sum()
    }

    /// How many leaves the document holds.
    pub fn entry_count(&self) -> usize {
        locked(&self.index).len()
    }

    /// This document's state vector.
    pub fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// Everything a peer with state vector `sv` is missing, as a Yjs v1 update.
    pub fn diff(&self, sv: &StateVector) -> Vec<u8> {
        self.doc.transact().encode_diff_v1(sv)
    }

    /// The whole document as one Yjs v1 update.
    pub fn encode_state(&self) -> Vec<u8> {
        self.diff(&StateVector::default())
    }

    /// Records the current state as a named version (a yrs snapshot stored in the document's
    /// `"versions"` map, so every peer and every reload sees it).
    pub fn snapshot(
        &self,
        id: &str,
        label: &str,
        time_ms: f64,
    ) -> Result<(Version, Applied), NodeError> {
        if label.len() > MAX_VERSION_LABEL_BYTES {
            return Err(NodeError::new(
                ErrorCode::StateInvalidValue,
                format!("a version label is at most {MAX_VERSION_LABEL_BYTES} bytes"),
            ));
        }
        let versions = self.doc.get_or_insert_map(VERSIONS_MAP);
        {
            let mut txn = self.doc.transact_mut();
            if versions.len(&txn) as usize >= MAX_VERSIONS_PER_DOC {
                return Err(NodeError::new(
                    ErrorCode::StateTooManyVersions,
                    format!("a document keeps at most {MAX_VERSIONS_PER_DOC} versions"),
                ));
            }
            let snapshot = txn.snapshot().encode_v1();
            let entry = MapPrelim::from([
                ("label", In::Any(Any::from(label))),
                ("time", In::Any(Any::Number(Number::Float(time_ms)))),
                ("snapshot", In::Any(Any::Buffer(Arc::from(snapshot)))),
            ]);
            versions.insert(&mut txn, id, entry);
        }
        let version = Version {
            id: id.to_string(),
            label: label.to_string(),
            time: time_ms,
        };
        Ok((version, self.take_update()))
    }

    /// Forgets version `id`, for every peer (its entry leaves the shared `"versions"` map), so
    /// a document at its version bound can take new ones. The history it pointed at stays:
    /// documents keep theirs.
    pub fn delete_version(&self, id: &str) -> Result<Applied, NodeError> {
        let versions = self.doc.get_or_insert_map(VERSIONS_MAP);
        let removed = versions.remove(&mut self.doc.transact_mut(), id);
        if removed.is_none() {
            return Err(NodeError::new(
                ErrorCode::StateUnknownVersion,
                format!("no version {id:?} in this document"),
            ));
        }
        Ok(self.take_update())
    }

    /// The named versions, oldest first.
    pub fn versions(&self) -> Vec<Version> {
        let versions = self.doc.get_or_insert_map(VERSIONS_MAP);
        let txn = self.doc.transact();
        let mut list: Vec<Version> = versions
            .iter(&txn)
            .filter_map(|(id, entry)| {
                let Out::YMap(entry) = entry else { return None };
                let label = match entry.get(&txn, "label") {
                    Some(Out::Any(Any::String(s))) => s.to_string(),
                    _ => String::new(),
                };
                let time = match entry.get(&txn, "time") {
                    Some(Out::Any(Any::Number(Number::Float(t)))) => t,
                    Some(Out::Any(Any::Number(Number::Int(t)))) => t as f64,
                    _ => 0.0,
                };
                Some(Version {
                    id: id.to_string(),
                    label,
                    time,
                })
            })
            .collect();
        list.sort_by(|a, b| a.time.total_cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        list
    }

    /// The whole tree as it was at version `id`, as JSON text.
    pub fn json_at(&self, id: &str) -> Result<String, NodeError> {
        let versions = self.doc.get_or_insert_map(VERSIONS_MAP);
        let txn = self.doc.transact();
        let snapshot = match versions.get(&txn, id) {
            Some(Out::YMap(entry)) => match entry.get(&txn, "snapshot") {
                // Any peer can write the versions map: the bytes are checked, and a client
                // at clock 0 (yrs would read the block before clock 0) is dropped, since it
                // means the same as leaving the client out.
                Some(Out::Any(Any::Buffer(bytes))) => {
                    check_snapshot_v1(&bytes)?;
                    let mut snapshot = Snapshot::decode_v1(&bytes).map_err(bad_update)?;
                    snapshot.state_map = snapshot
                        .state_map
                        .iter()
                        .filter(|&(_, &clock)| clock > 0)
                        .map(|(&client, &clock)| (client, clock))
                        .collect();
                    snapshot
                }
                _ => return Err(internal(format!("version {id:?} has no snapshot"))),
            },
            _ => {
                return Err(NodeError::new(
                    ErrorCode::StateUnknownVersion,
                    format!("no version {id:?} in this document"),
                ))
            }
        };
        // A snapshot past what this copy holds of some client would read blocks that are not
        // here (yrs panics on a client it only holds a skip of) and give an incomplete past.
        let here = txn.state_vector();
        let missing = snapshot
            .state_map
            .iter()
            .find(|&(client, &clock)| here.get(client) < clock);
        if let Some((client, clock)) = missing {
            return Err(NodeError::new(
                ErrorCode::StateVersionIncomplete,
                format!(
                    "version {id:?} names client {client} up to clock {clock}, and this copy \
                     holds {} of it: retry once the document has synced",
                    here.get(client)
                ),
            ));
        }
        let mut encoder = EncoderV1::new();
        txn.encode_state_from_snapshot(&snapshot, &mut encoder)
            .map_err(|e| internal(format!("reading version {id:?}: {e}")))?;
        drop(txn);
        let past = new_doc();
        let root = past.get_or_insert_map(ROOT_MAP);
        let update = encoder.to_vec();
        check_update_v1(&update)?;
        let update = Update::decode_v1(&update).map_err(bad_update)?;
        past.transact_mut()
            .apply_update(update)
            .map_err(bad_update)?;
        let txn = past.transact();
        Ok(build_tree(root.iter(&txn).map(|(k, v)| (k, Some(v))), &txn))
    }

    /// Forgets the updates waiting for missing dependencies (the sync exchange, which works
    /// from state vectors, brings them again once their history is here).
    /// Returns the history they were waiting for: the first clock missing of each client.
    pub fn drop_pending(&self) -> StateVector {
        let mut txn = self.doc.transact_mut();
        let store = txn.store_mut();
        let mut missing = StateVector::default();
        if let Some(pending) = store.pending_update_mut() {
            pending.update = Update::new();
            missing = std::mem::take(&mut pending.missing);
        }
        if let Some(ds) = store.pending_ds_mut() {
            *ds = yrs::IdSet::default();
        }
        missing
    }

    /// What the document holds pending, as a value that changes whenever pending updates
    /// are added (or integrated): the clock ranges of the pending blocks and the pending
    /// deletes. Cheap next to encoding the pending update to weigh it (and to nothing when
    /// nothing waits, the usual case).
    fn pending_mark(&self) -> PendingMark {
        let txn = self.doc.transact();
        let store = txn.store();
        let update = store.pending_update().map(|p| &p.update);
        PendingMark(
            update.map(|u| u.state_vector()).unwrap_or_default(),
            update.map(|u| u.state_vector_lower()).unwrap_or_default(),
            store.pending_ds().cloned().unwrap_or_default(),
        )
    }

    /// Whether the document has updates waiting for missing dependencies.
    pub fn has_pending(&self) -> bool {
        let txn = self.doc.transact();
        // (Dropped pending updates leave an empty one behind until the next update.)
        txn.store()
            .pending_update()
            .is_some_and(|p| !p.update.is_empty())
            || txn.store().pending_ds().is_some_and(|ds| !ds.is_empty())
    }

    /// The update of the last transaction, which changed nothing of the tree (a version).
    fn take_update(&self) -> Applied {
        Applied {
            update: locked(&self.effective).take(),
            ..Applied::default()
        }
    }

    /// [`Self::report`] after a transaction that recorded no entries: the key index is
    /// rebuilt from the map, and the change reported is the whole tree, at the root; only a
    /// small fill of an empty document (`was_empty`) is reported entry by entry.
    fn take_rebuilt(&self, was_empty: bool, capacity: usize) -> Applied {
        let txn = self.doc.transact();
        let mut index = locked(&self.index);
        let Some(update) = locked(&self.effective).take() else {
            // Nothing was inserted or deleted (a repeated sync): the index is as it was.
            return Applied::default();
        };
        *index = KeyIndex::default();
        // One pass over the map: the index (a count, and a copy of each nested key) and the
        // leaves a large fill reports.
        let mut leaves = Vec::with_capacity(capacity);
        for (key, value) in self.root.iter(&txn) {
            index.insert_copied(key);
            if visible(key) {
                leaves.push((key, out_to_json(&value, &txn)));
            }
        }
        if was_empty && index.len() <= FILL_REPORTED_PER_ENTRY_MAX {
            let touched = leaves
                .iter()
                .map(|(key, _)| Touched::read(Arc::from(*key)))
                .collect();
            drop(leaves);
            drop(index);
            drop(txn);
            return Applied {
                update: Some(update),
                ..self.report(touched, Touches::Unique)
            };
        }
        drop(index);
        // A fill of entries too deep to show: the tabs' view did not change.
        let unchanged = leaves.is_empty() && was_empty;
        let tree = tree_of(leaves);
        Applied {
            update: Some(update),
            changes: Vec::new(),
            tree: (!unchanged).then_some(tree),
            ..Applied::default()
        }
    }

    /// The changes of a transaction's `touched` entries: for each, its path and value; for a
    /// removed one, the highest ancestor left empty (so a tab's mirror drops it as well), or
    /// the leaf above it that the removal uncovers. With the update the transaction made.
    fn report(&self, mut touched: Vec<Touched>, touches: Touches) -> Applied {
        let txn = self.doc.transact();
        let index = locked(&self.index);
        let index = &*index;
        touched.retain(|touch| visible(&touch.key));
        if touches == Touches::Repeated {
            keep_last_touches(&mut touched);
        }
        let occupied = |key: &str| self.root.contains_key(&txn, key) || index.has_below(key);
        // Keys read from the map; a removal is reported at the highest ancestor it left
        // empty, which several removals can share.
        let mut read = crate::seeded_hash::HashSet::default();
        let mut changes: Vec<Change> = Vec::with_capacity(touched.len());
        for Touched { key, written } in touched {
            // A write's leaf is its value, unless entries were written below it later (they
            // remove it first, so that cannot be its last touch; `has_below` makes sure).
            if let Some(leaf) = written.filter(|_| !index.has_below(&key)) {
                changes.push(Change {
                    value: Some(any_to_json(&leaf)),
                    key: Some(key),
                });
                continue;
            }
            let mut key = key;
            if !occupied(&key) {
                // Walk up while the ancestor holds nothing any more. An ancestor that is a
                // leaf as well (concurrent writes left a leaf and entries below it, which
                // hid it) is reported itself: with the entries below gone, it shows again.
                let mut end = key.len();
                while let Some(cut) = key[..end].rfind(KEY_SEPARATOR) {
                    if occupied(&key[..cut]) {
                        if self.root.contains_key(&txn, &key[..cut]) {
                            end = cut;
                        }
                        break;
                    }
                    end = cut;
                }
                if end < key.len() {
                    key = key[..end].into();
                }
            }
            if read.is_empty() {
                // Sized once, on the first key read: a local write's leaves need none.
                read.reserve(changes.capacity() - changes.len());
            }
            if read.insert(key.clone()) {
                changes.push(Change {
                    value: self.value_at(&txn, index, &key),
                    key: Some(key),
                });
            }
        }
        // A parent before its children: the order tabs apply them in (a stable sort, so
        // otherwise in the order the transaction touched them). Flat keys need none.
        let key_depth = |change: &Change| change.key.as_deref().map_or(0, depth);
        if changes.iter().any(|change| key_depth(change) > 0) {
            changes.sort_by_cached_key(key_depth);
        }
        Applied {
            update: locked(&self.effective).take(),
            changes,
            ..Applied::default()
        }
    }
}

/// Whether a transaction's touched entries can name a key more than once.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Touches {
    /// A local transaction: every write and removal records a touch.
    Repeated,
    /// One touch per key (a peer's update, through `entry_changes`; a small fill).
    Unique,
}

/// Each key of `touched` once, where it was first touched, with its last touch (which holds
/// its value after the transaction when that was a write): compacted in place.
fn keep_last_touches(touched: &mut Vec<Touched>) {
    let mut first_touch: crate::seeded_hash::HashMap<Arc<str>, usize> =
        crate::seeded_hash::HashMap::default();
    first_touch.reserve(touched.len());
    let mut unique = 0;
    for at in 0..touched.len() {
        match first_touch.entry(touched[at].key.clone()) {
            std::collections::hash_map::Entry::Occupied(first) => {
                touched[*first.get()].written = touched[at].written.take();
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(unique);
                touched.swap(unique, at);
                unique += 1;
            }
        }
    }
    touched.truncate(unique);
}

/// An update's size against `max`, then its layout.
fn check_update_within(update: &[u8], max: usize) -> Result<(), NodeError> {
    if update.len() > max {
        return Err(NodeError::new(
            ErrorCode::PayloadTooLarge,
            format!("an update is at most {max} bytes, got {}", update.len()),
        ));
    }
    check_update_v1(update)
}

/// The leaves of `value` written at `key`: scalars, arrays and empty objects are leaves.
fn flatten(key: Arc<str>, value: &Value, out: &mut Vec<(Arc<str>, Any)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(format!("{key}{KEY_SEPARATOR}{k}").into(), v, out);
            }
        }
        other => out.push((key, json_to_any(other))),
    }
}

/// Puts a leaf into a tree; entries below a leaf win over the leaf, whatever the order.
fn insert_leaf(tree: &mut JsonMap<String, Value>, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = tree;
    for key in parents {
        let slot = node
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(JsonMap::new()));
        if !slot.is_object() {
            *slot = Value::Object(JsonMap::new());
        }
        let Value::Object(next) = slot else { return };
        node = next;
    }
    match node.get(*last) {
        Some(Value::Object(existing)) if !existing.is_empty() => {}
        _ => {
            node.insert(last.to_string(), value);
        }
    }
}

/// The JSON text of the tree of `entries` (keys and their leaves). A leaf and entries below
/// it cannot both show: the entries below win, as [`insert_leaf`] has it.
fn build_tree<'a, T: ReadTxn>(
    entries: impl Iterator<Item = (&'a str, Option<Out>)>,
    txn: &T,
) -> String {
    tree_of(
        entries
            .filter(|(k, _)| visible(k))
            .filter_map(|(k, v)| Some((k, out_to_json(&v?, txn))))
            .collect(),
    )
}

/// [`build_tree`] of visible keys and their values, written as text without building the
/// tree: with no key below another (no separator), the leaves in any order (a map's keys are
/// distinct); otherwise sorted by path and each level written from its sorted run.
fn tree_of(mut leaves: Vec<(&str, Value)>) -> String {
    let mut out = Vec::with_capacity(leaves.len() * 16 + 2);
    if leaves.iter().all(|(key, _)| !nested(key)) {
        out.push(b'{');
        for (i, (key, value)) in leaves.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_entry(&mut out, key, value);
        }
        out.push(b'}');
    } else {
        // Keys a tab writes have no control characters, so the separator is their lowest
        // byte and path order is byte order: a plain comparison (a `memcmp`) instead of
        // ranking byte by byte. A peer's key may hold lower bytes; then the segment-aware
        // order is needed.
        let separator_lowest = leaves
            .iter()
            .all(|(key, _)| key.bytes().all(|b| b >= KEY_SEPARATOR as u8));
        if separator_lowest {
            leaves.sort_unstable_by(|a, b| a.0.cmp(b.0));
        } else {
            leaves.sort_unstable_by(|a, b| path_order(a.0, b.0));
        }
        write_nested(&mut out, &leaves, 0);
    }
    // serde_json writes UTF-8 and the rest is ASCII: the fallback never runs.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Keys in the order of their paths, segment by segment: as bytes, with the separator below
/// every other byte (a segment that is a prefix of another comes first).
fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    const SEPARATOR: u8 = KEY_SEPARATOR as u8;
    let rank = |b: Option<&u8>| match b {
        None => -2,
        Some(&SEPARATOR) => -1,
        Some(&b) => i16::from(b),
    };
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    rank(a.get(same)).cmp(&rank(b.get(same)))
}

/// `"key":value`. Writing to a `Vec` cannot fail, and a `Value` is always valid JSON.
fn write_entry(out: &mut Vec<u8>, key: &str, value: &Value) {
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The object of `leaves` below a common prefix of `prefix` bytes (its segments and their
/// separators): sorted by [`path_order`], every key longer than the prefix. At most
/// [`MAX_PATH_SEGMENTS`] levels deep: only visible keys get here.
fn write_nested(out: &mut Vec<u8>, leaves: &[(&str, Value)], prefix: usize) {
    let segment = |key: &str| -> usize {
        key[prefix..]
            .find(KEY_SEPARATOR)
            .unwrap_or(key.len() - prefix)
    };
    out.push(b'{');
    let mut rest = leaves;
    while let Some(&(first, _)) = rest.first() {
        let name = &first[prefix..prefix + segment(first)];
        let end = rest
            .iter()
            .position(|(key, _)| &key[prefix..prefix + segment(key)] != name)
            .unwrap_or(rest.len());
        let (group, tail) = rest.split_at(end);
        if rest.len() < leaves.len() {
            out.push(b',');
        }
        rest = tail;
        // Sorted, so a leaf at `name` itself comes first and anything below it after.
        let below = prefix + name.len();
        match group.iter().position(|(key, _)| key.len() > below) {
            Some(start) => {
                let _ = serde_json::to_writer(&mut *out, name);
                out.push(b':');
                write_nested(out, &group[start..], below + 1);
            }
            None => write_entry(out, name, &group[0].1),
        }
    }
    out.push(b'}');
}

fn json_to_any(value: &Value) -> Any {
    match value {
        Value::Null => Any::Null,
        Value::Bool(b) => Any::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i.unsigned_abs() <= Number::I64_MAX_SAFE_INTEGER as u64 => {
                Any::Number(Number::Int(i))
            }
            _ => Any::Number(Number::Float(n.as_f64().unwrap_or(0.0))),
        },
        Value::String(s) => Any::String(Arc::from(s.as_str())),
        Value::Array(items) => Any::Array(items.iter().map(json_to_any).collect()),
        Value::Object(map) => Any::Map(Arc::new(
            map.iter()
                .map(|(k, v)| (k.clone(), json_to_any(v)))
                .collect(),
        )),
    }
}

fn any_to_json(any: &Any) -> Value {
    match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(Number::Int(i)) => Value::Number((*i).into()),
        Any::Number(Number::Float(f)) => {
            JsonNumber::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(b) => Value::Array(b.iter().map(|x| Value::Number((*x).into())).collect()),
        Any::Array(items) => Value::Array(items.iter().map(any_to_json).collect()),
        Any::Map(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), any_to_json(v)))
                .collect(),
        ),
    }
}

/// Shared types (maps, arrays, text) only appear in documents edited by other Yjs clients;
/// they are read whole.
fn out_to_json<T: ReadTxn>(out: &Out, txn: &T) -> Value {
    match out {
        Out::Any(any) => any_to_json(any),
        other => any_to_json(&other.to_json(txn)),
    }
}

/// A layout-valid update that yrs stops applying partway: its second item names the first as
/// its parent, and the first is a plain value (`{"a": null}` goes in, then yrs refuses).
#[cfg(test)]
pub(crate) fn update_refused_partway() -> Vec<u8> {
    use yrs::{Map, MapPrelim, Options, Transact};
    let writer = yrs::Doc::with_options(Options {
        client_id: yrs::block::ClientID::new(1),
        ..Options::default()
    });
    let root = writer.get_or_insert_map("root");
    {
        let mut txn = writer.transact_mut();
        let inner = root.insert(&mut txn, "a", MapPrelim::default());
        inner.insert(&mut txn, "b", 1);
    }
    let mut bytes = writer
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    // [1 client][2 structs][client 1][clock 0][info: parent_sub, content Type]
    // [named parent "root"][parent_sub "a"][type ref 1 = YMap]: the type becomes the
    // content Any, one value (the same byte 1), null (126).
    assert_eq!(&bytes[..5], [1, 2, 1, 0, 0x27]);
    assert_eq!(bytes[13], 1);
    bytes[4] = 0x28;
    bytes.insert(14, 126);
    bytes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn p(s: &str) -> Path {
        s.split('.').map(String::from).collect()
    }

    fn set(path: &str, value: Value) -> Op {
        Op::set(&p(path), value)
    }

    fn delete(path: &str) -> Op {
        Op::delete(&p(path))
    }

    /// A change at `path` (`""`: the root).
    fn change(path: &str, value: Option<Value>) -> Change {
        let path = if path.is_empty() { Vec::new() } else { p(path) };
        Change::new(&path, value)
    }

    #[test]
    fn changes_serialize_as_path_and_value() {
        let json = serde_json::to_value([
            change("players.alice", Some(json!({"x": 1}))),
            change("gone", None),
            change("", Some(json!({}))),
        ])
        .unwrap();
        assert_eq!(
            json,
            json!([
                {"path": ["players", "alice"], "value": {"x": 1}},
                {"path": ["gone"]},
                {"path": [], "value": {}},
            ])
        );
        assert_eq!(change("a.b", None).path(), p("a.b"));
        assert!(change("", None).path().is_empty());
    }

    #[test]
    fn set_get_delete_and_changes() {
        let doc = SharedDoc::new();
        let Applied {
            update, changes, ..
        } = doc
            .apply_ops(&[
                set("players.alice", json!({"x": 1, "y": 2})),
                set("score", json!(3)),
            ])
            .unwrap();
        assert!(update.is_some());
        assert_eq!(doc.get(&p("players.alice")), Some(json!({"x": 1, "y": 2})));
        assert_eq!(doc.get(&p("players.alice.x")), Some(json!(1)));
        assert!(changes.contains(&change("score", Some(json!(3)))));
        assert!(changes.contains(&change("players.alice.y", Some(json!(2)))));

        let changes = doc
            .apply_ops(&[set("players.alice.x", json!(5))])
            .unwrap()
            .changes;
        assert_eq!(changes, vec![change("players.alice.x", Some(json!(5)))]);

        let changes = doc
            .apply_ops(&[Op::delete(&p("players.alice"))])
            .unwrap()
            .changes;
        // Nothing is left under `players`, so the whole object goes.
        assert_eq!(changes, vec![change("players", None)]);
        // Deleting what is not there changes nothing and yields nothing to persist.
        let applied = doc.apply_ops(&[Op::delete(&p("players.nobody"))]).unwrap();
        assert!(applied.update.is_none() && applied.changes.is_empty());
        assert_eq!(doc.to_json(), json!({"score": 3}));
    }

    /// A batch reports each key once, with its value after the batch, whether the key was
    /// written again (an overwrite) or removed and written anew (a removal then a new key).
    #[test]
    fn a_key_touched_twice_in_a_batch_is_one_change() {
        let doc = SharedDoc::new();
        let changes = |ops: &[Op]| doc.apply_ops(ops).unwrap().changes;
        assert_eq!(
            changes(&[set("a", json!(1)), set("b", json!(2))]),
            vec![change("a", Some(json!(1))), change("b", Some(json!(2)))]
        );
        assert_eq!(
            changes(&[set("c", json!(1)), set("c", json!(2))]),
            vec![change("c", Some(json!(2)))]
        );
        assert_eq!(
            changes(&[set("d", json!(1)), delete("d"), set("d", json!(3))]),
            vec![change("d", Some(json!(3)))]
        );
        assert_eq!(
            changes(&[set("e", json!(1)), delete("e")]),
            vec![change("e", None)]
        );
        assert_eq!(doc.to_json(), json!({"a": 1, "b": 2, "c": 2, "d": 3}));
    }

    #[test]
    fn writes_below_a_leaf_replace_it_and_values_replace_subtrees() {
        let doc = SharedDoc::new();
        doc.apply_ops(&[set("score", json!(3))]).unwrap();
        let changes = doc.apply_ops(&[set("score.x", json!(1))]).unwrap().changes;
        assert_eq!(doc.to_json(), json!({"score": {"x": 1}}));
        assert_eq!(
            changes,
            vec![
                change("score", Some(json!({"x": 1}))),
                change("score.x", Some(json!(1))),
            ]
        );
        doc.apply_ops(&[set("score", json!({"y": 2, "z": {}}))])
            .unwrap();
        assert_eq!(doc.to_json(), json!({"score": {"y": 2, "z": {}}}));
        doc.apply_ops(&[set("score", json!(7)), set("list", json!([1, {"a": 2}]))])
            .unwrap();
        assert_eq!(doc.to_json(), json!({"score": 7, "list": [1, {"a": 2}]}));
        // Keys with dots are fine: paths are lists of keys.
        doc.apply_ops(&[set("a.b", json!(1)), Op::set(&["a.b".into()], json!(2))])
            .unwrap();
        assert_eq!(doc.get(&["a.b".to_string()]), Some(json!(2)));
        assert_eq!(doc.get(&p("a.b")), Some(json!(1)));
    }

    #[test]
    fn two_docs_converge_through_updates_and_diffs() {
        let a = SharedDoc::new();
        let b = SharedDoc::new();
        let ua = a
            .apply_ops(&[set("m.a", json!("from a"))])
            .unwrap()
            .update
            .unwrap();
        b.apply_ops(&[set("m.b", json!([1, 2.5, null]))]).unwrap();
        let changes = b.apply_update(&ua).unwrap().changes;
        assert!(changes.iter().any(|c| c.path() == p("m.a")), "{changes:?}");
        a.apply_update(&b.diff(&a.state_vector())).unwrap();
        assert_eq!(a.to_json(), b.to_json());
        // A second delivery of the same update changes nothing: nothing to persist.
        assert!(b.apply_update(&ua).unwrap().update.is_none());
        // Both peers created `m` concurrently, and neither write is lost.
        assert_eq!(
            a.to_json(),
            json!({"m": {"a": "from a", "b": [1, 2.5, null]}})
        );
    }

    #[test]
    fn versions_read_back_on_every_replica() {
        let a = SharedDoc::new();
        a.apply_ops(&[set("score", json!(1)), set("boss.hp", json!(100))])
            .unwrap();
        let (v1, applied) = a.snapshot("v-1", "before-boss", 1000.0).unwrap();
        assert!(
            applied.changes.is_empty(),
            "versions are not part of the tree"
        );
        a.apply_ops(&[set("score", json!(9)), Op::delete(&p("boss"))])
            .unwrap();
        a.snapshot("v-2", "after", 2000.0).unwrap();
        assert_eq!(
            parsed(&a.json_at(&v1.id).unwrap()),
            json!({"score": 1, "boss": {"hp": 100}})
        );
        assert_eq!(a.to_json(), json!({"score": 9}));
        let labels: Vec<_> = a.versions().into_iter().map(|v| v.label).collect();
        assert_eq!(labels, ["before-boss", "after"]);
        // Another replica, synced from scratch, reads the same past.
        let b = SharedDoc::new();
        b.apply_update(&a.encode_state()).unwrap();
        assert_eq!(b.versions(), a.versions());
        assert_eq!(
            parsed(&b.json_at("v-1").unwrap()),
            json!({"score": 1, "boss": {"hp": 100}})
        );
        assert_eq!(
            a.json_at("nope").unwrap_err().code,
            ErrorCode::StateUnknownVersion
        );
        // Deleting one is a change every replica takes; the tree is untouched.
        let applied = a.delete_version("v-1").unwrap();
        assert!(applied.changes.is_empty());
        b.apply_update(&applied.update.unwrap()).unwrap();
        for doc in [&a, &b] {
            let ids: Vec<_> = doc.versions().into_iter().map(|v| v.id).collect();
            assert_eq!(ids, ["v-2"]);
            assert_eq!(
                doc.json_at("v-1").unwrap_err().code,
                ErrorCode::StateUnknownVersion
            );
        }
        assert_eq!(b.to_json(), json!({"score": 9}));
        assert_eq!(
            a.delete_version("v-1").unwrap_err().code,
            ErrorCode::StateUnknownVersion
        );
    }

    /// At the version bound, snapshots are refused until one is deleted.
    #[test]
    fn deleting_a_version_makes_room_for_another() {
        let d = SharedDoc::new();
        for i in 0..MAX_VERSIONS_PER_DOC {
            d.snapshot(&format!("v{i}"), "", i as f64).unwrap();
        }
        assert_eq!(
            d.snapshot("one-more", "", 0.0).unwrap_err().code,
            ErrorCode::StateTooManyVersions
        );
        d.delete_version("v0").unwrap();
        d.snapshot("one-more", "", 1e6).unwrap();
        assert_eq!(d.versions().len(), MAX_VERSIONS_PER_DOC);
    }

    #[test]
    fn an_object_set_over_a_scalar_replaces_it() {
        let d = SharedDoc::new();
        d.apply_ops(&[set("score", json!(3))]).unwrap();
        d.apply_ops(&[set("score", json!({"y": 2}))]).unwrap();
        assert_eq!(d.to_json(), json!({"score": {"y": 2}}));
        d.apply_ops(&[Op::delete(&p("score.y"))]).unwrap();
        assert_eq!(d.to_json(), json!({}), "the old scalar does not come back");
        // A replica from the bytes agrees.
        let r = SharedDoc::new();
        r.apply_update(&d.encode_state()).unwrap();
        assert_eq!(r.to_json(), json!({}));
    }

    /// Versions written by a hostile peer: a snapshot naming a known client at clock 0 (yrs
    /// would read the block before clock 0 and panic) and bytes that are no snapshot.
    #[test]
    fn a_peers_bad_version_reads_as_an_error_or_an_empty_past() {
        let a = SharedDoc::new();
        a.apply_ops(&[set("score", json!(1))]).unwrap();
        let client = a.doc.client_id();
        let zero = Snapshot::new(
            [(client, 0u32)].into_iter().collect(),
            yrs::IdSet::default(),
        )
        .encode_v1();
        let garbage = vec![5, 0xff, 0xff, 0xff, 0xff, 0x7f];
        {
            let versions = a.doc.get_or_insert_map(VERSIONS_MAP);
            let mut txn = a.doc.transact_mut();
            for (id, bytes) in [("zero", zero), ("garbage", garbage)] {
                let entry = MapPrelim::from([("snapshot", In::Any(Any::Buffer(Arc::from(bytes))))]);
                versions.insert(&mut txn, id, entry);
            }
        }
        assert_eq!(parsed(&a.json_at("zero").unwrap()), json!({}));
        assert_eq!(
            a.json_at("garbage").unwrap_err().code,
            ErrorCode::StateInvalidUpdate
        );
        assert_eq!(
            a.to_json(),
            json!({"score": 1}),
            "the document is untouched"
        );
    }

    /// A version whose history has not reached this copy (written by one peer about another
    /// peer's updates, or synced ahead of them) is an error, not a yrs panic or a silently
    /// incomplete past; a version reads once its history is here.
    #[test]
    fn a_version_ahead_of_this_copy_is_incomplete_until_it_syncs() {
        let a = SharedDoc::new();
        a.apply_ops(&[set("score", json!(1))]).unwrap();
        let early = a.encode_state();
        a.apply_ops(&[set("score", json!(2))]).unwrap();
        a.snapshot("v", "", 1.0).unwrap();
        // b gets a's later updates (its versions entry and score 2) before the earlier ones:
        // they wait for their dependencies, and a's client is not here at all.
        let b = SharedDoc::new();
        let later = {
            let sv = Update::decode_v1(&early).map(|u| u.state_vector()).unwrap();
            a.doc.transact().encode_state_as_update_v1(&sv)
        };
        b.apply_update(&later).unwrap();
        assert_eq!(
            b.json_at("v").unwrap_err().code,
            ErrorCode::StateUnknownVersion,
            "the entry itself waits with the rest"
        );
        // A version entry that did arrive, naming a client this copy only partly holds.
        let c = SharedDoc::new();
        c.apply_update(&early).unwrap();
        let ahead = Snapshot::new(
            [(a.doc.client_id(), 50u32)].into_iter().collect(),
            yrs::IdSet::default(),
        )
        .encode_v1();
        {
            let versions = c.doc.get_or_insert_map(VERSIONS_MAP);
            let mut txn = c.doc.transact_mut();
            let entry = MapPrelim::from([("snapshot", In::Any(Any::Buffer(Arc::from(ahead))))]);
            versions.insert(&mut txn, "ahead", entry);
        }
        assert_eq!(
            c.json_at("ahead").unwrap_err().code,
            ErrorCode::StateVersionIncomplete
        );
        // Once everything is here, a's own version reads.
        b.apply_update(&a.encode_state()).unwrap();
        assert_eq!(parsed(&b.json_at("v").unwrap()), json!({"score": 2}));
    }

    /// A key no tab could write (20k segments) from another Yjs client: kept, unseen by tabs
    /// (a 20k-level tree would overflow any recursive JSON code), and removed again.
    #[test]
    fn a_peers_very_deep_key_is_kept_but_not_shown() {
        let other = Doc::new();
        let root = other.get_or_insert_map(ROOT_MAP);
        let doc = SharedDoc::new();
        // What `other` has that `doc` lacks, applied to `doc`: the changes tabs are shown.
        let sync = || {
            let missing = other.transact().encode_diff_v1(&doc.state_vector());
            doc.apply_update(&missing).unwrap().changes
        };
        let deep = vec!["d"; 20_000].join(&KEY_SEPARATOR.to_string());
        root.insert(&mut other.transact_mut(), deep.as_str(), 1);
        assert!(sync().is_empty());
        assert_eq!(doc.entry_count(), 1);
        assert_eq!(doc.get(&p("d")), None);
        // A path's depth is still shown.
        let shallow = vec!["d"; MAX_PATH_SEGMENTS].join(&KEY_SEPARATOR.to_string());
        root.insert(&mut other.transact_mut(), shallow.as_str(), 2);
        let changes = sync();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path().len(), MAX_PATH_SEGMENTS);
        assert!(doc.to_json().get("d").is_some());
        root.remove(&mut other.transact_mut(), deep.as_str());
        assert!(sync().is_empty());
        assert_eq!(doc.entry_count(), 1);
    }

    /// An update whose layout is valid but which yrs stops applying partway. yrs cannot undo
    /// what it integrated before stopping, so that part is handed back (to persist and to
    /// show) along with the refusal.
    #[test]
    fn an_update_yrs_refuses_partway_hands_back_what_it_integrated() {
        let bytes = update_refused_partway();
        let doc = SharedDoc::new();
        let applied = doc.apply_update(&bytes).unwrap();
        assert_eq!(
            applied.refused.as_ref().map(|e| e.code),
            Some(ErrorCode::StateInvalidUpdate)
        );
        assert_eq!(doc.to_json(), json!({"a": null}));
        assert_eq!(
            serde_json::to_value(&applied.changes).unwrap(),
            json!([{"path": ["a"], "value": null}])
        );
        // What it hands back is what a replica needs to hold the same.
        let replica = SharedDoc::new();
        let again = replica.apply_update(&applied.update.unwrap()).unwrap();
        assert!(again.refused.is_none());
        assert_eq!(replica.to_json(), doc.to_json());
        assert_eq!(replica.state_vector(), doc.state_vector());
    }

    #[test]
    fn hostile_updates_are_refused() {
        let doc = SharedDoc::new();
        doc.apply_ops(&[set("k", json!(1))]).unwrap();
        for bytes in [
            &b""[..],
            b"\xff\xff\xff\xff",
            b"\x01\x01\x01\x01\x01",
            &[0xff; 64],
        ] {
            assert_eq!(
                doc.apply_update(bytes).unwrap_err().code,
                ErrorCode::StateInvalidUpdate
            );
        }
        assert_eq!(doc.to_json(), json!({"k": 1}));
    }

    #[test]
    fn a_large_fill_of_an_empty_document_is_one_change_at_the_root() {
        let writer = SharedDoc::new();
        let mut ops: Vec<Op> = (0..=FILL_REPORTED_PER_ENTRY_MAX)
            .map(|i| set(&format!("players.p{i}"), json!({ "x": i })))
            .collect();
        ops.push(set("score", json!(3)));
        writer.apply_ops(&ops).unwrap();
        let newcomer = SharedDoc::new();
        let applied = newcomer.apply_update(&writer.encode_state()).unwrap();
        assert!(applied.update.is_some(), "what it got is persisted");
        assert!(applied.changes.is_empty());
        assert_eq!(
            parsed(&applied.changes_json()),
            json!([{ "path": [], "value": writer.to_json() }])
        );
        // The index rebuilt from the map serves what comes next.
        assert_eq!(newcomer.entry_count(), writer.entry_count());
        assert_eq!(newcomer.get(&p("players.p3")), Some(json!({ "x": 3 })));
        let changes = newcomer.apply_ops(&[delete("players")]).unwrap().changes;
        assert_eq!(changes, vec![change("players", None)]);
        assert_eq!(newcomer.to_json(), json!({ "score": 3 }));
        // Into a document that holds something, a peer's update is reported per entry.
        let update = writer
            .apply_ops(&[set("score", json!(4))])
            .unwrap()
            .update
            .unwrap();
        assert_eq!(
            newcomer.apply_update(&update).unwrap().changes,
            vec![change("score", Some(json!(4)))]
        );
    }

    #[test]
    fn a_large_update_into_a_small_document_is_reported_whole() {
        let writer = SharedDoc::new();
        let early = writer
            .apply_ops(&[set("early", json!(1))])
            .unwrap()
            .update
            .unwrap();
        let many: Vec<Op> = (0..2000)
            .map(|i| set(&format!("k.k{i}"), json!(i)))
            .collect();
        writer.apply_ops(&many).unwrap();
        // A reader that got one early broadcast, and wrote something of its own.
        let reader = SharedDoc::new();
        reader.apply_update(&early).unwrap();
        reader.apply_ops(&[set("mine", json!("r"))]).unwrap();
        let state = writer.encode_state();
        let applied = reader.apply_update(&state).unwrap();
        assert!(applied.update.is_some());
        let whole = reader.to_json();
        assert_eq!(whole["mine"], json!("r"));
        assert_eq!(whole["k"]["k1999"], json!(1999));
        assert!(applied.changes.is_empty());
        assert_eq!(
            parsed(&applied.changes_json()),
            json!([{ "path": [], "value": whole }])
        );
        assert_eq!(reader.entry_count(), 2002);
        // The same again integrates nothing: nothing to report or persist.
        let again = reader.apply_update(&state).unwrap();
        assert!(again.update.is_none() && !again.has_changes());
        // The rebuilt index serves subtree writes.
        let changes = reader
            .apply_ops(&[set("k", json!("flat"))])
            .unwrap()
            .changes;
        assert_eq!(changes[0], change("k", Some(json!("flat"))));
        assert_eq!(reader.entry_count(), 3);
        assert_eq!(
            reader.to_json(),
            json!({ "early": 1, "mine": "r", "k": "flat" })
        );
    }

    #[test]
    fn a_large_value_into_a_document_is_a_change_of_one_entry() {
        let writer = SharedDoc::new();
        let entries: Vec<Op> = (0..100).map(|i| set(&format!("k{i}"), json!(i))).collect();
        writer.apply_ops(&entries).unwrap();
        let reader = SharedDoc::new();
        reader.apply_update(&writer.encode_state()).unwrap();
        // 64 KiB in one item: many bytes per entry held, but one entry changed.
        let big = "x".repeat(64 * 1024);
        let update = writer
            .apply_ops(&[set("blob", json!(big))])
            .unwrap()
            .update
            .unwrap();
        assert!(update.len() > 64 * 1024);
        assert_eq!(
            reader.apply_update(&update).unwrap().changes,
            vec![change("blob", Some(json!(big)))]
        );
        assert_eq!(reader.entry_count(), 101);
    }

    #[test]
    fn a_small_fill_is_reported_per_entry() {
        let writer = SharedDoc::new();
        writer
            .apply_ops(&[set("a.b", json!(1)), set("c", json!([2]))])
            .unwrap();
        let newcomer = SharedDoc::new();
        let mut changes = newcomer
            .apply_update(&writer.encode_state())
            .unwrap()
            .changes;
        changes.sort_by_key(Change::path);
        assert_eq!(
            changes,
            vec![change("a.b", Some(json!(1))), change("c", Some(json!([2])))]
        );
        // Emptied again (history kept), the next fill is a fill again.
        newcomer.apply_ops(&[delete("a"), delete("c")]).unwrap();
        assert_eq!(newcomer.entry_count(), 0);
        let other = SharedDoc::new();
        let update = other
            .apply_ops(&[set("d", json!(true))])
            .unwrap()
            .update
            .unwrap();
        assert_eq!(
            newcomer.apply_update(&update).unwrap().changes,
            vec![change("d", Some(json!(true)))]
        );
        assert_eq!(newcomer.to_json(), json!({ "d": true }));
    }

    /// The text written without a tree is the JSON of the leaves, flat (any order) or nested
    /// (a leaf with entries below it gives way to them), with what JSON escapes.
    #[test]
    fn tree_text_is_the_json_of_the_leaves() {
        let flat = tree_of(vec![
            ("b\"q", json!(1)),
            ("a\\", json!("x\ny")),
            ("ü", json!(null)),
        ]);
        assert_eq!(parsed(&flat), json!({"b\"q": 1, "a\\": "x\ny", "ü": null}));
        assert_eq!(tree_of(Vec::new()), "{}");
        let sep = KEY_SEPARATOR;
        let (px, py, q) = (
            format!("p{sep}x"),
            format!("p{sep}y{sep}z"),
            format!("q\"{sep}r"),
        );
        let nested = tree_of(vec![
            (py.as_str(), json!([1, {"a": 2}])),
            ("p", json!(5)),
            (q.as_str(), json!(true)),
            (px.as_str(), json!(1.5)),
            ("s", json!({})),
        ]);
        assert_eq!(
            parsed(&nested),
            json!({"p": {"x": 1.5, "y": {"z": [1, {"a": 2}]}}, "q\"": {"r": true}, "s": {}})
        );
    }
}

#[cfg(test)]
mod fuzz {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn valid_update() -> Vec<u8> {
        let doc = SharedDoc::new();
        doc.apply_ops(&[
            Op::set(&["a".into()], json!({"b": [1, "x"], "c": 2.5})),
            Op::delete(&["a".into(), "c".into()]),
        ])
        .unwrap();
        doc.encode_state()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// Arbitrary bytes as an update: an error or a no-op, never a panic, and the document
        /// still reads and still accepts a valid update afterwards.
        #[test]
        fn random_updates_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let doc = SharedDoc::new();
            let _ = doc.apply_update(&bytes);
            let _ = doc.to_json();
            prop_assert!(doc.apply_update(&valid_update()).is_ok());
        }

        /// A valid update with a few bytes changed.
        #[test]
        fn mutated_updates_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
            let mut bytes = valid_update();
            for (i, b) in edits {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            let doc = SharedDoc::new();
            let _ = doc.apply_update(&bytes);
            let _ = doc.to_json();
            // Whatever yrs took in, the index (rebuilt after a fill) holds exactly its keys.
            let in_map = doc.root.keys(&doc.doc.transact()).count();
            prop_assert_eq!(doc.entry_count(), in_map);
        }

        /// Two writers make random batches of writes and deletes over a few nested paths at
        /// once, then take each other's update (concurrent edits: a leaf on one side, entries
        /// below it on the other), and a replica takes both. After every step, each one's tab
        /// mirror that applies the reported changes (as `sdk/state.js` does) equals its
        /// document, the entry count is its map's, and all three agree.
        #[test]
        fn reported_changes_keep_a_mirror_equal_to_the_document(
            steps in proptest::collection::vec(
                [batch_strategy(), batch_strategy()],
                1..10,
            )
        ) {
            let docs = [SharedDoc::new(), SharedDoc::new(), SharedDoc::new()];
            let mut mirrors = [json!({}), json!({}), json!({})];
            let take = |at: usize, applied: Applied, mirrors: &mut [Value; 3]| {
                apply_changes(&mut mirrors[at], &applied.changes_json());
            };
            for [ops_a, ops_b] in &steps {
                let a = docs[0].apply_ops(ops_a).unwrap();
                let b = docs[1].apply_ops(ops_b).unwrap();
                let (update_a, update_b) = (a.update.clone(), b.update.clone());
                take(0, a, &mut mirrors);
                take(1, b, &mut mirrors);
                for (to, update) in [(0, &update_b), (1, &update_a), (2, &update_a), (2, &update_b)] {
                    if let Some(update) = update {
                        let applied = docs[to].apply_update(update).unwrap();
                        take(to, applied, &mut mirrors);
                    }
                }
                for (doc, mirror) in docs.iter().zip(&mirrors) {
                    prop_assert_eq!(mirror, &doc.to_json());
                    let in_map = doc.root.keys(&doc.doc.transact()).count();
                    prop_assert_eq!(doc.entry_count(), in_map);
                }
                prop_assert_eq!(&mirrors[0], &mirrors[1]);
                prop_assert_eq!(&mirrors[0], &mirrors[2]);
            }
        }

        /// The tree built from sorted leaves is the one inserting them one by one builds, for
        /// any keys: leaves with entries below them, prefixes, empty segments, and bytes
        /// below the separator or none (`plain`: such keys sort as plain bytes).
        #[test]
        fn sorted_tree_building_matches_leaf_insertion(
            segments in proptest::collection::vec(proptest::collection::vec(0..6usize, 1..4), 0..24),
            plain in any::<bool>(),
            empty_objects in proptest::collection::vec(any::<bool>(), 24),
        ) {
            let alphabet = if plain {
                ["a", "ab", "b", " ", "a ", ""]
            } else {
                ["a", "ab", "b", "\u{1}", "a\u{1}", ""]
            };
            let keys: BTreeSet<Vec<&str>> = segments
                .iter()
                .map(|key| key.iter().map(|&i| alphabet[i]).collect())
                .collect();
            prop_assert_eq!(sorted_tree(&keys, &empty_objects), inserted_tree(&keys, &empty_objects));
        }
    }

    /// 1 to 7 operations over paths of up to 3 keys from `a`, `b`, `c`: deletes, objects with
    /// nested objects, empty objects and scalars.
    fn batch_strategy() -> impl Strategy<Value = Vec<Op>> {
        let op = (
            proptest::collection::vec(0..3usize, 1..4),
            0..5u8,
            any::<i8>(),
        )
            .prop_map(|(path, kind, n)| {
                let path: Path = path
                    .iter()
                    .map(|&i| ["a", "b", "c"][i].to_string())
                    .collect();
                match kind {
                    0 => Op::delete(&path),
                    1 => Op::set(&path, json!({"x": n, "y": {"z": [n]}})),
                    2 => Op::set(&path, json!({})),
                    _ => Op::set(&path, json!(n)),
                }
            });
        proptest::collection::vec(op, 1..8)
    }

    /// A tab's mirror taking a transaction's changes: `applyChange` of `sdk/state.js`.
    fn apply_changes(tree: &mut Value, changes_json: &str) {
        let changes: Vec<Value> = serde_json::from_str(changes_json).unwrap();
        for change in changes {
            let path: Vec<&str> = change["path"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect();
            let value = change.get("value").cloned();
            let Some((last, parents)) = path.split_last() else {
                *tree = value.unwrap_or_else(|| json!({}));
                continue;
            };
            // Deleting below something that is not there does nothing.
            let mut probe = &*tree;
            let reachable = parents.iter().all(|k| match probe.get(*k) {
                Some(child) if child.is_object() => {
                    probe = child;
                    true
                }
                _ => false,
            });
            if value.is_none() && !reachable {
                continue;
            }
            let mut node = &mut *tree;
            for k in parents {
                let map = node.as_object_mut().unwrap();
                if !map.get(*k).is_some_and(Value::is_object) {
                    map.insert(k.to_string(), json!({}));
                }
                node = map.get_mut(*k).unwrap();
            }
            let map = node.as_object_mut().unwrap();
            match value {
                Some(v) => {
                    map.insert(last.to_string(), v);
                }
                None => {
                    map.remove(*last);
                }
            }
        }
    }

    fn test_leaves(keys: &BTreeSet<Vec<&str>>, empty_objects: &[bool]) -> Vec<(String, Value)> {
        keys.iter()
            .zip(empty_objects)
            .enumerate()
            .map(|(i, (k, &empty))| {
                let value = if empty { json!({}) } else { json!(i) };
                (k.join(&KEY_SEPARATOR.to_string()), value)
            })
            .collect()
    }

    /// [`tree_of`] over the leaves, handed over in reverse order.
    fn sorted_tree(keys: &BTreeSet<Vec<&str>>, empty_objects: &[bool]) -> Value {
        let leaves = test_leaves(keys, empty_objects);
        let text = tree_of(
            leaves
                .iter()
                .rev()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect(),
        );
        serde_json::from_str(&text).unwrap()
    }

    /// The leaves inserted one by one.
    fn inserted_tree(keys: &BTreeSet<Vec<&str>>, empty_objects: &[bool]) -> Value {
        let mut tree = JsonMap::new();
        for (k, v) in test_leaves(keys, empty_objects) {
            let path: Vec<&str> = k.split(KEY_SEPARATOR).collect();
            insert_leaf(&mut tree, &path, v);
        }
        Value::Object(tree)
    }
}
