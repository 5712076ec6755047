//! The node loop's bookkeeping, driven through its inputs without a network.

use std::time::Duration;

use libp2p::identity::Keypair;
use web_time::Instant;

use super::{Input, Node, NodeConfig};
use crate::{limits::MAX_LINGERING_TOPICS, pubsub::app_topic, tab_protocol::Request};

async fn node(topic_linger: Duration) -> Node {
    let config = NodeConfig {
        topic_linger,
        ..NodeConfig::default()
    };
    Node::native(Keypair::generate_ed25519(), config)
        .await
        .expect("node")
}

fn request(node: &mut Node, tab: u32, request: Request) {
    node.on_input(Input::Attach(tab), &mut |_| {});
    node.on_input(
        Input::Request {
            tab,
            id: 1,
            request,
        },
        &mut |_| {},
    );
}

fn subscribe(node: &mut Node, tab: u32, topic: &str) {
    let topic = topic.to_string();
    request(node, tab, Request::Subscribe { topic });
}

fn unsubscribe(node: &mut Node, tab: u32, topic: &str) {
    let topic = topic.to_string();
    request(node, tab, Request::Unsubscribe { topic });
}

/// Subscribed on the network (in gossipsub), whether or not a tab wants it.
fn on_network(node: &Node, topic: &str) -> bool {
    let hash = app_topic(topic).hash();
    node.swarm
        .behaviour()
        .gossipsub
        .topics()
        .any(|t| *t == hash)
}

#[tokio::test]
async fn a_released_topic_lingers_on_the_network_before_it_is_left() {
    let linger = Duration::from_secs(15);
    let mut node = node(linger).await;
    subscribe(&mut node, 1, "chat");
    subscribe(&mut node, 2, "chat");
    unsubscribe(&mut node, 1, "chat");
    assert!(on_network(&node, "chat"), "tab 2 still wants it");
    unsubscribe(&mut node, 2, "chat");
    node.leave_lingering_topics(Instant::now());
    assert!(on_network(&node, "chat"), "lingering");
    node.leave_lingering_topics(Instant::now() + linger + Duration::from_secs(1));
    assert!(!on_network(&node, "chat"), "left once the linger is over");

    // Subscribing again while it lingers keeps it, and cancels the leave.
    subscribe(&mut node, 1, "chat");
    unsubscribe(&mut node, 1, "chat");
    subscribe(&mut node, 1, "chat");
    node.leave_lingering_topics(Instant::now() + 2 * linger);
    assert!(on_network(&node, "chat"));

    // A closed tab's topics linger the same way.
    node.on_input(Input::Detach(1), &mut |_| {});
    assert!(on_network(&node, "chat"));
    node.leave_lingering_topics(Instant::now() + 2 * linger);
    assert!(!on_network(&node, "chat"));
}

#[tokio::test]
async fn lingering_is_bounded_and_can_be_turned_off() {
    let mut node = node(Duration::from_secs(15)).await;
    let topics: Vec<String> = (0..=MAX_LINGERING_TOPICS)
        .map(|i| format!("t{i}"))
        .collect();
    for t in &topics {
        subscribe(&mut node, 1, t);
        unsubscribe(&mut node, 1, t);
    }
    assert!(topics[..MAX_LINGERING_TOPICS]
        .iter()
        .all(|t| on_network(&node, t)));
    assert!(
        !on_network(&node, &topics[MAX_LINGERING_TOPICS]),
        "past the bound, a released topic is left at once"
    );

    let mut node = self::node(Duration::ZERO).await;
    subscribe(&mut node, 1, "chat");
    unsubscribe(&mut node, 1, "chat");
    assert!(!on_network(&node, "chat"));
}

