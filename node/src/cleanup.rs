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
    membership::View,
    replica::{LocalReplica, ReplicaError},
    ring::{partition_of, RingState},
    storage::{Modify, Storage},
};

/// Keys deleted per write batch.
const BATCH: usize = 1_000;

/// The partitions whose records this node may drop now: those it owns in
/// no layout of `state`. Empty while a transition runs or while a live
/// peer reports a newer ring state, which may give partitions back.
pub fn droppable(state: &RingState, view: &View, me: &str) -> BTreeSet<u32> {
    let settled = state.next.is_none()
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
