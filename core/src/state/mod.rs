//! Shared state: yrs documents, their peer sync and their versions.
//!
//! Everything here is platform-neutral and natively tested; the node loop ([`crate::node`])
//! wires it to tabs, the network and storage, and the relay reuses [`replica::Replica`] to pin
//! documents.

pub mod document;
mod key_index;
pub mod path;
pub mod replica;
pub mod response_budget;
pub mod sync_protocol;
pub mod update_check;

pub use document::{Applied, Change, SharedDoc, Version};
pub use path::Op;
pub use replica::Replica;
