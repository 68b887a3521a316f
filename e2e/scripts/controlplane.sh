#!/usr/bin/env bash
# Starts / stops a loopback-only Kubernetes control plane for ringkv's e2e
# tests: etcd, kube-apiserver, kube-controller-manager and kube-scheduler,
# built by build-controlplane.sh. No kubelet: pods stay Pending unless a
# Node object is created (see e2e/README.md, "Control plane").
#
#   controlplane.sh start DIR   # waits until ready; prints DIR/admin.kubeconfig
#   controlplane.sh stop DIR
#
# Everything lives under DIR: pki/ (CAs, certs, service-account key), etcd/,
# logs/*.log (appended to), run/*.pid, *.kubeconfig. Restarting on the same
# DIR keeps the certs and the etcd data.
#
# Environment (defaults):
#   RINGKV_K8S_BIN            bin dir (default: output of build-controlplane.sh)
#   RINGKV_APISERVER_PORT     16443  https://127.0.0.1:PORT
#   RINGKV_ETCD_CLIENT_PORT   16379  RINGKV_ETCD_PEER_PORT 16380
#   RINGKV_KCM_PORT           16257  controller-manager /healthz (https)
#   RINGKV_SCHEDULER_PORT     16259  scheduler /healthz (https)
#   RINGKV_SERVICE_CIDR       10.96.0.0/16
#   RINGKV_KCM_CONTROLLERS    *      (--controllers of kube-controller-manager)
#   RINGKV_CP_TIMEOUT         180    seconds to wait for readiness
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
api_port=${RINGKV_APISERVER_PORT:-16443}
etcd_port=${RINGKV_ETCD_CLIENT_PORT:-16379}
etcd_peer_port=${RINGKV_ETCD_PEER_PORT:-16380}
kcm_port=${RINGKV_KCM_PORT:-16257}
sched_port=${RINGKV_SCHEDULER_PORT:-16259}
service_cidr=${RINGKV_SERVICE_CIDR:-10.96.0.0/16}
controllers=${RINGKV_KCM_CONTROLLERS:-*}
timeout=${RINGKV_CP_TIMEOUT:-180}
components=(etcd kube-apiserver kube-controller-manager kube-scheduler)

log() { echo "controlplane: $*" >&2; }

# pid of component $1 if it is running and was started for this DIR.
running_pid() {
  local f=$dir/run/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' </proc/"$pid"/cmdline | grep -qF -- "$dir/" || return 1 # pid reused
  echo "$pid"
}

stop() {
  local i c pid n
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    c=${components[i]}
    if pid=$(running_pid "$c"); then
      kill -TERM "$pid" 2>/dev/null || true
      for ((n = 0; n < 100; n++)); do # 10s grace
        [[ -e /proc/$pid ]] || break
        sleep 0.1
      done
      if [[ -e /proc/$pid ]]; then
        log "$c ($pid) ignored SIGTERM, killing"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      log "stopped $c ($pid)"
    fi
    rm -f "$dir/run/$c.pid"
  done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

gen_pki() {
  local p=$dir/pki
  mkdir -p "$p"
  [[ -f $p/ca.crt ]] || openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
    -keyout "$p/ca.key" -out "$p/ca.crt" -subj "/CN=ringkv-e2e-ca" 2>/dev/null
  # Own CA for the aggregation layer's request-header auth (as kubeadm does);
  # without it the controller-manager and scheduler log "missing content for
  # CA bundle requestheader-client-ca-file" errors every few minutes.
  [[ -f $p/front-proxy-ca.crt ]] || openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
    -keyout "$p/front-proxy-ca.key" -out "$p/front-proxy-ca.crt" -subj "/CN=ringkv-e2e-front-proxy-ca" 2>/dev/null
  [[ -f $p/sa.key ]] || {
    openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
    openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  }
  # name subject extensions
  local certs=(
    "apiserver|/CN=kube-apiserver|extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:${service_cidr%.*/*}.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    "admin|/O=system:masters/CN=ringkv-e2e-admin|extendedKeyUsage=clientAuth"
    "controller-manager|/CN=system:kube-controller-manager|extendedKeyUsage=clientAuth"
    "scheduler|/CN=system:kube-scheduler|extendedKeyUsage=clientAuth"
    "front-proxy-client|/CN=front-proxy-client|extendedKeyUsage=clientAuth|front-proxy-ca"
  )
  local spec name subj ext ca
  for spec in "${certs[@]}"; do
    IFS='|' read -r -d '' name subj ext ca <<<"$spec" || true
    ca=${ca%$'\n'}
    ca=${ca:-ca}
    [[ -f $p/$name.crt ]] && continue
    openssl req -new -newkey rsa:2048 -nodes -keyout "$p/$name.key" \
      -out "$p/$name.csr" -subj "$subj" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$ext" >"$p/$name.ext"
    openssl x509 -req -in "$p/$name.csr" -CA "$p/$ca.crt" -CAkey "$p/$ca.key" \
      -CAcreateserial -days 3650 -extfile "$p/$name.ext" -out "$p/$name.crt" 2>/dev/null
    rm -f "$p/$name.csr" "$p/$name.ext"
  done
}

# kubeconfig NAME USER-CERT
write_kubeconfig() {
  local p=$dir/pki
  cat >"$dir/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ringkv-e2e
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 "$p/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$p/$2.crt")
    client-key-data: $(base64 -w0 "$p/$2.key")
contexts:
- name: ringkv-e2e
  context: {cluster: ringkv-e2e, user: $2}
current-context: ringkv-e2e
EOF
  chmod 600 "$dir/$1.kubeconfig"
}

