#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test ringkv. Idempotent and
# quiet: it only calls apt when something is missing.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# bindgen (for RocksDB's bindings) loads libclang at build time.
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v mount >/dev/null 2>&1 || need+=(mount)
# The evaluation partitions nodes with nftables (bench/src/evaluate/partition.rs).
command -v nft >/dev/null 2>&1 || need+=(nftables)
# The evaluation's plots render their text with DejaVu Sans (bench/src/evaluate/plot.rs).
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || need+=(fonts-dejavu-core)

if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq >/dev/null
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
