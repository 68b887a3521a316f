//! Anti-entropy: replicas compare per-partition hash trees and repair what
//! differs, key by key; and the bookkeeping that lets tombstones be purged.
//!
//! A partition's tree has [`BUCKETS`] leaves; a key falls in a leaf by its
//! hash, and a leaf is the XOR of the hashes of its (key, record) pairs, so
//! a tree does not depend on the order keys were written in (a TicTac tree,
//! as in Riak). Every interval a node rebuilds the trees of the partitions
//! it owns in one rate-limited scan, asks each co-replica for its trees, and
//! for differing leaves exchanges (key, hash) digests, then pulls and pushes
//! the records that differ. Only digests and differing records cross the
//! network, never whole partitions.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram,
};
use tonic::Status;

use crate::{
    cluster::{
        membership::Membership,
        rpc::{Delivery, PeerCall, PeerRpc},
    },
    replica::{LocalReplica, ReplicaError},
    ring::{partition_of, Ring},
    storage::now_millis,
    sync::{gc, throttle::Throttle},
    versions::Siblings,
};

/// Leaves per partition tree.
pub const BUCKETS: usize = 64;

/// A partition's leaves.
pub type Tree = [u64; BUCKETS];

fn bucket_of(key: &[u8]) -> usize {
    (xxhash_rust::xxh3::xxh3_64_with_seed(key, 0x5eed) as usize) % BUCKETS
}

/// The hash of one (key, record) pair: what trees and digests are made of.
pub(crate) fn pair_hash(key: &[u8], record: &[u8]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(record);
    hasher.digest()
}

/// What one scan of local data finds out about some partitions.
#[derive(Clone, Debug, Default)]
pub struct TreeScan {
    pub trees: BTreeMap<u32, Tree>,
    /// Records (tombstones included) in each partition: what a stream of it
    /// sends, for the receiver's estimate of what is left.
    pub keys: BTreeMap<u32, u64>,
}

/// Builds the trees of `partitions` in one scan of local data.
pub fn build_trees(
    local: &LocalReplica,
    partitions: &BTreeSet<u32>,
    partition_count: u32,
    bytes_per_sec: u64,
) -> Result<TreeScan, ReplicaError> {
    let mut scan = TreeScan {
        trees: partitions.iter().map(|p| (*p, [0; BUCKETS])).collect(),
        keys: partitions.iter().map(|p| (*p, 0)).collect(),
    };
    let mut throttle = Throttle::new(bytes_per_sec);
    local.storage().for_each_after(b"", |key, record| {
        let p = partition_of(key, partition_count);
        if let Some(tree) = scan.trees.get_mut(&p) {
            tree[bucket_of(key)] ^= pair_hash(key, record);
            *scan.keys.entry(p).or_default() += 1;
        }
        throttle.account(key.len() + record.len());
        true
    })?;
    Ok(scan)
}

/// (key, hash) of every key in the given leaves.
pub fn bucket_digests(
    local: &LocalReplica,
    leaves: &BTreeSet<(u32, u32)>,
    partition_count: u32,
    bytes_per_sec: u64,
) -> Result<Vec<(Bytes, u64)>, ReplicaError> {
    let mut out = Vec::new();
    let mut throttle = Throttle::new(bytes_per_sec);
    local.storage().for_each_after(b"", |key, record| {
        let leaf = (partition_of(key, partition_count), bucket_of(key) as u32);
        if leaves.contains(&leaf) {
            out.push((Bytes::copy_from_slice(key), pair_hash(key, record)));
        }
        throttle.account(key.len() + record.len());
        true
    })?;
    Ok(out)
}

/// The latest trees this node built, served to peers.
#[derive(Default)]
pub struct TreeCache {
    scan: Mutex<TreeScan>,
}

