//! The ringkv storage node.
//!
//! - [`storage`]: the local RocksDB engine.
//! - [`rawkv_service`]: the RawKV gRPC handlers.
//! - [`validate`]: request limits.
//! - [`metrics`]: Prometheus metrics and their endpoint.
//! - [`node`]: wiring and graceful shutdown.

pub mod config;
pub mod metrics;
pub mod node;
pub mod rawkv_service;
pub mod storage;
pub mod telemetry;
pub mod validate;

pub use config::NodeConfig;
