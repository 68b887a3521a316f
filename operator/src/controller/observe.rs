//! Observe: read what the cluster is now (the StatefulSet, the node pods,
//! the ring as one node's Admin service reports it), and nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Secret},
};
use kube::{api::ListParams, Api, ResourceExt};
use ringkv_client::Connector;

use super::{kube_error, Context, ReconcileError, REVISION_LABEL};
use crate::{build, crd::KVCluster, ring_admin::RingView, upgrade::Rollout};

/// Why the operator cannot reach the nodes over TLS yet. Pods could not
/// mount the Secret either, so nothing changes until it exists.
#[derive(Debug, thiserror::Error)]
pub enum TlsSecretError {
    #[error("reading TLS Secret {secret}: {error}")]
    Unreadable { secret: String, error: String },
    #[error("TLS Secret {secret} does not exist")]
    Missing { secret: String },
    #[error("TLS Secret {secret} has no key {key}")]
    NoKey { secret: String, key: &'static str },
}

/// The name the operator's Admin tokens carry, for the nodes' logs.
const ADMIN_ISSUER: &str = "ringkv-operator";

/// What one reconcile saw.
pub struct World {
    /// The StatefulSet, if it exists yet.
    pub set: Option<StatefulSet>,
    pub nodes: NodePods,
    /// The ring as a node reported it; `None` when no node answered.
    pub ring: Option<RingView>,
    /// How the nodes' Admin service is reached.
    pub connector: Connector,
}

/// Reads the cluster's StatefulSet, pods and ring, asking the nodes
/// through `connector` with calls signed by `cluster_secret`.
pub async fn observe(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
    connector: Connector,
    cluster_secret: &[u8],
) -> Result<World, ReconcileError> {
    let name = kvc.name_any();
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let set = sets
        .get_opt(&name)
        .await
        .map_err(kube_error::<StatefulSet>("reading", &name))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&build::selector_string(kvc)))
        .await
        .map_err(kube_error::<Pod>("listing", &name))?
        .items;
    let nodes = NodePods::new(&name, pods);
    let connector = connector.with_cluster_secret(cluster_secret, ADMIN_ISSUER);
    let ring = ring_view(ctx, &connector, &nodes).await;
    Ok(World {
        set,
        nodes,
        ring,
        connector,
    })
}

/// A cluster's node pods by ordinal.
pub struct NodePods {
    pub(super) by_ordinal: BTreeMap<i32, Pod>,
}

impl NodePods {
    pub fn new(set_name: &str, pods: Vec<Pod>) -> Self {
        let prefix = format!("{set_name}-");
        let by_ordinal = pods
            .into_iter()
            .filter_map(|pod| {
                let ordinal = pod.name_any().strip_prefix(&prefix)?.parse().ok()?;
                Some((ordinal, pod))
            })
            .collect();
        Self { by_ordinal }
    }

    pub fn count(&self) -> i32 {
        self.by_ordinal.len() as i32
    }

    /// When the node container of an ordinal's pod started running.
    pub fn running_since_ms(&self, ordinal: i32) -> Option<u64> {
        let pod = self.by_ordinal.get(&ordinal)?;
        // A pod being deleted is already on its way to a restart: it asks
        // for no other.
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        let started = statuses
            .iter()
            .find(|c| c.name == build::NODE_CONTAINER)?
            .state
            .as_ref()?
            .running
            .as_ref()?
            .started_at
            .as_ref()?;
        u64::try_from(started.0.as_millisecond()).ok()
    }

    pub fn is_ready(pod: &Pod) -> bool {
        pod.metadata.deletion_timestamp.is_none()
            && pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }

    pub fn ready(&self) -> i32 {
        self.by_ordinal
            .values()
            .filter(|p| Self::is_ready(p))
            .count() as i32
    }

    pub fn address(&self, ordinal: i32) -> Option<String> {
        let pod = self.by_ordinal.get(&ordinal)?;
        let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
        // Admin is served on the peer port only.
        Some(format!("{ip}:{}", build::PEER_PORT))
    }

