//! The node's libp2p behaviour, and the gossipsub settings shared with the relay.

use std::time::Duration;

use libp2p::{gossipsub, identify, identity::Keypair, ping, relay};

use crate::circuit_policy::OffCircuits;

use crate::limits::{MAX_GOSSIP_FRAME_BYTES, MAX_SYNC_STREAMS};

/// Identify protocol version string of PeerCompute nodes and relays.
pub const IDENTIFY_PROTOCOL: &str = "/peercompute/1.0.0";

/// Ping interval: measures RTT to every peer. Ping does not keep connections alive; the relay
/// reservation and gossipsub's long-lived streams do (see `NodeConfig::idle_connection_timeout`).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

pub use derived::{NodeBehaviour, NodeBehaviourEvent};

mod derived {
    // The derive generates `NodeBehaviourEvent`, whose variants it cannot document.
    #![allow(missing_docs)]
    use libp2p::{gossipsub, identify, ping, relay, request_response, swarm::NetworkBehaviour};

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
        pub gossipsub: OffCircuits<gossipsub::Behaviour>,
        /// Shared-state sync (y-sync over request-response) with relays and peers.
        pub state_sync: request_response::Behaviour<SyncCodec>,
        /// Chunk dispatch to and from peers.
        pub compute: request_response::Behaviour<ComputeCodec>,
    }
}

/// The state-sync request-response behaviour, for nodes and the pinning relay.
pub fn state_sync_behaviour(
) -> libp2p::request_response::Behaviour<crate::state::sync_protocol::SyncCodec> {
    use libp2p::request_response::{Behaviour, Config, ProtocolSupport};
    Behaviour::with_codec(
        crate::state::sync_protocol::SyncCodec,
        [(
            crate::state::sync_protocol::SYNC_PROTOCOL,
            ProtocolSupport::Full,
        )],
        // Each stream may buffer up to one frame: bound how many run at once per connection.
        Config::default()
            .with_request_timeout(Duration::from_secs(30))
            .with_max_concurrent_streams(MAX_SYNC_STREAMS),
    )
}

/// The compute request-response behaviour. A request is answered when its chunk is done, so
/// the stream timeout is the longest task; the scheduler's per-chunk timeout acts sooner.
pub fn compute_behaviour(
) -> libp2p::request_response::Behaviour<crate::compute::protocol::ComputeCodec> {
    use libp2p::request_response::{Behaviour, Config, ProtocolSupport};
    Behaviour::with_codec(
        crate::compute::protocol::ComputeCodec,
        [(
            crate::compute::protocol::COMPUTE_PROTOCOL,
            ProtocolSupport::Full,
        )],
        Config::default()
            .with_request_timeout(Duration::from_millis(u64::from(
                crate::compute::task::MAX_TASK_TIMEOUT_MS,
            )))
            .with_max_concurrent_streams(crate::limits::MAX_COMPUTE_STREAMS),
    )
}

/// Gossipsub configuration used by nodes and the relay alike.
///
/// Messages are validated by the application before they are forwarded
/// (`validate_messages`), so malformed payloads are rejected and their senders penalised.
pub fn gossipsub_config() -> Result<gossipsub::Config, String> {
    gossipsub::ConfigBuilder::default()
        .max_transmit_size(MAX_GOSSIP_FRAME_BYTES)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .heartbeat_interval(Duration::from_millis(700))
        .build()
        .map_err(|e| e.to_string())
}

/// Gossipsub with signed messages and [`gossipsub_config`], for nodes and the relay.
pub fn gossipsub_behaviour(key: &Keypair) -> Result<gossipsub::Behaviour, String> {
    gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossipsub_config()?,
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