# launch NAME ARGS...: runs $bin/NAME in its own session, logs to DIR/logs.
launch() {
  local name=$1
  shift
  nohup setsid "$bin/$name" "$@" </dev/null >>"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/run/$name.pid"
}

fail() {
  log "$*"
  local c
  for c in "${components[@]}"; do
    [[ -f $dir/logs/$c.log ]] || continue
    echo "----- last lines of $dir/logs/$c.log" >&2
    tail -n 15 "$dir/logs/$c.log" >&2
  done
  stop
  exit 1
}

# wait_for WHAT COMMAND...: polls COMMAND until it succeeds or the deadline.
wait_for() {
  local what=$1 c
  shift
  until "$@" >/dev/null 2>&1; do
    for c in "${components[@]}"; do
      [[ -f $dir/run/$c.pid ]] && ! running_pid "$c" >/dev/null && fail "$c exited while waiting for $what"
    done
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what"
    sleep 0.5
  done
  log "$what: ok (${SECONDS}s)"
}

start() {
  local c p
  for c in "${components[@]}"; do
    if p=$(running_pid "$c"); then
      log "$c already running for $dir (pid $p); run '$0 stop $dir' first"
      exit 1
    fi
  done
  for p in "$api_port" "$etcd_port" "$etcd_peer_port" "$kcm_port" "$sched_port"; do
    port_in_use "$p" && { log "127.0.0.1:$p is already in use"; exit 1; }
  done
  bin=${RINGKV_K8S_BIN:-$("$here/build-controlplane.sh" | tail -n1)}
  [[ -x $bin/ringkv-controlplane ]] || { log "no control plane binaries in '$bin'"; exit 1; }
  mkdir -p "$dir/logs" "$dir/run" "$dir/etcd"
  gen_pki
  write_kubeconfig admin admin
  write_kubeconfig controller-manager controller-manager
  write_kubeconfig scheduler scheduler
  local pki=$dir/pki kc=$dir/admin.kubeconfig
  SECONDS=0
  deadline=$timeout

  launch etcd --data-dir="$dir/etcd" --unsafe-no-fsync \
    --listen-client-url="http://127.0.0.1:$etcd_port" \
    --listen-peer-url="http://127.0.0.1:$etcd_peer_port"
  wait_for "etcd" curl -fsS "http://127.0.0.1:$etcd_port/health"

  launch kube-apiserver \
    --bind-address=127.0.0.1 --secure-port="$api_port" \
    --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --cert-dir="$dir/apiserver" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" \
    --proxy-client-key-file="$pki/front-proxy-client.key" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$service_cidr" \
    --allow-privileged=true --profiling=false
  wait_for "kube-apiserver /readyz" "$bin/kubectl" --kubeconfig="$kc" get --raw /readyz

  launch kube-controller-manager \
    --kubeconfig="$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$dir/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --cert-dir="$dir/controller-manager" \
    --leader-elect=false --controllers="$controllers" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range="$service_cidr" --cluster-name=ringkv-e2e \
    --profiling=false
  launch kube-scheduler \
    --kubeconfig="$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig="$dir/scheduler.kubeconfig" \
    --authorization-kubeconfig="$dir/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" \
    --cert-dir="$dir/scheduler" \
    --leader-elect=false --profiling=false

  wait_for "default ServiceAccount" "$bin/kubectl" --kubeconfig="$kc" -n default get serviceaccount default
  wait_for "kube-controller-manager /healthz" curl -fsSk "https://127.0.0.1:$kcm_port/healthz"
  wait_for "kube-scheduler /healthz" curl -fsSk "https://127.0.0.1:$sched_port/healthz"
  log "ready in ${SECONDS}s; export KUBECONFIG=$kc PATH=$bin:\$PATH"
  echo "$kc"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
