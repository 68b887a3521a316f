//! Where a node finds its first peers: a static list, or the Kubernetes API.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Pod;
use kube::{api::ListParams, Api};

/// Why seeds could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("resolving seed {seed}: {source}")]
    Resolve {
        seed: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Kubernetes client: {0}")]
    KubeConfig(String),
    #[error("listing pods with selector {selector:?} in namespace {namespace}: {source}")]
    ListPods {
        selector: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// A source of gossip addresses to join through.
#[tonic::async_trait]
pub trait SeedProvider: Send + Sync {
    /// Seeds that chitchat itself retries every round (HOST:PORT strings).
    fn static_seeds(&self) -> Vec<String> {
        Vec::new()
    }
    /// The gossip addresses of peers, as of now.
    async fn discover(&self) -> Result<Vec<SocketAddr>, DiscoveryError>;
}

/// `--seeds host:port,...`.
pub struct StaticSeeds {
    pub seeds: Vec<String>,
}

#[tonic::async_trait]
impl SeedProvider for StaticSeeds {
    fn static_seeds(&self) -> Vec<String> {
        self.seeds.clone()
    }

    async fn discover(&self) -> Result<Vec<SocketAddr>, DiscoveryError> {
        let mut out = Vec::new();
        for seed in &self.seeds {
            let resolved =
                tokio::net::lookup_host(seed)
                    .await
                    .map_err(|source| DiscoveryError::Resolve {
                        seed: seed.clone(),
                        source,
                    })?;
            out.extend(resolved);
        }
        Ok(out)
    }
}

/// `--discovery kubernetes`: the pods of this cluster, by label selector,
/// gossiped with on their pod IPs so that no DNS is needed.
pub struct KubernetesSeeds {
    pods: Api<Pod>,
    namespace: String,
    selector: String,
    gossip_port: u16,
    own_ip: IpAddr,
}

impl KubernetesSeeds {
    /// Uses in-cluster config, or KUBECONFIG outside a cluster.
    pub async fn from_environment(
        namespace: Option<String>,
        selector: String,
        gossip_port: u16,
        own_ip: IpAddr,
    ) -> Result<Self, DiscoveryError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| DiscoveryError::KubeConfig(e.to_string()))?;
        let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_string());
        Ok(Self::new(client, namespace, selector, gossip_port, own_ip))
    }

    pub fn new(
        client: kube::Client,
        namespace: String,
        selector: String,
        gossip_port: u16,
        own_ip: IpAddr,
    ) -> Self {
        Self {
            pods: Api::namespaced(client, &namespace),
            namespace,
            selector,
            gossip_port,
            own_ip,
        }
    }
}

impl KubernetesSeeds {
    /// The value of `annotation` on this node's own pod, once it is set.
    /// The operator writes the zone there from the label of the Kubernetes
    /// node the pod runs on, which the downward API cannot expose. Listing
    /// by name keeps the nodes' permissions to list and watch.
    pub async fn pod_annotation(
        &self,
        pod_name: &str,
        annotation: &str,
        deadline: std::time::Duration,
    ) -> Option<String> {
        let started = std::time::Instant::now();
        let params = ListParams::default().fields(&format!("metadata.name={pod_name}"));
        loop {
            match self.pods.list(&params).await {
                Ok(list) => {
                    let value = list.items.iter().find_map(|pod| {
                        pod.metadata.annotations.as_ref()?.get(annotation).cloned()
                    });
                    if value.is_some() {
                        return value;
                    }
                }
                Err(error) => tracing::warn!(%error, pod_name, "reading this node's pod"),
            }
            if started.elapsed() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

#[tonic::async_trait]
impl SeedProvider for KubernetesSeeds {
    async fn discover(&self) -> Result<Vec<SocketAddr>, DiscoveryError> {
        let pods = self
            .pods
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|source| DiscoveryError::ListPods {
                selector: self.selector.clone(),
                namespace: self.namespace.clone(),
                source,
            })?;
        let mut out: Vec<SocketAddr> = pods
            .items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| pod.status.as_ref()?.pod_ip.as_ref()?.parse::<IpAddr>().ok())
            .filter(|ip| *ip != self.own_ip)
            .map(|ip| SocketAddr::new(ip, self.gossip_port))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}
