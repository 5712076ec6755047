//! Distributed compute between native nodes through a real relay: tasks split across peers
//! return exactly the local result, survive a peer leaving, catch a peer that lies (with
//! redundancy 2), report progress, and cancel on every peer.

mod common;

use common::{connect, relay, T};
use libp2p::identity::{ed25519, Keypair};
use peercompute_core::{
    compute::{
        kernels, shaders, signing,
        task::{Task, TaskRequest},
        wasm_native,
    },
    native::{ComputeConfig, MemoryStore, NativeNode},
    tab_protocol::{ComputeStatus, Event, ReplyValue, Request, TaskResult},
    ErrorCode, NodeConfig,
};
use relay_server::RelayHandle;
use serde_json::json;
use tokio::time::{sleep, timeout, Duration};

async fn compute_node(relay: &RelayHandle, threads: u32, corrupt: bool) -> NativeNode {
    let mut n = NativeNode::spawn_with(
        Keypair::generate_ed25519(),
        NodeConfig::default(),
        MemoryStore::default(),
        ComputeConfig {
            cpu_threads: threads,
            gpu: false,
            corrupt_results: corrupt,
        },
    )
    .await
    .expect("node");
    connect(&mut n, relay).await;
    n
}

/// Honest executors.
fn executors(cpu_threads: u32, gpu: bool) -> ComputeConfig {
    ComputeConfig {
        cpu_threads,
        gpu,
        corrupt_results: false,
    }
}

/// A node with these executors (a GPU one fails to start without an adapter: lavapipe
/// stands in on a machine without a GPU) that trusts `root_key` when given.
async fn trusting_node(
    relay: &RelayHandle,
    config: ComputeConfig,
    root_key: Option<String>,
) -> NativeNode {
    let mut n = NativeNode::spawn_with(
        Keypair::generate_ed25519(),
        NodeConfig::default(),
        MemoryStore::default(),
        config,
    )
    .await
    .expect("node (a GPU adapter where asked: Debian's mesa-vulkan-drivers)");
    timeout(
        T,
        n.request(Request::Connect {
            relays: vec![relay.dialable[0].to_string()],
            timeout_ms: Some(10_000),
            wait: true,
            root_key,
        }),
    )
    .await
    .expect("in time")
    .expect("connects");
    n
}

/// A root key; a relay; a node `a` with no executors that knows no root key, so what the
/// peers answer is all that decides; and two peers with `peer_executors` that trust the key.
async fn trusting_pair(
    name: &str,
    peer_executors: ComputeConfig,
) -> (ed25519::Keypair, RelayHandle, NativeNode, [NativeNode; 2]) {
    let root = ed25519::Keypair::generate();
    let root_hex = signing::public_hex(&root);
    let relay = relay(name).await;
    let mut a = trusting_node(&relay, executors(0, false), None).await;
    let b = trusting_node(&relay, peer_executors.clone(), Some(root_hex.clone())).await;
    let c = trusting_node(&relay, peer_executors, Some(root_hex)).await;
    wait_for_workers(&mut a, &[&b, &c]).await;
    (root, relay, a, [b, c])
}

/// A relay and nodes with `(cpu threads, corrupt results)` each; the first node sees the
/// others as compute workers.
async fn cluster(name: &str, nodes: &[(u32, bool)]) -> (RelayHandle, NativeNode, Vec<NativeNode>) {
    let relay = relay(name).await;
    let mut all = Vec::new();
    for &(threads, corrupt) in nodes {
        all.push(compute_node(&relay, threads, corrupt).await);
    }
    let mut first = all.remove(0);
    wait_for_workers(&mut first, &all.iter().collect::<Vec<_>>()).await;
    (relay, first, all)
}

async fn shut_down(relay: RelayHandle, a: NativeNode, others: Vec<NativeNode>) {
    for n in others {
        n.stop();
    }
    a.stop();
    relay.stop().await;
}

async fn compute_status(n: &mut NativeNode) -> ComputeStatus {
    match n.request(Request::Status).await {
        Ok(ReplyValue::Status(s)) => s.compute,
        other => panic!("status: {other:?}"),
    }
}

async fn running_chunks(n: &mut NativeNode) -> usize {
    compute_status(n).await.running_chunks
}

