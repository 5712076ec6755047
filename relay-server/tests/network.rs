//! Integration: a real relay (in-process, real sockets) and native nodes talking through it.

use std::time::Duration;

use libp2p::identity::Keypair;
use peercompute_core::{
    native::{MemoryStore, NativeNode},
    pubsub::Payload,
    tab_protocol::{Event, ReplyValue, Request},
    NodeConfig,
};
mod common;

use common::{relay, wait_for};
use relay_server::{start, RelayConfig, RelayHandle};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

async fn node(relay: &RelayHandle) -> NativeNode {
    common::node_on(Some(relay), MemoryStore::default()).await
}

/// Two nodes on `relay`, both subscribed to `chat`.
async fn chat_pair(relay: &RelayHandle) -> (NativeNode, NativeNode) {
    let mut pair = (node(relay).await, node(relay).await);
    for n in [&mut pair.0, &mut pair.1] {
        n.request(Request::Subscribe {
            topic: "chat".into(),
        })
        .await
        .expect("subscribe");
    }
    pair
}

fn json(s: &str) -> Request {
    Request::Publish {
        topic: "chat".into(),
        json: Some(s.into()),
        bytes: None,
    }
}

/// Publishes until a message arrives at `to` (the first publishes may precede the mesh).
async fn publish_until_received(from: &mut NativeNode, to: &mut NativeNode, text: &str) -> Event {
    let body = format!("{{\"text\":\"{text}\"}}");
    timeout(T, async {
        loop {
            from.request(json(&body)).await.expect("publish");
            let got = timeout(Duration::from_millis(500), async {
                loop {
                    match to.next_event().await.expect("alive") {
                        e @ Event::Message { .. } => return e,
                        _ => continue,
                    }
                }
            })
            .await;
            if let Ok(e) = got {
                return e;
            }
        }
    })
    .await
    .expect("message in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_discover_each_other_and_exchange_messages_both_ways() {
    let relay = relay("two").await;
    let (mut a, mut b) = chat_pair(&relay).await;
    // Discovery through the relay, then a direct circuit between the two.
    let (a_id, b_id) = (a.peer_id().to_string(), b.peer_id().to_string());
    wait_for(
        &mut a,
        |e| matches!(e, Event::PeerJoin { peer_id } if *peer_id == b_id),
    )
    .await;
    wait_for(
        &mut b,
        |e| matches!(e, Event::PeerJoin { peer_id } if *peer_id == a_id),
    )
    .await;

    let e = publish_until_received(&mut a, &mut b, "from a").await;
    assert!(
        matches!(&e, Event::Message { from, payload: Payload::Json(j), local: false, .. }
            if *from == a_id && j.contains("from a")),
        "{e:?}"
    );
    let e = publish_until_received(&mut b, &mut a, "from b").await;
    assert!(
        matches!(&e, Event::Message { from, .. } if *from == b_id),
        "{e:?}"
    );

    let stats = relay.stats.lock().await.clone();
    assert!(stats.reservations.contains(&a_id) && stats.reservations.contains(&b_id));
    assert!(
        stats.circuits >= 1,
        "a circuit between the nodes: {stats:?}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reconnect_after_the_relay_restarts() {
    let dir = "restart";
    let first = relay(dir).await;
    let addr = first.dialable[0].clone();
    let mut a = node(&first).await;
    // Restart on the same port with the same identity.
    first.stop().await;
    wait_for(
        &mut a,
        |e| matches!(e, Event::Status(s) if s.relays.first().is_some_and(|r| !r.connected)),
    )
    .await;
    let port = addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(p) => Some(p),
            _ => None,
        })
        .expect("tcp port");
    let identity = common::relay_dir(dir).join("relay.key");
    let second = start(RelayConfig {
        listen: vec![format!("/ip4/127.0.0.1/tcp/{port}/ws")
            .parse()
            .expect("addr")],
        external: vec![],
        http: "127.0.0.1:0".parse().expect("addr"),
        identity_file: identity,
        web_root: None,
        tls: None,
        state_dir: None,
        max_pinned_bytes: usize::MAX,
        status_addresses: false,
        root_public_key: None,
        max_connections_per_ip: relay_server::ip_limit::DEFAULT_MAX_CONNECTIONS_PER_IP,
    })
    .await
    .expect("relay restarts");
    assert_eq!(second.dialable[0], addr);
    let e = wait_for(&mut a, |e| matches!(e, Event::Status(s) if s.online)).await;
    let Event::Status(s) = e else { unreachable!() };
    assert_eq!(s.relays[0].reconnects, 1);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_codes_and_the_node_keeps_serving() {
    let relay = relay("bad").await;
    let mut a = node(&relay).await;
    let err = a
        .request(Request::Connect {
            relays: vec!["/ip4/127.0.0.1/tcp/1/p2p/nope".into()],
            timeout_ms: None,
            wait: true,
            root_key: None,
        })
        .await
        .expect_err("bad multiaddr");
    assert_eq!(err.code.as_str(), "INVALID_RELAY_ADDR");
    let err = a
        .request(Request::Publish {
            topic: "chat".into(),
            json: None,
            bytes: Some(serde_bytes::ByteBuf::from(vec![0u8; 1024 * 1024 + 1])),
        })
        .await
        .expect_err("too large");
    assert_eq!(err.code.as_str(), "PAYLOAD_TOO_LARGE");
    assert!(matches!(
        a.request(Request::Ping).await,
        Ok(ReplyValue::Pong { pong: true })
    ));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_relay_times_out_with_a_code() {
    let mut n = NativeNode::spawn(Keypair::generate_ed25519(), NodeConfig::default())
        .await
        .expect("node");
    // A port nothing listens on, with a well-formed relay id.
    let dead = format!(
        "/ip4/127.0.0.1/tcp/9/ws/p2p/{}",
        Keypair::generate_ed25519().public().to_peer_id()
    );
    let started = std::time::Instant::now();
    let err = n
        .request(Request::Connect {
            relays: vec![dead],
            timeout_ms: Some(800),
            wait: true,
            root_key: None,
        })
        .await
        .expect_err("times out");
    assert_eq!(err.code.as_str(), "CONNECT_TIMEOUT");
    assert!(started.elapsed() >= Duration::from_millis(800));
    let ReplyValue::Status(s) = n.request(Request::Status).await.expect("status") else {
        panic!("status");
    };
    assert!(!s.online && s.relays.len() == 1);
}

/// The body of the relay's HTTP answer at `path`.
async fn http_get(relay: &RelayHandle, path: &str) -> String {
    reqwest::get(format!("http://{}{path}", relay.http_addr))
        .await
        .expect("get")
        .text()
        .await
        .expect("body")
}

/// The relay's HTTP answer at `path`, as JSON.
async fn http_json(relay: &RelayHandle, path: &str) -> serde_json::Value {
    serde_json::from_str(&http_get(relay, path).await).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_answer() {
    let relay = relay("http").await;
    let boot = http_json(&relay, "/peercompute.json").await;
    let relays = boot["relays"].as_array().expect("relays");
    assert!(!relays.is_empty());
    assert!(
        boot.get("rootKey").is_none(),
        "no root key configured, none published"
    );
    assert!(relays
        .iter()
        .all(|r| r.as_str().is_some_and(|s| s.contains("/ws/p2p/"))));
    let _a = node(&relay).await;
    let status = http_json(&relay, "/status").await;
    assert_eq!(status["connections"], 1);
    assert_eq!(status["reservations"].as_array().map(Vec::len), Some(1));
    let peers = status["peers"].as_object().expect("peers");
    assert_eq!(peers.len(), 1);
    assert!(
        peers.values().all(|p| p.get("addr").is_none()),
        "no IP addresses without --status-addresses: {status}"
    );
    let metrics = http_get(&relay, "/metrics").await;
    assert!(
        metrics.contains("peercompute_relay_reservations 1"),
        "{metrics}"
    );
    assert!(metrics.contains("libp2p_"), "libp2p metrics present");
    // OpenMetrics: a counter's family is named without the `_total` of its sample.
    assert!(
        metrics.contains("# TYPE peercompute_relay_circuits_accepted counter\n")
            && metrics.contains("\npeercompute_relay_circuits_accepted_total "),
        "{metrics}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_a_dead_and_a_live_address_is_one_relay() {
    let relay = relay("two-addrs").await;
    let mut n = NativeNode::spawn(Keypair::generate_ed25519(), NodeConfig::default())
        .await
        .expect("node");
    let dead = format!("/ip4/127.0.0.1/tcp/9/ws/p2p/{}", relay.peer_id);
    timeout(
        T,
        n.request(Request::Connect {
            relays: vec![dead.clone(), relay.dialable[0].to_string()],
            timeout_ms: Some(10_000),
            wait: true,
            root_key: None,
        }),
    )
    .await
    .expect("in time")
    .expect("connects through the live address");
    let ReplyValue::Status(s) = n.request(Request::Status).await.expect("status") else {
        panic!("status");
    };
    assert_eq!(s.relays.len(), 1, "{s:?}");
    assert_eq!(s.relays[0].addrs.len(), 2);
    assert_eq!(s.relays[0].addr, relay.dialable[0].to_string());
    assert!(s.relays[0].reserved);
    relay.stop().await;
}

/// A peer speaking our protocols but sending malformed discovery announcements and app
/// payloads: the relay rejects them (and does not forward them), honest nodes never see them
/// and keep exchanging messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_cannot_disturb_the_relay_or_honest_nodes() {
    use futures::StreamExt;
    use libp2p::{gossipsub, swarm::SwarmEvent};
    use peercompute_core::{
        behaviour::NodeBehaviourEvent, discovery::discovery_topic, pubsub::app_topic,
    };

    let relay = relay("hostile").await;
    let (mut a, mut b) = chat_pair(&relay).await;

    let mut evil = peercompute_core::transport::build_swarm(
        Keypair::generate_ed25519(),
        Duration::from_secs(60),
    )
    .await
    .expect("swarm");
    evil.dial(relay.dialable[0].clone()).expect("dial");
    let chat = app_topic("chat");
    evil.behaviour_mut()
        .gossipsub
        .subscribe(&chat)
        .expect("subscribe");
    evil.behaviour_mut()
        .gossipsub
        .subscribe(&discovery_topic())
        .expect("subscribe");
    let garbage: Vec<(gossipsub::IdentTopic, Vec<u8>)> = vec![
        (discovery_topic(), b"{not json".to_vec()),
        (
            discovery_topic(),
            br#"{"v":1,"addrs":["/ip4/1.2.3.4/tcp/1"]}"#.to_vec(),
        ),
        (chat.clone(), vec![]),
        (chat.clone(), vec![1, b'{']),
        (chat.clone(), vec![99, 1, 2, 3]),
    ];
    let evil_task = tokio::spawn(async move {
        let mut sent = false;
        loop {
            if let SwarmEvent::Behaviour(NodeBehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { topic, .. },
            )) = evil.select_next_some().await
            {
                if !sent && topic == chat.hash() {
                    sent = true;
                    for (t, data) in &garbage {
                        let _ = evil
                            .behaviour_mut()
                            .gossipsub
                            .publish(t.clone(), data.clone());
                    }
                }
            }
        }
    });
    timeout(T, async {
        while relay.stats.lock().await.rejected_messages < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the relay rejected all five malformed messages");

    // Honest traffic still flows, and no garbage reached the honest nodes.
    let e = publish_until_received(&mut a, &mut b, "after the storm").await;
    assert!(
        matches!(&e, Event::Message { payload: Payload::Json(j), .. } if j.contains("after the storm"))
    );
    let ReplyValue::Status(s) = b.request(Request::Status).await.expect("status") else {
        panic!("status");
    };
    assert!(s.online);
    evil_task.abort();
    relay.stop().await;
}

/// A subscriber that stops reading (a stalled or hostile client) makes the relay queue what it
/// forwards to it, and gossipsub alone bounds that queue at 5000 messages of any size. With the
/// queue bounded in bytes (`MAX_GOSSIP_QUEUE_BYTES`, 32 MiB), 48 MiB published to its topic
/// leave most of the last 16 MiB dropped (and counted) rather than held, and other nodes'
/// traffic still flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_holds_a_bounded_queue_at_the_relay() {
    use futures::StreamExt;
    use libp2p::{gossipsub, swarm::SwarmEvent};
    use peercompute_core::{
        behaviour::NodeBehaviourEvent, limits::MAX_GOSSIP_QUEUE_BYTES, pubsub::app_topic,
    };

    const MESSAGE: usize = 512 * 1024;
    const MESSAGES: usize = 96; // 48 MiB, 16 MiB past the bound
    let relay = relay("slow-reader").await;
    let (mut a, mut b) = chat_pair(&relay).await;

    // The stalled subscriber: polled until the relay routes its topic, then never again (its
    // socket stays open and unread).
    let mut stalled = peercompute_core::transport::build_swarm(
        Keypair::generate_ed25519(),
        Duration::from_secs(60),
    )
    .await
    .expect("swarm");
    let bulk = app_topic("bulk");
    stalled
        .behaviour_mut()
        .gossipsub
        .subscribe(&bulk)
        .expect("subscribe");
    stalled.dial(relay.dialable[0].clone()).expect("dial");
    timeout(T, async {
        loop {
            if let SwarmEvent::Behaviour(NodeBehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { topic, .. },
            )) = stalled.select_next_some().await
            {
                if topic == bulk.hash() {
                    return;
                }
            }
        }
    })
    .await
    .expect("the relay routes the stalled peer's topic");

    let blob = serde_bytes::ByteBuf::from(vec![7u8; MESSAGE]);
    let publish = || Request::Publish {
        topic: "bulk".into(),
        json: None,
        bytes: Some(blob.clone()),
    };
    // The first publishes may precede the relay's subscription reaching `a`.
    timeout(T, async {
        loop {
            if let Ok(ReplyValue::Published(r)) = a.request(publish()).await {
                if r.peers > 0 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the relay takes bulk messages");
    for _ in 1..MESSAGES {
        timeout(T, async {
            loop {
                match a.request(publish()).await {
                    Ok(_) => return,
                    Err(e) if e.code.as_str() == "BUSY" => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err(e) => panic!("publish: {e}"),
                }
            }
        })
        .await
        .expect("publish in time");
    }
    let beyond = (MESSAGES * MESSAGE - MAX_GOSSIP_QUEUE_BYTES) / MESSAGE;
    let reached = timeout(T, async {
        while (relay.stats.lock().await.slow_peer_drops as usize) < beyond / 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let dropped = relay.stats.lock().await.slow_peer_drops;
    assert!(
        reached.is_ok(),
        "{dropped} messages dropped for the stalled peer; at least {} of the {beyond} past \
         its queue's bound should be",
        beyond / 2
    );

    let e = publish_until_received(&mut a, &mut b, "still flowing").await;
    assert!(
        matches!(&e, Event::Message { payload: Payload::Json(j), .. } if j.contains("still flowing"))
    );
    drop(stalled);
    relay.stop().await;
}

/// Circuits carry no gossip, so nothing but the explicit keep-alive holds them open: with a
/// 1 s idle timeout they must outlive 3 s of silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuits_are_kept_alive_deliberately_not_by_traffic() {
    let relay = relay("keepalive").await;
    let config = NodeConfig {
        idle_connection_timeout: Duration::from_secs(1),
        ..NodeConfig::default()
    };
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(common::node_with(Some(&relay), MemoryStore::default(), config.clone()).await);
    }
    let b_id = nodes[1].peer_id().to_string();
    wait_for(
        &mut nodes[0],
        |e| matches!(e, Event::PeerJoin { peer_id } if *peer_id == b_id),
    )
    .await;
    let circuits_before = relay.stats.lock().await.circuits_total;
    // Silence is the point of this test.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in &mut nodes {
        let ReplyValue::Status(s) = n.request(Request::Status).await.expect("status") else {
            panic!("status");
        };
        assert_eq!(s.connected_peers, 1, "{s:?}");
        assert!(s.relays[0].reserved && s.relays[0].reconnects == 0, "{s:?}");
    }
    let stats = relay.stats.lock().await.clone();
    assert_eq!(
        stats.circuits_total, circuits_before,
        "no circuit was re-made"
    );
    assert!(stats.circuits >= 1);
    relay.stop().await;
}

/// A WebSocket frame header declaring 256 MiB, sent before any handshake, is refused at once:
/// the relay does not set aside that much memory and wait for the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_websocket_frame_is_refused_before_it_is_allocated() {
    use libp2p::multiaddr::Protocol;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let relay = relay("huge-frame").await;
    let port = relay.dialable[0]
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a tcp port");
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    socket
        .write_all(
            format!(
                "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("upgrade request");
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        socket
            .read_exact(&mut byte)
            .await
            .expect("upgrade response");
        response.push(byte[0]);
    }
    assert!(
        response.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    // A final binary frame, masked, with a 64-bit length of 256 MiB, and its mask key.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(256u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    socket.write_all(&header).await.expect("frame header");
    // Closed at once (without the bound, only the 10 s handshake timeout would end it).
    let mut rest = Vec::new();
    let read = timeout(Duration::from_secs(3), socket.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the relay kept the connection waiting for 256 MiB"
    );
    relay.stop().await;
}

/// The relay routes a topic while some peer subscribes to it, and leaves it once none does
/// (unsubscribed or gone), so topics cannot pile up to its bound for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_topics_are_left_when_their_last_subscriber_goes() {
    let relay = relay("routed-topics").await;
    let no_linger = NodeConfig {
        topic_linger: Duration::ZERO,
        ..NodeConfig::default()
    };
    let mut a = common::node_with(Some(&relay), MemoryStore::default(), no_linger.clone()).await;
    let mut b = common::node_with(Some(&relay), MemoryStore::default(), no_linger).await;
    for n in [&mut a, &mut b] {
        n.request(Request::Subscribe {
            topic: "chat".into(),
        })
        .await
        .expect("subscribe");
    }
    a.request(Request::Subscribe {
        topic: "only-a".into(),
    })
    .await
    .expect("subscribe");
    routed(&relay, 2).await;
    a.request(Request::Unsubscribe {
        topic: "only-a".into(),
    })
    .await
    .expect("unsubscribe");
    routed(&relay, 1).await;
    a.stop();
    // Once the relay has seen `a` go, `b` still wants `chat`.
    timeout(T, async {
        while relay.stats.lock().await.peers.len() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a is gone");
    assert_eq!(relay.stats.lock().await.topics, 1);
    b.stop();
    routed(&relay, 0).await;
    relay.stop().await;
}

/// A raw swarm on `relay`, subscribed to `count` topics named `{prefix}-{i}` before it dials
/// (so they reach the relay together, at connect); it runs until the handle is aborted.
async fn greedy_peer(
    relay: &RelayHandle,
    prefix: &str,
    count: usize,
) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    let mut greedy = peercompute_core::transport::build_swarm(
        Keypair::generate_ed25519(),
        Duration::from_secs(60),
    )
    .await
    .expect("swarm");
    for i in 0..count {
        greedy
            .behaviour_mut()
            .gossipsub
            .subscribe(&peercompute_core::pubsub::app_topic(&format!(
                "{prefix}-{i}"
            )))
            .expect("subscribe");
    }
    greedy.dial(relay.dialable[0].clone()).expect("dial");
    tokio::spawn(async move {
        loop {
            greedy.select_next_some().await;
        }
    })
}

/// Waits until the relay routes exactly `n` topics.
async fn routed(relay: &RelayHandle, n: usize) {
    let reached = timeout(T, async {
        while relay.stats.lock().await.topics != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let now = relay.stats.lock().await.topics;
    assert!(reached.is_ok(), "{now} routed topics, expected {n}");
}

/// One peer's subscriptions make the relay route at most its share of topics, so a few peers
/// cannot use up the relay's bound for everyone; and a node that connects then still takes
/// the relay's hello (one message listing every routed topic, well over gossipsub's default
/// 16 KiB of control data) and can publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_take_every_routed_topic() {
    use peercompute_core::limits::MAX_ROUTED_TOPICS_PER_PEER;

    let relay = relay("topic-share").await;
    let driver = greedy_peer(&relay, "t", MAX_ROUTED_TOPICS_PER_PEER + 50).await;
    routed(&relay, MAX_ROUTED_TOPICS_PER_PEER).await;
    // Two nodes connecting now get the relay's whole topic list, route their own topic and
    // exchange messages on it.
    let (mut a, mut b) = chat_pair(&relay).await;
    routed(&relay, MAX_ROUTED_TOPICS_PER_PEER + 1).await;
    let e = publish_until_received(&mut a, &mut b, "past the hello").await;
    assert!(
        matches!(&e, Event::Message { payload: Payload::Json(j), .. } if j.contains("past the hello"))
    );
    driver.abort();
    relay.stop().await;
}

/// Waits until `/status` lists `peer` among the reservations, or not (`held`). The relay
/// records a reservation once its answer is sent, which the node may read first.
async fn shows_reservation(relay: &RelayHandle, peer: &str, held: bool) {
    timeout(T, async {
        while relay.stats.lock().await.reservations.contains(peer) != held {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("reservation of {peer} shown: {}", !held));
}

/// One address holds at most `--max-connections-per-ip` connections: peer ids cost nothing,
/// so per-peer bounds alone would let one machine take every slot. A refused node is told
/// `CONNECT_TIMEOUT`, keeps retrying, and gets in once a slot frees; `/status` counts the
/// refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_connections() {
    let relay = common::relay_with("per-ip", None, 2).await;
    let a = node(&relay).await;
    let _b = node(&relay).await;
    let mut c = NativeNode::spawn(Keypair::generate_ed25519(), NodeConfig::default())
        .await
        .expect("node");
    let err = c
        .request(Request::Connect {
            relays: vec![relay.dialable[0].to_string()],
            timeout_ms: Some(1500),
            wait: true,
            root_key: None,
        })
        .await
        .expect_err("a third connection from 127.0.0.1 is refused");
    assert_eq!(err.code.as_str(), "CONNECT_TIMEOUT");
    {
        let stats = relay.stats.lock().await;
        assert!(stats.refused_connections_per_ip >= 1);
        assert_eq!(stats.peers.len(), 2);
        assert!(!stats.peers.contains_key(&c.peer_id().to_string()));
    }
    // What an operator sees.
    let status = http_json(&relay, "/status").await;
    assert!(
        status["refusedConnectionsPerIp"].as_u64() >= Some(1),
        "{status}"
    );
    let metrics = http_get(&relay, "/metrics").await;
    assert!(
        metrics.contains("\npeercompute_relay_refused_connections_per_ip_total "),
        "{metrics}"
    );
    let a_id = a.peer_id().to_string();
    shows_reservation(&relay, &a_id, true).await;
    a.stop();
    // c's retries (backoff of at most 3 s) take the freed slot; a's reservation went with it.
    wait_for(&mut c, |e| matches!(e, Event::Status(s) if s.online)).await;
    shows_reservation(&relay, &c.peer_id().to_string(), true).await;
    shows_reservation(&relay, &a_id, false).await;
    relay.stop().await;
}

/// The peers of one address make the relay route at most half its topics, however many peer
/// ids they use: a second greedy peer from 127.0.0.1 gets only what is left of that share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_one_address_share_its_routed_topics() {
    use peercompute_core::limits::{MAX_ROUTED_TOPICS_PER_IP, MAX_ROUTED_TOPICS_PER_PEER};

    let relay = relay("topic-share-ip").await;
    let first = greedy_peer(&relay, "first", MAX_ROUTED_TOPICS_PER_PEER + 50).await;
    routed(&relay, MAX_ROUTED_TOPICS_PER_PEER).await;
    let second = greedy_peer(&relay, "second", MAX_ROUTED_TOPICS_PER_PEER + 50).await;
    routed(&relay, MAX_ROUTED_TOPICS_PER_IP).await;
    // The first one goes: what is left is the second's part of the share, not its own bound
    // (which would leave MAX_ROUTED_TOPICS_PER_PEER routed).
    first.abort();
    routed(
        &relay,
        MAX_ROUTED_TOPICS_PER_IP - MAX_ROUTED_TOPICS_PER_PEER,
    )
    .await;
    second.abort();
    relay.stop().await;
}
