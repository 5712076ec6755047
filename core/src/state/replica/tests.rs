//! Replicas converge: unit cases, and a seeded simulation with random edits, reordered
//! broadcasts, partitions and heals.

use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::{json, Value};

use super::*;
use crate::state::path::Op;

fn set(path: &[&str], value: Value) -> Op {
    Op::set(
        &path.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        value,
    )
}

/// The update of one write to document `doc` on a fresh replica.
fn update_setting(doc: &str, key: &str, value: Value) -> Vec<u8> {
    Replica::new(1)
        .create(doc)
        .unwrap()
        .apply_ops(&[set(&[key], value)])
        .unwrap()
        .update
        .unwrap()
}

/// Runs the full y-sync exchange `a` → `b` (request, response, pushes), asking again for
/// what a full response left out, as the node does; returns how many requests it took.
fn sync(a: &mut Replica, b: &mut Replica, adopt: bool) -> usize {
    let mut names: Vec<String> = a.names().map(String::from).collect();
    let mut requests = 0;
    while !names.is_empty() {
        requests += 1;
        let request = a.sync_request(names.iter().map(String::as_str));
        let request = SyncFrame::decode(&request.encode()).unwrap();
        let (response, _) = b.handle_request(request, &|_| adopt);
        let response = SyncFrame::decode(&response.encode()).unwrap();
        let (pushes, outcome) = a.handle_response(response);
        assert_eq!(outcome.rejected, 0);
        for push in pushes {
            let (reply, outcome) = b.handle_request(push, &|_| adopt);
            assert!(reply.entries.is_empty());
            assert_eq!(outcome.rejected, 0);
        }
        names = outcome.ask_again;
    }
    requests
}

#[test]
fn one_exchange_syncs_both_ways() {
    let mut a = Replica::new(8);
    let mut b = Replica::new(8);
    a.create("w")
        .unwrap()
        .apply_ops(&[set(&["from"], json!("a"))])
        .unwrap();
    b.create("w")
        .unwrap()
        .apply_ops(&[set(&["by"], json!("b"))])
        .unwrap();
    b.create("only-b").unwrap();
    sync(&mut a, &mut b, false);
    assert_eq!(
        a.get("w").unwrap().to_json(),
        json!({"from": "a", "by": "b"})
    );
    assert_eq!(b.get("w").unwrap().to_json(), a.get("w").unwrap().to_json());
    assert!(
        a.get("only-b").is_none(),
        "nothing is created by a remote message"
    );
}

/// The documents `names` holding `blob` at `writer`, empty at `newcomer`.
fn fill_for_newcomer(writer: &mut Replica, newcomer: &mut Replica, names: &[String], blob: &str) {
    for name in names {
        writer
            .create(name)
            .unwrap()
            .apply_ops(&[set(&["blob"], json!(blob))])
            .unwrap();
        newcomer.create(name).unwrap();
    }
}

/// Documents whose answers together pass a frame's bound are answered over several requests,
/// every frame within the bound; pushes are split the same way.
#[test]
fn answers_larger_than_a_frame_go_over_several_requests() {
    const BUDGET: usize = 64 * 1024;
    let mut writer = Replica::with_frame_budget(16, BUDGET);
    let mut newcomer = Replica::with_frame_budget(16, BUDGET);
    let names: Vec<String> = (0..6).map(|i| format!("doc-{i}")).collect();
    let blob = "x".repeat(24 * 1024);
    fill_for_newcomer(&mut writer, &mut newcomer, &names, &blob);
    let request = newcomer.sync_request(names.iter().map(String::as_str));
    let (response, _) = writer.handle_request(request, &|_| false);
    assert!(response.encode().len() <= BUDGET);
    let answered = response.entries.iter().filter(|e| !e.messages.is_empty());
    assert_eq!(answered.count(), 2, "24 KiB answers, 64 KiB frames");
    let requests = sync(&mut newcomer, &mut writer, false);
    assert_eq!(requests, 3);
    for name in &names {
        assert_eq!(
            newcomer.get(name).unwrap().to_json(),
            json!({ "blob": blob })
        );
    }
    // The other way: the newcomer's own writes reach the writer as pushes of several frames.
    for name in &names {
        newcomer
            .get(name)
            .unwrap()
            .apply_ops(&[set(&["more"], json!(blob))])
            .unwrap();
    }
    // Asked by the writer, the newcomer answers two of them and leaves four for later.
    let request = writer.sync_request(names.iter().map(String::as_str));
    let (response, _) = newcomer.handle_request(request, &|_| false);
    let (pushes, outcome) = writer.handle_response(response);
    assert!(pushes.is_empty(), "the writer lacks nothing of theirs");
    assert_eq!(outcome.ask_again.len(), 4);
    // Asked by the newcomer, the writer's small answers all fit, and the newcomer pushes the
    // four documents the writer still lacks: 24 KiB each, in two frames.
    let request = newcomer.sync_request(names.iter().map(String::as_str));
    let (response, _) = writer.handle_request(request, &|_| false);
    let (pushes, outcome) = newcomer.handle_response(response);
    assert!(outcome.ask_again.is_empty());
    assert_eq!(pushes.len(), 2);
    for push in pushes {
        assert!(push.encode().len() <= BUDGET);
        let (reply, outcome) = writer.handle_request(push, &|_| false);
        assert!(reply.entries.is_empty());
        assert_eq!(outcome.applied.len(), 2);
    }
    for name in &names {
        assert_eq!(
            writer.get(name).unwrap().to_json(),
            json!({ "blob": blob, "more": blob })
        );
    }
}

