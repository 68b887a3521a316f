//! The status this operator process last wrote for each KVCluster.
//!
//! A reconcile reads the KVCluster from the watch cache, which may not have
//! seen the operator's own last status write yet. A reconcile that read the
//! older status repeated what that write recorded: the same event again
//! ("ScalingBlocked" or "Available" twice), the status written again, a
//! condition's transition time reset. Reconciles therefore start from the
//! newest status this process wrote. Only the operator writes the status,
//! and a new leader starts with an empty memory and the API server's copy.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use kube::ResourceExt;

use crate::crd::{KVCluster, KVClusterStatus};

#[derive(Default)]
pub struct WrittenStatus(Mutex<HashMap<String, KVClusterStatus>>);

impl WrittenStatus {
    /// `kvc` with the last status this process wrote for it, if any.
    pub fn freshen(&self, kvc: &KVCluster) -> KVCluster {
        let mut fresh = kvc.clone();
        if let Some(written) = self.lock().get(&key(kvc)) {
            fresh.status = Some(written.clone());
        }
        fresh
    }

    /// Notes a status the API server accepted.
    pub fn remember(&self, kvc: &KVCluster, status: &KVClusterStatus) {
        self.lock().insert(key(kvc), status.clone());
    }

    pub fn forget(&self, kvc: &KVCluster) {
        self.lock().remove(&key(kvc));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, KVClusterStatus>> {
        // A panic elsewhere cannot leave a half-written map entry behind.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The object's uid: a KVCluster deleted and created again under its name
/// starts afresh.
fn key(kvc: &KVCluster) -> String {
    kvc.uid()
        .unwrap_or_else(|| format!("{}/{}", kvc.namespace().unwrap_or_default(), kvc.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::KVClusterSpec;

    fn cluster(uid: &str, phase: &str) -> KVCluster {
        let mut kvc = KVCluster::new(
            "demo",
            serde_json::from_value::<KVClusterSpec>(serde_json::json!({ "replicas": 3 }))
                .expect("spec"),
        );
        kvc.metadata.uid = Some(uid.into());
        kvc.status = Some(KVClusterStatus {
            phase: phase.into(),
            ..Default::default()
        });
        kvc
    }

    #[test]
    fn a_reconcile_starts_from_the_status_last_written() {
        let written = WrittenStatus::default();
        let cached = cluster("u1", "Creating");
        assert_eq!(
            written.freshen(&cached).status,
            cached.status,
            "nothing written yet"
        );
        let newer = KVClusterStatus {
            phase: "Available".into(),
            ..Default::default()
        };
        written.remember(&cached, &newer);
        assert_eq!(written.freshen(&cached).status, Some(newer));
        let recreated = cluster("u2", "Creating");
        assert_eq!(
            written.freshen(&recreated).status,
            recreated.status,
            "another object"
        );
        written.forget(&cached);
        assert_eq!(written.freshen(&cached).status, cached.status);
    }
}
