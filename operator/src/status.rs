//! The status a reconcile reports: phase, conditions and ring members.
//! Pure, so that every condition is unit-tested.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use crate::{
    crd::{HandoffProgress, KVClusterStatus, MemberState},
    ring_admin::{Handoff, RingView},
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
    let dead: Vec<&String> = observed
        .node_ids
        .iter()
        .filter(|id| ring.and_then(|r| r.member(id)).is_some_and(|m| !m.alive))
        .collect();
    let ever_formed = ring.is_some_and(|r| r.state_version > 0);
    let progress = progress(observed, ever_formed);

    let previous = observed
        .previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let generation = observed.generation;
    let ready_members = target_ids
        .iter()
        .filter(|id| normal(id))
        .count()
        .min(observed.ready_pods.max(0) as usize);
    let available_condition = condition(
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
                "{ready_members} of {} nodes are normal ring members and ready",
                observed.plan.target
            )
        },
    );
    let (progressing, progress_reason, progress_message) = match &progress {
        Some((reason, message)) => (true, *reason, message.clone()),
        None => (
            false,
            "Stable",
            format!("{} nodes, nothing in progress", observed.plan.target),
        ),
    };
    let (degraded, degraded_reason, degraded_message) = if !dead.is_empty() {
        (
            true,
            "MembersDown",
            format!(
                "down: {}",
                dead.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else if ever_formed && ring.is_none() {
        (
            true,
            "RingUnreachable",
            "no node answered the operator's ring status call".to_string(),
        )
    } else if !available && !progressing {
        // Nothing is moving, so nothing will make it available by itself.
        (
            true,
            "NotReady",
            format!(
                "{ready_members} of {} nodes are normal ring members and ready, and nothing is in progress",
                observed.plan.target
            ),
        )
    } else {
        (false, "Healthy", "every member is alive".to_string())
    };
    let mut conditions = vec![
        available_condition,
        condition(
            previous,
            generation,
            PROGRESSING,
            progressing,
            progress_reason,
            &progress_message,
        ),
        condition(
            previous,
            generation,
            DEGRADED,
            degraded,
            degraded_reason,
            &degraded_message,
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
                    handoff: r.handoffs.get(&m.node_id).map(handoff_words),
                    handoff_progress: r.handoffs.get(&m.node_id).map(|h| HandoffProgress {
                        state_version: r.state_version as i64,
                        partitions_complete: h.complete as i32,
                        partitions_total: h.total as i32,
                        keys_received: h.keys_received as i64,
                        bytes_received: h.bytes_received as i64,
                        keys_remaining: h.keys_remaining as i64,
                    }),
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
        phase: phase(&conditions).to_string(),
        message: headline(&conditions),
        conditions,
        members,
        decommissioning: observed.plan.decommissioning.clone(),
    }
}

/// The phase `kubectl get kvc` shows, read off the conditions alone, so
/// that the two never disagree: what is in progress first, then whether
/// the cluster is degraded or available.
pub fn phase(conditions: &[Condition]) -> &'static str {
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .filter(|c| c.status == "True")
    };
    if let Some(progressing) = holds(PROGRESSING) {
        return match progressing.reason.as_str() {
            FORMING if holds(SCALING_BLOCKED).is_some() => "Blocked",
            FORMING => "Creating",
            ROLLING_UPGRADE => "Upgrading",
            _ => "Scaling",
        };
    }
    if holds(DEGRADED).is_some() {
        "Degraded"
    } else if holds(AVAILABLE).is_some() {
        "Available"
    } else {
        // No status the operator writes has all three false: Degraded
        // holds whenever the cluster is neither available nor moving.
        "Unknown"
    }
}

/// The one line `kubectl get kvc` shows: a refusal first, since nothing
/// else would say that a request was not carried out.
pub fn headline(conditions: &[Condition]) -> String {
    [SCALING_BLOCKED, PROGRESSING, DEGRADED]
        .into_iter()
        .find_map(|type_| {
            conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == "True")
        })
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

const FORMING: &str = "Forming";
const ROLLING_UPGRADE: &str = "RollingUpgrade";

/// What is in progress, as the reason and message of `Progressing`: the
/// ring still forming, a scale the operator drives, a template rolling
/// out, or members joining, leaving or receiving partitions (also when the
/// operator did not start it, such as `ringkv decommission`).
fn progress(observed: &Observed<'_>, ever_formed: bool) -> Option<(&'static str, String)> {
    let plan = observed.plan;
    if !ever_formed {
        return Some((FORMING, format!("forming a ring of {} nodes", plan.target)));
    }
    if !plan.decommissioning.is_empty() {
        return Some((
            "ScalingDown",
            format!(
                "scaling down to {}: decommissioning ordinals {:?}",
                plan.target, plan.decommissioning
            ),
        ));
    }
    if !plan.rejoin.is_empty() {
        return Some((
            "Rejoining",
            format!(
                "restarting left nodes {:?} so that they rejoin",
                plan.rejoin
            ),
        ));
    }
    if plan.replicas != plan.target {
        return Some(("Scaling", format!("scaling to {} nodes", plan.target)));
    }
    if observed.upgrade.in_progress {
        return Some((
            ROLLING_UPGRADE,
            format!(
                "rolling upgrade: pods from ordinal {} run the new template",
                observed.upgrade.partition
            ),
        ));
    }
    let ring = observed.ring?;
    let moving: Vec<String> = ring
        .members
        .values()
        .filter(|m| m.status == "joining" || m.status == "leaving")
        .map(|m| format!("{} {}", m.node_id, m.status))
        .collect();
    let incomplete: Vec<String> = ring
        .handoffs
        .iter()
        .filter(|(_, h)| h.complete < h.total)
        .map(|(id, h)| format!("{id} has {}", handoff_words(h)))
        .collect();
    if moving.is_empty() && incomplete.is_empty() && !ring.transition {
        return None;
    }
    let mut parts = moving;
    parts.extend(incomplete);
    if parts.is_empty() {
        parts.push("partitions are moving".to_string());
    }
    Some(("MembersMoving", parts.join("; ")))
}

/// Handoff progress as `kubectl describe` and the conditions show it.
fn handoff_words(h: &Handoff) -> String {
    let mut words = format!("{}/{} partitions", h.complete, h.total);
    if h.keys_received > 0 || h.keys_remaining > 0 {
        words.push_str(&format!(
            ", {} keys ({}) received, about {} to go",
            h.keys_received,
            bytes_in_words(h.bytes_received),
            h.keys_remaining
        ));
    }
    words
}

fn bytes_in_words(bytes: u64) -> String {
    const MIB: f64 = (1 << 20) as f64;
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
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
    for (type_, holds) in [(DEGRADED, true), (PROGRESSING, false)] {
        let new = condition(&before, generation, type_, holds, INVALID_SPEC, message);
        match status.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(slot) => *slot = new,
            None => status.conditions.push(new),
        }
    }
    status.phase = phase(&status.conditions).to_string();
    status.message = headline(&status.conditions);
    status
}

