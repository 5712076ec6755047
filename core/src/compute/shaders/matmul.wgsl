// C = A·B for f32 matrices, the same contract as the built-in CPU kernel `matmul`:
// grid [n, m]; binding 2: A (m×k, row-major); binding 3: B (k×n); binding 1: the chunk's cells
// of C, row-major. Any m, n, k (cells off the tile are masked, missing k is zero-padded).
//
// Run it with `tile: [128, 128]`. Each 16×16 workgroup computes a 128×128 block of C, each
// invocation 8×8 cells of it: rows 4·ty..4·ty+3 and 64+4·ty.., columns likewise with tx, so
// that an invocation reads its A and B values from workgroup memory as two vec4s each (64
// fused multiply-adds per four loads). A and B go through workgroup memory in 16-deep slices,
// A's transposed ([k][row]): 16 KiB, WebGPU's default limit, so any adapter runs it.
// Measured on an H200 (bench/device/): padding A's rows against the transposed stores' bank
// conflicts, fetching the next slice during the multiply, and 8-deep slices were each no faster
// or slower.
// Every cell sums its k products in increasing k, like the CPU kernel; a GPU may fuse each
// multiply-add (integer-valued inputs give identical bits either way).
struct Chunk {
  offset: vec4<u32>,
  size: vec4<u32>,
  grid: vec4<u32>,
}

@group(0) @binding(0) var<uniform> chunk: Chunk;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

const TILE: u32 = 128u;
const DEPTH: u32 = 16u;
const THREADS: u32 = 256u;

var<workgroup> tile_a: array<array<vec4<f32>, 32>, 16>; // [kk][row / 4]
var<workgroup> tile_b: array<array<vec4<f32>, 32>, 16>; // [kk][col / 4]

struct Bounds {
  row0: u32,
  col0: u32,
  row_end: u32,
  col_end: u32,
  n: u32,
  k: u32,
}

// Element `i` (0..8) of this invocation's share of A's slice at k0: rows ra, depth ka.
fn load_a(g: Bounds, t: u32, i: u32, k0: u32) -> f32 {
  let idx = t + i * THREADS;
  let ra = idx / DEPTH;
  let ka = idx % DEPTH;
  if (g.row0 + ra < g.row_end && k0 + ka < g.k) {
    return a[(g.row0 + ra) * g.k + k0 + ka];
  }
  return 0.0;
}

// Element `i` (0..8) of this invocation's share of B's slice at k0: depth kb, columns cb.
fn load_b(g: Bounds, t: u32, i: u32, k0: u32) -> f32 {
  let idx = t + i * THREADS;
  let kb = idx / TILE;
  let cb = idx % TILE;
  if (k0 + kb < g.k && g.col0 + cb < g.col_end) {
    return b[(k0 + kb) * g.n + g.col0 + cb];
  }
  return 0.0;
}

// Stores element `i` (0..8) of this invocation's share of both slices.
fn put(t: u32, i: u32, va: f32, vb: f32) {
  let idx = t + i * THREADS;
  let ra = idx / DEPTH;
  tile_a[idx % DEPTH][ra / 4u][ra % 4u] = va;
  let cb = idx % TILE;
  tile_b[idx / TILE][cb / 4u][cb % 4u] = vb;
}

fn store_slice(t: u32, pa0: vec4<f32>, pa1: vec4<f32>, pb0: vec4<f32>, pb1: vec4<f32>) {
  put(t, 0u, pa0.x, pb0.x); put(t, 1u, pa0.y, pb0.y); put(t, 2u, pa0.z, pb0.z); put(t, 3u, pa0.w, pb0.w);
  put(t, 4u, pa1.x, pb1.x); put(t, 5u, pa1.y, pb1.y); put(t, 6u, pa1.z, pb1.z); put(t, 7u, pa1.w, pb1.w);
}

fn store_cell(row: u32, col: u32, g: Bounds, v: f32) {
  if (row < g.row_end && col < g.col_end) {
    c[(row - chunk.offset.y) * chunk.size.x + (col - chunk.offset.x)] = v;
  }
}

// Stores four cells of a row, columns col..col+3.
fn store_row(row: u32, col: u32, g: Bounds, v: vec4<f32>) {
  store_cell(row, col, g, v.x);
  store_cell(row, col + 1u, g, v.y);
  store_cell(row, col + 2u, g, v.z);
  store_cell(row, col + 3u, g, v.w);
}