/// All tabs together subscribe a node to at most `MAX_NODE_APP_TOPICS` topics (peers ignore
/// more); a lingering topic gives way to a wanted one.
#[tokio::test]
async fn a_node_subscribes_to_a_bounded_number_of_topics() {
    use super::Output;
    use crate::{error::ErrorCode, limits::MAX_NODE_APP_TOPICS};
    let mut node = node(Duration::from_secs(15)).await;
    let per_tab = crate::limits::MAX_SUBSCRIPTIONS_PER_TAB;
    for i in 0..MAX_NODE_APP_TOPICS {
        subscribe(&mut node, (i / per_tab) as u32, &format!("t{i}"));
    }
    let mut replies = Vec::new();
    node.on_input(Input::Attach(99), &mut |_| {});
    let more = |node: &mut Node, replies: &mut Vec<Output>| {
        node.on_input(
            Input::Request {
                tab: 99,
                id: 7,
                request: Request::Subscribe {
                    topic: "one-more".into(),
                },
            },
            &mut |o| replies.push(o),
        )
    };
    more(&mut node, &mut replies);
    assert!(
        matches!(&replies[..], [Output::Reply { result: Err(e), .. }] if e.code == ErrorCode::TooManySubscriptions),
        "{replies:?}"
    );
    assert!(!on_network(&node, "one-more"));
    // Released, `t0` lingers; the next new topic takes its place.
    unsubscribe(&mut node, 0, "t0");
    assert!(on_network(&node, "t0"));
    replies.clear();
    more(&mut node, &mut replies);
    assert!(matches!(
        &replies[..],
        [Output::Reply { result: Ok(_), .. }]
    ));
    assert!(on_network(&node, "one-more"));
    assert!(
        !on_network(&node, "t0"),
        "the lingering topic was left for it"
    );
}

/// A request a tab sent before its detach went through does not bring the tab back (nothing
/// would detach it again, and its subscription would stay for good).
#[tokio::test]
async fn a_request_after_a_detach_does_not_bring_the_tab_back() {
    use super::Output;
    use crate::error::ErrorCode;
    let mut node = node(Duration::ZERO).await;
    subscribe(&mut node, 1, "chat");
    node.on_input(Input::Detach(1), &mut |_| {});
    assert!(!on_network(&node, "chat"));
    let mut replies = Vec::new();
    node.on_input(
        Input::Request {
            tab: 1,
            id: 3,
            request: Request::Subscribe {
                topic: "late".into(),
            },
        },
        &mut |o| replies.push(o),
    );
    assert!(
        matches!(&replies[..], [Output::Reply { tab: 1, id: 3, result: Err(e) }] if e.code == ErrorCode::BadRequest),
        "{replies:?}"
    );
    assert!(!on_network(&node, "late"));
    assert!(!node.tabs.contains_key(&1));
}

/// Opening a document syncs it with every peer then; the periodic resync counts from there,
/// so its first tick does not ask every peer for the whole document again.
#[tokio::test]
async fn the_periodic_resync_counts_from_the_first_document_load() {
    let mut node = node(Duration::from_secs(15)).await;
    assert!(node.state.last_resync.is_none());
    let doc = "world".to_string();
    request(&mut node, 1, Request::StateOpen { doc: doc.clone() });
    let before = Instant::now();
    node.on_input(
        Input::DocLoaded {
            doc,
            records: Vec::new(),
            error: None,
        },
        &mut |_| {},
    );
    let started = node
        .state
        .last_resync
        .expect("the resync clock starts at the load");
    assert!(started >= before);
    node.resync_tick(started + Duration::from_millis(100));
    assert_eq!(
        node.state.last_resync,
        Some(started),
        "no resync on the next tick"
    );
}

/// A document whose stored records could not be read opens empty, but nothing is written
/// for it: an append would overwrite records nobody has read, and a compaction delete them.
#[tokio::test]
async fn a_document_whose_storage_could_not_be_read_is_never_written() {
    use super::Output;
    use crate::{error::ErrorCode, tab_protocol::ReplyValue};
    let mut node = node(Duration::from_secs(15)).await;
    let doc = "world".to_string();
    request(&mut node, 1, Request::StateOpen { doc: doc.clone() });
    let mut outputs = Vec::new();
    node.on_input(
        Input::DocLoaded {
            doc: doc.clone(),
            records: Vec::new(),
            error: Some("UnknownError: failed to read large value".into()),
        },
        &mut |o| outputs.push(o),
    );
    assert!(
        outputs.iter().any(|o| matches!(
            o,
            Output::Reply {
                result: Ok(ReplyValue::Tree { .. }),
                ..
            }
        )),
        "the document opens (empty)"
    );
    let ops = r#"[{"set":["score"],"value":3}]"#.to_string();
    for request in [
        Request::StateUpdate {
            doc: doc.clone(),
            ops,
        },
        Request::StateSnapshot {
            doc: doc.clone(),
            label: "v".into(),
        },
    ] {
        outputs.clear();
        node.on_input(
            Input::Request {
                tab: 1,
                id: 2,
                request,
            },
            &mut |o| outputs.push(o),
        );
        assert!(
            outputs.iter().any(|o| matches!(
                o,
                Output::Reply { result: Err(e), .. } if e.code == ErrorCode::StatePersistFailed
            )),
            "the write is refused with STATE_PERSIST_FAILED"
        );
        assert!(
            !outputs
                .iter()
                .any(|o| matches!(o, Output::Persist { .. } | Output::Compact { .. })),
            "nothing reaches storage"
        );
    }
    // A peer's update is taken, kept in memory only, and counted against the bound.
    let update = {
        let mut peer = crate::state::replica::Replica::new(1);
        let w = peer.create(&doc).unwrap();
        let ops = [crate::state::path::Op::set(
            &["score".into()],
            serde_json::json!(7),
        )];
        w.apply_ops(&ops).unwrap().update.unwrap()
    };
    let message = libp2p::gossipsub::Message {
        source: None,
        data: update.clone(),
        sequence_number: None,
        topic: crate::state::sync_protocol::state_topic(&doc).hash(),
    };
    outputs.clear();
    node.on_state_gossip(&doc, &message, &mut |o| outputs.push(o));
    assert!(!outputs.iter().any(|o| matches!(o, Output::Persist { .. })));
    let held = node.state.replica.state(&doc).unwrap();
    assert_eq!(held.doc.to_json(), serde_json::json!({ "score": 7 }));
    assert_eq!(held.stored_bytes, update.len(), "held in memory, counted");
}

