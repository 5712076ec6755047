//! A compute task as a tab submits it, checked against its bounds, and the chunk jobs it
//! splits into: what a worker (this node's executors, or a peer's) actually runs.
//!
//! Output layout: a task's result is `output.length` elements of `output.type`. With
//! `reduce: concat` every grid cell owns `length / cells` consecutive elements in row-major
//! order, so a chunk (a slab along the outermost split axis) produces one contiguous slice;
//! with `sum`/`min`/`max` every chunk produces all `length` elements and they are combined.

use std::sync::Arc;

use serde::Deserialize;

use super::{
    reduce::{ElementType, Reduce},
    scheduler::MAX_REDUNDANCY,
    split::{auto_chunks, split_grid, ChunkRange, MAX_CHUNKS},
};
use crate::{error::ErrorCode, NodeError};

/// Longest task id, in bytes.
pub const MAX_TASK_ID_BYTES: usize = 128;
/// Largest code (WGSL source), in bytes.
pub const MAX_CODE_BYTES: usize = 256 * 1024;
/// Most parameters.
pub const MAX_PARAMS: usize = 64;
/// Longest parameter name, in bytes.
pub const MAX_PARAM_NAME_BYTES: usize = 64;
/// Most input arrays.
pub const MAX_INPUTS: usize = 8;
/// Largest sum of a task's input arrays, in bytes (they travel with every chunk).
pub const MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;
/// Largest task result, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 128 * 1024 * 1024;
/// Longest a task may run.
pub const MAX_TASK_TIMEOUT_MS: u32 = 10 * 60 * 1000;
/// Default task timeout.
pub const DEFAULT_TASK_TIMEOUT_MS: u32 = 60_000;
/// Default time a chunk may run on one worker before it is retried elsewhere.
pub const DEFAULT_CHUNK_TIMEOUT_MS: u32 = 30_000;
/// Storage binding the output goes to when the task names none.
pub const DEFAULT_OUTPUT_BINDING: u32 = 1;
/// Longest entry point name (WGSL or wasm).
pub const MAX_ENTRY_BYTES: usize = 64;

/// What runs a task's chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// A WGSL compute shader on WebGPU (native wgpu on a native peer).
    Webgpu,
    /// A CPU kernel: built into the runtime, or a signed wasm module.
    Cpu,
}

/// The code a chunk runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// A CPU kernel built into every PeerCompute runtime, by name. It is part of the
    /// runtime, not code from the network, so it needs no signature.
    Kernel(String),
    /// A WGSL compute shader.
    Wgsl {
        /// Source text, shared by every chunk of the task.
        source: Arc<str>,
        /// Entry point.
        entry: String,
        /// Grid cells one workgroup covers: the dispatch is the chunk's size divided by this.
        /// The shader's `@workgroup_size` (one cell per invocation) unless the task says
        /// `tile` (a shader whose invocations compute several cells each).
        tile: [u32; 3],
    },
    /// A CPU kernel shipped as a WebAssembly module (ABI: [`super::wasm_kernel`]).
    Wasm {
        /// The module's bytes, shared by every chunk of the task.
        module: Arc<Vec<u8>>,
        /// The exported entry point.
        entry: String,
    },
}

impl Code {
    /// The bytes a root-key signature covers: the WGSL source or the wasm module (a built-in
    /// kernel has none).
    pub fn signed_bytes(&self) -> Option<&[u8]> {
        match self {
            Code::Kernel(_) => None,
            Code::Wgsl { source, .. } => Some(source.as_bytes()),
            Code::Wasm { module, .. } => Some(module),
        }
    }

    /// The kind of worker that runs it.
    pub fn kind(&self) -> TaskKind {
        match self {
            Code::Kernel(_) | Code::Wasm { .. } => TaskKind::Cpu,
            Code::Wgsl { .. } => TaskKind::Webgpu,
        }
    }
}

/// A scalar parameter: 4 bytes in the uniform buffer, looked up by name by CPU kernels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamValue {
    /// Unsigned integer.
    U32(u32),
    /// Signed integer.
    I32(i32),
    /// Float.
    F32(f32),
}

