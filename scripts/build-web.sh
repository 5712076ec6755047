#!/usr/bin/env bash
# Builds the browser bundle into dist/web: the demo at /, the SDK at /sdk, the node's
# SharedWorker at /sw, the executor workers at /worker-cpu and /worker-gpu, and the example
# wasm kernel (kernels/mandelbrot, ABI v1) at /kernels/mandelbrot.wasm.
# PROFILE=dev gives a fast unoptimized build; the default is the size-optimized wasm-release.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-wasm-release}
# The node's worker builds with its own profile, tuned for size (see Cargo.toml); a dev build
# uses dev for everything.
node_profile=$profile; [ "$profile" = wasm-release ] && node_profile=wasm-node
out=dist/web
log() { printf '\033[1;34m[build]\033[0m %s\n' "$*"; }

log "cargo build peercompute-sw (wasm32, profile $node_profile)"
cargo build -p peercompute-sw --target wasm32-unknown-unknown --profile "$node_profile"
log "cargo build peercompute-worker-cpu, peercompute-worker-gpu, peercompute-kernel-mandelbrot (wasm32, profile $profile)"
cargo build -p peercompute-worker-cpu -p peercompute-worker-gpu -p peercompute-kernel-mandelbrot \
  --target wasm32-unknown-unknown --profile "$profile"
# Cargo's output folder for a profile.
wasm_dir() { echo "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$([ "$1" = dev ] && echo debug || echo "$1")"; }

rm -rf "$out"
mkdir -p "$out/sw/pkg" "$out/worker-cpu/pkg" "$out/worker-gpu/pkg" "$out/sdk" "$out/kernels"
# bindgen CRATE DIR PROFILE [wasm-opt level]
bindgen() {
  wasm-bindgen --target web --no-typescript --out-dir "$out/$2/pkg" "$(wasm_dir "$3")/$1.wasm"
  if [ "$profile" != dev ]; then
    log "wasm-opt $4 $1"
    npx --no-install wasm-opt "$4" --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-simd \
      "$out/$2/pkg/$1_bg.wasm" -o "$out/$2/pkg/$1_bg.wasm"
  fi
}
bindgen peercompute_sw sw "$node_profile" -Oz
# The kernels are the hot loop here: optimize for speed.
bindgen peercompute_worker_cpu worker-cpu "$profile" -O3
bindgen peercompute_worker_gpu worker-gpu "$profile" -Oz
# Each entry point goes out as one file (esbuild): every level of module imports is a round trip
# before the node starts (page → SDK → its modules; worker → wasm-bindgen glue → wasm). The
# sources stay modules; a worker's glue is folded into its script, so the glue file goes.
bundle() {
  node_modules/.bin/esbuild "$1" --bundle --format=esm --log-level=warning \
    --allow-overwrite --outfile="$2"
}
bundle sdk/peercompute.js "$out/sdk/peercompute.js"
cp sdk/*.d.ts "$out/sdk/"
for worker in sw worker-cpu worker-gpu; do
  cp "$worker/worker.js" "$out/$worker/"
  bundle "$out/$worker/worker.js" "$out/$worker/worker.js"
  rm "$out/$worker"/pkg/*.js
done
# A wasm kernel is served as the module the linker wrote: no bindgen (it imports nothing).
cp "$(wasm_dir "$profile")/peercompute_kernel_mandelbrot.wasm" "$out/kernels/mandelbrot.wasm"
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
