//! Command-line flags of `ringkv-node`. Every flag has a `RINGKV_*`
//! environment variable, which is how the operator configures pods.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};
use ringkv_proto::peer_auth::{ClusterKey, DEFAULT_PEER_PORT};

use crate::{
    api::limits::{Limits, DEFAULT_MAX_SCAN_BYTES},
    cluster::gossip_transport::GossipKey,
    replica::{RecordBound, DEFAULT_MAX_RECORD_BYTES, DEFAULT_MAX_SIBLINGS},
    ring::DEFAULT_PARTITIONS,
    storage::Durability,
    versions::{seal::ContextSeal, ConflictMode},
};

/// A flag value the node refuses to start with, naming the flag and the
/// limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--replication-factor must be at least 1")]
    ReplicationFactor,
    #[error("{flag} {value} is outside 1..={n} (--replication-factor)")]
    Quorum {
        flag: &'static str,
        value: u32,
        n: u32,
    },
    #[error("--partitions must be at least 1")]
    Partitions,
    #[error("--peer-listen {0} is the gRPC --listen address: Replica and Admin need a port of their own")]
    PeerListen(SocketAddr),
    #[error("--max-siblings must be at least 1")]
    MaxSiblings,
    #[error("--max-record-bytes {record} is below --max-value-bytes {value}: a single value could not be stored")]
    MaxRecordBytes { record: usize, value: usize },
}

/// A ringkv storage node: RocksDB storage behind the RawKV gRPC API.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringkv-node", version, about, max_term_width = 100)]
pub struct NodeConfig {
    /// Address the gRPC API (RawKV, health, reflection) listens on.
    #[arg(long, env = "RINGKV_LISTEN", default_value = "127.0.0.1:7379")]
    pub listen: SocketAddr,

    /// Address peers and clients reach this node's gRPC API at, when it
    /// differs from --listen (a pod listening on 0.0.0.0 advertises its IP).
    #[arg(long, env = "RINGKV_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<SocketAddr>,

    /// Address the peer port listens on: Replica and Admin calls, and
    /// requests other coordinators pass on. Only the cluster's nodes and
    /// administrators belong here; with --cluster-secret every call must
    /// carry a token signed with it. Defaults to the gRPC address's IP with
    /// port 7381.
    #[arg(long, env = "RINGKV_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,

    /// Address the Prometheus `/metrics` endpoint listens on.
    #[arg(long, env = "RINGKV_METRICS_LISTEN", default_value = "127.0.0.1:9379")]
    pub metrics_listen: SocketAddr,

    /// A second, plaintext listener that serves only the gRPC health service,
    /// for probes that cannot speak TLS (Kubernetes' gRPC probes).
    #[arg(long, env = "RINGKV_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Certificate chain (PEM) of this node: TLS on the gRPC listener and
    /// towards peers. Needs --tls-key-file, --tls-ca-file and
    /// --tls-server-name.
    #[arg(long, env = "RINGKV_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert-file.
    #[arg(long, env = "RINGKV_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// CA certificate (PEM) that signed every node's certificate (and the
    /// clients' certificates, with --tls-client-auth).
    #[arg(long, env = "RINGKV_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,

    /// The name every node verifies in its peers' certificates: peers are
    /// dialled by IP address, which certificates rarely name.
    #[arg(long, env = "RINGKV_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,

    /// Refuse clients that present no certificate signed by --tls-ca-file
    /// (mutual TLS); peers present their own.
    #[arg(long, env = "RINGKV_TLS_CLIENT_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub tls_client_auth: bool,

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

    /// Most concurrent values (siblings) a put may leave a key with. A put
    /// past it is refused with FAILED_PRECONDITION before it is applied
    /// anywhere; a put with the context read replaces the siblings instead.
    #[arg(long, env = "RINGKV_MAX_SIBLINGS", default_value_t = DEFAULT_MAX_SIBLINGS)]
    pub max_siblings: usize,

    /// Most bytes of values a put may leave a key with, all siblings
    /// together; at least --max-value-bytes. Peers accept replica messages
    /// of twice this plus 1 MiB, which leaves room for puts through
    /// different coordinators that each passed the check at once.
    #[arg(long, env = "RINGKV_MAX_RECORD_BYTES", default_value_t = DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: usize,

    /// Most keys in one RawBatchGet, RawBatchPut or RawBatchDelete.
    #[arg(long, env = "RINGKV_MAX_BATCH_KEYS", default_value_t = 1024)]
    pub max_batch_keys: usize,

    /// Most pairs one RawScan returns; larger limits are capped to it.
    #[arg(long, env = "RINGKV_MAX_SCAN_LIMIT", default_value_t = 10_000)]
    pub max_scan_limit: usize,

    /// Most bytes of keys and values one RawScan response holds, and one
    /// replica's page of a scan: past it the response ends early (with
    /// `more` set) after the pair that crossed it. Bounds the memory a scan
    /// of large values takes, however slowly its client reads.
    #[arg(long, env = "RINGKV_MAX_SCAN_BYTES", default_value_t = DEFAULT_MAX_SCAN_BYTES)]
    pub max_scan_bytes: usize,

    /// Most client requests the node serves at once, from their headers
    /// until their answer is sent; one more is refused at once with
    /// RESOURCE_EXHAUSTED, before its body is read. With
    /// --max-request-bytes it bounds the memory requests take.
    #[arg(long, env = "RINGKV_MAX_CONCURRENT_REQUESTS", default_value_t = 128)]
    pub max_concurrent_requests: usize,

    /// Most partition streams (handoff and refill) this node sends at
    /// once; one more is refused with RESOURCE_EXHAUSTED, and its receiver
    /// retries. Each holds at most three batches of about 1 MiB.
    #[arg(long, env = "RINGKV_MAX_PARTITION_STREAMS", default_value_t = 16)]
    pub max_partition_streams: usize,

    /// Seconds a partition stream's receiver may leave a batch untaken
    /// before the stream is dropped (the receiver resumes from its cursor).
    #[arg(long, env = "RINGKV_STREAM_STALL_TIMEOUT_SECS", default_value_t = 60)]
    pub stream_stall_timeout_secs: u64,

    /// Seconds a new connection, on the client or the peer port, has to
    /// finish its TLS handshake, if TLS is on, and then to send the opening
    /// of its HTTP/2 handshake (the preface) before it is closed.
    #[arg(long, env = "RINGKV_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// Seconds a connection may send nothing before it is closed. Live
    /// clients answer the node's keepalive pings every 30 s, so only dead or
    /// stalled connections reach it.
    #[arg(long, env = "RINGKV_IDLE_TIMEOUT_SECS", default_value_t = 120)]
    pub idle_timeout_secs: u64,

    /// Seconds an HTTP/2 client may take to finish a frame, or a request's
    /// header block, once it has begun sending it; past it the connection
    /// is closed. (A request's body is bounded by the request
    /// deadline instead.)
    #[arg(long, env = "RINGKV_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Most concurrent requests (HTTP/2 streams) one client connection may
    /// open; the client queues the rest.
    #[arg(long, env = "RINGKV_MAX_CONCURRENT_STREAMS", default_value_t = 128)]
    pub max_concurrent_streams: u32,

    /// Largest encoded gRPC request, in bytes. Larger requests are refused
    /// before they are buffered, which bounds the memory one request can take.
    #[arg(long, env = "RINGKV_MAX_REQUEST_BYTES", default_value_t = 16 << 20)]
    pub max_request_bytes: usize,

    /// RocksDB memtable size of the data column family, in bytes.
    #[arg(long, env = "RINGKV_WRITE_BUFFER_BYTES", default_value_t = 64 << 20)]
    pub write_buffer_bytes: usize,

    /// Writes that store data are refused with UNAVAILABLE while the data
    /// volume has fewer bytes free than this, which leaves RocksDB room to
    /// flush its memtables and compact; reads, and the node's own drops of
    /// partitions it no longer owns, go on. 0 turns the margin off.
    #[arg(long, env = "RINGKV_MIN_FREE_DISK_BYTES", default_value_t = 256 << 20)]
    pub min_free_disk_bytes: u64,

