//! Fixtures shared by the relay's integration tests.
// Each test crate compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use libp2p::identity::Keypair;
use peercompute_core::{
    native::{MemoryStore, NativeNode},
    tab_protocol::{Event, ReplyValue, Request},
    NodeConfig,
};
use relay_server::{start, RelayConfig, RelayHandle};
use tokio::time::timeout;

/// How long a test waits for anything.
pub(crate) const T: Duration = Duration::from_secs(30);

/// A native node on `store`, connected to `relay` when given (offline otherwise).
pub(crate) async fn node_on(relay: Option<&RelayHandle>, store: MemoryStore) -> NativeNode {
    node_with(relay, store, NodeConfig::default()).await
}

/// Like [`node_on`], with `config`.
pub(crate) async fn node_with(
    relay: Option<&RelayHandle>,
    store: MemoryStore,
    config: NodeConfig,
) -> NativeNode {
    let mut n = NativeNode::spawn_with_store(Keypair::generate_ed25519(), config, store)
        .await
        .expect("node");
    if let Some(relay) = relay {
        connect(&mut n, relay).await;
    }
    n
}

/// Connects `n` to `relay`: waits for its reservation, and checks the reply names the node.
pub(crate) async fn connect(n: &mut NativeNode, relay: &RelayHandle) {
    let reply = timeout(
        T,
        n.request(Request::Connect {
            relays: vec![relay.dialable[0].to_string()],
            timeout_ms: Some(10_000),
            wait: true,
            root_key: None,
        }),
    )
    .await
    .expect("in time")
    .expect("connects");
    assert!(
        matches!(reply, ReplyValue::Connected { peer_id } if peer_id == n.peer_id().to_string())
    );
}

/// The node's next event that satisfies `pred`, within [`T`].
pub(crate) async fn wait_for(n: &mut NativeNode, mut pred: impl FnMut(&Event) -> bool) -> Event {
    timeout(T, async {
        loop {
            let e = n.next_event().await.expect("node alive");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event in time")
}

/// The per-test directory a relay named `name` keeps its key in.
pub(crate) fn relay_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pc-test-{}-{name}", std::process::id()))
}

/// A relay on loopback with ephemeral ports and its key in [`relay_dir`]`(name)`.
pub(crate) async fn relay(name: &str) -> RelayHandle {
    relay_with_state(name, None).await
}

/// Like [`relay`], pinning documents in `state_dir` when given.
pub(crate) async fn relay_with_state(
    name: &str,
    state_dir: Option<std::path::PathBuf>,
) -> RelayHandle {
    relay_with(
        name,
        state_dir,
        relay_server::ip_limit::DEFAULT_MAX_CONNECTIONS_PER_IP,
    )
    .await
}

/// Like [`relay_with_state`], with at most `max_connections_per_ip` connections per address.
pub(crate) async fn relay_with(
    name: &str,
    state_dir: Option<std::path::PathBuf>,
    max_connections_per_ip: u32,
) -> RelayHandle {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = relay_dir(name);
    start(RelayConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0/ws".parse().expect("addr")],
        external: vec![],
        http: "127.0.0.1:0".parse().expect("addr"),
        identity_file: dir.join("relay.key"),
        web_root: None,
        tls: None,
        state_dir,
        max_pinned_bytes: usize::MAX,
        status_addresses: false,
        root_public_key: None,
        max_connections_per_ip,
    })
    .await
    .expect("relay starts")
}
