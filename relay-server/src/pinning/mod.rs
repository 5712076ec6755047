//! Documents the relay pins (`--state-dir`): it takes part in the y-sync exchange and the
//! per-document gossip like any node, adopts every document a peer syncs (up to
//! [`MAX_PINNED_DOCS`]), and keeps each one in a file of update records, so that a world's
//! state outlives every browser that edited it and a newcomer loads it from the relay alone.
//!
//! Files are written by one thread, in the order the updates were applied. The writes that
//! queued while the thread was busy are committed together: each document's new records are
//! written at once and `fsync`ed once (group commit), so a burst of updates costs one sync per
//! document, not one per update. Compaction replaces a file atomically (write, sync, rename).

mod records;

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
};

use anyhow::Context;
use peercompute_core::{
    limits::MAX_PINNED_DOCS,
    state::{sync_protocol::SyncFrame, Applied, Replica},
};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::stats::{PinnedDoc, Stats};

pub use records::{
    decode_file, encode_file, encode_record, DocFile, FileError, MAGIC, MAX_RECORD_BYTES,
};

/// File extension of document files.
const EXTENSION: &str = "ydoc";
/// File extension of a document file being written, before its rename.
const TMP_EXTENSION: &str = "tmp";
/// Writes queued for the file thread at most. A full queue makes the relay's event loop wait
/// for the disk (back-pressure) instead of holding an unbounded backlog in memory.
const MAX_QUEUED_WRITES: usize = 256;
/// Bytes of updates one group commit takes from the queue at most (it takes at least one).
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// A write for the file thread.
enum FileWrite {
    Append { doc: String, update: Vec<u8> },
    Compact { doc: String, state: Vec<u8> },
}

/// The pinned documents and their files.
pub struct PinnedDocs {
    replica: Replica,
    writes: Option<mpsc::SyncSender<FileWrite>>,
    writer: Option<thread::JoinHandle<()>>,
    /// The open `.lock` file whose lock says this process owns the directory.
    _lock: fs::File,
}

