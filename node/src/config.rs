//! Command-line flags of `ringkv-node`. Every flag has a `RINGKV_*`
//! environment variable, which is how the operator configures pods.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

use crate::{storage::Durability, validate::Limits};

/// A ringkv storage node: RocksDB storage behind the RawKV gRPC API.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringkv-node", version, about, max_term_width = 100)]
pub struct NodeConfig {
    /// Address the gRPC API (RawKV, health, reflection) listens on.
    #[arg(long, env = "RINGKV_LISTEN", default_value = "127.0.0.1:7379")]
    pub listen: SocketAddr,

    /// Address the Prometheus `/metrics` endpoint listens on.
    #[arg(long, env = "RINGKV_METRICS_LISTEN", default_value = "127.0.0.1:9379")]
    pub metrics_listen: SocketAddr,

    /// Directory that holds this node's RocksDB database. Created if missing.
    #[arg(long, env = "RINGKV_DATA_DIR", default_value = "./ringkv-data")]
    pub data_dir: PathBuf,

    /// Stable identity of this node. A data dir created by another node id is
    /// refused. Defaults to the gRPC listen address.
    #[arg(long, env = "RINGKV_NODE_ID")]
    pub node_id: Option<String>,

    /// How acknowledged writes reach the disk: `sync` fsyncs every write before
    /// acknowledging it (concurrent writers share one fsync); `periodic` syncs
    /// the WAL every --sync-interval-ms, trading the last interval on a machine
    /// crash for throughput.
    #[arg(long, env = "RINGKV_DURABILITY", value_enum, default_value_t = DurabilityMode::Sync)]
    pub durability: DurabilityMode,

    /// WAL sync period in milliseconds for `--durability periodic`.
    #[arg(long, env = "RINGKV_SYNC_INTERVAL_MS", default_value_t = 100)]
    pub sync_interval_ms: u64,

    /// Largest value accepted, in bytes.
    #[arg(long, env = "RINGKV_MAX_VALUE_BYTES", default_value_t = 8 << 20)]
    pub max_value_bytes: usize,

    /// Most keys in one RawBatchGet, RawBatchPut or RawBatchDelete.
    #[arg(long, env = "RINGKV_MAX_BATCH_KEYS", default_value_t = 1024)]
    pub max_batch_keys: usize,

    /// Most pairs one RawScan returns; larger limits are capped to it.
    #[arg(long, env = "RINGKV_MAX_SCAN_LIMIT", default_value_t = 10_000)]
    pub max_scan_limit: usize,

    /// Largest encoded gRPC request, in bytes. Larger requests are refused
    /// before they are buffered, which bounds the memory one request can take.
    #[arg(long, env = "RINGKV_MAX_REQUEST_BYTES", default_value_t = 16 << 20)]
    pub max_request_bytes: usize,

    /// RocksDB memtable size of the data column family, in bytes.
    #[arg(long, env = "RINGKV_WRITE_BUFFER_BYTES", default_value_t = 64 << 20)]
    pub write_buffer_bytes: usize,

    /// RocksDB block cache size, in bytes.
    #[arg(long, env = "RINGKV_BLOCK_CACHE_BYTES", default_value_t = 256 << 20)]
    pub block_cache_bytes: usize,

    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, env = "RINGKV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info,ringkv_node=debug`.
    #[arg(long, env = "RINGKV_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityMode {
    Sync,
    Periodic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl NodeConfig {
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    pub fn durability(&self) -> Durability {
        match self.durability {
            DurabilityMode::Sync => Durability::Sync,
            DurabilityMode::Periodic => {
                Durability::Periodic(Duration::from_millis(self.sync_interval_ms.max(1)))
            }
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_value_bytes: self.max_value_bytes,
            max_batch_keys: self.max_batch_keys,
            max_scan_limit: self.max_scan_limit,
            max_request_bytes: self.max_request_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_flag_has_an_environment_variable() {
        let command = NodeConfig::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let env = arg.get_env().expect("flag has an env var");
            let expected = format!("RINGKV_{}", id.to_uppercase());
            assert_eq!(env.to_str(), Some(expected.as_str()), "flag --{id}");
        }
        command.debug_assert();
    }
}