/// A response that answers nothing and asks to be asked again is not asked again: two nodes
/// cannot be kept asking each other.
#[test]
fn a_response_that_answers_nothing_is_not_asked_again() {
    let mut a = Replica::new(4);
    a.create("w").unwrap();
    let stalling = SyncFrame {
        entries: vec![DocMessages::ask_again("w".into())],
    };
    let (pushes, outcome) = a.handle_response(stalling);
    assert!(pushes.is_empty());
    assert!(outcome.ask_again.is_empty());
}

/// A replica with a byte budget for all its documents (a pinning relay's disk) takes no more
/// updates or new documents once it is spent.
#[test]
fn a_budget_for_all_documents_bounds_what_peers_can_store() {
    let blob = "x".repeat(3 * 1024);
    let big = update_setting("a", "k", json!(blob));
    let more = update_setting("b", "k", json!(blob));
    let small = update_setting("c", "k", json!("y".repeat(1000)));
    // Room for `big` and `small`, not for `more` as well.
    let mut relay = Replica::with_total_budget(8, big.len() + small.len());
    let outcome = relay.apply_broadcast("a", &big, true);
    assert_eq!(outcome.applied.len(), 1);
    relay.state_mut("a").unwrap().note_appended(big.len());
    // Refused, not rejected: the sender did nothing wrong.
    let outcome = relay.apply_broadcast("b", &more, true);
    assert_eq!((outcome.refused, outcome.rejected), (1, 0));
    assert_eq!(relay.apply_broadcast("c", &small, true).applied.len(), 1);
    relay.state_mut("c").unwrap().note_appended(small.len());
    // Spent: no new document is adopted.
    assert_eq!(relay.stored_total(), big.len() + small.len());
    assert_eq!(
        relay.create("d").unwrap_err().code,
        ErrorCode::StateDocTooLarge
    );
}

/// A large document is compacted once its records hold half as many bytes as its last
/// compacted state (not every 200 small writes), and in any case past 4000 records.
#[test]
fn compaction_waits_for_the_records_to_matter() {
    let mut state = DocState::default();
    for _ in 0..COMPACT_AFTER_RECORDS {
        assert!(!state.note_appended(10));
    }
    assert!(
        state.note_appended(10),
        "a small document: after 200 records"
    );
    state.records = 1;
    state.stored_bytes = 1_000_000;
    state.compacted_bytes = 1_000_000;
    let mut due_at = None;
    for i in 2..=COMPACT_ALWAYS_AFTER_RECORDS + 1 {
        if state.note_appended(100) {
            due_at = Some(i);
            break;
        }
    }
    assert_eq!(
        due_at,
        Some(COMPACT_ALWAYS_AFTER_RECORDS + 1),
        "small writes: the record cap"
    );
    state.records = 1;
    state.stored_bytes = 1_000_000;
    let due = (2..).find(|_| state.note_appended(10_000)).unwrap();
    assert_eq!(
        due,
        COMPACT_AFTER_RECORDS + 1,
        "half its size appended by then"
    );
    // Never while updates wait for a missing one: the compacted state would drop them.
    let doc = SharedDoc::new();
    doc.apply_ops(&[set(&["k"], json!(1))]).unwrap();
    let later = doc
        .apply_ops(&[set(&["k"], json!(2))])
        .unwrap()
        .update
        .unwrap();
    let mut waiting = DocState::default();
    waiting.doc.apply_update(&later).unwrap();
    assert!(waiting.doc.has_pending());
    for _ in 0..=COMPACT_ALWAYS_AFTER_RECORDS {
        assert!(!waiting.note_appended(10_000));
    }
}

