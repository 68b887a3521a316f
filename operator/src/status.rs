//! The status a reconcile reports: phase, conditions and ring members.
//! Pure, so that every condition is unit-tested.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use crate::{
    crd::{KVClusterStatus, MemberState},
    ring_admin::RingView,
    scaling::ScalePlan,
    upgrade::UpgradeStep,
};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const SCALING_BLOCKED: &str = "ScalingBlocked";

/// Everything the status is derived from.
pub struct Observed<'a> {
    pub generation: Option<i64>,
    pub selector: String,
    /// Node pods that exist.
    pub pods: i32,
    /// Node pods whose readiness probe passes: in the ring, partitions complete.
    pub ready_pods: i32,
    pub ring: Option<&'a RingView>,
    /// Node ids the StatefulSet keeps, in ordinal order.
    pub node_ids: Vec<String>,
    pub plan: &'a ScalePlan,
    pub upgrade: &'a UpgradeStep,
    pub previous: Option<&'a KVClusterStatus>,
}

pub fn status(observed: &Observed<'_>) -> KVClusterStatus {
    let ring = observed.ring;
    let normal = |id: &String| {
        ring.and_then(|r| r.member(id))
            .is_some_and(|m| m.alive && m.status == "normal")
    };
    let target_ids: Vec<&String> = observed
        .node_ids
        .iter()
        .take(observed.plan.target.max(0) as usize)
        .collect();
    let all_normal = !target_ids.is_empty() && target_ids.iter().all(|id| normal(id));
    let available = all_normal && observed.ready_pods >= observed.plan.target;
    let scaling = observed.plan.in_progress();
    let upgrading = observed.upgrade.in_progress;
    let dead: Vec<&String> = observed
        .node_ids
        .iter()
        .filter(|id| ring.and_then(|r| r.member(id)).is_some_and(|m| !m.alive))
        .collect();
    let ever_formed = ring.is_some_and(|r| r.state_version > 0);

    let phase = if observed.plan.blocked.is_some() && !ever_formed {
        "Blocked"
    } else if !ever_formed {
        "Creating"
    } else if scaling {
        "Scaling"
    } else if upgrading {
        "Upgrading"
    } else if available {
        "Available"
    } else {
        "Degraded"
    };

    let previous = observed
        .previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let generation = observed.generation;
    let mut conditions = vec![
        condition(
            previous,
            generation,
            AVAILABLE,
            available,
            if available {
                "AllMembersNormal"
            } else {
                "MembersNotNormal"
            },
            &if available {
                format!(
                    "{} nodes are normal ring members and ready",
                    observed.plan.target
                )
            } else {
                format!(
                    "{} of {} nodes are normal ring members and ready",
                    target_ids
                        .iter()
                        .filter(|id| normal(id))
                        .count()
                        .min(observed.ready_pods.max(0) as usize),
                    observed.plan.target
                )
            },
        ),
        condition(
            previous,
            generation,
            PROGRESSING,
            scaling || upgrading || !ever_formed,
            if scaling {
                "Scaling"
            } else if upgrading {
                "RollingUpgrade"
            } else if !ever_formed {
                "Forming"
            } else {
                "Stable"
            },
            &progress_message(observed),
        ),
        condition(
            previous,
            generation,
            DEGRADED,
            !dead.is_empty() || (ever_formed && ring.is_none()),
            if !dead.is_empty() {
                "MembersDown"
            } else {
                "Healthy"
            },
            &if dead.is_empty() {
                "every member is alive".to_string()
            } else {
                format!(
                    "down: {}",
                    dead.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        ),
    ];
    conditions.push(match &observed.plan.blocked {
        Some(reason) => condition(
            previous,
            generation,
            SCALING_BLOCKED,
            true,
            "BelowReplicationFactor",
            reason,
        ),
        None => condition(
            previous,
            generation,
            SCALING_BLOCKED,
            false,
            "ScalingAllowed",
            "the requested replicas can be served",
        ),
    });

    let members = ring
        .map(|r| {
            r.members
                .values()
                // A node that left and whose pod is gone lingers in gossip
                // until it is forgotten; it is no longer a member.
                .filter(|m| m.alive || m.status != "left")
                .map(|m| MemberState {
                    name: m.node_id.clone(),
                    ring_status: if m.alive {
                        m.status.clone()
                    } else {
                        format!("{} (down)", m.status)
                    },
                    partitions_owned: m.partitions_owned as i32,
                    handoff: r
                        .handoffs
                        .get(&m.node_id)
                        .map(|h| format!("{}/{} partitions", h.complete, h.total)),
                })
                .collect()
        })
        .or_else(|| observed.previous.map(|p| p.members.clone()))
        .unwrap_or_default();

    KVClusterStatus {
        observed_generation: generation,
        replicas: observed.pods,
        ready_replicas: observed.ready_pods,
        selector: observed.selector.clone(),
        phase: phase.to_string(),
        conditions,
        members,
        decommissioning: observed.plan.decommissioning.clone(),
    }
}

fn progress_message(observed: &Observed<'_>) -> String {
    let plan = observed.plan;
    if !plan.decommissioning.is_empty() {
        return format!(
            "scaling down to {}: decommissioning ordinals {:?}",
            plan.target, plan.decommissioning
        );
    }
    if !plan.rejoin.is_empty() {
        return format!(
            "restarting left nodes {:?} so that they rejoin",
            plan.rejoin
        );
    }
    if plan.replicas != plan.target {
        return format!("scaling to {} nodes", plan.target);
    }
    if observed.upgrade.in_progress {
        return format!(
            "rolling upgrade: pods from ordinal {} run the new template",
            observed.upgrade.partition
        );
    }
    format!("{} nodes, nothing in progress", plan.target)
}

/// A condition that keeps its transition time while its status holds.
fn condition(
    previous: &[Condition],
    generation: Option<i64>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The reason of the conditions a refused spec sets.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// The status of a refused spec: the previous status, now reporting
/// `generation`, with Degraded true and Progressing false for the reason
/// in `message`. What runs keeps running, so Available stays as it was.
pub fn invalid_spec(
    previous: Option<&KVClusterStatus>,
    generation: Option<i64>,
    message: &str,
) -> KVClusterStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let before = status.conditions.clone();
    status.observed_generation = generation;
    status.phase = "Degraded".into();
    for (type_, holds) in [(DEGRADED, true), (PROGRESSING, false)] {
        let new = condition(&before, generation, type_, holds, INVALID_SPEC, message);
        match status.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(slot) => *slot = new,
            None => status.conditions.push(new),
        }
    }
    status
}

/// The condition of a type, for tests and for events.
pub fn find<'a>(status: &'a KVClusterStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring_admin::MemberView;

    fn ring(statuses: &[(&str, bool)]) -> RingView {
        RingView {
            state_version: 4,
            members: statuses
                .iter()
                .enumerate()
                .map(|(i, (status, alive))| {
                    (
                        format!("demo-{i}"),
                        MemberView {
                            node_id: format!("demo-{i}"),
                            status: status.to_string(),
                            alive: *alive,
                            generation: 1,
                            partitions_owned: 100,
                            partitions_next: 100,
                            hints_pending: 0,
                        },
                    )
                })
                .collect(),
            ..RingView::default()
        }
    }

    fn observe(ring: Option<&RingView>, plan: &ScalePlan, ready: i32) -> KVClusterStatus {
        let upgrade = UpgradeStep {
            partition: plan.replicas,
            rolling: None,
            in_progress: false,
        };
        status(&Observed {
            generation: Some(2),
            selector: "a=b".into(),
            pods: plan.replicas,
            ready_pods: ready,
            ring,
            node_ids: (0..plan.replicas).map(|i| format!("demo-{i}")).collect(),
            plan,
            upgrade: &upgrade,
            previous: None,
        })
    }

    fn is(status: &KVClusterStatus, type_: &str) -> bool {
        find(status, type_).expect("condition").status == "True"
    }

    fn steady(n: i32) -> ScalePlan {
        ScalePlan {
            replicas: n,
            target: n,
            ..ScalePlan::default()
        }
    }

    #[test]
    fn available_when_every_member_is_normal_and_ready() {
        let view = ring(&[("normal", true); 3]);
        let status = observe(Some(&view), &steady(3), 3);
        assert!(is(&status, AVAILABLE));
        assert!(
            !is(&status, PROGRESSING) && !is(&status, DEGRADED) && !is(&status, SCALING_BLOCKED)
        );
        assert_eq!(status.phase, "Available");
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn scale_up_is_not_available_until_new_members_are_normal() {
        let view = ring(&[
            ("normal", true),
            ("normal", true),
            ("normal", true),
            ("joining", true),
            ("normal", true),
        ]);
        let status = observe(Some(&view), &steady(5), 5);
        assert!(!is(&status, AVAILABLE));
    }

    #[test]
    fn a_dead_member_degrades() {
        let view = ring(&[("normal", true), ("normal", false), ("normal", true)]);
        let status = observe(Some(&view), &steady(3), 2);
        assert!(is(&status, DEGRADED));
        assert!(find(&status, DEGRADED)
            .expect("degraded")
            .message
            .contains("demo-1"));
        assert_eq!(status.phase, "Degraded");
    }

    #[test]
    fn decommissioning_is_progress_and_shows_in_status() {
        let view = ring(&[
            ("normal", true),
            ("normal", true),
            ("normal", true),
            ("leaving", true),
        ]);
        let plan = ScalePlan {
            replicas: 4,
            target: 3,
            decommissioning: vec![3],
            ..ScalePlan::default()
        };
        let status = observe(Some(&view), &plan, 4);
        assert!(is(&status, PROGRESSING));
        assert_eq!(status.decommissioning, vec![3]);
        assert_eq!(status.phase, "Scaling");
        assert!(find(&status, PROGRESSING)
            .expect("p")
            .message
            .contains("[3]"));
    }

    #[test]
    fn blocked_scaling_is_a_condition_with_the_reason() {
        let view = ring(&[("normal", true); 3]);
        let plan = ScalePlan {
            blocked: Some("replicas 2 is below replicationFactor 3".into()),
            ..steady(3)
        };
        let status = observe(Some(&view), &plan, 3);
        let blocked = find(&status, SCALING_BLOCKED).expect("blocked");
        assert_eq!(
            (blocked.status.as_str(), blocked.reason.as_str()),
            ("True", "BelowReplicationFactor")
        );
        assert!(blocked.message.contains("below replicationFactor 3"));
        assert!(is(&status, AVAILABLE), "the cluster itself is fine");
    }

    #[test]
    fn transition_times_hold_while_a_condition_holds() {
        let view = ring(&[("normal", true); 3]);
        let first = observe(Some(&view), &steady(3), 3);
        let upgrade = UpgradeStep {
            partition: 3,
            rolling: None,
            in_progress: false,
        };
        let plan = steady(3);
        let again = status(&Observed {
            generation: Some(2),
            selector: "a=b".into(),
            pods: 3,
            ready_pods: 3,
            ring: Some(&view),
            node_ids: (0..3).map(|i| format!("demo-{i}")).collect(),
            plan: &plan,
            upgrade: &upgrade,
            previous: Some(&first),
        });
        assert_eq!(
            find(&first, AVAILABLE).map(|c| &c.last_transition_time),
            find(&again, AVAILABLE).map(|c| &c.last_transition_time)
        );
    }

    #[test]
    fn a_refused_spec_reports_its_generation_and_reason_and_keeps_availability() {
        let available = condition(&[], Some(1), AVAILABLE, true, "AllNodesNormal", "ok");
        let previous = KVClusterStatus {
            observed_generation: Some(1),
            phase: "Available".into(),
            conditions: vec![available.clone()],
            ..Default::default()
        };
        for previous in [None, Some(&previous)] {
            let status = invalid_spec(previous, Some(2), "readQuorum must lie in 1..=3");
            assert_eq!(status.observed_generation, Some(2));
            assert_eq!(status.phase, "Degraded");
            let degraded = find(&status, DEGRADED).expect("Degraded");
            assert_eq!(
                (degraded.status.as_str(), degraded.reason.as_str()),
                ("True", INVALID_SPEC)
            );
            assert_eq!(degraded.message, "readQuorum must lie in 1..=3");
            assert_eq!(degraded.observed_generation, Some(2));
            let progressing = find(&status, PROGRESSING).expect("Progressing");
            assert_eq!(progressing.status, "False");
            assert_eq!(
                find(&status, AVAILABLE).is_some(),
                previous.is_some(),
                "availability is left as it was"
            );
        }
    }
}
