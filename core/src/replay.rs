//! Replayed gossip: a signed message sent again, after gossipsub has forgotten its id (one
//! minute), would be taken as new. Presence and discovery messages describe their sender's
//! current state, so an old one brought back (a departed peer's addresses, a cleared state)
//! would undo what is known; they are dropped by their signed sequence number instead.

use std::collections::BTreeMap;

use libp2p::PeerId;
use web_time::{Duration, Instant};

/// How long a peer's last message sequence number is remembered after it was seen; gossipsub
/// forgets message ids after a minute.
pub const REPLAY_MEMORY: Duration = Duration::from_secs(300);

/// The highest gossip sequence number seen from each peer on one topic, and when, for at most
/// `capacity` peers.
#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    last_seq: BTreeMap<PeerId, (u64, Instant)>,
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` senders.
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            capacity,
            last_seq: BTreeMap::new(),
        }
    }

    /// Whether a message from `peer` with gossip sequence number `seq` is newer than any seen
    /// from it within [`REPLAY_MEMORY`]; records it if so. Gossipsub numbers a node's messages
    /// from the clock at its start, so they grow across its restarts too. A message that
    /// arrives after a newer one of its sender counts as a replay: it is older news.
    pub fn fresh(&mut self, peer: PeerId, seq: u64, now: Instant) -> bool {
        if self.last_seq.get(&peer).is_some_and(|&(last, at)| {
            seq <= last && now.saturating_duration_since(at) < REPLAY_MEMORY
        }) {
            return false;
        }
        if !self.last_seq.contains_key(&peer) && self.last_seq.len() >= self.capacity {
            self.last_seq
                .retain(|_, &mut (_, at)| now.saturating_duration_since(at) < REPLAY_MEMORY);
            if self.last_seq.len() >= self.capacity {
                // Still full of recent senders: the one heard from longest ago goes.
                if let Some(oldest) = self.last_seq.iter().min_by_key(|(_, (_, at))| *at) {
                    let oldest = *oldest.0;
                    self.last_seq.remove(&oldest);
                }
            }
        }
        self.last_seq.insert(peer, (seq, now));
        true
    }

    /// How many senders are remembered.
    pub fn len(&self) -> usize {
        self.last_seq.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.last_seq.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message no newer than one seen from its sender within `REPLAY_MEMORY` is a replay
    /// (or reordered); the memory is bounded.
    #[test]
    fn old_messages_are_replays_for_a_while_and_the_memory_is_bounded() {
        let mut guard = ReplayGuard::new(8);
        let a = PeerId::random();
        let t0 = Instant::now();
        assert!(guard.fresh(a, 100, t0));
        assert!(!guard.fresh(a, 100, t0), "the same message again");
        assert!(!guard.fresh(a, 99, t0), "an older one");
        assert!(guard.fresh(a, 101, t0));
        assert!(!guard.fresh(a, 100, t0 + Duration::from_secs(299)));
        assert!(
            guard.fresh(a, 100, t0 + REPLAY_MEMORY + Duration::from_secs(1)),
            "forgotten after a while"
        );
        let later = t0 + 2 * REPLAY_MEMORY;
        for i in 0..20 {
            assert!(guard.fresh(PeerId::random(), i, later));
        }
        assert_eq!(guard.len(), 8);
    }
}
