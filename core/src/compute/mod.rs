//! Distributed compute, the platform-neutral part: how a task's grid is split into chunks
//! ([`split`]), how chunks are handed to peers, retried, verified and collected
//! ([`scheduler`]), and how chunk results are combined ([`reduce`]).
//!
//! Everything here is data in, decisions out: no I/O and no clock of its own, so it runs the
//! same in the browser node, in a native compute peer and in seeded simulations.

pub mod reduce;
pub mod scheduler;
pub mod split;
