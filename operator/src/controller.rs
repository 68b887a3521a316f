//! The reconciler: validate, build, apply, update status (as Stackable's
//! operators split it), on kube-runtime's Controller.
//!
//! Every step reads the world afresh; the only memory between reconciles is
//! what the KVCluster's status says and what the ring reports, so a restart
//! at any point resumes instead of redoing or skipping a step.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{Node, PersistentVolumeClaim, Pod, Secret, Service},
        policy::v1::PodDisruptionBudget,
    },
    NamespaceResourceScope,
};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        finalizer::{finalizer, Event as FinalizerEvent},
        reflector::ObjectRef,
        watcher, Controller,
    },
    Api, Client, Resource, ResourceExt,
};
use ringkv_client::Connector;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;
use tokio::time::Instant;

use crate::{
    build,
    crd::{KVCluster, KVClusterSpec, RetentionRule},
    metrics::Metrics,
    ring_admin::{RingAdmin, RingView},
    scaling::{self, ScaleInput},
    status::{self, Observed, AVAILABLE, SCALING_BLOCKED},
    upgrade::{self, Rollout},
};

pub const FIELD_MANAGER: &str = "ringkv-operator";
/// Held on every KVCluster so that deleting one applies its volume policy.
pub const FINALIZER: &str = "ringkv.io/volume-retention";
const REVISION_LABEL: &str = "controller-revision-hash";
/// How often a cluster with something in progress is looked at again: the
/// ring's progress reaches the operator by polling, not by watch events.
const BUSY_REQUEUE: Duration = Duration::from_secs(3);
const IDLE_REQUEUE: Duration = Duration::from_secs(30);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub ring_admin: Arc<dyn RingAdmin>,
    /// Who records the events.
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// A rolling upgrade restarts the next node only while the cluster keeps
    /// at most this many hints: more means a node is behind.
    pub max_pending_hints: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        action: &'static str,
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("KVCluster {0} has no namespace")]
    NoNamespace(String),
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<ReconcileError>>),
}

fn kube_error<'a, K: Resource<DynamicType = ()>>(
    action: &'static str,
    name: &'a str,
) -> impl FnOnce(kube::Error) -> ReconcileError + 'a {
    move |source| ReconcileError::Kube {
        action,
        kind: K::kind(&()).to_string(),
        name: name.to_string(),
        source,
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let clusters: Api<KVCluster> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=ringkv-operator");
    Controller::new(clusters, watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<PodDisruptionBudget>::all(client), owned)
        // Node pods belong to the StatefulSet, not to the KVCluster: map
        // them back through their instance label.
        .watches(
            pods,
            watcher::Config::default().labels("app.kubernetes.io/name=ringkv"),
            |pod| {
                let namespace = pod.namespace();
                pod.labels().get("app.kubernetes.io/instance").map(|name| {
                    let reference = ObjectRef::<KVCluster>::new(name);
                    match namespace {
                        Some(ns) => reference.within(&ns),
                        None => reference,
                    }
                })
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object, "reconciled"),
                Err(error) => tracing::warn!(%error, "reconcile failed"),
            }
        })
        .await;
}

fn error_policy(kvc: Arc<KVCluster>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %kvc.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// One reconcile of one KVCluster, behind the finalizer.
pub async fn reconcile(kvc: Arc<KVCluster>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let namespace = kvc
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(kvc.name_any()))?;
    let api: Api<KVCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, kvc, |event| async {
        match event {
            FinalizerEvent::Apply(kvc) => apply(&kvc, &ctx).await,
            FinalizerEvent::Cleanup(kvc) => cleanup(&kvc, &ctx).await,
        }
    })
    .await
    .map_err(|error| ReconcileError::Finalizer(Box::new(error)));
    ctx.metrics
        .observe_reconcile(started.elapsed(), result.is_ok());
    result
}

/// Spec errors the CRD's CEL rules cannot express or that an older CRD let
/// through. Bad specs change nothing.
pub fn validate(spec: &KVClusterSpec) -> Result<(), String> {
    let n = spec.replication_factor;
    if n < 1 {
        return Err(format!("replicationFactor must be at least 1, got {n}"));
    }
    for (name, value) in [
        ("readQuorum", spec.read_quorum),
        ("writeQuorum", spec.write_quorum),
    ] {
        if !(1..=n).contains(&value) {
            return Err(format!(
                "{name} must lie in 1..={n} (replicationFactor), got {value}"
            ));
        }
    }
    if spec.replicas < 1 {
        return Err(format!(
            "replicas must be at least 1, got {}",
            spec.replicas
        ));
    }
    if spec.partitions < 1 {
        return Err(format!(
            "partitions must be at least 1, got {}",
            spec.partitions
        ));
    }
    Ok(())
}

