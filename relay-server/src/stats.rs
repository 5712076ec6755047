//! What the relay knows about its peers, shown at `/status` and `/metrics`.

use std::collections::{BTreeMap, BTreeSet};

use libp2p::PeerId;
use serde::Serialize;

/// One connected peer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerEntry {
    /// Open connections from this peer.
    pub connections: u32,
    /// Remote address of its latest connection; left out of `/status` unless the relay was
    /// started with `--status-addresses` (they are the users' IP addresses).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// Agent string from identify, once known.
    pub agent: Option<String>,
}

/// One pinned document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PinnedDoc {
    /// Leaves (values at a path) it holds.
    pub entries: usize,
    /// Bytes in its file: the last compacted state plus the records appended since.
    pub bytes: usize,
}

/// The relay's live statistics.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// The relay's peer id.
    pub peer_id: String,
    /// Open connections in total.
    pub connections: u32,
    /// Connected peers.
    pub peers: BTreeMap<String, PeerEntry>,
    /// Peers holding a reservation.
    pub reservations: BTreeSet<String>,
    /// Circuits currently relayed.
    pub circuits: u32,
    /// Circuits accepted since start.
    pub circuits_total: u64,
    /// Application topics routed.
    pub topics: usize,
    /// Gossipsub messages rejected as malformed.
    pub rejected_messages: u64,
    /// Discovery and presence messages dropped as replays (older than one already seen from
    /// their sender).
    pub replayed_messages: u64,
    /// Gossip messages dropped on their way to a peer too slow to take them: its send queue
    /// was full (`MAX_GOSSIP_QUEUE_BYTES`) or they waited too long in it.
    pub slow_peer_drops: u64,
    /// libp2p connections refused because their IP address held `--max-connections-per-ip`
    /// already (the HTTP server's refusals are logged at debug level only).
    pub refused_connections_per_ip: u64,
    /// Documents pinned (`--state-dir`), by name; absent when the relay pins nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<BTreeMap<String, PinnedDoc>>,
    /// Bytes of sync answers handed to connections and not yet sent (bounded per peer and in
    /// all: a peer past its share is asked to ask again).
    pub sync_answer_bytes: usize,
    /// Unix time (ms) the relay started.
    pub started_at_ms: u64,
}

impl Stats {
    /// Empty statistics for a relay with `peer_id`.
    pub fn new(peer_id: PeerId) -> Self {
        Stats {
            peer_id: peer_id.to_string(),
            connections: 0,
            peers: BTreeMap::new(),
            reservations: BTreeSet::new(),
            circuits: 0,
            circuits_total: 0,
            topics: 0,
            rejected_messages: 0,
            replayed_messages: 0,
            slow_peer_drops: 0,
            refused_connections_per_ip: 0,
            pinned: None,
            sync_answer_bytes: 0,
            started_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// OpenMetrics text for the relay's own gauges and counters (libp2p's metrics are appended
    /// by the caller). A counter's family is named without its samples' `_total` suffix.
    pub fn prometheus(&self) -> String {
        format!(
            "# HELP peercompute_relay_connections Open connections.\n\
             # TYPE peercompute_relay_connections gauge\n\
             peercompute_relay_connections {}\n\
             # HELP peercompute_relay_peers Connected peers.\n\
             # TYPE peercompute_relay_peers gauge\n\
             peercompute_relay_peers {}\n\
             # HELP peercompute_relay_reservations Peers holding a reservation.\n\
             # TYPE peercompute_relay_reservations gauge\n\
             peercompute_relay_reservations {}\n\
             # HELP peercompute_relay_circuits Circuits currently relayed.\n\
             # TYPE peercompute_relay_circuits gauge\n\
             peercompute_relay_circuits {}\n\
             # HELP peercompute_relay_circuits_accepted Circuits accepted since start.\n\
             # TYPE peercompute_relay_circuits_accepted counter\n\
             peercompute_relay_circuits_accepted_total {}\n\
             # HELP peercompute_relay_topics Application topics routed.\n\
             # TYPE peercompute_relay_topics gauge\n\
             peercompute_relay_topics {}\n\
             # HELP peercompute_relay_rejected_messages Malformed gossipsub messages rejected.\n\
             # TYPE peercompute_relay_rejected_messages counter\n\
             peercompute_relay_rejected_messages_total {}\n\
             # HELP peercompute_relay_replayed_messages Replayed discovery and presence messages dropped.\n\
             # TYPE peercompute_relay_replayed_messages counter\n\
             peercompute_relay_replayed_messages_total {}\n\
             # HELP peercompute_relay_slow_peer_drops Gossip messages dropped: their peer's send queue was full or they waited too long.\n\
             # TYPE peercompute_relay_slow_peer_drops counter\n\
             peercompute_relay_slow_peer_drops_total {}\n\
             # HELP peercompute_relay_refused_connections_per_ip Connections refused: their address held its share.\n\
             # TYPE peercompute_relay_refused_connections_per_ip counter\n\
             peercompute_relay_refused_connections_per_ip_total {}\n\
             # HELP peercompute_relay_sync_answer_bytes Bytes of sync answers not yet sent.\n\
             # TYPE peercompute_relay_sync_answer_bytes gauge\n\
             peercompute_relay_sync_answer_bytes {}\n",
            self.connections,
            self.peers.len(),
            self.reservations.len(),
            self.circuits,
            self.circuits_total,
            self.topics,
            self.rejected_messages,
            self.replayed_messages,
            self.slow_peer_drops,
            self.refused_connections_per_ip,
            self.sync_answer_bytes,
        )
    }
}
