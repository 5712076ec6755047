//! The GPU executor (feature `gpu`): runs a chunk's WGSL compute shader with `wgpu`, on
//! WebGPU in the browser's `worker-gpu` and on Vulkan in a native peer (lavapipe, Mesa's
//! software rasterizer, where a machine has no GPU). The same code on both sides.
//!
//! Bindings a shader sees (`@group(0)`):
//! - `@binding(0)`: `var<uniform>` — the chunk ([`ChunkJob::uniform_bytes`]): `offset`,
//!   `size` and `grid` as `vec4<u32>`, then the task's parameters in order, 4 bytes each;
//! - the output binding (default 1): `var<storage, read_write>`, the chunk's
//!   `output.length` elements, read back as the chunk's result;
//! - each input's binding: `var<storage, read>`.
//!
//! The dispatch covers the chunk: `ceil(size / tile)` workgroups per axis, where `tile` is the
//! shader's workgroup size unless the task set it. Shaders must bounds-check against
//! `size`, since the last workgroups overhang it.
//!
//! Bad shaders (WGSL that does not compile, bindings that do not match) are caught in wgpu
//! error scopes and answered as `TASK_INVALID`, never a panic: the default handler of an
//! uncaptured wgpu error panics, so the executor installs one that logs.

use std::{cell::RefCell, collections::HashMap, sync::Arc};

use serde::Serialize;
use sha2::{Digest, Sha256};
use wgpu::util::DeviceExt;

use super::{
    recent::Recent,
    task::{ChunkJob, Code},
};
use crate::{error::ErrorCode, tab_protocol::GpuAdapter, NodeError};

/// Compiled pipelines kept per executor (least recently used dropped first).
const PIPELINE_CACHE: usize = 32;

/// What a page or a peer learns about this executor's adapter.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuInfo {
    /// Name, backend, software or not (what the node's status shows).
    #[serde(flatten)]
    pub adapter: GpuAdapter,
    /// Largest storage buffer a shader may bind, in bytes.
    pub max_storage_buffer_binding_size: u32,
    /// Most workgroups per dispatch axis.
    pub max_workgroups_per_dimension: u32,
}

type PipelineKey = [u8; 32];

/// How long one dispatch of a chunk's shader took on the GPU ([`GpuExecutor::time_dispatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchTiming {
    /// Seconds per dispatch: the timestamp queries' median, else the wall clock's mean.
    pub secs: f64,
    /// Whether `secs` comes from the GPU's own timestamps.
    pub timestamp_queries: bool,
    /// The wall clock around the whole submission, divided by the dispatches in it.
    pub wall_secs_per_dispatch: f64,
    /// Dispatches timed.
    pub reps: u32,
}

/// A chunk ready to dispatch: its pipeline, bound buffers, and where its output lands.
struct PreparedChunk {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    output: wgpu::Buffer,
    /// The mappable copy of `output`, when the output is to be read back.
    readback: Option<wgpu::Buffer>,
    output_size: u64,
}

impl PreparedChunk {
    /// Records one compute pass that dispatches the chunk, with its begin and end written to
    /// `timestamps` (a query set and the first of two indices) when given.
    fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        timestamps: Option<(&wgpu::QuerySet, u32)>,
    ) {
        let timestamp_writes =
            timestamps.map(|(query_set, first)| wgpu::ComputePassTimestampWrites {
                query_set,
                beginning_of_pass_write_index: Some(first),
                end_of_pass_write_index: Some(first + 1),
            });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// A wgpu device that runs chunks. Not `Send` on the web (wgpu's WebGPU handles are not):
/// keep it on the thread or worker that made it.
pub struct GpuExecutor {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: GpuInfo,
    pipelines: RefCell<Recent<PipelineKey, wgpu::ComputePipeline>>,
    layouts: RefCell<HashMap<Vec<u32>, wgpu::BindGroupLayout>>,
}

fn unsupported(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::TaskUnsupported, message)
}

