#!/usr/bin/env bash
# Builds the browser bundle into dist/web: the demo at /, the SDK at /sdk, the worker at /sw.
# PROFILE=dev gives a fast unoptimized build; the default is the size-optimized wasm-release.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-wasm-release}
out=dist/web
log() { printf '\033[1;34m[build]\033[0m %s\n' "$*"; }

log "cargo build peercompute-sw (wasm32, profile $profile)"
cargo build -p peercompute-sw --target wasm32-unknown-unknown --profile "$profile"
dir=$profile; [ "$profile" = dev ] && dir=debug

rm -rf "$out"
mkdir -p "$out/sw/pkg" "$out/sdk"
wasm-bindgen --target web --no-typescript --out-dir "$out/sw/pkg" \
  "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$dir/peercompute_sw.wasm"
if [ "$profile" != dev ]; then
  log "wasm-opt -Oz"
  npx --no-install wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-simd \
    "$out/sw/pkg/peercompute_sw_bg.wasm" -o "$out/sw/pkg/peercompute_sw_bg.wasm"
fi
cp sw/worker.js "$out/sw/"
cp sdk/*.js sdk/*.d.ts "$out/sdk/"
cp demo/* "$out/"
size=$(stat -c %s "$out/sw/pkg/peercompute_sw_bg.wasm")
gz=$(gzip -9 -c "$out/sw/pkg/peercompute_sw_bg.wasm" | wc -c)
log "worker wasm: $((size / 1024)) KiB, $((gz / 1024)) KiB gzip → $out"
