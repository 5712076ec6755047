use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashSet},
};

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::*;

fn worker(id: &str, score: f64, slots: u32) -> Worker {
    Worker {
        id: id.into(),
        score,
        load: 0.0,
        slots,
    }
}

fn config(chunks: u32, redundancy: u8) -> TaskConfig {
    TaskConfig {
        chunks,
        redundancy,
        chunk_timeout: Duration::from_secs(5),
        max_failures_per_chunk: 3,
        work_stealing: true,
    }
}

fn runs(actions: &[Action]) -> Vec<(ChunkId, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Run { chunk, worker } => Some((*chunk, worker.clone())),
            Action::Abort { .. } => None,
        })
        .collect()
}

fn answer(chunk: ChunkId) -> Vec<u8> {
    (chunk * 7).to_le_bytes().to_vec()
}

#[test]
fn alone_the_local_node_runs_everything() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(config(3, 1), vec![worker("local", 1.0, 1)]).expect("valid");
    let mut pending = runs(&s.next_actions(t0));
    let mut seen = Vec::new();
    while let Some((chunk, w)) = pending.pop() {
        assert_eq!(w, "local");
        seen.push(chunk);
        pending.extend(runs(&s.on_result(&w, chunk, answer(chunk), t0)));
    }
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2]);
    let out = s.outcome().expect("done").expect("ok");
    assert_eq!(out, vec![answer(0).as_slice(), &answer(1), &answer(2)]);
    assert_eq!(
        s.progress(),
        Progress {
            done: 3,
            total: 3,
            peers: 1
        }
    );
}

#[test]
fn heavier_workers_are_served_first_and_slots_bound_concurrency() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(
        config(10, 1),
        vec![worker("slow", 1.0, 1), worker("fast", 4.0, 3)],
    )
    .expect("valid");
    let r = runs(&s.next_actions(t0));
    assert_eq!(
        r,
        vec![
            (0, "fast".to_string()),
            (1, "slow".to_string()),
            (2, "fast".to_string()),
            (3, "fast".to_string())
        ]
    );
    // Loaded workers weigh less.
    s.add_worker(Worker {
        load: 0.9,
        ..worker("fast", 4.0, 3)
    });
    assert!(s.workers["fast"].weight() < s.workers["slow"].weight());
}

#[test]
fn a_timed_out_chunk_is_retried_elsewhere_and_a_late_answer_is_ignored() {
    let t0 = Instant::now();
    let mut cfg = config(1, 1);
    cfg.work_stealing = false;
    let mut s = Scheduler::new(cfg, vec![worker("a", 2.0, 1), worker("b", 1.0, 1)]).expect("valid");
    assert_eq!(runs(&s.next_actions(t0)), vec![(0, "a".to_string())]);
    let later = t0 + Duration::from_secs(6);
    let actions = s.on_tick(later);
    assert!(actions.contains(&Action::Abort {
        chunk: 0,
        worker: "a".into()
    }));
    assert_eq!(runs(&actions), vec![(0, "b".to_string())]);
    // a answers after all: it was not asked any more, so it does not count.
    assert!(s.on_result("a", 0, vec![9], later).is_empty());
    s.on_result("b", 0, answer(0), later);
    assert_eq!(s.outcome(), Some(Ok(vec![answer(0).as_slice()])));
}

#[test]
fn a_departed_worker_s_chunks_move_on_without_counting_as_failures() {
    let t0 = Instant::now();
    let mut cfg = config(2, 1);
    cfg.max_failures_per_chunk = 0;
    cfg.work_stealing = false;
    let mut s = Scheduler::new(cfg, vec![worker("a", 2.0, 2), worker("b", 1.0, 2)]).expect("valid");
    assert_eq!(
        runs(&s.next_actions(t0)),
        vec![(0, "a".to_string()), (1, "b".to_string())]
    );
    assert_eq!(runs(&s.remove_worker("a", t0)), vec![(0, "b".to_string())]);
    assert!(s.outcome().is_none());
    let r = runs(&s.remove_worker("b", t0));
    assert!(r.is_empty());
    assert_eq!(s.outcome(), Some(Err(TaskError::NoWorkers)));
}

#[test]
fn too_many_failures_fail_the_task_and_abort_the_rest() {
    let t0 = Instant::now();
    let mut cfg = config(2, 1);
    cfg.max_failures_per_chunk = 1;
    cfg.work_stealing = false;
    let mut s = Scheduler::new(cfg, vec![worker("a", 1.0, 2)]).expect("valid");
    s.next_actions(t0);
    // The only worker may retry a chunk it failed.
    assert_eq!(runs(&s.on_error("a", 0, t0)), vec![(0, "a".to_string())]);
    let actions = s.on_error("a", 0, t0);
    assert!(actions.contains(&Action::Abort {
        chunk: 1,
        worker: "a".into()
    }));
    assert_eq!(
        s.outcome(),
        Some(Err(TaskError::ChunkFailed {
            chunk: 0,
            failures: 2
        }))
    );
}

