//! The node's key in IndexedDB, so its peer id survives reloads and browser restarts.

use idb::{Database, TransactionMode};
use js_sys::Uint8Array;
use peercompute_core::libp2p::identity::Keypair;
use wasm_bindgen::JsValue;

use crate::db::IDENTITY_STORE as STORE;

const KEY: &str = "node-key";
/// A protobuf-encoded Ed25519 keypair is 68 bytes; anything far larger is not ours.
const MAX_KEY_BYTES: u32 = 1024;

fn js(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&format!("identity store: {e}"))
}

/// Loads the node key, or creates and stores one. A corrupt record is reported and replaced.
pub(crate) async fn load_or_create(db: &Database) -> Result<Keypair, JsValue> {
    let tx = db
        .transaction(&[STORE], TransactionMode::ReadOnly)
        .map_err(js)?;
    let stored: Option<JsValue> = tx
        .object_store(STORE)
        .map_err(js)?
        .get(JsValue::from_str(KEY))
        .map_err(js)?
        .await
        .map_err(js)?;
    tx.await.map_err(js)?;
    if let Some(value) = stored {
        match value
            .dyn_into_bytes()
            .and_then(|b| Keypair::from_protobuf_encoding(&b).map_err(|e| e.to_string()))
        {
            Ok(k) => return Ok(k),
            Err(e) => {
                tracing::error!("stored node key is unreadable ({e}); creating a new identity")
            }
        }
    }
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair.to_protobuf_encoding().map_err(js)?;
    let tx = db
        .transaction(&[STORE], TransactionMode::ReadWrite)
        .map_err(js)?;
    tx.object_store(STORE)
        .map_err(js)?
        .put(
            &Uint8Array::from(bytes.as_slice()).into(),
            Some(&JsValue::from_str(KEY)),
        )
        .map_err(js)?
        .await
        .map_err(js)?;
    tx.commit().map_err(js)?.await.map_err(js)?;
    Ok(keypair)
}

trait DynIntoBytes {
    fn dyn_into_bytes(self) -> Result<Vec<u8>, String>;
}

impl DynIntoBytes for JsValue {
    fn dyn_into_bytes(self) -> Result<Vec<u8>, String> {
        use wasm_bindgen::JsCast;
        let array = self
            .dyn_into::<Uint8Array>()
            .map_err(|_| "not a Uint8Array".to_string())?;
        if array.length() > MAX_KEY_BYTES {
            return Err(format!("{} bytes", array.length()));
        }
        Ok(array.to_vec())
    }
}
