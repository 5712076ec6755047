//! The CPU kernels built into every PeerCompute runtime (native peers and the browser's
//! `worker-cpu`, compiled from this same code, so results are bit-identical).
//!
//! Each kernel computes one chunk: the cells `job.range` of the grid `job.grid`, and returns
//! `job.output.length` little-endian elements. Inputs are checked again here, because a job
//! may come from another peer: a bad job is an error, never a panic.
//!
//! | kernel | inputs | params | output per chunk |
//! |---|---|---|---|
//! | `mandelbrot` | – | `maxIter` (256, at most 2²⁰), `x0` `y0` `x1` `y1` (view) | u32 iterations per cell |
//! | `matmul` | binding 2: A (m×k f32), 3: B (k×n f32); grid `[n, m]` | – | f32 rows of C = A·B |
//! | `square` | binding 2: x (one element per cell) | – | x² per cell (integers wrap) |
//! | `sum` | binding 2: x (one element per cell) | – | one element: the chunk's sum; `reduce: 'sum'` |

use super::{
    reduce::{ElementType, Reduce},
    task::{ChunkJob, Code, InputArray, Param, Task},
};
use crate::{error::ErrorCode, NodeError};

/// Names of the built-in kernels.
pub const KERNELS: &[&str] = &["mandelbrot", "matmul", "square", "sum"];

/// The largest `maxIter` mandelbrot takes.
pub const MAX_MANDELBROT_ITER: u32 = 1 << 20;

/// The most inner-loop steps (mandelbrot iterations, matmul multiply-adds) one chunk may
/// take: a few seconds on a CPU worker. A job comes from the network, and a built-in kernel
/// has no fuel meter like a wasm kernel's, so its work is bounded before it starts; a task
/// that needs more is split into more chunks (or refused, when it names too few).
pub const MAX_KERNEL_STEPS_PER_CHUNK: u64 = 1 << 32;

/// Inner-loop steps per grid cell of a built-in kernel, an upper bound (mandelbrot cells stop
/// early when they escape). Assumes the job's shape was checked.
fn steps_per_cell(name: &str, params: &[Param], inputs: &[InputArray], grid: [u32; 3]) -> u64 {
    match name {
        "mandelbrot" => u64::from(max_iter(params).unwrap_or(DEFAULT_MANDELBROT_ITER)),
        "matmul" => {
            let a = inputs
                .iter()
                .find(|i| i.binding == 2)
                .map_or(0, |i| i.bytes.len() as u64 / 4);
            a / u64::from(grid[1]).max(1)
        }
        _ => 1,
    }
    .max(1)
}

const DEFAULT_MANDELBROT_ITER: u32 = 256;

fn max_iter(params: &[Param]) -> Option<u32> {
    params
        .iter()
        .find(|p| p.name == "maxIter")
        .and_then(|p| p.value.as_u32())
}

/// How many chunks a built-in kernel's task needs at least, so that no chunk takes more than
/// [`MAX_KERNEL_STEPS_PER_CHUNK`] (1 for code that is not a built-in kernel).
pub fn chunks_needed(task: &Task) -> u32 {
    let Code::Kernel(name) = &task.code else {
        return 1;
    };
    let per_cell = steps_per_cell(name, &task.params, &task.inputs, task.grid);
    let axis = u64::from(task.grid[task.split_axis]);
    let across = cells(task.grid) / axis.max(1);
    let lines_per_chunk = (MAX_KERNEL_STEPS_PER_CHUNK / per_cell / across.max(1)).max(1);
    u32::try_from(axis.div_ceil(lines_per_chunk)).unwrap_or(u32::MAX)
}

/// Refuses a chunk of a built-in kernel that would take more than
/// [`MAX_KERNEL_STEPS_PER_CHUNK`].
pub fn check_steps(job: &ChunkJob) -> Result<(), NodeError> {
    let Code::Kernel(name) = &job.code else {
        return Ok(());
    };
    let per_cell = steps_per_cell(name, &job.params, &job.inputs, job.grid);
    let steps = job.range.cells().saturating_mul(per_cell);
    if steps > MAX_KERNEL_STEPS_PER_CHUNK {
        return Err(bad(format!(
            "a chunk of {name} would take {steps} steps ({} cells × {per_cell}); at most \
             {MAX_KERNEL_STEPS_PER_CHUNK} per chunk: ask for more `chunks`",
            job.range.cells()
        )));
    }
    Ok(())
}

