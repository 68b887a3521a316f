//! Wires one node together: storage, replicas, the ring, gossip, the gRPC
//! services and the metrics endpoint, with graceful shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use ringkv_proto::v1::{
    admin_server::AdminServer,
    raw_kv_server::{RawKvServer, SERVICE_NAME},
    replica_server::ReplicaServer,
};
use tokio::sync::{mpsc, watch};
use tonic::{service::interceptor::InterceptedService, transport::Server};
use tonic_health::{server::HealthReporter, ServingStatus};

use crate::{
    api::rawkv::RawKvService,
    api::{admin::AdminService, peer_auth::VerifyPeer, replica::ReplicaService},
    api::{
        admission::AdmissionLayer, http2_only::Http2OnlyLayer,
        request_deadline::RequestDeadlineLayer,
    },
    cluster::coalesce::CallCaps,
    cluster::discovery::{DiscoveryError, KubernetesSeeds, SeedProvider, StaticSeeds},
    cluster::membership::{GossipGuard, Membership, MembershipError, SelfInfo},
    cluster::peers::PeerClients,
    cluster::rpc::PeerRpc,
    coordinator::{Coordinator, CoordinatorConfig, CoordinatorParts, Quorums},
    replica::{GroupCommit, LocalReplica, ReplicaError},
    ring::{
        claimant::{self, ClaimantConfig},
        Ring, RingError,
    },
    server::accept::{self, ConnectionLimits},
    server::config::{ConfigError, Discovery, NodeConfig},
    server::fd_budget::FdBudget,
    server::lifecycle::Lifecycle,
    server::metrics::{self, Metrics},
    server::readiness,
    server::tls::{NodeTls, TlsError},
    storage::{
        now_millis, PurgeHook, Reserve, RocksStorage, RocksStorageOptions, Storage, StorageError,
    },
    sync::anti_entropy::{purgeable, Agreement, AntiEntropy, RepairConfig, TreeCache},
    sync::hints::{HintDelivery, HintDeliveryConfig},
    sync::refill::{self, Refill},
    sync::streaming::receive::{self, StreamProgress},
};

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("creating data dir {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server on {addr}: {source}")]
    Grpc {
        addr: std::net::SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{listener} listener on {addr}: {source}")]
    Listen {
        listener: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("{0}")]
    Refused(String),
    #[error("storage task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The seed provider, and the zone: `--zone`, or the operator's annotation
/// on this node's pod.
async fn seed_provider(
    config: &NodeConfig,
) -> Result<(Arc<dyn SeedProvider>, Option<String>), NodeError> {
    Ok(match config.discovery {
        Discovery::Static => (
            Arc::new(StaticSeeds {
                seeds: config.seeds.clone(),
            }),
            config.zone.clone(),
        ),
        Discovery::Kubernetes => {
            let seeds = KubernetesSeeds::from_environment(
                config.kubernetes_namespace.clone(),
                config.kubernetes_selector.clone(),
                config.gossip_listen().port(),
                config.advertise_address().ip(),
            )
            .await?;
            let zone = match (&config.zone, &config.zone_annotation, &config.pod_name) {
                (Some(zone), _, _) => Some(zone.clone()),
                (None, Some(annotation), Some(pod)) => {
                    let zone = seeds
                        .pod_annotation(pod, annotation, std::time::Duration::from_secs(60))
                        .await
                        .filter(|z| !z.is_empty());
                    if zone.is_none() {
                        tracing::warn!(%annotation, %pod, "no zone annotation on this node's pod: running without a zone");
                    }
                    zone
                }
                _ => None,
            };
            (Arc::new(seeds), zone)
        }
    })
}

/// Sets the status of the RawKV service and of the server as a whole.
async fn set_health(reporter: &HealthReporter, service: &str, status: ServingStatus) {
    reporter.set_service_status(service, status).await;
}

/// Whether this data dir belongs to a node that finished a decommission:
/// asked to leave, in no layout any more, and no hints left to deliver.
fn has_left(
    storage: &Arc<RocksStorage>,
    node_id: &str,
    partitions: u32,
) -> Result<bool, NodeError> {
    if !Lifecycle::load(storage.clone())?.decommissioning() {
        return Ok(false);
    }
    let ring = Ring::load(storage.clone(), partitions)?;
    let in_a_layout = ring.state().is_some_and(|state| state.involves(node_id));
    Ok(!in_a_layout && !storage.has_hints()?)
}

/// Runs a node until `shutdown` resolves, then drains in-flight requests,
/// flushes the memtables and closes the database.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    config.validate()?;
    let node_id = config.node_id();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let fds = FdBudget::raise();
    tracing::info!(
        limit = fds.limit,
        raised_from = fds.raised_from,
        rocksdb_files = fds.rocksdb_files,
        peer_connections = fds.peer_connections,
        client_connections = fds.client_connections,
        "file descriptors"
    );
    let agreement = Arc::new(Agreement::new(config.partitions));
    let purge = {
        let (agreement, partitions) = (agreement.clone(), config.partitions);
        let grace_ms = config.gc_grace_secs.saturating_mul(1000);
        PurgeHook(Arc::new(move |key: &[u8], record: &[u8]| {
            purgeable(key, record, partitions, grace_ms, &agreement, now_millis())
        }))
    };
    let storage_options = RocksStorageOptions {
        purge: Some(purge),
        durability: config.durability(),
        write_buffer_bytes: config.write_buffer_bytes,
        block_cache_bytes: config.block_cache_bytes,
        max_open_files: fds.rocksdb_files,
        in_memory: None,
        min_free_disk_bytes: config.min_free_disk_bytes,
    };
    let data_dir_error = |source| NodeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    };
    // Opening replays the WAL into table files: on a full volume only the
    // reserve's space lets it.
    let reserve = Reserve::new(&config.data_dir, config.disk_reserve_bytes);
    if reserve.release().map_err(data_dir_error)? {
        tracing::debug!("reserve file released for the database to open");
    }
    let mut storage = Arc::new(RocksStorage::open(
        &config.data_dir,
        &node_id,
        &storage_options,
    )?);
    if config.rejoin_after_leave && has_left(&storage, &node_id, config.partitions)? {
        // Everything it held was handed over before it reported `left`, so
        // old records here could only resurrect purged deletes.
        tracing::warn!(data_dir = %config.data_dir.display(), "this node left the ring earlier: deleting the contents of its data dir to join again as a new member");
        drop(storage);
        empty_dir(&config.data_dir).map_err(data_dir_error)?;
        storage = Arc::new(RocksStorage::open(
            &config.data_dir,
            &node_id,
            &storage_options,
        )?);
    }
    match reserve.restore(config.min_free_disk_bytes) {
        Ok(true) => {}
        Ok(false) if config.disk_reserve_bytes > 0 => tracing::warn!(
            reserve_bytes = config.disk_reserve_bytes,
            min_free_disk_bytes = config.min_free_disk_bytes,
            "too little free space for the reserve file: a stop or restart on a full volume may fail"
        ),
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, "could not allocate the reserve file"),
    }
    let ring = Arc::new(Ring::load(storage.clone(), config.partitions)?);
    let local = Arc::new(
        LocalReplica::open(storage.clone(), &node_id, config.conflict_mode())?
            .with_max_clock_offset(config.max_clock_offset_ms)
            .with_record_bound(config.record_bound()),
    );
    let refill = Arc::new(Refill::load(&storage, config.partitions)?);
    let lifecycle = Arc::new(Lifecycle::load(storage.clone())?);
    let metrics = Arc::new(Metrics::new(storage.clone(), ring.clone(), &node_id));
    let limits = config.limits();
    let tls = NodeTls::from_flags(
        config.tls_cert_file.as_deref(),
        config.tls_key_file.as_deref(),
        config.tls_ca_file.as_deref(),
        config.tls_server_name.as_deref(),
        config.tls_client_auth,
    )?;
    let cluster_key = config.cluster_key();
    if cluster_key.is_none() {
        tracing::warn!(
            peer_listen = %config.peer_listen(),
            "no --cluster-secret: the peer port accepts any caller that reaches it"
        );
    }
    let peers = Arc::new(PeerClients::new(
        tls.as_ref().map(|t| t.client.clone()),
        cluster_key.clone(),
        &node_id,
    ));

    let (seeds, zone) = seed_provider(&config).await?;
    let membership = Arc::new(
        Membership::start(
            SelfInfo {
                id: node_id.clone(),
                grpc: config.peer_advertise(),
                gossip_listen: config.gossip_listen(),
                gossip_advertise: config.gossip_advertise(),
                zone: zone.clone(),
                partitions: config.partitions,
                layout_version: ring.version(),
                layout_digest: ring.rank().1,
                cluster_id: config.cluster_id.clone(),
                gossip_interval: Duration::from_millis(config.gossip_interval_ms.max(10)),
            },
            seeds,
            GossipGuard {
                key: config.gossip_key(),
                refused_datagrams: metrics.security.gossip_datagrams_refused.clone(),
                identity_conflicts: metrics.security.gossip_identity_conflicts.clone(),
            },
        )
        .await?,
    );

    let quorums = Quorums {
        n: config.replication_factor as usize,
        r: config.read_quorum as usize,
        w: config.write_quorum as usize,
    };
    let replica_timeout = Duration::from_millis(config.replica_timeout_ms.max(1));
    let rpc = Arc::new(PeerRpc::new(
        node_id.clone(),
        local.clone(),
        refill.clone(),
        peers.clone(),
        CallCaps::within(limits.max_batch_keys, limits.max_peer_message_bytes),
    ));
    let coordinator = Coordinator::new(CoordinatorParts {
        me: node_id.clone(),
        lifecycle: lifecycle.clone(),
        local: local.clone(),
        writes: GroupCommit::start(local.clone())?,
        ring: ring.clone(),
        membership: membership.clone(),
        rpc: rpc.clone(),
        refill: refill.clone(),
        config: CoordinatorConfig {
            quorums,
            hinted_handoff: config.hinted_handoff,
            replica_timeout,
            seal: config.context_seal(),
            gossip_settle: Duration::from_millis(config.gossip_settle_ms),
        },
        metrics: metrics.replication.clone(),
    });

    let (fatal_tx, mut fatal_rx) = mpsc::channel::<String>(1);
    let progress = Arc::new(StreamProgress::default());
    let trees = Arc::new(TreeCache::default());
    // A node whose gossip died would go on answering clients while every
    // peer sees it dead and it sees every peer dead: stop it instead, so
    // that it is restarted with gossip.
    let gossip_lost = membership.gossip_lost();
    let gossip_fatal = fatal_tx.clone();
    let mut background = vec![tokio::spawn(async move {
        let _ = gossip_fatal.send(gossip_lost.await).await;
    })];
    background.push(tokio::spawn(claimant::run(
        ring.clone(),
        membership.clone(),
        lifecycle.clone(),
        peers.clone(),
        ClaimantConfig {
            replication: quorums.n,
            settle: Duration::from_millis(config.layout_settle_ms),
            tick: Duration::from_millis(250),
        },
        fatal_tx,
    )));
    background.push(tokio::spawn(receive::run(
        ring.clone(),
        membership.clone(),
        local.clone(),
        peers.clone(),
        progress.clone(),
        metrics.replication.clone(),
        refill.clone(),
    )));
    background.push(tokio::spawn(refill::run(
        refill.clone(),
        ring.clone(),
        membership.clone(),
        local.clone(),
        peers.clone(),
    )));
    let anti_entropy = AntiEntropy {
        ring: ring.clone(),
        membership: membership.clone(),
        local: local.clone(),
        rpc: rpc.clone(),
        cache: trees.clone(),
        agreement: agreement.clone(),
        config: RepairConfig {
            interval: Duration::from_secs(config.anti_entropy_interval_secs.max(1)),
            bytes_per_sec: config.anti_entropy_bytes_per_sec,
            timeout: replica_timeout,
        },
        metrics: metrics.repair.clone(),
    };
    background.push(tokio::spawn(anti_entropy.run()));
    if config.hinted_handoff {
        let delivery = HintDelivery {
            local: local.clone(),
            coordinator: coordinator.clone(),
            membership: membership.clone(),
            rpc,
            config: HintDeliveryConfig {
                max_age: Duration::from_secs(config.hint_max_age_secs),
                interval: Duration::from_millis(500),
                timeout: replica_timeout,
            },
            metrics: metrics.replication.clone(),
        };
        background.push(tokio::spawn(delivery.run()));
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    set_health(&health_reporter, "", ServingStatus::Serving).await;
    set_health(&health_reporter, SERVICE_NAME, ServingStatus::NotServing).await;
    background.push(tokio::spawn(readiness::track(
        ring.clone(),
        membership.clone(),
        node_id.clone(),
        refill.watch(),
        health_reporter.clone(),
        Duration::from_millis(config.gossip_settle_ms),
    )));

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ringkv_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    // The coordinator shares this deadline out among a request's replica
    // calls; the client port's deadline layer holds the whole request to it.
    let request_timeout = Duration::from_millis(config.request_timeout_ms.max(1));
    let rawkv_service = RawKvService::new(
        coordinator.clone(),
        limits.clone(),
        metrics.rpc.clone(),
        request_timeout,
    );
    let rawkv = |service: RawKvService| {
        RawKvServer::new(service)
            // Refused from the length prefix, before the body is buffered.
            .max_decoding_message_size(limits.max_request_bytes)
            .max_encoding_message_size(usize::MAX)
    };
    let mut verify = VerifyPeer::new(cluster_key, metrics.security.peer_calls_refused.clone());
    if let Some(tls) = &tls {
        verify = verify.with_node_certificates(tls.node_name.clone());
    }
    let max_partition_streams = config.max_partition_streams.max(1);
    let replica = ReplicaServer::new(ReplicaService {
        local: local.clone(),
        coordinator,
        ring: ring.clone(),
        limits: limits.clone(),
        progress,
        trees,
        repair_bytes_per_sec: config.anti_entropy_bytes_per_sec,
        stream_bytes_per_sec: config.handoff_bytes_per_sec,
        streams: Arc::new(tokio::sync::Semaphore::new(max_partition_streams)),
        max_partition_streams,
        stream_stall_timeout: Duration::from_secs(config.stream_stall_timeout_secs.max(1)),
        metrics: metrics.rpc.clone(),
    })
    .max_decoding_message_size(limits.max_peer_message_bytes)
    .max_encoding_message_size(usize::MAX);
    let replica = InterceptedService::new(replica, verify.clone());
    let admin = AdminServer::new(AdminService {
        membership: membership.clone(),
        ring: ring.clone(),
        lifecycle: lifecycle.clone(),
        peers: peers.clone(),
        storage: storage.clone(),
        replication: config.replication_factor,
        mode: config.conflict_mode(),
    });
    let admin = InterceptedService::new(admin, verify.clone());
    // Requests other coordinators pass on arrive here, signed.
    let forwarded = InterceptedService::new(rawkv(rawkv_service.clone()), verify);
    let rawkv = rawkv(rawkv_service);

    // One signal fans out to both servers; a fatal condition stops them too.
    let (stop_tx, stop_rx) = watch::channel(false);
    let refused = Arc::new(std::sync::Mutex::new(None::<String>));
    {
        let refused = refused.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown => {}
                Some(message) = fatal_rx.recv() => {
                    tracing::error!(%message, "stopping");
                    if let Ok(mut slot) = refused.lock() {
                        *slot = Some(message);
                    }
                }
            }
            let _ = stop_tx.send(true);
        });
    }
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // A reserve given up at a start on a full volume comes back once space
    // does, without a restart.
    tokio::spawn(keep_reserve(
        reserve.clone(),
        config.min_free_disk_bytes,
        stopped(stop_rx.clone()),
    ));

    let metrics_addr = config.metrics_listen;
    let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .map_err(|source| NodeError::Listen {
            listener: "metrics",
            addr: metrics_addr,
            source,
        })?;
    let metrics_task = tokio::spawn(metrics::serve(
        metrics_listener,
        metrics.clone(),
        stopped(stop_rx.clone()),
    ));

    let shutdown_delay = std::time::Duration::from_millis(config.shutdown_delay_ms);
    let grpc_shutdown = {
        let rx = stop_rx.clone();
        let reporter = health_reporter.clone();
        async move {
            stopped(rx).await;
            tracing::info!("shutting down: draining in-flight requests");
            for service in [SERVICE_NAME, ""] {
                set_health(&reporter, service, ServingStatus::NotServing).await;
            }
            if !shutdown_delay.is_zero() {
                tracing::info!(
                    ?shutdown_delay,
                    "not serving: waiting for clients to move away"
                );
                tokio::time::sleep(shutdown_delay).await;
            }
        }
    };
    tracing::info!(
        node_id,
        listen = %config.listen,
        peer_listen = %config.peer_listen(),
        advertise = %config.advertise_address(),
        gossip = %config.gossip_listen(),
        metrics = %metrics_addr,
        tls = tls.is_some(),
        data_dir = %config.data_dir.display(),
        durability = %storage_options.durability,
        "ringkv node serving"
    );
    // Probes that cannot speak TLS get the health service alone, in plaintext.
    let health_task = config.health_listen.map(|addr| {
        let health = health_service.clone();
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            Server::builder()
                .add_service(health)
                .serve_with_shutdown(addr, stop)
                .await
                .map_err(|source| NodeError::Grpc { addr, source })
        })
    });
    // Keepalive pings find connections whose peer vanished without a FIN,
    // so they do not hold a slot forever.
    let server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    // The peer port drains with the client port: a coordinator's
    // forwarded write must still reach it while clients are draining.
    let peer_addr = config.peer_listen();
    let peer_listener = tokio::net::TcpListener::bind(peer_addr)
        .await
        .map_err(|source| NodeError::Listen {
            listener: "peer",
            addr: peer_addr,
            source,
        })?;
    let connection_limits = |port: &'static str, max_connections: usize| ConnectionLimits {
        port,
        max_connections,
        handshake_timeout: Duration::from_secs(config.handshake_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(config.idle_timeout_secs.max(1)),
        header_timeout: Duration::from_secs(config.header_timeout_secs.max(1)),
    };
    let peer_incoming = accept::incoming(
        peer_listener,
        connection_limits("peer", fds.peer_connections),
        metrics.connections("peer"),
        tls.as_ref().map(|tls| tls.acceptor.clone()),
    );
    let client_listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| NodeError::Listen {
            listener: "client",
            addr: config.listen,
            source,
        })?;
    let client_incoming = accept::incoming(
        client_listener,
        connection_limits("client", fds.client_connections),
        metrics.connections("client"),
        tls.as_ref().map(|tls| tls.acceptor.clone()),
    );
    let peer_task = {
        let stop = {
            let rx = stop_rx.clone();
            async move {
                stopped(rx).await;
                tokio::time::sleep(shutdown_delay).await;
            }
        };
        let mut peer_server = server.clone();
        tokio::spawn(async move {
            peer_server
                .add_service(replica)
                .add_service(admin)
                .add_service(forwarded)
                .serve_with_incoming_shutdown(peer_incoming, stop)
                .await
                .map_err(|source| NodeError::Grpc {
                    addr: peer_addr,
                    source,
                })
        })
    };
    let admission = AdmissionLayer::new(
        config.max_concurrent_requests,
        metrics.requests_shed.clone(),
    );
    let serving = server
        .max_concurrent_streams(config.max_concurrent_streams)
        // HTTP/1 is accepted only to be told, in HTTP, that it is not served.
        .accept_http1(true)
        .layer(Http2OnlyLayer)
        .layer(admission)
        .layer(RequestDeadlineLayer::new(request_timeout))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(rawkv)
        .serve_with_incoming_shutdown(client_incoming, grpc_shutdown);
    // Draining waits for every open request; one whose client stopped
    // reading would wait forever, and the process with it.
    let drain_timeout = Duration::from_secs(config.shutdown_timeout_secs);
    let drain_until = Arc::new(std::sync::OnceLock::new());
    let drain_deadline = {
        let (rx, until) = (stop_rx.clone(), drain_until.clone());
        async move {
            stopped(rx).await;
            let deadline = tokio::time::Instant::now() + shutdown_delay + drain_timeout;
            let _ = until.set(deadline);
            tokio::time::sleep_until(deadline).await;
        }
    };
    let served = tokio::select! {
        served = serving => served.map_err(|source| NodeError::Grpc {
            addr: config.listen,
            source,
        }),
        () = drain_deadline => {
            tracing::warn!(
                ?drain_timeout,
                "requests still in flight after --shutdown-timeout-secs; closing their connections"
            );
            Ok(())
        }
    };
    drop(stop_rx);
    // The other listeners drain within the same bound: a health Watch
    // stream, for one, never ends by itself.
    let drain_until = drain_until
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now);
    drain_listener("peer", peer_task, drain_until).await;
    if let Some(task) = health_task {
        drain_listener("health", task, drain_until).await;
    }
    drain_listener("metrics", metrics_task, drain_until).await;
    for task in background {
        task.abort();
    }
    if let Ok(membership) = Arc::try_unwrap(membership) {
        membership.shutdown().await;
    }
    served?;

    let flushing = storage.clone();
    tokio::task::spawn_blocking(move || final_flush(&flushing, &reserve)).await??;
    // The database closes, and its lock is released, when the process
    // exits (see main.rs): tasks cut off by the drain timeout may still hold
    // it until then.
    let refused = refused.lock().ok().and_then(|mut slot| slot.take());
    match refused {
        Some(message) => Err(NodeError::Refused(message)),
        None => Ok(()),
    }
}

