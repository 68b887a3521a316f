//! A ringkv cluster of real `ringkv-node` processes on loopback, one
//! address each, that the evaluation can grow, crash and restart.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use ringkv_client::Connector;
use tokio::{
    process::Command,
    time::{sleep, Instant},
};

use super::process::{nth_address, wait_listening, Process};
use crate::BenchError;

pub const CLIENT_PORT: u16 = 7379;
pub const PEER_PORT: u16 = 7381;
pub const GOSSIP_PORT: u16 = 7946;
pub const METRICS_PORT: u16 = 9379;

#[derive(Debug, Clone)]
pub struct RingkvSettings {
    pub binary: PathBuf,
    pub data_root: PathBuf,
    pub first_address: Ipv4Addr,
    pub replication_factor: usize,
    /// Flags every node gets, after the evaluation's own.
    pub extra_args: Vec<String>,
    /// Run node i under uid `FIRST_NODE_UID + i`, so that nftables can tell
    /// the nodes' packets apart (see partition.rs).
    pub own_uids: bool,
}

pub const FIRST_NODE_UID: u32 = 60_001;

struct Node {
    index: usize,
    process: Option<Process>,
}

pub struct RingkvCluster {
    settings: RingkvSettings,
    nodes: Vec<Node>,
}

impl RingkvCluster {
    /// Starts `count` nodes from empty data dirs and waits until every one
    /// is a normal member of a settled ring.
    pub async fn start(settings: RingkvSettings, count: usize) -> Result<Self, BenchError> {
        let _ = std::fs::remove_dir_all(&settings.data_root);
        let mut settings = settings;
        if settings.own_uids {
            settings.binary = binary_for_every_uid(&settings)?;
        }
        let mut cluster = Self {
            settings,
            nodes: Vec::new(),
        };
        for _ in 0..count {
            let index = cluster.nodes.len();
            let process = cluster.spawn(index, count)?;
            cluster.nodes.push(Node {
                index,
                process: Some(process),
            });
        }
        cluster.wait_settled(Duration::from_secs(120)).await?;
        Ok(cluster)
    }

    fn address(&self, index: usize) -> Ipv4Addr {
        nth_address(self.settings.first_address, index)
    }

    fn spawn(&self, index: usize, seeds_among: usize) -> Result<Process, BenchError> {
        let ip = self.address(index);
        let id = format!("node-{}", index + 1);
        let dir = self.settings.data_root.join(&id);
        let seeds = (0..seeds_among.clamp(1, 3))
            .map(|i| SocketAddr::from((self.address(i), GOSSIP_PORT)).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let replication = self.settings.replication_factor;
        let quorum = replication / 2 + 1;
        let mut command = Command::new(&self.settings.binary);
        if let Some(uid) = self.uid(index) {
            std::fs::create_dir_all(&dir)
                .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
            chown_all(&dir, uid)?;
            command.uid(uid).gid(uid);
        }
        command
            .arg("--listen")
            .arg(SocketAddr::from((ip, CLIENT_PORT)).to_string())
            .arg("--peer-listen")
            .arg(SocketAddr::from((ip, PEER_PORT)).to_string())
            .arg("--metrics-listen")
            .arg(SocketAddr::from((ip, METRICS_PORT)).to_string())
            .arg("--gossip-listen")
            .arg(SocketAddr::from((ip, GOSSIP_PORT)).to_string())
            .arg("--data-dir")
            .arg(dir.join("db"))
            .arg("--node-id")
            .arg(&id)
            .arg("--seeds")
            .arg(seeds)
            .arg("--replication-factor")
            .arg(replication.to_string())
            .arg("--read-quorum")
            .arg(quorum.to_string())
            .arg("--write-quorum")
            .arg(quorum.to_string())
            .args(&self.settings.extra_args)
            .env("RUST_LOG", "warn");
        Process::spawn(&id, command, &dir.join("node.log"))
    }

    /// The uid node `index` runs under, when nodes have their own.
    pub fn uid(&self, index: usize) -> Option<u32> {
        self.settings
            .own_uids
            .then(|| FIRST_NODE_UID + index as u32)
    }

    pub fn address_of(&self, index: usize) -> Ipv4Addr {
        self.address(index)
    }

    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    /// Client addresses of the running nodes.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|node| node.process.is_some())
            .map(|node| SocketAddr::from((self.address(node.index), CLIENT_PORT)).to_string())
            .collect()
    }

    pub fn metrics_address(&self, index: usize) -> SocketAddr {
        SocketAddr::from((self.address(index), METRICS_PORT))
    }