fn bad(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::TaskInvalid, message)
}

fn cells(grid: [u32; 3]) -> u64 {
    grid.iter().map(|&g| u64::from(g)).product()
}

/// Parameters a kernel bounds (checked before the work per chunk is counted from them).
fn check_params(name: &str, params: &[Param]) -> Result<(), NodeError> {
    let given = params.iter().any(|p| p.name == "maxIter");
    if name == "mandelbrot" && given && !matches!(max_iter(params), Some(1..=MAX_MANDELBROT_ITER)) {
        return Err(bad(format!(
            "mandelbrot: maxIter is an integer from 1 to {MAX_MANDELBROT_ITER}"
        )));
    }
    Ok(())
}

/// Checks a task's inputs and output against its kernel, before it is split.
pub fn check(task: &Task) -> Result<(), NodeError> {
    if let Code::Kernel(name) = &task.code {
        check_params(name, &task.params)?;
    }
    let jobs = task.jobs(1)?;
    let Some(first) = jobs.first() else {
        return Err(bad("the task has no chunks"));
    };
    let whole = ChunkJob {
        range: super::split::ChunkRange {
            offset: [0; 3],
            size: task.grid,
        },
        output: task.output,
        ..first.clone()
    };
    shape(&whole)?;
    if whole.code == Code::Kernel("sum".into()) && task.reduce != Reduce::Sum {
        return Err(bad(
            "the sum kernel gives one partial sum per chunk: use reduce 'sum'",
        ));
    }
    Ok(())
}

/// What a kernel needs of a job: input and output sizes and types.
fn shape(job: &ChunkJob) -> Result<(), NodeError> {
    let Code::Kernel(name) = &job.code else {
        return Err(bad("not a CPU kernel"));
    };
    let n = cells(job.grid);
    let chunk_cells = job.range.cells();
    let end_ok = (0..3).all(|a| {
        u64::from(job.range.offset[a]) + u64::from(job.range.size[a]) <= u64::from(job.grid[a])
    });
    if !end_ok || chunk_cells == 0 {
        return Err(bad("the chunk is not inside the grid"));
    }
    let len = u64::from(job.output.length);
    let elements = |binding: u32| -> Result<(ElementType, u64), NodeError> {
        let input = job
            .input(binding)
            .ok_or_else(|| bad(format!("kernel {name} reads input binding {binding}")))?;
        Ok((input.ty, input.bytes.len() as u64 / 4))
    };
    match name.as_str() {
        "mandelbrot" => {
            if job.output.ty != ElementType::U32 || len != chunk_cells {
                return Err(bad("mandelbrot writes one u32 per cell"));
            }
            check_params(name, &job.params)?;
        }
        "matmul" => {
            let (ta, a) = elements(2)?;
            let (tb, b) = elements(3)?;
            let (n_cols, m) = (u64::from(job.grid[0]), u64::from(job.grid[1]));
            if ta != ElementType::F32 || tb != ElementType::F32 || job.output.ty != ElementType::F32
            {
                return Err(bad("matmul multiplies f32 matrices"));
            }
            if job.grid[2] != 1 || a % m != 0 || a == 0 || b != (a / m) * n_cols {
                return Err(bad("matmul: grid [n, m], A is m×k and B is k×n elements"));
            }
            if len != chunk_cells {
                return Err(bad("matmul writes one f32 per cell of C"));
            }
        }
        "square" | "sum" => {
            let (t, x) = elements(2)?;
            if x != n || t != job.output.ty {
                return Err(bad(format!(
                    "{name}: input 2 has one element per grid cell, of the output's type"
                )));
            }
            let want = if name == "square" { chunk_cells } else { 1 };
            if len != want {
                return Err(bad(format!("{name} writes {want} elements per chunk")));
            }
        }
        other => {
            return Err(NodeError::new(
                ErrorCode::TaskUnknownKernel,
                format!(
                    "no built-in kernel {:?}",
                    other.chars().take(64).collect::<String>()
                ),
            ))
        }
    }
    Ok(())
}

