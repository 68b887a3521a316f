#!/usr/bin/env bash
# Starts a local ringkv cluster on loopback (no Kubernetes), shows it working
# with the CLI, and stops it. Run `ringkv local` yourself to keep one running.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
cargo build --workspace --bins --quiet
bin="$CARGO_TARGET_DIR/debug"
ringkv="$bin/ringkv"
data=$(mktemp -d)
log="$data/local.log"
endpoint=127.0.0.1:7379

"$ringkv" local --nodes 1 --data-dir "$data" >"$log" 2>&1 &
local_pid=$!
trap 'kill -INT $local_pid 2>/dev/null; wait $local_pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 300); do
  grep -q "is up" "$log" && break
  kill -0 $local_pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
cat "$log"

run() { echo "\$ ringkv $*"; "$ringkv" --endpoint "$endpoint" "$@"; }
run put greeting "hello, ringkv"
run get greeting; echo
echo "bytes from stdin" | run put note -
run get note
for i in 1 2 3; do "$ringkv" --endpoint "$endpoint" put "user:$i" "name-$i"; done
run scan --start user: --end 'user;' --limit 10
run scan --start user: --end 'user;' --reverse --keys-only
run delete greeting
run get greeting || echo "(exit code $?: the key is gone)"
echo "\$ curl -s http://127.0.0.1:9379/metrics | grep requests_total"
curl -s http://127.0.0.1:9379/metrics | grep '^ringkv_grpc_requests_total' | head -5 || true
echo "demo finished; stopping the cluster"
