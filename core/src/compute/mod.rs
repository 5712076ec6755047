//! Distributed compute, the platform-neutral part: tasks and their bounds ([`task`]), how a
//! task's grid is split into chunks ([`split`]), the built-in CPU kernels ([`kernels`]), CPU
//! kernels shipped as signed wasm modules ([`wasm_kernel`]; run natively by `wasm_native`), code
//! signatures ([`signing`]), how chunks are handed to peers, retried, verified and collected
//! ([`scheduler`]), how chunk results are combined ([`reduce`]), and the peer wire protocol
//! ([`protocol`]).
//!
//! Everything here is data in, decisions out: no I/O and no clock of its own, so it runs the
//! same in the browser node, in a native compute peer and in seeded simulations.

#[cfg(feature = "gpu")]
pub mod gpu;
pub mod kernels;
pub mod protocol;
pub mod recent;
pub mod reduce;
pub mod scheduler;
pub mod shaders;
pub mod signing;
pub mod split;
pub mod task;
pub mod wasm_kernel;
#[cfg(not(all(target_family = "wasm", target_os = "unknown")))]
pub mod wasm_native;
