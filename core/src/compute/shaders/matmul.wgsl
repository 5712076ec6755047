// C = A·B for f32 matrices, the same contract as the built-in CPU kernel `matmul`:
// grid [n, m]; binding 2: A (m×k, row-major); binding 3: B (k×n); binding 1: the chunk's cells
// of C, row-major. Run it with `tile: [64, 64]`: each 16×16 workgroup computes a 64×64 block
// of C, each invocation a 4×4 block, through 16-deep slices of A and B staged in workgroup
// memory. Every cell sums its k products in increasing k, like the CPU kernel.
struct Chunk {
  offset: vec4<u32>,
  size: vec4<u32>,
  grid: vec4<u32>,
}

@group(0) @binding(0) var<uniform> chunk: Chunk;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;
const THREADS: u32 = 256u;

var<workgroup> tile_a: array<array<f32, 64>, 16>; // [kk][row]
var<workgroup> tile_b: array<array<f32, 64>, 16>; // [kk][col]

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let n = chunk.grid.x;
  let m = chunk.grid.y;
  let k = arrayLength(&a) / m;
  let row0 = chunk.offset.y + wid.y * TILE;
  let col0 = chunk.offset.x + wid.x * TILE;
  let row_end = chunk.offset.y + chunk.size.y;
  let col_end = chunk.offset.x + chunk.size.x;
  let t = lid.y * 16u + lid.x;
  var acc: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < k; k0 += DEPTH) {
    for (var i = 0u; i < 4u; i++) {
      let idx = t + i * THREADS;
      let ra = idx / DEPTH;
      let ka = idx % DEPTH;
      var va = 0.0;
      if (row0 + ra < row_end && k0 + ka < k) {
        va = a[(row0 + ra) * k + k0 + ka];
      }
      tile_a[ka][ra] = va;
      let kb = idx / TILE;
      let cb = idx % TILE;
      var vb = 0.0;
      if (k0 + kb < k && col0 + cb < col_end) {
        vb = b[(k0 + kb) * n + col0 + cb];
      }
      tile_b[kb][cb] = vb;
    }
    workgroupBarrier();
    let depth = min(DEPTH, k - k0);
    for (var kk = 0u; kk < depth; kk++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        av[i] = tile_a[kk][lid.y + i * 16u];
        bv[i] = tile_b[kk][lid.x + i * 16u];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i][j] = acc[i][j] + av[i] * bv[j];
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    for (var j = 0u; j < 4u; j++) {
      let row = row0 + lid.y + i * 16u;
      let col = col0 + lid.x + j * 16u;
      if (row < row_end && col < col_end) {
        c[(row - chunk.offset.y) * chunk.size.x + (col - chunk.offset.x)] = acc[i][j];
      }
    }
  }
}
