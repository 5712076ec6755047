//! Integration: presence between native nodes through a real relay.

use peercompute_core::{
    native::{MemoryStore, NativeNode},
    tab_protocol::{Event, ReplyValue, Request},
    ErrorCode,
};
use relay_server::RelayHandle;
use serde_json::{json, Value};

mod common;
use common::{relay, wait_for};

async fn node(relay: &RelayHandle) -> NativeNode {
    common::node_on(Some(relay), MemoryStore::default()).await
}

async fn set(n: &mut NativeNode, state: Value) -> Result<ReplyValue, peercompute_core::NodeError> {
    n.request(Request::PresenceSet {
        json: state.to_string(),
    })
    .await
}

/// Waits for a presence event whose `{ peerId: state }` satisfies `pred`.
async fn until_presence(n: &mut NativeNode, pred: impl Fn(&Value) -> bool) -> Value {
    let is_it = |e: &Event| match e {
        Event::Presence { peers } => serde_json::from_str(peers).is_ok_and(|p| pred(&p)),
        _ => false,
    };
    match wait_for(n, is_it).await {
        Event::Presence { peers } => serde_json::from_str(&peers).expect("json"),
        _ => unreachable!("wait_for returns a matching event"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_seen_updated_cleared_and_forgotten_when_a_peer_leaves() {
    let relay = relay("presence").await;
    let mut a = node(&relay).await;
    let a_id = a.peer_id().to_string();
    set(&mut a, json!({"name": "alice", "cursor": [3, 4]}))
        .await
        .expect("set");
    // B joins later and still learns A's state (A repeats it when a peer joins).
    let mut b = node(&relay).await;
    let seen = until_presence(&mut b, |p| p[&a_id]["name"] == "alice").await;
    assert_eq!(seen[&a_id]["cursor"], json!([3, 4]));
    set(&mut a, json!({"name": "alice", "cursor": [5, 6]}))
        .await
        .expect("set");
    until_presence(&mut b, |p| p[&a_id]["cursor"] == json!([5, 6])).await;
    // Cleared: gone at once.
    set(&mut a, Value::Null).await.expect("clear");
    until_presence(&mut b, |p| p.get(&a_id).is_none()).await;
    // Bad states get codes and change nothing.
    let err = a
        .request(Request::PresenceSet {
            json: "{nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PresenceInvalidValue);
    let err = set(&mut a, json!({"s": "x".repeat(5000)}))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PayloadTooLarge);
    // Back, then gone with the node.
    set(&mut a, json!("back")).await.expect("set");
    until_presence(&mut b, |p| p[&a_id] == "back").await;
    // "Gone with the node" means on the connection's close, not on expiry (30 s, as long as
    // a test waits): b must hold a connection to a first. B learned a's state through the
    // relay, possibly before their own circuit was up.
    tokio::time::timeout(common::T, async {
        loop {
            if let Ok(ReplyValue::Peers(peers)) = b.request(Request::Peers).await {
                if peers.iter().any(|p| p.peer_id == a_id && p.connected) {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("b connected to a");
    a.stop();
    until_presence(&mut b, |p| p.get(&a_id).is_none()).await;
    // B set nothing itself, and A is gone: B shows nobody.
    match b.request(Request::PresenceGet).await.expect("get") {
        ReplyValue::Tree { json } => assert_eq!(json, "{}"),
        other => panic!("unexpected {other:?}"),
    }
    relay.stop().await;
}
