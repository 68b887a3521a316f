//! The replica side of a write during a ring transition: a node that
//! receives a record keeps it, relays it to the nodes that must hold it
//! too, or refuses it, as [`Place`](super::place::Place) decides.
//!
//! A coordinator whose ring view is older than a transition counts the
//! acknowledgement of a node that is handing the partition off, or that
//! owns it no longer; relaying makes that acknowledgement true for the
//! nodes that own the partition next (Riak forwards writes after a handoff
//! for the same reason).

use bytes::Bytes;

use super::{
    place::{Owed, Receipt},
    route, Coordinator, CoordinatorError, Route,
};
use crate::{
    cluster::{deadline::Deadline, rpc::Delivery},
    replica::blocking,
    ring::RingState,
};

/// The longest chain of nodes relaying one replica write. Two hops are
/// needed when ring views agree: a node outside the partition relays the
/// write to an owner that is handing the partition off, which relays it to
/// the receiver. A longer chain means views disagree; without a limit two
/// such nodes could pass a write back and forth until it timed out.
pub(crate) const MAX_FORWARD_HOPS: u32 = 2;

/// What a replica write says about the nodes that relayed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Relay {
    /// How many nodes relayed it before this one.
    pub hops: u32,
    /// The ring state version of the node that relayed it; 0 when unknown.
    pub ring_version: u64,
    /// When the node that relayed it stops waiting: a node relaying it
    /// again answers before then.
    pub deadline: Option<Deadline>,
}

impl Relay {
    /// The relay of a write this node passes on: one more hop, the same
    /// deadline.
    fn onward(self) -> Self {
        Self {
            hops: self.hops + 1,
            ..self
        }
    }
}

/// One encoded record on its way to the nodes of its partition.
#[derive(Clone, Copy)]
pub(super) struct Relayed<'a> {
    pub partition: u32,
    pub key: &'a Bytes,
    pub encoded: &'a Bytes,
}

impl Coordinator {
    /// A record sent to this node as a replica (or as a hint for another).
    ///
    /// A node that is handing the key's partition off acknowledges only once
    /// the partition's receivers hold the record too: a coordinator whose
    /// ring view is older than the transition counts this node's
    /// acknowledgement, and the stream may already have passed the key. A
    /// node that replicates the partition in neither layout keeps no copy,
    /// which the coordinator would count but nobody would read: it relays
    /// the record to the partition's live owners instead (a stale
    /// coordinator or a hint for a node that gave the partition up).
    ///
    /// `relay.hops` counts the nodes that relayed this record before; past
    /// [`MAX_FORWARD_HOPS`] it is refused rather than relayed again. A
    /// record relayed by a node with a newer ring state is kept even by a
    /// node that replicates the partition in neither of its own layouts: in
    /// the sender's newer state it does (typically a receiver that has not
    /// adopted the transition yet), and relaying the record back would only
    /// bounce it between the two.
    pub async fn accept(
        &self,
        key: Bytes,
        encoded: Bytes,
        hint_for: Option<String>,
        relay: Relay,
    ) -> Result<(), CoordinatorError> {
        let hops = relay.hops;
        let local = self.inner.local.clone();
        let Some(state) = self.inner.ring.state().filter(|_| hint_for.is_none()) else {
            return Ok(blocking(move || local.receive(&key, &encoded, hint_for.as_deref())).await?);
        };
        let roles = route::roles(&state, &key, self.me())?;
        match roles.place.receipt(hops, relay.ring_version, state.version) {
            Receipt::Refuse => Err(CoordinatorError::TooManyHops {
                node: self.me().to_owned(),
                partition: roles.partition,
                hops,
                max: MAX_FORWARD_HOPS,
                version: state.version,
            }),
            Receipt::PassToOwners => {
                let item = Relayed {
                    partition: roles.partition,
                    key: &key,
                    encoded: &encoded,
                };
                self.relay_to_owners(state.version, &roles.now, item, relay.onward())
                    .await
            }
            Receipt::Keep => {
                self.inner
                    .writes
                    .merge(vec![(key.clone(), encoded.clone())])
                    .await?;
                self.pass_on_after_receive(&key, &encoded, relay).await
            }
        }
    }