/// Waits until `n` is connected to every node in `others` and knows they compute.
async fn wait_for_workers(n: &mut NativeNode, others: &[&NativeNode]) {
    let want: Vec<String> = others.iter().map(|o| o.peer_id().to_string()).collect();
    timeout(T, async {
        loop {
            if let Ok(ReplyValue::Peers(peers)) = n.request(Request::Peers).await {
                let ready = want.iter().all(|w| {
                    peers
                        .iter()
                        .any(|p| &p.peer_id == w && p.connected && p.compute.is_some())
                });
                if ready {
                    return;
                }
            }
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("peers with compute in time");
}

fn mandelbrot(id: &str, w: u32, h: u32, max_iter: u32, chunks: u32) -> serde_json::Value {
    json!({
        "id": id, "type": "cpu", "kernel": "mandelbrot",
        "params": [["maxIter", max_iter]],
        "output": { "type": "u32", "length": w * h },
        "grid": [w, h], "split": { "chunks": chunks },
    })
}

fn parse(task: &serde_json::Value) -> TaskRequest {
    serde_json::from_value(task.clone()).expect("task json")
}

/// The task run here, in this process, chunk by chunk: what a distributed run must equal.
fn local_result(task: &serde_json::Value) -> Vec<u8> {
    let task: Task = parse(task).validate().expect("valid");
    kernels::run_task(&task).expect("runs")
}

fn submit_request(task: &serde_json::Value) -> Request {
    Request::TaskSubmit {
        task: Box::new(parse(task)),
    }
}

async fn submit(n: &mut NativeNode, task: &serde_json::Value) -> Result<TaskResult, ErrorCode> {
    match timeout(T, n.request(submit_request(task)))
        .await
        .expect("task answered in time")
    {
        Ok(ReplyValue::TaskResult(r)) => Ok(r),
        Ok(other) => panic!("unexpected reply {other:?}"),
        Err(e) => Err(e.code),
    }
}

/// Progress events queued so far, as (done, total).
async fn drain_progress(n: &mut NativeNode) -> Vec<(u32, u32)> {
    let mut seen = Vec::new();
    while let Ok(Some(e)) = timeout(Duration::from_millis(200), n.next_event()).await {
        if let Event::TaskProgress { done, total, .. } = e {
            seen.push((done, total));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_split_across_peers_equals_the_local_result() {
    // `a` only coordinates (no CPU threads of its own), so every chunk runs on a peer; which
    // peer wins which chunk is a race (work stealing), so the check is on what peers served.
    let (relay, mut a, mut others) =
        cluster("compute-split", &[(0, false), (2, false), (2, false)]).await;

    // Chunks long enough (tens of ms) that the network is not the whole story.
    let task = mandelbrot("split", 96, 64, 2000, 12);
    let result = submit(&mut a, &task).await.expect("task succeeds");
    assert_eq!(
        result.bytes,
        local_result(&task),
        "bit-identical to the local run"
    );
    assert_eq!(result.chunks, 12);
    let peers: Vec<String> = others.iter().map(|p| p.peer_id().to_string()).collect();
    assert!(
        !result.workers.is_empty() && result.workers.iter().all(|w| peers.contains(w)),
        "only peers worked: {:?}",
        result.workers
    );
    let mut served = 0;
    for peer in &mut others {
        served += compute_status(peer).await.chunks_served;
    }
    assert!(served >= 12, "peers served every chunk: {served}");
    let progress = drain_progress(&mut a).await;
    assert_eq!(
        progress.last(),
        Some(&(12, 12)),
        "progress ends at done = total"
    );
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress only grows"
    );

    // Map and reduce over arrays, across the same peers.
    let xs: Vec<u8> = (0..1000u32).flat_map(|v| v.to_le_bytes()).collect();
    let sum = json!({
        "id": "sum", "type": "cpu", "kernel": "sum", "reduce": "sum",
        "inputs": [{ "binding": 2, "type": "u32", "bytes": xs }],
        "output": { "type": "u32", "length": 1 }, "grid": [1000], "split": { "chunks": 9 },
    });
    let result = submit(&mut a, &sum).await.expect("sum succeeds");
    assert_eq!(result.bytes, 499_500u32.to_le_bytes());

    // Bad tasks are refused with their codes, and the node keeps working.
    let mut bad = mandelbrot("bad", 8, 8, 10, 1);
    bad["kernel"] = "fork-bomb".into();
    assert_eq!(
        submit(&mut a, &bad).await.unwrap_err(),
        ErrorCode::TaskUnknownKernel
    );
    let shader = json!({
        "id": "gpu", "type": "webgpu", "shader": "@compute @workgroup_size(1) fn main() {}",
        "output": { "type": "u32", "length": 1 }, "grid": [1],
    });
    assert_eq!(
        submit(&mut a, &shader).await.unwrap_err(),
        ErrorCode::TaskUnsupported,
        "no GPU here, and unsigned code never travels"
    );
    shut_down(relay, a, others).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_leaves_mid_task_does_not_stop_it() {
    let (relay, mut a, mut others) =
        cluster("compute-leave", &[(1, false), (2, false), (2, false)]).await;

    // Slow enough chunks that b still holds some when it goes.
    let task = mandelbrot("leave", 128, 96, 3000, 16);
    let id = a.send_request(submit_request(&task)).await.expect("sent");
    // Stop b while it runs chunks of the task.
    let mut b = others.remove(0);
    timeout(T, async {
        while running_chunks(&mut b).await == 0 {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("b runs a chunk");
    b.stop();
    let reply = timeout(T * 2, a.reply(id)).await.expect("answered");
    let Ok(ReplyValue::TaskResult(result)) = reply else {
        panic!("task failed: {reply:?}");
    };
    assert_eq!(result.bytes, local_result(&task));
    shut_down(relay, a, others).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundancy_catches_a_peer_returning_wrong_chunks() {
    let (relay, mut a, others) =
        cluster("compute-liar", &[(1, false), (1, false), (2, true)]).await;
    let liar_id = others[1].peer_id().to_string();

    let mut task = mandelbrot("verified", 64, 64, 100, 8);
    task["redundancy"] = 2.into();
    let result = submit(&mut a, &task).await.expect("task succeeds");
    assert_eq!(
        result.bytes,
        local_result(&task),
        "the liar's chunks were outvoted"
    );
    assert!(
        result.excluded.iter().any(|x| x.peer_id == liar_id),
        "the liar is reported: {:?}",
        result.excluded
    );
    assert!(!result.workers.contains(&liar_id));
    let status = compute_status(&mut a).await;
    assert!(status.excluded.iter().any(|x| x.peer_id == liar_id));
    shut_down(relay, a, others).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_drops_the_task_on_every_peer() {
    let (relay, mut a, mut others) = cluster("compute-cancel", &[(1, false); 2]).await;
    let b = &mut others[0];

    let task = mandelbrot("long", 256, 256, 20_000, 64);
    let id = a.send_request(submit_request(&task)).await.expect("sent");
    // Wait until b runs one of its chunks.
    timeout(T, async {
        while running_chunks(b).await == 0 {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("b runs a chunk");
    a.request(Request::TaskCancel {
        task: "long".into(),
    })
    .await
    .expect("cancelled");
    let reply = timeout(T, a.reply(id)).await.expect("answered");
    assert_eq!(reply.unwrap_err().code, ErrorCode::TaskCancelled);
    assert_eq!(
        a.request(Request::TaskCancel {
            task: "long".into()
        })
        .await
        .unwrap_err()
        .code,
        ErrorCode::TaskUnknown
    );
    timeout(T, async {
        while running_chunks(b).await > 0 {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("b dropped the task's chunks");
    shut_down(relay, a, others).await;
}

/// Exact matrices (see `exact_matrices`): the GPU's result must equal the CPU kernel's.
fn small_int_matmul(id: &str, m: u32, k: u32, n: u32) -> serde_json::Value {
    let (a, b) = shaders::exact_matrices(m, k, n);
    json!({
        "id": id, "type": "cpu", "kernel": "matmul",
        "inputs": [
            { "binding": 2, "type": "f32", "bytes": a },
            { "binding": 3, "type": "f32", "bytes": b },
        ],
        "output": { "type": "f32", "length": m * n }, "grid": [n, m],
        "split": { "axis": 1, "chunks": 4 },
    })
}

/// The same task as a WGSL shader (the built-in matmul shader), signed or not.
fn as_shader(
    task: &serde_json::Value,
    shader: &str,
    signature: Option<String>,
) -> serde_json::Value {
    let mut t = task.clone();
    let o = t.as_object_mut().expect("object");
    o.remove("kernel");
    o.insert("type".into(), "webgpu".into());
    o.insert("shader".into(), shader.into());
    o.insert("tile".into(), json!(shaders::MATMUL_TILE));
    if let Some(sig) = signature {
        o.insert("signature".into(), sig.into());
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_shaders_run_on_gpu_peers_and_tampered_ones_are_refused() {
    let (root, relay, mut a, mut peers) = trusting_pair("compute-gpu", executors(0, true)).await;
    let gpu_peers = match a.request(Request::Peers).await {
        Ok(ReplyValue::Peers(p)) => p
            .iter()
            .filter(|p| p.compute.is_some_and(|c| c.gpu))
            .count(),
        other => panic!("peers: {other:?}"),
    };
    assert_eq!(gpu_peers, 2, "both peers advertise a GPU");

    let cpu_task = small_int_matmul("mm", 70, 33, 90);
    let signature = signing::to_hex(&signing::sign(&root, shaders::MATMUL.as_bytes()));
    let signed = as_shader(&cpu_task, shaders::MATMUL, Some(signature.clone()));
    let result = submit(&mut a, &signed).await.expect("signed shader runs");
    assert_eq!(
        result.bytes,
        local_result(&cpu_task),
        "GPU = CPU kernel, bit for bit"
    );
    assert_eq!(result.chunks, 4);
    assert!(!result.workers.is_empty());

    // What the peers ran and refused so far, once it holds still (work stealing may have run
    // a chunk twice, and the spare run may still be finishing).
    let (served, refused) = settled_peer_counts(&mut peers).await;
    assert!(served >= 4, "the peers ran every chunk: {served}");

    // The same signature over a changed shader: every peer refuses it before it runs.
    let tampered_source =
        shaders::MATMUL.replace("fma(vec4(a0.x), b0, c00)", "fma(vec4(a0.x), b0, -c00)");
    assert_ne!(
        tampered_source,
        shaders::MATMUL,
        "the tampering changed the shader"
    );
    let tampered = as_shader(&cpu_task, &tampered_source, Some(signature));
    let after_tampered = assert_refused(&mut a, &mut peers, &tampered, (served, refused)).await;

    // A shader without a signature never leaves its node (and `a` has no GPU).
    let unsigned = as_shader(&cpu_task, shaders::MATMUL, None);
    assert_eq!(
        submit(&mut a, &unsigned).await.unwrap_err(),
        ErrorCode::TaskUnsupported
    );
    assert_eq!(
        peer_counts(&mut peers).await,
        after_tampered,
        "it never reached a peer"
    );
    shut_down(relay, a, peers.into()).await;
}

/// Chunks the peers ran and refused, summed.
async fn peer_counts(peers: &mut [NativeNode]) -> (u64, u64) {
    let (mut served, mut refused) = (0, 0);
    for p in peers {
        let s = compute_status(p).await;
        served += s.chunks_served;
        refused += s.chunks_refused;
    }
    (served, refused)
}

/// [`peer_counts`] once they hold still: a spare run of a stolen chunk may finish after its
/// task did, and refusals of chunks in flight when a task failed may land a moment later.
async fn settled_peer_counts(peers: &mut [NativeNode]) -> (u64, u64) {
    timeout(T, async {
        let mut last = peer_counts(peers).await;
        loop {
            sleep(Duration::from_millis(300)).await;
            let now = peer_counts(peers).await;
            if now == last {
                return now;
            }
            last = now;
        }
    })
    .await
    .expect("the counts settle")
}

/// Submits code whose signature does not match it: the task fails `CODE_SIGNATURE_INVALID`
/// and the peers refuse it without running a chunk. Returns the counts after.
async fn assert_refused(
    a: &mut NativeNode,
    peers: &mut [NativeNode],
    tampered: &serde_json::Value,
    (served, refused): (u64, u64),
) -> (u64, u64) {
    assert_eq!(
        submit(a, tampered).await.expect_err("refused"),
        ErrorCode::CodeSignatureInvalid
    );
    let after = settled_peer_counts(peers).await;
    assert_eq!(after.0, served, "no tampered chunk ran");
    assert!(after.1 > refused, "the peers refused it");
    after
}

/// The test kernel of the core crate (`out = a·x + y`) over `n` cells in 4 chunks.
fn saxpy_task(id: &str, module: &[u8], signature: Option<String>, n: usize) -> serde_json::Value {
    let x: Vec<u8> = (0..n)
        .flat_map(|i| (i as f32 * 0.25 - 7.0).to_le_bytes())
        .collect();
    let y: Vec<u8> = (0..n)
        .flat_map(|i| ((i % 11) as f32).to_le_bytes())
        .collect();
    let mut t = json!({
        "id": id, "type": "cpu", "wasm": module,
        "params": [["a", { "f32": -0.75 }]],
        "inputs": [
            { "binding": 2, "type": "f32", "bytes": x },
            { "binding": 3, "type": "f32", "bytes": y },
        ],
        "output": { "type": "f32", "length": n }, "grid": [n], "split": { "chunks": 4 },
    });
    if let Some(sig) = signature {
        t["signature"] = sig.into();
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_wasm_kernels_run_on_cpu_peers_and_tampered_ones_are_refused() {
    let (root, relay, mut a, mut peers) = trusting_pair("compute-wasm", executors(1, false)).await;
    let source = include_str!("../../core/testdata/saxpy.wat");
    let module = wat::parse_str(source).expect("valid wat");
    let signature = signing::to_hex(&signing::sign(&root, &module));
    let signed = saxpy_task("saxpy", &module, Some(signature.clone()), 3000);
    let result = submit(&mut a, &signed).await.expect("signed kernel runs");
    assert_eq!(result.bytes, local_wasm_result(&signed), "= a local run");
    assert_eq!(result.chunks, 4);
    let (served, refused) = settled_peer_counts(&mut peers).await;
    assert!(served >= 4, "the peers ran every chunk: {served}");

    // The same signature over a changed module: refused before it is compiled.
    let changed =
        wat::parse_str(source.replace("(i32.const 42)", "(i32.const 43)")).expect("valid wat");
    let tampered = saxpy_task("tampered", &changed, Some(signature), 3000);
    let after_tampered = assert_refused(&mut a, &mut peers, &tampered, (served, refused)).await;

    // Unsigned, it never leaves `a` (which runs no CPU chunks itself).
    let unsigned = saxpy_task("unsigned", &module, None, 3000);
    assert_eq!(
        submit(&mut a, &unsigned).await.unwrap_err(),
        ErrorCode::TaskUnsupported
    );
    assert_eq!(peer_counts(&mut peers).await, after_tampered, "never sent");
    shut_down(relay, a, peers.into()).await;
}

fn local_wasm_result(task: &serde_json::Value) -> Vec<u8> {
    let task: Task = parse(task).validate().expect("valid");
    kernels::run_task_with(&task, wasm_native::run_cpu).expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_command_runs_a_native_compute_peer() {
    use tokio::io::AsyncBufReadExt;
    let relay = relay("compute-peer-cli").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["peer", "--cpu-threads", "1", "--relay"])
        .arg(relay.dialable[0].to_string())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("relay-server peer starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = timeout(T, lines.next_line())
        .await
        .expect("READY in time")
        .expect("reads")
        .expect("a line");
    let peer_id = ready
        .strip_prefix("READY peer_id=")
        .expect("READY line")
        .to_string();

    let mut a = compute_node(&relay, 0, false).await;
    timeout(T, async {
        loop {
            if let Ok(ReplyValue::Peers(peers)) = a.request(Request::Peers).await {
                if peers
                    .iter()
                    .any(|p| p.peer_id == peer_id && p.connected && p.compute.is_some())
                {
                    return;
                }
            }
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the peer advertises compute");
    let task = mandelbrot("cli", 64, 48, 200, 4);
    let result = submit(&mut a, &task).await.expect("task succeeds");
    assert_eq!(result.bytes, local_result(&task));
    assert_eq!(result.workers, vec![peer_id]);
    child.kill().await.expect("stops");
    a.stop();
    relay.stop().await;
}
