//! `ringkv-operator`: runs the controller, or prints the CRD.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand, ValueEnum};
use kube::{runtime::events::Reporter, Client, CustomResourceExt};
use ringkv_operator::{
    build::ServiceMonitors,
    controller::{self, Context},
    crd::KVCluster,
    http,
    metrics::Metrics,
    ring_admin::GrpcRingAdmin,
};
use tokio::sync::watch;
use tracing_subscriber::{fmt, EnvFilter};

/// The ringkv Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "ringkv-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the KVCluster CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller.
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Address of `/metrics` and `/healthz`.
    #[arg(
        long,
        env = "RINGKV_OPERATOR_HTTP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    http_listen: SocketAddr,
    /// Reconcile only while holding a coordination.k8s.io Lease, so that
    /// several replicas can run and one acts.
    #[arg(long, env = "RINGKV_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(
        long,
        env = "RINGKV_OPERATOR_LEASE_NAME",
        default_value = "ringkv-operator"
    )]
    lease_name: String,
    /// Namespace of the Lease: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Identity in the Lease and in events.
    #[arg(long, env = "POD_NAME", default_value = "ringkv-operator")]
    identity: String,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "RINGKV_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// A rolling upgrade waits while the cluster keeps more hints than this.
    #[arg(
        long,
        env = "RINGKV_OPERATOR_UPGRADE_MAX_PENDING_HINTS",
        default_value_t = 1000
    )]
    upgrade_max_pending_hints: u64,
    /// Make each KVCluster a Prometheus Operator ServiceMonitor for its
    /// nodes, where the ServiceMonitor CRD exists.
    #[arg(long, env = "RINGKV_OPERATOR_SERVICE_MONITORS", default_value_t = false, action = clap::ArgAction::Set)]
    service_monitors: bool,
    /// How often the ServiceMonitors have Prometheus scrape each node.
    #[arg(
        long,
        env = "RINGKV_OPERATOR_SERVICE_MONITOR_INTERVAL",
        default_value = "30s"
    )]
    service_monitor_interval: String,
    /// A label for every ServiceMonitor, as key=value (repeatable): the one
    /// your Prometheus selects monitors by.
    #[arg(long, value_parser = label_pair)]
    service_monitor_label: Vec<(String, String)>,
    #[arg(long, env = "RINGKV_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// tracing filter.
    #[arg(long, env = "RINGKV_OPERATOR_LOG", default_value = "info")]
    log: String,
}

/// Parses `key=value`.
fn label_pair(pair: &str) -> Result<(String, String), LabelError> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(LabelError(pair.to_string())),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not key=value")]
struct LabelError(String);

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("connecting to the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    #[error("leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error("serving /metrics and /healthz on {listen}: {source}")]
    Http {
        listen: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the leader Lease: stopping so that another replica takes over")]
    LostLease,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => print_crd(),
        Command::Run(args) => {
            init_logs(args.log_format, &args.log);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("ringkv-operator: starting the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "ringkv-operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn print_crd() -> ExitCode {
    match serde_yaml::to_string(&KVCluster::crd()) {
        Ok(yaml) => {
            println!("# Generated by `ringkv-operator crd` from operator/src/crd.rs; do not edit.");
            print!("{}", ringkv_operator::yaml::yaml11_safe(&yaml));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ringkv-operator: encoding the CRD: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn run(args: RunArgs) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let metrics = Arc::new(Metrics::new());

    // One signal fans out to the HTTP server, the controller and the lease.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        termination_signal().await;
        tracing::info!("termination signal: finishing reconciles in flight");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let http = {
        let listen = args.http_listen;
        let server = http::serve(listen, metrics.clone(), stopped(stop_rx.clone()));
        tokio::spawn(async move {
            server
                .await
                .map_err(|source| RunError::Http { listen, source })
        })
    };

    let mut leadership = if args.leader_election {
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
                .with_namespace(&args.lease_namespace)
                .with_identity(&args.identity)
                .with_duration(args.lease_seconds)
                .with_grace(args.lease_seconds / 3)
                .build()
                .await
                .map_err(|source| RunError::Lease {
                    namespace: args.lease_namespace.clone(),
                    name: args.lease_name.clone(),
                    source,
                })?;
        let (leader, _task) = manager.watch().await;
        Some(leader)
    } else {
        None
    };
    if let Some(leader) = leadership.as_mut() {
        tracing::info!(lease = %args.lease_name, identity = %args.identity, "waiting to lead");
        let mut stop = stop_rx.clone();
        tokio::select! {
            _ = leader.wait_for(|leading| *leading) => {}
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        }
        tracing::info!("leading: reconciling KVClusters");
    }

    let ctx = Arc::new(Context {
        client: client.clone(),
        ring_admin: Arc::new(GrpcRingAdmin),
        reporter: Reporter {
            controller: "ringkv-operator".into(),
            instance: Some(args.identity.clone()),
        },
        metrics,
        max_pending_hints: args.upgrade_max_pending_hints,
        written: Default::default(),
        service_monitors: args.service_monitors.then(|| ServiceMonitors {
            interval: args.service_monitor_interval.clone(),
            labels: args.service_monitor_label.iter().cloned().collect(),
        }),
    });
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let controller_stop = {
        let stop = stop_rx.clone();
        let mut lost = lost_rx.clone();
        async move {
            tokio::select! {
                _ = stopped(stop) => {}
                _ = lost.wait_for(|lost| *lost) => {}
            }
        }
    };
    if let Some(mut leader) = leadership {
        tokio::spawn(async move {
            // The controller stops as soon as another replica may lead.
            let _ = leader.wait_for(|leading| !*leading).await;
            let _ = lost_tx.send(true);
            // Keeping the receiver alive keeps the lease renewed until then.
            drop(leader);
        });
    }
    controller::run(ctx, controller_stop).await;
    if *lost_rx.borrow_and_update() {
        return Err(RunError::LostLease);
    }
    match http.await {
        Ok(result) => result,
        Err(join) => {
            tracing::warn!(%join, "HTTP server task");
            Ok(())
        }
    }
}

async fn termination_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
