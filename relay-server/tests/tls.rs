//! `/tls/ws` (`/wss`) listeners with a certificate from PEM files, checked by a real TLS client.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    core::upgrade, dns, noise, ping, swarm::SwarmEvent, tcp, websocket, yamux, Multiaddr, Transport,
};
use relay_server::{start, RelayConfig};

fn config(
    dir: &std::path::Path,
    listen: &str,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> RelayConfig {
    RelayConfig {
        listen: vec![listen.parse().expect("addr")],
        external: vec![],
        http: "127.0.0.1:0".parse().expect("addr"),
        identity_file: dir.join("relay.key"),
        web_root: None,
        tls,
        state_dir: None,
        max_pinned_bytes: usize::MAX,
        status_addresses: false,
        root_public_key: None,
        max_connections_per_ip: relay_server::ip_limit::DEFAULT_MAX_CONNECTIONS_PER_IP,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_serves_wss_with_the_given_certificate() {
    let dir = std::env::temp_dir().join(format!("pc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).expect("write");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write");

    let relay = start(config(
        &dir,
        "/ip4/127.0.0.1/tcp/0/tls/ws",
        Some((cert.clone(), key.clone())),
    ))
    .await
    .expect("relay with TLS starts");
    let bound = relay.dialable[0].to_string();
    assert!(bound.contains("/tls/ws/p2p/"), "{bound}");
    let port = bound.split('/').nth(4).expect("port");

    // A client that trusts exactly this certificate dials by host name (SNI: localhost).
    let der = generated.cert.der().to_vec();
    let mut client = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            let mut ws = websocket::Config::new(dns::tokio::Transport::system(
                tcp::tokio::Transport::new(tcp::Config::default()),
            )?);
            let mut trust = websocket::tls::Config::builder();
            trust.add_trust(&websocket::tls::Certificate::new(der))?;
            ws.set_tls_config(trust.finish());
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                ws.upgrade(upgrade::Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()),
            )
        })
        .expect("transport")
        .with_behaviour(|_| ping::Behaviour::default())
        .expect("behaviour")
        .build();
    let target: Multiaddr = format!("/dns4/localhost/tcp/{port}/tls/ws/p2p/{}", relay.peer_id)
        .parse()
        .expect("addr");
    client.dial(target).expect("dial");
    let connected = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match client.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => return Ok(peer_id),
                SwarmEvent::OutgoingConnectionError { error, .. } => return Err(error.to_string()),
                _ => {}
            }
        }
    })
    .await
    .expect("in time");
    assert_eq!(connected, Ok(relay.peer_id));
    relay.stop().await;

    // Misconfiguration is a clear error at start, never a panic.
    let err = start(config(&dir, "/ip4/127.0.0.1/tcp/0/tls/ws", None))
        .await
        .err()
        .expect("a TLS listener without a certificate is refused");
    assert!(err.to_string().contains("--tls-cert"), "{err}");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let err = start(config(
        &dir,
        "/ip4/127.0.0.1/tcp/0/tls/ws",
        Some((cert, key)),
    ))
    .await
    .err()
    .expect("a bad key is refused");
    assert!(format!("{err:#}").contains("key"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}
