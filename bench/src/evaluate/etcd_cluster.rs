//! A 3-member etcd cluster (Debian's `etcd-server`) on loopback, each member
//! on its own address. etcd syncs its WAL before it acknowledges, like
//! ringkv's default `--durability sync`.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::process::Command;

use super::process::{nth_address, wait_listening, Process};
use crate::BenchError;

const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

pub struct EtcdCluster {
    members: Vec<Process>,
    endpoints: Vec<String>,
    data_root: PathBuf,
    pub version: String,
}

impl EtcdCluster {
    pub async fn start(
        binary: &Path,
        data_root: &Path,
        first_address: Ipv4Addr,
        count: usize,
    ) -> Result<Self, BenchError> {
        let _ = std::fs::remove_dir_all(data_root);
        let version = version_of(binary).await?;
        let address = |i| nth_address(first_address, i);
        let initial_cluster = (0..count)
            .map(|i| format!("m{}=http://{}:{PEER_PORT}", i + 1, address(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..count {
            let ip = address(i);
            let name = format!("m{}", i + 1);
            let client_url = format!("http://{ip}:{CLIENT_PORT}");
            let peer_url = format!("http://{ip}:{PEER_PORT}");
            let mut command = Command::new(binary);
            command
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(data_root.join(&name).join("data"))
                .arg("--listen-client-urls")
                .arg(&client_url)
                .arg("--advertise-client-urls")
                .arg(&client_url)
                .arg("--listen-peer-urls")
                .arg(&peer_url)
                .arg("--initial-advertise-peer-urls")
                .arg(&peer_url)
                .arg("--initial-cluster")
                .arg(&initial_cluster)
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg("ringkv-bench")
                .arg("--log-level")
                .arg("warn");
            let process = Process::spawn(
                &format!("etcd {name}"),
                command,
                &data_root.join(&name).join("etcd.log"),
            )?;
            members.push(process);
            endpoints.push(SocketAddr::from((ip, CLIENT_PORT)).to_string());
        }
        for (member, endpoint) in members.iter_mut().zip(&endpoints) {
            let address = endpoint
                .parse()
                .map_err(|_| BenchError::Config(endpoint.clone()))?;
            wait_listening(member, address, Duration::from_secs(60)).await?;
        }
        let cluster = Self {
            members,
            endpoints,
            data_root: data_root.to_path_buf(),
            version,
        };
        cluster.wait_healthy(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Waits until a write through the cluster commits, which needs a leader.
    async fn wait_healthy(&self, deadline: Duration) -> Result<(), BenchError> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let attempt = async {
                let mut client = etcd_client::Client::connect(&self.endpoints, None).await?;
                client.put("ringkv-bench-ready", "1", None).await
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(error)) if tokio::time::Instant::now() > until => {
                    return Err(BenchError::target("etcd", error))
                }
                _ if tokio::time::Instant::now() > until => {
                    return Err(BenchError::Process {
                        what: "etcd".into(),
                        message: format!("no leader within {deadline:?}"),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(Process::pid).collect()
    }

    pub async fn stop(mut self) {
        for member in &mut self.members {
            member.stop(Duration::from_secs(10)).await;
        }
        let _ = std::fs::remove_dir_all(&self.data_root);
    }
}

async fn version_of(binary: &Path) -> Result<String, BenchError> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .await
        .map_err(|e| BenchError::io(format!("running {} --version", binary.display()), e))?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("etcd Version: "))
        .unwrap_or("unknown")
        .trim()
        .to_string())
}