impl TreeCache {
    pub fn get(&self, partitions: &[u32]) -> Vec<(u32, Tree)> {
        let Ok(scan) = self.scan.lock() else {
            return Vec::new();
        };
        partitions
            .iter()
            .filter_map(|p| scan.trees.get(p).map(|t| (*p, *t)))
            .collect()
    }

    /// The records counted in each of `partitions` by the last scan, for
    /// those it covered.
    pub fn keys(&self, partitions: &[u32]) -> BTreeMap<u32, u64> {
        let Ok(scan) = self.scan.lock() else {
            return BTreeMap::new();
        };
        partitions
            .iter()
            .filter_map(|p| scan.keys.get(p).map(|k| (*p, *k)))
            .collect()
    }

    fn replace(&self, scan: TreeScan) {
        if let Ok(mut guard) = self.scan.lock() {
            *guard = scan;
        }
    }
}

/// When each partition was last seen equal on every replica: tombstones
/// older than that exist everywhere and may be purged after the grace period.
pub struct Agreement {
    agreed_at_ms: Vec<AtomicU64>,
}

impl Agreement {
    pub fn new(partitions: u32) -> Self {
        Self {
            agreed_at_ms: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn agreed_at_ms(&self, partition: u32) -> u64 {
        self.agreed_at_ms
            .get(partition as usize)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    /// Notes that every replica of `partition` agreed at `at_ms`.
    pub fn record(&self, partition: u32, at_ms: u64) {
        if let Some(a) = self.agreed_at_ms.get(partition as usize) {
            a.fetch_max(at_ms, Ordering::AcqRel);
        }
    }
}

/// Whether a stored record may be dropped by compaction: a tombstone older
/// than the grace period and older than the last time every replica of its
/// partition was seen to agree. The rule that keeps deleted keys from coming
/// back: a tombstone is only purged once no replica can still hold the value
/// it deleted.
pub fn purgeable(
    key: &[u8],
    record: &[u8],
    partition_count: u32,
    grace_ms: u64,
    agreement: &Agreement,
    now_ms: u64,
) -> bool {
    let Ok(record) = Siblings::decode(record) else {
        return false;
    };
    let Some(deleted_ms) = record.deleted_since(now_ms) else {
        return false;
    };
    let agreed = agreement.agreed_at_ms(partition_of(key, partition_count));
    deleted_ms.saturating_add(grace_ms) < now_ms && deleted_ms < agreed
}

/// Anti-entropy metrics.
#[derive(Debug, Clone)]
pub struct RepairMetrics {
    pub keys_repaired: Counter,
    pub tree_build_seconds: Histogram,
    pub last_exchange: Family<PartitionLabel, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: u32,
}

impl Default for RepairMetrics {
    fn default() -> Self {
        Self {
            keys_repaired: Counter::default(),
            tree_build_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16),
            ),
            last_exchange: Family::default(),
        }
    }
}

/// Keys repaired at once with one peer.
const REPAIR_CONCURRENCY: usize = 32;

/// Settings of anti-entropy.
#[derive(Debug, Clone)]
pub struct RepairConfig {
    pub interval: Duration,
    pub bytes_per_sec: u64,
    pub timeout: Duration,
}

/// Why an anti-entropy round or exchange stopped short. A round retries at
/// the next interval, so these are logged, never fatal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RepairError {
    #[error("local replica: {0}")]
    Local(#[from] ReplicaError),
    #[error("local replica task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Layout(#[from] crate::ring::LayoutError),
    #[error("peer {peer}: {status}")]
    Peer { peer: String, status: Status },
}

/// Compares this node's partitions with their co-replicas every interval,
/// and repairs what differs.
pub(crate) struct AntiEntropy {
    pub ring: Arc<Ring>,
    pub membership: Arc<Membership>,
    pub local: Arc<LocalReplica>,
    pub rpc: Arc<PeerRpc>,
    pub cache: Arc<TreeCache>,
    pub agreement: Arc<Agreement>,
    pub config: RepairConfig,
    pub metrics: RepairMetrics,
}

impl AntiEntropy {
    /// Runs anti-entropy rounds until the process stops.
    pub async fn run(self) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(error) = self.round().await {
                tracing::debug!(%error, "anti-entropy round incomplete");
            }
        }
    }

    async fn round(&self) -> Result<(), RepairError> {
        let Some(state) = self.ring.state() else {
            return Ok(());
        };
        let me = self.membership.self_id().to_string();
        let current = state.current.clone();
        let droppable = gc::droppable(&state, &self.membership.view(), &me);
        if !droppable.is_empty() {
            let (local, count) = (self.local.clone(), current.partitions());
            let dropped =
                blocking_local(move || gc::drop_partitions(&local, &droppable, count)).await?;
            if dropped > 0 {
                tracing::info!(
                    dropped,
                    "dropped the records of partitions this node no longer owns"
                );
            }
        }
        let owned: BTreeSet<u32> = current.partitions_of(&me).into_iter().collect();
        if owned.is_empty() {
            return Ok(());
        }
        let partition_count = current.partitions();
        let started_ms = now_millis();
        let started = Instant::now();
        let scan = {
            let (local, owned, rate) =
                (self.local.clone(), owned.clone(), self.config.bytes_per_sec);
            blocking_local(move || build_trees(&local, &owned, partition_count, rate)).await?
        };
        let (trees, keys) = (scan.trees, scan.keys);
        self.metrics
            .tree_build_seconds
            .observe(started.elapsed().as_secs_f64());
        self.cache.replace(TreeScan {
            trees: trees.clone(),
            keys,
        });

        // Which co-replicas share which of my partitions.
        let mut shared: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for p in &owned {
            for id in current.preference_list(*p)? {
                if id != me {
                    shared.entry(id.to_string()).or_default().push(*p);
                }
            }
        }
        let view = self.membership.view();
        let mut disagreed: BTreeSet<u32> = BTreeSet::new();
        let mut unreached: BTreeSet<u32> = BTreeSet::new();
        for (peer, partitions) in shared {
            if !view.is_alive(&peer) {
                unreached.extend(partitions);
                continue;
            }
            let call = PeerCall::unversioned(&peer, &view, self.config.timeout);
            match self
                .exchange(call, &partitions, &trees, partition_count)
                .await
            {
                Ok(differing) => disagreed.extend(differing),
                Err(error) => {
                    tracing::debug!(%peer, %error, "tree exchange failed");
                    unreached.extend(partitions);
                }
            }
        }
        let now = now_millis();
        for p in &owned {
            self.metrics
                .last_exchange
                .get_or_create(&PartitionLabel { partition: *p })
                .set((now / 1000) as i64);
            if !disagreed.contains(p) && !unreached.contains(p) {
                self.agreement.record(*p, started_ms);
            }
        }
        Ok(())
    }

    /// Compares trees with one peer and repairs differing keys both ways.
    /// Returns the partitions that differed.
    async fn exchange(
        &self,
        call: PeerCall<'_>,
        partitions: &[u32],
        mine: &BTreeMap<u32, Tree>,
        partition_count: u32,
    ) -> Result<BTreeSet<u32>, RepairError> {
        let peer_failed = |status: Status| RepairError::Peer {
            peer: call.node.to_string(),
            status,
        };
        let theirs = self
            .rpc
            .partition_trees(call, partitions)
            .await
            .map_err(peer_failed)?;
        let mut leaves: BTreeSet<(u32, u32)> = BTreeSet::new();
        let mut differing = BTreeSet::new();
        for p in partitions {
            let (Some(my_tree), Some(their_tree)) = (mine.get(p), theirs.get(p)) else {
                // A peer that has not built its trees yet proves nothing.
                differing.insert(*p);
                continue;
            };
            for (b, (a, z)) in my_tree.iter().zip(their_tree).enumerate() {
                if a != z {
                    leaves.insert((*p, b as u32));
                    differing.insert(*p);
                }
            }
        }
        if leaves.is_empty() {
            return Ok(differing);
        }
        let my_digests: HashMap<Bytes, u64> = {
            let (local, leaves, rate) = (
                self.local.clone(),
                leaves.clone(),
                self.config.bytes_per_sec,
            );
            blocking_local(move || bucket_digests(&local, &leaves, partition_count, rate))
                .await?
                .into_iter()
                .collect()
        };
        let buckets: Vec<(u32, u32)> = leaves.into_iter().collect();
        // Digests take a scan on the peer: they get ten calls' time.
        let digests_call = PeerCall {
            timeout: call.timeout * 10,
            ..call
        };
        let their_digests = self
            .rpc
            .bucket_digests(digests_call, &buckets)
            .await
            .map_err(peer_failed)?;
        let keys: BTreeSet<Bytes> = my_digests
            .iter()
            .filter(|(k, h)| their_digests.get(*k) != Some(h))
            .map(|(k, _)| k.clone())
            .chain(
                their_digests
                    .iter()
                    .filter(|(k, h)| my_digests.get(*k) != Some(h))
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        // Keys are repaired concurrently, a bounded number at a time.
        let repairs = futures::stream::iter(keys)
            .map(|key| self.repair_key(call, key))
            .buffer_unordered(REPAIR_CONCURRENCY);
        let results: Vec<Result<(), RepairError>> = repairs.collect().await;
        for result in results {
            result?;
            self.metrics.keys_repaired.inc();
        }
        Ok(differing)
    }

    /// Pulls the peer's record of `key`, merges it here, and pushes the merge
    /// back, so that both sides end up with the same record.
    async fn repair_key(&self, call: PeerCall<'_>, key: Bytes) -> Result<(), RepairError> {
        let peer_failed = |status: Status| RepairError::Peer {
            peer: call.node.to_string(),
            status,
        };
        let theirs = self.rpc.read(call, &key).await.map_err(peer_failed)?.record;
        let (local, k) = (self.local.clone(), key.clone());
        let merged = blocking_local(move || match theirs {
            None => local.read(&k),
            Some(incoming) => local.apply(&k, &incoming).map(Some),
        })
        .await?;
        if let Some(merged) = merged {
            self.rpc
                .apply(call, &key, &merged.encode(), Delivery::Replica)
                .await
                .map_err(peer_failed)?;
        }
        Ok(())
    }
}

