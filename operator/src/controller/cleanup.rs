//! Deletion: owner references collect everything but the volumes, which
//! follow the retention policy.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{
    api::{DeleteParams, ListParams},
    runtime::{controller::Action, events::EventType},
    Api, ResourceExt,
};

use super::{events::publish, kube_error, Context, ReconcileError};
use crate::{
    build,
    crd::{KVCluster, RetentionRule},
};

/// Applies the volume retention policy of a deleted KVCluster.
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
