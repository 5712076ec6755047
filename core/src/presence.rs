//! Presence (awareness): each node's small, ephemeral JSON state — a name, a cursor — seen by
//! every other node, and forgotten when the node leaves.
//!
//! Wire: one gossipsub topic, [`PRESENCE_TOPIC`], carrying y-protocols awareness updates
//! (`varuint count, (varuint clientID, varuint clock, varstring JSON)*`), so a Yjs awareness
//! client reads them. A node sends exactly one entry: its own. Who sent it comes from the
//! signed gossip envelope, never from the clientID, so nobody can speak for another peer.
//!
//! A node re-broadcasts its state every [`PRESENCE_REFRESH`]; an entry not refreshed for
//! [`PRESENCE_TIMEOUT`] expires, as in y-protocols. State `null` removes an entry at once.

use std::collections::BTreeMap;

use libp2p::{gossipsub::IdentTopic, PeerId};
use serde_json::Value;
use web_time::{Duration, Instant};

use crate::{
    error::ErrorCode,
    frame,
    limits::{MAX_PRESENCE_BYTES, MAX_PRESENCE_PEERS},
    replay::ReplayGuard,
    state::path::validate_value,
    NodeError,
};

/// The presence topic.
pub const PRESENCE_TOPIC: &str = "pc/presence/1";
/// How often a node repeats its state (y-protocols: 15 s).
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(15);
/// How long an entry lives without a refresh (y-protocols: 30 s).
pub const PRESENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest awareness message: one entry with the largest state.
pub const MAX_PRESENCE_MESSAGE_BYTES: usize = MAX_PRESENCE_BYTES + 32;

/// The presence topic as a gossipsub topic.
pub fn presence_topic() -> IdentTopic {
    IdentTopic::new(PRESENCE_TOPIC)
}

/// One awareness entry: `state` is JSON text, `None` for "removed" (`null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessEntry {
    /// The sender's awareness client id (informative only).
    pub client_id: u64,
    /// Grows with every change and refresh.
    pub clock: u64,
    /// JSON text of the state, or `None` when removed.
    pub state: Option<String>,
}

fn bad(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::PresenceInvalidValue, message)
}

/// Checks the size of a state's JSON text, before anything parses it.
pub fn check_state_size(json: &str) -> Result<(), NodeError> {
    if json.len() > MAX_PRESENCE_BYTES {
        return Err(NodeError::new(
            ErrorCode::PayloadTooLarge,
            format!("a presence state is at most {MAX_PRESENCE_BYTES} bytes of JSON"),
        ));
    }
    Ok(())
}

/// Checks a state a tab sets: plain JSON (or `null`), at most [`MAX_PRESENCE_BYTES`] as text.
/// Returns the canonical JSON text, `None` for `null`.
pub fn validate_state(json: &str) -> Result<Option<String>, NodeError> {
    check_state_size(json)?;
    let value: Value = serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    if value.is_null() {
        return Ok(None);
    }
    validate_value(&value).map_err(|e| bad(e.message))?;
    // The canonical text is what travels, and it can be longer than what was given
    // (`1e15` prints as `1000000000000000.0`): bound that too.
    let text = value.to_string();
    check_state_size(&text)?;
    Ok(Some(text))
}

/// Encodes one entry as an awareness update.
pub fn encode(entry: &AwarenessEntry) -> Vec<u8> {
    let state = entry.state.as_deref().unwrap_or("null");
    let mut out = Vec::with_capacity(state.len() + 16);
    frame::write_varint(&mut out, 1);
    frame::write_varint(&mut out, entry.client_id);
    frame::write_varint(&mut out, entry.clock);
    frame::write_bytes(&mut out, state.as_bytes());
    out
}

/// Decodes an awareness update holding exactly one entry, with a valid state.
pub fn decode(bytes: &[u8]) -> Result<AwarenessEntry, NodeError> {
    if bytes.len() > MAX_PRESENCE_MESSAGE_BYTES {
        return Err(bad("presence message too large"));
    }
    let mut r = frame::Reader::new(bytes, ErrorCode::PresenceInvalidValue);
    if r.varint()? != 1 {
        return Err(bad("a presence message holds exactly one entry"));
    }
    let client_id = r.varint()?;
    let clock = r.varint()?;
    let state = r.bytes(MAX_PRESENCE_MESSAGE_BYTES, "state")?;
    r.finish("the presence entry")?;
    let text = std::str::from_utf8(state).map_err(|_| bad("state is not UTF-8"))?;
    Ok(AwarenessEntry {
        client_id,
        clock,
        state: validate_state(text)?,
    })
}

