//! Structured logging through tracing.

use tracing_subscriber::{fmt, EnvFilter};

use crate::server::config::LogFormat;

/// Installs the global subscriber. `filter` uses EnvFilter syntax; an invalid
/// filter falls back to `info` rather than silencing the node.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (in tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
