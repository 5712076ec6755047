#!/usr/bin/env bash
# Builds the browser bundle into dist/web: the demo at /, the SDK at /sdk, the node's
# SharedWorker at /sw, the executor workers at /worker-cpu and /worker-gpu, and the example
# wasm kernel (kernels/mandelbrot, ABI v1) at /kernels/mandelbrot.wasm.
# PROFILE=dev gives a fast unoptimized build; the default is the size-optimized wasm-release.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-wasm-release}
out=dist/web
log() { printf '\033[1;34m[build]\033[0m %s\n' "$*"; }

log "cargo build peercompute-sw, peercompute-worker-cpu, peercompute-worker-gpu, peercompute-kernel-mandelbrot (wasm32, profile $profile)"
cargo build -p peercompute-sw -p peercompute-worker-cpu -p peercompute-worker-gpu -p peercompute-kernel-mandelbrot \
  --target wasm32-unknown-unknown --profile "$profile"
dir=$profile; [ "$profile" = dev ] && dir=debug

rm -rf "$out"
mkdir -p "$out/sw/pkg" "$out/worker-cpu/pkg" "$out/worker-gpu/pkg" "$out/sdk" "$out/kernels"
# bindgen CRATE DIR [wasm-opt level]
bindgen() {
  wasm-bindgen --target web --no-typescript --out-dir "$out/$2/pkg" \
    "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$dir/$1.wasm"
  if [ "$profile" != dev ]; then
    log "wasm-opt $3 $1"
    npx --no-install wasm-opt "$3" --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-simd \
      "$out/$2/pkg/$1_bg.wasm" -o "$out/$2/pkg/$1_bg.wasm"
  fi
}
bindgen peercompute_sw sw -Oz
# The kernels are the hot loop here: optimize for speed.
bindgen peercompute_worker_cpu worker-cpu -O3
bindgen peercompute_worker_gpu worker-gpu -Oz
cp sw/worker.js "$out/sw/"
cp worker-cpu/worker.js "$out/worker-cpu/"
cp worker-gpu/worker.js "$out/worker-gpu/"
cp sdk/*.js sdk/*.d.ts "$out/sdk/"
# A wasm kernel is served as the module the linker wrote: no bindgen (it imports nothing).
cp "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$dir/peercompute_kernel_mandelbrot.wasm" "$out/kernels/mandelbrot.wasm"
cp demo/* "$out/"
# Brotli and gzip copies for browsers that accept them (the relay serves them); a dev build's
# wasm is large and rebuilt often, so it goes uncompressed.
if [ "$profile" != dev ]; then
  log "$(node scripts/precompress.mjs "$out")"
fi
size=$(stat -c %s "$out/sw/pkg/peercompute_sw_bg.wasm")
if [ -f "$out/sw/pkg/peercompute_sw_bg.wasm.gz" ]; then
  gz=$(stat -c %s "$out/sw/pkg/peercompute_sw_bg.wasm.gz")
else
  gz=$(gzip -9 -c "$out/sw/pkg/peercompute_sw_bg.wasm" | wc -c)
fi
log "worker wasm: $((size / 1024)) KiB, $((gz / 1024)) KiB gzip → $out"
cpu=$(stat -c %s "$out/worker-cpu/pkg/peercompute_worker_cpu_bg.wasm")
gpu=$(stat -c %s "$out/worker-gpu/pkg/peercompute_worker_gpu_bg.wasm")
log "worker-cpu wasm: $((cpu / 1024)) KiB, worker-gpu wasm: $((gpu / 1024)) KiB"