impl ParamValue {
    /// Little-endian bytes, as WGSL reads them.
    pub fn to_le_bytes(self) -> [u8; 4] {
        match self {
            ParamValue::U32(v) => v.to_le_bytes(),
            ParamValue::I32(v) => v.to_le_bytes(),
            ParamValue::F32(v) => v.to_le_bytes(),
        }
    }

    /// The value as f32 (integers converted).
    pub fn as_f32(self) -> f32 {
        match self {
            ParamValue::U32(v) => v as f32,
            ParamValue::I32(v) => v as f32,
            ParamValue::F32(v) => v,
        }
    }

    /// The value as u32, when it is a non-negative integer.
    pub fn as_u32(self) -> Option<u32> {
        match self {
            ParamValue::U32(v) => Some(v),
            ParamValue::I32(v) => u32::try_from(v).ok(),
            ParamValue::F32(_) => None,
        }
    }
}

/// A named parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Name.
    pub name: String,
    /// Value.
    pub value: ParamValue,
}

/// An input array bound to a storage binding.
#[derive(Debug, Clone, PartialEq)]
pub struct InputArray {
    /// Binding number (`@group(0) @binding(n)`), 2 or higher.
    pub binding: u32,
    /// Element type.
    pub ty: ElementType,
    /// Little-endian elements; shared by every chunk of the task.
    pub bytes: Arc<Vec<u8>>,
}

/// The output of a task (or of one chunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputSpec {
    /// Storage binding the shader writes.
    pub binding: u32,
    /// Element type.
    pub ty: ElementType,
    /// Elements.
    pub length: u32,
}

impl OutputSpec {
    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.length as usize * 4
    }
}

/// One chunk of a task, as a worker runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkJob {
    /// The task's id (for logs and errors).
    pub task: String,
    /// What runs.
    pub code: Code,
    /// Ed25519 signature of [`Code::signed_bytes`] by the network's root key.
    pub signature: Option<[u8; 64]>,
    /// Scalar parameters, in order; shared by every chunk of the task.
    pub params: Arc<[Param]>,
    /// Input arrays.
    pub inputs: Vec<InputArray>,
    /// The whole grid.
    pub grid: [u32; 3],
    /// The part of the grid this chunk covers.
    pub range: ChunkRange,
    /// What this chunk produces (its `length` is the chunk's, not the task's).
    pub output: OutputSpec,
}

impl ChunkJob {
    /// A parameter by name.
    pub fn param(&self, name: &str) -> Option<ParamValue> {
        self.params.iter().find(|p| p.name == name).map(|p| p.value)
    }

    /// An input array by binding.
    pub fn input(&self, binding: u32) -> Option<&InputArray> {
        self.inputs.iter().find(|i| i.binding == binding)
    }

    /// The uniform buffer a WGSL shader sees at `@binding(0)`: `offset`, `size` and `grid` as
    /// `vec4<u32>` each (48 bytes), then the parameters in order, 4 bytes each, padded to 16.
    pub fn uniform_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.params.len() * 4 + 12);
        for v in [self.range.offset, self.range.size, self.grid] {
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        for p in self.params.iter() {
            out.extend_from_slice(&p.value.to_le_bytes());
        }
        out.resize(out.len().div_ceil(16) * 16, 0);
        out
    }
}

/// A task, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The submitter's id for it.
    pub id: String,
    /// What runs.
    pub code: Code,
    /// Signature of the code by the root key, if the page has one.
    pub signature: Option<[u8; 64]>,
    /// Parameters.
    pub params: Arc<[Param]>,
    /// Inputs.
    pub inputs: Vec<InputArray>,
    /// The whole output.
    pub output: OutputSpec,
    /// Grid.
    pub grid: [u32; 3],
    /// Axis the grid splits along.
    pub split_axis: usize,
    /// Chunk count; `None` picks one from the number of workers.
    pub chunks: Option<u32>,
    /// How chunk results combine.
    pub reduce: Reduce,
    /// Distinct workers that must agree on each chunk.
    pub redundancy: u8,
    /// Run only on this node.
    pub local_only: bool,
    /// Whole-task timeout.
    pub timeout_ms: u32,
    /// Per-chunk timeout before a retry elsewhere.
    pub chunk_timeout_ms: u32,
    /// Idle workers duplicate the chunk running longest elsewhere (first result wins).
    pub work_stealing: bool,
}

