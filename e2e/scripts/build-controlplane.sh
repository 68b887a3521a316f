#!/usr/bin/env bash
# Builds the e2e Kubernetes control plane from Go modules (no container
# engine, only the Go module proxy) into a content-addressed cache dir:
#
#   ${RINGKV_CACHE_DIR:-$HOME/.cache/ringkv}/k8s/<k8s-version>-<hash>/bin/
#     ringkv-controlplane            one multi-call binary (e2e/controlplane)
#     etcd kube-apiserver kube-controller-manager kube-scheduler kubectl
#                                    symlinks to it
#     helm                           helm CLI, `go install`ed at HELM_VERSION
#
# <hash> covers e2e/controlplane/{go.mod,go.sum,main.go} and this script's
# build recipe (versions, ldflags), so editing any of them gives a new dir.
# Idempotent: when the dir already exists nothing is built. The last line on
# stdout is always the bin dir; progress goes to stderr.
set -euo pipefail

K8S_VERSION=v1.37.2    # must match k8s.io/kubernetes in e2e/controlplane/go.mod
HELM_VERSION=v3.22.0   # helm.sh/helm/v3/cmd/helm

e2e=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$e2e/controlplane

k8s_major=${K8S_VERSION#v}; k8s_major=${k8s_major%%.*}
k8s_minor=${K8S_VERSION#v*.}; k8s_minor=${k8s_minor%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$k8s_major"
  k8s_ldflags+=" -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  # Default capabilities for `helm template`/lint without a cluster.
  helm_ldflags+=" -X $pkg.k8sVersionMajor=$k8s_major -X $pkg.k8sVersionMinor=$k8s_minor"
done
recipe="k8s=$K8S_VERSION helm=$HELM_VERSION k8s_ldflags=$k8s_ldflags helm_ldflags=$helm_ldflags"

hash=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" <(printf '%s\n' "$recipe") |
  sha256sum | cut -c1-12)
root=${RINGKV_CACHE_DIR:-$HOME/.cache/ringkv}/k8s
dir=$root/$K8S_VERSION-$hash
bin=$dir/bin
links=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

complete() {
  [[ -x $bin/ringkv-controlplane && -x $bin/helm ]] || return 1
  local l
  for l in "${links[@]}"; do [[ -x $bin/$l ]] || return 1; done
}

if complete; then
  echo "control plane already built" >&2
  echo "$bin"
  exit 0
fi

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9 # another build of the same hash may be running
if complete; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build-controlplane: go not found in PATH" >&2; exit 1; }
tmp=$dir/bin.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
start=$(date +%s)

echo "building ringkv-controlplane ($K8S_VERSION) with $(go version)..." >&2
# CGO off as upstream's release builds do; -mod=readonly: go.sum is committed.
(cd "$src" && CGO_ENABLED=0 nice -n 10 go build -mod=readonly -buildvcs=false -trimpath \
  -ldflags "-s -w$k8s_ldflags" -o "$tmp/ringkv-controlplane" .)
for l in "${links[@]}"; do ln -sfn ringkv-controlplane "$tmp/$l"; done

echo "building helm $HELM_VERSION..." >&2
# pkg@version builds with helm's own go.mod; run outside our module.
(cd "$tmp" && CGO_ENABLED=0 GOBIN="$tmp" nice -n 10 go install -trimpath \
  -ldflags "-s -w $helm_ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")

rm -rf "$bin"
mv "$tmp" "$bin"
echo "built in $(( $(date +%s) - start ))s: $(du -shL "$bin/ringkv-controlplane" "$bin/helm" | awk '{printf "%s %s  ", $2, $1}')" | sed "s#$bin/##g" >&2
echo "$bin"
