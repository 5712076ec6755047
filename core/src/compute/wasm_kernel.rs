//! CPU kernels shipped as WebAssembly modules: the ABI, the checks a module passes before it
//! is compiled, and the host side of a call, written once for every engine (wasmi on native
//! peers, [`super::wasm_native`]; the browser's own engine in `worker-cpu`).
//!
//! # ABI version 1
//!
//! A kernel module **imports nothing**, has one memory, declares a maximum for its tables,
//! and exports:
//! - `memory`: its linear memory, 32-bit, not shared, with a declared maximum of at most
//!   [`MAX_MEMORY_PAGES`] pages (Rust: `-C link-arg=--max-memory=BYTES`);
//! - `pc_alloc(len: i32) -> i32`: a pointer to `len` writable bytes, 8-aligned, or 0 when it
//!   cannot allocate;
//! - the entry, `run` unless the task names another, `(bindings: i32, count: i32) -> i32`,
//!   returning 0 on success (anything else fails the chunk with that number in the message).
//!
//! For every chunk the host instantiates the module afresh (no state survives a chunk),
//! places each buffer through `pc_alloc`, and calls the entry with `count` records of three
//! u32 `{ binding, ptr, len_bytes }` at `bindings`, in this order:
//! 1. binding 0, the parameters: what a WGSL shader sees at `@binding(0)`
//!    ([`ChunkJob::uniform_bytes`]) without the final padding: the chunk's `offset`, `size`
//!    and the `grid`, three u32 each, each padded to 16 bytes, then the task's parameters in
//!    order, 4 raw little-endian bytes each, so `(len_bytes - 48) / 4` is their count (pass
//!    `{ f32: -2 }` to make a negative number a float);
//! 2. the output (zeroed, the chunk's output length);
//! 3. every input array, in the task's order.
//!
//! The kernel writes the chunk's output (the cells `offset..offset + size` of `grid`, row
//! major, as for a WGSL shader) and returns 0; the host reads the output back. A trap, a
//! non-zero return, running out of memory or past [`FUEL_PER_CHUNK`] instructions (native
//! peers) fails the chunk with `TASK_FAILED`; a module that breaks the ABI is `TASK_INVALID`.

use wasmparser::{CompositeInnerType, ExternalKind, Parser, Payload, TypeRef, ValType};

use std::sync::Arc;

use super::task::{ChunkJob, Code};
use crate::{error::ErrorCode, NodeError};

/// Largest kernel module, in bytes (it travels with every chunk).
pub const MAX_MODULE_BYTES: usize = 1024 * 1024;
/// Largest memory a kernel may declare: 4096 pages of 64 KiB, 256 MiB.
pub const MAX_MEMORY_PAGES: u64 = 4096;
/// Most entries a kernel's tables may declare (function tables for indirect calls).
pub const MAX_TABLE_ENTRIES: u64 = 1 << 20;
/// Bytes in a wasm page.
pub const PAGE_BYTES: u64 = 65536;
/// Instructions a native peer lets one chunk run (about half a minute in wasmi), so a kernel
/// in an endless loop frees its thread.
pub const FUEL_PER_CHUNK: u64 = 30_000_000_000;
/// Entry point when the task names none.
pub const DEFAULT_ENTRY: &str = "run";
/// The allocator export.
pub const ALLOC_EXPORT: &str = "pc_alloc";
/// The memory export.
pub const MEMORY_EXPORT: &str = "memory";

fn invalid(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::TaskInvalid, message)
}

fn failed(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::TaskFailed, message)
}

