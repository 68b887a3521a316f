#!/usr/bin/env bash
# Starts a local three-node ringkv cluster on loopback (no Kubernetes), shows
# it working with the CLI, kills one node and shows the data surviving, then
# stops the cluster. Run `ringkv local` yourself to keep one running.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
cargo build --workspace --bins --quiet
ringkv="$CARGO_TARGET_DIR/debug/ringkv"
data=$(mktemp -d)
log="$data/local.log"
endpoint=127.0.0.1:7379

"$ringkv" local --nodes 3 --data-dir "$data" >"$log" 2>&1 &
local_pid=$!
trap 'kill -INT $local_pid 2>/dev/null; wait $local_pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 600); do
  grep -q "Press Ctrl-C" "$log" && break
  kill -0 $local_pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
cat "$log"

run() { echo "\$ ringkv $*"; "$ringkv" --endpoint "$endpoint" "$@"; }
run status
run put greeting "hello, ringkv"
run get greeting; echo
echo "bytes from stdin" | run put note -
run get note
for i in 1 2 3; do "$ringkv" --endpoint "$endpoint" put "user:$i" "name-$i"; done
run scan --start user: --end 'user;' --limit 10
run scan --start user: --end 'user;' --reverse --keys-only
run delete greeting
run get greeting || echo "(exit code $?: the key is gone)"

node2_pid=$(awk '$1 == "node-2" { print $NF }' "$log")
echo "\$ kill -9 $node2_pid   # node-2 dies without warning"
kill -9 "$node2_pid"
for _ in $(seq 1 100); do
  "$ringkv" --endpoint "$endpoint" status | grep -q '^node-2 .* no ' && break
  sleep 0.2
done
run status
echo "\$ ringkv --endpoint 127.0.0.3:7379 get note   # still there, from the other replicas"
"$ringkv" --endpoint 127.0.0.3:7379 get note
run put written-while-down "kept as a hint for node-2"
run get written-while-down; echo
echo "\$ curl -s http://127.0.0.1:9379/metrics | grep -E 'requests_total|hints'"
curl -s http://127.0.0.1:9379/metrics | grep -E '^ringkv_(grpc_requests_total|hints_stored)' | head -8 || true
echo "demo finished; stopping the cluster"
