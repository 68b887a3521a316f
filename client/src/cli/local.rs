//! `ringkv local`: a cluster of real `ringkv-node` processes on loopback.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, Context};
use clap::Args;
use nix::{sys::signal, unistd::Pid};
use tokio::{
    process::{Child, Command},
    time::{sleep, Instant},
};

/// Prints a line, ignoring a closed stdout: whoever started us may stop
/// reading, and that must not take the cluster down with a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// How many nodes to start.
    #[arg(long, default_value_t = 3)]
    nodes: u8,
    /// Address of the first node; node i listens on this address plus i - 1.
    #[arg(long, default_value = "127.0.0.1")]
    first_address: Ipv4Addr,
    /// gRPC port of every node.
    #[arg(long, default_value_t = 7379)]
    port: u16,
    /// Peer port of every node (Replica and Admin).
    #[arg(long, default_value_t = 7381)]
    peer_port: u16,
    /// Metrics port of every node.
    #[arg(long, default_value_t = 9379)]
    metrics_port: u16,
    /// Parent of the nodes' data dirs (and their logs); kept across runs.
    #[arg(long, default_value = "ringkv-local")]
    data_dir: PathBuf,
    /// The ringkv-node binary; by default the one next to `ringkv`, else PATH.
    #[arg(long)]
    node_binary: Option<PathBuf>,
    /// Gossip port of every node.
    #[arg(long, default_value_t = 7946)]
    gossip_port: u16,
    /// Replicas of each partition; defaults to 3, or the node count when smaller.
    #[arg(long)]
    replication_factor: Option<u8>,
    /// Extra flags for every node, after `--`.
    #[arg(last = true)]
    node_args: Vec<String>,
}

struct LocalNode {
    name: String,
    grpc: SocketAddr,
    metrics: SocketAddr,
    data_dir: PathBuf,
    child: Child,
}

fn node_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("ringkv-node")));
    if let Some(path) = sibling.filter(|p| p.is_file()) {
        return Ok(path);
    }
    Ok(PathBuf::from("ringkv-node"))
}

fn nth_address(first: Ipv4Addr, offset: u8) -> anyhow::Result<Ipv4Addr> {
    let [a, b, c, d] = first.octets();
    let Some(d) = d.checked_add(offset) else {
        bail!("{first} plus {offset} nodes runs past the end of its /24");
    };
    Ok(Ipv4Addr::new(a, b, c, d))
}

async fn spawn_node(
    binary: &Path,
    args: &LocalArgs,
    index: u8,
    seeds: &str,
) -> anyhow::Result<LocalNode> {
    let n = args.replication_factor.unwrap_or(3).min(args.nodes).max(1);
    let quorum = n / 2 + 1;
    let ip = nth_address(args.first_address, index)?;
    let name = format!("node-{}", index + 1);
    let grpc = SocketAddr::from((ip, args.port));
    let metrics = SocketAddr::from((ip, args.metrics_port));
    let data_dir = args.data_dir.join(&name);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let log_path = data_dir.join("node.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let child = Command::new(binary)
        .arg("--listen")
        .arg(grpc.to_string())
        .arg("--peer-listen")
        .arg(SocketAddr::from((ip, args.peer_port)).to_string())
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .arg("--data-dir")
        .arg(data_dir.join("db"))
        .arg("--node-id")
        .arg(&name)
        .arg("--gossip-listen")
        .arg(SocketAddr::from((ip, args.gossip_port)).to_string())
        .arg("--seeds")
        .arg(seeds)
        .arg("--replication-factor")
        .arg(n.to_string())
        .arg("--read-quorum")
        .arg(quorum.to_string())
        .arg("--write-quorum")
        .arg(quorum.to_string())
        .args(&args.node_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Ctrl-C reaches us; we stop the nodes in order ourselves.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(LocalNode {
        name,
        grpc,
        metrics,
        data_dir,
        child,
    })
}

/// Waits until a node's health service reports SERVING.
async fn wait_serving(node: &mut LocalNode, deadline: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = node.child.try_wait()? {
            bail!(
                "{} exited with {status} before serving; see {}",
                node.name,
                node.data_dir.join("node.log").display()
            );
        }
        if matches!(
            ringkv_client::Connector::plaintext()
                .is_serving(&node.grpc.to_string())
                .await,
            Ok(true)
        ) {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("{} did not serve within {deadline:?}", node.name);
        }
        sleep(Duration::from_millis(50)).await;
    }
}

async fn stop(node: &mut LocalNode) {
    if let Some(pid) = node.child.id() {
        let _ = signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGTERM);
    }
    match tokio::time::timeout(Duration::from_secs(20), node.child.wait()).await {
        Ok(Ok(status)) => say!("{} stopped ({status})", node.name),
        _ => {
            let _ = node.child.kill().await;
            say!("{} killed after 20 s", node.name);
        }
    }
}

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    // The cluster outlives whoever reads our output: a closed stdout must
    // not kill us and orphan the nodes (main restores SIGPIPE for the
    // short-lived commands).
    // SAFETY: no other thread handles signals yet.
    unsafe {
        let _ = signal::signal(signal::Signal::SIGPIPE, signal::SigHandler::SigIgn);
    }
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let binary = node_binary(args.node_binary.clone())?;
    let seeds = (0..args.nodes)
        .map(|i| {
            nth_address(args.first_address, i)
                .map(|ip| SocketAddr::from((ip, args.gossip_port)).to_string())
        })
        .collect::<anyhow::Result<Vec<_>>>()?
        .join(",");
    let mut nodes = Vec::new();
    for index in 0..args.nodes {
        nodes.push(spawn_node(&binary, &args, index, &seeds).await?);
    }
    for node in &mut nodes {
        if let Err(error) = wait_serving(node, Duration::from_secs(30)).await {
            for node in &mut nodes {
                stop(node).await;
            }
            return Err(error);
        }
    }
    say!("ringkv local cluster is up with {} node(s):", nodes.len());
    for node in &nodes {
        say!(
            "  {}  grpc {}  metrics http://{}/metrics  data {}  pid {}",
            node.name,
            node.grpc,
            node.metrics,
            node.data_dir.display(),
            node.child.id().unwrap_or_default()
        );
    }
    say!(
        "Try: ringkv --endpoint {ep} put hello world; ringkv --endpoint {ep} get hello; ringkv --endpoint {ep} status",
        ep = nodes[0].grpc
    );
    say!("Press Ctrl-C to stop.");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut reported = vec![false; nodes.len()];
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = sleep(Duration::from_millis(500)) => {
                for (node, reported) in nodes.iter_mut().zip(&mut reported) {
                    if !*reported {
                        if let Ok(Some(status)) = node.child.try_wait() {
                            say!("{} exited ({status})", node.name);
                            *reported = true;
                        }
                    }
                }
            }
        }
    }
    say!("stopping…");
    for node in &mut nodes {
        stop(node).await;
    }
    Ok(())
}
