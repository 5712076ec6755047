//! The PeerCompute relay: the meeting point of browser nodes.
//!
//! It accepts WebSocket connections from browser workers, holds circuit relay v2 reservations
//! so that browsers can reach each other through `/p2p-circuit`, routes gossipsub (discovery
//! announcements and application topics), and serves the app over HTTP: the demo, the built
//! bundles, `/peercompute.json` (bootstrap), `/status` and `/metrics`.

pub mod behaviour;
pub mod gossip_check;
pub mod http;
pub mod identity;
pub mod ip_limit;
pub mod pinning;
pub mod reservations;
pub mod routed_topics;
pub mod signing;
pub mod stats;
pub mod swarm;
pub mod tls;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{oneshot, Mutex};

/// How to run a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// libp2p listen addresses (e.g. `/ip4/127.0.0.1/tcp/9090/ws`).
    pub listen: Vec<Multiaddr>,
    /// Addresses to advertise in addition to the listen addresses (e.g. behind a proxy).
    pub external: Vec<Multiaddr>,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// File that holds the relay's identity key (created if missing).
    pub identity_file: PathBuf,
    /// Directory served at `/` (demo, `/sdk`, `/sw`); `None` serves only the API.
    pub web_root: Option<PathBuf>,
    /// PEM certificate chain and key for `/tls/ws` (`/wss`) listen addresses.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Directory to pin shared documents in (`--state-dir`); `None` pins nothing.
    pub state_dir: Option<PathBuf>,
    /// Bytes the pinned documents may store together (`--max-pinned-bytes`).
    pub max_pinned_bytes: usize,
    /// Whether `/status` shows peers' remote (IP) addresses (`--status-addresses`).
    pub status_addresses: bool,
    /// The network's root public key (hex), published in `/peercompute.json`.
    pub root_public_key: Option<String>,
    /// Most connections one remote IP address may hold, libp2p and HTTP each
    /// (`--max-connections-per-ip`); 0: no bound.
    pub max_connections_per_ip: u32,
}

/// A running relay.
pub struct RelayHandle {
    /// The relay's peer id.
    pub peer_id: PeerId,
    /// Addresses a browser can dial (`/ws`, `/wss`), each ending in `/p2p/<peer id>`.
    pub dialable: Vec<Multiaddr>,
    /// Where HTTP is served.
    pub http_addr: SocketAddr,
    /// Shared statistics (what `/status` shows).
    pub stats: Arc<Mutex<stats::Stats>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Stops the relay and waits for it to close its listeners.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Waits until the relay stops by itself (it does not, unless it fails).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Starts a relay: binds its libp2p listeners and HTTP server, and returns once both listen.
pub async fn start(config: RelayConfig) -> anyhow::Result<RelayHandle> {
    let keypair = identity::load_or_create(&config.identity_file)
        .with_context(|| format!("identity file {}", config.identity_file.display()))?;
    let peer_id = keypair.public().to_peer_id();
    let stats = Arc::new(Mutex::new(stats::Stats::new(peer_id)));
    let mut registry = prometheus_client::registry::Registry::default();
    let (running, dialable) =
        swarm::RunningSwarm::start(keypair, &config, stats.clone(), &mut registry).await?;
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http))?;
    let http_addr = listener.local_addr()?;
    let app = http::router(http::AppState {
        stats: stats.clone(),
        registry: Arc::new(registry),
        dialable: dialable.clone(),
        web_root: config.web_root.clone(),
        root_public_key: config.root_public_key.clone(),
        status_addresses: config.status_addresses,
    });
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (stop_http_tx, stop_http_rx) = oneshot::channel::<()>();
        let http = tokio::spawn(http::serve(
            listener,
            app,
            http::HttpLimits {
                max_connections_per_ip: config.max_connections_per_ip as usize,
                ..http::HttpLimits::default()
            },
            stop_http_rx,
        ));
        running.run(shutdown_rx).await;
        let _ = stop_http_tx.send(());
        let _ = http.await;
    });
    Ok(RelayHandle {
        peer_id,
        dialable,
        http_addr,
        stats,
        shutdown: Some(shutdown_tx),
        task,
    })
}