/// A task as the tab sends it (JSON-like; `inputs` carry bytes).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskRequest {
    /// Task id.
    pub id: String,
    /// `webgpu` or `cpu`.
    #[serde(rename = "type")]
    pub kind: TaskKind,
    /// WGSL source (`webgpu`).
    pub shader: Option<String>,
    /// Entry point: of the shader (default `main`) or of the wasm kernel (default `run`).
    pub entry: Option<String>,
    /// Workgroup size (`webgpu`); read from the shader's `@workgroup_size` when absent.
    pub workgroup_size: Option<Vec<u32>>,
    /// Grid cells one workgroup covers (`webgpu`), default its workgroup size.
    pub tile: Option<Vec<u32>>,
    /// Built-in kernel name (`cpu`).
    pub kernel: Option<String>,
    /// A wasm kernel module (`cpu`; ABI in [`super::wasm_kernel`]).
    pub wasm: Option<serde_bytes::ByteBuf>,
    /// Hex Ed25519 signature of the shader or wasm module by the network's root key.
    pub signature: Option<String>,
    /// `[name, value]` pairs in order; a value is a number (a non-negative integer is u32, a
    /// negative one i32, anything else f32) or `{ "f32" | "u32" | "i32": number }`.
    #[serde(default)]
    pub params: Vec<(String, ParamInput)>,
    /// Input arrays.
    #[serde(default)]
    pub inputs: Vec<InputRequest>,
    /// The output.
    pub output: OutputRequest,
    /// Grid, 1 to 3 dimensions.
    pub grid: Vec<u32>,
    /// How to split.
    #[serde(default)]
    pub split: SplitRequest,
    /// `concat` (default), `sum`, `min`, `max`.
    pub reduce: Option<Reduce>,
    /// Workers per chunk that must agree (default 1).
    pub redundancy: Option<u8>,
    /// Run only on this node (default: the network when the code may travel).
    #[serde(default)]
    pub local: bool,
    /// Whole-task timeout.
    pub timeout_ms: Option<u32>,
    /// Per-chunk timeout.
    pub chunk_timeout_ms: Option<u32>,
    /// Duplicate slow chunks onto idle workers (default true). Off, each chunk runs where it
    /// was first sent unless that worker fails, times out or leaves.
    pub work_stealing: Option<bool>,
}

/// A parameter value as sent.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ParamInput {
    /// A plain number.
    Number(f64),
    /// An explicitly typed number.
    Typed(TypedParam),
}

/// An explicitly typed number.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TypedParam {
    /// f32.
    F32(f64),
    /// u32.
    U32(f64),
    /// i32.
    I32(f64),
}

/// An input array as sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRequest {
    /// Binding (2 or higher).
    pub binding: u32,
    /// Element type.
    #[serde(rename = "type")]
    pub ty: ElementType,
    /// Little-endian elements.
    pub bytes: serde_bytes::ByteBuf,
}

/// The output as sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRequest {
    /// Binding (default 1).
    pub binding: Option<u32>,
    /// Element type.
    #[serde(rename = "type")]
    pub ty: ElementType,
    /// Elements.
    pub length: u32,
}

/// How to split, as sent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// Axis (0 = x, 1 = y, 2 = z); default: the outermost axis longer than 1.
    pub axis: Option<usize>,
    /// A number, or absent / `"auto"`.
    pub chunks: Option<ChunkCount>,
}

/// Chunk count as sent.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ChunkCount {
    /// A number.
    Count(u32),
    /// `"auto"`.
    Auto(AutoWord),
}

/// The word `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoWord {
    /// Pick from the number of workers.
    Auto,
}

fn invalid(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::TaskInvalid, message)
}

