//! The node's presence: its own state (shared by all its tabs: the node is the peer), the
//! other peers' states, and the broadcasts that keep both current. The wire format and the
//! table live in [`crate::presence`].

use std::time::Duration;

use libp2p::{gossipsub::MessageAcceptance, PeerId};
use tracing::debug;
use web_time::Instant;

use super::{Node, Output};
use crate::{
    presence::{
        decode, encode, presence_topic, validate_state, AwarenessEntry, PresenceTable,
        PRESENCE_REFRESH,
    },
    tab_protocol::{Event, ReplyValue},
    NodeError,
};

/// This node's presence and what it knows of the others'.
pub(super) struct NodePresence {
    table: PresenceTable,
    /// Our own state as JSON text; `None` until a tab sets one.
    own: Option<String>,
    /// Our awareness clock: grows with every broadcast.
    clock: u64,
    /// Our awareness client id (peers identify us by the gossip signature, not by it).
    client_id: u64,
    last_sent: Option<Instant>,
    /// Broadcast at the next tick (a peer joined, the relay started routing presence).
    wanted: bool,
    /// When the tabs were last sent the table, and whether a change waits for the next
    /// chance (see [`PRESENCE_EMIT_INTERVAL`]).
    last_emit: Option<Instant>,
    emit_pending: bool,
}

/// The tabs get the whole table (up to 1024 states of 4 KiB) at most this often: a burst of
/// peers' updates is one message per interval, not one per update.
const PRESENCE_EMIT_INTERVAL: Duration = Duration::from_millis(100);

impl NodePresence {
    pub(super) fn new() -> Self {
        NodePresence {
            table: PresenceTable::default(),
            own: None,
            clock: 0,
            // Yjs client ids are 53-bit safe integers; 32 bits, like Yjs's own.
            client_id: u64::from(rand::random::<u32>()),
            last_sent: None,
            wanted: false,
            last_emit: None,
            emit_pending: false,
        }
    }

    /// Asks for a broadcast at the next tick, if we have something to say.
    pub(super) fn want_broadcast(&mut self) {
        self.wanted = true;
    }
}

impl Node {
    /// `presenceSet`: replaces this node's state (JSON text; `null` clears it).
    pub(super) fn set_presence(
        &mut self,
        json: &str,
        sink: &mut impl FnMut(Output),
    ) -> Result<ReplyValue, NodeError> {
        let state = validate_state(json)?;
        let cleared = state.is_none();
        if state == self.presence.own {
            return Ok(ReplyValue::Done);
        }
        self.presence.own = state;
        // A cleared state is announced once (`null`); then we stay silent.
        let now = Instant::now();
        self.broadcast_presence(now, cleared);
        self.emit_presence(now, sink);
        Ok(ReplyValue::Done)
    }

    /// `presenceGet`: every known state, ours included, as `{ peerId: state }`.
    pub(super) fn presence_json(&self) -> ReplyValue {
        ReplyValue::Tree {
            json: self
                .presence
                .table
                .to_json(&self.peer_id(), self.presence.own.as_deref()),
        }
    }

    /// Sends the table to the tabs now, or at the next tick when it went out less than
    /// [`PRESENCE_EMIT_INTERVAL`] ago.
    fn emit_presence(&mut self, now: Instant, sink: &mut impl FnMut(Output)) {
        if self
            .presence
            .last_emit
            .is_some_and(|t| now.duration_since(t) < PRESENCE_EMIT_INTERVAL)
        {
            self.presence.emit_pending = true;
            return;
        }
        self.presence.last_emit = Some(now);
        self.presence.emit_pending = false;
        let peers = self
            .presence
            .table
            .to_json(&self.peer_id(), self.presence.own.as_deref());
        self.broadcast(Event::Presence { peers }, sink);
    }

    fn broadcast_presence(&mut self, now: Instant, send_null: bool) {
        if self.presence.own.is_none() && !send_null {
            return;
        }
        self.presence.clock += 1;
        self.presence.last_sent = Some(now);
        self.presence.wanted = false;
        let bytes = encode(&AwarenessEntry {
            client_id: self.presence.client_id,
            clock: self.presence.clock,
            state: self.presence.own.clone(),
        });
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(presence_topic(), bytes)
        {
            // No route yet: the next refresh, or the relay's subscription, sends it again.
            debug!("presence not sent: {e}");
        }
    }

    /// Expires silent peers and repeats our own state when due.
    pub(super) fn presence_tick(&mut self, now: Instant, sink: &mut impl FnMut(Output)) {
        if self.presence.table.expire(now) || self.presence.emit_pending {
            self.emit_presence(now, sink);
        }
        let due = self
            .presence
            .last_sent
            .is_none_or(|t| now.duration_since(t) >= PRESENCE_REFRESH);
        if self.presence.wanted || due {
            self.broadcast_presence(now, false);
        }
    }

    /// A peer left: its presence goes with it.
    pub(super) fn presence_peer_left(&mut self, peer: &PeerId, sink: &mut impl FnMut(Output)) {
        if self.presence.table.remove(peer) {
            self.emit_presence(Instant::now(), sink);
        }
    }

    /// An awareness message on the presence topic.
    pub(super) fn on_presence_gossip(
        &mut self,
        source: PeerId,
        sequence_number: Option<u64>,
        data: &[u8],
        now: Instant,
        sink: &mut impl FnMut(Output),
    ) -> MessageAcceptance {
        let entry = match decode(data) {
            Ok(e) => e,
            Err(e) => {
                debug!(peer = %source, "rejected presence: {}", e.message);
                return MessageAcceptance::Reject;
            }
        };
        // A replayed message (no newer than one already seen from its sender) changes
        // nothing and is not forwarded; whoever relayed it is not penalized.
        if let Some(seq) = sequence_number {
            if !self.presence.table.fresh(source, seq, now) {
                return MessageAcceptance::Ignore;
            }
        }
        if source != self.peer_id() && self.presence.table.apply(source, entry, now) {
            self.emit_presence(now, sink);
        }
        MessageAcceptance::Accept
    }
}
