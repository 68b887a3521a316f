//! A ringkv cluster of real `ringkv-node` processes on loopback, one
//! address each, that the evaluation can grow, crash and restart.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
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
}

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
