//! Platform-neutral core of a PeerCompute node.
//!
//! Everything here compiles natively and to `wasm32-unknown-unknown`, and is tested natively:
//! the tab protocol ([`tab_protocol`]), the peer wire formats ([`pubsub`], [`discovery`]), their
//! size bounds ([`limits`]), the libp2p behaviour ([`behaviour`]) and the node event loop
//! ([`node`]). The browser host (`sw/`) and the relay (`relay-server/`) are thin adapters.
#![deny(missing_docs)]

pub mod backoff;
pub mod behaviour;
pub mod circuit_policy;
pub mod compute;
pub mod discovery;
pub mod error;
pub mod frame;
pub mod limits;
#[cfg(not(wasm_browser))]
pub mod native;
pub mod node;
pub mod presence;
pub mod pubsub;
pub mod relay_addr;
pub mod replay;
mod seeded_hash;
pub mod state;
pub mod tab_protocol;
pub mod transport;

pub use error::{ErrorCode, NodeError};
pub use libp2p;
pub use node::{queue_lifecycle, Input, Node, NodeConfig, Output};
