//! Building the node's swarm: the only place that differs between the browser and native.
//!
//! Browser: WebSocket (websys) + Noise + Yamux, plus the relay client transport.
//! Native: TCP and WebSocket over TCP + Noise + Yamux, plus the relay client transport.

use std::time::Duration;

use libp2p::{identity::Keypair, noise, yamux, Swarm};

use crate::behaviour::NodeBehaviour;

/// Failure to build a swarm.
#[derive(Debug, thiserror::Error)]
#[error("building the libp2p swarm failed: {0}")]
pub struct TransportError(String);

fn err(e: impl std::fmt::Display) -> TransportError {
    TransportError(e.to_string())
}

fn yamux_config() -> yamux::Config {
    yamux::Config::default()
}

/// Builds a browser node's swarm.
#[cfg(wasm_browser)]
pub fn build_swarm(
    keypair: Keypair,
    idle_connection_timeout: Duration,
) -> Result<Swarm<NodeBehaviour>, TransportError> {
    use libp2p::{core::upgrade::Version, Transport};
    Ok(libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_wasm_bindgen()
        .with_other_transport(|key| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                libp2p::websocket_websys::Transport::default()
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux_config()),
            )
        })
        .map_err(err)?
        .with_relay_client(noise::Config::new, yamux_config)
        .map_err(err)?
        .with_behaviour(NodeBehaviour::new)
        .map_err(err)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_connection_timeout))
        .build())
}

/// Builds a native node's swarm (tokio).
#[cfg(not(wasm_browser))]
pub async fn build_swarm(
    keypair: Keypair,
    idle_connection_timeout: Duration,
) -> Result<Swarm<NodeBehaviour>, TransportError> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux_config,
        )
        .map_err(err)?
        .with_websocket(noise::Config::new, yamux_config)
        .await
        .map_err(err)?
        .with_relay_client(noise::Config::new, yamux_config)
        .map_err(err)?
        .with_behaviour(NodeBehaviour::new)
        .map_err(err)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_connection_timeout))
        .build())
}