/// Runs blocking work on the local replica off the async threads.
async fn blocking_local<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ReplicaError> + Send + 'static,
) -> Result<T, RepairError> {
    Ok(tokio::task::spawn_blocking(work).await??)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::{Actor, CausalContext, ConflictMode, Hlc};

    fn record(value: Option<&'static [u8]>, at_ms: u64) -> Vec<u8> {
        Siblings::new()
            .update(
                &CausalContext::new(),
                value.map(Bytes::from_static),
                &Actor::new("n1", 1),
                Hlc::new(at_ms, 0),
            )
            .encode()
            .to_vec()
    }

    #[test]
    fn tombstones_are_purged_only_after_grace_and_agreement() {
        let now = now_millis();
        let grace = 10_000;
        let key = b"k";
        let p = partition_of(key, 16);
        let old_tombstone = record(None, now - 60_000);
        let agreement = Agreement::new(16);

        // Old enough, but no round has seen every replica agree since.
        assert!(!purgeable(key, &old_tombstone, 16, grace, &agreement, now));
        agreement.record(p, now - 30_000);
        assert!(purgeable(key, &old_tombstone, 16, grace, &agreement, now));

        // Agreement before the delete proves nothing about the tombstone.
        let recent = record(None, now - 40_000);
        let early = Agreement::new(16);
        early.record(p, now - 50_000);
        assert!(!purgeable(key, &recent, 16, grace, &early, now));

        // Inside the grace period, or a live value: never.
        let fresh = record(None, now - 1_000);
        agreement.record(p, now);
        assert!(!purgeable(key, &fresh, 16, grace, &agreement, now));
        assert!(!purgeable(
            key,
            &record(Some(b"v"), now - 60_000),
            16,
            grace,
            &agreement,
            now
        ));

        // An expired value is a tombstone whose grace period counts from
        // its expiry: purged past it, kept inside it or before expiry.
        let with_ttl = |expires_at_ms: u64| {
            Siblings::new()
                .update_with(
                    ConflictMode::Siblings,
                    &CausalContext::new(),
                    Some(Bytes::from_static(b"v")),
                    expires_at_ms,
                    &Actor::new("n1", 1),
                    Hlc::new(now - 60_000, 0),
                )
                .encode()
                .to_vec()
        };
        let purged = |record: &[u8]| purgeable(key, record, 16, grace, &agreement, now);
        assert!(purged(&with_ttl(now - 50_000)));
        assert!(!purged(&with_ttl(now - 1_000)));
        assert!(!purged(&with_ttl(now + 60_000)));
    }

    /// `--anti-entropy-bytes-per-sec` bounds both scans of a round: the
    /// tree build and the digest listing.
    #[test]
    fn the_byte_rate_bounds_tree_builds_and_digest_listings() {
        use crate::storage::{RocksStorage, RocksStorageOptions};
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Arc::new(
            RocksStorage::open(dir.path(), "n1", &RocksStorageOptions::default()).expect("opens"),
        );
        let local = LocalReplica::open(storage, "n1", ConflictMode::Siblings).expect("replica");
        let value = Bytes::from(vec![b'v'; 64 << 10]);
        for i in 0..64u32 {
            let key = Bytes::from(format!("key-{i}"));
            local
                .update(&crate::replica::Update {
                    key,
                    context: CausalContext::new(),
                    value: Some(value.clone()),
                    expires_at_ms: 0,
                    blind: false,
                })
                .expect("write");
        }
        // 4 MiB at 8 MiB/s: half a second at least, for each scan.
        let (rate, floor) = (8 << 20, Duration::from_millis(450));
        let partitions: BTreeSet<u32> = (0..16).collect();
        let started = std::time::Instant::now();
        let scan = build_trees(&local, &partitions, 16, rate).expect("trees");
        let took = started.elapsed();
        assert!(took >= floor, "trees of 4 MiB at 8 MiB/s in {took:?}");
        assert_eq!(scan.keys.values().sum::<u64>(), 64, "every record counted");
        assert!(scan
            .trees
            .values()
            .any(|tree| tree.iter().any(|leaf| *leaf != 0)));

        let leaves: BTreeSet<(u32, u32)> = partitions
            .iter()
            .flat_map(|p| (0..BUCKETS as u32).map(move |b| (*p, b)))
            .collect();
        let started = std::time::Instant::now();
        let digests = bucket_digests(&local, &leaves, 16, rate).expect("digests");
        let took = started.elapsed();
        assert_eq!(digests.len(), 64);
        assert!(took >= floor, "digests of 4 MiB at 8 MiB/s in {took:?}");
    }

    #[test]
    fn trees_ignore_write_order() {
        let mut a = [0u64; BUCKETS];
        let mut b = [0u64; BUCKETS];
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..100u32)
            .map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; 8]))
            .collect();
        for (k, v) in &pairs {
            a[bucket_of(k)] ^= pair_hash(k, v);
        }
        for (k, v) in pairs.iter().rev() {
            b[bucket_of(k)] ^= pair_hash(k, v);
        }
        assert_eq!(a, b);
        b[bucket_of(&pairs[0].0)] ^= pair_hash(&pairs[0].0, &pairs[0].1);
        assert_ne!(a, b, "a missing key changes its leaf");
    }
}