#[test]
fn a_pinning_peer_adopts_documents() {
    let mut browser = Replica::new(8);
    let mut relay = Replica::new(8);
    browser
        .create("w")
        .unwrap()
        .apply_ops(&[set(&["k"], json!(1))])
        .unwrap();
    sync(&mut browser, &mut relay, true);
    assert_eq!(relay.get("w").unwrap().to_json(), json!({"k": 1}));
    // Documents only named (asked about, nothing sent) take no slot.
    let names: Vec<String> = (0..100).map(|i| format!("empty-{i}")).collect();
    let mut asker = Replica::new(100);
    for name in &names {
        asker.create(name).unwrap();
    }
    let request = asker.sync_request(names.iter().map(String::as_str));
    let request = SyncFrame::decode(&request.encode()).unwrap();
    let (response, _) = relay.handle_request(request, &|_| true);
    assert_eq!(relay.names().count(), 1, "nothing adopted for a name alone");
    assert_eq!(
        response.entries.len(),
        100,
        "each answered as an empty document"
    );
    // A newcomer gets it from the relay alone.
    let mut newcomer = Replica::new(8);
    newcomer.create("w").unwrap();
    sync(&mut newcomer, &mut relay, false);
    assert_eq!(newcomer.get("w").unwrap().to_json(), json!({"k": 1}));
}

#[test]
fn bounded_document_count_and_corrupt_records() {
    let mut r = Replica::new(1);
    r.create("a").unwrap();
    assert_eq!(r.create("b").unwrap_err().code, ErrorCode::StateTooManyDocs);
    let update = update_setting("a", "k", json!(2));
    let mut fresh = Replica::new(4);
    let garbage = vec![0xffu8; 10];
    let report = fresh
        .load("a", [garbage.as_slice(), update.as_slice(), &[][..]])
        .unwrap();
    assert_eq!(
        report,
        LoadReport {
            applied: 1,
            corrupt: 2
        }
    );
    assert_eq!(fresh.get("a").unwrap().to_json(), json!({"k": 2}));
}

#[test]
fn a_document_at_its_size_bound_takes_no_more_from_peers() {
    let update = update_setting("w", "k", json!(1));
    let mut full = Replica::new(1);
    full.create("w").unwrap();
    full.state_mut("w").unwrap().stored_bytes = MAX_DOC_BYTES - update.len() + 1;
    let outcome = full.apply_broadcast("w", &update, false);
    assert_eq!(
        (outcome.rejected, outcome.refused, outcome.applied.len()),
        (0, 1, 0),
        "refused here, but not malformed: the sender is not at fault"
    );
    assert_eq!(
        full.get("w").unwrap().to_json(),
        json!({}),
        "nothing applied"
    );
    assert_eq!(
        full.state("w")
            .unwrap()
            .check_room("w", update.len())
            .unwrap_err()
            .code,
        ErrorCode::StateDocTooLarge
    );
    // One byte more room, and it fits.
    full.state_mut("w").unwrap().stored_bytes -= 1;
    let outcome = full.apply_broadcast("w", &update, false);
    assert_eq!((outcome.rejected, outcome.applied.len()), (0, 1));
    assert_eq!(full.get("w").unwrap().to_json(), json!({"k": 1}));
}

/// A document whose stored records could not be read refuses tabs' writes, but still takes
/// what peers send (it stays in memory; the node persists none of it).
#[test]
fn unreadable_storage_refuses_writes_but_takes_peers_updates() {
    let update = update_setting("w", "k", json!(1));
    let mut r = Replica::new(1);
    r.create("w").unwrap();
    r.state_mut("w").unwrap().storage_unreadable = true;
    assert_eq!(
        r.state("w").unwrap().check_writable("w").unwrap_err().code,
        ErrorCode::StatePersistFailed
    );
    let outcome = r.apply_broadcast("w", &update, false);
    assert_eq!(
        (outcome.rejected, outcome.refused, outcome.applied.len()),
        (0, 0, 1)
    );
    assert_eq!(r.get("w").unwrap().to_json(), json!({"k": 1}));
}

