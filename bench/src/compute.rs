//! The native half of the compute benchmarks: the WGSL matmul through native wgpu (lavapipe
//! where the machine has no GPU), the CPU kernels natively (the browser runs the same ones
//! in wasm), the dispatch overhead of a chunk sent to a peer, and the speedup of one task on
//! 1, 2 and 4 native peers, all through the relay given on the command line.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use libp2p::identity::Keypair;
use peercompute_core::{
    compute::{
        gpu::GpuExecutor,
        kernels, shaders,
        split::ChunkRange,
        task::{ChunkJob, Code, TaskRequest},
        wasm_native,
    },
    native::{ComputeConfig, MemoryStore, NativeNode},
    tab_protocol::{ReplyValue, Request, TaskResult},
    NodeConfig,
};
use serde_json::{json, Value};
use tokio::time::timeout;

/// Integer-valued n×n matrices (exact in f32), as a task.
pub(crate) fn matmul_task(n: u32, gpu: bool, chunks: u32) -> Value {
    let (a, b) = shaders::exact_matrices(n, n, n);
    let mut t = json!({
        "id": format!("matmul-{n}"), "type": "cpu", "kernel": "matmul",
        "inputs": [
            { "binding": 2, "type": "f32", "bytes": a },
            { "binding": 3, "type": "f32", "bytes": b },
        ],
        "output": { "type": "f32", "length": n * n }, "grid": [n, n],
        "split": { "axis": 1, "chunks": chunks },
    });
    if gpu {
        t["type"] = "webgpu".into();
        t["shader"] = shaders::MATMUL.into();
        t["tile"] = json!(shaders::MATMUL_TILE);
        if let Some(o) = t.as_object_mut() {
            o.remove("kernel");
        }
    }
    t
}

fn mandelbrot_task(id: &str, size: u32, max_iter: u32, chunks: u32) -> Value {
    json!({
        "id": id, "type": "cpu", "kernel": "mandelbrot",
        "params": [["maxIter", max_iter]],
        "output": { "type": "u32", "length": size * size }, "grid": [size, size],
        "split": { "axis": 1, "chunks": chunks },
    })
}

/// The example wasm kernel, as scripts/build-web.sh serves it.
const WASM_KERNEL: &str = "dist/web/kernels/mandelbrot.wasm";

/// The single job of a one-chunk task.
fn one_job(task: &Value) -> anyhow::Result<ChunkJob> {
    let t = serde_json::from_value::<TaskRequest>(task.clone())?.validate()?;
    t.jobs(1)?.into_iter().next().context("no job")
}

/// Median of `reps` timed runs of `f` (after one warm-up), in seconds.
fn median_secs(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut xs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        xs.push(t.elapsed().as_secs_f64());
    }
    xs.sort_by(f64::total_cmp);
    Ok(xs[xs.len() / 2])
}

/// The WGSL matmul through native wgpu: one n×n chunk end to end (upload, dispatch, readback),
/// and its dispatch alone.
fn gpu_matmul(n: u32) -> anyhow::Result<Value> {
    let gpu = futures::executor::block_on(GpuExecutor::new())
        .map_err(|e| anyhow::anyhow!("no GPU adapter: {e}"))?;
    let job = one_job(&matmul_task(n, true, 1))?;
    let want = kernels::run(&one_job(&matmul_task(n, false, 1))?)?;
    let secs = median_secs(3, || {
        let got = futures::executor::block_on(gpu.run(&job))?;
        if got != want {
            bail!("the GPU matmul differs from the CPU kernel");
        }
        Ok(())
    })?;
    // The dispatch alone, as the real-GPU comparison times it (bench/gpu-device.sh).
    let kernel = futures::executor::block_on(gpu.time_dispatch(&job, 5))?;
    let info = gpu.info();
    let flops = 2.0 * f64::from(n).powi(3);
    Ok(json!({
        "n": n,
        "gflops": flops / secs / 1e9,
        "ms": secs * 1000.0,
        "kernel_gflops": flops / kernel.secs / 1e9,
        "kernel_timing": kernel,
        "adapter": info.adapter.name,
        "backend": info.adapter.backend,
        "software_adapter": info.adapter.fallback,
    }))
}

