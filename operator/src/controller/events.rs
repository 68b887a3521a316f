//! Events: every decision the operator acts on is recorded on the
//! KVCluster, and so is every condition that just turned true.

use kube::{
    runtime::events::{Event, EventType, Recorder},
    Resource, ResourceExt,
};

use super::Context;
use crate::{
    crd::{KVCluster, KVClusterStatus},
    status::{self, AVAILABLE, SCALING_BLOCKED},
};

/// Events for conditions that just turned true.
pub async fn announce_transitions(ctx: &Context, kvc: &KVCluster, status: &KVClusterStatus) {
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

pub async fn publish(
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

pub fn names(ordinals: &[i32], node_id: &dyn Fn(i32) -> String) -> String {
    ordinals
        .iter()
        .map(|&o| node_id(o))
        .collect::<Vec<_>>()
        .join(", ")
}
