//! The wasm kernel engine of native peers: wasmi, an interpreter with fuel metering (a kernel
//! in an endless loop stops after [`FUEL_PER_CHUNK`] instructions) and a memory limit, so a
//! signed but broken kernel cannot hold a thread or the machine's memory.
//!
//! Compiled modules are cached by the SHA-256 of their bytes (a task's chunks all carry the
//! same module); every chunk gets a fresh instance.

use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};
use wasmi::{
    Config, Engine, Instance, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder,
    TrapCode, TypedFunc,
};

use super::{
    recent::Recent,
    task::{ChunkJob, Code},
    wasm_kernel::{
        self, check_module, range_in, KernelInstance, ALLOC_EXPORT, FUEL_PER_CHUNK,
        MAX_MEMORY_PAGES, MEMORY_EXPORT, PAGE_BYTES,
    },
};
use crate::{error::ErrorCode, NodeError};

/// Compiled modules kept.
const MODULE_CACHE: usize = 16;

type ModuleCache = Mutex<Recent<[u8; 32], Module>>;

fn engine() -> &'static (Engine, ModuleCache) {
    static ENGINE: OnceLock<(Engine, ModuleCache)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::default();
        config.consume_fuel(true);
        (Engine::new(&config), Mutex::new(Recent::new(MODULE_CACHE)))
    })
}

fn failed(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorCode::TaskFailed, message)
}

/// wasmi's error as a chunk failure: a trap or fuel running out.
fn trap(e: wasmi::Error) -> NodeError {
    match e.as_trap_code() {
        Some(TrapCode::OutOfFuel) => failed(
            "the wasm kernel ran past its instruction budget and was stopped (an endless loop?)",
        ),
        Some(code) => failed(format!("the wasm kernel trapped: {code}")),
        None => failed(format!("the wasm kernel failed: {e}")),
    }
}

/// The compiled module for `bytes`, from the cache or checked and compiled now.
fn module(bytes: &Arc<Vec<u8>>, entry: &str) -> Result<Module, NodeError> {
    let (engine, cache) = engine();
    let key: [u8; 32] = Sha256::digest(bytes.as_slice()).into();
    if let Some(m) = cache.lock().ok().and_then(|mut c| c.get(&key)) {
        return Ok(m);
    }
    check_module(bytes, entry)?;
    let module = Module::new(engine, bytes.as_slice())
        .map_err(|e| NodeError::new(ErrorCode::TaskInvalid, format!("wasm kernel: {e}")))?;
    if let Ok(mut c) = cache.lock() {
        c.insert(key, module.clone());
    }
    Ok(module)
}

struct WasmiInstance {
    store: Store<StoreLimits>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    entry: TypedFunc<(i32, i32), i32>,
}

impl WasmiInstance {
    fn new(module: &Module, entry: &str, fuel: u64) -> Result<Self, NodeError> {
        let (engine, _) = engine();
        let limits = StoreLimitsBuilder::new()
            .memory_size((MAX_MEMORY_PAGES * PAGE_BYTES) as usize)
            .instances(1)
            .build();
        let mut store = Store::new(engine, limits);
        store.limiter(|limits| limits);
        store.set_fuel(fuel).map_err(trap)?;
        let instance: Instance = Linker::new(engine)
            .instantiate_and_start(&mut store, module)
            .map_err(trap)?;
        let abi = |what: &str| {
            NodeError::new(
                ErrorCode::TaskInvalid,
                format!("a wasm kernel exports {what}"),
            )
        };
        let memory = instance
            .get_memory(&store, MEMORY_EXPORT)
            .ok_or_else(|| abi("its memory"))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&store, ALLOC_EXPORT)
            .map_err(|_| abi(ALLOC_EXPORT))?;
        let entry = instance
            .get_typed_func::<(i32, i32), i32>(&store, entry)
            .map_err(|_| abi("its entry"))?;
        Ok(WasmiInstance {
            store,
            memory,
            alloc,
            entry,
        })
    }
}

impl KernelInstance for WasmiInstance {
    fn alloc(&mut self, len: u32) -> Result<u32, NodeError> {
        self.alloc
            .call(&mut self.store, len as i32)
            .map(|p| p as u32)
            .map_err(trap)
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), NodeError> {
        let data = self.memory.data_mut(&mut self.store);
        let range = range_in(data.len(), ptr, bytes.len())?;
        data[range].copy_from_slice(bytes);
        Ok(())
    }

    fn zero(&mut self, ptr: u32, len: u32) -> Result<(), NodeError> {
        let data = self.memory.data_mut(&mut self.store);
        let range = range_in(data.len(), ptr, len as usize)?;
        data[range].fill(0);
        Ok(())
    }

