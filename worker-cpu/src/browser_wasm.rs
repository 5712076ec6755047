//! Wasm kernels on the browser's WebAssembly engine (compiled, not interpreted). The module
//! is checked against the ABI first (`wasm_kernel::check_module`: no imports, a bounded
//! memory), compiled once per module (cached by SHA-256) and instantiated afresh per chunk.
//! The browser cannot meter a kernel: one that never returns holds this worker until the
//! tab's pool replaces it (see `sdk/compute.js`).

use std::cell::RefCell;

use js_sys::{Function, Object, Reflect, Uint8Array, WebAssembly};
use peercompute_core::{
    compute::{
        recent::Recent,
        task::ChunkJob,
        wasm_kernel::{self, check_module, range_in, KernelInstance, ALLOC_EXPORT, MEMORY_EXPORT},
    },
    ErrorCode, NodeError,
};
use sha2::{Digest, Sha256};
use wasm_bindgen::{JsCast, JsValue};

/// Compiled modules kept.
const MODULE_CACHE: usize = 8;

thread_local! {
    static MODULES: RefCell<Recent<[u8; 32], WebAssembly::Module>> =
        const { RefCell::new(Recent::new(MODULE_CACHE)) };
}

fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".into())
}

fn failed(what: &str, e: &JsValue) -> NodeError {
    NodeError::new(
        ErrorCode::TaskFailed,
        format!("the wasm kernel {what}: {}", js_message(e)),
    )
}

fn module(bytes: &[u8], entry: &str) -> Result<WebAssembly::Module, NodeError> {
    let key: [u8; 32] = Sha256::digest(bytes).into();
    if let Some(m) = MODULES.with_borrow_mut(|cache| cache.get(&key)) {
        return Ok(m);
    }
    check_module(bytes, entry)?;
    let module = WebAssembly::Module::new(&Uint8Array::from(bytes)).map_err(|e| {
        NodeError::new(
            ErrorCode::TaskInvalid,
            format!("wasm kernel: {}", js_message(&e)),
        )
    })?;
    MODULES.with_borrow_mut(|cache| cache.insert(key, module.clone()));
    Ok(module)
}

struct BrowserInstance {
    memory: WebAssembly::Memory,
    alloc: Function,
    entry: Function,
}

impl BrowserInstance {
    fn new(module: &WebAssembly::Module, entry: &str) -> Result<Self, NodeError> {
        let instance = WebAssembly::Instance::new(module, &Object::new())
            .map_err(|e| failed("did not start", &e))?;
        let exports = instance.exports();
        let get = |name: &str| Reflect::get(&exports, &JsValue::from_str(name)).ok();
        let abi = |what: &str| {
            NodeError::new(
                ErrorCode::TaskInvalid,
                format!("a wasm kernel exports {what}"),
            )
        };
        Ok(BrowserInstance {
            memory: get(MEMORY_EXPORT)
                .and_then(|m| m.dyn_into().ok())
                .ok_or_else(|| abi("its memory"))?,
            alloc: get(ALLOC_EXPORT)
                .and_then(|f| f.dyn_into().ok())
                .ok_or_else(|| abi(ALLOC_EXPORT))?,
            entry: get(entry)
                .and_then(|f| f.dyn_into().ok())
                .ok_or_else(|| abi("its entry"))?,
        })
    }

    /// A view of the whole memory, taken anew after every call (growth detaches the old one).
    fn bytes(&self) -> Uint8Array {
        Uint8Array::new(&self.memory.buffer())
    }
}

/// A wasm i32 result as JavaScript hands it back (a number).
fn as_i32(v: JsValue) -> i32 {
    v.as_f64().map_or(0, |n| n as i32)
}

impl KernelInstance for BrowserInstance {
    fn alloc(&mut self, len: u32) -> Result<u32, NodeError> {
        self.alloc
            .call1(&JsValue::NULL, &JsValue::from(len))
            .map(|p| as_i32(p) as u32)
            .map_err(|e| failed("trapped in pc_alloc", &e))
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), NodeError> {
        let memory = self.bytes();
        let range = range_in(memory.length() as usize, ptr, bytes.len())?;
        memory
            .subarray(range.start as u32, range.end as u32)
            .copy_from(bytes);
        Ok(())
    }

    fn zero(&mut self, ptr: u32, len: u32) -> Result<(), NodeError> {
        let memory = self.bytes();
        let range = range_in(memory.length() as usize, ptr, len as usize)?;
        memory.fill(0, range.start as u32, range.end as u32);
        Ok(())
    }

    fn read(&mut self, ptr: u32, len: u32) -> Result<Vec<u8>, NodeError> {
        let memory = self.bytes();
        let range = range_in(memory.length() as usize, ptr, len as usize)?;
        Ok(memory
            .subarray(range.start as u32, range.end as u32)
            .to_vec())
    }

    fn call(&mut self, bindings: u32, count: u32) -> Result<i32, NodeError> {
        self.entry
            .call2(
                &JsValue::NULL,
                &JsValue::from(bindings),
                &JsValue::from(count),
            )
            .map(as_i32)
            .map_err(|e| failed("trapped", &e))
    }
}

/// Runs one chunk of a wasm kernel.
pub(crate) fn run(job: &ChunkJob) -> Result<Vec<u8>, NodeError> {
    let (bytes, entry) = wasm_kernel::code_of(job)?;
    let module = module(bytes, entry)?;
    let mut instance = BrowserInstance::new(&module, entry)?;
    wasm_kernel::run_chunk(&mut instance, job)
}
