//! `ringkv-pod-runner`: the kubelet stand-in of ringkv's end-to-end tests.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::Parser;
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};
use ringkv_e2e::runner::{ImageMapping, Runner};

/// Registers a Node and runs the pods bound to it as local processes.
#[derive(Debug, Parser)]
#[command(name = "ringkv-pod-runner", version, about)]
struct Args {
    /// Admin kubeconfig of the control plane.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, default_value = "runner-0")]
    node_name: String,
    /// Where pods, volumes and logs live.
    #[arg(long)]
    state_dir: PathBuf,
    /// `REPOSITORY=BINARY`: images whose repository ends with REPOSITORY
    /// run BINARY. Repeat for each image.
    #[arg(long = "image", value_parser = parse_mapping)]
    images: Vec<ImageMapping>,
    /// First two octets of pod addresses, which the runner adds to `lo`.
    #[arg(long, default_value = "10.244")]
    ip_prefix: String,
}

fn parse_mapping(value: &str) -> Result<ImageMapping, String> {
    let (repository, binary) = value
        .split_once('=')
        .ok_or_else(|| format!("expected REPOSITORY=BINARY, got {value}"))?;
    Ok(ImageMapping {
        repository: repository.to_string(),
        binary: PathBuf::from(binary),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RINGKV_RUNNER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "pod runner stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)?;
    let cluster = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or("kubeconfig has no cluster")?;
    let server = cluster.server.clone().ok_or("kubeconfig has no server")?;
    let ca_pem = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => {
            use base64::Engine;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data.trim())?)?
        }
        (None, Some(path)) => std::fs::read_to_string(path)?,
        (None, None) => return Err("kubeconfig has no CA".into()),
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    std::fs::create_dir_all(&args.state_dir)?;
    let runner = Arc::new(Runner::new(
        client,
        args.node_name,
        args.state_dir,
        args.images,
        server,
        ca_pem,
        args.ip_prefix,
    ));
    runner.run().await?;
    Ok(())
}
