#!/usr/bin/env bash
# `npm test`: set-up, native tests, the wasm build, then Playwright in Debian Chromium
# against a real relay process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
log() { printf '\033[1;34m[test]\033[0m %s\n' "$*"; }
log "native tests"
cargo test --workspace
log "ChaCha20 wasm SIMD backend (vendor/chacha20) against the scalar reference"
cargo build --manifest-path vendor/chacha20/wasm-check/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-target}" \
  --release --target wasm32-unknown-unknown
node vendor/chacha20/wasm-check/run.mjs \
  "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/chacha20_wasm_check.wasm"
log "relay binary"
cargo build -p relay-server
bash scripts/build-web.sh
log "Playwright (Chromium)"
export RELAY_BIN="${RELAY_BIN:-${CARGO_TARGET_DIR:-target}/debug/relay-server}"
npx --no-install playwright test "$@"
