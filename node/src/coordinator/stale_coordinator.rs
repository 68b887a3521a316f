//! Whether this node's ring state is current enough to coordinate.
//!
//! Replicas refuse a coordinator below their ring state's floor
//! ([`RingState::refuses`]): it missed a whole transition, and the owners
//! it remembers may have dropped the partition. A coordinator reads and
//! writes its own copy without asking anyone, so it applies the same rule
//! to itself with what gossip tells it: the floors its live peers announce.
//! Right after a start or a stall, gossip has told it nothing yet, so it
//! waits for the first news (see [`crate::cluster::contact`]). Without this, a node
//! paused through a transition answered a read at R=1 from its own copy of
//! a partition it no longer owned, missing writes acknowledged at W=3.

use std::time::Duration;

use crate::{cluster::contact::Touch, cluster::membership::View, ring::RingState};

/// Why this node must not coordinate a request now, if it must not.
///
/// `settle` bounds the wait for news after a start or a stall, as it bounds
/// readiness: a node whose peers are all down serves once it has passed.
pub(crate) fn why_stale(
    state: &RingState,
    view: &View,
    me: &str,
    touch: Touch,
    settle: Duration,
) -> Option<String> {
    match touch {
        Touch::Stalled(quiet) => {
            return Some(format!(
                "this node's gossip has not run for {} ms: it was stalled and may have missed ring changes, and coordinates again once gossip has caught it up",
                quiet.as_millis()
            ))
        }
        Touch::Unheard(ago) if ago < settle && has_peers(state, me) => {
            return Some(format!(
                "this node has heard from no peer since it started or stalled {} ms ago and may hold an old ring state; it coordinates again once gossip has caught it up (or after --gossip-settle-ms, {} ms, if no peer answers)",
                ago.as_millis(),
                settle.as_millis()
            ))
        }
        Touch::Unheard(_) | Touch::Heard => {}
    }
    let ahead = view
        .alive()
        .filter(|peer| peer.id != me)
        .max_by_key(|peer| peer.layout_floor)?;
    (ahead.layout_floor > state.version).then(|| {
        format!(
            "node {} holds a ring state that serves coordinators on version {} or newer, and this node is on version {}: it missed a ring change and coordinates again once it has fetched the newer state",
            ahead.id, ahead.layout_floor, state.version
        )
    })
}

/// Whether any layout of `state` has a member other than `me`: a node alone
/// in its cluster hears from nobody and needs nobody's news.
fn has_peers(state: &RingState, me: &str) -> bool {
    state
        .layouts()
        .any(|layout| layout.members().iter().any(|m| m.id != me))
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use proptest::prelude::*;

    use super::*;
    use crate::{
        cluster::membership::Peer,
        ring::layout::{Layout, Member},
    };

    const SETTLE: Duration = Duration::from_secs(10);

    fn state(version: u64, members: &[&str]) -> RingState {
        let members: Vec<Member> = members.iter().map(|id| Member::new(*id)).collect();
        let n = members.len().min(3);
        RingState::settled(
            version,
            Arc::new(Layout::initial(8, n, members).expect("layout")),
        )
    }

    proptest! {
        /// Against a model, for any contact and any floors two peers
        /// announce: a stalled node never coordinates; one that has heard
        /// nothing since it started or stalled waits for news, up to the
        /// settle limit, unless it is alone; otherwise it coordinates unless
        /// a live peer's floor is above its version, and the reason names
        /// that peer.
        #[test]
        fn a_node_coordinates_only_on_a_ring_state_its_peers_still_serve(
            version in 1u64..6,
            floors in proptest::collection::vec((any::<bool>(), 0u64..8), 2),
            touch in prop_oneof![
                Just(Touch::Heard),
                (0u64..30_000).prop_map(|ms| Touch::Stalled(Duration::from_millis(ms))),
                (0u64..30_000).prop_map(|ms| Touch::Unheard(Duration::from_millis(ms))),
            ],
            alone in any::<bool>(),
        ) {
            let ids = ["n0", "n1", "n2"];
            let state = if alone { state(version, &ids[..1]) } else { state(version, &ids) };
            let peers: BTreeMap<String, Peer> = floors
                .iter()
                .enumerate()
                .map(|(i, (alive, floor))| {
                    let mut peer = Peer::for_test(ids[i + 1], *alive, version);
                    peer.layout_floor = *floor;
                    (peer.id.clone(), peer)
                })
                .collect();
            let view = View { peers };
            let reason = why_stale(&state, &view, "n0", touch, SETTLE);

            let highest = floors.iter().filter(|(alive, _)| *alive).map(|(_, f)| *f).max();
            let stale_ring = highest.is_some_and(|floor| floor > version);
            let expected = match touch {
                Touch::Stalled(_) => true,
                Touch::Unheard(ago) if ago < SETTLE && !alone => true,
                _ => stale_ring,
            };
            prop_assert_eq!(reason.is_some(), expected, "{:?}", reason);
            if let Some(reason) = reason {
                match touch {
                    Touch::Stalled(_) => prop_assert!(reason.contains("stalled"), "{}", reason),
                    Touch::Unheard(ago) if ago < SETTLE && !alone => {
                        prop_assert!(reason.contains("heard from no peer"), "{}", reason)
                    }
                    _ => {
                        let floor = highest.unwrap_or(0);
                        prop_assert!(
                            reason.contains(&format!("version {floor} or newer, and this node is on version {version}")),
                            "{}", reason
                        );
                    }
                }
            }
        }
    }
}