/// Validate, build, apply, update status.
pub async fn apply(kvc: &KVCluster, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = kvc.name_any();
    let namespace = kvc
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(name.clone()))?;
    let clusters: Api<KVCluster> = Api::namespaced(ctx.client.clone(), &namespace);

    if let Err(message) = validate(&kvc.spec) {
        publish(
            ctx,
            kvc,
            EventType::Warning,
            "InvalidSpec",
            "Validate",
            message,
        )
        .await;
        return Ok(Action::await_change());
    }

    // Observe.
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = sets
        .get_opt(&name)
        .await
        .map_err(kube_error::<StatefulSet>("reading", &name))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods = pods
        .list(&ListParams::default().labels(&build::selector_string(kvc)))
        .await
        .map_err(kube_error::<Pod>("listing", &name))?
        .items;
    let nodes = NodePods::new(&name, pods);
    annotate_zones(ctx, kvc, &namespace, &nodes).await?;
    let connector = match admin_connector(ctx, kvc, &namespace).await {
        Ok(connector) => connector,
        Err(message) => {
            // Pods could not mount the Secret either; nothing changes until
            // it exists. Secrets are not watched, hence the requeue.
            publish(
                ctx,
                kvc,
                EventType::Warning,
                "TLSSecretUnavailable",
                "Validate",
                message,
            )
            .await;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let ring = ring_view(ctx, &connector, &nodes).await;

    // Everything but the StatefulSet has no ordering concerns.
    apply_object(ctx, &namespace, &build::node_service_account(kvc)).await?;
    apply_object(ctx, &namespace, &build::node_role(kvc)).await?;
    apply_object(ctx, &namespace, &build::node_role_binding(kvc)).await?;
    apply_object(ctx, &namespace, &build::peers_service(kvc)).await?;
    apply_object(ctx, &namespace, &build::client_service(kvc)).await?;
    apply_object(ctx, &namespace, &build::pod_disruption_budget(kvc)).await?;

    // Decide the scale.
    let previous = kvc.status.clone().unwrap_or_default();
    let node_id = |ordinal: i32| format!("{name}-{ordinal}");
    let current = existing.as_ref().and_then(|s| s.spec.replicas);
    let plan = scaling::plan(&ScaleInput {
        desired: kvc.spec.replicas,
        replication_factor: kvc.spec.replication_factor,
        current,
        decommissioning: &previous.decommissioning,
        ring: ring.as_ref(),
        node_id: &node_id,
        running_since_ms: &|ordinal| nodes.running_since_ms(ordinal),
    });

    // Record the intent before acting on it, so that a restart finds it.
    let newly_leaving: Vec<i32> = plan
        .decommissioning
        .iter()
        .copied()
        .filter(|o| !previous.decommissioning.contains(o))
        .collect();
    if !newly_leaving.is_empty() {
        clusters
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "decommissioning": plan.decommissioning } })),
            )
            .await
            .map_err(kube_error::<KVCluster>(
                "recording the scale-down of",
                &name,
            ))?;
        publish(
            ctx,
            kvc,
            EventType::Normal,
            "ScaleDownStarted",
            "Scale",
            format!(
                "scaling down to {}: decommissioning {}",
                plan.target,
                names(&newly_leaving, &node_id)
            ),
        )
        .await;
    }
    for &ordinal in &plan.decommission {
        let id = node_id(ordinal);
        let Some(address) = nodes.address(ordinal).or_else(|| nodes.any_address()) else {
            continue;
        };
        match ctx.ring_admin.decommission(&connector, &address, &id).await {
            Ok(()) => {
                publish(
                    ctx,
                    kvc,
                    EventType::Normal,
                    "Decommissioning",
                    "Scale",
                    format!("asked {id} to leave the ring and hand over its partitions"),
                )
                .await
            }
            Err(error) => {
                tracing::warn!(%error, node = %id, "decommission not accepted yet");
            }
        }
    }
    for &ordinal in &plan.rejoin {
        let id = node_id(ordinal);
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        match pods.delete(&id, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(kube_error::<Pod>("restarting", &id)(source)),
        }
        publish(
            ctx,
            kvc,
            EventType::Normal,
            "Rejoining",
            "Scale",
            format!("{id} had left the ring but is wanted again: restarting it to rejoin"),
        )
        .await;
    }

    // Decide the rollout.
    let ring_healthy = ring_is_healthy(
        ring.as_ref(),
        (0..plan.replicas).map(node_id),
        ctx.max_pending_hints,
    );
    let rollout = existing.as_ref().map(|set| rollout_of(set, &nodes));
    let step = upgrade::next_partition(rollout.as_ref(), plan.replicas, ring_healthy);
    if let Some(ordinal) = step.rolling {
        publish(
            ctx,
            kvc,
            EventType::Normal,
            "UpgradingNode",
            "Upgrade",
            format!(
                "ring healthy: rolling {} to the new template",
                node_id(ordinal)
            ),
        )
        .await;
    }

    // Apply the StatefulSet.
    apply_object(
        ctx,
        &namespace,
        &build::stateful_set(kvc, plan.replicas, step.partition),
    )
    .await?;
    if let Some(current) = current.filter(|&c| c != plan.replicas) {
        let (reason, message) = if plan.replicas > current {
            (
                "ScaledUp",
                format!(
                    "StatefulSet raised from {current} to {} nodes",
                    plan.replicas
                ),
            )
        } else {
            (
                "ScaledDown",
                format!(
                    "{} reported left: StatefulSet lowered from {current} to {} nodes",
                    names(&(plan.replicas..current).collect::<Vec<_>>(), &node_id),
                    plan.replicas
                ),
            )
        };
        publish(ctx, kvc, EventType::Normal, reason, "Scale", message).await;
    }

    // Report.
    let status = status::status(&Observed {
        generation: kvc.metadata.generation,
        selector: build::selector_string(kvc),
        pods: nodes.count(),
        ready_pods: nodes.ready(),
        ring: ring.as_ref(),
        node_ids: (0..plan.replicas).map(node_id).collect(),
        plan: &plan,
        upgrade: &step,
        previous: kvc.status.as_ref(),
    });
    announce_transitions(ctx, kvc, &status).await;
    clusters
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(kube_error::<KVCluster>("updating the status of", &name))?;

    let settled = !plan.in_progress()
        && !step.in_progress
        && status::find(&status, AVAILABLE).is_some_and(|c| c.status == "True");
    Ok(Action::requeue(if settled {
        IDLE_REQUEUE
    } else {
        BUSY_REQUEUE
    }))
}