/// Runs a whole task here, chunk by chunk, and combines the chunks: what a distributed run
/// of the same task must equal (tests and benchmarks compare against it).
pub fn run_task(task: &Task) -> Result<Vec<u8>, NodeError> {
    run_task_with(task, run)
}

/// [`run_task`] with another chunk runner (a wasm kernel engine).
pub fn run_task_with(
    task: &Task,
    run: impl FnMut(&ChunkJob) -> Result<Vec<u8>, NodeError>,
) -> Result<Vec<u8>, NodeError> {
    let parts = task
        .jobs(1)?
        .iter()
        .map(run)
        .collect::<Result<Vec<_>, _>>()?;
    super::reduce::reduce(&parts, task.reduce, task.output.ty)
        .map_err(|e| NodeError::new(ErrorCode::TaskFailed, e.to_string()))
}

/// Runs a chunk of a built-in kernel.
pub fn run(job: &ChunkJob) -> Result<Vec<u8>, NodeError> {
    shape(job)?;
    check_steps(job)?;
    let Code::Kernel(name) = &job.code else {
        return Err(bad("not a CPU kernel"));
    };
    Ok(match name.as_str() {
        "mandelbrot" => mandelbrot(job),
        "matmul" => matmul(job),
        "square" => square(job),
        _ => sum(job),
    })
}

fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The chunk's cells as row-major runs `(first index, length)` of the grid, one per row.
fn rows(job: &ChunkJob) -> impl Iterator<Item = (usize, usize)> {
    let [gx, gy, _] = job.grid.map(|g| g as usize);
    let [ox, oy, oz] = job.range.offset.map(|o| o as usize);
    let [sx, sy, sz] = job.range.size.map(|s| s as usize);
    (oz..oz + sz).flat_map(move |z| (oy..oy + sy).map(move |y| ((z * gy + y) * gx + ox, sx)))
}

/// The chunk's elements of a 4-byte array with one element per grid cell.
fn chunk_elements<'a>(job: &'a ChunkJob, bytes: &'a [u8]) -> impl Iterator<Item = [u8; 4]> + 'a {
    rows(job).flat_map(move |(start, len)| {
        bytes[start * 4..(start + len) * 4]
            .chunks_exact(4)
            .map(|b| [b[0], b[1], b[2], b[3]])
    })
}

fn mandelbrot(job: &ChunkJob) -> Vec<u8> {
    let param = |name: &str, default: f32| job.param(name).map_or(default, |v| v.as_f32());
    let max_iter = max_iter(&job.params).unwrap_or(DEFAULT_MANDELBROT_ITER);
    let (x0, y0) = (param("x0", -2.0), param("y0", -1.25));
    let (x1, y1) = (param("x1", 0.5), param("y1", 1.25));
    let (w, h) = (job.grid[0] as f32, job.grid[1] as f32);
    let mut out = Vec::with_capacity(job.output.bytes());
    let [ox, oy, _] = job.range.offset;
    let [sx, sy, sz] = job.range.size;
    for _z in 0..sz {
        for y in oy..oy + sy {
            let ci = y0 + (y1 - y0) * (y as f32 / h);
            for x in ox..ox + sx {
                let cr = x0 + (x1 - x0) * (x as f32 / w);
                let (mut zr, mut zi, mut i) = (0.0f32, 0.0f32, 0u32);
                while i < max_iter && zr * zr + zi * zi <= 4.0 {
                    let t = zr * zr - zi * zi + cr;
                    zi = 2.0 * zr * zi + ci;
                    zr = t;
                    i += 1;
                }
                out.extend_from_slice(&i.to_le_bytes());
            }
        }
    }
    out
}

