#!/usr/bin/env bash
# Measures one node in each durability mode with `ringkv bench`, every figure
# beside a baseline (gRPC health checks) taken in the same run, and prints a
# Markdown table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --workspace --bins --quiet
bin="$CARGO_TARGET_DIR/debug"
requests=${REQUESTS:-100000}
concurrency=${CONCURRENCY:-32}

run_mode() {
  local mode=$1 ip=$2 data
  data=$(mktemp -d)
  "$bin/ringkv-node" --listen "$ip:7379" --metrics-listen "$ip:9379" --data-dir "$data" \
    --durability "$mode" --log warn >"$data.log" 2>&1 &
  local pid=$! out
  for _ in $(seq 1 300); do
    out=$("$bin/ringkv" --endpoint "$ip:7379" get __probe 2>&1 || true)
    [[ $out == *"not found"* ]] && break
    sleep 0.1
  done
  "$bin/ringkv" --endpoint "$ip:7379" bench --json --requests "$requests" \
    --concurrency "$concurrency" | sed "s/^{/{\"mode\":\"$mode\",/"
  kill -TERM $pid 2>/dev/null || true; wait $pid || true
  rm -rf "$data" "$data.log"
}

{
  run_mode sync 127.0.9.1
  run_mode periodic 127.0.9.2
} | python3 scripts/bench_table.py