/// Parses a hex Ed25519 signature.
pub fn parse_signature(hex: &str) -> Result<[u8; 64], NodeError> {
    let bytes = super::signing::from_hex(hex)
        .filter(|b| b.len() == 64)
        .ok_or_else(|| {
            NodeError::new(
                ErrorCode::CodeSignatureInvalid,
                "a signature is 128 hex digits",
            )
        })?;
    let mut out = [0u8; 64];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// An entry point name: an identifier of at most [`MAX_ENTRY_BYTES`] bytes.
pub fn check_entry(entry: &str) -> Result<(), NodeError> {
    if entry.is_empty()
        || entry.len() > MAX_ENTRY_BYTES
        || !entry.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(invalid(format!(
            "`entry` is an identifier of 1 to {MAX_ENTRY_BYTES} letters, digits and _"
        )));
    }
    Ok(())
}

/// Reads `@workgroup_size(x[, y[, z]])` of a shader whose sizes are integer literals.
pub fn workgroup_size_of(source: &str) -> Option<[u32; 3]> {
    let start = source.find("@workgroup_size")? + "@workgroup_size".len();
    let rest = source[start..].trim_start().strip_prefix('(')?;
    let args = &rest[..rest.find(')')?];
    let mut size = [1u32; 3];
    let parts: Vec<&str> = args
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    for (i, p) in parts.iter().enumerate() {
        let digits = p.trim_end_matches('u').trim_end_matches('i');
        size[i] = digits.parse().ok().filter(|&n| n > 0)?;
    }
    Some(size)
}

fn param_value(name: &str, input: ParamInput) -> Result<ParamValue, NodeError> {
    let int = |v: f64, lo: f64, hi: f64| v.fract() == 0.0 && v >= lo && v <= hi;
    let bad = || invalid(format!("parameter {name:?} is not representable as given"));
    // A finite f64 beyond f32's range would become infinity here (and null on the wire).
    let f32_ok = |v: f64| v.is_finite() && v.abs() <= f64::from(f32::MAX);
    Ok(match input {
        ParamInput::Number(v) if !f32_ok(v) => return Err(bad()),
        ParamInput::Number(v) if int(v, 0.0, u32::MAX as f64) => ParamValue::U32(v as u32),
        ParamInput::Number(v) if int(v, i32::MIN as f64, -1.0) => ParamValue::I32(v as i32),
        ParamInput::Number(v) => ParamValue::F32(v as f32),
        ParamInput::Typed(TypedParam::F32(v)) if f32_ok(v) => ParamValue::F32(v as f32),
        ParamInput::Typed(TypedParam::U32(v)) if int(v, 0.0, u32::MAX as f64) => {
            ParamValue::U32(v as u32)
        }
        ParamInput::Typed(TypedParam::I32(v)) if int(v, i32::MIN as f64, i32::MAX as f64) => {
            ParamValue::I32(v as i32)
        }
        ParamInput::Typed(_) => return Err(bad()),
    })
}