#[derive(Debug, Clone)]
struct Seen {
    /// The sender's client id: a new one (a restarted node, same peer id) starts a new clock.
    client_id: u64,
    clock: u64,
    state: String,
    at: Instant,
}

/// The other peers' presence, bounded and expiring.
#[derive(Debug)]
pub struct PresenceTable {
    peers: BTreeMap<PeerId, Seen>,
    /// The last gossip sequence number of each sender, for replays (a departed peer's state,
    /// or a cleared one, brought back), remembered past its entry.
    replays: ReplayGuard,
}

impl Default for PresenceTable {
    fn default() -> Self {
        PresenceTable {
            peers: BTreeMap::new(),
            replays: ReplayGuard::new(2 * MAX_PRESENCE_PEERS),
        }
    }
}

impl PresenceTable {
    /// Whether a message from `peer` with gossip sequence number `seq` is no replay (see
    /// [`ReplayGuard::fresh`]); records it if so.
    pub fn fresh(&mut self, peer: PeerId, seq: u64, now: Instant) -> bool {
        self.replays.fresh(peer, seq, now)
    }

    /// Takes an entry from `peer`; `true` if what the table shows changed.
    pub fn apply(&mut self, peer: PeerId, entry: AwarenessEntry, now: Instant) -> bool {
        let known = self.peers.get(&peer);
        // Older than what we hold from the same session: a reordered or replayed message.
        if known.is_some_and(|s| s.client_id == entry.client_id && entry.clock < s.clock) {
            return false;
        }
        match entry.state {
            None => self.peers.remove(&peer).is_some(),
            Some(state) => {
                if known.is_none() && self.peers.len() >= MAX_PRESENCE_PEERS {
                    return false;
                }
                let changed = known.is_none_or(|s| s.state != state);
                self.peers.insert(
                    peer,
                    Seen {
                        client_id: entry.client_id,
                        clock: entry.clock,
                        state,
                        at: now,
                    },
                );
                changed
            }
        }
    }

    /// Forgets a peer that left; `true` if it was shown.
    pub fn remove(&mut self, peer: &PeerId) -> bool {
        self.peers.remove(peer).is_some()
    }

