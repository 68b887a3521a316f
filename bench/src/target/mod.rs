//! The systems one driver drives: ringkv, etcd, Cassandra, RocksDB
//! in-process, and a no-op call on ringkv's server stack. Each turns the
//! driver's operations into its own requests; nothing else differs between
//! them, so that their figures compare.

mod cassandra;
mod etcd;
mod ringkv;
mod rocks;

use bytes::Bytes;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::{workload::Op, BenchError};

pub use cassandra::CassandraOptions;
pub use rocks::RocksOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Ringkv,
    Etcd,
    Cassandra,
    /// ringkv's storage engine in this process: the limit with no network.
    Rocks,
    /// gRPC health checks against a ringkv node.
    Noop,
}

/// Where the target is and how to talk to it.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub kind: TargetKind,
    /// `HOST:PORT` of the nodes (ringkv, etcd, Cassandra) to spread load over.
    pub endpoints: Vec<String>,
    /// Connections the clients share, each balanced over every endpoint.
    pub connections: usize,
    /// ringkv's per-request quorums; unset takes the cluster's defaults.
    pub read_quorum: Option<u32>,
    pub write_quorum: Option<u32>,
    /// etcd: serializable reads (served by one member) instead of
    /// linearizable ones.
    pub serializable_reads: bool,
    pub cassandra: CassandraOptions,
    pub rocks: RocksOptions,
}

impl TargetSpec {
    pub fn new(kind: TargetKind, endpoints: Vec<String>) -> Self {
        Self {
            kind,
            endpoints,
            connections: 4,
            read_quorum: None,
            write_quorum: None,
            serializable_reads: false,
            cassandra: CassandraOptions::default(),
            rocks: RocksOptions::default(),
        }
    }
}

/// What a request returned: a read's value, or nothing to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    Value(Option<Bytes>),
}

/// A connected target, shared by every client task.
pub enum Target {
    Ringkv(ringkv::Ringkv),
    Etcd(etcd::Etcd),
    Cassandra(Box<cassandra::Cassandra>),
    Rocks(rocks::Rocks),
}

impl Target {
    pub async fn connect(spec: &TargetSpec) -> Result<Self, BenchError> {
        if spec.kind != TargetKind::Rocks && spec.endpoints.is_empty() {
            return Err(BenchError::Config(format!(
                "{:?} needs at least one --endpoint",
                spec.kind
            )));
        }
        Ok(match spec.kind {
            TargetKind::Ringkv | TargetKind::Noop => {
                Target::Ringkv(ringkv::Ringkv::connect(spec).await?)
            }
            TargetKind::Etcd => Target::Etcd(etcd::Etcd::connect(spec).await?),
            TargetKind::Cassandra => {
                Target::Cassandra(Box::new(cassandra::Cassandra::connect(spec).await?))
            }
            TargetKind::Rocks => Target::Rocks(rocks::Rocks::open(&spec.rocks)?),
        })
    }

    /// Runs one request. `client` picks the connection; `keys` holds one
    /// key, or a batch's keys.
    pub async fn execute(
        &self,
        client: usize,
        op: Op,
        keys: &[Bytes],
        value: &Bytes,
    ) -> Result<Reply, BenchError> {
        match self {
            Target::Ringkv(target) => target.execute(client, op, keys, value).await,
            Target::Etcd(target) => target.execute(client, op, keys, value).await,
            Target::Cassandra(target) => target.execute(op, keys, value).await,
            Target::Rocks(target) => target.execute(op, keys, value),
        }
    }

    /// Whether the target runs in this process, whose own CPU is then the
    /// server's.
    pub fn is_in_process(&self) -> bool {
        matches!(self, Target::Rocks(_))
    }
}

/// The first key of a single-key request.
fn single(keys: &[Bytes]) -> Result<&Bytes, BenchError> {
    keys.first()
        .ok_or_else(|| BenchError::Config("a request without a key".into()))
}