    /// Size of the reserve file (`ringkv.reserve` in the data dir) that the
    /// node deletes before it opens its database and when a stop cannot
    /// flush, so that it can start and stop on a full volume. 0 keeps none.
    #[arg(long, env = "RINGKV_DISK_RESERVE_BYTES", default_value_t = 64 << 20)]
    pub disk_reserve_bytes: u64,

    /// RocksDB block cache size, in bytes.
    #[arg(long, env = "RINGKV_BLOCK_CACHE_BYTES", default_value_t = 256 << 20)]
    pub block_cache_bytes: usize,

    /// UDP address gossip (chitchat) listens on. Defaults to the gRPC
    /// address's IP with port 7946.
    #[arg(long, env = "RINGKV_GOSSIP_LISTEN")]
    pub gossip_listen: Option<SocketAddr>,

    /// Where seeds come from: a static list (--seeds) or the Kubernetes API.
    #[arg(long, env = "RINGKV_DISCOVERY", value_enum, default_value_t = Discovery::Static)]
    pub discovery: Discovery,

    /// Gossip addresses (HOST:PORT) of nodes to join through, comma-separated.
    /// A node keeps retrying them while it knows no live peer.
    #[arg(long, env = "RINGKV_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,

    /// Label selector of the cluster's pods, for `--discovery kubernetes`.
    #[arg(
        long,
        env = "RINGKV_KUBERNETES_SELECTOR",
        default_value = "app.kubernetes.io/name=ringkv"
    )]
    pub kubernetes_selector: String,

    /// Namespace of the cluster's pods, for `--discovery kubernetes`; defaults
    /// to the pod's own namespace.
    #[arg(long, env = "RINGKV_KUBERNETES_NAMESPACE")]
    pub kubernetes_namespace: Option<String>,

    /// Name of the cluster; nodes of other clusters are ignored by gossip.
    #[arg(long, env = "RINGKV_CLUSTER_ID", default_value = "ringkv")]
    pub cluster_id: String,

    /// Secret shared by every node of the cluster. Every call to the peer
    /// port must carry a token signed with it (ring changes with its admin
    /// key), and the causal contexts handed to clients are sealed with a key
    /// derived from it, so a forged context is refused. Without it the peer
    /// port accepts any caller, and the context key derives from
    /// --cluster-id.
    #[arg(long, env = "RINGKV_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// Largest offset between the nodes' clocks that is tolerated, in
    /// milliseconds: a timestamp further ahead of this node's clock, in a
    /// client's context or a peer's record, is refused rather than adopted
    /// (CockroachDB's max-offset).
    #[arg(long, env = "RINGKV_MAX_CLOCK_OFFSET_MS", default_value_t = 500)]
    pub max_clock_offset_ms: u64,

    /// Failure-domain zone of this node; replicas of a partition go to
    /// distinct zones wherever zones are set.
    #[arg(long, env = "RINGKV_ZONE")]
    pub zone: Option<String>,

    /// With `--discovery kubernetes` and no `--zone`: wait at start (up to a
    /// minute) for this annotation on the node's own pod and use its value
    /// as the zone. The operator sets it from the Kubernetes node's label
    /// named by the KVCluster's `zoneTopologyKey`.
    #[arg(long, env = "RINGKV_ZONE_ANNOTATION")]
    pub zone_annotation: Option<String>,

    /// Name of this node's pod, for `--zone-annotation`.
    #[arg(long, env = "RINGKV_POD_NAME")]
    pub pod_name: Option<String>,

    /// Partition count, fixed when the cluster is created and stored on disk.
    /// A node refuses to join a cluster whose count differs from its own.
    #[arg(long, env = "RINGKV_PARTITIONS", default_value_t = DEFAULT_PARTITIONS)]
    pub partitions: u32,

    /// N: replicas of each partition.
    #[arg(long, env = "RINGKV_REPLICATION_FACTOR", default_value_t = 3)]
    pub replication_factor: u32,

    /// R: replicas that must answer a read, unless the request overrides it.
    #[arg(long, env = "RINGKV_READ_QUORUM", default_value_t = 2)]
    pub read_quorum: u32,

    /// W: replicas that must acknowledge a write, unless the request overrides it.
    #[arg(long, env = "RINGKV_WRITE_QUORUM", default_value_t = 2)]
    pub write_quorum: u32,

    /// How concurrent writes are resolved: `siblings` keeps every concurrent
    /// value for the client to merge; `lww` keeps the one with the highest
    /// hybrid-logical-clock timestamp.
    #[arg(long, env = "RINGKV_CONFLICT_RESOLUTION", value_enum, default_value_t = ConflictResolution::Siblings)]
    pub conflict_resolution: ConflictResolution,

    /// A node that finished a decommission (it is `left`) wipes its data and
    /// joins again as a new member when it starts. Off, a left node stays
    /// out of the ring, as a decommissioned Cassandra node does; the operator
    /// turns it on because a pod the StatefulSet still wants is meant to be a
    /// member.
    #[arg(long, env = "RINGKV_REJOIN_AFTER_LEAVE", default_value_t = false, action = clap::ArgAction::Set)]
    pub rejoin_after_leave: bool,

    /// On SIGTERM, report NOT_SERVING and keep serving this long before
    /// closing, so that clients and Kubernetes endpoints move away first.
    #[arg(long, env = "RINGKV_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    pub shutdown_delay_ms: u64,

    /// After --shutdown-delay-ms, how long in-flight requests may take to
    /// finish before their connections are closed: a stream whose reader
    /// stalled must not keep the node, and its data dir's lock, alive.
    #[arg(long, env = "RINGKV_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,

    /// Store hints for unreachable replicas and replay them when they return.
    #[arg(long, env = "RINGKV_HINTED_HANDOFF", default_value_t = true, action = clap::ArgAction::Set)]
    pub hinted_handoff: bool,

    /// Hints older than this many seconds are dropped (and counted).
    #[arg(long, env = "RINGKV_HINT_MAX_AGE_SECS", default_value_t = 3 * 3600)]
    pub hint_max_age_secs: u64,

    /// Deadline of a client request that sets no `grpc-timeout`, in
    /// milliseconds: past it the node stops working on the request and
    /// answers DEADLINE_EXCEEDED, so no request is held forever.
    #[arg(long, env = "RINGKV_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Timeout of one node-to-node call, in milliseconds, when the client set
    /// no shorter deadline.
    #[arg(long, env = "RINGKV_REPLICA_TIMEOUT_MS", default_value_t = 2000)]
    pub replica_timeout_ms: u64,

    /// Gossip round interval in milliseconds; failure detection scales with it.
    #[arg(long, env = "RINGKV_GOSSIP_INTERVAL_MS", default_value_t = 200)]
    pub gossip_interval_ms: u64,

    /// How long membership must stay unchanged before the first layout is
    /// made, in milliseconds, so that nodes started together share it.
    #[arg(long, env = "RINGKV_LAYOUT_SETTLE_MS", default_value_t = 1500)]
    pub layout_settle_ms: u64,

    /// After a restart, how long RawKV may stay NOT_SERVING while gossip
    /// looks for the other members of the layout, in milliseconds. The node
    /// serves as soon as it sees them all alive; the limit is for members
    /// that really are down.
    #[arg(long, env = "RINGKV_GOSSIP_SETTLE_MS", default_value_t = 10000)]
    pub gossip_settle_ms: u64,

    /// Seconds between anti-entropy rounds (hash-tree exchanges).
    #[arg(long, env = "RINGKV_ANTI_ENTROPY_INTERVAL_SECS", default_value_t = 60)]
    pub anti_entropy_interval_secs: u64,

    /// Most bytes per second anti-entropy reads from local storage, so that
    /// it takes a bounded share of I/O.
    #[arg(long, env = "RINGKV_ANTI_ENTROPY_BYTES_PER_SEC", default_value_t = 32 << 20)]
    pub anti_entropy_bytes_per_sec: u64,

    /// Most bytes per second one outgoing partition stream sends; 0 for no
    /// limit.
    #[arg(long, env = "RINGKV_HANDOFF_BYTES_PER_SEC", default_value_t = 0)]
    pub handoff_bytes_per_sec: u64,

    /// Seconds a tombstone is kept at least before compaction may purge it
    /// (10 days, as in Cassandra); it is purged only once anti-entropy has
    /// also seen every replica of its partition agree after the delete.
    #[arg(long, env = "RINGKV_GC_GRACE_SECS", default_value_t = 10 * 24 * 3600)]
    pub gc_grace_secs: u64,

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
pub enum Discovery {
    /// The --seeds list.
    Static,
    /// Pods listed through the Kubernetes API by label selector.
    Kubernetes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConflictResolution {
    Siblings,
    Lww,
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
            .unwrap_or_else(|| self.advertise_address().to_string())
    }

