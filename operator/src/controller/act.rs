//! Act: apply what was decided, each step under the operator's field
//! manager, recording an event for each decision it acts on.

use k8s_openapi::{
    api::core::v1::{Node, Pod},
    NamespaceResourceScope,
};
use kube::{
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
    runtime::events::EventType,
    Api, Resource, ResourceExt,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;

use super::{
    decide::{node_id, Decision},
    events::{names, publish},
    kube_error,
    observe::{NodePods, World},
    Context, ReconcileError, FIELD_MANAGER,
};
use crate::{build, crd::KVCluster};

/// Everything but the StatefulSet: these have no ordering concerns.
pub async fn apply_owned_objects(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
) -> Result<(), ReconcileError> {
    apply_object(ctx, namespace, &build::node_service_account(kvc)).await?;
    apply_object(ctx, namespace, &build::node_role(kvc)).await?;
    apply_object(ctx, namespace, &build::node_role_binding(kvc)).await?;
    apply_object(ctx, namespace, &build::peers_service(kvc)).await?;
    apply_object(ctx, namespace, &build::client_service(kvc)).await?;
    apply_object(ctx, namespace, &build::network_policy(kvc)).await?;
    apply_object(ctx, namespace, &build::pod_disruption_budget(kvc)).await?;
    apply_service_monitor(ctx, kvc, namespace).await
}

/// The cluster's ServiceMonitor, when asked for and the Prometheus
/// Operator's CRD exists: a cluster without it just has none.
async fn apply_service_monitor(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
) -> Result<(), ReconcileError> {
    let Some(config) = &ctx.service_monitors else {
        return Ok(());
    };
    let monitor = build::service_monitor(kvc, config);
    let name = monitor.name_any();
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        namespace,
        &build::service_monitor_resource(),
    );
    match api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&monitor),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(response)) if response.code == 404 => {
            tracing::debug!(
                %name,
                "no ServiceMonitor CRD (monitoring.coreos.com/v1) in this cluster; skipping the ServiceMonitor"
            );
            Ok(())
        }
        Err(error) => Err(ReconcileError::Kube {
            action: "applying",
            kind: "ServiceMonitor".into(),
            name,
            source: error,
        }),
    }
}

/// Records a scale-down's intent in the status before acting on it, so
/// that a restarted operator finds it; and records a scale-down taken back.
/// Each is one event: the status the next reconcile reads no longer shows
/// the change as new.
pub async fn record_intent(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
    decision: &Decision,
) -> Result<(), ReconcileError> {
    if decision.newly_leaving.is_empty() && decision.cancelled_leaving.is_empty() {
        return Ok(());
    }
    let name = kvc.name_any();
    let clusters: Api<KVCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let plan = &decision.plan;
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
    let mut recorded = kvc.status.clone().unwrap_or_default();
    recorded.decommissioning = plan.decommissioning.clone();
    ctx.written.remember(kvc, &recorded);
    if !decision.newly_leaving.is_empty() {
        publish(
            ctx,
            kvc,
            EventType::Normal,
            "ScaleDownStarted",
            "Scale",
            format!(
                "scaling down to {}: decommissioning {}",
                plan.target,
                names(&decision.newly_leaving, &|o| node_id(&name, o))
            ),
        )
        .await;
    }
    if !decision.cancelled_leaving.is_empty() {
        publish(
            ctx,
            kvc,
            EventType::Normal,
            "ScaleDownCancelled",
            "Scale",
            format!(
                "replicas raised back to {}: keeping {} (a node that already left rejoins)",
                plan.target,
                names(&decision.cancelled_leaving, &|o| node_id(&name, o))
            ),
        )
        .await;
    }
    Ok(())
}

/// Asks leaving nodes to decommission and restarts left nodes that are
/// wanted again.
pub async fn move_members(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
    world: &World,
    decision: &Decision,
) -> Result<(), ReconcileError> {
    let name = kvc.name_any();
    for &ordinal in &decision.plan.decommission {
        let id = node_id(&name, ordinal);
        let Some(address) = world
            .nodes
            .address(ordinal)
            .or_else(|| world.nodes.any_address())
        else {
            continue;
        };
        match ctx
            .ring_admin
            .decommission(&world.connector, &address, &id)
            .await
        {
            // Asked again each reconcile until gossip shows it leaving;
            // the scale-down's one event is ScaleDownStarted.
            Ok(()) => {
                tracing::info!(node = %id, "asked to leave the ring and hand over its partitions")
            }
            Err(error) => {
                tracing::warn!(%error, node = %id, "decommission not accepted yet");
            }
        }
    }
    for &ordinal in &decision.plan.rejoin {
        let id = node_id(&name, ordinal);
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
        match pods.delete(&id, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(kube_error::<Pod>("restarting", &id)(source)),
        }
        publish(
            ctx,
            kvc,
            EventType::Normal,
            "NodeRejoining",
            "Scale",
            format!("{id} had left the ring but is wanted again: restarting it to rejoin"),
        )
        .await;
    }
    Ok(())
}

/// Applies the StatefulSet with the decided size and rollout partition.
pub async fn apply_stateful_set(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
    decision: &Decision,
) -> Result<(), ReconcileError> {
    let name = kvc.name_any();
    let plan = &decision.plan;
    if let Some(ordinal) = decision.upgrade.rolling {
        publish(
            ctx,
            kvc,
            EventType::Normal,
            "UpgradingNode",
            "Upgrade",
            format!(
                "ring healthy: rolling {} to the new template",
                node_id(&name, ordinal)
            ),
        )
        .await;
    }
    apply_object(
        ctx,
        namespace,
        &build::stateful_set(kvc, plan.replicas, decision.upgrade.partition),
    )
    .await?;
    if let Some(current) = decision.current.filter(|&c| c != plan.replicas) {
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
                    names(&(plan.replicas..current).collect::<Vec<_>>(), &|o| node_id(
                        &name, o
                    )),
                    plan.replicas
                ),
            )
        };
        publish(ctx, kvc, EventType::Normal, reason, "Scale", message).await;
    }
    Ok(())
}

/// Copies the zone label of each scheduled pod's Kubernetes node to the
/// pod, where the node process reads it at start: the downward API cannot
/// expose node labels.
pub async fn annotate_zones(
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

/// Server-side apply under the operator's field manager.
pub async fn apply_object<K>(
    ctx: &Context,
    namespace: &str,
    object: &K,
) -> Result<(), ReconcileError>
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