    /// What this node must do, once it holds a record it received, before
    /// it acknowledges it: an owner handing the partition off relays it to
    /// the receivers, and a former owner written to by a sender that has
    /// not adopted the promotion relays it to the new owners.
    ///
    /// The ring state is read *after* the local write: a transition may
    /// have started meanwhile, and a receiver's stream of this node's data
    /// may already be past the key.
    pub(super) async fn pass_on_after_receive(
        &self,
        key: &Bytes,
        encoded: &Bytes,
        relay: Relay,
    ) -> Result<(), CoordinatorError> {
        let Some(state) = self.inner.ring.state() else {
            return Ok(());
        };
        let roles = route::roles(&state, key, self.me())?;
        let item = Relayed {
            partition: roles.partition,
            key,
            encoded,
        };
        match roles.place.owes(relay.ring_version, state.version) {
            Owed::Nothing => Ok(()),
            Owed::Receivers => self.relay_to_receivers(&state, item, relay.onward()).await,
            Owed::GainedOwners => {
                let gained: Vec<String> = state
                    .gained_owners(roles.partition)
                    .into_iter()
                    .filter(|id| id != self.me())
                    .collect();
                let route = self.route(state.version);
                self.relay_to(&route, &gained, "new owner", item, relay.onward())
                    .await
            }
        }
    }

    /// Whether `node` is in no layout of this node's ring state: it left the
    /// ring (or never joined), so a hint kept for it will never be delivered.
    pub fn has_departed(&self, node: &str) -> bool {
        self.inner
            .ring
            .state()
            .is_some_and(|state| !state.involves(node))
    }

    /// Delivers a hint kept for a node that has left the ring to the key's
    /// owners now, in every layout of the ring state: the write was
    /// acknowledged, and its intended replica no longer exists. Fails unless
    /// one owner at least is alive and all the live ones took it.
    pub async fn deliver_to_owners(
        &self,
        key: &Bytes,
        encoded: &Bytes,
    ) -> Result<(), CoordinatorError> {
        let state = self.state()?;
        let (partition, mut owners) = route::owners(&state.current, key)?;
        owners.extend(state.receivers(partition));
        // Right after a promotion, members still read the former owners.
        for former in state.previous_owners(partition) {
            if !owners.contains(&former) {
                owners.push(former);
            }
        }
        let item = Relayed {
            partition,
            key,
            encoded,
        };
        self.relay_to_owners(state.version, &owners, item, Relay::default())
            .await
    }

    /// Relays a record to every live owner of its partition; fails unless
    /// one at least is alive and all the live ones took it.
    async fn relay_to_owners(
        &self,
        version: u64,
        owners: &[String],
        item: Relayed<'_>,
        relay: Relay,
    ) -> Result<(), CoordinatorError> {
        let route = self.route(version);
        let live: Vec<String> = owners
            .iter()
            .filter(|o| route.is_alive(o))
            .cloned()
            .collect();
        if live.is_empty() {
            return Err(CoordinatorError::NoLiveOwner {
                node: self.me().to_owned(),
                partition: item.partition,
            });
        }
        self.relay_to(&route, &live, "owner", item, relay).await
    }

    /// Relays a record to every node receiving its partition; fails unless
    /// all of them took it.
    pub(super) async fn relay_to_receivers(
        &self,
        state: &RingState,
        item: Relayed<'_>,
        relay: Relay,
    ) -> Result<(), CoordinatorError> {
        let route = self.route(state.version);
        let receivers: Vec<String> = state
            .receivers(item.partition)
            .into_iter()
            .filter(|r| r != self.me())
            .collect();
        self.relay_to(&route, &receivers, "receiver", item, relay)
            .await
    }

    /// Relays a record to each of `targets` in turn, as the chain's
    /// `relay.hops`-th node and within its deadline; fails on the first that
    /// does not take it.
    async fn relay_to(
        &self,
        route: &Route,
        targets: &[String],
        role: &'static str,
        item: Relayed<'_>,
        relay: Relay,
    ) -> Result<(), CoordinatorError> {
        for target in targets {
            let call = route.call(target, self.timeout(relay.deadline));
            let delivery = Delivery::Relayed { hops: relay.hops };
            self.inner
                .rpc
                .apply(call, item.key, item.encoded, delivery)
                .await
                .map_err(|answer| CoordinatorError::RelayFailed {
                    partition: item.partition,
                    role,
                    target: target.clone(),
                    answer,
                })?;
        }
        Ok(())
    }
}