    fn read(&mut self, ptr: u32, len: u32) -> Result<Vec<u8>, NodeError> {
        let data = self.memory.data(&self.store);
        Ok(data[range_in(data.len(), ptr, len as usize)?].to_vec())
    }

    fn call(&mut self, bindings: u32, count: u32) -> Result<i32, NodeError> {
        self.entry
            .call(&mut self.store, (bindings as i32, count as i32))
            .map_err(trap)
    }
}

/// Runs one chunk of a wasm kernel (`Code::Wasm`).
pub fn run(job: &ChunkJob) -> Result<Vec<u8>, NodeError> {
    run_with_fuel(job, FUEL_PER_CHUNK)
}

fn run_with_fuel(job: &ChunkJob, fuel: u64) -> Result<Vec<u8>, NodeError> {
    let (bytes, entry) = wasm_kernel::code_of(job)?;
    let module = module(bytes, entry)?;
    let mut instance = WasmiInstance::new(&module, entry, fuel)?;
    wasm_kernel::run_chunk(&mut instance, job)
}

/// Runs one CPU chunk here: a built-in kernel, or a wasm kernel in wasmi.
pub fn run_cpu(job: &ChunkJob) -> Result<Vec<u8>, NodeError> {
    match job.code {
        Code::Wasm { .. } => run(job),
        _ => super::kernels::run(job),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::{
        kernels::run_task_with,
        protocol::ComputeRequest,
        task::{Task, TaskRequest},
    };

    pub(crate) fn saxpy_module() -> Vec<u8> {
        wat::parse_str(include_str!("../../testdata/saxpy.wat")).expect("valid wat")
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn request(module: &[u8], entry: &str, n: usize, chunks: u32) -> serde_json::Value {
        let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 3.0).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 1.25).collect();
        serde_json::json!({
            "id": "saxpy", "type": "cpu", "wasm": module, "entry": entry,
            "params": [["a", { "f32": 1.5 }]],
            "inputs": [
                { "binding": 2, "type": "f32", "bytes": f32_bytes(&x) },
                { "binding": 3, "type": "f32", "bytes": f32_bytes(&y) },
            ],
            "output": { "type": "f32", "length": n }, "grid": [n], "split": { "chunks": chunks },
        })
    }

    fn task(json: serde_json::Value) -> Result<Task, NodeError> {
        serde_json::from_value::<TaskRequest>(json)
            .map_err(|e| NodeError::new(ErrorCode::TaskInvalid, e.to_string()))?
            .validate()
    }

    fn saxpy(n: usize) -> Vec<u8> {
        let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 3.0).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 1.25).collect();
        let out: Vec<f32> = x.iter().zip(&y).map(|(x, y)| 1.5f32 * x + y).collect();
        f32_bytes(&out)
    }

    #[test]
    fn a_wasm_kernel_gives_the_same_bits_however_the_task_splits() {
        let module = saxpy_module();
        for chunks in [1, 3, 7] {
            let t = task(request(&module, "run", 1000, chunks)).expect("valid");
            assert_eq!(t.jobs(1).expect("jobs").len(), chunks as usize);
            let got = run_task_with(&t, run_cpu).expect("runs");
            assert_eq!(got, saxpy(1000), "{chunks} chunks");
        }
    }

    #[test]
    fn a_wasm_job_crosses_the_wire_and_still_runs() {
        let t = task(request(&saxpy_module(), "run", 64, 2)).expect("valid");
        let job = t.jobs(1).expect("jobs").remove(1);
        let wire = ComputeRequest::Run {
            nonce: 9,
            chunk: 1,
            job: Box::new(job.clone()),
        }
        .encode();
        let ComputeRequest::Run { job: back, .. } = ComputeRequest::decode(&wire).expect("decodes")
        else {
            panic!("not a run request");
        };
        assert_eq!(*back, job);
        assert_eq!(run(&back).expect("runs"), saxpy(64)[32 * 4..]);
        // The module is bounded on the wire: a frame that claims a larger one is refused.
        let mut huge = job.clone();
        huge.code = Code::Wasm {
            module: Arc::new(vec![0; wasm_kernel::MAX_MODULE_BYTES + 1]),
            entry: "run".into(),
        };
        let wire = ComputeRequest::Run {
            nonce: 9,
            chunk: 1,
            job: Box::new(huge),
        }
        .encode();
        assert_eq!(
            ComputeRequest::decode(&wire).expect_err("too big").code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn misbehaving_kernels_fail_their_chunk_and_the_engine_keeps_working() {
        let module = saxpy_module();
        let job = |entry: &str| {
            task(request(&module, entry, 16, 1))
                .expect("valid")
                .jobs(1)
                .expect("jobs")
                .remove(0)
        };
        let err = run_with_fuel(&job("spin"), 1_000_000).expect_err("stopped");
        assert_eq!(err.code, ErrorCode::TaskFailed);
        assert!(
            err.message.contains("instruction budget"),
            "{}",
            err.message
        );
        for (entry, says) in [
            ("boom", "trapped"),
            ("fail", "returned error 42"),
            ("wild", "trapped"),
            ("hog", "returned error 3"),
        ] {
            let err = run(&job(entry)).expect_err(entry);
            assert_eq!(err.code, ErrorCode::TaskFailed, "{entry}");
            assert!(err.message.contains(says), "{entry}: {}", err.message);
        }
        assert_eq!(run(&job("run")).expect("still runs"), saxpy(16));
    }

    #[test]
    fn an_output_the_kernel_cannot_hold_fails_cleanly() {
        // 64 pages (4 MiB) of memory at most; the output alone needs 8 MiB.
        let n = 2 * 1024 * 1024;
        let mut json = request(&saxpy_module(), "run", 4, 1);
        json["output"]["length"] = n.into();
        json["grid"] = serde_json::json!([n]);
        json["inputs"] = serde_json::json!([]);
        let job = task(json).expect("valid").jobs(1).expect("jobs").remove(0);
        let err = run(&job).expect_err("no room");
        assert_eq!(err.code, ErrorCode::TaskFailed);
        assert!(
            err.message.contains("could not allocate"),
            "{}",
            err.message
        );
    }

    #[test]
    fn modules_that_break_the_abi_are_refused_before_they_run() {
        let wat_src = include_str!("../../testdata/saxpy.wat");
        let cases: Vec<(String, &str)> = vec![
            (
                wat_src.replace(
                    "(memory (export \"memory\") 1 64)",
                    "(import \"env\" \"now\" (func (result f64)))\n(memory (export \"memory\") 1 64)",
                ),
                "imports a function env.now",
            ),
            (
                wat_src.replace("(memory (export \"memory\") 1 64)", "(memory (export \"memory\") 1)"),
                "memory maximum",
            ),
            (
                wat_src.replace("1 64)", "1 5000)"),
                "memory maximum",
            ),
            (
                wat_src.replace("(global $heap", "(memory 1)\n  (global $heap"),
                "one memory",
            ),
            (
                wat_src.replace("(global $heap", "(table 1 funcref)\n  (global $heap"),
                "tables declare a maximum",
            ),
            (
                wat_src.replace("(export \"pc_alloc\")", ""),
                "pc_alloc",
            ),
            (
                wat_src.replace("(func (export \"run\") (param $b i32)", "(func (export \"run\") (param $b i64)"),
                "entry `run(",
            ),
        ];
        for (source, says) in cases {
            let module = wat::parse_str(&source).expect("valid wat");
            let err = task(request(&module, "run", 8, 1)).expect_err(says);
            assert_eq!(err.code, ErrorCode::TaskInvalid, "{says}");
            assert!(err.message.contains(says), "{says}: {}", err.message);
        }
        let err = task(request(b"(module)", "run", 8, 1)).expect_err("text");
        assert!(err.message.contains("binary"), "{}", err.message);
        let err = task(request(&saxpy_module(), "nope", 8, 1)).expect_err("entry");
        assert!(err.message.contains("nope"), "{}", err.message);
        let err = task(request(b"\0asm\x01\0\0\0\x01\xff", "run", 8, 1)).expect_err("garbage");
        assert_eq!(err.code, ErrorCode::TaskInvalid);
        let mut big = saxpy_module();
        big.resize(wasm_kernel::MAX_MODULE_BYTES + 1, 0);
        let err = task(request(&big, "run", 8, 1)).expect_err("big");
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        // A module whose code is invalid passes the ABI check but not the engine's.
        let mut job = task(request(&saxpy_module(), "run", 8, 1))
            .expect("valid")
            .jobs(1)
            .expect("jobs")
            .remove(0);
        // An `i32` entry that returns an `f32`: wat only parses, wasmi's validation refuses it.
        let broken = wat::parse_str(wat_src.replace(
            "(func (export \"fail\") (param i32 i32) (result i32)\n    (i32.const 42))",
            "(func (export \"fail\") (param i32 i32) (result i32)\n    (f32.const 42))",
        ))
        .expect("parses");
        job.code = Code::Wasm {
            module: Arc::new(broken),
            entry: "run".into(),
        };
        let err = run(&job).expect_err("broken code");
        assert_eq!(err.code, ErrorCode::TaskInvalid, "{err:?}");
    }

    proptest::proptest! {
        #[test]
        fn the_abi_check_never_panics(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut bytes = b"\0asm\x01\0\0\0".to_vec();
            bytes.extend(tail);
            let _ = wasm_kernel::check_module(&bytes, "run");
        }
    }
}
