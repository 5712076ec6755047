//! The node's libp2p behaviour, and the gossipsub settings shared with the relay.

use std::time::Duration;

use libp2p::{
    gossipsub, identify, identity::Keypair, ping, relay, request_response, StreamProtocol,
};

use crate::{
    circuit_policy::OffCircuits,
    compute::{
        protocol::{ComputeCodec, COMPUTE_PROTOCOL},
        task::MAX_TASK_TIMEOUT_MS,
    },
    frame::{FrameCodec, WireFrame},
    limits::{
        MAX_COMPUTE_STREAMS, MAX_GOSSIP_FRAME_BYTES, MAX_GOSSIP_QUEUE_BYTES, MAX_PEER_TOPICS,
        MAX_SYNC_STREAMS,
    },
    pubsub::is_known_topic,
    state::sync_protocol::{SyncCodec, SYNC_PROTOCOL, SYNC_PROTOCOL_V1},
};

/// The topics gossipsub accepts, ours and peers': PeerCompute's own ([`is_known_topic`]).
/// Without a filter it keeps every topic a peer names, of any length and number.
#[derive(Debug, Default, Clone)]
pub struct KnownTopics;

impl gossipsub::TopicSubscriptionFilter for KnownTopics {
    fn can_subscribe(&mut self, topic: &gossipsub::TopicHash) -> bool {
        is_known_topic(topic.as_str())
    }
}

/// [`KnownTopics`], at most [`MAX_PEER_TOPICS`] per peer (a peer's subscription message that
/// would pass it is ignored whole).
pub type TopicFilter = gossipsub::MaxCountSubscriptionFilter<KnownTopics>;

/// Gossipsub as nodes and the relay run it.
pub type Gossipsub = gossipsub::Behaviour<gossipsub::IdentityTransform, TopicFilter>;

/// Identify protocol version string of PeerCompute nodes and relays.
pub const IDENTIFY_PROTOCOL: &str = "/peercompute/1.0.0";

/// Ping interval: measures RTT to every peer. Ping does not keep connections alive; the relay
/// reservation and gossipsub's long-lived streams do (see `NodeConfig::idle_connection_timeout`).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

pub use derived::{NodeBehaviour, NodeBehaviourEvent};

mod derived {
    // The derive generates `NodeBehaviourEvent`, whose variants it cannot document.
    #![allow(missing_docs)]
    use libp2p::{identify, ping, relay, request_response, swarm::NetworkBehaviour};

    use crate::{
        circuit_policy::OffCircuits, compute::protocol::ComputeCodec,
        state::sync_protocol::SyncCodec,
    };

    /// The behaviour of a browser (or native) node.
    #[derive(NetworkBehaviour)]
    pub struct NodeBehaviour {
        /// Circuit relay v2 client: reservations at relays and circuits to other nodes.
        pub relay_client: relay::client::Behaviour,
        /// Identify: exchanges protocol versions and observed addresses.
        pub identify: identify::Behaviour,
        /// Ping: RTT measurement.
        pub ping: ping::Behaviour,
        /// Gossipsub (application topics and discovery) on direct connections: relayed
        /// circuits would only duplicate the relay's own gossip path.
        pub gossipsub: OffCircuits<crate::behaviour::Gossipsub>,
        /// Shared-state sync (y-sync over request-response) with relays and peers.
        pub state_sync: request_response::Behaviour<SyncCodec>,
        /// Chunk dispatch to and from peers.
        pub compute: request_response::Behaviour<ComputeCodec>,
    }
}

/// A request-response behaviour carrying [`WireFrame`] messages. Each stream may buffer one
/// frame, so `streams` bounds the memory one connection can hold.
fn frame_behaviour<Req: WireFrame, Res: WireFrame>(
    protocols: impl IntoIterator<Item = StreamProtocol>,
    timeout: Duration,
    streams: usize,
) -> request_response::Behaviour<FrameCodec<Req, Res>> {
    request_response::Behaviour::with_codec(
        FrameCodec::default(),
        protocols
            .into_iter()
            .map(|p| (p, request_response::ProtocolSupport::Full)),
        request_response::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(streams),
    )
}

/// The state-sync request-response behaviour, for nodes and the pinning relay: version 2
/// (deflated frames) first, version 1 for peers that know only it.
pub fn state_sync_behaviour() -> request_response::Behaviour<SyncCodec> {
    frame_behaviour(
        [SYNC_PROTOCOL, SYNC_PROTOCOL_V1],
        Duration::from_secs(30),
        MAX_SYNC_STREAMS,
    )
}

/// The compute request-response behaviour. A request is answered when its chunk is done, so
/// the stream timeout is the longest task; the scheduler's per-chunk timeout acts sooner.
pub fn compute_behaviour() -> request_response::Behaviour<ComputeCodec> {
    frame_behaviour(
        [COMPUTE_PROTOCOL],
        Duration::from_millis(u64::from(MAX_TASK_TIMEOUT_MS)),
        MAX_COMPUTE_STREAMS,
    )
}

/// Gossipsub configuration used by nodes and the relay alike.
///
/// Messages are validated by the application before they are forwarded
/// (`validate_messages`), so malformed payloads are rejected and their senders penalised.
pub fn gossipsub_config() -> Result<gossipsub::Config, String> {
    gossipsub::ConfigBuilder::default()
        .max_transmit_size(MAX_GOSSIP_FRAME_BYTES)
        .connection_handler_queue_bytes(MAX_GOSSIP_QUEUE_BYTES)
        // Subscriptions count as control data, 16 KiB per message by default: a relay's hello
        // (every topic it routes, in one message) passed that at ~800 short topic names, and
        // each node then ignored all of it and could no longer publish.
        .max_control_message_size(MAX_GOSSIP_FRAME_BYTES)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .heartbeat_interval(Duration::from_millis(700))
        // A node that leaves a topic's mesh asks its peers not to re-graft it for this long
        // (default 10 s), and until they do its messages come only as gossip, a heartbeat
        // late. Browser nodes meet through one relay, so a short backoff is enough.
        .unsubscribe_backoff(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())
}

/// Gossipsub with signed messages, [`gossipsub_config`] and [`TopicFilter`], for nodes and
/// the relay.
pub fn gossipsub_behaviour(key: &Keypair) -> Result<Gossipsub, String> {
    gossipsub::Behaviour::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossipsub_config()?,
        TopicFilter {
            filter: KnownTopics,
            max_subscribed_topics: MAX_PEER_TOPICS,
            max_subscriptions_per_request: MAX_PEER_TOPICS,
        },
    )
    .map_err(|e| e.to_string())
}

/// Identify behaviour with PeerCompute's protocol string.
pub fn identify_behaviour(key: &Keypair, agent: &str) -> identify::Behaviour {
    identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
            .with_agent_version(agent.to_string()),
    )
}

impl NodeBehaviour {
    /// Builds the behaviour around the relay client the swarm builder created.
    pub fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(NodeBehaviour {
            relay_client,
            identify: identify_behaviour(
                key,
                concat!("peercompute-node/", env!("CARGO_PKG_VERSION")),
            ),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
            gossipsub: OffCircuits::new(gossipsub_behaviour(key)?),
            state_sync: state_sync_behaviour(),
            compute: compute_behaviour(),
        })
    }
}