/// A WGSL matmul shader to time: its source and the tile it is dispatched with.
pub(crate) struct MatmulShader {
    pub(crate) name: String,
    pub(crate) source: String,
    pub(crate) tile: [u32; 3],
}

impl MatmulShader {
    /// The product's shader (`core/src/compute/shaders/matmul.wgsl`).
    pub(crate) fn builtin() -> Self {
        MatmulShader {
            name: "matmul.wgsl".into(),
            source: shaders::MATMUL.into(),
            tile: shaders::MATMUL_TILE,
        }
    }

    /// `FILE:TX,TY` (a shader file and its tile), for comparing variants.
    pub(crate) fn parse(arg: &str) -> anyhow::Result<Self> {
        let (file, tile) = arg.rsplit_once(':').context("expected FILE:TX,TY")?;
        let (x, y) = tile.split_once(',').context("expected a tile TX,TY")?;
        Ok(MatmulShader {
            name: file.rsplit('/').next().unwrap_or(file).into(),
            source: std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?,
            tile: [x.parse()?, y.parse()?, 1],
        })
    }
}

/// One n×n·n×n matmul chunk of `shader` on `exact_matrices(n, n, n)`, with the inputs built
/// directly (as a JSON task, 8192² matrices would be gigabytes of numbers).
fn matmul_job(n: u32, shader: &MatmulShader) -> anyhow::Result<ChunkJob> {
    let mut job = one_job(&matmul_task(1, true, 1))?;
    let (a, b) = shaders::exact_matrices(n, n, n);
    let (mut a, mut b) = (Some(a), Some(b));
    for input in &mut job.inputs {
        let bytes = if input.binding == 2 {
            a.take()
        } else {
            b.take()
        };
        input.bytes = Arc::new(bytes.context("one input per matrix")?);
    }
    job.grid = [n, n, 1];
    job.range = ChunkRange {
        offset: [0; 3],
        size: [n, n, 1],
    };
    job.output.length = n * n;
    job.code = Code::Wgsl {
        source: shader.source.as_str().into(),
        entry: "main".into(),
        tile: shader.tile,
    };
    Ok(job)
}

/// Checks `got`, the product of `job`'s n×n inputs, on a spread of cells against sums computed
/// here from those inputs: every cell is an exact integer, so a correct kernel matches bit
/// for bit.
fn check_matmul(n: u32, job: &ChunkJob, got: &[u8]) -> anyhow::Result<()> {
    let n = n as usize;
    let (a, b) = (job.input(2).context("A")?, job.input(3).context("B")?);
    let at = |bytes: &[u8], i: usize| {
        f32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
    };
    let step = (n * n / 4099).max(1);
    for cell in (0..n * n).step_by(step).chain([n * n - 1]) {
        let (row, col) = (cell / n, cell % n);
        let want: f32 = (0..n)
            .map(|k| at(&a.bytes, row * n + k) * at(&b.bytes, k * n + col))
            .sum();
        let have = f32::from_le_bytes(got[cell * 4..cell * 4 + 4].try_into()?);
        if have != want {
            bail!("cell ({row}, {col}) is {have}, want {want}");
        }
    }
    Ok(())
}