impl TaskRequest {
    /// Checks every bound and builds the task.
    pub fn validate(self) -> Result<Task, NodeError> {
        if self.id.is_empty() || self.id.len() > MAX_TASK_ID_BYTES {
            return Err(invalid(format!(
                "a task id is 1 to {MAX_TASK_ID_BYTES} bytes"
            )));
        }
        let code = match self.kind {
            TaskKind::Cpu => {
                if self.shader.is_some() {
                    return Err(invalid(
                        "a cpu task has a `kernel` or `wasm`, not a `shader`",
                    ));
                }
                match (self.kernel, self.wasm) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "a cpu task has a `kernel` name or a `wasm` module, not both",
                        ))
                    }
                    (None, None) => {
                        return Err(invalid(
                            "a cpu task names its `kernel` or carries a `wasm` module",
                        ))
                    }
                    (None, Some(module)) => {
                        let entry = self
                            .entry
                            .unwrap_or_else(|| super::wasm_kernel::DEFAULT_ENTRY.into());
                        check_entry(&entry)?;
                        super::wasm_kernel::check_module(&module, &entry)?;
                        Code::Wasm {
                            module: Arc::new(module.into_vec()),
                            entry,
                        }
                    }
                    (Some(kernel), None) => {
                        if !super::kernels::KERNELS.contains(&kernel.as_str()) {
                            return Err(NodeError::new(
                                ErrorCode::TaskUnknownKernel,
                                format!(
                                    "no built-in kernel {:?} (there are: {})",
                                    kernel.chars().take(64).collect::<String>(),
                                    super::kernels::KERNELS.join(", ")
                                ),
                            ));
                        }
                        Code::Kernel(kernel)
                    }
                }
            }
            TaskKind::Webgpu => {
                let source = self
                    .shader
                    .ok_or_else(|| invalid("a webgpu task carries its WGSL `shader`"))?;
                if source.len() > MAX_CODE_BYTES {
                    return Err(NodeError::new(
                        ErrorCode::PayloadTooLarge,
                        format!("a shader is at most {MAX_CODE_BYTES} bytes"),
                    ));
                }
                if self.wasm.is_some() {
                    return Err(invalid(
                        "a webgpu task has a `shader`; `wasm` kernels are type cpu",
                    ));
                }
                let entry = self.entry.unwrap_or_else(|| "main".into());
                check_entry(&entry)?;
                let dims = |v: Vec<u32>, name: &str| match v.as_slice() {
                    w if (1..=3).contains(&w.len()) && w.iter().all(|&n| n > 0) => {
                        Ok([w[0], *w.get(1).unwrap_or(&1), *w.get(2).unwrap_or(&1)])
                    }
                    _ => Err(invalid(format!("`{name}` is 1 to 3 positive numbers"))),
                };
                let workgroup_size = match self.workgroup_size {
                    Some(w) => dims(w, "workgroupSize")?,
                    None => workgroup_size_of(&source).ok_or_else(|| {
                        invalid("the shader's @workgroup_size is not integer literals: pass `workgroupSize`")
                    })?,
                };
                let tile = match self.tile {
                    Some(t) => dims(t, "tile")?,
                    None => workgroup_size,
                };
                Code::Wgsl {
                    source: source.into(),
                    entry,
                    tile,
                }
            }
        };
        let signature = self.signature.as_deref().map(parse_signature).transpose()?;
        if self.params.len() > MAX_PARAMS {
            return Err(invalid(format!("at most {MAX_PARAMS} parameters")));
        }
        let mut params = Vec::with_capacity(self.params.len());
        for (name, value) in self.params {
            if name.is_empty() || name.len() > MAX_PARAM_NAME_BYTES {
                return Err(invalid(format!(
                    "a parameter name is 1 to {MAX_PARAM_NAME_BYTES} bytes"
                )));
            }
            let value = param_value(&name, value)?;
            params.push(Param { name, value });
        }
        if self.inputs.len() > MAX_INPUTS {
            return Err(invalid(format!("at most {MAX_INPUTS} inputs")));
        }
        let output_binding = self.output.binding.unwrap_or(DEFAULT_OUTPUT_BINDING);
        let mut inputs = Vec::with_capacity(self.inputs.len());
        let mut total = 0usize;
        for input in self.inputs {
            if input.binding < 1
                || input.binding == output_binding
                || inputs
                    .iter()
                    .any(|i: &InputArray| i.binding == input.binding)
            {
                return Err(invalid(format!(
                    "input binding {} is taken (0 is the parameters, {output_binding} the output)",
                    input.binding
                )));
            }
            if input.bytes.len() % 4 != 0 {
                return Err(invalid(format!(
                    "input {}: {} bytes is not a whole number of 4-byte elements",
                    input.binding,
                    input.bytes.len()
                )));
            }
            total += input.bytes.len();
            if total > MAX_INPUT_BYTES {
                return Err(NodeError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("a task's inputs are at most {MAX_INPUT_BYTES} bytes"),
                ));
            }
            inputs.push(InputArray {
                binding: input.binding,
                ty: input.ty,
                bytes: Arc::new(input.bytes.into_vec()),
            });
        }
        if output_binding == 0 {
            return Err(invalid(
                "binding 0 holds the parameters; put the output elsewhere",
            ));
        }
        let output = OutputSpec {
            binding: output_binding,
            ty: self.output.ty,
            length: self.output.length,
        };
        if output.length == 0 || output.bytes() > MAX_OUTPUT_BYTES {
            return Err(NodeError::new(
                ErrorCode::PayloadTooLarge,
                format!("output length is 1 to {} elements", MAX_OUTPUT_BYTES / 4),
            ));
        }
        if self.grid.is_empty() || self.grid.len() > 3 || self.grid.contains(&0) {
            return Err(invalid("`grid` is 1 to 3 positive numbers"));
        }
        let grid = [
            self.grid[0],
            *self.grid.get(1).unwrap_or(&1),
            *self.grid.get(2).unwrap_or(&1),
        ];
        let outermost = (0..3).rev().find(|&a| grid[a] > 1).unwrap_or(0);
        let split_axis = self.split.axis.unwrap_or(outermost);
        if split_axis > 2 {
            return Err(invalid("split axis is 0, 1 or 2"));
        }
        let reduce = self.reduce.unwrap_or(Reduce::Concat);
        let cells: u64 = grid.iter().map(|&g| u64::from(g)).product();
        if reduce == Reduce::Concat {
            if u64::from(output.length) % cells != 0 {
                return Err(invalid(format!(
                    "with reduce concat the output length ({}) is a multiple of the grid's {cells} cells",
                    output.length
                )));
            }
            if split_axis < outermost {
                return Err(invalid(
                    "with reduce concat the split axis is the outermost one longer than 1, so chunks are contiguous",
                ));
            }
        }
        let chunks = match self.split.chunks {
            None | Some(ChunkCount::Auto(_)) => None,
            Some(ChunkCount::Count(n)) if (1..=MAX_CHUNKS).contains(&n) => Some(n),
            Some(ChunkCount::Count(_)) => {
                return Err(invalid(format!("chunks is 1 to {MAX_CHUNKS} or \"auto\"")))
            }
        };
        let redundancy = self.redundancy.unwrap_or(1);
        if !(1..=MAX_REDUNDANCY).contains(&redundancy) {
            return Err(invalid(format!("redundancy is 1 to {MAX_REDUNDANCY}")));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TASK_TIMEOUT_MS);
        let chunk_timeout_ms = self.chunk_timeout_ms.unwrap_or(DEFAULT_CHUNK_TIMEOUT_MS);
        if !(1..=MAX_TASK_TIMEOUT_MS).contains(&timeout_ms)
            || !(1..=MAX_TASK_TIMEOUT_MS).contains(&chunk_timeout_ms)
        {
            return Err(invalid(format!(
                "timeouts are 1 to {MAX_TASK_TIMEOUT_MS} ms"
            )));
        }
        let task = Task {
            id: self.id,
            code,
            signature,
            params: params.into(),
            inputs,
            output,
            grid,
            split_axis,
            chunks,
            reduce,
            redundancy,
            local_only: self.local,
            timeout_ms,
            chunk_timeout_ms,
            work_stealing: self.work_stealing.unwrap_or(true),
        };
        if let Code::Kernel(_) = &task.code {
            // A kernel checks its inputs against the grid once, here, not per chunk.
            super::kernels::check(&task)?;
        } else if let Some(chunks) = task.chunks {
            // A split the submitter named is checked now (an automatic one fits by design).
            task.check_held_outputs(chunks.min(task.grid[task.split_axis]) as usize)?;
        }
        Ok(task)
    }
}