    pub fn peer_address(&self, index: usize) -> String {
        SocketAddr::from((self.address(index), PEER_PORT)).to_string()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|node| node.process.as_ref()?.pid())
            .collect()
    }

    /// Waits until every node sees every node of the cluster as an alive,
    /// normal member that refills nothing, and no partition is moving:
    /// before that, a quorum read may find too few replicas that count (a
    /// fresh node refills before its replicas count toward reads, and each
    /// coordinator learns that through gossip).
    pub async fn wait_settled(&mut self, deadline: Duration) -> Result<(), BenchError> {
        let until = Instant::now() + deadline;
        loop {
            for node in &mut self.nodes {
                if let Some(process) = node.process.as_mut() {
                    process.check_running()?;
                }
            }
            let unsettled = self.unsettled_view().await;
            match unsettled {
                None => return Ok(()),
                Some(_) if Instant::now() <= until => sleep(Duration::from_millis(200)).await,
                Some(view) => {
                    return Err(BenchError::Process {
                        what: "ringkv cluster".into(),
                        message: format!("not settled within {deadline:?}: {view}"),
                    })
                }
            }
        }
    }

    /// The first running node's view that is not yet settled, in words.
    async fn unsettled_view(&self) -> Option<String> {
        let expected = self.nodes.len();
        for node in self.nodes.iter().filter(|node| node.process.is_some()) {
            let observer = self.peer_address(node.index);
            let status = match Connector::plaintext().ring_status(&observer).await {
                Ok(status) => status,
                Err(error) => return Some(format!("{observer}: {error}")),
            };
            let settled = status
                .members
                .iter()
                .filter(|m| m.alive && m.status == "normal" && m.partitions_refilling == 0)
                .count();
            if settled != expected || status.transition {
                return Some(format!(
                    "node-{} sees {settled} of {expected} members alive, normal and refilled; transition {}",
                    node.index + 1,
                    status.transition
                ));
            }
        }
        None
    }

    /// A Replica client of node `index`'s peer port, which reads its local
    /// records.
    pub async fn replica_client(
        &self,
        index: usize,
    ) -> Result<
        ringkv_client::proto::replica_client::ReplicaClient<ringkv_client::SignedChannel>,
        BenchError,
    > {
        let channel = Connector::plaintext()
            .signed_channel(
                &self.peer_address(index),
                ringkv_client::peer_auth::Role::Peer,
            )
            .await
            .map_err(|e| BenchError::target("ringkv", e))?;
        Ok(ringkv_client::proto::replica_client::ReplicaClient::new(
            channel,
        ))
    }

    /// Starts one more node, which joins the ring; does not wait for it.
    pub async fn add_node(&mut self) -> Result<usize, BenchError> {
        let index = self.nodes.len();
        let mut process = self.spawn(index, index)?;
        wait_listening(
            &mut process,
            SocketAddr::from((self.address(index), CLIENT_PORT)),
            Duration::from_secs(60),
        )
        .await?;
        self.nodes.push(Node {
            index,
            process: Some(process),
        });
        Ok(index)
    }

    /// SIGKILLs a node, as a crash.
    pub async fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].process.take() {
            process.kill().await;
        }
    }

    /// Restarts a killed node on its data dir.
    pub async fn restart(&mut self, index: usize) -> Result<(), BenchError> {
        let seeds_among = self.nodes.len();
        let mut process = self.spawn(index, seeds_among)?;
        wait_listening(
            &mut process,
            SocketAddr::from((self.address(index), CLIENT_PORT)),
            Duration::from_secs(60),
        )
        .await?;
        self.nodes[index].process = Some(process);
        Ok(())
    }

    pub async fn stop(mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                process.stop(Duration::from_secs(20)).await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.settings.data_root);
    }
}

/// A copy of the node binary that other uids can run: the build's own sits
/// under root's home, which they cannot enter. The dirs on the way are made
/// enterable too.
fn binary_for_every_uid(settings: &RingkvSettings) -> Result<PathBuf, BenchError> {
    use std::os::unix::fs::PermissionsExt;
    let bin = settings.data_root.join("bin");
    std::fs::create_dir_all(&bin)
        .map_err(|e| BenchError::io(format!("creating {}", bin.display()), e))?;
    let copy = bin.join("ringkv-node");
    std::fs::copy(&settings.binary, &copy)
        .map_err(|e| BenchError::io(format!("copying {}", settings.binary.display()), e))?;
    let enterable = std::fs::Permissions::from_mode(0o755);
    for dir in [
        settings.data_root.parent(),
        Some(settings.data_root.as_path()),
        Some(bin.as_path()),
    ]
    .into_iter()
    .flatten()
    {
        std::fs::set_permissions(dir, enterable.clone()).map_err(|e| {
            BenchError::io(format!("opening {} to the nodes' uids", dir.display()), e)
        })?;
    }
    std::fs::set_permissions(&copy, enterable)
        .map_err(|e| BenchError::io(format!("making {} executable", copy.display()), e))?;
    Ok(copy)
}

/// Gives `dir` and everything in it to `uid`.
fn chown_all(dir: &Path, uid: u32) -> Result<(), BenchError> {
    let failed = |e| BenchError::io(format!("giving {} to uid {uid}", dir.display()), e);
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).map_err(failed)?;
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let path = entry.map_err(failed)?.path();
        if path.is_dir() {
            chown_all(&path, uid)?;
        } else {
            std::os::unix::fs::chown(&path, Some(uid), Some(uid)).map_err(failed)?;
        }
    }
    Ok(())
}