/// Takes the state directory for this process: a second relay on the same directory would
/// load, compact and rename the files the first is appending to.
fn lock_dir(dir: &Path) -> anyhow::Result<fs::File> {
    let path = dir.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns; it takes no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            anyhow::bail!(
                "{} is in use by another relay-server: {}",
                dir.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(file)
}

/// The file that holds `doc`: named by a hash, since document names may hold any character
/// and be longer than a file name may be; the name itself is the file's first record.
pub fn doc_file(dir: &Path, doc: &str) -> PathBuf {
    let hash = Sha256::digest(doc.as_bytes());
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.{EXTENSION}"))
}

/// Where a damaged document file is kept for recovery by hand.
fn damaged_copy(path: &Path) -> PathBuf {
    path.with_extension(format!("{EXTENSION}.damaged"))
}

impl PinnedDocs {
    /// Opens (creating it if needed) the state directory and loads every document in it.
    /// Damaged records are skipped and reported; a file that cannot be read at all is set
    /// aside (renamed `….ydoc.damaged`), so the document's next records start a new file
    /// instead of going after a header nothing can read.
    /// Peers' updates and new documents are not taken once the documents store
    /// `max_bytes` together (what is already on disk still loads).
    pub fn open(dir: &Path, max_bytes: usize) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock = lock_dir(dir)?;
        let mut replica = Replica::with_total_budget(MAX_PINNED_DOCS, max_bytes);
        let mut to_compact = Vec::new();
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some(EXTENSION) => {}
                // A compaction this directory's last relay did not finish (it holds the lock
                // now, so no other is writing one): the document file it was to replace
                // still stands.
                Some(TMP_EXTENSION) => {
                    if let Err(e) = fs::remove_file(&path) {
                        warn!(path = %path.display(), "could not remove a stale file: {e}");
                    }
                    continue;
                }
                _ => continue,
            }
            let file = match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    decode_file(&bytes).map_err(|e| format!("not a document file: {e:?}"))
                }) {
                Ok(file) => file,
                Err(e) => {
                    let aside = damaged_copy(&path);
                    warn!(path = %path.display(), aside = %aside.display(), "setting aside: {e}");
                    if let Err(e) = fs::rename(&path, &aside) {
                        warn!(path = %path.display(), "could not set it aside: {e}");
                    }
                    continue;
                }
            };
            match replica.load(&file.name, file.updates.iter().map(Vec::as_slice)) {
                Ok(report) => {
                    let corrupt = file.corrupt + report.corrupt;
                    if corrupt > 0 {
                        warn!(doc = file.name, corrupt, "skipped damaged records");
                        to_compact.push((file.name.clone(), path.clone()));
                    }
                    info!(
                        doc = file.name,
                        records = report.applied,
                        "pinned document loaded"
                    );
                }
                Err(e) => warn!(doc = file.name, "not loaded: {}", e.message),
            }
        }
        let (writes, queue) = mpsc::sync_channel(MAX_QUEUED_WRITES);
        let dir = dir.to_path_buf();
        let writer = thread::Builder::new()
            .name("state-files".into())
            .spawn(move || write_files(&dir, queue))?;
        let mut pinned = PinnedDocs {
            replica,
            writes: Some(writes),
            writer: Some(writer),
            _lock: lock,
        };
        // Rewrite damaged files without their damage, so it is reported once; the original
        // is kept beside it. Not while records wait for one that was damaged (yrs holds them
        // pending): a compaction would drop them, and a peer may still send what they need.
        for (doc, path) in to_compact {
            if !pinned
                .replica
                .state(&doc)
                .is_some_and(|s| s.compaction_keeps_everything())
            {
                warn!(doc, "kept as it is: some records wait for a damaged one");
                continue;
            }
            if let Err(e) = fs::copy(&path, damaged_copy(&path)) {
                warn!(doc, "not compacted, the original could not be kept: {e}");
                continue;
            }
            pinned.compact(&doc);
        }
        Ok(pinned)
    }

    /// How many documents are pinned.
    pub fn len(&self) -> usize {
        self.replica.len()
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.replica.is_empty()
    }

    /// The pinned documents' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.replica.names()
    }

    /// What `/status` shows of a pinned document.
    pub fn summary(&self, doc: &str) -> Option<PinnedDoc> {
        self.replica.state(doc).map(|s| PinnedDoc {
            entries: s.doc.entry_count(),
            bytes: s.stored_bytes,
        })
    }

    /// Refreshes the `/status` lines of `docs` only (what one message touched), not of all.
    pub fn show<'a>(&self, stats: &mut Stats, docs: impl IntoIterator<Item = &'a str>) {
        let shown = stats.pinned.get_or_insert_with(BTreeMap::new);
        for doc in docs {
            if let Some(summary) = self.summary(doc) {
                shown.insert(doc.to_string(), summary);
            }
        }
    }

    /// The document's contents as JSON, if pinned.
    pub fn json(&self, doc: &str) -> Option<serde_json::Value> {
        self.replica.get(doc).map(|d| d.to_json())
    }

    /// Answers a peer's sync request with at most `limit` bytes of answers (the peer's share
    /// of the response budget), adopting the documents it names; returns the response and
    /// how many parts were refused.
    pub fn handle_request(&mut self, frame: SyncFrame, limit: usize) -> (SyncFrame, usize) {
        let (response, outcome) = self.replica.handle_request_within(frame, &|_| true, limit);
        self.persist(outcome.applied);
        (response, outcome.rejected)
    }

    /// Applies an update gossiped on a document's topic; `false` if it was refused.
    pub fn apply_broadcast(&mut self, doc: &str, update: &[u8]) -> bool {
        let outcome = self.replica.apply_broadcast(doc, update, true);
        self.persist(outcome.applied);
        outcome.rejected == 0
    }

    fn persist(&mut self, applied: Vec<(String, Applied)>) {
        for (doc, applied) in applied {
            let Some(update) = applied.update else {
                continue;
            };
            let compact = self
                .replica
                .state_mut(&doc)
                .is_some_and(|s| s.note_appended(update.len()));
            self.send(FileWrite::Append {
                doc: doc.clone(),
                update,
            });
            if compact {
                self.compact(&doc);
            }
        }
    }

    fn compact(&mut self, doc: &str) {
        let Some(state) = self.replica.state_mut(doc) else {
            return;
        };
        let full = state.compacted();
        if full.len() > MAX_RECORD_BYTES {
            // Documents are bounded well below this (`DocState::check_room`); never write a
            // record the loader would refuse.
            warn!(
                doc,
                bytes = full.len(),
                "state too large to store as one record"
            );
            return;
        }
        self.send(FileWrite::Compact {
            doc: doc.to_string(),
            state: full,
        });
    }

    fn send(&self, write: FileWrite) {
        if let Some(w) = &self.writes {
            if w.send(write).is_err() {
                warn!("the state file thread has stopped: an update was not stored");
            }
        }
    }
}

