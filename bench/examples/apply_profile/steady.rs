//! The shared-state apply workload in a steady-state loop: the bench's 100 updates of 1000
//! sets, ten times over, each time into a fresh document, in one process whose allocator has
//! warmed up. One run of `npm run bench` swings by a third with the machine's load; medians
//! of ten runs of one step, alternated with another step in the same minute, are what show a
//! change to one step.
//!
//! `cargo run --release -p peercompute-bench --example apply_profile -- steady STEP`, where
//! STEP is
//! - `local`: decoding the tab's JSON and applying it (`apply_ops`), as the worker does;
//! - `decode`: decoding alone;
//! - `floor`: decoding, then bare yrs inserting the same entries (type events skipped, an
//!   update observer), the floor under `local`;
//! - `remote`: the updates `local` made, applied to a replica (`apply_update`).

use std::time::{Duration, Instant};

use peercompute_core::state::{
    path::{decode_ops, Op},
    SharedDoc,
};
use yrs::{Any, Doc, Map, Options, Transact};

const RUNS: usize = 10;

/// Runs `step` on the workload's `batches` [`RUNS`] times and prints the median.
pub(crate) fn run(step: &str, batches: &[String]) {
    let source = SharedDoc::new();
    let updates: Vec<Vec<u8>> = batches
        .iter()
        .filter_map(|b| {
            source
                .apply_ops(&decode_ops(b).expect("ops"))
                .expect("apply")
                .update
        })
        .collect();
    let step_fn = match step {
        "local" => local,
        "decode" => decode,
        "floor" => floor,
        "remote" => remote,
        other => panic!("unknown step {other:?}: local, decode, floor or remote"),
    };
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let kept = std::hint::black_box(step_fn(batches, &updates));
            let elapsed = t.elapsed();
            // Dropping a 100k-entry document takes ~10 ms: not part of the step.
            drop(kept);
            elapsed
        })
        .collect();
    times.sort();
    println!(
        "{step}: median {:?}, fastest {:?} per 100k ops ({RUNS} runs)",
        times[RUNS / 2],
        times[0]
    );
}

/// What a step made, kept alive until its time is taken.
type Kept = Box<dyn std::any::Any>;

fn local(batches: &[String], _: &[Vec<u8>]) -> Kept {
    let doc = SharedDoc::new();
    let changes: usize = batches
        .iter()
        .map(|b| {
            let ops = decode_ops(b).expect("ops");
            doc.apply_ops(&ops).expect("apply").changes.len()
        })
        .sum();
    Box::new((doc, changes))
}

fn decode(batches: &[String], _: &[Vec<u8>]) -> Kept {
    let ops: Vec<_> = batches
        .iter()
        .map(|b| decode_ops(b).expect("ops"))
        .collect();
    Box::new(ops)
}

fn floor(batches: &[String], _: &[Vec<u8>]) -> Kept {
    let doc = Doc::with_options(Options {
        skip_gc: true,
        ..Options::default()
    });
    let root = doc.get_or_insert_map("root");
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sink = bytes.clone();
    doc.observe_update_v1("floor", move |_, e: &yrs::UpdateEvent| {
        sink.fetch_add(e.update.len(), std::sync::atomic::Ordering::Relaxed);
    })
    .expect("no transaction open");
    for b in batches {
        let ops = decode_ops(b).expect("ops");
        let mut txn = doc.transact_mut();
        txn.skip_type_events();
        for op in &ops {
            if let Op::Set { key, value } = op {
                let value = Any::from(value.as_f64().unwrap_or_default());
                root.insert(&mut txn, key.clone(), value);
            }
        }
    }
    Box::new((doc, bytes.load(std::sync::atomic::Ordering::Relaxed)))
}

fn remote(_: &[String], updates: &[Vec<u8>]) -> Kept {
    let replica = SharedDoc::new();
    let changes: usize = updates
        .iter()
        .map(|u| replica.apply_update(u).expect("remote apply").changes.len())
        .sum();
    Box::new((replica, changes))
}
