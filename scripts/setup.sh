#!/usr/bin/env bash
# Installs what PeerCompute needs on a fresh machine, skipping what is already there:
# the wasm32 target, wasm-bindgen-cli at the version locked in Cargo.lock, Debian's Chromium and
# Vulkan (lavapipe, for native GPU compute), and the npm packages. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

locked=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
installed=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$installed" != "$locked" ]; then
  log "installing wasm-bindgen-cli $locked (found '${installed:-none}'; takes a few minutes)"
  cargo install wasm-bindgen-cli --version "$locked" --locked
fi

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Native GPU compute without a GPU: Vulkan through Mesa's lavapipe (software).
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || missing+=(mesa-vulkan-drivers)
dpkg -s libvulkan1 >/dev/null 2>&1 || missing+=(libvulkan1)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi
