//! Decide: from the spec, the previous status and what was observed, what
//! this reconcile does. Pure: it reads no API and acts on nothing, so the
//! decisions are tested as tables (here, and in `scaling` and `upgrade`).

use kube::ResourceExt;

use super::observe::{rollout_of, World};
use crate::{
    crd::KVCluster,
    scaling::{self, ScaleInput, ScalePlan},
    upgrade::{self, UpgradeStep},
};

/// The node id of a StatefulSet ordinal: the pod's name.
pub fn node_id(cluster: &str, ordinal: i32) -> String {
    format!("{cluster}-{ordinal}")
}

/// What one reconcile does.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The StatefulSet's replicas before this reconcile, if it exists.
    pub current: Option<i32>,
    pub plan: ScalePlan,
    /// Ordinals this reconcile starts decommissioning: recorded in the
    /// status before anything acts on them.
    pub newly_leaving: Vec<i32>,
    /// Ordinals the status records as leaving that the cluster wants again
    /// (replicas raised back): the scale-down is taken back for them. One
    /// that already left rejoins.
    pub cancelled_leaving: Vec<i32>,
    pub upgrade: UpgradeStep,
}

/// Decides the scale and the rollout step of `kvc` in `world`.
pub fn decide(kvc: &KVCluster, world: &World, max_pending_hints: u64) -> Decision {
    let name = kvc.name_any();
    let id = |ordinal: i32| node_id(&name, ordinal);
    let previous = kvc.status.clone().unwrap_or_default();
    let current = world.set.as_ref().and_then(|s| s.spec.replicas);
    let plan = scaling::plan(&ScaleInput {
        desired: kvc.spec.replicas,
        replication_factor: kvc.spec.replication_factor,
        current,
        decommissioning: &previous.decommissioning,
        ring: world.ring.as_ref(),
        node_id: &id,
        running_since_ms: &|ordinal| world.nodes.running_since_ms(ordinal),
    });
    let newly_leaving = plan
        .decommissioning
        .iter()
        .copied()
        .filter(|o| !previous.decommissioning.contains(o))
        .collect();
    let cancelled_leaving = previous
        .decommissioning
        .iter()
        .copied()
        .filter(|o| *o < plan.target && !plan.decommissioning.contains(o))
        .collect();
    let ring_healthy = super::ring_is_healthy(
        world.ring.as_ref(),
        (0..plan.replicas).map(id),
        max_pending_hints,
    );
    let rollout = world.set.as_ref().map(|set| rollout_of(set, &world.nodes));
    let upgrade = upgrade::next_partition(rollout.as_ref(), plan.replicas, ring_healthy);
    Decision {
        current,
        plan,
        newly_leaving,
        cancelled_leaving,
        upgrade,
    }
}
