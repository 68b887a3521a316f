# Sourced by the scripts: build outputs live outside the clone and are reused
# by every command (fmt, clippy, tests, the local cluster, the benchmark).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ringkv/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
