#!/usr/bin/env bash
# Generates the Prometheus Operator's CRDs (ServiceMonitor, PodMonitor,
# PrometheusRule, ...) from its API types, pinned in e2e/monitoring-crds,
# with controller-gen, into a content-addressed cache dir:
#
#   ${RINGKV_CACHE_DIR:-$HOME/.cache/ringkv}/monitoring-crds/<hash>/crds/
#
# Idempotent. The last line on stdout is the crds dir; progress goes to
# stderr.
set -euo pipefail

CONTROLLER_TOOLS_VERSION=v0.23.0   # sigs.k8s.io/controller-tools/cmd/controller-gen
API=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1

e2e=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$e2e/monitoring-crds
hash=$(cat "$src/go.mod" "$src/go.sum" <(echo "$CONTROLLER_TOOLS_VERSION") | sha256sum | cut -c1-12)
dir=${RINGKV_CACHE_DIR:-$HOME/.cache/ringkv}/monitoring-crds/$hash
if [[ -s $dir/crds/monitoring.coreos.com_servicemonitors.yaml ]]; then
  echo "$dir/crds"
  exit 0
fi
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
command -v go >/dev/null || { echo "build-monitoring-crds: go not found in PATH" >&2; exit 1; }
start=$(date +%s)
tmp=$dir/tmp
rm -rf "$tmp"
mkdir -p "$tmp/bin" "$tmp/crds"
echo "building controller-gen $CONTROLLER_TOOLS_VERSION..." >&2
(cd "$tmp" && CGO_ENABLED=0 GOBIN="$tmp/bin" nice -n 10 go install -trimpath \
  "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION")
echo "generating the Prometheus Operator's CRDs..." >&2
(cd "$src" && GOFLAGS=-mod=readonly "$tmp/bin/controller-gen" \
  crd:crdVersions=v1,maxDescLen=0 paths="$API" output:crd:dir="$tmp/crds")
rm -rf "$dir/crds"
mv "$tmp/crds" "$dir/crds"
rm -rf "$tmp"
echo "generated in $(( $(date +%s) - start ))s" >&2
echo "$dir/crds"
