//! A node that lost its data refills its partitions before it counts
//! toward any read.
//!
//! A data dir that never held a replica (marked by [`LocalReplica`] at its
//! first start, see [`META_REFILLING`]) may belong to a node that was a member
//! before and lost its disk. Restarted under its old id, it is an owner at
//! once; if its empty answers counted toward R, a read could hear "no such
//! key" from it and from one replica that missed the write, and report an
//! acknowledged write as absent. So such a node marks itself refilling,
//! persistently, and:
//!
//! - still takes every write, so nothing new is missed;
//! - flags its answers to `Replica.Read` and `Replica.ScanLocal` for the
//!   partitions not yet refilled, and coordinators count flagged answers
//!   toward no read quorum (they may still merge them);
//! - streams each owned partition from every other owner with
//!   `Replica.StreamPartitions`, as a joining node does. A write acknowledged
//!   by W replicas may be missing on any one of them, so one source is not
//!   enough; a partition is refilled once every other owner has streamed it.
//!
//! A brand-new node passes through the same steps: its peers are empty too,
//! so its refill ends as soon as it has reached them. A node outside the
//! layout owns nothing to refill; what it receives later comes through a
//! ring transition, which has its own completeness rule.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use ringkv_proto::v1::StreamPartitionsRequest;
use tokio::sync::watch;

use crate::{
    cluster::membership::Membership,
    cluster::peers::PeerClients,
    replica::{blocking, LocalReplica, ReplicaError, META_REFILLING},
    ring::{partition_of, Ring},
    storage::RocksStorage,
};

/// How long the refill waits between attempts while a source is missing.
const RETRY: Duration = Duration::from_millis(250);

/// Why one refill attempt from one peer failed; the next attempt retries.
#[derive(Debug, thiserror::Error)]
pub enum RefillError {
    #[error("streaming from {peer}: {status}")]
    Stream { peer: String, status: tonic::Status },
    #[error("storing what {peer} sent: {error}")]
    Store {
        peer: String,
        error: crate::replica::ReplicaError,
    },
}

/// Which partitions this node may count toward reads.
pub struct Refill {
    partition_count: u32,
    /// Cleared, for good, once every owned partition is refilled.
    active: AtomicBool,
    refilled: Mutex<BTreeSet<u32>>,
    finished: watch::Sender<bool>,
}

impl Refill {
    /// The refill state of a data dir: active from its first start until
    /// the refill ends, across crashes.
    pub fn load(storage: &RocksStorage, partition_count: u32) -> Result<Self, ReplicaError> {
        let active = storage.meta_get(META_REFILLING)?.is_some();
        if active {
            tracing::warn!(
                "this data dir holds no replica data yet: no read counts on this node until it has refilled its partitions from their other owners"
            );
        }
        Ok(Self::new(active, partition_count))
    }

    /// A refill state not kept on disk: `active` for a node that must refill.
    pub fn new(active: bool, partition_count: u32) -> Self {
        Self {
            partition_count,
            active: AtomicBool::new(active),
            refilled: Mutex::new(BTreeSet::new()),
            finished: watch::Sender::new(!active),
        }
    }

    /// Whether this node's record of `key` may count toward a read quorum.
    pub fn serves_key(&self, key: &[u8]) -> bool {
        !self.active.load(Ordering::Acquire) || self.serves(partition_of(key, self.partition_count))
    }

    /// Whether this node's records of `partition` may count toward reads.
    pub fn serves(&self, partition: u32) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return true;
        }
        self.refilled
            .lock()
            .map(|refilled| refilled.contains(&partition))
            .unwrap_or(false)
    }

    /// The partitions whose records count toward no read yet.
    pub fn unserved(&self) -> Vec<u32> {
        if !self.active.load(Ordering::Acquire) {
            return Vec::new();
        }
        (0..self.partition_count)
            .filter(|p| !self.serves(*p))
            .collect()
    }

    /// True once nothing is left to refill.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.finished.subscribe()
    }

    /// Notes that every other owner has streamed `partition` here.
    pub fn mark_refilled(&self, partition: u32) {
        if let Ok(mut refilled) = self.refilled.lock() {
            refilled.insert(partition);
        }
    }

    /// Ends the refill for good, once every owned partition is refilled.
    pub fn finish(&self, storage: &RocksStorage) -> Result<(), ReplicaError> {
        storage.meta_delete(META_REFILLING)?;
        self.active.store(false, Ordering::Release);
        self.finished.send_replace(true);
        Ok(())
    }
}

