#!/usr/bin/env bash
# Stops everything an e2e run started under DIR (default
# ~/.cache/ringkv/e2e-run): the pod runner, every container process it
# started (each in its own process group), and the control plane.
set -uo pipefail
dir=${1:-$HOME/.cache/ringkv/e2e-run}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -d $dir ]] || exit 0
if [[ -f $dir/runner.pid ]]; then
  kill -KILL "$(<"$dir/runner.pid")" 2>/dev/null
fi
shopt -s nullglob
for pidfile in "$dir"/runner/pods/*/*.pid; do
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] && kill -KILL -- "-$pid" 2>/dev/null
done
if [[ -d $dir/controlplane ]]; then
  bash "$here/controlplane.sh" stop "$dir/controlplane" >/dev/null 2>&1
fi
# Pod addresses the runner added to lo.
for address in $(ip -o -4 addr show dev lo | awk '{print $4}' | grep '^10\.244\.'); do
  ip addr del "$address" dev lo 2>/dev/null
done
# Bind mounts live in each container's own mount namespace and vanish with it.
exit 0
