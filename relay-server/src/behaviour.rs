//! The relay's libp2p behaviour and its limits.

use std::{num::NonZeroU32, time::Duration};

use crate::ip_limit::ConnectionsPerIp;
use libp2p::{
    connection_limits::{self, ConnectionLimits},
    identify,
    identity::Keypair,
    ping, relay, request_response,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
};
use peercompute_core::{
    behaviour::{gossipsub_behaviour, identify_behaviour, state_sync_behaviour, PING_INTERVAL},
    state::sync_protocol::SyncCodec,
};

/// Most connections the relay holds.
pub const MAX_CONNECTIONS: u32 = 4096;
/// Most connections from one peer (a browser node needs one; reconnects overlap briefly).
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
pub use peercompute_core::limits::MAX_ROUTED_TOPICS;

/// The relay's behaviour.
#[derive(NetworkBehaviour)]
pub struct RelayBehaviour {
    /// Refuses connections beyond the bounds above.
    pub limits: connection_limits::Behaviour,
    /// Refuses connections from an address that holds its share already.
    pub per_ip: ConnectionsPerIp,
    /// Circuit relay v2 server.
    pub relay: relay::Behaviour,
    /// Identify.
    pub identify: identify::Behaviour,
    /// Ping.
    pub ping: ping::Behaviour,
    /// Gossipsub router for discovery and application topics.
    pub gossipsub: peercompute_core::behaviour::Gossipsub,
    /// Shared-state sync with nodes, on a relay that pins documents (`--state-dir`).
    pub state_sync: Toggle<request_response::Behaviour<SyncCodec>>,
}

/// Circuit relay v2 limits for sustained browser traffic.
///
/// libp2p's defaults (2 min, 128 KiB per circuit) are for hole punching; browsers have no
/// hole punching to a worker, so every byte between them crosses the relay for as long as they
/// talk. The limits stay bounded: per-circuit bytes and duration, per-peer counts, rate limits.
pub fn relay_config() -> relay::Config {
    let per = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    relay::Config {
        max_reservations: 4096,
        max_reservations_per_peer: 4,
        reservation_duration: Duration::from_secs(60 * 60),
        reservation_rate_limiters: Vec::new(),
        max_circuits: 8192,
        max_circuits_per_peer: 64,
        max_circuit_duration: Duration::from_secs(24 * 60 * 60),
        max_circuit_bytes: 64 << 30,
        circuit_src_rate_limiters: Vec::new(),
    }
    .reservation_rate_per_peer(per(60), Duration::from_secs(60))
    .reservation_rate_per_ip(per(1200), Duration::from_secs(60))
    .circuit_src_per_peer(per(240), Duration::from_secs(60))
    .circuit_src_per_ip(per(4800), Duration::from_secs(60))
}

impl RelayBehaviour {
    /// Builds the relay behaviour; `pinning` adds the state-sync protocol, and
    /// `max_connections_per_ip` bounds each remote address (0: no bound).
    pub fn new(
        key: &Keypair,
        pinning: bool,
        max_connections_per_ip: u32,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let peer_id = key.public().to_peer_id();
        Ok(RelayBehaviour {
            limits: connection_limits::Behaviour::new(
                ConnectionLimits::default()
                    .with_max_established(Some(MAX_CONNECTIONS))
                    .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                    .with_max_pending_incoming(Some(256)),
            ),
            per_ip: ConnectionsPerIp::new(max_connections_per_ip),
            relay: relay::Behaviour::new(peer_id, relay_config()),
            identify: identify_behaviour(
                key,
                concat!("peercompute-relay/", env!("CARGO_PKG_VERSION")),
            ),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
            gossipsub: gossipsub_behaviour(key)?,
            state_sync: pinning.then(state_sync_behaviour).into(),
        })
    }
}
