//! Profiles decode + apply of the state benchmark workload (`perf record` target): every
//! step once, with bare yrs's floors. `-- steady STEP` runs one step ten times instead
//! (see `steady.rs`).
use std::time::Instant;

use peercompute_core::state::{path::decode_ops, SharedDoc};
use serde_json::{json, Value};

mod steady;

/// As `bench-native` and the relay allocate (see relay-server/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let per = 1000;
    let batches: Vec<String> = (0..100)
        .map(|b| {
            let ops: Vec<Value> = (b * per..(b + 1) * per)
                .map(|i| json!({"set": [format!("k{i}")], "value": i}))
                .collect();
            Value::from(ops).to_string()
        })
        .collect();
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("steady") {
        steady::run(&args.next().unwrap_or_else(|| "local".into()), &batches);
        return;
    }
    let t = Instant::now();
    let decoded: Vec<_> = batches
        .iter()
        .map(|b| decode_ops(b).expect("ops"))
        .collect();
    let decode = t.elapsed();
    let doc = SharedDoc::new();
    let t = Instant::now();
    let mut updates = Vec::new();
    for ops in &decoded {
        updates.extend(doc.apply_ops(ops).expect("apply").update);
    }
    let apply = t.elapsed();
    let replica = SharedDoc::new();
    let t = Instant::now();
    for u in &updates {
        replica.apply_update(u).expect("remote apply");
    }
    let remote = t.elapsed();
    let state = doc.encode_state();
    let t = Instant::now();
    let newcomer = SharedDoc::new();
    let json = newcomer
        .apply_update(&state)
        .expect("newcomer")
        .changes_json();
    let sync = t.elapsed();
    println!(
        "decode {decode:?} apply {apply:?} remote {remote:?} newcomer apply+json {sync:?} ({} KiB)",
        json.len() / 1024
    );
    sync_frame(state.clone());
    yrs_floor();
    yrs_remote_floor(&updates);
    yrs_newcomer_floor(&state);
}

/// The whole document as a newcomer's sync answer: the frame deflated for the wire, and
/// inflated and decoded (its update layout-checked) on the other side.
fn sync_frame(state: Vec<u8>) {
    use peercompute_core::state::sync_protocol::{DocMessages, SyncFrame, SYNC_PROTOCOL};
    let frame = SyncFrame {
        entries: vec![DocMessages {
            doc: "bench".into(),
            messages: vec![yrs::sync::SyncMessage::SyncStep2(state)],
        }],
    };
    let t = Instant::now();
    let plain = frame.encode();
    let encode = t.elapsed();
    let t = Instant::now();
    let wire = frame.encode_for(&SYNC_PROTOCOL);
    let deflate = t.elapsed();
    let t = Instant::now();
    SyncFrame::decode(&plain).expect("plain frame");
    let decode_plain = t.elapsed();
    let t = Instant::now();
    SyncFrame::decode(&wire).expect("deflated frame");
    let decode_wire = t.elapsed();
    println!(
        "sync answer: {} KiB plain (encode {encode:?}, decode {decode_plain:?}), {} KiB deflated \
         (encode {deflate:?}, decode {decode_wire:?})",
        plain.len() / 1024,
        wire.len() / 1024
    );
}

/// The newcomer's floor: the whole document's update decoded and applied by bare yrs (GC off,
/// as our documents keep history), then its JSON.
fn yrs_newcomer_floor(state: &[u8]) {
    use yrs::{types::ToJson as _, updates::decoder::Decode, Doc, Options, Transact, Update};
    let t = Instant::now();
    let doc = Doc::with_options(Options {
        skip_gc: true,
        ..Options::default()
    });
    let root = doc.get_or_insert_map("root");
    let update = Update::decode_v1(state).expect("decode");
    let decode = t.elapsed();
    doc.transact_mut().apply_update(update).expect("apply");
    let apply = t.elapsed() - decode;
    let mut json = String::new();
    root.to_json(&doc.transact()).to_json(&mut json);
    println!(
        "yrs newcomer floor: decode {decode:?} apply {apply:?} json {:?} ({} KiB)",
        t.elapsed() - decode - apply,
        json.len() / 1024
    );
}

/// The floor: the same inserts straight into yrs, with an update observer.
fn yrs_floor() {
    use yrs::{Any, Doc, Map, Transact};
    let doc = Doc::new();
    let root = doc.get_or_insert_map("root");
    let _sub = doc.observe_update_v1("floor", |_, e: &yrs::UpdateEvent| {
        std::hint::black_box(e.update.len());
    });
    let t = Instant::now();
    for b in 0..100 {
        let mut txn = doc.transact_mut();
        for i in b * 1000..(b + 1) * 1000 {
            root.insert(&mut txn, format!("k{i}"), Any::from(i as f64));
        }
    }
    println!("yrs floor {:?}", t.elapsed());
}

/// The remote floor: the same updates applied by bare yrs (GC off) to a replica whose observer
/// reads each changed key's value, as the `yjs` baseline's does.
fn yrs_remote_floor(updates: &[Vec<u8>]) {
    use yrs::{
        types::map::MapEvent, updates::decoder::Decode, Doc, Map, Observable, Options, Transact,
        Update,
    };
    let doc = Doc::with_options(Options {
        skip_gc: true,
        ..Options::default()
    });
    let root = doc.get_or_insert_map("root");
    let reported = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = reported.clone();
    let observed = root.clone();
    root.observe("floor", move |txn, e: &MapEvent| {
        for key in e.keys(txn).keys() {
            std::hint::black_box(observed.get(txn, key));
            r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let t = Instant::now();
    for u in updates {
        let update = Update::decode_v1(u).expect("decode");
        doc.transact_mut().apply_update(update).expect("apply");
    }
    println!(
        "yrs remote floor {:?} ({} keys reported)",
        t.elapsed(),
        reported.load(std::sync::atomic::Ordering::Relaxed)
    );
}
