//! Hinted handoff: writes kept for a node that was down are delivered once
//! gossip sees it alive again. Hints live in RocksDB, so they survive a
//! restart of the node keeping them; hints older than the maximum age are
//! dropped and counted.
//!
//! A live target gets its hints a batch at a time, in `ApplyBatch` calls
//! that it merges in one write batch each, and the delivered hints are
//! forgotten in one write batch too. One call and one sync a hint held a
//! node that missed 100,000 writes to about 250 hints a second, so that
//! it stayed behind for minutes after anti-entropy had caught it up.
//! While rounds deliver whole shares, the next round starts at once.
//!
//! A hint kept for a node that has since left the ring goes to the key's
//! owners instead. Waiting for the departed node would hold the hint until
//! its maximum age, and a node that keeps hints cannot finish its own
//! decommission: a scale-down by two stalled that way when the second
//! leaving node still kept hints for the first.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ringkv_proto::v1::ReplicaRecord;
use tokio::time::MissedTickBehavior;

use crate::{
    cluster::{
        coalesce::CallCaps,
        membership::{Membership, View},
        rpc::{PeerCall, PeerRpc},
    },
    coordinator::Coordinator,
    replica::LocalReplica,
    server::metrics::ReplicationMetrics,
    storage::{now_millis, Hint},
};

/// Hints read per round, and at most this many of one target.
const ROUND: usize = 4096;
const PER_TARGET: usize = 1024;

/// Settings of hint delivery.
#[derive(Debug, Clone)]
pub struct HintDeliveryConfig {
    pub max_age: Duration,
    pub interval: Duration,
    pub timeout: Duration,
}

/// What delivers the hints this node keeps.
pub struct HintDelivery {
    pub local: Arc<LocalReplica>,
    pub coordinator: Coordinator,
    pub membership: Arc<Membership>,
    pub rpc: Arc<PeerRpc>,
    pub config: HintDeliveryConfig,
    pub metrics: ReplicationMetrics,
}

/// Whether a round left hints behind that the next round can deliver.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    MoreWaiting,
    Idle,
}

impl HintDelivery {
    /// Delivers hints until the process stops.
    pub async fn run(self) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            while self.round().await == Round::MoreWaiting {}
        }
    }

    async fn round(&self) -> Round {
        let storage = self.local.storage().clone();
        let hints =
            match tokio::task::spawn_blocking(move || storage.hints(PER_TARGET, ROUND)).await {
                Ok(Ok(hints)) => hints,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "reading hints");
                    return Round::Idle;
                }
                Err(error) => {
                    tracing::warn!(%error, "hint task");
                    return Round::Idle;
                }
            };
        let mut by_target: BTreeMap<String, Vec<Hint>> = BTreeMap::new();
        for hint in hints {
            by_target.entry(hint.target.clone()).or_default().push(hint);
        }
        let view = self.membership.view();
        let shares = by_target
            .into_values()
            .map(|hints| self.deliver_share(hints, &view));
        let mut done = Vec::new();
        let mut more = Round::Idle;
        for (share, whole) in futures::future::join_all(shares).await {
            if share.len() == whole && whole == PER_TARGET {
                more = Round::MoreWaiting;
            }
            done.extend(share);
        }
        if !done.is_empty() {
            let local = self.local.clone();
            let forgotten = tokio::task::spawn_blocking(move || local.forget_hints(&done)).await;
            if !matches!(forgotten, Ok(Ok(()))) {
                tracing::warn!("could not delete handed-off hints");
                return Round::Idle;
            }
        }
        more
    }

    /// Delivers, or drops for age, one target's share of a round. Returns
    /// the hints that are done with, and how many the share had.
    async fn deliver_share(&self, hints: Vec<Hint>, view: &View) -> (Vec<Hint>, usize) {
        let whole = hints.len();
        let now = now_millis();
        let max_age = self.config.max_age.as_millis() as u64;
        let (expired, current): (Vec<Hint>, Vec<Hint>) = hints
            .into_iter()
            .partition(|hint| now.saturating_sub(hint.stored_at_ms) > max_age);
        for hint in &expired {
            self.metrics.hints_dropped.inc();
            tracing::warn!(target_node = %hint.target, "dropped a hint older than the maximum age");
        }
        let mut done = expired;
        let Some(target) = current.first().map(|hint| hint.target.clone()) else {
            return (done, whole);
        };
        if self.coordinator.has_departed(&target) {
            for hint in current {
                match self
                    .coordinator
                    .deliver_to_owners(&hint.key, &hint.encoded)
                    .await
                {
                    Ok(()) => {
                        self.metrics.hints_delivered.inc();
                        done.push(hint);
                    }
                    Err(status) => {
                        tracing::debug!(target_node = %target, %status, "hint for a departed node not delivered yet");
                    }
                }
            }
        } else if view.is_alive(&target) {
            for call in calls(current, self.rpc.caps()) {
                let records = call
                    .iter()
                    .map(|hint| ReplicaRecord {
                        key: hint.key.clone(),
                        record: hint.encoded.clone(),
                    })
                    .collect();
                let peer = PeerCall::unversioned(&target, view, self.config.timeout);
                match self.rpc.apply_batch(peer, records).await {
                    Ok(()) => {
                        self.metrics.hints_delivered.inc_by(call.len() as u64);
                        done.extend(call);
                    }
                    Err(status) => {
                        tracing::debug!(target_node = %target, %status, "hints not delivered yet");
                        break;
                    }
                }
            }
        }
        (done, whole)
    }
}

/// Cuts one target's hints into calls within the peer's limits.
fn calls(hints: Vec<Hint>, caps: CallCaps) -> Vec<Vec<Hint>> {
    let mut calls: Vec<Vec<Hint>> = Vec::new();
    let mut bytes = 0;
    for hint in hints {
        let size = hint.key.len() + hint.encoded.len();
        match calls.last_mut() {
            Some(call) if caps.admit(call.len(), bytes, size) => {
                bytes += size;
                call.push(hint);
            }
            _ => {
                bytes = size;
                calls.push(vec![hint]);
            }
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn hint(size: usize) -> Hint {
        Hint {
            target: "n1".into(),
            key: Bytes::from_static(b"k"),
            encoded: Bytes::from(vec![0u8; size]),
            stored_at_ms: 0,
        }
    }

    #[test]
    fn calls_stay_within_the_peers_limits_and_keep_every_hint() {
        const PER_CALL: usize = 256;
        const CALL_BYTES: usize = 4 << 20;
        let caps = CallCaps::within(1024, 64 << 20);
        let sizes = [10, CALL_BYTES, 10, CALL_BYTES / 2, CALL_BYTES / 2, 1];
        let mut hints: Vec<Hint> = sizes.iter().map(|&s| hint(s)).collect();
        hints.extend((0..PER_CALL + 3).map(|_| hint(1)));
        let total = hints.len();
        let cut = calls(hints, caps);
        assert_eq!(cut.iter().map(Vec::len).sum::<usize>(), total);
        for call in &cut {
            assert!(!call.is_empty() && call.len() <= PER_CALL);
            let bytes: usize = call.iter().map(|h| h.key.len() + h.encoded.len()).sum();
            assert!(call.len() == 1 || bytes <= CALL_BYTES, "{bytes} bytes");
        }
    }
}