impl Task {
    /// Splits the task for `workers` workers into its chunk jobs.
    pub fn jobs(&self, workers: usize) -> Result<Vec<ChunkJob>, NodeError> {
        let chunks = self.chunks.unwrap_or_else(|| {
            // A built-in kernel's heavy task gets enough chunks to bound each one's work.
            let axis = self.grid[self.split_axis];
            let at_least = super::kernels::chunks_needed(self).min(axis);
            let chunks = auto_chunks(axis, workers).max(at_least).min(MAX_CHUNKS);
            chunks.min(self.most_held_chunks())
        });
        let ranges =
            split_grid(self.grid, self.split_axis, chunks).map_err(|e| invalid(e.to_string()))?;
        self.check_held_outputs(ranges.len())?;
        let cells: u64 = self.grid.iter().map(|&g| u64::from(g)).product();
        let per_cell = u64::from(self.output.length) / cells;
        let jobs = ranges
            .into_iter()
            .map(|range| {
                let length = match self.reduce {
                    Reduce::Concat => (per_cell * range.cells()) as u32,
                    _ => self.output.length,
                };
                ChunkJob {
                    task: self.id.clone(),
                    code: self.code.clone(),
                    signature: self.signature,
                    params: self.params.clone(),
                    inputs: self.inputs.clone(),
                    grid: self.grid,
                    range,
                    output: OutputSpec {
                        length,
                        ..self.output
                    },
                }
            })
            .collect::<Vec<_>>();
        jobs.iter().try_for_each(super::kernels::check_steps)?;
        Ok(jobs)
    }

