#!/usr/bin/env bash
# Runs the e2e scenarios on kind, with images built from images/*.Dockerfile,
# for Docker users. CI does not run this (it has no container engine); it
# runs the same scenarios against a control plane built from upstream and
# ringkv's pod runner (scripts/test.sh). Linux only: the host reaches pod
# IPs through a route via the kind node.
#
#   e2e/kind/run.sh            # create cluster ringkv-e2e, build, load, test
#   KEEP=1 e2e/kind/run.sh     # leave the cluster running afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster=${CLUSTER:-ringkv-e2e}
for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null || { echo "kind/run.sh: $tool not found" >&2; exit 1; }
done

if ! kind get clusters | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --config e2e/kind/cluster.yaml --wait 120s
fi
trap '[[ -n ${KEEP:-} ]] || kind delete cluster --name "$cluster"' EXIT

# The upgrade scenario moves the nodes from 0.1.0 to 0.1.1: the same build
# under a second tag, so that only the tag changes.
docker build -f images/node.Dockerfile -t ringkv/ringkv-node:0.1.0 .
docker tag ringkv/ringkv-node:0.1.0 ringkv/ringkv-node:0.1.1
docker build -f images/operator.Dockerfile -t ringkv/ringkv-operator:0.1.0 .
for image in ringkv/ringkv-node:0.1.0 ringkv/ringkv-node:0.1.1 ringkv/ringkv-operator:0.1.0; do
  kind load docker-image --name "$cluster" "$image"
done

node="$cluster-control-plane"
node_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$node")
pod_cidr=$(kubectl --context "kind-$cluster" get node "$node" -o jsonpath='{.spec.podCIDR}')
sudo ip route replace "$pod_cidr" via "$node_ip"

kubeconfig=$(mktemp)
kind get kubeconfig --name "$cluster" >"$kubeconfig"
source scripts/env.sh
RINGKV_E2E_KUBECONFIG=$kubeconfig RINGKV_E2E_KIND_NODE=$node \
  cargo test -p ringkv-e2e --test scenarios -- --test-threads=1 --show-output