/// A compacted record holds the whole document, which may pass the bound of one update from
/// a peer: loading it back must not count it as corrupt (that would compact it away).
#[test]
fn a_compacted_record_larger_than_one_update_loads() {
    let mut writer = Replica::new(1);
    let w = writer.create("w").unwrap();
    let big = "x".repeat(crate::limits::MAX_SYNC_UPDATE_BYTES + 1);
    w.apply_ops(&[set(&["k"], json!(big))]).unwrap();
    let record = w.encode_state();
    assert!(record.len() > crate::limits::MAX_SYNC_UPDATE_BYTES);
    let mut r = Replica::new(1);
    let report = r.load("w", [record.as_slice()]).unwrap();
    assert_eq!((report.applied, report.corrupt), (1, 0));
    assert_eq!(
        r.get("w").unwrap().to_json()["k"].as_str().map(str::len),
        Some(big.len())
    );
}

/// An update that integrates in part and leaves the rest pending still counts against the
/// pending bound: a peer cannot grow what waits by pairing each big orphan with a small
/// change that applies.
#[test]
fn updates_that_integrate_in_part_count_what_they_leave_pending() {
    let mut writer = Replica::new(1);
    let w = writer.create("w").unwrap();
    let big = |i: usize| {
        json!(i
            .to_string()
            .repeat(crate::limits::MAX_PENDING_UPDATE_BYTES / 3))
    };
    let write = |value: Value| w.apply_ops(&[set(&["k"], value)]).unwrap().update.unwrap();
    let _first = write(json!(1)); // never sent: everything after it waits
    let mut r = Replica::new(1);
    r.create("w").unwrap();
    let mut refused = 0;
    for i in 0..4 {
        let orphan = write(big(i));
        let fine = update_setting("w", &format!("c{i}"), json!(i));
        let pair = yrs::merge_updates_v1([orphan.as_slice(), fine.as_slice()]).unwrap();
        let outcome = r.apply_broadcast("w", &pair, false);
        assert_eq!(outcome.applied.len(), 1, "the small change applies");
        refused += outcome.refused;
        let pending = r.state("w").unwrap().pending_bytes;
        assert!(
            pending <= crate::limits::MAX_PENDING_UPDATE_BYTES,
            "{pending}"
        );
    }
    assert!(refused >= 1, "past the bound, what waits is dropped");
    assert_eq!(r.get("w").unwrap().to_json()["c3"], json!(3));
}

/// Updates waiting for history the replica lacks are held by yrs; how much is bounded, and
/// the bound frees up once the history arrives.
#[test]
fn updates_waiting_for_missing_history_are_bounded() {
    let mut writer = Replica::new(1);
    let w = writer.create("w").unwrap();
    let big = |c: &str| json!(c.repeat(crate::limits::MAX_PENDING_UPDATE_BYTES / 2 + 1));
    // Each write replaces the one before: its item names the previous one as its origin.
    let write = |value: Value| w.apply_ops(&[set(&["k"], value)]).unwrap().update.unwrap();
    let first = write(json!(1));
    let (second, third) = (write(big("x")), write(big("y")));
    let mut r = Replica::new(1);
    r.create("w").unwrap();
    let outcome = r.apply_broadcast("w", &second, false);
    assert_eq!((outcome.rejected, outcome.refused), (0, 0));
    assert!(
        r.get("w").unwrap().has_pending(),
        "held, waiting for `first`"
    );
    assert!(r.state("w").unwrap().pending_bytes >= second.len());
    let outcome = r.apply_broadcast("w", &third, false);
    assert_eq!(
        (outcome.rejected, outcome.refused),
        (0, 1),
        "past the bound: what waits is dropped"
    );
    assert!(!r.get("w").unwrap().has_pending());
    assert_eq!(r.state("w").unwrap().pending_bytes, 0);
    // The history arrives, then (as a sync would bring them) the dropped updates again.
    for update in [&first, &second, &third] {
        assert_eq!(r.apply_broadcast("w", update, false).applied.len(), 1);
    }
    assert!(!r.get("w").unwrap().has_pending());
    assert_eq!(r.get("w").unwrap().to_json(), json!({ "k": big("y") }));
}

