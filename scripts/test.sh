#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, every test
# of the workspace (unit, property and multi-process tests), then the
# end-to-end scenarios against a real Kubernetes control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build (binaries the tests start)"
cargo build --workspace --bins --quiet
echo "== cargo test"
# --show-output prints what each passing test printed, e.g. how many
# acknowledged operations a data-safety test checked.
cargo test --workspace --exclude ringkv-e2e --no-fail-fast -- --show-output
echo "== end-to-end scenarios (control plane built from upstream Kubernetes, cached)"
e2e/scripts/build-controlplane.sh >/dev/null
trap 'e2e/scripts/e2e-cleanup.sh' EXIT
# One at a time: the scenarios share one control plane and one demo cluster,
# which each sets to the size it starts from.
cargo test -p ringkv-e2e --no-fail-fast -- --test-threads=1 --show-output
