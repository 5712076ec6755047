//! The native half of the shared-state benchmarks: the same workload the browser runs (map
//! updates of `ops_per_batch` sets, `total_ops` in all), through the platform-neutral core.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use peercompute_core::{
    native::NativeNode,
    state::{path::decode_ops, SharedDoc},
    tab_protocol::{Event, ReplyValue, Request},
};
use serde_json::{json, Value};
use tokio::time::timeout;

/// Batch `b` of the workload, as the JSON text a tab sends: `[{set: ["k<i>"], value: i}, …]`.
pub(crate) fn batch_json(b: usize, per_batch: usize) -> String {
    let ops: Vec<Value> = (b * per_batch..(b + 1) * per_batch)
        .map(|i| json!({"set": [format!("k{i}")], "value": i}))
        .collect();
    Value::from(ops).to_string()
}

/// How many times the apply workloads run; the table reports the median (as the `yjs`
/// baseline does). One run swings by a third with the machine's load.
const APPLY_RUNS: usize = 3;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Decode + apply inside one document, as the worker does for `stateUpdate` (no I/O). The
/// updates are kept when `keep` (as the `yjs` baseline keeps them: not in the run whose
/// memory is measured).
fn apply_local(batches: &[String], keep: bool) -> anyhow::Result<(SharedDoc, Vec<Vec<u8>>, f64)> {
    let doc = SharedDoc::new();
    let t0 = Instant::now();
    let mut updates = Vec::with_capacity(if keep { batches.len() } else { 0 });
    for text in batches {
        let ops = decode_ops(text).map_err(|e| anyhow::anyhow!(e.message))?;
        let applied = doc
            .apply_ops(&ops)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        if keep {
            updates.extend(applied.update);
        }
    }
    Ok((doc, updates, t0.elapsed().as_secs_f64()))
}

/// The same updates arriving from a peer: checked, applied, reported as changes.
fn apply_remote(updates: &[Vec<u8>]) -> anyhow::Result<f64> {
    let replica = SharedDoc::new();
    let t0 = Instant::now();
    for u in updates {
        replica
            .apply_update(u)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// The local and remote apply workloads, [`APPLY_RUNS`] times each, and the memory of the
/// first document.
pub(crate) fn apply_in_core(total: usize, per_batch: usize) -> anyhow::Result<Value> {
    let batches: Vec<String> = (0..total / per_batch)
        .map(|b| batch_json(b, per_batch))
        .collect();
    let before = crate::heap::live_bytes();
    let (doc, _, first) = apply_local(&batches, false)?;
    // What the document holds: the bytes its building left live on this thread.
    let document_bytes = crate::heap::live_bytes() - before;
    let mut local = vec![first];
    let mut updates = Vec::new();
    for _ in 1..APPLY_RUNS {
        let (_, kept, secs) = apply_local(&batches, true)?;
        local.push(secs);
        updates = kept;
    }
    let remote = (0..APPLY_RUNS)
        .map(|_| apply_remote(&updates))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let update_bytes: usize = updates.iter().map(Vec::len).sum();
    let encoded = doc.encode_state().len();
    if doc.entry_count() != total {
        bail!("{} entries, expected {total}", doc.entry_count());
    }
    let per_s = |secs: &[f64]| secs.iter().map(|s| total as f64 / s).collect::<Vec<_>>();
    Ok(json!({
        "apply_ops_per_s": median(per_s(&local)),
        "apply_runs_ops_per_s": per_s(&local),
        "remote_apply_ops_per_s": median(per_s(&remote)),
        "remote_apply_runs_ops_per_s": per_s(&remote),
        "update_bytes": update_bytes,
        "encoded_bytes": encoded,
        "heap_growth_mib": document_bytes as f64 / (1 << 20) as f64,
    }))
}

async fn open(n: &mut NativeNode, doc: &str) -> anyhow::Result<usize> {
    match n.request(Request::StateOpen { doc: doc.into() }).await {
        Ok(ReplyValue::Tree { json }) => Ok(serde_json::from_str::<Value>(&json)?
            .as_object()
            .map_or(0, |o| o.len())),
        Ok(other) => bail!("unexpected reply {other:?}"),
        Err(e) => bail!("open: {e}"),
    }
}

/// Newcomers' initial sync of a `total`-op document held by `writer`, through the relay:
/// from a fresh node's `stateOpen` until its view holds every key. [`APPLY_RUNS`] newcomers,
/// one after another; the median is reported.
pub(crate) async fn newcomer_sync(
    writer: &mut NativeNode,
    relay: &str,
    total: usize,
    per_batch: usize,
) -> anyhow::Result<Value> {
    let doc = "bench-sync";
    open(writer, doc).await?;
    for b in 0..total / per_batch {
        writer
            .request(Request::StateUpdate {
                doc: doc.into(),
                ops: batch_json(b, per_batch),
            })
            .await
            .map_err(|e| anyhow::anyhow!("write: {e}"))?;
    }
    let writer_id = writer.peer_id().to_string();
    let mut runs = Vec::with_capacity(APPLY_RUNS);
    for _ in 0..APPLY_RUNS {
        let mut newcomer = crate::node(relay).await.context("state newcomer")?;
        // As in the browser half: the clock starts once the newcomer is connected to the
        // writer (discovery and the circuit are the network's, not the sync's).
        wait_for_peer(&mut newcomer, &writer_id).await?;
        runs.push(sync_one(&mut newcomer, doc, total).await?);
        newcomer.stop();
    }
    Ok(json!({ "newcomer_sync_ms": median(runs.clone()), "newcomer_sync_runs_ms": runs }))
}

/// Waits until `n` has a connection to `peer`.
async fn wait_for_peer(n: &mut NativeNode, peer: &str) -> anyhow::Result<()> {
    timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(ReplyValue::Peers(peers)) = n.request(Request::Peers).await {
                if peers.iter().any(|p| p.peer_id == peer && p.connected) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("newcomer never connected to the writer")
}

/// One newcomer's sync of `doc`, in milliseconds.
async fn sync_one(newcomer: &mut NativeNode, doc: &str, total: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut keys = open(newcomer, doc).await?;
    timeout(Duration::from_secs(60), async {
        while keys < total {
            match newcomer.next_event().await {
                Some(Event::State { changes, .. }) => {
                    let changes: Vec<Value> = serde_json::from_str(&changes)?;
                    for change in &changes {
                        let path_len = change["path"].as_array().map_or(0, Vec::len);
                        keys += match (path_len, change.get("value")) {
                            (_, None) => 0,
                            // A sync that fills the empty document comes as its whole tree.
                            (0, Some(Value::Object(tree))) => tree.len(),
                            _ => 1,
                        };
                    }
                }
                Some(_) => {}
                None => bail!("newcomer stopped"),
            }
        }
        anyhow::Ok(())
    })
    .await
    .context("newcomer sync timed out")??;
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}
