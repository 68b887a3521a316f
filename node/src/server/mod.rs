//! Wires a node together and runs it: configuration, TLS, telemetry,
//! metrics, readiness and the node's own lifecycle.

pub(crate) mod accept;
pub(crate) mod config;
pub(crate) mod fd_budget;
pub(crate) mod frame_clock;
pub(crate) mod lifecycle;
pub(crate) mod log_limit;
pub(crate) mod metrics;
pub(crate) mod readiness;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub(crate) mod wiring;