fn invalid(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::TaskInvalid, message)
}

impl GpuExecutor {
    /// Opens the first adapter wgpu offers, software ones included (headless Chromium has
    /// SwiftShader, a machine without a GPU has lavapipe), with that adapter's own limits.
    pub async fn new() -> Result<Self, NodeError> {
        let instance = wgpu::Instance::new(&wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN | wgpu::Backends::BROWSER_WEBGPU,
            ..wgpu::InstanceDescriptor::from_env_or_default()
        });
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
            })
            .await
            .map_err(|e| unsupported(format!("no GPU adapter: {e}")))?;
        let adapter_info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("peercompute"),
                // Timestamps only time dispatches for benchmarks; asked for where they exist.
                required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| unsupported(format!("the GPU adapter gave no device: {e}")))?;
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            tracing::error!("uncaptured GPU error: {e}");
        }));
        let info = GpuInfo {
            adapter: GpuAdapter {
                name: adapter_info.name.clone(),
                backend: adapter_info.backend.to_string(),
                fallback: adapter_info.device_type == wgpu::DeviceType::Cpu,
            },
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        };
        tracing::info!(?info, "GPU executor ready");
        Ok(GpuExecutor {
            device,
            queue,
            info,
            pipelines: RefCell::new(Recent::new(PIPELINE_CACHE)),
            layouts: RefCell::new(HashMap::new()),
        })
    }

    /// The adapter this executor runs on.
    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// Runs one chunk's shader and returns its output bytes.
    pub async fn run(&self, job: &ChunkJob) -> Result<Vec<u8>, NodeError> {
        let chunk = self.prepare(job, true).await?;
        let readback = chunk
            .readback
            .as_ref()
            .expect("prepared with a readback buffer");
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        chunk.dispatch(&mut encoder, None);
        encoder.copy_buffer_to_buffer(&chunk.output, 0, readback, 0, chunk.output_size);
        self.submit_checked(encoder).await?;
        self.read_back(readback).await
    }

    /// The GPU time of one dispatch of `job`'s shader, without uploads and readback: the
    /// median over `reps` dispatches in one submission, measured by timestamp queries where
    /// the adapter has them, else by the wall clock around the whole submission divided by
    /// `reps` (natively: in the browser nothing blocks on the GPU, so there only the
    /// timestamps mean anything). For benchmarks: it tells a kernel's own speed apart from
    /// the transfers a chunk also pays for.
    pub async fn time_dispatch(
        &self,
        job: &ChunkJob,
        reps: u32,
    ) -> Result<DispatchTiming, NodeError> {
        let reps = reps.clamp(1, 256);
        let chunk = self.prepare(job, false).await?;
        // Warm-up: first-use costs (pipeline upload, page faults) stay out of the timing.
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        chunk.dispatch(&mut encoder, None);
        self.submit_checked(encoder).await?;
        self.wait_idle()?;

        let timestamps = self
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let queries = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("dispatch timing"),
                    ty: wgpu::QueryType::Timestamp,
                    count: reps * 2,
                });
                let size = u64::from(reps) * 16;
                let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps"),
                    size,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps readback"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                (queries, resolve, readback)
            });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        for rep in 0..reps {
            chunk.dispatch(
                &mut encoder,
                timestamps.as_ref().map(|(q, ..)| (q, rep * 2)),
            );
        }
        if let Some((queries, resolve, readback)) = &timestamps {
            encoder.resolve_query_set(queries, 0..reps * 2, resolve, 0);
            encoder.copy_buffer_to_buffer(resolve, 0, readback, 0, resolve.size());
        }
        let started = web_time::Instant::now();
        self.submit_checked(encoder).await?;
        self.wait_idle()?;
        let wall_per_dispatch = started.elapsed().as_secs_f64() / f64::from(reps);
        let gpu_median = match &timestamps {
            Some((_, _, readback)) => {
                let bytes = self.read_back(readback).await?;
                let period = f64::from(self.queue.get_timestamp_period());
                let mut spans: Vec<f64> = bytes
                    .chunks_exact(16)
                    .map(|pair| {
                        let begin = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes"));
                        let end = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes"));
                        end.saturating_sub(begin) as f64 * period * 1e-9
                    })
                    .collect();
                spans.sort_by(f64::total_cmp);
                spans.get(spans.len() / 2).copied().filter(|s| *s > 0.0)
            }
            None => None,
        };
        Ok(DispatchTiming {
            secs: gpu_median.unwrap_or(wall_per_dispatch),
            timestamp_queries: gpu_median.is_some(),
            wall_secs_per_dispatch: wall_per_dispatch,
            reps,
        })
    }

    /// Checks a chunk against the adapter, then builds its pipeline and buffers (inputs
    /// uploaded, output zeroed, and a buffer to read the output back through if `readback`).
    async fn prepare(&self, job: &ChunkJob, readback: bool) -> Result<PreparedChunk, NodeError> {
        let Code::Wgsl {
            source,
            entry,
            tile,
        } = &job.code
        else {
            return Err(invalid("not a WGSL job"));
        };
        let workgroups = self.workgroups(job, *tile)?;
        let max_binding = u64::from(self.info.max_storage_buffer_binding_size);
        let output_size = job.output.bytes() as u64;
        if output_size > max_binding
            || job
                .inputs
                .iter()
                .any(|i| i.bytes.len() as u64 > max_binding)
        {
            return Err(unsupported(format!(
                "a buffer of this chunk exceeds the adapter's {max_binding}-byte binding limit: split the task into more chunks"
            )));
        }
        if job.inputs.iter().any(|i| i.bytes.is_empty()) {
            return Err(invalid("an input array is empty"));
        }

        let mut bindings: Vec<u32> = job.inputs.iter().map(|i| i.binding).collect();
        bindings.push(job.output.binding);
        let layout = self.layout(&bindings);
        self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self.pipeline(source, entry, &bindings, &layout);
        if let Some(e) = self.device.pop_error_scope().await {
            self.forget_pipeline(source, entry, &bindings);
            return Err(invalid(format!("the shader does not compile or bind: {e}")));
        }

        self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("chunk"),
                contents: &job.uniform_bytes(),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let inputs: Vec<wgpu::Buffer> = job
            .inputs
            .iter()
            .map(|i| {
                self.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("input"),
                        contents: &i.bytes,
                        usage: wgpu::BufferUsages::STORAGE,
                    })
            })
            .collect();
        let output = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("output"),
            size: output_size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = readback.then(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: output_size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (input, buffer) in job.inputs.iter().zip(&inputs) {
            entries.push(wgpu::BindGroupEntry {
                binding: input.binding,
                resource: buffer.as_entire_binding(),
            });
        }
        entries.push(wgpu::BindGroupEntry {
            binding: job.output.binding,
            resource: output.as_entire_binding(),
        });
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("chunk"),
            layout: &layout,
            entries: &entries,
        });
        let validation = self.device.pop_error_scope().await;
        let memory = self.device.pop_error_scope().await;
        Self::scope_errors(validation, memory)?;
        Ok(PreparedChunk {
            pipeline,
            bind_group,
            workgroups,
            output,
            readback,
            output_size,
        })
    }

    /// Submits `encoder`, answering wgpu's validation and out-of-memory errors as task errors.
    async fn submit_checked(&self, encoder: wgpu::CommandEncoder) -> Result<(), NodeError> {
        self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        self.queue.submit([encoder.finish()]);
        let validation = self.device.pop_error_scope().await;
        let memory = self.device.pop_error_scope().await;
        Self::scope_errors(validation, memory)
    }

    fn scope_errors(
        validation: Option<wgpu::Error>,
        memory: Option<wgpu::Error>,
    ) -> Result<(), NodeError> {
        if let Some(e) = validation {
            return Err(invalid(format!("the GPU refused the chunk: {e}")));
        }
        if let Some(e) = memory {
            return Err(NodeError::new(
                ErrorCode::TaskChunkFailed,
                format!("the GPU ran out of memory: {e}"),
            ));
        }
        Ok(())
    }

    /// Blocks until the GPU has finished what was submitted (natively; the browser's event
    /// loop drives WebGPU instead).
    fn wait_idle(&self) -> Result<(), NodeError> {
        #[cfg(not(all(target_family = "wasm", target_os = "unknown")))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| NodeError::new(ErrorCode::TaskChunkFailed, e.to_string()))?;
        Ok(())
    }

    /// Maps `buffer` (a `MAP_READ` buffer whose copy was submitted) and copies it out.
    async fn read_back(&self, buffer: &wgpu::Buffer) -> Result<Vec<u8>, NodeError> {
        let (tx, rx) = futures::channel::oneshot::channel();
        buffer.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait_idle()?;
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(NodeError::new(
                    ErrorCode::TaskChunkFailed,
                    format!("reading the result back failed: {e}"),
                ))
            }
            Err(_) => {
                return Err(NodeError::new(
                    ErrorCode::TaskChunkFailed,
                    "the GPU device was lost",
                ))
            }
        }
        let bytes = buffer.get_mapped_range(..).to_vec();
        buffer.unmap();
        Ok(bytes)
    }

    fn workgroups(&self, job: &ChunkJob, tile: [u32; 3]) -> Result<[u32; 3], NodeError> {
        let mut groups = [1u32; 3];
        for axis in 0..3 {
            groups[axis] = job.range.size[axis].div_ceil(tile[axis].max(1)).max(1);
            if groups[axis] > self.info.max_workgroups_per_dimension {
                return Err(unsupported(format!(
                    "the chunk needs {} workgroups on axis {axis}, over the adapter's {}: split the task into more chunks or set a larger `tile`",
                    groups[axis], self.info.max_workgroups_per_dimension
                )));
            }
        }
        Ok(groups)
    }

    /// The bind group layout for `bindings` (the inputs', then the output's): 0 uniform, the
    /// output read-write storage, the inputs read-only storage.
    fn layout(&self, bindings: &[u32]) -> wgpu::BindGroupLayout {
        if let Some(layout) = self.layouts.borrow().get(bindings) {
            return layout.clone();
        }
        let output = bindings.last().copied();
        let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        entries.extend(bindings.iter().map(|&b| storage(b, Some(b) != output)));
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("chunk"),
                entries: &entries,
            });
        let mut layouts = self.layouts.borrow_mut();
        if layouts.len() >= PIPELINE_CACHE {
            layouts.clear();
        }
        layouts.insert(bindings.to_vec(), layout.clone());
        layout
    }

    fn pipeline_key(source: &str, entry: &str, bindings: &[u32]) -> PipelineKey {
        let mut h = Sha256::new();
        h.update(source.as_bytes());
        h.update([0]);
        h.update(entry.as_bytes());
        for b in bindings {
            h.update(b.to_le_bytes());
        }
        h.finalize().into()
    }

    fn forget_pipeline(&self, source: &str, entry: &str, bindings: &[u32]) {
        let key = Self::pipeline_key(source, entry, bindings);
        self.pipelines.borrow_mut().remove(&key);
    }

    /// A compiled pipeline, from the cache or freshly built (errors land in the caller's
    /// error scope).
    fn pipeline(
        &self,
        source: &str,
        entry: &str,
        bindings: &[u32],
        layout: &wgpu::BindGroupLayout,
    ) -> wgpu::ComputePipeline {
        let key = Self::pipeline_key(source, entry, bindings);
        let mut cache = self.pipelines.borrow_mut();
        if let Some(pipeline) = cache.get(&key) {
            return pipeline;
        }
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("task"),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("task"),
                bind_group_layouts: &[layout],
                push_constant_ranges: &[],
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("task"),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        cache.insert(key, pipeline.clone());
        pipeline
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::{kernels, reduce::reduce, shaders, task::TaskRequest};

    /// The executor on this machine's adapter: lavapipe without a GPU. No adapter is a
    /// failure, not a skip (Debian: mesa-vulkan-drivers).
    fn gpu() -> GpuExecutor {
        futures::executor::block_on(GpuExecutor::new()).expect("a GPU adapter (lavapipe)")
    }

    fn task(json: serde_json::Value) -> crate::compute::task::Task {
        serde_json::from_value::<TaskRequest>(json)
            .expect("json")
            .validate()
            .expect("valid")
    }

    /// The task's chunks for `workers` workers, each run on the GPU, reduced.
    fn run_all(gpu: &GpuExecutor, t: &crate::compute::task::Task, workers: usize) -> Vec<u8> {
        let jobs = t.jobs(workers).expect("splits");
        assert!(workers == 1 || jobs.len() > 1, "split");
        let parts: Vec<Vec<u8>> = jobs
            .iter()
            .map(|j| futures::executor::block_on(gpu.run(j)).expect("runs"))
            .collect();
        reduce(&parts, t.reduce, t.output.ty).expect("reduces")
    }

    fn cpu_all(t: &crate::compute::task::Task) -> Vec<u8> {
        kernels::run_task(t).expect("runs")
    }

    #[test]
    fn wgsl_twins_equal_the_cpu_kernels_however_split() {
        let gpu = gpu();
        assert!(!gpu.info().adapter.name.is_empty());
        // Integer-valued matrices (exact in f32) with sizes off the 128-cell tile and the
        // 16-deep slice: two workgroups down, three across, the last of each part-filled.
        let (m, k, n) = (140u32, 33u32, 270u32);
        let (a, b) = shaders::exact_matrices(m, k, n);
        let inputs = serde_json::json!([
            { "binding": 2, "type": "f32", "bytes": a },
            { "binding": 3, "type": "f32", "bytes": b },
        ]);
        let cpu = task(serde_json::json!({
            "id": "mm", "type": "cpu", "kernel": "matmul", "inputs": inputs,
            "output": { "type": "f32", "length": m * n }, "grid": [n, m],
        }));
        let wgsl = task(serde_json::json!({
            "id": "mm", "type": "webgpu", "shader": shaders::MATMUL, "tile": shaders::MATMUL_TILE,
            "inputs": inputs, "output": { "type": "f32", "length": m * n }, "grid": [n, m],
        }));
        let want = cpu_all(&cpu);
        assert_eq!(run_all(&gpu, &wgsl, 1), want);
        assert_eq!(run_all(&gpu, &wgsl, 3), want, "split in row slabs");

        let mandel = |kind: &str| {
            let mut t = serde_json::json!({
                "id": "m", "type": kind,
                "params": [["maxIter", 40], ["x0", { "f32": -2.0 }], ["y0", -1.25], ["x1", 0.5], ["y1", 1.25]],
                "output": { "type": "u32", "length": 37 * 29 }, "grid": [37, 29],
            });
            if kind == "cpu" {
                t["kernel"] = "mandelbrot".into();
            } else {
                t["shader"] = shaders::MANDELBROT.into();
            }
            task(t)
        };
        let want = cpu_all(&mandel("cpu"));
        let got = run_all(&gpu, &mandel("webgpu"), 2);
        let same = want
            .chunks(4)
            .zip(got.chunks(4))
            .filter(|(a, b)| a == b)
            .count();
        // f32 rounding may differ at the set's boundary (fused multiply-adds); the bulk agrees.
        assert!(
            same * 100 >= 37 * 29 * 99,
            "{same} of {} cells agree",
            37 * 29
        );
    }

    #[test]
    fn bad_shaders_are_task_errors_not_panics() {
        let gpu = gpu();
        let job = |shader: &str| {
            task(serde_json::json!({
                "id": "bad", "type": "webgpu", "shader": shader, "workgroupSize": [1],
                "output": { "type": "u32", "length": 4 }, "grid": [4], "split": { "chunks": 1 },
            }))
            .jobs(1)
            .expect("splits")
            .remove(0)
        };
        let code = |shader: &str| {
            futures::executor::block_on(gpu.run(&job(shader)))
                .expect_err("refused")
                .code
        };
        assert_eq!(code("this is not WGSL"), ErrorCode::TaskInvalid);
        // Binds its output read-only: the layout says read-write.
        assert_eq!(
            code(
                "@group(0) @binding(1) var<storage, read> o: array<u32>;
                 @compute @workgroup_size(1) fn main() { _ = o[0]; }"
            ),
            ErrorCode::TaskInvalid
        );
        // No entry point `main`.
        assert_eq!(
            code("@compute @workgroup_size(1) fn other() {}"),
            ErrorCode::TaskInvalid
        );
        // Parameters the shader reads but the task does not give.
        let short = job(
            "struct C { offset: vec4<u32>, size: vec4<u32>, grid: vec4<u32>, a: u32, b: u32 }
             @group(0) @binding(0) var<uniform> c: C;
             @group(0) @binding(1) var<storage, read_write> o: array<u32>;
             @compute @workgroup_size(1) fn main() { o[0] = c.b; }",
        );
        let e = futures::executor::block_on(gpu.run(&short)).expect_err("refused");
        assert_eq!(e.code, ErrorCode::TaskInvalid, "{}", e.message);
        // And the executor still works.
        let ok = job(
            "@group(0) @binding(1) var<storage, read_write> o: array<u32>;
             @compute @workgroup_size(1) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
               o[id.x] = id.x * 10u;
             }",
        );
        let out = futures::executor::block_on(gpu.run(&ok)).expect("runs");
        let words: Vec<u32> = out
            .chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(words, [0, 10, 20, 30]);
    }

    #[test]
    fn dispatch_timing_times_the_kernel_and_refuses_what_run_refuses() {
        let gpu = gpu();
        let (a, b) = shaders::exact_matrices(64, 64, 64);
        let mm = task(serde_json::json!({
            "id": "mm", "type": "webgpu", "shader": shaders::MATMUL, "tile": shaders::MATMUL_TILE,
            "inputs": [
                { "binding": 2, "type": "f32", "bytes": a },
                { "binding": 3, "type": "f32", "bytes": b },
            ],
            "output": { "type": "f32", "length": 64 * 64 }, "grid": [64, 64],
        }));
        let job = mm.jobs(1).expect("splits").remove(0);
        let t = futures::executor::block_on(gpu.time_dispatch(&job, 3)).expect("times");
        assert_eq!(t.reps, 3);
        assert!(t.secs > 0.0 && t.secs < 10.0, "{t:?}");
        assert!(t.wall_secs_per_dispatch > 0.0, "{t:?}");
        assert_eq!(
            t.timestamp_queries,
            gpu.device
                .features()
                .contains(wgpu::Features::TIMESTAMP_QUERY)
        );
        let t = futures::executor::block_on(gpu.time_dispatch(&job, 0)).expect("times");
        assert_eq!(t.reps, 1, "at least one dispatch");

        let mut bad = job.clone();
        bad.code = Code::Wgsl {
            source: "not WGSL".into(),
            entry: "main".into(),
            tile: [1, 1, 1],
        };
        let e = futures::executor::block_on(gpu.time_dispatch(&bad, 3)).expect_err("refused");
        assert_eq!(e.code, ErrorCode::TaskInvalid);
        // The timed dispatches leave the executor as it was: the chunk still runs right.
        let cpu = kernels::run(&{
            let mut j = job.clone();
            j.code = Code::Kernel("matmul".into());
            j
        })
        .expect("cpu");
        assert_eq!(
            futures::executor::block_on(gpu.run(&job)).expect("runs"),
            cpu
        );
    }
}
