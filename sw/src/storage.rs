//! Documents' update records in IndexedDB: appended as the node writes them, read when a
//! document is opened, and compacted into one record in the background.
//!
//! Records are keyed `[doc, seq]`, so one key range holds a document's records in order.
//! Every write is its own readwrite transaction, created in the order the node emits them;
//! IndexedDB runs transactions over the same store in creation order, so a compaction never
//! overtakes an append that came before it.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use idb::{Database, KeyRange, Query, TransactionMode, TransactionResult};
use js_sys::{Array, Uint8Array};
use peercompute_core::limits::MAX_STORED_RECORD_BYTES;
use wasm_bindgen::{JsCast, JsValue};

use crate::db::STATE_STORE;

/// Largest sequence number (a JavaScript safe integer).
const MAX_SEQ: f64 = 9_007_199_254_740_991.0;

fn key(doc: &str, seq: u64) -> JsValue {
    Array::of2(&JsValue::from_str(doc), &JsValue::from_f64(seq as f64)).into()
}

fn range(doc: &str, upto: f64) -> Result<KeyRange, String> {
    let lower: JsValue = Array::of2(&JsValue::from_str(doc), &JsValue::from_f64(0.0)).into();
    let upper: JsValue = Array::of2(&JsValue::from_str(doc), &JsValue::from_f64(upto)).into();
    KeyRange::bound(&lower, &upper, Some(false), Some(false)).map_err(|e| e.to_string())
}

/// The `state` store and the next sequence number of each document.
pub(crate) struct StateStore {
    db: Database,
    next_seq: RefCell<HashMap<String, u64>>,
}

impl StateStore {
    pub(crate) fn new(db: Database) -> Rc<Self> {
        Rc::new(StateStore {
            db,
            next_seq: RefCell::new(HashMap::new()),
        })
    }

    /// A document's records, oldest first. A record that is not a byte array (or is larger
    /// than any stored record can be) is passed on empty, so the node counts it as corrupt.
    pub(crate) async fn load(&self, doc: &str) -> Result<Vec<Vec<u8>>, String> {
        let tx = self
            .db
            .transaction(&[STATE_STORE], TransactionMode::ReadOnly)
            .map_err(|e| e.to_string())?;
        let store = tx.object_store(STATE_STORE).map_err(|e| e.to_string())?;
        let query = || range(doc, MAX_SEQ).map(Query::KeyRange);
        let values = store
            .get_all(Some(query()?), None)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let keys = store
            .get_all_keys(Some(query()?), None)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let last_seq = keys
            .last()
            .and_then(|k| k.dyn_ref::<Array>().map(|a| a.get(1)))
            .and_then(|s| s.as_f64())
            .map_or(0, |s| s as u64);
        self.next_seq
            .borrow_mut()
            .insert(doc.to_string(), last_seq + 1);
        Ok(values
            .into_iter()
            .map(|v| match v.dyn_into::<Uint8Array>() {
                Ok(a) if (a.length() as usize) <= MAX_STORED_RECORD_BYTES => a.to_vec(),
                _ => Vec::new(),
            })
            .collect())
    }

    fn take_seq(&self, doc: &str) -> u64 {
        let mut seqs = self.next_seq.borrow_mut();
        let seq = seqs.entry(doc.to_string()).or_insert(1);
        let this = *seq;
        *seq += 1;
        this
    }

    /// Starts appending `update` (the transaction is created now, so writes keep their order)
    /// and resolves once it is committed.
    pub(crate) fn append(
        &self,
        doc: &str,
        update: &[u8],
    ) -> impl std::future::Future<Output = Result<(), String>> {
        self.write(doc, update, false)
    }

    /// Replaces every record written so far by `state`, atomically.
    pub(crate) fn compact(
        &self,
        doc: &str,
        state: &[u8],
    ) -> impl std::future::Future<Output = Result<(), String>> {
        self.write(doc, state, true)
    }

    /// Puts `bytes` as the document's next record in a transaction created now; with
    /// `replace`, the same transaction first deletes every earlier record.
    fn write(
        &self,
        doc: &str,
        bytes: &[u8],
        replace: bool,
    ) -> impl std::future::Future<Output = Result<(), String>> {
        let seq = self.take_seq(doc);
        let started = (|| {
            let tx = self
                .db
                .transaction(&[STATE_STORE], TransactionMode::ReadWrite)
                .map_err(|e| e.to_string())?;
            let store = tx.object_store(STATE_STORE).map_err(|e| e.to_string())?;
            if replace {
                store
                    .delete(Query::KeyRange(range(doc, (seq - 1) as f64)?))
                    .map_err(|e| e.to_string())?;
            }
            let value: JsValue = Uint8Array::from(bytes).into();
            store
                .put(&value, Some(&key(doc, seq)))
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(tx)
        })();
        async move { committed(started?.await).await }
    }
}

async fn committed(result: Result<TransactionResult, idb::Error>) -> Result<(), String> {
    match result {
        Ok(TransactionResult::Committed) => Ok(()),
        Ok(TransactionResult::Aborted) => Err("the transaction was aborted".into()),
        Err(e) => Err(e.to_string()),
    }
}