    /// Drops entries not refreshed within [`PRESENCE_TIMEOUT`]; `true` if any were.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.peers.len();
        self.peers
            .retain(|_, s| now.saturating_duration_since(s.at) < PRESENCE_TIMEOUT);
        self.peers.len() != before
    }

    /// How many peers are shown.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is shown.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Every peer's state, plus `own` under `own_id`, as JSON text of `{ peerId: state }`.
    pub fn to_json(&self, own_id: &PeerId, own: Option<&str>) -> String {
        let mut out = String::from("{");
        let mine = own.map(|s| (own_id, s));
        let others = self.peers.iter().map(|(p, s)| (p, s.state.as_str()));
        for (i, (peer, state)) in mine.into_iter().chain(others).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(&peer.to_string());
            out.push_str("\":");
            out.push_str(state);
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::replay::REPLAY_MEMORY;

    fn entry(clock: u64, state: Option<&str>) -> AwarenessEntry {
        AwarenessEntry {
            client_id: 7,
            clock,
            state: state.map(String::from),
        }
    }

    #[test]
    fn round_trips_and_matches_y_protocols_layout() {
        let e = entry(3, Some(r#"{"name":"alice"}"#));
        let bytes = encode(&e);
        // count 1, client 7, clock 3, then the JSON as a varstring.
        assert_eq!(&bytes[..4], &[1, 7, 3, 16]);
        assert_eq!(decode(&bytes).expect("decodes"), e);
        assert_eq!(decode(&encode(&entry(4, None))).expect("null").state, None);
    }

    #[test]
    fn bad_states_and_messages_are_refused() {
        for bad_json in ["{", "[1,", "1e999", r#"{"a":}"#] {
            assert!(validate_state(bad_json).is_err(), "{bad_json}");
        }
        let big = json!({ "s": "x".repeat(MAX_PRESENCE_BYTES) }).to_string();
        assert_eq!(
            validate_state(&big).unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
        // Short as given, long as it would travel: `1e15` prints as `1000000000000000.0`.
        let grows = format!("[{}1]", "1e15,".repeat(MAX_PRESENCE_BYTES / 6));
        assert!(grows.len() <= MAX_PRESENCE_BYTES);
        assert_eq!(
            validate_state(&grows).unwrap_err().code,
            ErrorCode::PayloadTooLarge
        );
        let mut long = encode(&entry(1, Some("1")));
        long.push(0);
        assert!(decode(&long).is_err(), "trailing bytes");
        let mut two = encode(&entry(1, Some("1")));
        two[0] = 2;
        assert!(decode(&two).is_err());
        let mut short = encode(&entry(1, Some("\"abc\"")));
        short.pop();
        assert!(decode(&short).is_err());
        assert!(decode(&[0x80; 20]).is_err());
    }

    #[test]
    fn the_table_keeps_the_newest_expires_and_is_bounded() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut table = PresenceTable::default();
        assert!(table.apply(a, entry(2, Some("1")), t0));
        assert!(!table.apply(a, entry(1, Some("0")), t0), "older clock");
        // The same peer restarted (same peer id, new client id): its clock starts over.
        let restarted = AwarenessEntry {
            client_id: 8,
            clock: 1,
            state: Some("\"again\"".into()),
        };
        assert!(table.apply(a, restarted, t0), "a new session is taken");
        assert!(
            table.apply(a, entry(2, Some("1")), t0),
            "sessions are not ordered: another client id always replaces"
        );
        assert!(
            !table.apply(a, entry(3, Some("1")), t0),
            "a refresh changes nothing shown"
        );
        assert!(table.apply(b, entry(1, Some("\"b\"")), t0));
        let own = PeerId::random();
        let shown: Value = serde_json::from_str(&table.to_json(&own, Some("[1]"))).expect("json");
        assert_eq!(shown[own.to_string()], json!([1]));
        assert_eq!(shown[b.to_string()], json!("b"));
        // `a` refreshes late, `b` does not: `b` expires.
        let later = t0 + PRESENCE_TIMEOUT - Duration::from_secs(1);
        table.apply(a, entry(4, Some("1")), later);
        assert!(table.expire(t0 + PRESENCE_TIMEOUT));
        assert_eq!(table.len(), 1);
        assert!(table.apply(a, entry(5, None), later), "null removes");
        assert!(table.is_empty());
        for _ in 0..MAX_PRESENCE_PEERS + 10 {
            table.apply(PeerId::random(), entry(1, Some("0")), t0);
        }
        assert_eq!(table.len(), MAX_PRESENCE_PEERS);
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }

    /// A message no newer than one seen from its sender within `REPLAY_MEMORY` is a replay
    /// (or reordered), even after the peer's entry is gone; the memory is bounded.
    #[test]
    fn replayed_messages_are_recognized_after_their_peer_is_gone() {
        let mut table = PresenceTable::default();
        let a = PeerId::random();
        let t0 = Instant::now();
        assert!(table.fresh(a, 100, t0));
        assert!(!table.fresh(a, 100, t0), "the same message again");
        assert!(!table.fresh(a, 99, t0), "an older one");
        assert!(table.apply(a, entry(1, Some("1")), t0));
        assert!(table.fresh(a, 101, t0));
        assert!(table.apply(a, entry(2, None), t0), "cleared");
        assert!(
            !table.fresh(a, 100, t0 + PRESENCE_TIMEOUT),
            "its old state is not brought back"
        );
        assert!(
            table.fresh(a, 100, t0 + REPLAY_MEMORY),
            "forgotten after a while"
        );
        for i in 0..(2 * MAX_PRESENCE_PEERS as u64 + 10) {
            table.fresh(PeerId::random(), i, t0 + REPLAY_MEMORY);
        }
        assert!(table.replays.len() <= 2 * MAX_PRESENCE_PEERS);
    }
}
