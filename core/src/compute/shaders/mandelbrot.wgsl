// Mandelbrot iteration counts, the same contract as the built-in CPU kernel `mandelbrot`:
// grid [width, height]; params maxIter (u32), x0, y0, x1, y1 (f32, the view); binding 1: one
// u32 per cell of the chunk, row-major. One invocation per cell.
struct Chunk {
  offset: vec4<u32>,
  size: vec4<u32>,
  grid: vec4<u32>,
  max_iter: u32,
  x0: f32,
  y0: f32,
  x1: f32,
  y1: f32,
}

@group(0) @binding(0) var<uniform> chunk: Chunk;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x >= chunk.size.x || id.y >= chunk.size.y) {
    return;
  }
  let x = chunk.offset.x + id.x;
  let y = chunk.offset.y + id.y;
  let cr = chunk.x0 + (chunk.x1 - chunk.x0) * (f32(x) / f32(chunk.grid.x));
  let ci = chunk.y0 + (chunk.y1 - chunk.y0) * (f32(y) / f32(chunk.grid.y));
  var zr = 0.0;
  var zi = 0.0;
  var i = 0u;
  while (i < chunk.max_iter && zr * zr + zi * zi <= 4.0) {
    let t = zr * zr - zi * zi + cr;
    zi = 2.0 * zr * zi + ci;
    zr = t;
    i++;
  }
  out[id.y * chunk.size.x + id.x] = i;
}
