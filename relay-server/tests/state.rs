//! Integration: shared documents between native nodes through a real relay, and durability
//! across a node restart.

use std::time::Duration;

use peercompute_core::{
    native::{MemoryStore, NativeNode},
    tab_protocol::{ReplyValue, Request},
    ErrorCode,
};
mod common;

use common::{relay, relay_dir, relay_with_state};
use relay_server::RelayHandle;
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

const T: Duration = Duration::from_secs(30);

async fn node(relay: Option<&RelayHandle>, store: MemoryStore) -> NativeNode {
    common::node_on(relay, store).await
}

async fn open(n: &mut NativeNode, doc: &str) -> Value {
    match n
        .request(Request::StateOpen { doc: doc.into() })
        .await
        .expect("open")
    {
        ReplyValue::Tree { json } => serde_json::from_str(&json).expect("json"),
        other => panic!("unexpected reply {other:?}"),
    }
}

async fn update(
    n: &mut NativeNode,
    doc: &str,
    ops: Value,
) -> Result<ReplyValue, peercompute_core::NodeError> {
    n.request(Request::StateUpdate {
        doc: doc.into(),
        ops: ops.to_string(),
    })
    .await
}

/// Polls the node's tree until `pred` holds.
async fn until(n: &mut NativeNode, doc: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let tree = open(n, doc).await;
        if pred(&tree) {
            return tree;
        }
        assert!(
            Instant::now() < deadline,
            "never converged; last tree {tree}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_after_concurrent_edits() {
    let relay = relay("state-converge").await;
    let mut a = node(Some(&relay), MemoryStore::default()).await;
    let mut b = node(Some(&relay), MemoryStore::default()).await;
    open(&mut a, "w").await;
    update(
        &mut a,
        "w",
        json!([{"set": ["players", "alice"], "value": {"x": 1}}]),
    )
    .await
    .expect("durable");
    // B opens later and is filled in by the y-sync exchange.
    open(&mut b, "w").await;
    until(&mut b, "w", |t| t["players"]["alice"]["x"] == 1).await;
    // Concurrent writes under the same new object both survive.
    let (ra, rb) = tokio::join!(
        update(&mut a, "w", json!([{"set": ["team", "a"], "value": 1}])),
        update(&mut b, "w", json!([{"set": ["team", "b"], "value": 2}])),
    );
    ra.expect("a writes");
    rb.expect("b writes");
    let expect =
        |t: &Value| t["team"] == json!({"a": 1, "b": 2}) && t["players"]["alice"]["x"] == 1;
    let ta = until(&mut a, "w", expect).await;
    let tb = until(&mut b, "w", expect).await;
    assert_eq!(ta, tb);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_survives_a_restart_and_bad_updates_change_nothing() {
    let store = MemoryStore::default();
    let mut n = node(None, store.clone()).await;
    assert_eq!(
        update(&mut n, "w", json!([{"set": ["k"], "value": 1}]))
            .await
            .unwrap_err()
            .code,
        ErrorCode::StateNotOpen
    );
    open(&mut n, "w").await;
    for i in 0..250 {
        update(&mut n, "w", json!([{"set": ["k"], "value": i}]))
            .await
            .expect("write");
    }
    let bad = [
        json!([{"set": [], "value": 1}]),
        json!([{"set": ["a"]}]),
        json!({"set": ["a"], "value": 1}),
    ];
    for ops in bad {
        assert!(update(&mut n, "w", ops).await.is_err());
    }
    let import = n
        .request(Request::StateImport {
            doc: "w".into(),
            bytes: serde_bytes::ByteBuf::from(vec![0xff; 16]),
        })
        .await
        .unwrap_err();
    assert_eq!(import.code, ErrorCode::StateInvalidUpdate);
    // 250 writes were compacted along the way: far fewer records than writes.
    let records = store.records("w");
    assert!(records.len() < 100, "{} records", records.len());
    n.stop();
    // A new node on the same storage, offline, has everything.
    let mut again = node(None, store.clone()).await;
    assert_eq!(open(&mut again, "w").await, json!({"k": 249}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pinning_relay_serves_a_newcomer_after_everyone_left_and_after_a_restart() {
    let state_dir = relay_dir("pinning").join("state");
    let _ = std::fs::remove_dir_all(&state_dir);
    let relay = relay_with_state("pinning", Some(state_dir.clone())).await;
    let mut a = node(Some(&relay), MemoryStore::default()).await;
    open(&mut a, "world").await;
    update(
        &mut a,
        "world",
        json!([{"set": ["boss"], "value": "alive"}]),
    )
    .await
    .expect("durable");
    update(&mut a, "world", json!([{"set": ["score"], "value": 3}]))
        .await
        .expect("durable");
    // The relay has it once its status counts the document and a fresh node can read it.
    let mut b = node(Some(&relay), MemoryStore::default()).await;
    let expect = |t: &Value| t["boss"] == "alive" && t["score"] == 3;
    until(&mut b, "world", expect).await;
    // Every answer the relay handed out was sent: none still counts against a peer's share.
    let deadline = Instant::now() + T;
    while relay.stats.lock().await.sync_answer_bytes > 0 {
        assert!(
            Instant::now() < deadline,
            "sync answers never counted as sent"
        );
        sleep(Duration::from_millis(20)).await;
    }
    a.stop();
    b.stop();
    let pinned = relay.stats.lock().await.pinned.clone().expect("pinning");
    assert_eq!(pinned.len(), 1);
    assert_eq!(pinned["world"].entries, 2);
    relay.stop().await;

    // A new relay process on the same directory: the newcomer has no other peer and no storage.
    let relay = relay_with_state("pinning", Some(state_dir)).await;
    let mut c = node(Some(&relay), MemoryStore::default()).await;
    until(&mut c, "world", expect).await;
    relay.stop().await;
}
