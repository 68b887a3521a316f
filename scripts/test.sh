#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, then every
# test of the workspace (unit, property and multi-process tests).
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
cargo test --workspace --no-fail-fast -- --show-output