/// Checks a module against the ABI (imports, memory, exports and their signatures) without
/// compiling it; the engine validates the code itself when it compiles.
pub fn check_module(bytes: &[u8], entry: &str) -> Result<(), NodeError> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(NodeError::new(
            ErrorCode::PayloadTooLarge,
            format!("a wasm kernel is at most {MAX_MODULE_BYTES} bytes"),
        ));
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(invalid("a wasm kernel is a binary WebAssembly module"));
    }
    let malformed = |e: wasmparser::BinaryReaderError| invalid(format!("wasm kernel: {e}"));
    // Function signatures by type index, then each function's type index.
    let mut types: Vec<Option<(Vec<ValType>, Vec<ValType>)>> = Vec::new();
    let mut functions: Vec<u32> = Vec::new();
    let mut memories = Vec::new();
    let mut tables = Vec::new();
    let mut exports: Vec<(String, ExternalKind, u32)> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.map_err(malformed)?.into_types() {
                        types.push(match &sub.composite_type.inner {
                            CompositeInnerType::Func(f) => {
                                Some((f.params().to_vec(), f.results().to_vec()))
                            }
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                if let Some(import) = reader.into_iter().next() {
                    let import = import.map_err(malformed)?;
                    let what = match import.ty {
                        TypeRef::Memory(_) => "a memory",
                        TypeRef::Func(_) => "a function",
                        _ => "an item",
                    };
                    return Err(invalid(format!(
                        "a wasm kernel imports nothing, and this one imports {what} {}.{} (kernels get no host functions: no I/O, no clock)",
                        import.module.chars().take(64).collect::<String>(),
                        import.name.chars().take(64).collect::<String>()
                    )));
                }
            }
            Payload::FunctionSection(reader) => {
                for f in reader {
                    functions.push(f.map_err(malformed)?);
                }
            }
            Payload::TableSection(reader) => {
                for t in reader {
                    tables.push(t.map_err(malformed)?.ty);
                }
            }
            Payload::MemorySection(reader) => {
                for m in reader {
                    memories.push(m.map_err(malformed)?);
                }
            }
            Payload::ExportSection(reader) => {
                for e in reader {
                    let e = e.map_err(malformed)?;
                    exports.push((e.name.to_owned(), e.kind, e.index));
                }
            }
            _ => {}
        }
    }
    let export = |name: &str, kind: ExternalKind| {
        exports
            .iter()
            .find(|(n, k, _)| n == name && *k == kind)
            .map(|(_, _, index)| *index)
    };
    // Every growable thing is bounded: one memory (the exported one, checked below) and
    // tables with a declared maximum.
    if memories.len() > 1 {
        return Err(invalid("a wasm kernel has one memory"));
    }
    if tables
        .iter()
        .any(|t| t.maximum.is_none_or(|max| max > MAX_TABLE_ENTRIES))
    {
        return Err(invalid(format!(
            "a wasm kernel's tables declare a maximum of at most {MAX_TABLE_ENTRIES} entries"
        )));
    }
    let memory = export(MEMORY_EXPORT, ExternalKind::Memory)
        .and_then(|i| memories.get(i as usize))
        .ok_or_else(|| invalid("a wasm kernel exports its `memory`"))?;
    if memory.memory64 || memory.shared {
        return Err(invalid("a wasm kernel's memory is 32-bit and not shared"));
    }
    match memory.maximum {
        Some(max) if max <= MAX_MEMORY_PAGES => {}
        _ => {
            return Err(invalid(format!(
                "a wasm kernel declares a memory maximum of at most {MAX_MEMORY_PAGES} pages ({} MiB); with Rust link with `-C link-arg=--max-memory=BYTES`",
                MAX_MEMORY_PAGES * PAGE_BYTES / (1024 * 1024)
            )))
        }
    }
    let signature = |name: &str| {
        export(name, ExternalKind::Func)
            .and_then(|i| functions.get(i as usize))
            .and_then(|&t| types.get(t as usize).cloned().flatten())
    };
    use ValType::I32;
    if signature(ALLOC_EXPORT) != Some((vec![I32], vec![I32])) {
        return Err(invalid(format!(
            "a wasm kernel exports `{ALLOC_EXPORT}(len: i32) -> i32`"
        )));
    }
    if signature(entry) != Some((vec![I32, I32], vec![I32])) {
        return Err(invalid(format!(
            "a wasm kernel exports its entry `{}(bindings: i32, count: i32) -> i32`",
            entry.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// A wasm job's module and entry point.
pub fn code_of(job: &ChunkJob) -> Result<(&Arc<Vec<u8>>, &str), NodeError> {
    match &job.code {
        Code::Wasm { module, entry } => Ok((module, entry)),
        _ => Err(invalid("not a wasm kernel")),
    }
}

/// One fresh instance of a kernel module, as an engine exposes it to the host side.
pub trait KernelInstance {
    /// Calls `pc_alloc(len)`.
    fn alloc(&mut self, len: u32) -> Result<u32, NodeError>;
    /// Copies `bytes` into memory at `ptr`.
    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), NodeError>;
    /// Zeroes `len` bytes of memory at `ptr`.
    fn zero(&mut self, ptr: u32, len: u32) -> Result<(), NodeError>;
    /// Copies `len` bytes out of memory at `ptr`.
    fn read(&mut self, ptr: u32, len: u32) -> Result<Vec<u8>, NodeError>;
    /// Calls the entry point.
    fn call(&mut self, bindings: u32, count: u32) -> Result<i32, NodeError>;
}

/// `pc_alloc(len)`, its failure an error.
fn allocate(instance: &mut impl KernelInstance, len: usize) -> Result<u32, NodeError> {
    let len = u32::try_from(len).map_err(|_| failed("buffer over 4 GiB"))?;
    match instance.alloc(len)? {
        0 if len > 0 => Err(failed(format!(
            "the kernel could not allocate {len} bytes ({ALLOC_EXPORT} returned 0)"
        ))),
        ptr => Ok(ptr),
    }
}

/// Copies `bytes` into freshly allocated kernel memory.
fn place(instance: &mut impl KernelInstance, bytes: &[u8]) -> Result<u32, NodeError> {
    let ptr = allocate(instance, bytes.len())?;
    instance.write(ptr, bytes)?;
    Ok(ptr)
}

/// Runs one chunk on a fresh instance: places the parameters, the output and the inputs,
/// calls the entry and reads the output back.
pub fn run_chunk(instance: &mut impl KernelInstance, job: &ChunkJob) -> Result<Vec<u8>, NodeError> {
    let output_len = job.output.bytes();
    let mut table = Vec::with_capacity(12 * (2 + job.inputs.len()));
    let mut record = |binding: u32, ptr: u32, len: usize| {
        for word in [binding, ptr, len as u32] {
            table.extend_from_slice(&word.to_le_bytes());
        }
    };
    let mut uniform = job.uniform_bytes();
    uniform.truncate(48 + 4 * job.params.len());
    let ptr = place(instance, &uniform)?;
    record(0, ptr, uniform.len());
    let output = allocate(instance, output_len)?;
    instance.zero(output, output_len as u32)?;
    record(job.output.binding, output, output_len);
    for input in &job.inputs {
        let ptr = place(instance, &input.bytes)?;
        record(input.binding, ptr, input.bytes.len());
    }
    let bindings = place(instance, &table)?;
    let count = 2 + job.inputs.len() as u32;
    match instance.call(bindings, count)? {
        0 => instance.read(output, output_len as u32),
        code => Err(failed(format!(
            "the wasm kernel of task {:?} returned error {code}",
            job.task
        ))),
    }
}

/// Bounds check for an engine's memory access.
pub fn range_in(
    memory_len: usize,
    ptr: u32,
    len: usize,
) -> Result<std::ops::Range<usize>, NodeError> {
    let start = ptr as usize;
    start
        .checked_add(len)
        .filter(|&end| end <= memory_len)
        .map(|end| start..end)
        .ok_or_else(|| {
            failed(format!(
                "the kernel's memory has no {len} bytes at {ptr} (its pc_alloc returned a bad pointer)"
            ))
        })
}
