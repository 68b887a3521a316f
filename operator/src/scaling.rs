//! The scaling decision: a pure function of the spec, the StatefulSet, the
//! scale-down recorded in status, and the ring as the nodes report it.
//!
//! Level-triggered: nothing here remembers the previous reconcile. The
//! intent of a scale-down lives in `status.decommissioning`, and every step
//! is re-derived from what the ring says now, so an operator restart or a
//! change of mind midway resumes from the facts (scylla-operator #3539 lost
//! data to a stale edge-triggered label). A pod whose ordinal the
//! StatefulSet drops must belong to a node the ring reports as holding no
//! data.

use std::collections::BTreeSet;

use crate::ring_admin::RingView;

/// What the reconciler observed.
#[derive(Clone)]
pub struct ScaleInput<'a> {
    /// `spec.replicas`.
    pub desired: i32,
    /// `spec.replicationFactor`.
    pub replication_factor: i32,
    /// The StatefulSet's replicas; `None` before it exists.
    pub current: Option<i32>,
    /// `status.decommissioning`.
    pub decommissioning: &'a [i32],
    /// The ring, when some node answered.
    pub ring: Option<&'a RingView>,
    /// Node id (pod name) of an ordinal.
    pub node_id: &'a dyn Fn(i32) -> String,
    /// When the node container of an ordinal's pod started running, in
    /// milliseconds since the epoch; `None` while it is not running.
    pub running_since_ms: &'a dyn Fn(i32) -> Option<u64>,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScalePlan {
    /// Replicas of the StatefulSet.
    pub replicas: i32,
    /// The node count the cluster is heading for.
    pub target: i32,
    /// To record in `status.decommissioning` before anything else.
    pub decommissioning: Vec<i32>,
    /// Ordinals to ask to leave the ring.
    pub decommission: Vec<i32>,
    /// Ordinals the StatefulSet keeps whose node has left (a scale-down the
    /// user took back, or a decommission from outside): deleting the pod
    /// restarts it, and the node wipes its handed-over data and rejoins.
    /// Only a pod whose running process is the one that left qualifies: a
    /// pod created since then (a new volume after a scale-down, or the
    /// restart this asked for) has its own process, which announces itself
    /// as joining once gossip carries it; until then the ring still shows
    /// the old process as left, and restarting the new pod again would
    /// only churn it.
    pub rejoin: Vec<i32>,
    /// Why the requested count is refused.
    pub blocked: Option<String>,
}

impl ScalePlan {
    pub fn in_progress(&self) -> bool {
        !self.decommissioning.is_empty() || !self.rejoin.is_empty() || self.replicas != self.target
    }
}