/// Refills every partition this node owns, then returns.
pub async fn run(
    refill: Arc<Refill>,
    ring: Arc<Ring>,
    membership: Arc<Membership>,
    local: Arc<LocalReplica>,
    peers: Arc<PeerClients>,
) {
    if *refill.watch().borrow() {
        return;
    }
    let me = membership.self_id().to_string();
    // Which other owners have streamed which partitions here.
    let mut streamed: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let mut announced = None;
    loop {
        let Some(state) = ring.state() else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let layout = state.current.clone();
        let mut sources: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut pending = 0u32;
        for p in layout.partitions_of(&me) {
            if refill.serves(p) {
                continue;
            }
            let Ok(owners) = layout.preference_list(p) else {
                pending += 1;
                continue;
            };
            let missing: Vec<&str> = owners
                .into_iter()
                .filter(|id| *id != me && !streamed.get(&p).is_some_and(|s| s.contains(*id)))
                .collect();
            if missing.is_empty() {
                refill.mark_refilled(p);
                continue;
            }
            pending += 1;
            for id in missing {
                sources.entry(id.to_string()).or_default().push(p);
            }
        }
        if announced != Some(pending) {
            membership.set_refilling(pending).await;
            announced = Some(pending);
        }
        // Partitions coming through a transition are received by
        // partition streaming (`sync::streaming`); the refill ends only once
        // they are this node's own.
        let receiving = state
            .next
            .as_ref()
            .is_some_and(|next| !next.partitions_of(&me).is_empty());
        if pending == 0 && receiving {
            tokio::time::sleep(RETRY).await;
            continue;
        }
        if pending == 0 {
            let (refill, local) = (refill.clone(), local.clone());
            match blocking(move || refill.finish(local.storage())).await {
                Ok(()) => {
                    tracing::info!("refill complete: this node counts toward reads again");
                    return;
                }
                Err(status) => tracing::warn!(%status, "could not record the end of the refill"),
            }
            tokio::time::sleep(RETRY).await;
            continue;
        }
        let view = membership.view();
        for (peer, partitions) in sources {
            let Some(addr) = view.live_address(&peer) else {
                continue;
            };
            match stream_from(
                &peer,
                &addr,
                &partitions,
                &local,
                &peers,
                layout.partitions(),
            )
            .await
            {
                Ok(keys) => {
                    tracing::info!(%peer, partitions = partitions.len(), keys, "refilled from a co-owner");
                    for p in partitions {
                        streamed.entry(p).or_default().insert(peer.clone());
                    }
                }
                Err(error) => tracing::debug!(%error, "refill attempt failed; retrying"),
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Streams `partitions` from `peer` and merges every record here. Returns
/// the number of records merged.
async fn stream_from(
    peer: &str,
    addr: &str,
    partitions: &[u32],
    local: &Arc<LocalReplica>,
    peers: &PeerClients,
    partition_count: u32,
) -> Result<u64, RefillError> {
    let failed = |status: tonic::Status| RefillError::Stream {
        peer: peer.to_string(),
        status,
    };
    let mut client = peers.replica(addr).map_err(failed)?;
    let mut stream = client
        .stream_partitions(StreamPartitionsRequest {
            partitions: partitions.to_vec(),
            start_after: Bytes::new(),
            // A refilling node lost its data: it needs every record.
            digests: false,
        })
        .await
        .map_err(failed)?
        .into_inner();
    let wanted: BTreeSet<u32> = partitions.iter().copied().collect();
    let mut merged = 0u64;
    while let Some(batch) = stream.message().await.map_err(failed)? {
        let records: Vec<_> = batch
            .records
            .into_iter()
            .filter(|r| wanted.contains(&partition_of(&r.key, partition_count)))
            .collect();
        merged += records.len() as u64;
        let local = local.clone();
        blocking(move || {
            records
                .iter()
                .try_for_each(|r| local.apply_encoded(&r.key, &r.record))
        })
        .await
        .map_err(|error| RefillError::Store {
            peer: peer.to_string(),
            error,
        })?;
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inactive_refill_serves_everything() {
        let refill = Refill::new(false, 16);
        assert!((0..16).all(|p| refill.serves(p)));
        assert!(refill.unserved().is_empty());
        assert!(*refill.watch().borrow());
    }

    #[test]
    fn an_unfinished_refill_survives_a_restart_and_a_finished_one_stays_finished() {
        use crate::storage::RocksStorageOptions;
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || RocksStorage::open(dir.path(), "n1", &RocksStorageOptions::default());
        {
            let storage = Arc::new(open().expect("opens"));
            let replica = LocalReplica::open(
                storage.clone(),
                "n1",
                crate::versions::ConflictMode::Siblings,
            )
            .expect("a replica marks its empty data dir");
            drop(replica);
            let refill = Refill::load(&storage, 16).expect("loads");
            assert!(!refill.serves(0), "an empty data dir refills");
        }
        {
            // Crashed before the end: the data dir is no longer empty, but
            // the refill goes on.
            let storage = Arc::new(open().expect("opens"));
            let _replica = LocalReplica::open(
                storage.clone(),
                "n1",
                crate::versions::ConflictMode::Siblings,
            )
            .expect("opens again");
            let refill = Refill::load(&storage, 16).expect("loads");
            assert!(!refill.serves(0));
            refill.finish(&storage).expect("finishes");
            assert!(refill.serves(0) && *refill.watch().borrow());
        }
        let storage = open().expect("opens");
        let refill = Refill::load(&storage, 16).expect("loads");
        assert!(refill.serves(0), "a finished refill is not redone");
    }

    #[test]
    fn an_active_refill_serves_only_refilled_partitions() {
        let refill = Refill::new(true, 16);
        assert!(!refill.serves(3));
        refill.mark_refilled(3);
        assert!(refill.serves(3));
        assert_eq!(refill.unserved().len(), 15);
        assert!(!*refill.watch().borrow());
    }
}