/// The matmul kernels on this machine's GPU at each size: the GPU time of one dispatch
/// (timestamp queries; no uploads or readback) and, once, a whole chunk end to end. For a
/// real GPU, beside `bench/cublas.py` on the same one (`bench/gpu-device.sh`).
pub(crate) fn gpu_matmul_kernels(sizes: &[u32], shaders: &[MatmulShader]) -> anyhow::Result<Value> {
    let gpu = futures::executor::block_on(GpuExecutor::new())
        .map_err(|e| anyhow::anyhow!("no GPU adapter: {e}"))?;
    let info = gpu.info().clone();
    eprintln!(
        "GPU: {} ({}){}",
        info.adapter.name,
        info.adapter.backend,
        if info.adapter.fallback {
            ", a software adapter"
        } else {
            ""
        }
    );
    let mut rows = Vec::new();
    for shader in shaders {
        for &n in sizes {
            let job = matmul_job(n, shader)?;
            let flops = 2.0 * f64::from(n).powi(3);
            let started = Instant::now();
            let got = futures::executor::block_on(gpu.run(&job))?;
            let end_to_end = started.elapsed().as_secs_f64();
            check_matmul(n, &job, &got).with_context(|| format!("{} at n = {n}", shader.name))?;
            // About a second of dispatches per size on a real GPU, at least 10.
            let reps = (2e13 / flops).clamp(10.0, 200.0) as u32;
            let timing = futures::executor::block_on(gpu.time_dispatch(&job, reps))?;
            let gflops = flops / timing.secs / 1e9;
            eprintln!(
                "{:<24} n={n:<5} {:>9.1} GFLOPS  {:>8.3} ms/dispatch ({}, {reps} reps; wall {:.3} ms)  chunk end to end {:.1} ms",
                shader.name,
                gflops,
                timing.secs * 1e3,
                if timing.timestamp_queries { "timestamps" } else { "wall clock" },
                timing.wall_secs_per_dispatch * 1e3,
                end_to_end * 1e3,
            );
            rows.push(json!({
                "shader": shader.name, "tile": shader.tile, "n": n,
                "gflops": gflops, "ms": timing.secs * 1e3, "timing": timing,
                "end_to_end_ms": end_to_end * 1e3,
            }));
        }
    }
    Ok(json!({
        "adapter": info.adapter.name,
        "backend": info.adapter.backend,
        "software_adapter": info.adapter.fallback,
        "runs": rows,
    }))
}

/// The CPU kernels natively, on one thread: the sizes the browser runs in wasm.
fn cpu_kernels(matmul_n: u32, mandel_size: u32, mandel_iter: u32) -> anyhow::Result<Value> {
    let mm = one_job(&matmul_task(matmul_n, false, 1))?;
    let mm_secs = median_secs(3, || kernels::run(&mm).map(drop).map_err(Into::into))?;
    let md = one_job(&mandelbrot_task("m", mandel_size, mandel_iter, 1))?;
    let md_secs = median_secs(3, || kernels::run(&md).map(drop).map_err(Into::into))?;
    // The same picture from the example wasm kernel (kernels/mandelbrot) in wasmi.
    let module = std::fs::read(WASM_KERNEL)
        .with_context(|| format!("{WASM_KERNEL} (built by scripts/build-web.sh)"))?;
    let mut wasm_task = mandelbrot_task("w", mandel_size, mandel_iter, 1);
    wasm_task["wasm"] = json!(module);
    if let Some(o) = wasm_task.as_object_mut() {
        o.remove("kernel");
    }
    let wasm_job = one_job(&wasm_task)?;
    let want = kernels::run(&md)?;
    let wasm_secs = median_secs(1, || {
        if wasm_native::run(&wasm_job)? != want {
            bail!("the wasm kernel differs from the built-in kernel");
        }
        Ok(())
    })?;
    Ok(json!({
        "wasm_kernel_mandelbrot_ms": wasm_secs * 1000.0,
        "wasm_kernel_engine": "wasmi (interpreter, fuel metered)",
        "matmul_n": matmul_n,
        "matmul_gflops": 2.0 * f64::from(matmul_n).powi(3) / mm_secs / 1e9,
        "mandelbrot_size": mandel_size,
        "mandelbrot_max_iter": mandel_iter,
        "mandelbrot_ms": md_secs * 1000.0,
    }))
}

async fn compute_node(relay: &str, cpu_threads: u32) -> anyhow::Result<NativeNode> {
    let n = NativeNode::spawn_with(
        Keypair::generate_ed25519(),
        NodeConfig::default(),
        MemoryStore::default(),
        ComputeConfig {
            cpu_threads,
            gpu: false,
            corrupt_results: false,
        },
    )
    .await?;
    crate::connect(n, relay).await
}