#[test]
fn redundancy_catches_and_excludes_a_liar() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(
        config(1, 2),
        vec![
            worker("honest", 1.0, 1),
            worker("liar", 1.0, 1),
            worker("third", 1.0, 1),
        ],
    )
    .expect("valid");
    let r = runs(&s.next_actions(t0));
    assert_eq!(r.len(), 3, "two replicas plus one stolen: {r:?}");
    s.on_result("honest", 0, answer(0), t0);
    assert!(s.outcome().is_none(), "one result is not enough at k = 2");
    s.on_result("liar", 0, vec![6, 6, 6, 6], t0);
    assert!(s.outcome().is_none(), "1 vs 1: no majority yet");
    s.on_result("third", 0, answer(0), t0);
    assert_eq!(s.outcome(), Some(Ok(vec![answer(0).as_slice()])));
    assert_eq!(
        s.excluded().get("liar"),
        Some(&Exclusion::WrongResult { chunk: 0 })
    );
    assert_eq!(s.progress().peers, 2);
}

#[test]
fn disagreement_without_majority_is_unverifiable() {
    let t0 = Instant::now();
    let ws = (0..5).map(|i| worker(&format!("w{i}"), 1.0, 1)).collect();
    let mut s = Scheduler::new(config(1, 2), ws).expect("valid");
    let mut pending = runs(&s.next_actions(t0));
    let mut i = 0u8;
    while let Some((chunk, w)) = pending.pop() {
        i += 1;
        pending.extend(runs(&s.on_result(&w, chunk, vec![i], t0)));
        if s.outcome().is_some() {
            break;
        }
    }
    assert_eq!(s.outcome(), Some(Err(TaskError::Unverifiable { chunk: 0 })));
}

#[test]
fn too_few_distinct_workers_for_the_redundancy_fail_fast() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(
        config(1, 3),
        vec![
            worker("a", 1.0, 1),
            worker("b", 1.0, 1),
            worker("c", 1.0, 1),
        ],
    )
    .expect("valid");
    s.next_actions(t0);
    s.on_result("a", 0, answer(0), t0);
    s.remove_worker("c", t0);
    assert_eq!(
        s.outcome(),
        Some(Err(TaskError::NotEnoughWorkers {
            chunk: 0,
            needed: 3,
            available: 2
        }))
    );
}

#[test]
fn cancel_aborts_every_running_chunk() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(config(4, 1), vec![worker("a", 1.0, 2), worker("b", 1.0, 2)])
        .expect("valid");
    let started = runs(&s.next_actions(t0)).len();
    let aborts = s.cancel();
    assert_eq!(aborts.len(), started);
    assert!(aborts.iter().all(|a| matches!(a, Action::Abort { .. })));
    assert_eq!(s.outcome(), Some(Err(TaskError::Cancelled)));
    assert!(s.next_actions(t0).is_empty());
}

#[test]
fn bounds_are_checked() {
    assert!(Scheduler::new(config(0, 1), vec![]).is_err());
    assert!(Scheduler::new(config(1, 0), vec![]).is_err());
    assert!(Scheduler::new(config(1, MAX_REDUNDANCY + 1), vec![]).is_err());
    let mut s = Scheduler::new(config(1, 1), vec![worker("a", 1.0, 1)]).expect("valid");
    s.next_actions(Instant::now());
    // A result for a chunk that does not exist, or from a stranger, is dropped.
    assert!(s.on_result("a", 99, vec![], Instant::now()).is_empty());
    assert!(s
        .on_result("stranger", 0, vec![], Instant::now())
        .is_empty());
}

// ---------------------------------------------------------------- seeded simulation

