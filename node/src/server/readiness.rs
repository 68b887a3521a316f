//! When RawKV reports SERVING, which is what a Kubernetes readiness probe
//! and the Service's endpoints follow.
//!
//! A node is ready when it is a member of the layout and gossip has settled.
//! A node that restarts over its data dir is a member at once, but until
//! gossip has found its peers it sees them as dead and refuses every quorum
//! request it coordinates. Like Cassandra's wait for gossip to settle, the
//! node waits until it sees every other member alive, or for at most
//! `settle_timeout` when some member really is down. Settling happens once:
//! a peer that dies later makes the cluster degraded, not this node unready.
//!
//! A node that started with an empty data dir also waits, within the same
//! limit, until it has refilled its partitions (see [`crate::sync::refill`]), so
//! that a new cluster reports SERVING when its reads can be answered. Past
//! the limit it serves as a coordinator while its own answers still count
//! toward no read.

use std::{sync::Arc, time::Duration};

use ringkv_proto::v1::raw_kv_server::SERVICE_NAME;
use tokio::{sync::watch, time::Instant};
use tonic_health::{server::HealthReporter, ServingStatus};

use crate::{
    cluster::membership::{Membership, View},
    ring::{Ring, RingState},
};

/// Whether this node sees every other member of the current layout alive.
pub fn peers_seen(state: &RingState, view: &View, me: &str) -> bool {
    state
        .current
        .members()
        .iter()
        .filter(|m| m.id != me)
        .all(|m| view.is_alive(&m.id))
}

/// Whether `me` is in the current layout.
pub fn is_member(state: Option<&RingState>, me: &str) -> bool {
    state.is_some_and(|s| s.current.members().iter().any(|m| m.id == me))
}

/// Keeps RawKV's health status in step with membership and gossip.
pub async fn track(
    ring: Arc<Ring>,
    membership: Arc<Membership>,
    me: String,
    mut refilled: watch::Receiver<bool>,
    reporter: HealthReporter,
    settle_timeout: Duration,
) {
    let mut layouts = ring.subscribe();
    let mut views = membership.watch();
    let settle_deadline = Instant::now() + settle_timeout;
    let mut settled = false;
    let mut serving = false;
    loop {
        let state = layouts.borrow_and_update().clone();
        let view = views.borrow_and_update().clone();
        let member = is_member(state.as_deref(), &me);
        // Marked seen on every pass, so that a finished refill does not
        // wake the loop again while gossip settles.
        let refill_over = *refilled.borrow_and_update();
        if member && !settled {
            let seen = state.as_deref().is_some_and(|s| peers_seen(s, &view, &me)) && refill_over;
            if seen || Instant::now() >= settle_deadline {
                settled = true;
                if !seen {
                    tracing::warn!(
                        timeout = ?settle_timeout,
                        "gossip did not find every member of the layout, or the refill is unfinished: serving anyway"
                    );
                }
            }
        }
        let ready = member && settled;
        if ready != serving {
            serving = ready;
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(SERVICE_NAME, status).await;
        }
        let waiting_to_settle = member && !settled;
        tokio::select! {
            changed = layouts.changed() => if changed.is_err() { return },
            changed = views.changed() => if changed.is_err() { return },
            _ = refilled.changed(), if waiting_to_settle => {}
            _ = tokio::time::sleep_until(settle_deadline), if waiting_to_settle => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        cluster::membership::Peer,
        ring::layout::{Layout, Member},
    };

    fn state(ids: &[&str]) -> RingState {
        let members = ids.iter().map(|id| Member::new(*id)).collect();
        RingState::settled(
            1,
            Arc::new(Layout::initial(16, 3, members).expect("layout")),
        )
    }

    fn view(alive: &[(&str, bool)]) -> View {
        let peers: BTreeMap<String, Peer> = alive
            .iter()
            .map(|(id, alive)| (id.to_string(), Peer::for_test(id, *alive, 1)))
            .collect();
        View { peers }
    }

    #[test]
    fn settles_once_every_other_member_is_alive() {
        let s = state(&["a", "b", "c"]);
        assert!(!peers_seen(&s, &view(&[]), "a"));
        assert!(!peers_seen(&s, &view(&[("b", true), ("c", false)]), "a"));
        assert!(peers_seen(&s, &view(&[("b", true), ("c", true)]), "a"));
        // Nodes outside the layout do not matter.
        assert!(peers_seen(
            &s,
            &view(&[("b", true), ("c", true), ("d", false)]),
            "a"
        ));
    }

    #[test]
    fn membership_is_of_the_current_layout() {
        let s = state(&["a", "b", "c"]);
        assert!(is_member(Some(&s), "b"));
        assert!(!is_member(Some(&s), "d"));
        assert!(!is_member(None, "a"));
    }
}