fn matmul(job: &ChunkJob) -> Vec<u8> {
    let a: Vec<f32> = job
        .input(2)
        .map(|i| f32s(&i.bytes).collect())
        .unwrap_or_default();
    let b: Vec<f32> = job
        .input(3)
        .map(|i| f32s(&i.bytes).collect())
        .unwrap_or_default();
    let (n, m) = (job.grid[0] as usize, job.grid[1] as usize);
    let k = a.len() / m;
    let [ox, oy, _] = job.range.offset.map(|v| v as usize);
    let [sx, sy, _] = job.range.size.map(|v| v as usize);
    let mut c = vec![0.0f32; sx * sy];
    // i-k-j order: each C element still sums its products in increasing k, like the naive
    // loop (and the WGSL kernel), but B is read row by row.
    for (r, row) in c.chunks_exact_mut(sx).enumerate() {
        let i = oy + r;
        for kk in 0..k {
            let aik = a[i * k + kk];
            let b_row = &b[kk * n + ox..kk * n + ox + sx];
            for (cj, bj) in row.iter_mut().zip(b_row) {
                *cj += aik * bj;
            }
        }
    }
    c.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn square(job: &ChunkJob) -> Vec<u8> {
    let Some(input) = job.input(2) else {
        return Vec::new();
    };
    let elements = chunk_elements(job, &input.bytes);
    match input.ty {
        ElementType::F32 => elements
            .flat_map(|b| {
                let v = f32::from_le_bytes(b);
                (v * v).to_le_bytes()
            })
            .collect(),
        ElementType::U32 => elements
            .flat_map(|b| {
                let v = u32::from_le_bytes(b);
                v.wrapping_mul(v).to_le_bytes()
            })
            .collect(),
        ElementType::I32 => elements
            .flat_map(|b| {
                let v = i32::from_le_bytes(b);
                v.wrapping_mul(v).to_le_bytes()
            })
            .collect(),
    }
}

fn sum(job: &ChunkJob) -> Vec<u8> {
    let Some(input) = job.input(2) else {
        return Vec::new();
    };
    let elements = chunk_elements(job, &input.bytes);
    match input.ty {
        ElementType::F32 => elements
            .fold(0.0f32, |s, b| s + f32::from_le_bytes(b))
            .to_le_bytes()
            .to_vec(),
        ElementType::U32 | ElementType::I32 => elements
            .fold(0u32, |s, b| s.wrapping_add(u32::from_le_bytes(b)))
            .to_le_bytes()
            .to_vec(),
    }
}

/// A quick speed measurement for capability adverts: Mcells/s of a small mandelbrot.
pub fn benchmark_score() -> f64 {
    let job = ChunkJob {
        task: "score".into(),
        code: Code::Kernel("mandelbrot".into()),
        signature: None,
        params: vec![super::task::Param {
            name: "maxIter".into(),
            value: super::task::ParamValue::U32(64),
        }]
        .into(),
        inputs: Vec::new(),
        grid: [64, 64, 1],
        range: super::split::ChunkRange {
            offset: [0; 3],
            size: [64, 64, 1],
        },
        output: super::task::OutputSpec {
            binding: 1,
            ty: ElementType::U32,
            length: 64 * 64,
        },
    };
    let start = web_time::Instant::now();
    let mut rounds = 0u32;
    while rounds < 3 || (start.elapsed().as_millis() < 20 && rounds < 1000) {
        let _ = mandelbrot(&job);
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64().max(1e-6);
    f64::from(rounds) * 4096.0 / secs / 1e6
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compute::{
        reduce::reduce,
        task::{InputArray, TaskRequest},
    };

    fn task(json: serde_json::Value) -> Task {
        serde_json::from_value::<TaskRequest>(json)
            .expect("parses")
            .validate()
            .expect("valid")
    }

    fn run_split(task: &Task, chunks: usize) -> Vec<u8> {
        let parts: Vec<Vec<u8>> = task
            .jobs(chunks)
            .expect("splits")
            .iter()
            .map(|j| run(j).expect("runs"))
            .collect();
        reduce(&parts, task.reduce, task.output.ty).expect("reduces")
    }

    fn bytes_of(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn mandelbrot_is_the_same_however_it_is_split() {
        let t = task(serde_json::json!({
            "id": "m", "type": "cpu", "kernel": "mandelbrot", "params": [["maxIter", 50]],
            "output": { "type": "u32", "length": 40 * 30 }, "grid": [40, 30],
        }));
        let whole = run_split(&t, 1);
        assert_eq!(whole.len(), 40 * 30 * 4);
        assert_eq!(run_split(&t, 3), whole);
        // The centre of the view is inside the set; the corner escapes at once.
        let at = |x: usize, y: usize| {
            u32::from_le_bytes(whole[(y * 40 + x) * 4..][..4].try_into().unwrap())
        };
        assert_eq!(at(32, 15), 50);
        assert!(at(0, 0) < 3);
    }

    #[test]
    fn matmul_matches_the_naive_product() {
        let (m, k, n) = (5usize, 3usize, 4usize);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 + 0.25).collect();
        let t = task(serde_json::json!({
            "id": "mm", "type": "cpu", "kernel": "matmul",
            "inputs": [
                { "binding": 2, "type": "f32", "bytes": bytes_of(&a) },
                { "binding": 3, "type": "f32", "bytes": bytes_of(&b) },
            ],
            "output": { "type": "f32", "length": m * n }, "grid": [n, m],
        }));
        let mut want = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                for kk in 0..k {
                    want[i * n + j] += a[i * k + kk] * b[kk * n + j];
                }
            }
        }
        assert_eq!(run_split(&t, 2), bytes_of(&want));
    }

    #[test]
    fn map_and_reduce_over_arrays() {
        let x: Vec<u32> = (0..100).collect();
        let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let squares = task(serde_json::json!({
            "id": "sq", "type": "cpu", "kernel": "square",
            "inputs": [{ "binding": 2, "type": "u32", "bytes": xb }],
            "output": { "type": "u32", "length": 100 }, "grid": [100],
        }));
        let out = run_split(&squares, 7);
        assert_eq!(&out[99 * 4..], &(99u32 * 99).to_le_bytes());
        let total = task(serde_json::json!({
            "id": "s", "type": "cpu", "kernel": "sum", "reduce": "sum",
            "inputs": [{ "binding": 2, "type": "u32", "bytes": xb }],
            "output": { "type": "u32", "length": 1 }, "grid": [100],
        }));
        assert_eq!(run_split(&total, 6), 4950u32.to_le_bytes());
    }

    /// SHA-256 of the golden mandelbrot below. The browser test
    /// (`playwright/compute.spec.mjs`) checks the wasm kernels against the same digest, so
    /// native and wasm results are bit-identical.
    const GOLDEN_MANDELBROT_SHA256: &str =
        "77283d09fa10cf983b110e5629d6162dbf96418505a52801c6d1922381fd17ac";

    #[test]
    fn the_golden_mandelbrot_has_its_digest() {
        let t = task(serde_json::json!({
            "id": "golden", "type": "cpu", "kernel": "mandelbrot",
            "params": [["maxIter", 300], ["x0", -0.75], ["y0", 0.05], ["x1", -0.7], ["y1", 0.1]],
            "output": { "type": "u32", "length": 64 * 48 }, "grid": [64, 48],
        }));
        use sha2::Digest;
        let digest = crate::compute::signing::to_hex(&sha2::Sha256::digest(run_split(&t, 3)));
        assert_eq!(digest, GOLDEN_MANDELBROT_SHA256);
    }

    #[test]
    fn hostile_jobs_are_errors_not_panics() {
        let t = task(serde_json::json!({
            "id": "sq", "type": "cpu", "kernel": "square",
            "inputs": [{ "binding": 2, "type": "f32", "bytes": [0, 0, 128, 63, 0, 0, 0, 64] }],
            "output": { "type": "f32", "length": 2 }, "grid": [2],
        }));
        let job = t.jobs(1).unwrap().remove(0);
        let mut outside = job.clone();
        outside.range.offset[0] = 2;
        assert!(run(&outside).is_err(), "chunk past the grid");
        let mut short = job.clone();
        short.inputs[0] = InputArray {
            bytes: Arc::new(vec![0; 4]),
            ..short.inputs[0].clone()
        };
        assert!(run(&short).is_err(), "input shorter than the grid");
        let mut missing = job.clone();
        missing.inputs.clear();
        assert!(run(&missing).is_err());
        let mut unknown = job;
        unknown.code = crate::compute::task::Code::Kernel("nope".into());
        assert_eq!(
            run(&unknown).unwrap_err().code,
            ErrorCode::TaskUnknownKernel
        );
        assert!(benchmark_score() > 0.0);
    }

    fn mandelbrot_request(max_iter: serde_json::Value, side: u32) -> serde_json::Value {
        serde_json::json!({
            "id": "m", "type": "cpu", "kernel": "mandelbrot", "params": [["maxIter", max_iter]],
            "output": { "type": "u32", "length": side * side }, "grid": [side, side],
        })
    }

    fn invalid(json: serde_json::Value) -> NodeError {
        serde_json::from_value::<TaskRequest>(json)
            .expect("parses")
            .validate()
            .expect_err("refused")
    }

    #[test]
    fn mandelbrot_max_iter_is_bounded() {
        for bad in [
            serde_json::json!(0),
            serde_json::json!(MAX_MANDELBROT_ITER + 1),
            serde_json::json!(u32::MAX),
            serde_json::json!(-1),
            serde_json::json!(2.5),
        ] {
            let e = invalid(mandelbrot_request(bad.clone(), 8));
            assert_eq!(e.code, ErrorCode::TaskInvalid, "{bad}");
            assert!(e.message.contains("maxIter"), "{bad}: {}", e.message);
        }
        task(mandelbrot_request(
            serde_json::json!(MAX_MANDELBROT_ITER),
            8,
        ));
    }

    #[test]
    fn heavy_kernel_tasks_get_enough_chunks_and_peer_jobs_are_refused() {
        // 4096² cells × 65 536 iterations: 2^40 steps, so at least 256 chunks of 16 rows.
        let t = task(mandelbrot_request(serde_json::json!(65_536), 4096));
        let jobs = t.jobs(1).expect("splits");
        assert_eq!(jobs.len(), 256);
        for job in &jobs {
            assert!(job.range.cells() * 65_536 <= MAX_KERNEL_STEPS_PER_CHUNK);
        }
        // Naming too few chunks is refused when the task is checked, with the way out.
        let mut few = mandelbrot_request(serde_json::json!(65_536), 4096);
        few["split"] = serde_json::json!({ "chunks": 4 });
        let e = invalid(few);
        assert_eq!(e.code, ErrorCode::TaskInvalid);
        assert!(e.message.contains("chunks"), "{}", e.message);
        // A peer that sends the whole grid as one job is refused before any work: this returns
        // at once instead of spinning for hours.
        let mut whole = jobs[0].clone();
        whole.range.size = whole.grid;
        whole.output.length = 4096 * 4096;
        let started = std::time::Instant::now();
        assert_eq!(run(&whole).unwrap_err().code, ErrorCode::TaskInvalid);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // matmul counts its multiply-adds: k per cell of C.
        let (m, k, n) = (2048usize, 2048usize, 2048usize);
        let a = InputArray {
            binding: 2,
            ty: ElementType::F32,
            bytes: Arc::new(vec![0; m * k * 4]),
        };
        let mut mm = whole.clone();
        mm.code = Code::Kernel("matmul".into());
        mm.inputs = vec![a.clone(), InputArray { binding: 3, ..a }];
        mm.params = Vec::new().into();
        mm.grid = [n as u32, m as u32, 1];
        mm.range.size = mm.grid;
        mm.output = crate::compute::task::OutputSpec {
            ty: ElementType::F32,
            length: (m * n) as u32,
            ..mm.output
        };
        assert!(run(&mm).unwrap_err().message.contains("steps"));
    }
}
