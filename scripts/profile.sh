#!/usr/bin/env bash
# Where a ringkv node's CPU goes: starts NODES release nodes on loopback
# (3 by default, N=min(3, NODES)), loads 100,000 keys, then for each
# workload samples the machine with `perf record -a -e cpu-clock` while
# `ringkv-bench run` drives it at c=64 for DURATION seconds. Prints the
# server CPU per request (from /proc) and the share of samples by
# component (scripts/profile_breakdown.py), as markdown.
#
#   scripts/profile.sh                       # put and get on 3 nodes
#   NODES=1 scripts/profile.sh put get       # one node, for the ratio
#   scripts/profile.sh batch-put             # any ringkv-bench workload
#
# Needs perf (linux-perf) and nothing else running: every figure is CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

NODES="${NODES:-3}"
DURATION="${DURATION:-10}"
CONCURRENCY="${CONCURRENCY:-64}"
FIRST="${FIRST_ADDRESS:-127.0.101.1}"
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(put get)
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }

cargo build --release --quiet -p ringkv-node -p ringkv-client -p ringkv-bench
bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d /tmp/ringkv-profile.XXXXXX)"
prefix="${FIRST%.*}"
last="${FIRST##*.}"
endpoints=()
for i in $(seq 0 $((NODES - 1))); do
  endpoints+=(--endpoint "$prefix.$((last + i)):7379")
done

"$bin/ringkv" local --nodes "$NODES" --first-address "$FIRST" --data-dir "$work/data" \
  >"$work/local.log" 2>&1 &
local_pid=$!
cleanup() {
  kill "$local_pid" 2>/dev/null || true
  wait "$local_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Ready once every node coordinates writes without an error.
serves_writes() {
  "$bin/ringkv-bench" run --endpoint "$1" --workload put --operations 20 --concurrency 1 \
    --output json 2>/dev/null | python3 -c 'import json, sys; sys.exit(json.load(sys.stdin)["errors"] > 0)'
}
deadline=$((SECONDS + 120))
for i in $(seq 0 $((NODES - 1))); do
  until serves_writes "$prefix.$((last + i)):7379"; do
    [ $SECONDS -lt $deadline ] || { cat "$work/local.log" >&2; echo "the nodes did not start" >&2; exit 1; }
    sleep 1
  done
done
pids=$(pgrep -d, -f "ringkv-node.*$work/data" || true)
[ -n "$pids" ] || { echo "no ringkv-node processes found" >&2; exit 1; }
server_pids=()
for pid in ${pids//,/ }; do server_pids+=(--server-pid "$pid"); done

"$bin/ringkv-bench" run "${endpoints[@]}" --workload batch-put --distribution sequential \
  --keys 100000 --operations 100000 --concurrency 16 --output json >/dev/null

echo "# ringkv profile: $NODES node(s), c=$CONCURRENCY, ${DURATION} s a workload, $(date -u +%F)"
echo
for workload in "${workloads[@]}"; do
  # System-wide: per-process events would be switched on every context
  # switch, which costs the nodes far more than the sampling itself.
  perf record -a -e cpu-clock -F 499 -o "$work/$workload.data" -- sleep $((DURATION + 3)) \
    >/dev/null 2>&1 &
  perf_pid=$!
  sleep 1
  "$bin/ringkv-bench" run "${endpoints[@]}" --workload "$workload" --keys 100000 \
    --concurrency "$CONCURRENCY" --duration "$DURATION" "${server_pids[@]}" --output json \
    >"$work/$workload.json"
  wait "$perf_pid" || true
  perf report -i "$work/$workload.data" --pid "$pids" --stdio --no-children --sort dso,sym -g none \
    --percent-limit 0 2>/dev/null >"$work/$workload.txt"
  python3 scripts/profile_breakdown.py "$workload" "$work/$workload.json" "$work/$workload.txt"
done
