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

/// Resident set size of this process, in bytes (Linux), for memory deltas.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Decode + apply inside one document, as the worker does for `stateUpdate` (no I/O).
pub(crate) fn apply_in_core(total: usize, per_batch: usize) -> anyhow::Result<Value> {
    let batches: Vec<String> = (0..total / per_batch)
        .map(|b| batch_json(b, per_batch))
        .collect();
    let before = rss_bytes();
    let doc = SharedDoc::new();
    let t0 = Instant::now();
    let mut updates = Vec::with_capacity(batches.len());
    for text in &batches {
        let ops = decode_ops(text).map_err(|e| anyhow::anyhow!(e.message))?;
        let applied = doc
            .apply_ops(&ops)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        updates.extend(applied.update);
    }
    let secs = t0.elapsed().as_secs_f64();
    // Measured now, before the replica below allocates (freed memory rarely goes back to
    // the OS, so it would count here).
    let after = rss_bytes();
    let update_bytes: usize = updates.iter().map(Vec::len).sum();
    // The same updates arriving from a peer: checked, applied, reported as changes.
    let replica = SharedDoc::new();
    let t1 = Instant::now();
    for u in &updates {
        replica
            .apply_update(u)
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    let remote_secs = t1.elapsed().as_secs_f64();
    drop(replica);
    let encoded = doc.encode_state().len();
    if doc.entry_count() != total {
        bail!("{} entries, expected {total}", doc.entry_count());
    }
    Ok(json!({
        "apply_ops_per_s": total as f64 / secs,
        "remote_apply_ops_per_s": total as f64 / remote_secs,
        "update_bytes": update_bytes,
        "encoded_bytes": encoded,
        "rss_growth_mib": before.zip(after).map(|(b, a)| a.saturating_sub(b) as f64 / (1 << 20) as f64),
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

/// A newcomer's initial sync of a `total`-op document held by `writer`, through the relay:
/// from its `stateOpen` until its view holds every key.
pub(crate) async fn newcomer_sync(
    writer: &mut NativeNode,
    newcomer: &mut NativeNode,
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
    Ok(json!({ "newcomer_sync_ms": t0.elapsed().as_secs_f64() * 1000.0 }))
}