/// An update yrs refuses partway: the part it integrated is persisted and shown like any
/// change (the sender still counts as invalid), and a stored record like it is counted corrupt
/// so the document is compacted.
#[test]
fn an_update_refused_partway_keeps_what_went_in() {
    let bytes = crate::state::document::update_refused_partway();
    let mut r = Replica::new(4);
    r.create("w").unwrap();
    let outcome = r.apply_broadcast("w", &bytes, false);
    assert_eq!(outcome.rejected, 1);
    let [(doc, applied)] = &outcome.applied[..] else {
        panic!("{:?}", outcome.applied)
    };
    assert_eq!(doc, "w");
    assert!(applied.refused.is_none(), "taken over by the outcome");
    assert!(applied.has_changes());
    // What is persisted restores the same document.
    let mut reloaded = Replica::new(4);
    let report = reloaded
        .load("w", [applied.update.as_deref().unwrap()])
        .unwrap();
    assert_eq!(
        report,
        LoadReport {
            applied: 1,
            corrupt: 0
        }
    );
    assert_eq!(reloaded.get("w").unwrap().to_json(), json!({"a": null}));
    // The raw bytes as a stored record: applied in part, counted corrupt.
    let mut from_disk = Replica::new(4);
    let report = from_disk.load("w", [&bytes[..]]).unwrap();
    assert_eq!(
        report,
        LoadReport {
            applied: 0,
            corrupt: 1
        }
    );
    assert_eq!(from_disk.get("w").unwrap().to_json(), json!({"a": null}));
}

/// An update that is not a valid Yjs layout is refused on both ways in: a broadcast is
/// checked when applied, a sync frame when decoded (its updates are not walked again).
#[test]
fn malformed_updates_are_refused_as_broadcasts_and_in_frames() {
    // One client, one struct, claiming a clock range past 32 bits.
    let hostile = [
        1, 1, 7, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x28, 1, 1, b'r', 1, b'k', 0x7d, 1, 0,
    ];
    let mut r = Replica::new(4);
    r.create("w").unwrap();
    for (doc, adopt) in [("w", false), ("not held", false), ("adopted", true)] {
        let outcome = r.apply_broadcast(doc, &hostile, adopt);
        assert_eq!((outcome.rejected, outcome.applied.len()), (1, 0), "{doc}");
    }
    assert!(
        r.get("adopted").is_none(),
        "a malformed update adopts nothing"
    );
    let frame = SyncFrame {
        entries: vec![DocMessages {
            doc: "w".into(),
            messages: vec![SyncMessage::Update(hostile.to_vec())],
        }],
    };
    assert_eq!(
        SyncFrame::decode(&frame.encode()).unwrap_err().code,
        ErrorCode::StateInvalidUpdate
    );
    assert_eq!(r.get("w").unwrap().to_json(), json!({}));
}

/// Many replicas, random edits, broadcasts delivered late and out of order, random
/// partitions and heals: after the last heal every replica holds the same document.
#[test]
fn seeded_replicas_converge_after_partitions() {
    let seeds: u64 = std::env::var("CONVERGENCE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for seed in 0..seeds {
        let result = std::panic::catch_unwind(|| converge(seed));
        if result.is_err() {
            panic!("convergence failed with seed {seed} (rerun: CONVERGENCE_SEED={seed})");
        }
    }
    if let Some(seed) = std::env::var("CONVERGENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        converge(seed);
    }
}

