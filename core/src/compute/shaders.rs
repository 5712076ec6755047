//! The WGSL twins of the built-in CPU kernels (same inputs, params and output layout), for
//! tests, benchmarks and the demo. Results match the CPU kernels exactly where the arithmetic
//! is exact (integers, small integer-valued floats); otherwise a GPU may fuse multiply-adds.

/// `matmul` (run with `tile: [128, 128]`).
pub const MATMUL: &str = include_str!("shaders/matmul.wgsl");
/// Cells one matmul workgroup covers.
pub const MATMUL_TILE: [u32; 3] = [128, 128, 1];
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

#[cfg(test)]
mod tests {
    use super::*;

    /// WebGPU guarantees only its default limits, and wgpu does not check workgroup memory
    /// natively (Dawn does, in the browser): the built-in twins must fit them on any adapter.
    #[test]
    fn the_twins_fit_webgpus_default_limits() {
        // `maxComputeWorkgroupStorageSize` and `maxComputeInvocationsPerWorkgroup`, by the spec.
        const WORKGROUP_STORAGE: u32 = 16384;
        const INVOCATIONS: u32 = 256;
        for (name, source) in [("matmul", MATMUL), ("mandelbrot", MANDELBROT)] {
            let module = naga::front::wgsl::parse_str(source).expect("parses");
            let workgroup_bytes: u32 = module
                .global_variables
                .iter()
                .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
                .map(|(_, v)| module.types[v.ty].inner.size(module.to_ctx()))
                .sum();
            assert!(
                workgroup_bytes <= WORKGROUP_STORAGE,
                "{name}: {workgroup_bytes} bytes of workgroup memory"
            );
            let entry = module.entry_points.iter().find(|e| e.name == "main");
            let [x, y, z] = entry.expect("main").workgroup_size;
            assert!(x * y * z <= INVOCATIONS, "{name}: {x}×{y}×{z}");
        }
    }
}