/// A tab's requests can fill the node's queue; a lifecycle input still gets in, after them.
#[test]
fn lifecycle_inputs_are_queued_even_when_requests_fill_the_queue() {
    use futures::channel::mpsc;

    use super::queue_lifecycle;
    let (mut inputs, mut rx) = mpsc::channel::<Input>(4);
    let mut queued = 0;
    while inputs
        .try_send(Input::Request {
            tab: 1,
            id: queued,
            request: Request::Status,
        })
        .is_ok()
    {
        queued += 1;
    }
    assert!(queued >= 4, "the queue took its buffer");
    for tab in [1, 2, 3] {
        assert!(queue_lifecycle(&inputs, Input::Detach(tab)).is_ok());
    }
    let mut order = Vec::new();
    while let Ok(input) = rx.try_recv() {
        order.push(match input {
            Input::Request { id, .. } => format!("request {id}"),
            Input::Detach(tab) => format!("detach {tab}"),
            other => format!("{other:?}"),
        });
    }
    let mut expected: Vec<String> = (0..queued).map(|id| format!("request {id}")).collect();
    expected.extend(["detach 1", "detach 2", "detach 3"].map(String::from));
    assert_eq!(order, expected);
    drop(rx);
    assert!(
        queue_lifecycle(&inputs, Input::Detach(4)).is_err(),
        "fails only once the node loop is gone"
    );
}

/// A node with document `doc` opened by tab 1 and loaded (empty).
async fn node_with_doc(doc: &str) -> Node {
    let mut node = node(Duration::from_secs(15)).await;
    let doc = doc.to_string();
    request(&mut node, 1, Request::StateOpen { doc: doc.clone() });
    let loaded = Input::DocLoaded {
        doc,
        records: Vec::new(),
        error: None,
    };
    node.on_input(loaded, &mut |_| {});
    node
}

/// Tab 1 imports `bytes` into `doc` as request 2; returns the node's outputs.
fn import(node: &mut Node, doc: &str, bytes: Vec<u8>) -> Vec<super::Output> {
    let mut outputs = Vec::new();
    let request = Request::StateImport {
        doc: doc.to_string(),
        bytes: bytes.into(),
    };
    let input = Input::Request {
        tab: 1,
        id: 2,
        request,
    };
    node.on_input(input, &mut |o| outputs.push(o));
    outputs
}

