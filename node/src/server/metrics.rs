//! Prometheus metrics: per-RPC counters and latency histograms, RocksDB's
//! own figures, and the HTTP endpoint that serves them.

use std::{sync::Arc, time::Instant};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use prometheus_client::{
    collector::Collector,
    encoding::{text::encode, DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use tonic::{Code, Status};

use crate::{
    cluster::gossip_transport::RefusedDatagrams, ring::Ring, server::accept::ConnectionMetrics,
    storage::RocksStorage,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: String,
}

/// Request metrics of the gRPC API.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    requests: Family<RpcLabels, Counter>,
    latency: Family<RpcLabels, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    // 10 µs to about 5 s.
    Histogram::new(exponential_buckets(1e-5, 2.0, 20))
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl RpcMetrics {
    /// Runs a request's handler, records its outcome and latency, and
    /// wraps its answer.
    pub async fn timed<T>(
        &self,
        method: &'static str,
        handler: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<tonic::Response<T>, Status> {
        let started = Instant::now();
        let result = handler.await;
        self.observe(method, started, &result);
        result.map(tonic::Response::new)
    }

    /// Records one finished request.
    pub fn observe<T>(&self, method: &'static str, started: Instant, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        let labels = RpcLabels {
            method,
            code: format!("{code:?}"),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Counters of replication: hints and repairs.
#[derive(Debug, Clone, Default)]
pub struct ReplicationMetrics {
    pub hints_stored: Counter,
    pub hints_delivered: Counter,
    pub hints_dropped: Counter,
    pub read_repairs: Counter,
    pub handoff_streams_resumed: Counter,
    pub handoff_bytes_received: Counter,
    pub handoff_keys_received: Counter,
}

/// What outsiders tried: peer-port calls refused for their credentials,
/// gossip datagrams dropped, node ids claimed twice.
#[derive(Debug, Clone, Default)]
pub struct SecurityMetrics {
    pub peer_calls_refused: Counter,
    pub gossip_datagrams_refused: RefusedDatagrams,
    pub gossip_identity_conflicts: Gauge,
}

/// Exposes RocksDB's properties and tickers at scrape time.
#[derive(Debug)]
struct EngineCollector {
    storage: Arc<RocksStorage>,
}

fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value as i64);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.storage.stats();
        let gauges = [
            (
                "rocksdb_estimated_keys",
                "Estimated live keys in the data column family",
                stats.estimated_keys,
            ),
            (
                "rocksdb_live_sst_bytes",
                "Bytes in live SST files of the data column family",
                stats.live_sst_bytes,
            ),
            (
                "rocksdb_memtable_bytes",
                "Bytes in memtables of the data column family",
                stats.memtable_bytes,
            ),
            (
                "rocksdb_running_compactions",
                "Compactions running now",
                stats.running_compactions,
            ),
            (
                "rocksdb_running_flushes",
                "Memtable flushes running now",
                stats.running_flushes,
            ),
            (
                "rocksdb_background_errors",
                "Background errors RocksDB has seen",
                stats.background_errors,
            ),
            (
                "hints_pending",
                "Hints this node keeps for other nodes (RocksDB's estimate, as gossiped)",
                self.storage.pending_hints(),
            ),
        ];
        for (name, help, value) in gauges {
            encode_gauge(&mut encoder, name, help, value)?;
        }
        for (ticker, value) in stats.tickers {
            // "rocksdb.block.cache.hit" becomes "rocksdb_block_cache_hit_total".
            let name = ticker.replace('.', "_");
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(
                &name,
                &format!("RocksDB ticker {ticker}"),
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// The ring as this node holds it, at scrape time: what the dashboard's
/// ring panel and the stalled-handoff alert read.
struct RingCollector {
    ring: Arc<Ring>,
    node_id: String,
}

impl std::fmt::Debug for RingCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingCollector")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Collector for RingCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.ring.state();
        let (version, members, transition, owned, receiving) = match &state {
            Some(state) => (
                state.version,
                state.current.members().len() as u64,
                u64::from(state.next.is_some()),
                state.current.partitions_of(&self.node_id).len() as u64,
                state.receiving(&self.node_id).len() as u64,
            ),
            None => (0, 0, 0, 0, 0),
        };
        for (name, help, value) in [
            (
                "ring_state_version",
                "Version of the ring state this node holds",
                version,
            ),
            ("ring_members", "Members of the current layout", members),
            (
                "ring_transition",
                "1 while partitions move to a new layout, else 0",
                transition,
            ),
            (
                "ring_partitions_owned",
                "Partitions this node owns in the current layout",
                owned,
            ),
            (
                "ring_partitions_receiving",
                "Partitions this node gains in the layout being moved to",
                receiving,
            ),
        ] {
            encode_gauge(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}

/// Every metric of a node, in one registry.
pub struct Metrics {
    registry: Registry,
    pub rpc: RpcMetrics,
    pub replication: ReplicationMetrics,
    pub repair: crate::sync::anti_entropy::RepairMetrics,
    pub security: SecurityMetrics,
    /// Client requests refused past --max-concurrent-requests.
    pub requests_shed: Counter,
    connections_refused: Family<PortLabel, Counter>,
    connections_open: Family<PortLabel, Gauge>,
}

/// Which gRPC port a connection came to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    port: &'static str,
}

impl Metrics {
    pub fn new(storage: Arc<RocksStorage>, ring: Arc<Ring>, node_id: &str) -> Self {
        let mut registry = Registry::with_prefix("ringkv");
        registry.register_collector(Box::new(RingCollector {
            ring,
            node_id: node_id.to_string(),
        }));
        let rpc = RpcMetrics::default();
        registry.register(
            "grpc_requests",
            "gRPC requests handled, by method and status code",
            rpc.requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC request latency, by method and status code",
            rpc.latency.clone(),
        );
        registry.register_collector(Box::new(EngineCollector { storage }));
        let replication = ReplicationMetrics::default();
        registry.register(
            "hints_stored",
            "Writes kept as hints for a replica that could not take them",
            replication.hints_stored.clone(),
        );
        registry.register(
            "hints_delivered",
            "Hints handed over to their node",
            replication.hints_delivered.clone(),
        );
        registry.register(
            "hints_dropped",
            "Hints dropped for exceeding --hint-max-age-secs",
            replication.hints_dropped.clone(),
        );
        registry.register(
            "handoff_streams_resumed",
            "Partition streams that resumed from a persisted cursor",
            replication.handoff_streams_resumed.clone(),
        );
        registry.register(
            "handoff_bytes_received",
            "Bytes of records received by partition streams",
            replication.handoff_bytes_received.clone(),
        );
        registry.register(
            "handoff_keys_received",
            "Records received by partition streams",
            replication.handoff_keys_received.clone(),
        );
        registry.register(
            "read_repairs",
            "Stale replicas repaired by reads",
            replication.read_repairs.clone(),
        );
        let repair = crate::sync::anti_entropy::RepairMetrics::default();
        registry.register(
            "anti_entropy_keys_repaired",
            "Keys repaired by anti-entropy",
            repair.keys_repaired.clone(),
        );
        registry.register(
            "anti_entropy_tree_build_seconds",
            "Time to build this node's partition hash trees",
            repair.tree_build_seconds.clone(),
        );
        registry.register(
            "anti_entropy_last_exchange_timestamp_seconds",
            "Unix time of the last tree exchange, by partition",
            repair.last_exchange.clone(),
        );
        let security = SecurityMetrics::default();
        registry.register(
            "peer_calls_refused",
            "Calls on the peer port refused for a missing, forged or stale token",
            security.peer_calls_refused.clone(),
        );
        registry.register(
            "gossip_datagrams_refused",
            "Gossip datagrams dropped: without a valid seal (reason bad_tag), undecodable, or too large to send once sealed",
            security.gossip_datagrams_refused.clone(),
        );
        registry.register(
            "gossip_identity_conflicts",
            "Node ids that live processes at more than one address claim now; the first stays the member",
            security.gossip_identity_conflicts.clone(),
        );
        let requests_shed = Counter::default();
        registry.register(
            "requests_shed",
            "Client requests refused with RESOURCE_EXHAUSTED past --max-concurrent-requests",
            requests_shed.clone(),
        );
        let connections_refused = Family::<PortLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at once past the port's share of file descriptors, or lost to EMFILE, by port",
            connections_refused.clone(),
        );
        let connections_open = Family::<PortLabel, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections open now, by port",
            connections_open.clone(),
        );
        Self {
            registry,
            rpc,
            replication,
            repair,
            security,
            requests_shed,
            connections_refused,
            connections_open,
        }
    }

    /// The connection metrics of one gRPC port.
    pub fn connections(&self, port: &'static str) -> ConnectionMetrics {
        let label = PortLabel { port };
        ConnectionMetrics {
            refused: self.connections_refused.get_or_create(&label).clone(),
            open: self.connections_open.get_or_create(&label).clone(),
        }
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> axum::response::Response {
    match metrics.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed",
        )
            .into_response(),
    }
}

/// Serves `/metrics` (and `/healthz` for plain HTTP checks) until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
