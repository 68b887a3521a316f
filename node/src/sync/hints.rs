//! Hinted handoff: writes kept for a node that was down are delivered once
//! gossip sees it alive again. Hints live in RocksDB, so they survive a
//! restart of the node keeping them; hints older than the maximum age are
//! dropped and counted.
//!
//! A hint kept for a node that has since left the ring goes to the key's
//! owners instead. Waiting for the departed node would hold the hint until
//! its maximum age, and a node that keeps hints cannot finish its own
//! decommission: a scale-down by two stalled that way when the second
//! leaving node still kept hints for the first.

use std::{sync::Arc, time::Duration};

use crate::{
    cluster::{
        membership::Membership,
        rpc::{Delivery, PeerCall, PeerRpc},
    },
    coordinator::Coordinator,
    replica::LocalReplica,
    server::metrics::ReplicationMetrics,
    storage::now_millis,
};

/// Hints read per round, and at most this many of one target.
const BATCH: usize = 512;
const PER_TARGET: usize = 64;

/// Settings of hint delivery.
#[derive(Debug, Clone)]
pub struct HintDeliveryConfig {
    pub max_age: Duration,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Delivers hints until the process stops.
pub async fn run(
    local: Arc<LocalReplica>,
    coordinator: Coordinator,
    membership: Arc<Membership>,
    rpc: Arc<PeerRpc>,
    config: HintDeliveryConfig,
    metrics: ReplicationMetrics,
) {
    let mut ticker = tokio::time::interval(config.interval);
    loop {
        ticker.tick().await;
        let storage = local.storage().clone();
        let hints =
            match tokio::task::spawn_blocking(move || storage.hints(PER_TARGET, BATCH)).await {
                Ok(Ok(hints)) => hints,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "reading hints");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "hint task");
                    continue;
                }
            };
        let view = membership.view();
        let now = now_millis();
        for hint in hints {
            let done = if now.saturating_sub(hint.stored_at_ms) > config.max_age.as_millis() as u64
            {
                metrics.hints_dropped.inc();
                tracing::warn!(target_node = %hint.target, "dropped a hint older than the maximum age");
                true
            } else if coordinator.has_departed(&hint.target) {
                match coordinator
                    .deliver_to_owners(&hint.key, &hint.encoded)
                    .await
                {
                    Ok(()) => {
                        metrics.hints_delivered.inc();
                        true
                    }
                    Err(status) => {
                        tracing::debug!(target_node = %hint.target, %status, "hint for a departed node not delivered yet");
                        false
                    }
                }
            } else if view.is_alive(&hint.target) {
                let call = PeerCall::unversioned(&hint.target, &view, config.timeout);
                let delivered = rpc
                    .apply(call, &hint.key, &hint.encoded, Delivery::Replica)
                    .await
                    .is_ok();
                if delivered {
                    metrics.hints_delivered.inc();
                }
                delivered
            } else {
                false
            };
            if done {
                let (local, target) = (local.clone(), hint.target.clone());
                let forgotten = tokio::task::spawn_blocking(move || local.forget_hint(&hint)).await;
                if !matches!(forgotten, Ok(Ok(()))) {
                    tracing::warn!(target_node = %target, "could not delete a handed-off hint");
                }
            }
        }
    }
}
