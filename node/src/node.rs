//! Wires one node together: storage, the gRPC server with health and
//! reflection, and the metrics endpoint, with graceful shutdown.

use std::{future::Future, sync::Arc};

use ringkv_proto::v1::raw_kv_server::{RawKvServer, SERVICE_NAME};
use tokio::sync::watch;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::{
    config::NodeConfig,
    metrics::{self, Metrics},
    rawkv_service::RawKvService,
    storage::{RocksStorage, RocksStorageOptions, Storage, StorageError},
};

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
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
    #[error("metrics server on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("storage task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs a node until `shutdown` resolves, then drains in-flight requests,
/// flushes the memtables and closes the database.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let node_id = config.node_id();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let storage_options = RocksStorageOptions {
        durability: config.durability(),
        write_buffer_bytes: config.write_buffer_bytes,
        block_cache_bytes: config.block_cache_bytes,
    };
    let storage = Arc::new(RocksStorage::open(
        &config.data_dir,
        &node_id,
        &storage_options,
    )?);
    let metrics = Arc::new(Metrics::new(storage.clone()));
    let limits = config.limits();

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    set_health(&health_reporter, ServingStatus::Serving).await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ringkv_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let rawkv = RawKvServer::new(RawKvService::new(
        storage.clone() as Arc<dyn Storage>,
        limits.clone(),
        metrics.rpc.clone(),
    ))
    // Refused from the length prefix, before the body is buffered.
    .max_decoding_message_size(limits.max_request_bytes)
    .max_encoding_message_size(usize::MAX);

    // One signal fans out to both servers.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let metrics_addr = config.metrics_listen;
    let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .map_err(|source| NodeError::Metrics {
            addr: metrics_addr,
            source,
        })?;
    let metrics_task = tokio::spawn(metrics::serve(
        metrics_listener,
        metrics.clone(),
        stopped(stop_rx.clone()),
    ));

    let grpc_shutdown = {
        let rx = stop_rx.clone();
        let reporter = health_reporter.clone();
        async move {
            stopped(rx).await;
            tracing::info!("shutting down: draining in-flight requests");
            set_health(&reporter, ServingStatus::NotServing).await;
        }
    };
    tracing::info!(
        node_id,
        listen = %config.listen,
        metrics = %metrics_addr,
        data_dir = %config.data_dir.display(),
        durability = %storage_options.durability,
        "ringkv node serving"
    );
    let served = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(rawkv)
        .serve_with_shutdown(config.listen, grpc_shutdown)
        .await
        .map_err(|source| NodeError::Grpc {
            addr: config.listen,
            source,
        });
    // Stop the metrics server too if gRPC failed on its own.
    drop(stop_rx);
    if let Ok(Err(error)) = metrics_task.await {
        tracing::warn!(%error, "metrics server stopped with an error");
    }
    served?;

    let flushing = storage.clone();
    tokio::task::spawn_blocking(move || flushing.flush()).await??;
    drop(metrics);
    drop(storage);
    tracing::info!("memtables flushed, database closed");
    Ok(())
}

/// Sets the status of the RawKV service and of the server as a whole (the
/// empty name, which Kubernetes' gRPC probes ask for).
async fn set_health(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    for service in [SERVICE_NAME, ""] {
        reporter.set_service_status(service, status).await;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
