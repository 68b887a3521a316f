//! One node id, one member: which of the gossip states that claim a node id
//! stands for it.
//!
//! chitchat keys a node state by (id, generation, address), so a restarted
//! node appears once per generation, and so does a second process started
//! with a node id already in use. Taking the newest generation let such an
//! impostor take the id over: peers sent the id's replica writes to it, and
//! once it stopped, the real node stayed dead in every view.
//!
//! Here a node id is bound to the address of the first live process seen
//! claiming it (for this node's own id: its own address). While a live
//! claim at the bound address exists, live claims from other addresses are
//! refused and reported. A node that restarts at its address is the same
//! member (the newest generation there wins); one that moved (a rescheduled
//! pod) is rebound once every claim at the old address is dead.

use std::{collections::HashMap, net::SocketAddr};

/// One gossip state claiming a node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub generation: u64,
    pub gossip: SocketAddr,
    pub alive: bool,
}

/// A node id claimed by live processes at more than one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub id: String,
    /// The address the id is bound to.
    pub kept: SocketAddr,
    /// Live claims from elsewhere, refused.
    pub refused: Vec<SocketAddr>,
}

/// The address each node id is bound to, as this node has seen them.
#[derive(Debug, Default)]
pub struct Bindings {
    by_id: HashMap<String, SocketAddr>,
}

impl Bindings {
    /// This node's own id is bound to its own address from the start.
    pub fn new(self_id: &str, self_gossip: SocketAddr) -> Self {
        Self {
            by_id: HashMap::from([(self_id.to_string(), self_gossip)]),
        }
    }

    /// The index in `claims` (not empty) of the claim that stands for `id`,
    /// and the conflict, if live claims came from more than one address.
    pub fn choose(&mut self, id: &str, claims: &[Claim]) -> (usize, Option<Conflict>) {
        let newest_at = |addr: SocketAddr, alive_only: bool| {
            claims
                .iter()
                .enumerate()
                .filter(|(_, c)| c.gossip == addr && (c.alive || !alive_only))
                .max_by_key(|(_, c)| c.generation)
                .map(|(i, _)| i)
        };
        let bound = self.by_id.get(id).copied();
        let live_at_bound = bound.and_then(|addr| newest_at(addr, true));
        let chosen = match live_at_bound {
            Some(index) => index,
            None => {
                // The oldest live claim: the process that was there first.
                let first_live = claims
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.alive)
                    .min_by_key(|(_, c)| c.generation);
                match first_live {
                    Some((index, claim)) => {
                        self.by_id.insert(id.to_string(), claim.gossip);
                        newest_at(claim.gossip, true).unwrap_or(index)
                    }
                    // All dead: the member as last seen where it is bound,
                    // or its newest state anywhere.
                    None => bound
                        .and_then(|addr| newest_at(addr, false))
                        .or_else(|| {
                            claims
                                .iter()
                                .enumerate()
                                .max_by_key(|(_, c)| c.generation)
                                .map(|(i, _)| i)
                        })
                        .unwrap_or(0),
                }
            }
        };
        let kept = claims[chosen].gossip;
        let mut refused: Vec<SocketAddr> = claims
            .iter()
            .filter(|c| c.alive && c.gossip != kept)
            .map(|c| c.gossip)
            .collect();
        refused.sort();
        refused.dedup();
        let conflict = (!refused.is_empty()).then(|| Conflict {
            id: id.to_string(),
            kept,
            refused,
        });
        (chosen, conflict)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, i], 7946))
    }

    fn claim(generation: u64, at: u8, alive: bool) -> Claim {
        Claim {
            generation,
            gossip: addr(at),
            alive,
        }
    }

    #[test]
    fn a_later_process_at_another_address_never_takes_a_live_id_over() {
        let mut bindings = Bindings::default();
        let real = claim(100, 2, true);
        assert_eq!(bindings.choose("n2", &[real]).0, 0);
        let impostor = claim(200, 9, true);
        let (chosen, conflict) = bindings.choose("n2", &[real, impostor]);
        assert_eq!(chosen, 0);
        assert_eq!(
            conflict,
            Some(Conflict {
                id: "n2".into(),
                kept: addr(2),
                refused: vec![addr(9)]
            })
        );
        // The impostor stops: the real node is still the member, alive.
        let (chosen, conflict) = bindings.choose("n2", &[real, claim(200, 9, false)]);
        assert_eq!(chosen, 0);
        assert_eq!(conflict, None);
        // A restart of the real node at its address is the same member,
        // even while an impostor lives.
        let (chosen, _) =
            bindings.choose("n2", &[claim(100, 2, false), impostor, claim(300, 2, true)]);
        assert_eq!(chosen, 2);
    }

    #[test]
    fn a_node_that_moved_is_rebound_once_its_old_address_is_dead() {
        let mut bindings = Bindings::default();
        bindings.choose("n2", &[claim(100, 2, true)]);
        let (chosen, conflict) = bindings.choose("n2", &[claim(100, 2, true), claim(200, 3, true)]);
        assert_eq!((chosen, conflict.is_some()), (0, true));
        let (chosen, conflict) =
            bindings.choose("n2", &[claim(100, 2, false), claim(200, 3, true)]);
        assert_eq!((chosen, conflict), (1, None));
        // Bound to the new address now: the old one coming back is refused.
        let (chosen, conflict) = bindings.choose("n2", &[claim(150, 2, true), claim(200, 3, true)]);
        assert_eq!(
            (chosen, conflict.map(|c| c.refused)),
            (1, Some(vec![addr(2)]))
        );
    }

    #[test]
    fn this_nodes_own_id_is_bound_to_its_own_address() {
        let mut bindings = Bindings::new("me", addr(1));
        let (chosen, conflict) = bindings.choose("me", &[claim(50, 7, true), claim(90, 1, true)]);
        assert_eq!(chosen, 1);
        assert_eq!(conflict.map(|c| c.refused), Some(vec![addr(7)]));
    }

    proptest! {
        /// Whatever the claims: a live claim is chosen whenever one exists,
        /// and the chosen one is at the bound address whenever a live claim
        /// there exists; every live claim elsewhere is reported.
        #[test]
        fn choices_keep_the_bound_live_member(
            rounds in proptest::collection::vec(
                proptest::collection::vec((0u64..6, 1u8..4, any::<bool>()), 1..6),
                1..8,
            )
        ) {
            let mut bindings = Bindings::default();
            let mut bound: Option<SocketAddr> = None;
            for round in rounds {
                let claims: Vec<Claim> = round.iter().map(|&(g, a, alive)| claim(g, a, alive)).collect();
                let (chosen, conflict) = bindings.choose("n", &claims);
                let picked = claims[chosen];
                if claims.iter().any(|c| c.alive) {
                    prop_assert!(picked.alive);
                    if let Some(at) = bound.filter(|at| claims.iter().any(|c| c.alive && c.gossip == *at)) {
                        prop_assert_eq!(picked.gossip, at);
                    }
                    bound = Some(picked.gossip);
                    let newest_here = claims.iter().filter(|c| c.alive && c.gossip == picked.gossip).map(|c| c.generation).max();
                    prop_assert_eq!(Some(picked.generation), newest_here);
                }
                let elsewhere: Vec<SocketAddr> = {
                    let mut v: Vec<_> = claims.iter().filter(|c| c.alive && c.gossip != picked.gossip).map(|c| c.gossip).collect();
                    v.sort();
                    v.dedup();
                    v
                };
                prop_assert_eq!(conflict.map(|c| c.refused).unwrap_or_default(), elsewhere);
            }
        }
    }
}
