//! ringkv's workload driver and evaluation.
//!
//! One driver ([`driver::run`]) drives every system the evaluation compares,
//! through [`target::Target`], so that a figure differs between systems only
//! by the system. `ringkv-bench run` exposes it on the command line;
//! `ringkv-bench evaluate` starts ringkv, etcd and Cassandra clusters on
//! loopback, measures them, and writes docs/benchmarks.md with its plots.

pub mod cpu;
pub mod driver;
pub mod evaluate;
pub mod keys;
pub mod measurement;
pub mod target;
pub mod workload;

/// What went wrong, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Config(String),
    #[error("{target}: {message}")]
    Target {
        target: &'static str,
        message: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Process { what: String, message: String },
    #[error("drawing a plot: {0}")]
    Plot(String),
}

impl BenchError {
    /// A failed request or connection to a target, with the target's own
    /// error text (each driver has its own error type).
    pub fn target(target: &'static str, error: impl std::fmt::Display) -> Self {
        BenchError::Target {
            target,
            message: error.to_string(),
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }
}
