//! The rolling-upgrade decision: which rolling-update partition the
//! StatefulSet gets. Pods with an ordinal at or above the partition run the
//! new template; the operator lowers it one pod at a time, and only when
//! the pods already rolled are ready and the ring is healthy.
//!
//! Parked at `replicas` while nothing rolls, so that a template change
//! updates no pod until the operator has checked the ring.

/// The StatefulSet as last observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// `spec.updateStrategy.rollingUpdate.partition`.
    pub partition: i32,
    /// Whether `status.observedGeneration` has caught up with the spec.
    pub observed: bool,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
    /// (ordinal, revision, ready) of every pod.
    pub pods: Vec<(i32, Option<String>, bool)>,
}

/// The partition to apply and, when it moves, the ordinal that now rolls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeStep {
    pub partition: i32,
    pub rolling: Option<i32>,
    /// A new template is being rolled out.
    pub in_progress: bool,
}

pub fn next_partition(rollout: Option<&Rollout>, replicas: i32, ring_healthy: bool) -> UpgradeStep {
    let Some(rollout) = rollout else {
        // A new StatefulSet: every pod starts on the only template.
        return UpgradeStep {
            partition: 0,
            rolling: None,
            in_progress: false,
        };
    };
    let parked = UpgradeStep {
        partition: replicas,
        rolling: None,
        in_progress: false,
    };
    let hold = |partition: i32| UpgradeStep {
        partition: partition.clamp(0, replicas),
        rolling: None,
        in_progress: true,
    };
    if !rollout.observed {
        // Every spec change (a new replica count too) leaves the status
        // behind for a moment; only differing revisions mean an upgrade.
        let rolling = matches!(
            (&rollout.current_revision, &rollout.update_revision),
            (Some(current), Some(update)) if current != update
        );
        return UpgradeStep {
            in_progress: rolling,
            ..hold(rollout.partition)
        };
    }
    let (Some(current), Some(update)) = (&rollout.current_revision, &rollout.update_revision)
    else {
        return parked;
    };
    let partition = rollout.partition.clamp(0, replicas);
    if current == update {
        return parked;
    }
    let rolled_and_ready = rollout
        .pods
        .iter()
        .filter(|(ordinal, _, _)| *ordinal >= partition && *ordinal < replicas)
        .all(|(_, revision, ready)| *ready && revision.as_ref() == Some(update));
    let present = rollout
        .pods
        .iter()
        .filter(|(ordinal, _, _)| *ordinal >= partition && *ordinal < replicas)
        .count() as i32;
    if partition > 0 && rolled_and_ready && present == replicas - partition && ring_healthy {
        return UpgradeStep {
            partition: partition - 1,
            rolling: Some(partition - 1),
            in_progress: true,
        };
    }
    hold(partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(partition: i32, pods: &[(&str, bool)]) -> Rollout {
        Rollout {
            partition,
            observed: true,
            current_revision: Some("old".into()),
            update_revision: Some("new".into()),
            pods: pods
                .iter()
                .enumerate()
                .map(|(i, (rev, ready))| (i as i32, Some(rev.to_string()), *ready))
                .collect(),
        }
    }

    #[test]
    fn a_new_statefulset_starts_everything() {
        assert_eq!(next_partition(None, 3, false).partition, 0);
    }

    #[test]
    fn nothing_rolls_while_revisions_agree() {
        let mut same = rollout(0, &[("new", true); 3]);
        same.current_revision = Some("new".into());
        let step = next_partition(Some(&same), 3, true);
        assert_eq!(step.partition, 3, "parked");
        assert!(!step.in_progress);
    }

    #[test]
    fn rolls_from_the_top_one_pod_at_a_time_on_a_healthy_ring() {
        let first = next_partition(Some(&rollout(3, &[("old", true); 3])), 3, true);
        assert_eq!((first.partition, first.rolling), (2, Some(2)));
        let second = next_partition(
            Some(&rollout(2, &[("old", true), ("old", true), ("new", true)])),
            3,
            true,
        );
        assert_eq!(second.partition, 1);
    }

    #[test]
    fn waits_for_the_rolled_pod_and_the_ring() {
        let not_ready = rollout(2, &[("old", true), ("old", true), ("new", false)]);
        assert_eq!(next_partition(Some(&not_ready), 3, true).partition, 2);
        let not_rolled = rollout(2, &[("old", true), ("old", true), ("old", true)]);
        assert_eq!(next_partition(Some(&not_rolled), 3, true).partition, 2);
        let ready = rollout(2, &[("old", true), ("old", true), ("new", true)]);
        assert_eq!(
            next_partition(Some(&ready), 3, false).partition,
            2,
            "ring unhealthy"
        );
        let missing = rollout(2, &[("old", true), ("old", true)]);
        assert_eq!(
            next_partition(Some(&missing), 3, true).partition,
            2,
            "pod recreating"
        );
    }

    #[test]
    fn a_stale_status_holds_the_partition() {
        let mut stale = rollout(3, &[("old", true); 3]);
        stale.observed = false;
        assert_eq!(next_partition(Some(&stale), 3, true).partition, 3);
    }

    /// `kubectl scale` changes the StatefulSet's spec, so its status lags
    /// for a moment, with one revision: that is no upgrade.
    #[test]
    fn a_stale_status_of_one_revision_is_no_upgrade() {
        let mut scaled = rollout(3, &[("old", true); 3]);
        scaled.observed = false;
        scaled.update_revision = scaled.current_revision.clone();
        let step = next_partition(Some(&scaled), 4, true);
        assert!(!step.in_progress, "{step:?}");
        let mut rolling = rollout(3, &[("old", true); 3]);
        rolling.observed = false;
        assert!(next_partition(Some(&rolling), 3, true).in_progress);
    }

    #[test]
    fn stays_at_zero_until_the_statefulset_completes() {
        let done = rollout(0, &[("new", true); 3]);
        let step = next_partition(Some(&done), 3, true);
        assert_eq!(step.partition, 0);
        assert!(step.in_progress);
    }
}
