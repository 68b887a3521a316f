//! A local-volume provisioner: every pending claim gets a PersistentVolume
//! backed by a directory under the runner's state, pre-bound to it; a
//! volume whose claim is gone is deleted with its directory (reclaim policy
//! Delete, carried out here as an external provisioner would).

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{PersistentVolume, PersistentVolumeClaim},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams},
    Api, ResourceExt,
};
use serde_json::json;

use super::Runner;

const PROVISIONER: &str = "ringkv.io/e2e-pod-runner";

pub fn volume_dir(runner: &Runner, volume: &str) -> PathBuf {
    runner.state_dir.join("volumes").join(volume)
}

pub async fn run(runner: Arc<Runner>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        if let Err(error) = pass(&runner).await {
            tracing::warn!(%error, "volume provisioner");
        }
    }
}

async fn pass(runner: &Runner) -> Result<(), kube::Error> {
    let claims: Api<PersistentVolumeClaim> = Api::all(runner.client.clone());
    let volumes: Api<PersistentVolume> = Api::all(runner.client.clone());
    let claim_list = claims.list(&ListParams::default()).await?.items;
    let volume_list = volumes.list(&ListParams::default()).await?.items;
    let claimed: BTreeMap<String, &PersistentVolume> = volume_list
        .iter()
        .filter_map(|v| {
            let uid = v.spec.as_ref()?.claim_ref.as_ref()?.uid.clone()?;
            Some((uid, v))
        })
        .collect();

    for claim in &claim_list {
        let Some(uid) = claim.uid() else { continue };
        let spec = claim.spec.clone().unwrap_or_default();
        if spec.volume_name.is_some()
            || claimed.contains_key(&uid)
            || claim.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let size = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage").cloned())
            .unwrap_or(Quantity("1Gi".into()));
        let name = format!("pvc-{uid}");
        let dir = volume_dir(runner, &name);
        let volume = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": { "name": name, "annotations": { "pv.kubernetes.io/provisioned-by": PROVISIONER } },
            "spec": {
                "capacity": { "storage": size },
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": spec.storage_class_name.clone().unwrap_or_default(),
                "hostPath": { "path": dir.display().to_string(), "type": "DirectoryOrCreate" },
                "claimRef": {
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": claim.namespace(), "name": claim.name_any(), "uid": uid,
                },
            },
        });
        if let Err(error) = std::fs::create_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "creating a volume directory");
            continue;
        }
        volumes
            .patch(
                &name,
                &PatchParams::apply("ringkv-pod-runner").force(),
                &Patch::Apply(volume),
            )
            .await?;
        tracing::info!(claim = %claim.name_any(), volume = %name, "provisioned");
    }

    // Volumes whose claim is gone: delete them and their data.
    let live: std::collections::BTreeSet<String> =
        claim_list.iter().filter_map(|c| c.uid()).collect();
    for volume in &volume_list {
        let ours = volume
            .annotations()
            .get("pv.kubernetes.io/provisioned-by")
            .is_some_and(|p| p == PROVISIONER);
        let claim_uid = volume
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|c| c.uid.clone());
        if !ours || claim_uid.as_ref().is_some_and(|uid| live.contains(uid)) {
            continue;
        }
        let name = volume.name_any();
        volumes.delete(&name, &DeleteParams::default()).await?;
        let dir = volume_dir(runner, &name);
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(%error, dir = %dir.display(), "removing a released volume");
        }
        tracing::info!(volume = %name, "claim gone: volume deleted");
    }
    Ok(())
}
