//! The WGSL twins of the built-in CPU kernels (same inputs, params and output layout), for
//! tests, benchmarks and the demo. Results match the CPU kernels exactly where the arithmetic
//! is exact (integers, small integer-valued floats); otherwise a GPU may fuse multiply-adds.

/// `matmul` (run with `tile: [64, 64]`).
pub const MATMUL: &str = include_str!("shaders/matmul.wgsl");
/// Cells one matmul workgroup covers.
pub const MATMUL_TILE: [u32; 3] = [64, 64, 1];
/// `mandelbrot` (one invocation per cell).
pub const MANDELBROT: &str = include_str!("shaders/mandelbrot.wgsl");

/// Integer-valued matrices A (m×k) and B (k×n) as little-endian f32 bytes: every product and
/// sum of their matmul is exact in f32, so any correct matmul (CPU kernel, WGSL on any GPU,
/// fused multiply-adds or not) gives the same bits. For tests and benchmarks.
pub fn exact_matrices(m: u32, k: u32, n: u32) -> (Vec<u8>, Vec<u8>) {
    let a = (0..m * k)
        .flat_map(|i| ((i % 7) as f32 - 3.0).to_le_bytes())
        .collect();
    let b = (0..k * n)
        .flat_map(|i| ((i % 5) as f32 - 2.0).to_le_bytes())
        .collect();
    (a, b)
}