fn converge(seed: u64) {
    const REPLICAS: usize = 5;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut replicas: Vec<Replica> = (0..REPLICAS).map(|_| Replica::new(4)).collect();
    for r in &mut replicas {
        r.create("doc").unwrap();
    }
    // Which side of the partition each replica is on.
    let mut side = [0u8; REPLICAS];
    // Broadcasts in flight: (to, update).
    let mut in_flight: Vec<(usize, Vec<u8>)> = Vec::new();
    let keys = ["a", "b", "c"];
    for _step in 0..150 {
        match rng.gen_range(0..10) {
            0..=5 => {
                let who = rng.gen_range(0..REPLICAS);
                let depth = rng.gen_range(1..=3);
                let path: Vec<&str> = (0..depth)
                    .map(|_| *keys.choose(&mut rng).unwrap())
                    .collect();
                let op = if rng.gen_bool(0.2) {
                    Op::delete(&path.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                } else if rng.gen_bool(0.3) {
                    set(&path, json!({ "n": rng.gen_range(0..100) }))
                } else {
                    set(&path, json!(rng.gen_range(0..1000)))
                };
                let doc = replicas[who].get("doc").unwrap();
                // Writes through a leaf are refused and change nothing, as for a tab.
                if let Ok(applied) = doc.apply_ops(&[op]) {
                    if let Some(update) = applied.update {
                        for to in 0..REPLICAS {
                            if to != who && side[to] == side[who] {
                                in_flight.push((to, update.clone()));
                            }
                        }
                    }
                }
            }
            6..=7 => {
                // Deliver some broadcasts, in random order; some are lost.
                in_flight.shuffle(&mut rng);
                let n = rng.gen_range(0..=in_flight.len());
                for (to, update) in in_flight.drain(..n) {
                    if rng.gen_bool(0.9) {
                        let outcome = replicas[to].apply_broadcast("doc", &update, false);
                        assert_eq!(outcome.rejected, 0);
                    }
                }
            }
            8 => {
                // A new partition.
                for s in &mut side {
                    *s = rng.gen_range(0..2);
                }
            }
            _ => {
                // A heal between two replicas of the same side: the reconnect sync.
                let a = rng.gen_range(0..REPLICAS);
                let b = rng.gen_range(0..REPLICAS);
                if a != b && side[a] == side[b] {
                    let (x, y) = pair(&mut replicas, a, b);
                    sync(x, y, false);
                }
            }
        }
    }
    // Heal everything: a ring of syncs twice around reaches every replica.
    for _ in 0..2 {
        for a in 0..REPLICAS {
            let b = (a + 1) % REPLICAS;
            let (x, y) = pair(&mut replicas, a, b);
            sync(x, y, false);
        }
    }
    let expected = replicas[0].get("doc").unwrap().to_json();
    for (i, r) in replicas.iter().enumerate() {
        let doc = r.get("doc").unwrap();
        assert_eq!(
            doc.to_json(),
            expected,
            "replica {i} diverged (seed {seed})"
        );
        assert!(
            !doc.has_pending(),
            "replica {i} has unapplied updates (seed {seed})"
        );
    }
}

fn pair(v: &mut [Replica], a: usize, b: usize) -> (&mut Replica, &mut Replica) {
    if a < b {
        let (l, r) = v.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

/// A limit on the answer's bytes (the peer's share of the response budget): what passes it is
/// left for another request, and with nothing left nothing is diffed; updates still apply.
#[test]
fn a_request_is_answered_within_the_peers_limit() {
    let mut writer = Replica::new(16);
    let mut newcomer = Replica::new(16);
    let blob = "x".repeat(24 * 1024);
    let names: Vec<String> = (0..3).map(|i| format!("doc-{i}")).collect();
    fill_for_newcomer(&mut writer, &mut newcomer, &names, &blob);
    let answered = |response: &SyncFrame| {
        response
            .entries
            .iter()
            .filter(|e| !e.messages.is_empty())
            .count()
    };
    let request = newcomer.sync_request(names.iter().map(String::as_str));
    let (response, _) = writer.handle_request_within(request.clone(), &|_| false, 50 * 1024);
    assert_eq!(answered(&response), 2, "24 KiB answers within 50 KiB");
    assert_eq!(response.entries.len(), 3, "the third is asked again");
    let (response, _) = writer.handle_request_within(request.clone(), &|_| false, 10 * 1024);
    assert_eq!(answered(&response), 0, "even the first must fit a limit");
    assert_eq!(response.entries.len(), 3);
    // With nothing left, the request's own updates still apply.
    newcomer
        .get("doc-0")
        .unwrap()
        .apply_ops(&[set(&["more"], json!(1))])
        .unwrap();
    let push = SyncFrame {
        entries: vec![DocMessages {
            doc: "doc-0".into(),
            messages: vec![SyncMessage::Update(
                newcomer.get("doc-0").unwrap().encode_state(),
            )],
        }],
    };
    let (_, outcome) = writer.handle_request_within(push, &|_| false, 0);
    assert_eq!(outcome.applied.len(), 1);
    assert_eq!(
        writer.get("doc-0").unwrap().to_json(),
        json!({ "blob": blob, "more": 1 })
    );
}
