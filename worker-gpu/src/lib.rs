//! PeerCompute's GPU executor in a dedicated worker (`worker.js`): the core crate's
//! [`GpuExecutor`] on the browser's WebGPU, the same code a native peer runs on Vulkan.
//!
//! Like `worker-cpu`, it speaks the peer compute protocol's frames: a run request in, a result
//! or error response out, so a chunk is checked and bounded here exactly as when it arrives
//! from a peer. Only WGSL runs here, never JavaScript.
#![cfg(all(target_family = "wasm", target_os = "unknown"))]

use std::{cell::RefCell, rc::Rc};

use peercompute_core::{
    compute::{
        gpu::GpuExecutor,
        protocol::{ComputeRequest, ComputeResponse},
    },
    ErrorCode, NodeError,
};
use wasm_bindgen::prelude::*;

thread_local! {
    static GPU: RefCell<Option<Rc<GpuExecutor>>> = const { RefCell::new(None) };
}

/// Opens the adapter (software ones included) and returns its description as JSON:
/// `{ name, backend, fallback, maxStorageBufferBindingSize, maxWorkgroupsPerDimension }`.
/// Rejects with the reason when the browser has no WebGPU adapter.
#[wasm_bindgen(js_name = openGpu)]
pub async fn open_gpu() -> Result<String, JsValue> {
    let gpu = GpuExecutor::new()
        .await
        .map_err(|e| JsValue::from_str(&e.message))?;
    let info = serde_json::to_string(gpu.info()).map_err(|e| JsValue::from_str(&e.to_string()))?;
    GPU.with(|g| *g.borrow_mut() = Some(Rc::new(gpu)));
    Ok(info)
}

/// Runs one chunk: an encoded run request in, an encoded response out.
#[wasm_bindgen]
pub async fn run(request: Vec<u8>) -> Vec<u8> {
    let response = match ComputeRequest::decode(&request) {
        Ok(ComputeRequest::Run { job, .. }) => match GPU.with(|g| g.borrow().clone()) {
            Some(gpu) => match gpu.run(&job).await {
                Ok(bytes) => ComputeResponse::Result(bytes),
                Err(e) => ComputeResponse::Error(e),
            },
            None => ComputeResponse::Error(NodeError::new(
                ErrorCode::TaskUnsupported,
                "the GPU worker has no adapter",
            )),
        },
        Ok(ComputeRequest::Cancel { .. }) => ComputeResponse::Ack,
        Err(e) => ComputeResponse::Error(NodeError::new(ErrorCode::BadRequest, e.message)),
    };
    response.encode()
}
