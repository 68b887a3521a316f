//! Report: the status a reconcile writes, with the events of conditions
//! that just turned true; and the status of a spec that was refused.

use kube::{
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
    Api, ResourceExt,
};
use serde_json::json;

use super::{
    decide::{node_id, Decision},
    events::{announce_transitions, publish},
    kube_error,
    observe::World,
    validate::SpecError,
    Context, ReconcileError, BUSY_REQUEUE, IDLE_REQUEUE,
};
use crate::{
    build,
    crd::{KVCluster, KVClusterStatus},
    status::{self, Observed, AVAILABLE},
};

/// Writes `status` unless it is what the cluster already has; a reconcile
/// every few seconds would otherwise write the same status each time.
async fn write_status(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
    status: &KVClusterStatus,
) -> Result<(), ReconcileError> {
    if kvc.status.as_ref() == Some(status) {
        return Ok(());
    }
    let name = kvc.name_any();
    let clusters: Api<KVCluster> = Api::namespaced(ctx.client.clone(), namespace);
    clusters
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(kube_error::<KVCluster>("updating the status of", &name))?;
    ctx.written.remember(kvc, status);
    Ok(())
}

/// Writes the status of what was observed and decided; settled clusters
/// are looked at again less often.
pub async fn report(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
    world: &World,
    decision: &Decision,
) -> Result<Action, ReconcileError> {
    let name = kvc.name_any();
    let status = status::status(&Observed {
        generation: kvc.metadata.generation,
        selector: build::selector_string(kvc),
        pods: world.nodes.count(),
        ready_pods: world.nodes.ready(),
        ring: world.ring.as_ref(),
        node_ids: (0..decision.plan.replicas)
            .map(|o| node_id(&name, o))
            .collect(),
        plan: &decision.plan,
        upgrade: &decision.upgrade,
        previous: kvc.status.as_ref(),
    });
    announce_transitions(ctx, kvc, &status).await;
    write_status(ctx, kvc, namespace, &status).await?;
    let settled = !decision.plan.in_progress()
        && !decision.upgrade.in_progress
        && status::find(&status, AVAILABLE).is_some_and(|c| c.status == "True");
    Ok(Action::requeue(if settled {
        IDLE_REQUEUE
    } else {
        BUSY_REQUEUE
    }))
}

/// Writes a refused spec as a condition on the generation it judged, and
/// records an event. Nothing else changes until the spec does.
pub async fn invalid_spec(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
    error: &SpecError,
) -> Result<Action, ReconcileError> {
    let message = error.to_string();
    let status = status::invalid_spec(kvc.status.as_ref(), kvc.metadata.generation, &message);
    write_status(ctx, kvc, namespace, &status).await?;
    publish(
        ctx,
        kvc,
        EventType::Warning,
        "InvalidSpec",
        "Validate",
        message,
    )
    .await;
    Ok(Action::await_change())
}