/// Copies the zone label of each scheduled pod's Kubernetes node to the
/// pod, where the node process reads it at start: the downward API cannot
/// expose node labels.
async fn annotate_zones(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
    nodes: &NodePods,
) -> Result<(), ReconcileError> {
    let Some(key) = kvc.spec.zone_topology_key.as_deref() else {
        return Ok(());
    };
    let hosts: Api<Node> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    for pod in nodes.by_ordinal.values() {
        if pod.annotations().contains_key(build::ZONE_ANNOTATION) {
            continue;
        }
        let Some(host) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let node = hosts
            .get(&host)
            .await
            .map_err(kube_error::<Node>("reading", &host))?;
        let zone = node.labels().get(key).cloned();
        if zone.is_none() {
            publish(
                ctx,
                kvc,
                EventType::Warning,
                "ZoneLabelMissing",
                "Zone",
                format!(
                    "node {host} has no label {key}: {} runs without a zone",
                    pod.name_any()
                ),
            )
            .await;
        }
        let name = pod.name_any();
        let patch = json!({ "metadata": { "annotations": { build::ZONE_ANNOTATION: zone.unwrap_or_default() } } });
        pods.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(kube_error::<Pod>("annotating the zone of", &name))?;
    }
    Ok(())
}

/// Deletion: owner references collect everything but the volumes, which
/// follow the retention policy.
pub async fn cleanup(kvc: &KVCluster, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = kvc.name_any();
    let namespace = kvc
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(name.clone()))?;
    match kvc
        .spec
        .persistent_volume_claim_retention_policy
        .when_deleted
    {
        RetentionRule::Retain => {
            publish(
                ctx,
                kvc,
                EventType::Normal,
                "VolumesRetained",
                "Delete",
                "persistentVolumeClaimRetentionPolicy.whenDeleted is Retain: keeping the volumes"
                    .into(),
            )
            .await;
        }
        RetentionRule::Delete => {
            let claims: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &namespace);
            let list = claims
                .list(&ListParams::default().labels(&build::selector_string(kvc)))
                .await
                .map_err(kube_error::<PersistentVolumeClaim>("listing", &name))?;
            let mut deleted = Vec::new();
            for claim in list.items {
                let claim_name = claim.name_any();
                match claims.delete(&claim_name, &DeleteParams::default()).await {
                    Ok(_) => deleted.push(claim_name),
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(source) => {
                        return Err(
                            kube_error::<PersistentVolumeClaim>("deleting", &claim_name)(source),
                        )
                    }
                }
            }
            publish(
                ctx,
                kvc,
                EventType::Normal,
                "VolumesDeleted",
                "Delete",
                format!("whenDeleted is Delete: deleted {}", deleted.join(", ")),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

/// Server-side apply under the operator's field manager.
async fn apply_object<K>(ctx: &Context, namespace: &str, object: &K) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(kube_error::<K>("applying", &name))?;
    Ok(())
}

/// Events for conditions that just turned true.
async fn announce_transitions(
    ctx: &Context,
    kvc: &KVCluster,
    status: &crate::crd::KVClusterStatus,
) {
    let was = |type_: &str| {
        kvc.status
            .as_ref()
            .and_then(|s| status::find(s, type_))
            .is_some_and(|c| c.status == "True")
    };
    for (type_, kind, reason) in [
        (AVAILABLE, EventType::Normal, "Available"),
        (SCALING_BLOCKED, EventType::Warning, "ScalingBlocked"),
    ] {
        if let Some(condition) = status::find(status, type_).filter(|c| c.status == "True") {
            if !was(type_) {
                publish(ctx, kvc, kind, reason, "Status", condition.message.clone()).await;
            }
        }
    }
}

async fn publish(
    ctx: &Context,
    kvc: &KVCluster,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    tracing::info!(cluster = %kvc.name_any(), reason, %note, "decision");
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    // A recorder per event: kube's recorder folds events with the same reason
    // into one series that keeps the first note, and these notes differ.
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(error) = recorder.publish(&event, &kvc.object_ref(&())).await {
        tracing::warn!(%error, "recording an event");
    }
}

fn names(ordinals: &[i32], node_id: &dyn Fn(i32) -> String) -> String {
    ordinals
        .iter()
        .map(|&o| node_id(o))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A cluster's node pods by ordinal.
pub struct NodePods {
    by_ordinal: BTreeMap<i32, Pod>,
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

    fn count(&self) -> i32 {
        self.by_ordinal.len() as i32
    }

    /// When the node container of an ordinal's pod started running.
    fn running_since_ms(&self, ordinal: i32) -> Option<u64> {
        let statuses = self
            .by_ordinal
            .get(&ordinal)?
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?;
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

    fn is_ready(pod: &Pod) -> bool {
        pod.metadata.deletion_timestamp.is_none()
            && pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }

    fn ready(&self) -> i32 {
        self.by_ordinal
            .values()
            .filter(|p| Self::is_ready(p))
            .count() as i32
    }

    fn address(&self, ordinal: i32) -> Option<String> {
        let pod = self.by_ordinal.get(&ordinal)?;
        let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
        Some(format!("{ip}:{}", build::GRPC_PORT))
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

    fn any_address(&self) -> Option<String> {
        self.addresses().into_iter().next()
    }
}

/// How the operator reaches the nodes' Admin service: over TLS with the
/// cluster's CA (and its server certificate as the client's, under mutual
/// TLS) when `spec.tls` is set. The error names the Secret and key.
async fn admin_connector(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
) -> Result<Connector, String> {
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
                .map_err(|error| format!("reading TLS Secret {namespace}/{secret}: {error}"))?
                .ok_or_else(|| format!("TLS Secret {namespace}/{secret} does not exist"))?;
            found
                .data
                .and_then(|mut data| data.remove(key))
                .map(|bytes| bytes.0)
                .ok_or_else(|| format!("TLS Secret {namespace}/{secret} has no key {key}"))
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

/// Every node the StatefulSet keeps is alive and `normal`, no partition is
/// moving, and the hints waiting for delivery are few.
pub fn ring_is_healthy(
    ring: Option<&RingView>,
    ids: impl Iterator<Item = String>,
    max_pending_hints: u64,
) -> bool {
    let Some(ring) = ring else { return false };
    let hints: u64 = ring.members.values().map(|m| m.hints_pending).sum();
    !ring.transition
        && hints <= max_pending_hints
        && ids.into_iter().all(|id| {
            ring.member(&id)
                .is_some_and(|m| m.alive && m.status == "normal")
        })
}

fn rollout_of(set: &StatefulSet, nodes: &NodePods) -> Rollout {
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