#[derive(Clone)]
struct SimWorker {
    id: String,
    ms_per_chunk: u64,
    fail_rate: f64,
    hang_rate: f64,
    liar: bool,
    leaves_at_ms: Option<u64>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SimEvent {
    Done {
        worker: usize,
        chunk: ChunkId,
        fail: bool,
    },
    Leave {
        worker: usize,
    },
    Tick,
}

/// Runs one task among simulated workers (virtual time) and returns the scheduler.
fn simulate(seed: u64) -> (Scheduler, Vec<SimWorker>, u8, u32) {
    let mut rng = StdRng::seed_from_u64(seed);
    let chunks = rng.gen_range(1..40);
    let redundancy = rng.gen_range(1..=3u8);
    // Enough workers to verify every chunk after losing a liar and a departure.
    let n = rng.gen_range(usize::from(redundancy) + 2..=6);
    // With verification, at most one liar, and never a majority of liars.
    let liar = (redundancy >= 2).then(|| rng.gen_range(0..n));
    let workers: Vec<SimWorker> = (0..n)
        .map(|i| SimWorker {
            id: format!("w{i}"),
            ms_per_chunk: rng.gen_range(1..20),
            fail_rate: rng.gen_range(0.0..0.15),
            hang_rate: rng.gen_range(0.0..0.05),
            liar: Some(i) == liar,
            // One worker (never the last one standing) may leave mid-task.
            leaves_at_ms: (i == 0 && n > 2 && rng.gen_bool(0.5)).then(|| rng.gen_range(0..100)),
        })
        .collect();
    let cfg = TaskConfig {
        chunks,
        redundancy,
        chunk_timeout: Duration::from_millis(200),
        max_failures_per_chunk: 12,
        work_stealing: rng.gen_bool(0.7),
    };
    let t0 = Instant::now();
    let mut s = Scheduler::new(
        cfg,
        workers
            .iter()
            .map(|w| Worker {
                id: w.id.clone(),
                score: 100.0 / w.ms_per_chunk as f64,
                load: 0.0,
                slots: rng.gen_range(1..3),
            })
            .collect(),
    )
    .expect("valid");
    let mut queue: BinaryHeap<Reverse<(u64, u64, SimEvent)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |q: &mut BinaryHeap<_>, at: u64, e: SimEvent| {
        seq += 1;
        q.push(Reverse((at, seq, e)));
    };
    let mut live: HashSet<(usize, ChunkId)> = HashSet::new();
    let mut gone: HashSet<usize> = HashSet::new();
    for (i, w) in workers.iter().enumerate() {
        if let Some(at) = w.leaves_at_ms {
            push(&mut queue, at, SimEvent::Leave { worker: i });
        }
    }
    push(&mut queue, 10, SimEvent::Tick);
    let mut actions = s.next_actions(t0);
    let mut now_ms = 0;
    loop {
        for a in actions.drain(..) {
            match a {
                Action::Run { chunk, worker } => {
                    let i: usize = worker[1..].parse().expect("w<i>");
                    live.insert((i, chunk));
                    let w = &workers[i];
                    if rng.gen_bool(w.hang_rate) {
                        continue; // never answers: only the timeout notices
                    }
                    let fail = rng.gen_bool(w.fail_rate);
                    let took = w.ms_per_chunk * rng.gen_range(1..4);
                    push(
                        &mut queue,
                        now_ms + took,
                        SimEvent::Done {
                            worker: i,
                            chunk,
                            fail,
                        },
                    );
                }
                Action::Abort { chunk, worker } => {
                    let i: usize = worker[1..].parse().expect("w<i>");
                    live.remove(&(i, chunk));
                }
            }
        }
        if s.outcome().is_some() {
            break;
        }
        let Some(Reverse((at, _, event))) = queue.pop() else {
            break;
        };
        if at >= 600_000 {
            let stuck: Vec<String> = s
                .chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| c.accepted.is_none())
                .map(|(i, c)| {
                    format!(
                        "chunk {i}: running {:?} results {} failed_on {:?} failures {} spec {}",
                        c.running.iter().map(|r| &r.worker).collect::<Vec<_>>(),
                        c.results.len(),
                        c.failed_on,
                        c.failures,
                        c.speculated
                    )
                })
                .collect();
            panic!(
                "seed {seed}: simulation ran away; workers {:?} busy {:?} excluded {:?}\n{}",
                s.workers.keys().collect::<Vec<_>>(),
                s.busy,
                s.excluded,
                stuck.join("\n")
            );
        }
        now_ms = at;
        let now = t0 + Duration::from_millis(now_ms);
        actions = match event {
            SimEvent::Done {
                worker,
                chunk,
                fail,
            } => {
                if gone.contains(&worker) || !live.remove(&(worker, chunk)) {
                    Vec::new()
                } else if fail {
                    s.on_error(&workers[worker].id, chunk, now)
                } else {
                    let bytes = if workers[worker].liar {
                        vec![0xde, 0xad]
                    } else {
                        answer(chunk)
                    };
                    s.on_result(&workers[worker].id, chunk, bytes, now)
                }
            }
            SimEvent::Leave { worker } => {
                gone.insert(worker);
                s.remove_worker(&workers[worker].id, now)
            }
            SimEvent::Tick => {
                push(&mut queue, now_ms + 10, SimEvent::Tick);
                s.on_tick(now)
            }
        };
    }
    (s, workers, redundancy, chunks)
}

#[test]
fn every_seeded_task_finishes_with_the_right_result() {
    let mut liars_caught = 0;
    for seed in 0..400 {
        let (s, workers, redundancy, chunks) = simulate(seed);
        let outcome = s.outcome();
        let results = match outcome {
            Some(Ok(r)) => r,
            other => panic!("seed {seed} (k={redundancy}, {chunks} chunks): {other:?}"),
        };
        assert_eq!(results.len(), chunks as usize, "seed {seed}");
        for (i, r) in results.iter().enumerate() {
            assert_eq!(
                *r,
                answer(i as ChunkId).as_slice(),
                "seed {seed}: chunk {i}"
            );
        }
        for id in s.excluded().keys() {
            let w = workers.iter().find(|w| w.id == *id).expect("known");
            assert!(w.liar, "seed {seed}: honest {id} was excluded");
            liars_caught += 1;
        }
        assert_eq!(s.progress().done, chunks, "seed {seed}");
    }
    // The seeds do exercise verification: liars were present, and caught.
    assert!(liars_caught > 100, "only {liars_caught} liars caught");
}