    pub fn durability(&self) -> Durability {
        match self.durability {
            DurabilityMode::Sync => Durability::Sync,
            DurabilityMode::Periodic => {
                Durability::Periodic(Duration::from_millis(self.sync_interval_ms.max(1)))
            }
        }
    }

    pub fn advertise_address(&self) -> SocketAddr {
        self.advertise_address.unwrap_or(self.listen)
    }

    /// The gossip address peers use: the advertised IP with the gossip port.
    pub fn gossip_advertise(&self) -> SocketAddr {
        SocketAddr::new(self.advertise_address().ip(), self.gossip_listen().port())
    }

    pub fn peer_listen(&self) -> SocketAddr {
        self.peer_listen
            .unwrap_or_else(|| SocketAddr::new(self.listen.ip(), DEFAULT_PEER_PORT))
    }

    /// The peer address other nodes use: the advertised IP with the peer
    /// port.
    pub fn peer_advertise(&self) -> SocketAddr {
        SocketAddr::new(self.advertise_address().ip(), self.peer_listen().port())
    }

    /// The key peer calls are signed and checked with, when the cluster has
    /// a secret.
    pub fn cluster_key(&self) -> Option<ClusterKey> {
        self.cluster_secret
            .as_deref()
            .map(|secret| ClusterKey::new(secret.as_bytes()))
    }

