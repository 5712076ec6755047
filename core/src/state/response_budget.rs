//! Bytes of sync answers handed to connections and not yet sent, per peer and in all.
//!
//! An answer can hold whole documents (up to [`MAX_SYNC_FRAME_BYTES`]); it is built at once
//! and held until the peer reads it. Without a bound, one peer asking on every stream of every
//! connection (8 × 4) could make a node or the pinning relay hold over a gigabyte of answers,
//! and a few such peers exhaust its memory. A peer past its share is answered "ask again" for
//! everything (see [`Replica::handle_request_within`](super::Replica::handle_request_within)),
//! which it does at its next resync. While the total has room, the first whole answer of a
//! peer with nothing in flight always fits.

use std::{collections::HashMap, hash::Hash};

use libp2p::PeerId;
use web_time::{Duration, Instant};

use crate::limits::MAX_SYNC_FRAME_BYTES;

/// Bytes of answers one peer may have in flight: one whole frame.
pub const PEER_RESPONSE_BYTES: usize = MAX_SYNC_FRAME_BYTES;
/// Bytes of answers in flight to all peers together.
pub const TOTAL_RESPONSE_BYTES: usize = 4 * MAX_SYNC_FRAME_BYTES;
/// An answer whose fate was never reported counts no longer than this (past the sync
/// protocol's 30 s stream timeout, which reports it).
const IN_FLIGHT_EXPIRY: Duration = Duration::from_secs(60);

/// Answers in flight, keyed by their request (`K`: the request-response inbound request id).
#[derive(Debug)]
pub struct ResponseBudget<K> {
    per_peer_limit: usize,
    total_limit: usize,
    in_flight: HashMap<K, InFlight>,
    per_peer: HashMap<PeerId, usize>,
    total: usize,
}

#[derive(Debug)]
struct InFlight {
    peer: PeerId,
    bytes: usize,
    since: Instant,
}

impl<K: Hash + Eq + Clone> Default for ResponseBudget<K> {
    fn default() -> Self {
        Self::new(PEER_RESPONSE_BYTES, TOTAL_RESPONSE_BYTES)
    }
}

impl<K: Hash + Eq + Clone> ResponseBudget<K> {
    /// A budget of `per_peer_limit` bytes per peer and `total_limit` in all.
    pub fn new(per_peer_limit: usize, total_limit: usize) -> Self {
        ResponseBudget {
            per_peer_limit,
            total_limit,
            in_flight: HashMap::new(),
            per_peer: HashMap::new(),
            total: 0,
        }
    }

    /// Bytes of answers `peer` may be sent now. Answers older than the expiry stop counting.
    pub fn available(&mut self, peer: &PeerId, now: Instant) -> usize {
        let expired: Vec<K> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.since) >= IN_FLIGHT_EXPIRY)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.settle(&id);
        }
        let used = self.per_peer.get(peer).copied().unwrap_or(0);
        self.per_peer_limit
            .saturating_sub(used)
            .min(self.total_limit.saturating_sub(self.total))
    }

    /// An answer of `bytes` to `peer`'s request `id` was handed to its connection.
    pub fn spend(&mut self, peer: PeerId, id: K, bytes: usize, now: Instant) {
        if let Some(old) = self.in_flight.insert(
            id,
            InFlight {
                peer,
                bytes,
                since: now,
            },
        ) {
            self.release(&old);
        }
        *self.per_peer.entry(peer).or_default() += bytes;
        self.total += bytes;
    }

    /// Request `id`'s answer was sent, or will never be (the stream failed): its bytes are
    /// free again. Unknown ids are ignored.
    pub fn settle(&mut self, id: &K) {
        if let Some(done) = self.in_flight.remove(id) {
            self.release(&done);
        }
    }

    /// Bytes in flight to all peers.
    pub fn in_flight_bytes(&self) -> usize {
        self.total
    }

    fn release(&mut self, done: &InFlight) {
        self.total -= done.bytes;
        if let Some(used) = self.per_peer.get_mut(&done.peer) {
            *used -= done.bytes;
            if *used == 0 {
                self.per_peer.remove(&done.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_share_back_once_its_answers_are_sent() {
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut budget = ResponseBudget::<u32>::new(100, 150);
        assert_eq!(budget.available(&a, now), 100);
        budget.spend(a, 1, 60, now);
        budget.spend(a, 2, 40, now);
        assert_eq!(budget.available(&a, now), 0, "a's share is spent");
        assert_eq!(budget.available(&b, now), 50, "the total bounds b");
        budget.settle(&1);
        budget.settle(&1); // reported twice: counted once
        assert_eq!(budget.available(&a, now), 60);
        budget.settle(&2);
        budget.settle(&99); // never spent
        assert_eq!(budget.available(&a, now), 100);
        assert_eq!(budget.in_flight_bytes(), 0);
    }

    #[test]
    fn an_answer_never_reported_stops_counting_after_the_expiry() {
        let now = Instant::now();
        let a = PeerId::random();
        let mut budget = ResponseBudget::<u32>::new(100, 100);
        budget.spend(a, 1, 100, now);
        assert_eq!(budget.available(&a, now + Duration::from_secs(59)), 0);
        assert_eq!(budget.available(&a, now + IN_FLIGHT_EXPIRY), 100);
        assert_eq!(budget.in_flight_bytes(), 0);
    }

    #[test]
    fn an_id_spent_again_replaces_its_first_answer() {
        let now = Instant::now();
        let a = PeerId::random();
        let mut budget = ResponseBudget::<u32>::new(100, 100);
        budget.spend(a, 1, 70, now);
        budget.spend(a, 1, 20, now);
        assert_eq!(budget.available(&a, now), 80);
    }
}