/// Waits until `n` sees `count` connected peers that take chunks.
async fn wait_for_workers(n: &mut NativeNode, count: usize) -> anyhow::Result<()> {
    timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(ReplyValue::Peers(peers)) = n.request(Request::Peers).await {
                if peers
                    .iter()
                    .filter(|p| p.connected && p.compute.is_some())
                    .count()
                    >= count
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("peers with compute")
}

async fn submit(n: &mut NativeNode, task: &Value) -> anyhow::Result<TaskResult> {
    let task: TaskRequest = serde_json::from_value(task.clone())?;
    match n
        .request(Request::TaskSubmit {
            task: Box::new(task),
        })
        .await?
    {
        ReplyValue::TaskResult(r) => Ok(r),
        other => bail!("unexpected reply {other:?}"),
    }
}

/// A coordinator without executors and `peers` peers with one CPU thread each.
async fn cluster(relay: &str, peers: usize) -> anyhow::Result<(NativeNode, Vec<NativeNode>)> {
    let mut a = compute_node(relay, 0).await?;
    let mut others = Vec::new();
    for _ in 0..peers {
        others.push(compute_node(relay, 1).await?);
    }
    wait_for_workers(&mut a, peers).await?;
    Ok((a, others))
}

fn stop(a: NativeNode, others: Vec<NativeNode>) {
    a.stop();
    for o in others {
        o.stop();
    }
}

/// Per-chunk dispatch overhead: tiny chunks (16 elements) sent one at a time to one peer with
/// one thread, so each chunk's time is the request, the peer's check and run, and the answer.
async fn chunk_overhead(relay: &str) -> anyhow::Result<Value> {
    let (mut a, others) = cluster(relay, 1).await?;
    let chunks = 200u32;
    let xs: Vec<u8> = (0..chunks * 16).flat_map(|v| v.to_le_bytes()).collect();
    let task = |id: &str, local: bool| {
        json!({
            "id": id, "type": "cpu", "kernel": "square", "local": local,
            "inputs": [{ "binding": 2, "type": "u32", "bytes": xs }],
            "output": { "type": "u32", "length": chunks * 16 }, "grid": [chunks * 16],
            "split": { "chunks": chunks },
        })
    };
    submit(&mut a, &task("warm-up", false)).await?;
    let t = Instant::now();
    let remote = submit(&mut a, &task("overhead", false)).await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if remote.chunks != chunks {
        bail!("expected {chunks} chunks, got {}", remote.chunks);
    }
    stop(a, others);
    Ok(json!({ "chunks": chunks, "total_ms": ms, "per_chunk_ms": ms / f64::from(chunks) }))
}

/// One mandelbrot task on 1, 2 and 4 peers (one CPU thread each; this machine has
/// `available_parallelism` cores, which bounds the speedup).
async fn speedup(relay: &str) -> anyhow::Result<Value> {
    let task = mandelbrot_task("speedup", 384, 2000, 32);
    let mut rows = Vec::new();
    let mut base = None;
    for peers in [1usize, 2, 4] {
        let (mut a, others) = cluster(relay, peers).await?;
        let t = Instant::now();
        let r = submit(&mut a, &task).await?;
        let secs = t.elapsed().as_secs_f64();
        stop(a, others);
        let base_secs = *base.get_or_insert(secs);
        rows.push(json!({
            "peers": peers,
            "ms": secs * 1000.0,
            "speedup": base_secs / secs,
            "workers": r.workers.len(),
        }));
    }
    Ok(json!({
        "task": "mandelbrot 384×384, maxIter 2000, 32 chunks",
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "runs": rows,
    }))
}

/// Every native compute row.
pub(crate) async fn bench(relay: &str) -> anyhow::Result<Value> {
    let gpu = tokio::task::spawn_blocking(|| gpu_matmul(512)).await??;
    let cpu = tokio::task::spawn_blocking(|| cpu_kernels(256, 256, 500)).await??;
    let overhead = chunk_overhead(relay).await?;
    let speedup = speedup(relay).await?;
    Ok(json!({
        "gpu_matmul": gpu,
        "cpu_kernels": cpu,
        "chunk_overhead": overhead,
        "speedup": speedup,
    }))
}