/// The condition of a type, for tests and for events.
pub fn find<'a>(status: &'a KVClusterStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
        assert_eq!(status.message, "", "nothing to say");
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
        assert_eq!(status.phase, "Available");
        assert_eq!(
            status.message, blocked.message,
            "kubectl get kvc shows the refusal beside the phase"
        );
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
            let status = invalid_spec(
                previous,
                Some(2),
                "spec.readQuorum: readQuorum 4 exceeds replicationFactor 3",
            );
            assert_eq!(status.observed_generation, Some(2));
            assert_eq!(status.phase, "Degraded");
            let degraded = find(&status, DEGRADED).expect("Degraded");
            assert_eq!(
                (degraded.status.as_str(), degraded.reason.as_str()),
                ("True", INVALID_SPEC)
            );
            assert_eq!(
                degraded.message,
                "spec.readQuorum: readQuorum 4 exceeds replicationFactor 3"
            );
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

    fn conditions(
        available: bool,
        progressing: Option<&str>,
        degraded: bool,
        blocked: bool,
    ) -> Vec<Condition> {
        vec![
            condition(&[], None, AVAILABLE, available, "r", "m"),
            condition(
                &[],
                None,
                PROGRESSING,
                progressing.is_some(),
                progressing.unwrap_or("Stable"),
                "m",
            ),
            condition(&[], None, DEGRADED, degraded, "r", "m"),
            condition(&[], None, SCALING_BLOCKED, blocked, "r", "m"),
        ]
    }

    #[test]
    fn the_phase_is_read_off_the_conditions() {
        for (available, progressing, degraded, blocked, phase_) in [
            (true, None, false, false, "Available"),
            (true, None, false, true, "Available"),
            (false, None, true, false, "Degraded"),
            (true, None, true, false, "Degraded"),
            (false, Some(FORMING), false, false, "Creating"),
            (false, Some(FORMING), false, true, "Blocked"),
            (false, Some("ScalingDown"), true, false, "Scaling"),
            (true, Some("MembersMoving"), false, false, "Scaling"),
            (true, Some(ROLLING_UPGRADE), false, false, "Upgrading"),
            (false, None, false, false, "Unknown"),
        ] {
            assert_eq!(
                phase(&conditions(available, progressing, degraded, blocked)),
                phase_,
                "available {available}, progressing {progressing:?}, degraded {degraded}, blocked {blocked}"
            );
        }
    }

    #[test]
    fn ordinary_scaling_is_not_an_upgrade_and_a_joining_member_is_progress() {
        let view = ring(&[
            ("normal", true),
            ("normal", true),
            ("normal", true),
            ("joining", true),
        ]);
        let status = observe(Some(&view), &steady(4), 4);
        let progressing = find(&status, PROGRESSING).expect("Progressing");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "MembersMoving")
        );
        assert!(
            progressing.message.contains("demo-3 joining"),
            "{}",
            progressing.message
        );
        assert_eq!(status.phase, "Scaling");
    }

    #[test]
    fn an_incomplete_handoff_is_progress_with_its_count() {
        let mut view = ring(&[("normal", true); 3]);
        view.handoffs.insert(
            "demo-2".into(),
            crate::ring_admin::Handoff {
                complete: 10,
                total: 64,
                keys_received: 12_000,
                bytes_received: 3 << 20,
                keys_remaining: 30_000,
            },
        );
        let status = observe(Some(&view), &steady(3), 3);
        let progressing = find(&status, PROGRESSING).expect("Progressing");
        assert_eq!(progressing.status, "True");
        assert!(
            progressing.message.contains(
                "demo-2 has 10/64 partitions, 12000 keys (3.0 MiB) received, about 30000 to go"
            ),
            "{}",
            progressing.message
        );
        let member = status
            .members
            .iter()
            .find(|m| m.name == "demo-2")
            .expect("member");
        assert_eq!(
            member
                .handoff_progress
                .as_ref()
                .map(|h| (h.keys_received, h.keys_remaining)),
            Some((12_000, 30_000))
        );
    }

    #[test]
    fn a_new_cluster_is_creating_not_degraded() {
        let mut view = ring(&[("joining", true); 3]);
        view.state_version = 0;
        for ring_ in [None, Some(&view)] {
            let status = observe(ring_, &steady(3), 0);
            assert_eq!(status.phase, "Creating");
            assert!(!is(&status, DEGRADED));
        }
    }

    fn any_member() -> impl Strategy<Value = (&'static str, bool)> {
        (
            prop_oneof![
                Just("joining"),
                Just("normal"),
                Just("leaving"),
                Just("left")
            ],
            any::<bool>(),
        )
    }

    proptest! {
        /// Whatever was observed, the phase and the conditions agree, and
        /// Progressing holds whenever a member moves or a handoff is
        /// incomplete.
        #[test]
        fn phase_and_conditions_agree(
            members in proptest::collection::vec(any_member(), 0..6),
            formed in any::<bool>(),
            target in 1i32..6,
            replicas in 1i32..6,
            ready in 0i32..6,
            decommissioning in proptest::collection::vec(0i32..6, 0..2),
            blocked in any::<bool>(),
            upgrading in any::<bool>(),
            handoff in proptest::option::of((0u32..4, 1u32..4)),
            reachable in any::<bool>(),
        ) {
            let mut view = ring(&members);
            view.state_version = u64::from(formed);
            if let Some((complete, total)) = handoff {
                view.handoffs.insert("demo-0".into(), crate::ring_admin::Handoff { complete, total, ..Default::default() });
            }
            let plan = ScalePlan {
                replicas,
                target,
                decommissioning,
                blocked: blocked.then(|| "replicas 1 is below replicationFactor 3".to_string()),
                ..ScalePlan::default()
            };
            let upgrade = UpgradeStep { partition: 0, rolling: None, in_progress: upgrading };
            let status = status(&Observed {
                generation: Some(1),
                selector: String::new(),
                pods: replicas,
                ready_pods: ready,
                ring: reachable.then_some(&view),
                node_ids: (0..replicas).map(|i| format!("demo-{i}")).collect(),
                plan: &plan,
                upgrade: &upgrade,
                previous: None,
            });
            let (available, progressing, degraded) =
                (is(&status, AVAILABLE), is(&status, PROGRESSING), is(&status, DEGRADED));
            prop_assert_ne!(status.phase.as_str(), "Unknown");
            prop_assert_eq!(
                progressing,
                matches!(status.phase.as_str(), "Creating" | "Blocked" | "Scaling" | "Upgrading")
            );
            if status.phase == "Available" {
                prop_assert!(available && !degraded);
            }
            if status.phase == "Degraded" {
                prop_assert!(degraded);
            }
            prop_assert!(available || progressing || degraded, "not available means moving or degraded");
            let moving = reachable
                && (members.iter().any(|(s, _)| *s == "joining" || *s == "leaving")
                    || handoff.is_some_and(|(c, t)| c < t));
            if moving {
                prop_assert!(progressing, "{:?}", status.conditions);
            }
        }
    }
}
