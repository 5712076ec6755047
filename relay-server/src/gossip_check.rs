//! What the relay lets gossipsub forward. Gossipsub has checked the signature and the topic
//! (`KnownTopics`); this checks the body, and drops replays of the messages that describe
//! their sender's current state (discovery announcements, presence): an old one sent again
//! after gossipsub forgot its id would reach every node. The nodes drop such a replay too
//! (`peercompute_core::replay`); dropping it here keeps the relay from fanning it out.

use std::time::Instant;

use libp2p::gossipsub::{self, MessageAcceptance};
use peercompute_core::{
    discovery::{Announcement, DISCOVERY_TOPIC},
    presence::{self, PRESENCE_TOPIC},
    pubsub::{app_topic_name, Payload},
    replay::ReplayGuard,
    state::sync_protocol::state_topic_doc,
};

use crate::behaviour::MAX_CONNECTIONS;

/// The verdict on one gossip message.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked<'a> {
    /// Decided here.
    Done(MessageAcceptance),
    /// A state update for this document: the caller checks it (and pins it, if it pins).
    StateUpdate(&'a str),
}

/// Per-topic memory of the newest sequence number seen from each sender.
#[derive(Debug)]
pub struct GossipCheck {
    announcements: ReplayGuard,
    presence: ReplayGuard,
}

impl Default for GossipCheck {
    fn default() -> Self {
        // One sender per connection the relay can hold.
        let senders = MAX_CONNECTIONS as usize;
        GossipCheck {
            announcements: ReplayGuard::new(senders),
            presence: ReplayGuard::new(senders),
        }
    }
}

impl GossipCheck {
    /// Checks `message`, received at `now`. A replay is ignored (not forwarded, and whoever
    /// passed it on is not penalized: it may not know); a malformed body is rejected.
    pub fn check<'a>(&mut self, message: &'a gossipsub::Message, now: Instant) -> Checked<'a> {
        let Some(source) = message.source else {
            return Checked::Done(MessageAcceptance::Reject);
        };
        let topic = message.topic.as_str();
        let (valid, guard) = match topic {
            DISCOVERY_TOPIC => (
                Announcement::decode(&message.data, source).is_ok(),
                Some(&mut self.announcements),
            ),
            PRESENCE_TOPIC => (
                presence::decode(&message.data).is_ok(),
                Some(&mut self.presence),
            ),
            t if app_topic_name(t).is_some() => (Payload::check(&message.data).is_ok(), None),
            t => match state_topic_doc(t) {
                Some(doc) => return Checked::StateUpdate(doc),
                None => (false, None),
            },
        };
        if !valid {
            return Checked::Done(MessageAcceptance::Reject);
        }
        // Only a well-formed message is remembered, so a malformed one with a high number
        // cannot shadow its sender's real messages (gossipsub checked the signature, so a
        // high number can only come from the sender itself).
        let replayed = match (guard, message.sequence_number) {
            (Some(guard), Some(seq)) => !guard.fresh(source, seq, now),
            _ => false,
        };
        Checked::Done(if replayed {
            MessageAcceptance::Ignore
        } else {
            MessageAcceptance::Accept
        })
    }
}

#[cfg(test)]
mod tests {
    use libp2p::{identity::Keypair, Multiaddr, PeerId};
    use peercompute_core::{
        discovery::discovery_topic, presence::presence_topic, pubsub::app_topic,
    };
    use std::time::Duration;

    use super::*;

    fn announcement(source: PeerId, seq: u64) -> gossipsub::Message {
        let relay = PeerId::random();
        let addr: Multiaddr =
            format!("/ip4/127.0.0.1/tcp/1/ws/p2p/{relay}/p2p-circuit/p2p/{source}")
                .parse()
                .unwrap();
        gossipsub::Message {
            source: Some(source),
            data: Announcement {
                addrs: vec![addr],
                compute: None,
            }
            .encode(),
            sequence_number: Some(seq),
            topic: discovery_topic().hash(),
        }
    }

    fn accepted(c: Checked) -> bool {
        matches!(c, Checked::Done(MessageAcceptance::Accept))
    }

    /// A discovery announcement or presence sent again later (after gossipsub's one-minute
    /// memory) is not forwarded; newer ones are, and one sender's numbers do not hold back
    /// another's.
    #[test]
    fn replayed_announcements_and_presence_are_not_forwarded() {
        let mut check = GossipCheck::default();
        let a = Keypair::generate_ed25519().public().to_peer_id();
        let b = Keypair::generate_ed25519().public().to_peer_id();
        let now = Instant::now();
        let later = now + Duration::from_secs(120);
        let old = announcement(a, 7);
        assert!(accepted(check.check(&old, now)));
        assert!(accepted(check.check(&announcement(a, 8), now)));
        assert_eq!(
            check.check(&old, later),
            Checked::Done(MessageAcceptance::Ignore)
        );
        assert!(
            accepted(check.check(&announcement(b, 3), later)),
            "another sender"
        );
        assert!(accepted(check.check(&announcement(a, 9), later)));

        let presence = |seq: u64| gossipsub::Message {
            source: Some(a),
            data: presence::encode(&presence::AwarenessEntry {
                client_id: 1,
                clock: seq,
                state: Some("{\"name\":\"a\"}".into()),
            }),
            sequence_number: Some(seq),
            topic: presence_topic().hash(),
        };
        // Presence numbers are remembered apart from discovery's.
        assert!(accepted(check.check(&presence(5), later)));
        assert_eq!(
            check.check(&presence(5), later),
            Checked::Done(MessageAcceptance::Ignore)
        );
    }

    /// Malformed bodies are rejected and not remembered; application messages are checked and
    /// never taken for replays (an app may publish the same thing twice); state updates are
    /// left to the caller; a message without a source is rejected.
    #[test]
    fn bodies_are_checked_by_topic() {
        let mut check = GossipCheck::default();
        let a = Keypair::generate_ed25519().public().to_peer_id();
        let now = Instant::now();
        let mut bad = announcement(a, 100);
        bad.data = vec![0xff; 16];
        assert_eq!(
            check.check(&bad, now),
            Checked::Done(MessageAcceptance::Reject)
        );
        assert!(
            accepted(check.check(&announcement(a, 50), now)),
            "the malformed message's number was not kept"
        );

        let app = |data: Vec<u8>| gossipsub::Message {
            source: Some(a),
            data,
            sequence_number: Some(1),
            topic: app_topic("chat").hash(),
        };
        let ok = app(Payload::Json("{\"text\":\"hi\"}".into()).encode());
        assert!(accepted(check.check(&ok, now)));
        assert!(accepted(check.check(&ok, now)));
        assert_eq!(
            check.check(&app(vec![1, b'{']), now),
            Checked::Done(MessageAcceptance::Reject)
        );

        let mut state = app(vec![]);
        state.topic = peercompute_core::state::sync_protocol::state_topic("world").hash();
        assert_eq!(check.check(&state, now), Checked::StateUpdate("world"));

        let mut anonymous = ok.clone();
        anonymous.source = None;
        assert_eq!(
            check.check(&anonymous, now),
            Checked::Done(MessageAcceptance::Reject)
        );
    }
}