    /// Addresses to ask about the ring: ready pods first.
    fn addresses(&self) -> Vec<String> {
        let (ready, other): (Vec<i32>, Vec<i32>) = self
            .by_ordinal
            .keys()
            .copied()
            .partition(|o| self.by_ordinal.get(o).is_some_and(Self::is_ready));
        ready
            .into_iter()
            .chain(other)
            .filter_map(|o| self.address(o))
            .collect()
    }

    pub fn any_address(&self) -> Option<String> {
        self.addresses().into_iter().next()
    }
}

/// How the operator reaches the nodes' Admin service: over TLS with the
/// cluster's CA (and its server certificate as the client's, under mutual
/// TLS) when `spec.tls` is set. The error names the Secret and key.
pub async fn admin_connector(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
) -> Result<Connector, TlsSecretError> {
    let Some(tls) = &kvc.spec.tls else {
        return Ok(Connector::plaintext());
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let read = |secret: String, key: &'static str| {
        let secrets = secrets.clone();
        async move {
            let found = secrets
                .get_opt(&secret)
                .await
                .map_err(|error| TlsSecretError::Unreadable {
                    secret: format!("{namespace}/{secret}"),
                    error: error.to_string(),
                })?
                .ok_or_else(|| TlsSecretError::Missing {
                    secret: format!("{namespace}/{secret}"),
                })?;
            found
                .data
                .and_then(|mut data| data.remove(key))
                .map(|bytes| bytes.0)
                .ok_or_else(|| TlsSecretError::NoKey {
                    secret: format!("{namespace}/{secret}"),
                    key,
                })
        }
    };
    let ca = read(tls.ca_secret().to_string(), "ca.crt").await?;
    let identity = if tls.client_auth {
        Some((
            read(tls.server_secret_name.clone(), "tls.crt").await?,
            read(tls.server_secret_name.clone(), "tls.key").await?,
        ))
    } else {
        None
    };
    Ok(Connector::tls(
        &ca,
        Some(&build::tls_server_name(kvc)),
        identity
            .as_ref()
            .map(|(cert, key)| (cert.as_slice(), key.as_slice())),
    ))
}

async fn ring_view(ctx: &Context, connector: &Connector, nodes: &NodePods) -> Option<RingView> {
    for address in nodes.addresses() {
        match ctx.ring_admin.ring_status(connector, &address).await {
            Ok(view) => return Some(view),
            Err(error) => tracing::debug!(%error, "ring status"),
        }
    }
    None
}

pub fn rollout_of(set: &StatefulSet, nodes: &NodePods) -> Rollout {
    let status = set.status.as_ref();
    Rollout {
        partition: set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0),
        observed: status.and_then(|s| s.observed_generation) == set.metadata.generation,
        current_revision: status.and_then(|s| s.current_revision.clone()),
        update_revision: status.and_then(|s| s.update_revision.clone()),
        pods: nodes
            .by_ordinal
            .iter()
            .map(|(ordinal, pod)| {
                (
                    *ordinal,
                    pod.labels().get(REVISION_LABEL).cloned(),
                    NodePods::is_ready(pod),
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{ContainerState, ContainerStateRunning, ContainerStatus, PodStatus},
        apimachinery::pkg::apis::meta::v1::Time,
        jiff::Timestamp,
    };

    use super::*;

    fn running_pod(deleting: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("demo-3".into());
        if deleting {
            pod.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        }
        pod.status = Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: build::NODE_CONTAINER.into(),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(Timestamp::from_millisecond(5_000).expect("time"))),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        pod
    }

    /// A pod already being deleted is on its way to a restart: the operator
    /// neither restarts it again nor announces another rejoin.
    #[test]
    fn a_pod_being_deleted_asks_for_no_restart() {
        let running = NodePods::new("demo", vec![running_pod(false)]);
        assert_eq!(running.running_since_ms(3), Some(5_000));
        let deleting = NodePods::new("demo", vec![running_pod(true)]);
        assert_eq!(deleting.running_since_ms(3), None);
    }
}