impl Drop for PinnedDocs {
    /// Finishes every queued write before the relay stops.
    fn drop(&mut self) {
        self.writes.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl FileWrite {
    fn bytes(&self) -> usize {
        match self {
            FileWrite::Append { update, .. } => update.len(),
            FileWrite::Compact { state, .. } => state.len(),
        }
    }
}

fn write_files(dir: &Path, queue: mpsc::Receiver<FileWrite>) {
    while let Ok(first) = queue.recv() {
        // What queued meanwhile joins this commit, up to a queue's worth of writes or
        // `MAX_BATCH_BYTES`: while it is written, the queue fills again behind it.
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while batch.len() < MAX_QUEUED_WRITES && bytes < MAX_BATCH_BYTES {
            let Ok(next) = queue.try_recv() else { break };
            bytes += next.bytes();
            batch.push(next);
        }
        commit(dir, batch);
    }
}

/// Writes a batch: appends are grouped per document and synced once at the end; a
/// compaction is written where it stands in the batch, and the appends to its document queued
/// before it are left out, since the compacted state holds them (unless it fails).
fn commit(dir: &Path, batch: Vec<FileWrite>) {
    let mut appends: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for write in batch {
        match write {
            FileWrite::Append { doc, update } => appends.entry(doc).or_default().push(update),
            FileWrite::Compact { doc, state } => {
                let path = doc_file(dir, &doc);
                let superseded = appends.remove(&doc);
                if let Err(e) = replace(&path, &encode_file(&doc, [state.as_slice()])) {
                    warn!(doc, "compacting the document's file failed: {e}");
                    // The old file stands: its records still need what came since.
                    if let Some(updates) = superseded {
                        appends.insert(doc, updates);
                    }
                }
            }
        }
    }
    for (doc, updates) in appends {
        if let Err(e) = append(&doc_file(dir, &doc), &doc, &updates) {
            warn!(
                doc,
                records = updates.len(),
                "writing the document's file failed: {e}"
            );
        }
    }
}

/// Appends `updates` to a document's file (creating it), with one sync for all of them.
fn append(path: &Path, doc: &str, updates: &[Vec<u8>]) -> std::io::Result<()> {
    let mut records = updates.iter().map(Vec::as_slice);
    if !path.exists() {
        return replace(path, &encode_file(doc, records));
    }
    let f = fs::OpenOptions::new().append(true).open(path)?;
    let before = f.metadata()?.len();
    let mut out = std::io::BufWriter::new(&f);
    let written = records
        .try_for_each(|r| out.write_all(&encode_record(r)))
        .and_then(|()| out.flush())
        .and_then(|()| f.sync_data());
    drop(out);
    if written.is_err() {
        // A partial record (a full disk, say) would end the file when it is read back, and
        // every later append would land after it, unread: cut it off again.
        let _ = f.set_len(before).and_then(|()| f.sync_data());
    }
    written
}

/// Writes `bytes` to `path` atomically: a temporary file, synced, renamed over it, and the
/// folder synced, so the rename itself survives a power cut.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(TMP_EXTENSION);
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