pub fn plan(input: &ScaleInput<'_>) -> ScalePlan {
    let n = input.replication_factor;
    let blocked = (input.desired < n).then(|| {
        format!(
            "replicas {} is below replicationFactor {n}: every partition needs {n} nodes; keeping {} nodes",
            input.desired,
            input.current.unwrap_or(input.desired).min(n).max(input.desired)
        )
    });
    // Never below N once the cluster has N nodes; never above what exists
    // just because the request was refused.
    let target = if blocked.is_some() {
        input
            .current
            .unwrap_or(input.desired)
            .min(n)
            .max(input.desired)
    } else {
        input.desired
    };
    let Some(current) = input.current else {
        return ScalePlan {
            replicas: target,
            target,
            blocked,
            ..ScalePlan::default()
        };
    };

    let status_of = |ordinal: i32| {
        input
            .ring
            .and_then(|ring| ring.member(&(input.node_id)(ordinal)))
    };

    // Intent first: every ordinal above the target that still exists.
    let mut decommissioning: BTreeSet<i32> = input
        .decommissioning
        .iter()
        .copied()
        .filter(|&o| o >= target && o < current)
        .collect();
    decommissioning.extend(target..current);

    let decommission = decommissioning
        .iter()
        .copied()
        .filter(|&o| {
            status_of(o).is_some_and(|m| m.alive && !m.holds_no_data() && m.status != "leaving")
        })
        .collect();

    // Lower the StatefulSet only over a run of highest ordinals that the ring
    // reports as holding nothing.
    let mut replicas = current.max(target);
    while replicas > target && status_of(replicas - 1).is_some_and(|m| m.holds_no_data()) {
        replicas -= 1;
    }
    decommissioning.retain(|&o| o < replicas);

    let rejoin = (0..replicas.min(target))
        .filter(|&o| {
            status_of(o).is_some_and(|m| {
                m.status == "left"
                    && m.alive
                    && (input.running_since_ms)(o).is_some_and(|since| m.generation >= since)
            })
        })
        .collect();

    ScalePlan {
        replicas,
        target,
        decommissioning: decommissioning.into_iter().collect(),
        decommission,
        rejoin,
        blocked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring_admin::MemberView;

    fn id(ordinal: i32) -> String {
        format!("demo-{ordinal}")
    }

    fn ring(statuses: &[&str]) -> RingView {
        RingView {
            members: statuses
                .iter()
                .enumerate()
                .map(|(i, status)| {
                    let owned = if *status == "left" { 0 } else { 100 };
                    (
                        id(i as i32),
                        MemberView {
                            node_id: id(i as i32),
                            status: status.to_string(),
                            alive: true,
                            generation: 2_000,
                            partitions_owned: owned,
                            partitions_next: owned,
                            hints_pending: 0,
                        },
                    )
                })
                .collect(),
            ..RingView::default()
        }
    }

    fn plan_for(
        desired: i32,
        current: Option<i32>,
        decom: &[i32],
        ring: Option<&RingView>,
    ) -> ScalePlan {
        plan(&ScaleInput {
            desired,
            replication_factor: 3,
            current,
            decommissioning: decom,
            ring,
            node_id: &id,
            running_since_ms: &|_| Some(1_000),
        })
    }

    #[test]
    fn creation_and_scale_up_take_the_requested_count() {
        assert_eq!(plan_for(3, None, &[], None).replicas, 3);
        let ring = ring(&["normal"; 3]);
        let up = plan_for(5, Some(3), &[], Some(&ring));
        assert_eq!((up.replicas, up.target), (5, 5));
        assert!(up.decommission.is_empty() && up.decommissioning.is_empty());
    }

    #[test]
    fn scale_down_records_intent_and_decommissions_before_lowering() {
        let ring = ring(&["normal"; 5]);
        let down = plan_for(3, Some(5), &[], Some(&ring));
        assert_eq!(down.decommissioning, vec![3, 4]);
        assert_eq!(down.decommission, vec![3, 4]);
        assert_eq!(down.replicas, 5, "nothing left yet");
    }

    #[test]
    fn lowers_only_over_left_nodes_from_the_top() {
        // 4 left but 3 still leaving: only ordinal 4 may go.
        let ring = ring(&["normal", "normal", "normal", "leaving", "left"]);
        let step = plan_for(3, Some(5), &[3, 4], Some(&ring));
        assert_eq!(step.replicas, 4);
        assert_eq!(step.decommissioning, vec![3]);
        assert!(
            step.decommission.is_empty(),
            "leaving nodes are not asked again"
        );
        // 3 left, 4 still leaving: nothing may go, since 4 is the highest.
        let ring = crate::scaling::tests::ring(&["normal", "normal", "normal", "left", "leaving"]);
        assert_eq!(plan_for(3, Some(5), &[3, 4], Some(&ring)).replicas, 5);
    }

    #[test]
    fn without_a_ring_view_nothing_is_removed() {
        let plan = plan_for(3, Some(5), &[3, 4], None);
        assert_eq!(plan.replicas, 5);
        assert_eq!(plan.decommissioning, vec![3, 4]);
    }

    #[test]
    fn a_dead_or_unknown_node_is_never_removed() {
        let mut view = ring(&["normal"; 5]);
        if let Some(member) = view.members.get_mut(&id(4)) {
            member.alive = false;
        }
        view.members.remove(&id(3));
        let plan = plan_for(3, Some(5), &[], Some(&view));
        assert_eq!(plan.replicas, 5);
        assert!(plan.decommission.is_empty(), "a dead node cannot be asked");
    }

    #[test]
    fn below_n_is_refused_with_a_reason() {
        let ring = ring(&["normal"; 3]);
        let plan = plan_for(2, Some(3), &[], Some(&ring));
        assert_eq!(plan.replicas, 3);
        assert!(plan.decommission.is_empty());
        let reason = plan.blocked.expect("blocked");
        assert!(reason.contains("below replicationFactor 3"), "{reason}");
        // From five, a request for two stops at three.
        let ring = crate::scaling::tests::ring(&["normal"; 5]);
        let plan = plan_for(2, Some(5), &[], Some(&ring));
        assert_eq!(plan.target, 3);
        assert_eq!(plan.decommission, vec![3, 4]);
    }

    #[test]
    fn flip_back_keeps_pods_and_rejoins_the_left() {
        // Scale-down to 3 took 4 out; the user now asks for 5 again.
        let ring = ring(&["normal", "normal", "normal", "leaving", "left"]);
        let plan = plan_for(5, Some(5), &[3, 4], Some(&ring));
        assert_eq!(plan.replicas, 5);
        assert!(plan.decommissioning.is_empty());
        assert!(plan.decommission.is_empty());
        assert_eq!(plan.rejoin, vec![4], "3 finishes leaving first");
    }

    #[test]
    fn only_the_process_that_left_is_restarted() {
        let ring = ring(&["normal", "normal", "normal", "left"]);
        let input = |since: Option<u64>| {
            plan(&ScaleInput {
                desired: 4,
                replication_factor: 3,
                current: Some(4),
                decommissioning: &[],
                ring: Some(&ring),
                node_id: &id,
                running_since_ms: &move |_| since,
            })
        };
        // The left process (generation 2000) runs in the pod started at 1000.
        assert_eq!(input(Some(1_000)).rejoin, vec![3]);
        // A pod started since has its own process, not yet in gossip.
        assert!(input(Some(3_000)).rejoin.is_empty());
        // A pod that is not running has nothing to restart.
        assert!(input(None).rejoin.is_empty());
        // A left process that gossip reports dead is gone already.
        let mut dead = ring.clone();
        if let Some(m) = dead.members.get_mut(&id(3)) {
            m.alive = false;
        }
        let plan = plan(&ScaleInput {
            desired: 4,
            replication_factor: 3,
            current: Some(4),
            decommissioning: &[],
            ring: Some(&dead),
            node_id: &id,
            running_since_ms: &|_| Some(1_000),
        });
        assert!(plan.rejoin.is_empty());
    }
}