/// A tab's import that yrs refuses partway: the part that went in is shown to the tabs and
/// stored like any write, and the tab is told why the rest did not, once that part is durable.
#[tokio::test]
async fn an_import_refused_partway_keeps_what_went_in_and_says_why() {
    use super::Output;
    use crate::{error::ErrorCode, tab_protocol::Event};
    let doc = "world".to_string();
    let mut node = node_with_doc(&doc).await;
    let outputs = import(
        &mut node,
        &doc,
        crate::state::document::update_refused_partway(),
    );
    let [Output::Event {
        tab: 1,
        event: Event::State { changes, .. },
    }, Output::Persist { then, .. }] = &outputs[..]
    else {
        panic!("expected the change shown, then stored: {outputs:?}");
    };
    assert_eq!(changes, r#"[{"path":["a"],"value":null}]"#);
    assert!(
        matches!(
            &then[..],
            [Output::Reply { id: 2, result: Err(e), .. }] if e.code == ErrorCode::StateInvalidUpdate
        ),
        "{then:?}"
    );
}

/// A tab's import that builds on history the document lacks: the independent part goes in
/// and is stored; the dependent part is not kept in memory unstored, and the tab hears
/// what is missing (once the part that went in is durable).
#[tokio::test]
async fn an_import_missing_its_history_says_so_and_keeps_nothing_unstored() {
    use super::Output;
    use crate::{
        error::ErrorCode,
        state::{path::Op, replica::Replica},
    };
    let doc = "world".to_string();
    let mut node = node_with_doc(&doc).await;
    let set = |key: &str, v: i32| Op::set(&[key.to_string()], serde_json::json!(v));
    let mut elsewhere = Replica::new(2);
    let writer = elsewhere.create(&doc).unwrap();
    writer.apply_ops(&[set("a", 1)]).unwrap(); // never imported
    let later = writer.apply_ops(&[set("a", 2)]).unwrap().update.unwrap();
    let other = elsewhere.create("other").unwrap();
    let independent = other.apply_ops(&[set("b", 3)]).unwrap().update.unwrap();
    let bytes = yrs::merge_updates_v1([later.as_slice(), independent.as_slice()]).unwrap();
    let outputs = import(&mut node, &doc, bytes);
    let stored = outputs.iter().find_map(|o| match o {
        Output::Persist { then, .. } => Some(then),
        _ => None,
    });
    let Some(
        [Output::Reply {
            id: 2,
            result: Err(e),
            ..
        }],
    ) = stored.map(Vec::as_slice)
    else {
        panic!("expected b stored, then the refusal: {outputs:?}");
    };
    assert_eq!(e.code, ErrorCode::StateMissingHistory);
    assert!(e.message.contains("from clock 0"), "{}", e.message);
    let state = node.state.replica.get(&doc).unwrap();
    assert_eq!(state.to_json(), serde_json::json!({ "b": 3 }));
    assert!(!state.has_pending(), "nothing held that is not stored");
}

/// A peer is dialed only through a relay this node is connected to, at this node's own
/// address of it: an announcement naming another relay (any host) is never dialed.
#[tokio::test]
async fn announced_peers_are_dialed_only_through_our_relays() {
    use libp2p::{Multiaddr, PeerId};

    use crate::discovery::Announcement;
    let mut node = node(Duration::from_secs(15)).await;
    let relay_id = PeerId::random();
    let relay_addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/ws/p2p/{relay_id}")
        .parse()
        .unwrap();
    request(
        &mut node,
        1,
        Request::Connect {
            relays: vec![relay_addr.to_string()],
            timeout_ms: Some(1000),
            wait: false,
            root_key: None,
        },
    );
    let now = Instant::now();
    // A peer this node dials (the smaller id dials).
    let peer_after = |me: PeerId| loop {
        // Of the same kind as ours (`PeerId::random` ids are shorter, so always smaller).
        let p = Keypair::generate_ed25519().public().to_peer_id();
        if me < p {
            return p;
        }
    };
    let me = *node.swarm.local_peer_id();
    let through = |relay: PeerId, host: &str, peer: PeerId| -> Multiaddr {
        format!("{host}/p2p/{relay}/p2p-circuit/p2p/{peer}")
            .parse()
            .unwrap()
    };
    let stranger = peer_after(me);
    let elsewhere = through(
        PeerId::random(),
        "/dns4/victim.example/tcp/443/wss",
        stranger,
    );
    let ours = peer_after(me);
    let via_ours = through(relay_id, "/ip4/10.9.9.9/tcp/443/wss", ours);
    for (peer, addr) in [(stranger, elsewhere), (ours, via_ours)] {
        let announcement = Announcement {
            addrs: vec![addr],
            compute: None,
        };
        node.on_announcement(peer, announcement, now);
    }
    // While the relay is down nothing is dialed.
    node.dial_peers(now);
    assert!(!node.peers[&ours].dialing && !node.peers[&stranger].dialing);
    node.relays[0].connected = true;
    node.relays[0].connected_addr = Some(relay_addr);
    node.dial_peers(now);
    assert!(node.peers[&ours].dialing, "dialed through our relay");
    assert!(
        !node.peers[&stranger].dialing,
        "a relay this node does not use is not dialed"
    );
}

/// An announcement sent again after gossipsub forgot its id (a replay) changes nothing: the
/// peer's newer addresses and capabilities stand, and the message is not forwarded.
#[tokio::test]
async fn a_replayed_announcement_changes_nothing() {
    use libp2p::{gossipsub, Multiaddr, PeerId};

    use crate::discovery::{discovery_topic, Announcement, Capabilities};
    let mut node = node(Duration::from_secs(15)).await;
    let relay = PeerId::random();
    let peer = Keypair::generate_ed25519().public().to_peer_id();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/ws/p2p/{relay}/p2p-circuit/p2p/{peer}")
        .parse()
        .unwrap();
    let message = |seq: u64, compute: Option<Capabilities>| gossipsub::Message {
        source: Some(peer),
        data: Announcement {
            addrs: vec![addr.clone()],
            compute,
        }
        .encode(),
        sequence_number: Some(seq),
        topic: discovery_topic().hash(),
    };
    let gpu = Capabilities {
        cpu: 4,
        gpu: true,
        score: 10.0,
        load: 0.0,
    };
    let now = Instant::now();
    let old = message(7, Some(gpu));
    let accepted = |m| matches!(m, gossipsub::MessageAcceptance::Accept);
    assert!(accepted(node.on_gossip_message(
        old.clone(),
        now,
        &mut |_| {}
    )));
    assert_eq!(node.peers[&peer].compute, Some(gpu));
    // The peer stops computing and says so.
    assert!(accepted(node.on_gossip_message(
        message(8, None),
        now,
        &mut |_| {}
    )));
    assert_eq!(node.peers[&peer].compute, None);
    // Its old announcement, two minutes later.
    let later = now + Duration::from_secs(120);
    let replayed = node.on_gossip_message(old, later, &mut |_| {});
    assert!(matches!(replayed, gossipsub::MessageAcceptance::Ignore));
    assert_eq!(node.peers[&peer].compute, None, "the newer news stands");
}

/// The peer table is full: the stalest unconnected peer gives way to a newcomer.
#[tokio::test]
async fn a_full_peer_table_still_takes_newcomers() {
    use libp2p::PeerId;

    use crate::{discovery::Announcement, limits::MAX_KNOWN_PEERS};
    let mut node = node(Duration::from_secs(15)).await;
    let relay = PeerId::random();
    let announce = |node: &mut Node, peer: PeerId, at: Instant| {
        let addr = format!("/ip4/127.0.0.1/tcp/1/ws/p2p/{relay}/p2p-circuit/p2p/{peer}")
            .parse()
            .unwrap();
        let announcement = Announcement {
            addrs: vec![addr],
            compute: None,
        };
        node.on_announcement(peer, announcement, at);
    };
    let start = Instant::now();
    let first = PeerId::random();
    announce(&mut node, first, start);
    for i in 1..MAX_KNOWN_PEERS {
        announce(
            &mut node,
            PeerId::random(),
            start + Duration::from_millis(i as u64),
        );
    }
    assert_eq!(node.peers.len(), MAX_KNOWN_PEERS);
    let newcomer = PeerId::random();
    announce(&mut node, newcomer, start + Duration::from_secs(5));
    assert_eq!(node.peers.len(), MAX_KNOWN_PEERS);
    assert!(node.peers.contains_key(&newcomer));
    assert!(!node.peers.contains_key(&first), "the stalest gave way");
}

/// A burst of peers' presence updates reaches the tabs as one table, then the rest at the
/// next tick: the whole table (up to 1024 states) is not rebuilt and sent per update.
#[tokio::test]
async fn a_burst_of_presence_updates_is_one_message_per_interval() {
    use libp2p::PeerId;

    use super::Output;
    use crate::{
        presence::{encode, AwarenessEntry},
        tab_protocol::Event,
    };
    let mut node = node(Duration::from_secs(15)).await;
    node.on_input(Input::Attach(1), &mut |_| {});
    let mut sent = 0;
    let now = Instant::now();
    for i in 0..50u64 {
        let bytes = encode(&AwarenessEntry {
            client_id: i,
            clock: 1,
            state: Some(format!("{{\"n\":{i}}}")),
        });
        node.on_presence_gossip(PeerId::random(), Some(1), &bytes, now, &mut |o| {
            sent += usize::from(matches!(
                o,
                Output::Event {
                    event: Event::Presence { .. },
                    ..
                }
            ));
        });
    }
    assert_eq!(sent, 1, "the first goes out at once, the rest wait");
    let mut last = None;
    node.presence_tick(now + Duration::from_millis(150), &mut |o| {
        if let Output::Event {
            event: Event::Presence { peers },
            ..
        } = o
        {
            last = Some(peers);
        }
    });
    let table: serde_json::Value = serde_json::from_str(&last.expect("sent at the tick")).unwrap();
    assert_eq!(table.as_object().unwrap().len(), 50, "every peer's state");
}