/// Flushes the memtables at a stop. The WAL is synced first, so a flush
/// that finds the volume full loses nothing: the next start replays the
/// WAL, and the reserve is freed now so that it has room to.
fn final_flush(storage: &RocksStorage, reserve: &Reserve) -> Result<(), StorageError> {
    storage.sync_wal()?;
    match storage.flush() {
        Ok(()) => tracing::info!("memtables flushed and WAL synced"),
        // A retry right away fails too: RocksDB stays stopped until its own
        // free-space check, every 5 s, and even with the reserve freed it
        // did not resume within 12 s in tests/full_disk.rs.
        Err(error) => {
            let released = reserve.release().unwrap_or(false);
            tracing::warn!(
                %error,
                reserve_released = released,
                "memtables not flushed; the WAL is synced and the next start replays it"
            );
        }
    }
    Ok(())
}

/// Re-allocates the reserve file whenever it is missing and the volume has
/// room for it beyond the margin, until `stop`.
async fn keep_reserve(reserve: Reserve, min_free: u64, stop: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        if reserve.is_allocated() {
            continue;
        }
        let restoring = reserve.clone();
        match tokio::task::spawn_blocking(move || restoring.restore(min_free)).await {
            Ok(Ok(true)) => tracing::info!("reserve file allocated again"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::debug!(%error, "could not allocate the reserve file"),
            Err(error) => tracing::debug!(%error, "reserve task failed"),
        }
    }
}

/// Deletes everything in `dir` but `dir` itself, which may be a mount point,
/// and the file system's own `lost+found`.
fn empty_dir(dir: &std::path::Path) -> std::io::Result<()> {
    // RocksDB's CURRENT goes first: a wipe cut short then leaves a data dir
    // that opens as a new database, not one whose manifest is missing.
    match std::fs::remove_file(dir.join("CURRENT")) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|name| name == "lost+found") {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Waits until `until` for a listener to finish draining, then stops
/// waiting for it; the runtime's shutdown closes what it still serves.
async fn drain_listener<E: std::fmt::Display>(
    name: &'static str,
    task: tokio::task::JoinHandle<Result<(), E>>,
    until: tokio::time::Instant,
) {
    let abort = task.abort_handle();
    match tokio::time::timeout_at(until, task).await {
        Ok(Ok(Err(error))) => tracing::warn!(%error, listener = name, "stopped with an error"),
        Ok(_) => {}
        Err(_) => {
            abort.abort();
            tracing::warn!(
                listener = name,
                "still draining after --shutdown-timeout-secs; closed"
            );
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