@compute @workgroup_size(16, 16)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let m = chunk.grid.y;
  var g: Bounds;
  g.n = chunk.grid.x;
  g.k = arrayLength(&a) / m;
  g.row0 = chunk.offset.y + wid.y * TILE;
  g.col0 = chunk.offset.x + wid.x * TILE;
  g.row_end = chunk.offset.y + chunk.size.y;
  g.col_end = chunk.offset.x + chunk.size.x;
  let t = lid.y * 16u + lid.x;
  let tx = lid.x;
  let ty = lid.y;

  // Accumulators: c<r><h> holds row r (0..3: 4·ty+r, 4..7: 64+4·ty+r-4), columns h (0: 4·tx..,
  // 1: 64+4·tx..).
  var c00 = vec4<f32>(); var c01 = vec4<f32>();
  var c10 = vec4<f32>(); var c11 = vec4<f32>();
  var c20 = vec4<f32>(); var c21 = vec4<f32>();
  var c30 = vec4<f32>(); var c31 = vec4<f32>();
  var c40 = vec4<f32>(); var c41 = vec4<f32>();
  var c50 = vec4<f32>(); var c51 = vec4<f32>();
  var c60 = vec4<f32>(); var c61 = vec4<f32>();
  var c70 = vec4<f32>(); var c71 = vec4<f32>();

  for (var k0 = 0u; k0 < g.k; k0 += DEPTH) {
    let pa0 = vec4(load_a(g, t, 0u, k0), load_a(g, t, 1u, k0), load_a(g, t, 2u, k0), load_a(g, t, 3u, k0));
    let pa1 = vec4(load_a(g, t, 4u, k0), load_a(g, t, 5u, k0), load_a(g, t, 6u, k0), load_a(g, t, 7u, k0));
    let pb0 = vec4(load_b(g, t, 0u, k0), load_b(g, t, 1u, k0), load_b(g, t, 2u, k0), load_b(g, t, 3u, k0));
    let pb1 = vec4(load_b(g, t, 4u, k0), load_b(g, t, 5u, k0), load_b(g, t, 6u, k0), load_b(g, t, 7u, k0));
    store_slice(t, pa0, pa1, pb0, pb1);
    workgroupBarrier();
    for (var kk = 0u; kk < DEPTH; kk++) {
      let a0 = tile_a[kk][ty];
      let a1 = tile_a[kk][ty + 16u];
      let b0 = tile_b[kk][tx];
      let b1 = tile_b[kk][tx + 16u];
      c00 = fma(vec4(a0.x), b0, c00); c01 = fma(vec4(a0.x), b1, c01);
      c10 = fma(vec4(a0.y), b0, c10); c11 = fma(vec4(a0.y), b1, c11);
      c20 = fma(vec4(a0.z), b0, c20); c21 = fma(vec4(a0.z), b1, c21);
      c30 = fma(vec4(a0.w), b0, c30); c31 = fma(vec4(a0.w), b1, c31);
      c40 = fma(vec4(a1.x), b0, c40); c41 = fma(vec4(a1.x), b1, c41);
      c50 = fma(vec4(a1.y), b0, c50); c51 = fma(vec4(a1.y), b1, c51);
      c60 = fma(vec4(a1.z), b0, c60); c61 = fma(vec4(a1.z), b1, c61);
      c70 = fma(vec4(a1.w), b0, c70); c71 = fma(vec4(a1.w), b1, c71);
    }
    workgroupBarrier();
  }

  let r0 = g.row0 + 4u * ty;
  let r1 = r0 + 64u;
  let q0 = g.col0 + 4u * tx;
  let q1 = q0 + 64u;
  store_row(r0, q0, g, c00); store_row(r0, q1, g, c01);
  store_row(r0 + 1u, q0, g, c10); store_row(r0 + 1u, q1, g, c11);
  store_row(r0 + 2u, q0, g, c20); store_row(r0 + 2u, q1, g, c21);
  store_row(r0 + 3u, q0, g, c30); store_row(r0 + 3u, q1, g, c31);
  store_row(r1, q0, g, c40); store_row(r1, q1, g, c41);
  store_row(r1 + 1u, q0, g, c50); store_row(r1 + 1u, q1, g, c51);
  store_row(r1 + 2u, q0, g, c60); store_row(r1 + 2u, q1, g, c61);
  store_row(r1 + 3u, q0, g, c70); store_row(r1 + 3u, q1, g, c71);
}
