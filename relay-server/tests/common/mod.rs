//! Fixtures shared by the relay's integration tests.
// Each test crate compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use relay_server::{start, RelayConfig, RelayHandle};

/// The per-test directory a relay named `name` keeps its key in.
pub(crate) fn relay_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("pc-test-{}-{name}", std::process::id()))
}

/// A relay on loopback with ephemeral ports and its key in [`relay_dir`]`(name)`.
pub(crate) async fn relay(name: &str) -> RelayHandle {
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
    })
    .await
    .expect("relay starts")
}
