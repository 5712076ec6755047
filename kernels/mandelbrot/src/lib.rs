//! An example PeerCompute wasm kernel: the Mandelbrot set, computing exactly what the built-in
//! `mandelbrot` kernel computes (the same f32 operations in the same order), so a task run
//! with either gives the same bits.
//!
//! The ABI (version 1, `peercompute_core::compute::wasm_kernel`): the module imports nothing,
//! exports its `memory` (with a declared maximum, see `build.rs`), `pc_alloc(len) -> ptr` and
//! `run(bindings, count) -> status`. The host hands over a table of `{ binding, ptr, len }`
//! records: binding 0 the parameters, then the output, then the inputs.
//!
//! Parameters, in order: `maxIter` (u32), `x0`, `y0`, `x1`, `y1` (f32); any left out take
//! the built-in kernel's defaults (256, the view -2, -1.25 to 0.5, 1.25). The output is one
//! u32 per cell of the chunk.
//!
//! Build and sign:
//! ```text
//! cargo build -p peercompute-kernel-mandelbrot --target wasm32-unknown-unknown --profile wasm-release
//! relay-server sign --root-key root.key target/wasm32-unknown-unknown/wasm-release/peercompute_kernel_mandelbrot.wasm
//! ```
#![cfg_attr(target_arch = "wasm32", no_std)]

/// What a chunk of the grid asks for: the parts of the parameters block this kernel reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chunk {
    /// First cell.
    pub offset: [u32; 3],
    /// Cells along each axis.
    pub size: [u32; 3],
    /// The whole grid.
    pub grid: [u32; 3],
}

/// Computes the chunk's cells into `out` (one u32 per cell, row major), with the parameters
/// as raw 4-byte words.
pub fn mandelbrot(chunk: &Chunk, params: &[u32], out: &mut [u32]) {
    let f = |i: usize, default: f32| params.get(i).map_or(default, |&w| f32::from_bits(w));
    let max_iter = params.first().copied().unwrap_or(256);
    let (x0, y0, x1, y1) = (f(1, -2.0), f(2, -1.25), f(3, 0.5), f(4, 1.25));
    let (w, h) = (chunk.grid[0] as f32, chunk.grid[1] as f32);
    let [ox, oy, _] = chunk.offset;
    let [sx, sy, sz] = chunk.size;
    let mut cells = out.iter_mut();
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
                match cells.next() {
                    Some(cell) => *cell = i,
                    None => return,
                }
            }
        }
    }
}

/// The ABI glue: allocation, the bindings table, status codes.
#[cfg(target_arch = "wasm32")]
pub mod abi {
    use core::arch::wasm32;

    /// `run` status: the bindings table is not parameters + output.
    const BAD_BINDINGS: i32 = 1;
    /// `run` status: the output is not one u32 per cell.
    const BAD_OUTPUT: i32 = 2;

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        wasm32::unreachable()
    }

    /// Whole fresh pages at the end of memory: the host makes a handful of allocations on
    /// an instance that lives for one chunk, so nothing is ever freed.
    #[no_mangle]
    pub extern "C" fn pc_alloc(len: u32) -> u32 {
        let pages = (len as usize).div_ceil(65536).max(1);
        match wasm32::memory_grow(0, pages) {
            usize::MAX => 0,
            old => (old * 65536) as u32,
        }
    }

    /// # Safety
    /// Called by the host with a table of `count` records that point into this memory.
    #[no_mangle]
    pub unsafe extern "C" fn run(bindings: *const [u32; 3], count: u32) -> i32 {
        if count < 2 {
            return BAD_BINDINGS;
        }
        // SAFETY: the host wrote `count` records at `bindings` (ABI v1).
        let table = unsafe { core::slice::from_raw_parts(bindings, count as usize) };
        let [[0, uniform, uniform_len], [_, out, out_len]] = [table[0], table[1]] else {
            return BAD_BINDINGS;
        };
        if uniform_len < 48 || uniform_len % 4 != 0 || out_len % 4 != 0 {
            return BAD_BINDINGS;
        }
        // SAFETY: each record is a buffer the host placed through `pc_alloc`; pages are
        // 64 KiB-aligned, so u32 access is aligned.
        let words =
            unsafe { core::slice::from_raw_parts(uniform as *const u32, uniform_len as usize / 4) };
        let out = unsafe { core::slice::from_raw_parts_mut(out as *mut u32, out_len as usize / 4) };
        let chunk = super::Chunk {
            offset: [words[0], words[1], words[2]],
            size: [words[4], words[5], words[6]],
            grid: [words[8], words[9], words[10]],
        };
        let cells = chunk.size.iter().map(|&s| s as usize).product::<usize>();
        if out.len() != cells {
            return BAD_OUTPUT;
        }
        super::mandelbrot(&chunk, &words[12..], out);
        0
    }
}

#[cfg(test)]
mod tests {
    use peercompute_core::compute::{kernels, task::TaskRequest};

    use super::*;

    /// The kernel's arithmetic equals the built-in kernel's, chunk by chunk (the browser test
    /// runs the built module through the ABI on both engines).
    #[test]
    fn it_matches_the_built_in_mandelbrot_bit_for_bit() {
        let task = serde_json::from_value::<TaskRequest>(serde_json::json!({
            "id": "m", "type": "cpu", "kernel": "mandelbrot",
            "params": [["maxIter", 200], ["x0", { "f32": -1.5 }], ["y0", { "f32": -1.0 }],
                       ["x1", { "f32": 0.5 }], ["y1", { "f32": 1.0 }]],
            "output": { "type": "u32", "length": 96 * 64 }, "grid": [96, 64], "split": { "chunks": 5 },
        }))
        .expect("parses")
        .validate()
        .expect("valid");
        for job in task.jobs(1).expect("jobs") {
            let want = kernels::run(&job).expect("runs");
            let params: Vec<u32> = job
                .params
                .iter()
                .map(|p| u32::from_le_bytes(p.value.to_le_bytes()))
                .collect();
            let chunk = Chunk {
                offset: job.range.offset,
                size: job.range.size,
                grid: job.grid,
            };
            let mut out = vec![0u32; job.output.length as usize];
            mandelbrot(&chunk, &params, &mut out);
            let got: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(got, want, "chunk at {:?}", job.range.offset);
        }
    }
}
