//! The pod runner: registers one Node and acts as the kubelet for the pods
//! bound to it, with no container engine. Each container becomes a local
//! process in its own mount namespace, on its own 127.x.y.z address.

mod env;
mod node;
mod pod;
mod probe;
mod process;
mod provisioner;
mod volumes;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client, ResourceExt,
};
use tokio::sync::watch;

pub use node::register_node;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

impl RunnerError {
    fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source }
    }

    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// An image the runner can run: any image whose repository (the part
/// before the tag) ends with `repository` runs `binary`.
#[derive(Clone, Debug)]
pub struct ImageMapping {
    pub repository: String,
    pub binary: PathBuf,
}

/// What every pod task shares.
pub struct Runner {
    pub client: Client,
    pub node_name: String,
    pub state_dir: PathBuf,
    pub images: Vec<ImageMapping>,
    /// The API server URL and CA written into each pod's kubeconfig.
    pub api_server: String,
    pub ca_pem: String,
    /// First two octets of pod addresses, e.g. `10.244`.
    pub ip_prefix: String,
    next_ip: AtomicU32,
}

impl Runner {
    pub fn new(
        client: Client,
        node_name: String,
        state_dir: PathBuf,
        images: Vec<ImageMapping>,
        api_server: String,
        ca_pem: String,
        ip_prefix: String,
    ) -> Self {
        Self {
            client,
            node_name,
            state_dir,
            images,
            api_server,
            ca_pem,
            ip_prefix,
            next_ip: AtomicU32::new(0),
        }
    }

    /// A fresh address, added to the loopback interface so that it is local
    /// like 127.0.0.1 yet valid in an EndpointSlice (which refuses
    /// 127.0.0.0/8). Never reused during a run.
    fn allocate_ip(&self) -> Result<String, RunnerError> {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let ip = format!("{}.{}.{}", self.ip_prefix, n / 250, n % 250 + 1);
        add_local_address(&ip)?;
        Ok(ip)
    }

    fn binary_for(&self, image: &str) -> Option<PathBuf> {
        let repository =
            image.rsplit_once(':').map_or(
                image,
                |(repo, tag)| {
                    if tag.contains('/') {
                        image
                    } else {
                        repo
                    }
                },
            );
        self.images
            .iter()
            .find(|m| repository.ends_with(&m.repository))
            .map(|m| m.binary.clone())
    }

    /// Runs until the process is stopped: the node heartbeat, the volume
    /// provisioner and every pod bound to this node.
    pub async fn run(self: Arc<Self>) -> Result<(), RunnerError> {
        register_node(&self.client, &self.node_name).await?;
        tokio::spawn(node::heartbeat(self.client.clone(), self.node_name.clone()));
        tokio::spawn(provisioner::run(self.clone()));

        let pods: Api<Pod> = Api::all(self.client.clone());
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.node_name));
        let mut events = watcher(pods, config).default_backoff().boxed();
        let mut running: HashMap<String, watch::Sender<Pod>> = HashMap::new();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%error, "watching pods");
                    continue;
                }
            };
            match event {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                    let uid = pod.uid().unwrap_or_default();
                    running.retain(|_, tx| !tx.is_closed());
                    match running.get(&uid) {
                        Some(tx) => {
                            let _ = tx.send(pod);
                        }
                        None => {
                            if pod_finished(&pod) {
                                continue;
                            }
                            let (tx, rx) = watch::channel(pod.clone());
                            running.insert(uid, tx);
                            tokio::spawn(pod::run(self.clone(), pod, rx));
                        }
                    }
                }
                watcher::Event::Delete(pod) => {
                    // Removed without us (a forced deletion): stop at once.
                    if let Some(tx) = running.remove(&pod.uid().unwrap_or_default()) {
                        let mut pod = pod;
                        pod.metadata.deletion_grace_period_seconds = Some(0);
                        pod.metadata.deletion_timestamp =
                            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                                k8s_openapi::jiff::Timestamp::now(),
                            ));
                        let _ = tx.send(pod);
                    }
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
        Ok(())
    }
}

/// `ip addr add IP/32 dev lo`; the addresses go when the run is cleaned up
/// (`e2e-cleanup.sh`).
fn add_local_address(ip: &str) -> Result<(), RunnerError> {
    let output = std::process::Command::new("ip")
        .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
        .output()
        .map_err(RunnerError::io(format!("ip addr add {ip}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || stderr.contains("File exists") {
        Ok(())
    } else {
        Err(RunnerError::Unsupported(format!(
            "ip addr add {ip}/32 dev lo: {}",
            stderr.trim()
        )))
    }
}

fn pod_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}