    /// The most chunks whose outputs a reduction may hold at once: an element-wise one keeps
    /// every chunk's whole output until it combines them, bounded by [`MAX_OUTPUT_BYTES`] in
    /// all (concat's chunks are slices of the output, bounded already).
    fn most_held_chunks(&self) -> u32 {
        if self.reduce == Reduce::Concat {
            return MAX_CHUNKS;
        }
        let most = MAX_OUTPUT_BYTES / self.output.bytes().max(1);
        u32::try_from(most).unwrap_or(u32::MAX).clamp(1, MAX_CHUNKS)
    }

    fn check_held_outputs(&self, chunks: usize) -> Result<(), NodeError> {
        let most = self.most_held_chunks();
        if chunks <= most as usize {
            return Ok(());
        }
        Err(invalid(format!(
            "reduce {} keeps each chunk's {}-byte output until it combines them: {chunks} \
             chunks are more than {MAX_OUTPUT_BYTES} bytes; use at most {most} chunks",
            format!("{:?}", self.reduce).to_lowercase(),
            self.output.bytes()
        )))
    }

    /// Whether its chunks may run on other peers: built-in kernels always (they are part of
    /// every runtime), code only with a signature (which the receiving peer checks).
    pub fn may_travel(&self) -> bool {
        !self.local_only && (matches!(self.code, Code::Kernel(_)) || self.signature.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<Task, NodeError> {
        serde_json::from_value::<TaskRequest>(json)
            .map_err(|e| invalid(e.to_string()))?
            .validate()
    }

    #[test]
    fn mandelbrot_task_splits_into_contiguous_chunks() {
        let task = request(serde_json::json!({
            "id": "m", "type": "cpu", "kernel": "mandelbrot",
            "params": [["maxIter", 100]],
            "output": { "type": "u32", "length": 64 * 48 },
            "grid": [64, 48], "split": { "chunks": 5 },
        }))
        .unwrap();
        assert_eq!(task.split_axis, 1);
        let jobs = task.jobs(3).unwrap();
        assert_eq!(jobs.len(), 5);
        let total: u32 = jobs.iter().map(|j| j.output.length).sum();
        assert_eq!(total, 64 * 48);
        assert_eq!(jobs[0].param("maxIter"), Some(ParamValue::U32(100)));
        assert_eq!(task.jobs(2).unwrap().len(), 5, "an explicit count wins");
    }

    #[test]
    fn params_take_their_natural_types() {
        let task = request(serde_json::json!({
            "id": "p", "type": "webgpu",
            "shader": "@compute @workgroup_size(8, 8) fn main() {}",
            "params": [["w", 3], ["neg", -2], ["half", 0.5], ["one", {"f32": 1}]],
            "output": { "type": "f32", "length": 4 }, "grid": [4],
        }))
        .unwrap();
        let values: Vec<ParamValue> = task.params.iter().map(|p| p.value).collect();
        assert_eq!(
            values,
            [
                ParamValue::U32(3),
                ParamValue::I32(-2),
                ParamValue::F32(0.5),
                ParamValue::F32(1.0)
            ]
        );
        assert!(matches!(
            task.code,
            Code::Wgsl {
                tile: [8, 8, 1],
                ..
            }
        ));
        assert!(!task.may_travel(), "unsigned code stays on its node");
        let jobs = task.jobs(1).unwrap();
        let uniform = jobs[0].uniform_bytes();
        assert_eq!(uniform.len(), 64);
        assert_eq!(&uniform[32..36], &4u32.to_le_bytes(), "grid.x");
        assert_eq!(&uniform[48..52], &3u32.to_le_bytes(), "first param");
    }

    #[test]
    fn bad_tasks_get_clear_codes() {
        let base = serde_json::json!({
            "id": "t", "type": "cpu", "kernel": "square",
            "inputs": [{ "binding": 2, "type": "f32", "bytes": [0, 0, 0, 0] }],
            "output": { "type": "f32", "length": 1 }, "grid": [1],
        });
        assert!(
            request(base.clone()).unwrap().work_stealing,
            "on by default"
        );
        let mut no_stealing = base.clone();
        no_stealing["workStealing"] = false.into();
        assert!(!request(no_stealing).unwrap().work_stealing);
        let with = |k: &str, v: serde_json::Value| {
            let mut j = base.clone();
            j[k] = v;
            request(j).unwrap_err().code
        };
        assert_eq!(
            with("kernel", "rm -rf".into()),
            ErrorCode::TaskUnknownKernel
        );
        assert_eq!(with("id", "".into()), ErrorCode::TaskInvalid);
        assert_eq!(with("grid", serde_json::json!([0])), ErrorCode::TaskInvalid);
        assert_eq!(with("redundancy", 9.into()), ErrorCode::TaskInvalid);
        assert_eq!(with("workStealing", "no".into()), ErrorCode::TaskInvalid);
        assert_eq!(
            with("signature", "zz".into()),
            ErrorCode::CodeSignatureInvalid
        );
        assert_eq!(
            with("output", serde_json::json!({ "type": "f32", "length": 3 })),
            ErrorCode::TaskInvalid,
            "concat needs a whole number of elements per cell"
        );
        assert_eq!(
            with(
                "inputs",
                serde_json::json!([{ "binding": 1, "type": "f32", "bytes": [0, 0, 0, 0] }])
            ),
            ErrorCode::TaskInvalid,
            "binding 1 is the output"
        );
        assert_eq!(
            with("params", serde_json::json!([["x", { "u32": -1 }]])),
            ErrorCode::TaskInvalid
        );
        // Beyond f32's range: refused, not turned into infinity.
        for big in [
            serde_json::json!(1e39),
            serde_json::json!({ "f32": -1e300 }),
        ] {
            assert_eq!(
                with("params", serde_json::json!([["x", big]])),
                ErrorCode::TaskInvalid
            );
        }
    }

    #[test]
    fn element_wise_reductions_bound_the_outputs_they_hold() {
        // 32 MiB per chunk: four of them fit in MAX_OUTPUT_BYTES, five do not.
        let length = MAX_OUTPUT_BYTES / 4 / 4;
        let shader = "@compute @workgroup_size(64) fn main() {}";
        let task = |chunks: Option<u32>| {
            let mut json = serde_json::json!({
                "id": "r", "type": "webgpu", "shader": shader, "reduce": "max",
                "output": { "type": "f32", "length": length }, "grid": [1024],
            });
            if let Some(c) = chunks {
                json["split"] = serde_json::json!({ "chunks": c });
            }
            request(json)
        };
        let auto = task(None).expect("valid");
        assert_eq!(
            auto.jobs(8).expect("splits").len(),
            4,
            "auto picks what fits"
        );
        assert_eq!(task(Some(4)).unwrap().jobs(1).unwrap().len(), 4);
        let many = task(Some(5)).unwrap_err();
        assert_eq!(many.code, ErrorCode::TaskInvalid);
        assert!(
            many.message.contains("at most 4 chunks"),
            "{}",
            many.message
        );
    }

    #[test]
    fn reads_workgroup_sizes() {
        assert_eq!(
            workgroup_size_of("@compute @workgroup_size(64) fn main"),
            Some([64, 1, 1])
        );
        assert_eq!(
            workgroup_size_of("@workgroup_size( 8u, 4 ,2)"),
            Some([8, 4, 2])
        );
        assert_eq!(workgroup_size_of("@workgroup_size(WG)"), None);
        assert_eq!(workgroup_size_of("fn main() {}"), None);
    }
}
