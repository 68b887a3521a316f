//! Clean-up after transitions: a node drops its records of the partitions
//! it no longer owns.
//!
//! When a partition moves, its former owner keeps its copy until the new
//! owners hold it. Kept for ever, such a copy would miss every later delete
//! and tombstone purge, and would bring deleted keys back the day the
//! partition moved back (Cassandra leaves this to `nodetool cleanup`, which
//! operators forget). A node drops the copies itself once no transition is
//! running and no live peer knows a newer ring state: the transition that
//! took the partitions away is then complete, so their new owners hold them.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::{
    cluster::membership::View,
    replica::{LocalReplica, ReplicaError},
    ring::{partition_of, RingState},
    storage::{Modify, Storage},
};

/// Keys deleted per write batch.
const BATCH: usize = 1_000;

/// The partitions whose records this node may drop now: those it owns in
/// no layout of `state`. Empty while a transition runs (until every member
/// has adopted its end) or while a live peer reports a newer ring state,
/// which may give partitions back.
pub fn droppable(state: &RingState, view: &View, me: &str) -> BTreeSet<u32> {
    let settled = !state.in_transition()
        && view
            .alive()
            .all(|peer| peer.layout_version <= state.version);
    if !settled || !state.involves(me) {
        return BTreeSet::new();
    }
    let owned: BTreeSet<u32> = state.current.partitions_of(me).into_iter().collect();
    (0..state.current.partitions())
        .filter(|p| !owned.contains(p))
        .collect()
}

/// Deletes every local record of `partitions`; returns how many.
pub fn drop_partitions(
    local: &LocalReplica,
    partitions: &BTreeSet<u32>,
    partition_count: u32,
) -> Result<u64, ReplicaError> {
    if partitions.is_empty() {
        return Ok(0);
    }
    let storage = local.storage();
    let mut doomed: Vec<Bytes> = Vec::new();
    storage.for_each_after(b"", |key, _| {
        if partitions.contains(&partition_of(key, partition_count)) {
            doomed.push(Bytes::copy_from_slice(key));
        }
        true
    })?;
    let dropped = doomed.len() as u64;
    for chunk in doomed.chunks(BATCH) {
        storage.write(
            chunk
                .iter()
                .map(|key| Modify::Delete { key: key.clone() })
                .collect(),
        )?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use super::*;
    use crate::{
        cluster::membership::Peer,
        ring::layout::{Layout, Member},
    };

    fn layout(ids: &[&str]) -> Layout {
        Layout::initial(16, 2, ids.iter().map(|id| Member::new(*id)).collect()).expect("layout")
    }

    fn view(versions: &[(&str, u64, bool)]) -> View {
        let peers: BTreeMap<String, Peer> = versions
            .iter()
            .map(|(id, version, alive)| (id.to_string(), Peer::for_test(id, *alive, *version)))
            .collect();
        View { peers }
    }

    #[test]
    fn only_a_settled_ring_lets_a_node_drop_what_it_no_longer_owns() {
        let before = layout(&["a", "b"]);
        let after = before.with_member_added(Member::new("c")).expect("c joins");
        let owned_by_a = after.partitions_of("a").len();
        let moving = RingState {
            version: 2,
            current: Arc::new(before.clone()),
            next: Some(Arc::new(after.clone())),
            previous: None,
            floor: 0,
        };
        let closing = RingState {
            version: 3,
            current: Arc::new(after.clone()),
            next: None,
            previous: Some(Arc::new(before)),
            floor: 0,
        };
        let settled = RingState::settled(4, Arc::new(after));
        let everyone_at = |v| view(&[("a", v, true), ("b", v, true), ("c", v, true)]);

        // A transition is running: nothing is dropped, whatever moves.
        assert!(droppable(&moving, &everyone_at(2), "a").is_empty());
        // Promoted, but members may still read from the former owners.
        assert!(droppable(&closing, &everyone_at(3), "a").is_empty());
        // Settled, but a live peer knows a newer state: nothing either.
        assert!(droppable(&settled, &everyone_at(5), "a").is_empty());
        // A dead peer's newer state does not hold the clean-up back.
        let dead_newer = view(&[("a", 4, true), ("b", 4, true), ("c", 9, false)]);
        assert_eq!(droppable(&settled, &dead_newer, "a").len(), 16 - owned_by_a);
        // Settled: exactly the partitions `a` does not own.
        let dropped = droppable(&settled, &everyone_at(4), "a");
        assert_eq!(dropped.len(), 16 - owned_by_a);
        assert!(settled
            .current
            .partitions_of("a")
            .iter()
            .all(|p| !dropped.contains(p)));
        // A node in no layout (it left) drops nothing here.
        assert!(droppable(&settled, &everyone_at(4), "z").is_empty());
    }
}