    /// The key gossip datagrams are sealed with, when the cluster has a
    /// secret.
    pub fn gossip_key(&self) -> Option<GossipKey> {
        self.cluster_secret
            .as_deref()
            .map(|secret| GossipKey::new(secret.as_bytes()))
    }

    pub fn gossip_listen(&self) -> SocketAddr {
        self.gossip_listen
            .unwrap_or_else(|| SocketAddr::new(self.listen.ip(), 7946))
    }

    pub fn conflict_mode(&self) -> ConflictMode {
        match self.conflict_resolution {
            ConflictResolution::Siblings => ConflictMode::Siblings,
            ConflictResolution::Lww => ConflictMode::Lww,
        }
    }

    /// Checks the quorum settings against N.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.replication_factor;
        if n == 0 {
            return Err(ConfigError::ReplicationFactor);
        }
        for (flag, value) in [
            ("--read-quorum", self.read_quorum),
            ("--write-quorum", self.write_quorum),
        ] {
            if value == 0 || value > n {
                return Err(ConfigError::Quorum { flag, value, n });
            }
        }
        if self.partitions == 0 {
            return Err(ConfigError::Partitions);
        }
        if self.peer_listen() == self.listen {
            return Err(ConfigError::PeerListen(self.listen));
        }
        if self.max_siblings == 0 {
            return Err(ConfigError::MaxSiblings);
        }
        if self.max_record_bytes < self.max_value_bytes {
            return Err(ConfigError::MaxRecordBytes {
                record: self.max_record_bytes,
                value: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// What seals the causal contexts this node hands out.
    pub fn context_seal(&self) -> ContextSeal {
        match &self.cluster_secret {
            Some(secret) => ContextSeal::new(secret.as_bytes()),
            None => ContextSeal::new(self.cluster_id.as_bytes()),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_value_bytes: self.max_value_bytes,
            max_batch_keys: self.max_batch_keys,
            max_scan_limit: self.max_scan_limit,
            max_scan_bytes: self.max_scan_bytes.max(1),
            max_request_bytes: self.max_request_bytes,
            max_peer_message_bytes: self.max_request_bytes.max(
                self.max_record_bytes
                    .saturating_mul(2)
                    .saturating_add(1 << 20),
            ),
        }
    }

    /// The largest record a put may leave a key with.
    pub fn record_bound(&self) -> RecordBound {
        RecordBound {
            max_siblings: self.max_siblings,
            max_bytes: self.max_record_bytes,
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

    /// What a default in docs/operations.md's flag table says, in clap's
    /// terms: backticks and a parenthesised remark dropped, MiB multiplied
    /// out.
    fn documented(cell: &str) -> String {
        let cell = cell.replace('`', "");
        let cell = cell.split(" (").next().unwrap_or_default().trim();
        match cell.strip_suffix(" MiB") {
            Some(mib) => (mib.parse::<u64>().expect("a number of MiB") << 20).to_string(),
            None => cell.to_string(),
        }
    }

    /// Every default docs/operations.md gives is the one the node has, and
    /// every flag with a default is in the table.
    #[test]
    fn the_documented_defaults_are_the_real_ones() {
        let doc = include_str!("../../../docs/operations.md");
        let mut documented = std::collections::BTreeMap::new();
        for row in doc.lines().filter(|l| l.starts_with("| `--")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let flags: Vec<String> = cells[0]
                .trim_start_matches("| ")
                .split(", ")
                .map(|f| f.split(' ').next().unwrap_or_default().replace('`', ""))
                .collect();
            // "2, 2" for two flags; "none" for each of two.
            let defaults: Vec<&str> = if flags.len() > 1 && cells[1].contains(", ") {
                cells[1].split(", ").collect()
            } else {
                vec![cells[1]; flags.len()]
            };
            for (flag, default) in flags.iter().zip(defaults) {
                documented.insert(flag.clone(), documented_default(default));
            }
        }
        let command = NodeConfig::command();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let flag = format!("--{long}");
            let real: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let doc = documented.get(&flag);
            assert!(doc.is_some(), "{flag} is missing from docs/operations.md");
            if let [real] = real.as_slice() {
                assert_eq!(
                    doc,
                    Some(&Some(real.clone())),
                    "the documented default of {flag}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 30, "only {checked} defaults checked");
    }

    /// A documented default, or `None` where the table says there is none
    /// or names something derived at start (the listen address, the pod's
    /// namespace).
    fn documented_default(cell: &str) -> Option<String> {
        let value = documented(cell);
        let derived = value == "none" || value.starts_with("the ") || value.contains(' ');
        (!derived).then_some(value)
    }

    /// The node's flags as parsed from `args`.
    fn config(args: &[&str]) -> NodeConfig {
        let mut all = vec!["ringkv-node"];
        all.extend_from_slice(args);
        NodeConfig::try_parse_from(all).expect("parses")
    }

    /// A record bound that could not hold one value, or no sibling at all,
    /// is refused at start with a message naming the flags.
    #[test]
    fn a_record_bound_below_one_value_is_refused() {
        assert!(config(&[]).validate().is_ok());
        let small = config(&["--max-record-bytes", "1024"]).validate();
        assert!(
            matches!(small, Err(ConfigError::MaxRecordBytes { record: 1024, .. })),
            "{small:?}"
        );
        let none = config(&["--max-siblings", "0"]).validate();
        assert!(matches!(none, Err(ConfigError::MaxSiblings)), "{none:?}");
        let peers = config(&[
            "--max-record-bytes",
            "67108864",
            "--max-value-bytes",
            "67108864",
        ]);
        assert_eq!(
            peers.limits().max_peer_message_bytes,
            (128 << 20) + (1 << 20)
        );
    }

    /// Without `--cluster-secret`, contexts are sealed under a key derived
    /// from `--cluster-id`: another cluster's contexts do not open, and the
    /// same id's do.
    #[test]
    fn without_a_secret_the_seal_derives_from_the_cluster_id() {
        let context = crate::versions::CausalContext::new();
        let sealed = config(&["--cluster-id", "a"])
            .context_seal()
            .seal(b"k", &context);
        assert!(config(&["--cluster-id", "a"])
            .context_seal()
            .open(b"k", &sealed)
            .is_ok());
        assert!(config(&["--cluster-id", "b"])
            .context_seal()
            .open(b"k", &sealed)
            .is_err());
        let secret = config(&["--cluster-id", "a", "--cluster-secret", "s"]).context_seal();
        assert!(
            secret.open(b"k", &sealed).is_err(),
            "a secret replaces the id"
        );
    }
}
