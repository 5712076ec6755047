//! The node's IndexedDB database: `identity` (the node key) and `state` (documents' update
//! records, keyed `[doc, seq]`).

use idb::{Database, DatabaseEvent, Factory, ObjectStoreParams};
use wasm_bindgen::JsValue;

pub(crate) const DB: &str = "peercompute";
/// Version 2 added the `state` store.
const VERSION: u32 = 2;
pub(crate) const IDENTITY_STORE: &str = "identity";
pub(crate) const STATE_STORE: &str = "state";

pub(crate) fn js(context: &str, e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&format!("{context}: {e}"))
}

/// Opens (and creates or upgrades) the database.
pub(crate) async fn open() -> Result<Database, JsValue> {
    let factory = Factory::new().map_err(|e| js("IndexedDB", e))?;
    let mut open = factory
        .open(DB, Some(VERSION))
        .map_err(|e| js("IndexedDB", e))?;
    open.on_upgrade_needed(|event| {
        if let Ok(db) = event.database() {
            let names = db.store_names();
            for store in [IDENTITY_STORE, STATE_STORE] {
                if !names.iter().any(|n| n == store) {
                    let _ = db.create_object_store(store, ObjectStoreParams::new());
                }
            }
        }
    });
    open.await.map_err(|e| js("IndexedDB", e))
}
