//! PeerCompute's CPU executor, one per dedicated worker of a tab's pool (`worker.js`).
//!
//! It speaks the peer compute protocol's own frames (`peercompute_core::compute::protocol`):
//! a run request in, a result or error response out, so a chunk is checked and bounded here
//! exactly as when it arrives from a peer. The built-in kernels are the core crate's, the same
//! code a native peer runs, so results are bit-identical. Wasm kernels (signed modules, ABI in
//! `peercompute_core::compute::wasm_kernel`) run on the browser's own WebAssembly engine
//! ([`browser_wasm`]); the host side of the ABI is the core crate's too.
#![cfg(all(target_family = "wasm", target_os = "unknown"))]

mod browser_wasm;

use peercompute_core::{
    compute::{
        kernels,
        protocol::{ComputeRequest, ComputeResponse},
        task::Code,
    },
    ErrorCode, NodeError,
};
use wasm_bindgen::prelude::*;

/// Runs one chunk: an encoded run request in, an encoded response out.
#[wasm_bindgen]
pub fn run(request: &[u8]) -> Vec<u8> {
    let response = match ComputeRequest::decode(request) {
        Ok(ComputeRequest::Run { job, .. }) => {
            let result = match job.code {
                Code::Wasm { .. } => browser_wasm::run(&job),
                _ => kernels::run(&job),
            };
            match result {
                Ok(bytes) => ComputeResponse::Result(bytes),
                Err(e) => ComputeResponse::Error(e),
            }
        }
        Ok(ComputeRequest::Cancel { .. }) => ComputeResponse::Ack,
        Err(e) => ComputeResponse::Error(NodeError::new(ErrorCode::BadRequest, e.message)),
    };
    response.encode()
}

/// This worker's speed score (built-in mandelbrot, Mcells/s).
#[wasm_bindgen]
pub fn score() -> f64 {
    kernels::benchmark_score()
}
