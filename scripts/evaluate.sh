#!/usr/bin/env bash
# Regenerates docs/benchmarks.md and its plots in one run (issue: the
# evaluation). It installs and starts what it measures, on loopback:
#   - ringkv, from release builds of ringkv-node and ringkv-bench;
#   - etcd, a 3-member cluster from Debian's etcd-server;
#   - Apache Cassandra 5.0, a 3-node cluster from Maven Central's jars on
#     the machine's Java 17.
# A peer that cannot be installed or started is reported in the document
# with the reason, and the rest still runs. Extra flags go to
# `ringkv-bench evaluate` (for example --cassandra-commitlog batch).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh

cache="$HOME/.cache/ringkv"
peers=()

if ! command -v etcd >/dev/null 2>&1; then
  echo "installing etcd-server (Debian)"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends etcd-server >/dev/null ||
    echo "etcd-server could not be installed; etcd will be reported as not run" >&2
fi
if command -v etcd >/dev/null 2>&1; then
  peers+=(--etcd "$(command -v etcd)")
fi

cassandra_lib="$cache/cassandra/lib"
if ! ls "$cassandra_lib"/cassandra-all-*.jar >/dev/null 2>&1; then
  echo "collecting Apache Cassandra and its dependencies with Maven"
  mvn -q -B -f bench/peers/cassandra/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$cassandra_lib" ||
    echo "Maven could not collect Cassandra; it will be reported as not run" >&2
fi
if ls "$cassandra_lib"/cassandra-all-*.jar >/dev/null 2>&1; then
  peers+=(--cassandra-lib "$cassandra_lib" --java "$(command -v java)")
fi

echo "building release binaries (ringkv-node, ringkv-bench)"
cargo build --release --quiet -p ringkv-node -p ringkv-bench
exec "$CARGO_TARGET_DIR/release/ringkv-bench" evaluate "${peers[@]}" "$@"
