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

/// A tab's import that yrs refuses partway: the part that went in is shown to the tabs and
/// stored like any write, and the tab is told why the rest did not, once that part is durable.
#[tokio::test]
async fn an_import_refused_partway_keeps_what_went_in_and_says_why() {
    use super::Output;
    use crate::{error::ErrorCode, tab_protocol::Event};
    let mut node = node(Duration::from_secs(15)).await;
    let doc = "world".to_string();
    request(&mut node, 1, Request::StateOpen { doc: doc.clone() });
    node.on_input(
        Input::DocLoaded {
            doc: doc.clone(),
            records: Vec::new(),
            error: None,
        },
        &mut |_| {},
    );
    let mut outputs = Vec::new();
    node.on_input(
        Input::Request {
            tab: 1,
            id: 2,
            request: Request::StateImport {
                doc: doc.clone(),
                bytes: crate::state::document::update_refused_partway().into(),
            },
        },
        &mut |o| outputs.push(o),
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
