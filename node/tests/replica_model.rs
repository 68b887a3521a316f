//! Model-based tests of the replica logic.
//!
//! A simulated cluster of 3 to 5 in-process replicas (real `LocalReplica`s
//! over real RocksDB, without gRPC) runs random client histories with faults,
//! under a wall clock moved by hand:
//! - puts and deletes, with and without causal contexts, and TTLs, alone or
//!   in batches that each replica takes in one write batch;
//! - writes that reach only some replicas, the others getting hints;
//! - reads with read repair;
//! - time passing, compaction with tombstone purge, anti-entropy rounds;
//! - hint delivery, also while a newer hint for the same key is stored;
//! - restarts, restarts that lose the unsynced tail of the WAL, wiped disks,
//!   and the refill of a wiped node from the others.
//!
//! After each history the cluster is healed (every hint delivered, every
//! pair of replicas repaired) and every replica must hold the same record.
//! The outcome is checked against a model of what the store promises:
//! - no value appears that was never written;
//! - every acknowledged put is readable, or has expired, or was superseded by
//!   a write whose client had seen it;
//! - nothing that an acknowledged write superseded comes back (no
//!   acknowledged delete is undone).
//!
//! During the history, every read (and every blind delete's read) that
//! hears R replicas which count toward a quorum (none that is refilling
//! after losing its disk) must show every acknowledged put of the key that
//! has not expired or been superseded: W + R > N, and the harness has no
//! sloppy quorum, so R such replicas always include one that took it.
//! Histories that lost a WAL tail are exempt for the writes before it, since
//! `--durability periodic` gives up exactly that.
//!
//! A quarter of the histories run in lww mode, where a put may lose to a
//! concurrent write with a later timestamp by design: there every check but
//! "readable" applies, and a key shows at most one value.
//!
//! The coordinator's rules appear here as the coordinator applies them: a
//! write is stamped by one replica, sent to the others, and acknowledged at
//! W; a delete without a context first reads R replicas and deletes what
//! they hold.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use ringkv_node::{
    partition_of, purgeable, Agreement, CausalContext, ConflictMode, Durability, LocalReplica,
    MemoryFiles, Modify, PurgeHook, Refill, RocksStorage, RocksStorageOptions, Siblings, Storage,
    Update, WallClock,
};

const PARTITIONS: u32 = 16;
const GRACE_MS: u64 = 60_000;
const KEYS: u8 = 2;
const MAX_NODES: usize = 5;

/// One step of a history. Node numbers are taken modulo the cluster size;
/// a `reach` or `read` mask picks other nodes by bit.
#[derive(Debug, Clone)]
enum Op {
    /// A put through `node`; `read` is the set of replicas the client read
    /// the context from first, `None` for a blind put.
    Put {
        node: usize,
        key: u8,
        read: Option<u8>,
        ttl_ms: Option<u64>,
        reach: u8,
    },
    /// A delete through `node`, with a context read from `read`, or blind.
    Delete {
        node: usize,
        key: u8,
        read: Option<u8>,
        reach: u8,
    },
    /// A read through `node` of the replicas in `reach`, with read repair.
    Get {
        node: usize,
        key: u8,
        reach: u8,
    },
    Advance {
        ms: u64,
    },
    Compact {
        node: usize,
    },
    /// An anti-entropy round of `node` with the replicas in `reach`.
    AntiEntropy {
        node: usize,
        reach: u8,
    },
    /// `node` delivers its hints to the replicas in `reach`; with
    /// `racing_put`, a put of that key through `node` that reaches nobody
    /// lands between reading the hints and forgetting them.
    DeliverHints {
        node: usize,
        reach: u8,
        racing_put: Option<u8>,
    },
    Restart {
        node: usize,
        lose_tail: bool,
    },
    Wipe {
        node: usize,
    },
    /// Writes through `node` as one client batch: (key, put, read mask).
    Batch {
        node: usize,
        writes: Vec<(u8, bool, Option<u8>)>,
        ttl_ms: Option<u64>,
        reach: u8,
    },
    /// `node` streams the records of the replicas in `reach`; once it has
    /// streamed from every other replica its refill is over.
    Refill {
        node: usize,
        reach: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..MAX_NODES;
    let key = 0..KEYS;
    let mask = any::<u8>();
    let read = prop::option::weighted(0.6, any::<u8>());
    prop_oneof![
        6 => (node.clone(), key.clone(), read.clone(), prop::option::weighted(0.3, 1u64..20_000), mask)
            .prop_map(|(node, key, read, ttl_ms, reach)| Op::Put { node, key, read, ttl_ms, reach }),
        3 => (node.clone(), key.clone(), read, mask)
            .prop_map(|(node, key, read, reach)| Op::Delete { node, key, read, reach }),
        2 => (node.clone(), key.clone(), mask).prop_map(|(node, key, reach)| Op::Get { node, key, reach }),
        3 => prop_oneof![1u64..5_000, 10_000u64..30_000, GRACE_MS..3 * GRACE_MS].prop_map(|ms| Op::Advance { ms }),
        2 => node.clone().prop_map(|node| Op::Compact { node }),
        2 => (node.clone(), mask).prop_map(|(node, reach)| Op::AntiEntropy { node, reach }),
        2 => (node.clone(), mask, prop::option::weighted(0.3, key.clone()))
            .prop_map(|(node, reach, racing_put)| Op::DeliverHints { node, reach, racing_put }),
        1 => (node.clone(), any::<bool>()).prop_map(|(node, lose_tail)| Op::Restart { node, lose_tail }),
        1 => node.clone().prop_map(|node| Op::Wipe { node }),
        1 => (node.clone(), mask).prop_map(|(node, reach)| Op::Refill { node, reach }),
        2 => (
            node,
            prop::collection::btree_map(key.clone(), (any::<bool>(), prop::option::weighted(0.5, any::<u8>())), 1..=KEYS as usize)
                .prop_map(|writes| writes.into_iter().map(|(key, (put, read))| (key, put, read)).collect()),
            prop::option::weighted(0.2, 1u64..20_000),
            mask,
        )
            .prop_map(|(node, writes, ttl_ms, reach)| Op::Batch { node, writes, ttl_ms, reach }),
    ]
}

/// One client write, as the model knows it.
#[derive(Debug, Clone)]
struct Write {
    key: u8,
    /// `false` for a delete.
    put: bool,
    /// Every write the client had seen, transitively: what this one replaces.
    seen: BTreeSet<u64>,
    acked: bool,
    expires_at_ms: Option<u64>,
}

impl Write {
    fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

struct SimNode {
    /// The node's disk: RocksDB's files, kept in memory.
    disk: MemoryFiles,
    replica: LocalReplica,
    refill: Refill,
    /// The replicas this node has streamed from during its refill.
    streamed: BTreeSet<usize>,
    agreement: Arc<Agreement>,
    /// Each key's record before its latest change: what a lost WAL tail
    /// rolls back to.
    before_latest: BTreeMap<Bytes, Option<Siblings>>,
}

impl SimNode {
    fn open(disk: MemoryFiles, id: &str, mode: ConflictMode, wall: &WallClock) -> Self {
        let agreement = Arc::new(Agreement::new(PARTITIONS));
        let purge = {
            let (agreement, wall) = (agreement.clone(), wall.clone());
            PurgeHook(Arc::new(move |key: &[u8], record: &[u8]| {
                purgeable(key, record, PARTITIONS, GRACE_MS, &agreement, wall.now_ms())
            }))
        };
        let options = RocksStorageOptions {
            purge: Some(purge),
            // Syncs cost nothing on in-memory files, and spare the thread
            // of periodic syncs; lost tails are simulated explicitly.
            durability: Durability::Sync,
            write_buffer_bytes: 1 << 20,
            block_cache_bytes: 1 << 20,
            in_memory: Some(disk.clone()),
            ..Default::default()
        };
        let storage =
            Arc::new(RocksStorage::open(Path::new("/db"), id, &options).expect("open storage"));
        let replica = LocalReplica::open_with_clock(storage.clone(), id, mode, wall.clone())
            .expect("open replica");
        let refill = Refill::load(&storage, PARTITIONS).expect("load refill");
        Self {
            disk,
            replica,
            refill,
            streamed: BTreeSet::new(),
            agreement,
            before_latest: BTreeMap::new(),
        }
    }

    fn read(&self, key: &Bytes) -> Option<Siblings> {
        self.replica.read(key).expect("read")
    }

    fn note_change(&mut self, key: &Bytes) {
        let before = self.read(key);
        self.before_latest.insert(key.clone(), before);
    }

    fn apply(&mut self, key: &Bytes, record: &Siblings) {
        self.note_change(key);
        self.replica.apply(key, record).expect("apply");
    }
}

struct Sim {
    mode: ConflictMode,
    wall: WallClock,
    nodes: Vec<SimNode>,
    writes: Vec<Write>,
    r: usize,
    w: usize,
    disk_faults: usize,
    /// How many writes came before a WAL tail was lost: quorum reads do
    /// not vouch for those.
    tail_lost_after: Option<usize>,
    /// Reads at a quorum of counting replicas that were checked.
    quorum_reads: u64,
}

fn new_disk() -> MemoryFiles {
    MemoryFiles::new().expect("in-memory files")
}

fn key_bytes(key: u8) -> Bytes {
    Bytes::from(format!("key-{key}"))
}

fn write_id(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()?
        .strip_prefix('w')?
        .parse()
        .ok()
}

impl Sim {
    fn new(size: usize, mode: ConflictMode) -> Self {
        // Starts at the real time, then runs ahead of it by hand.
        let wall = WallClock::manual(WallClock::system().now_ms());
        let nodes = (0..size)
            .map(|i| SimNode::open(new_disk(), &format!("n{i}"), mode, &wall))
            .collect();
        let majority = size / 2 + 1;
        let mut sim = Self {
            mode,
            wall,
            nodes,
            writes: Vec::new(),
            r: majority,
            w: majority,
            disk_faults: 0,
            tail_lost_after: None,
            quorum_reads: 0,
        };
        // A new cluster's nodes all start empty; their refills from each
        // other end at once.
        for node in 0..size {
            sim.refill(node, u8::MAX);
        }
        sim
    }

    fn size(&self) -> usize {
        self.nodes.len()
    }

    /// `node` and the others picked by `mask`.
    fn with(&self, node: usize, mask: u8) -> Vec<usize> {
        (0..self.size())
            .filter(|&i| i == node || mask & (1 << i) != 0)
            .collect()
    }

    fn merged(&self, key: &Bytes, from: &[usize]) -> Siblings {
        from.iter()
            .filter_map(|&i| self.nodes[i].read(key))
            .fold(Siblings::new(), |acc, r| acc.merge_with(self.mode, &r))
    }

    /// Reads `key` from the replicas in `from`, as a coordinator does: the
    /// merge of every answer, and whether R of them count toward a quorum.
    /// A quorum read must show every acknowledged put of the key that has
    /// not expired and that no write has superseded.
    fn quorum_read(&mut self, key: u8, from: &[usize]) -> Result<(Siblings, bool), TestCaseError> {
        let k = key_bytes(key);
        let merged = self.merged(&k, from);
        let counting = from
            .iter()
            .filter(|&&i| self.nodes[i].refill.serves_key(&k))
            .count();
        let quorum = counting >= self.r;
        if quorum && self.mode == ConflictMode::Siblings {
            self.quorum_reads += 1;
            let now = self.wall.now_ms();
            let visible = self.observed(&merged);
            let superseded = self.superseded(key);
            let vouched = self.tail_lost_after.unwrap_or(0);
            for (id, w) in self.writes.iter().enumerate().skip(vouched) {
                let id = id as u64;
                if w.key == key && w.put && w.acked && !w.expired(now) && !superseded.contains(&id)
                {
                    prop_assert!(
                        visible.contains(&id),
                        "a read of {:?} at R={} from {:?} ({} counting) misses acknowledged put w{}",
                        k,
                        self.r,
                        from,
                        counting,
                        id
                    );
                }
            }
        }
        Ok((merged, quorum))
    }

    /// Every write of `key` that some write (acknowledged or not) replaced.
    fn superseded(&self, key: u8) -> BTreeSet<u64> {
        self.writes
            .iter()
            .filter(|w| w.key == key)
            .flat_map(|w| w.seen.iter().copied())
            .collect()
    }

    /// The ids a reader of `record` sees now, with everything they replaced.
    fn observed(&self, record: &Siblings) -> BTreeSet<u64> {
        let mut seen = BTreeSet::new();
        for data in record.visible_data(self.mode, self.wall.now_ms()) {
            if let Some(id) = write_id(&data) {
                seen.insert(id);
                if let Some(w) = self.writes.get(id as usize) {
                    seen.extend(w.seen.iter().copied());
                }
            }
        }
        seen
    }

    /// A write through `node`: stamped there, sent to the replicas in
    /// `reach`, hints for the rest; acknowledged at W.
    fn write(
        &mut self,
        node: usize,
        key: u8,
        put: bool,
        read: Option<u8>,
        ttl_ms: Option<u64>,
        reach: u8,
    ) -> Result<(), TestCaseError> {
        self.write_batch(node, &[(key, put, read)], ttl_ms, reach)
    }

    /// A batch of writes through `node`, stamped there in one write batch
    /// (`update_many`) and merged by each replica in `reach` in one write
    /// batch (`apply_many`), hints for the rest; each write acknowledged at
    /// W. A write is (key, put, read mask for its context or blind).
    fn write_batch(
        &mut self,
        node: usize,
        batch: &[(u8, bool, Option<u8>)],
        ttl_ms: Option<u64>,
        reach: u8,
    ) -> Result<(), TestCaseError> {
        let replies = self.with(node, reach);
        let now = self.wall.now_ms();
        let expires_at_ms = ttl_ms.map(|ttl| now + ttl);
        // The node refuses a batch that names a key twice.
        let keys: BTreeSet<u8> = batch.iter().map(|(key, _, _)| *key).collect();
        if keys.len() < batch.len() {
            return Ok(());
        }
        // Every context is read before anything of the batch is written.
        let mut updates = Vec::new();
        let mut written = Vec::new();
        for &(key, put, read) in batch {
            let k = key_bytes(key);
            let (context, seen) = match read {
                Some(mask) => {
                    let record = self.merged(&k, &self.with(node, mask));
                    (record.context(), self.observed(&record))
                }
                // A delete without a context deletes what R replicas hold
                // (the coordinator's own answer need not be among them) and
                // what the coordinator holds, and fails without R replies.
                None if !put => {
                    let readers: Vec<usize> =
                        (0..self.size()).filter(|i| reach & (1 << i) != 0).collect();
                    match self.quorum_read(key, &readers)? {
                        (record, true) => {
                            let own = self.nodes[node].read(&k).unwrap_or_default();
                            let held = record.merge_with(self.mode, &own);
                            (record.context(), self.observed(&held))
                        }
                        (_, false) => continue,
                    }
                }
                None => (CausalContext::new(), BTreeSet::new()),
            };
            let id = (self.writes.len() + written.len()) as u64;
            updates.push(Update {
                key: k,
                context,
                value: put.then(|| Bytes::from(format!("w{id}"))),
                expires_at_ms: expires_at_ms.unwrap_or(0),
                blind: read.is_none(),
            });
            written.push(Write {
                key,
                put,
                seen,
                acked: replies.len() >= self.w,
                expires_at_ms,
            });
        }
        if updates.is_empty() {
            return Ok(());
        }
        for update in &updates {
            self.nodes[node].note_change(&update.key);
        }
        let records = self.nodes[node]
            .replica
            .update_many(&updates)
            .expect("update a batch")
            .into_iter()
            .map(|r| r.expect("the model's values stay within the default bound"))
            .collect::<Vec<_>>();
        let share: Vec<(Bytes, Siblings)> =
            updates.iter().map(|u| u.key.clone()).zip(records).collect();
        for other in (0..self.size()).filter(|&i| i != node) {
            if replies.contains(&other) {
                for (key, _) in &share {
                    self.nodes[other].note_change(key);
                }
                self.nodes[other]
                    .replica
                    .apply_many(&share)
                    .expect("apply a batch");
            } else {
                for (key, record) in &share {
                    self.nodes[node]
                        .replica
                        .keep_hint(&format!("n{other}"), key, &record.encode())
                        .expect("keep hint");
                }
            }
        }
        self.writes.extend(written);
        Ok(())
    }

    fn get(&mut self, node: usize, key: u8, reach: u8) -> Result<(), TestCaseError> {
        let k = key_bytes(key);
        let from = self.with(node, reach);
        let (merged, _) = self.quorum_read(key, &from)?;
        for data in merged.visible_data(self.mode, self.wall.now_ms()) {
            let id = write_id(&data);
            prop_assert!(
                id.and_then(|id| self.writes.get(id as usize))
                    .is_some_and(|w| w.put && w.key == key),
                "read a value that was never written: {:?}",
                data
            );
        }
        for i in from {
            if self.nodes[i].read(&k).is_none_or(|r| !r.descends(&merged)) {
                self.nodes[i].apply(&k, &merged);
            }
        }
        Ok(())
    }

    /// One anti-entropy round of `node`: a partition counts as agreed when
    /// every other replica took part and held exactly the same records;
    /// then differing keys are merged both ways.
    fn anti_entropy(&mut self, node: usize, reach: u8) {
        let partners: Vec<usize> = self
            .with(node, reach)
            .into_iter()
            .filter(|&i| i != node)
            .collect();
        let now = self.wall.now_ms();
        let keys: Vec<Bytes> = (0..KEYS).map(key_bytes).collect();
        if partners.len() == self.size() - 1 {
            let partitions: BTreeSet<u32> =
                keys.iter().map(|k| partition_of(k, PARTITIONS)).collect();
            for p in partitions {
                let agreed = keys
                    .iter()
                    .filter(|k| partition_of(k, PARTITIONS) == p)
                    .all(|k| {
                        let mine = self.nodes[node].read(k);
                        partners.iter().all(|&i| self.nodes[i].read(k) == mine)
                    });
                if agreed {
                    self.nodes[node].agreement.record(p, now);
                }
            }
        }
        for k in &keys {
            for &other in &partners {
                let (mine, theirs) = (self.nodes[node].read(k), self.nodes[other].read(k));
                if mine == theirs {
                    continue;
                }
                if let Some(theirs) = theirs {
                    self.nodes[node].apply(k, &theirs);
                }
                if let Some(merged) = self.nodes[node].read(k) {
                    self.nodes[other].apply(k, &merged);
                }
            }
        }
    }

    /// `node` streams every record of the replicas in `reach`; once it has
    /// streamed from all the others, every partition is refilled.
    fn refill(&mut self, node: usize, reach: u8) {
        let sources: Vec<usize> = self
            .with(node, reach)
            .into_iter()
            .filter(|&i| i != node)
            .collect();
        for source in sources {
            for key in 0..KEYS {
                let k = key_bytes(key);
                if let Some(record) = self.nodes[source].read(&k) {
                    self.nodes[node].apply(&k, &record);
                }
            }
            self.nodes[node].streamed.insert(source);
        }
        let target = &self.nodes[node];
        if target.streamed.len() + 1 == self.size() {
            for p in 0..PARTITIONS {
                target.refill.mark_refilled(p);
            }
            target
                .refill
                .finish(target.replica.storage())
                .expect("finish the refill");
        }
    }

    fn deliver_hints(&mut self, node: usize, reach: u8, racing_put: Option<u8>) {
        let hints = self.nodes[node]
            .replica
            .storage()
            .hints(1024, 1024)
            .expect("read hints");
        if let Some(key) = racing_put {
            self.write(node, key, true, None, None, 0)
                .expect("a blind put reads nothing");
        }
        let targets = self.with(node, reach);
        let mut delivered = Vec::new();
        for hint in hints {
            let Some(target) = (0..self.size()).find(|&i| format!("n{i}") == hint.target) else {
                continue;
            };
            if !targets.contains(&target) || target == node {
                continue;
            }
            let record = Siblings::decode(&hint.encoded).expect("hint record");
            self.nodes[target].apply(&hint.key, &record);
            delivered.push(hint);
        }
        self.nodes[node]
            .replica
            .forget_hints(&delivered)
            .expect("forget hints");
    }

    fn restart(&mut self, node: usize, lose_tail: bool) {
        if lose_tail {
            if self.disk_faults > 0 {
                return;
            }
            self.disk_faults += 1;
            self.tail_lost_after = Some(self.writes.len());
            let storage = self.nodes[node].replica.storage().clone();
            let rollback: Vec<Modify> = std::mem::take(&mut self.nodes[node].before_latest)
                .into_iter()
                .map(|(key, before)| match before {
                    Some(record) => Modify::Put {
                        key,
                        value: record.encode(),
                        expires_at_ms: None,
                    },
                    None => Modify::Delete { key },
                })
                .collect();
            storage.write(rollback).expect("roll back the tail");
        }
        self.reopen(node, false);
    }

    fn wipe(&mut self, node: usize) {
        if self.disk_faults > 0 {
            return;
        }
        self.disk_faults += 1;
        self.reopen(node, true);
    }

    fn reopen(&mut self, node: usize, wipe: bool) {
        // A restart takes time; a node restarted within the clock ceiling's
        // lease would start its clock ahead of the others.
        self.wall.advance(1_000);
        // The old database must be closed before it is opened again.
        let SimNode { disk, replica, .. } = self.nodes.remove(node);
        drop(replica);
        let disk = if wipe { new_disk() } else { disk };
        let reopened = SimNode::open(disk, &format!("n{node}"), self.mode, &self.wall);
        self.nodes.insert(node, reopened);
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let n = self.size();
        match *op {
            Op::Put {
                node,
                key,
                read,
                ttl_ms,
                reach,
            } => self.write(node % n, key, true, read, ttl_ms, reach)?,
            Op::Delete {
                node,
                key,
                read,
                reach,
            } => self.write(node % n, key, false, read, None, reach)?,
            Op::Get { node, key, reach } => self.get(node % n, key, reach)?,
            Op::Advance { ms } => self.wall.advance(ms),
            Op::Compact { node } => {
                self.nodes[node % n]
                    .replica
                    .storage()
                    .compact()
                    .expect("compact");
            }
            Op::AntiEntropy { node, reach } => self.anti_entropy(node % n, reach),
            Op::DeliverHints {
                node,
                reach,
                racing_put,
            } => self.deliver_hints(node % n, reach, racing_put),
            Op::Restart { node, lose_tail } => self.restart(node % n, lose_tail),
            Op::Wipe { node } => self.wipe(node % n),
            Op::Refill { node, reach } => self.refill(node % n, reach),
            Op::Batch {
                node,
                ref writes,
                ttl_ms,
                reach,
            } => self.write_batch(node % n, writes, ttl_ms, reach)?,
        }
        Ok(())
    }

    /// Every hint delivered and every pair repaired, until nothing changes.
    fn heal(&mut self) -> Result<(), TestCaseError> {
        let everyone = u8::MAX;
        for node in 0..self.size() {
            self.refill(node, everyone);
        }
        for _ in 0..4 {
            for node in 0..self.size() {
                self.deliver_hints(node, everyone, None);
            }
            for node in 0..self.size() {
                self.anti_entropy(node, everyone);
            }
        }
        for node in 0..self.size() {
            prop_assert!(
                !self.nodes[node]
                    .replica
                    .storage()
                    .has_hints()
                    .expect("hints"),
                "node n{node} still keeps hints after healing"
            );
        }
        Ok(())
    }

    /// Checks the healed cluster against the model; returns how many
    /// acknowledged (puts, deletes) were checked.
    fn check(&self) -> Result<(u64, u64), TestCaseError> {
        let now = self.wall.now_ms();
        let (mut puts, mut deletes) = (0, 0);
        for key in 0..KEYS {
            let k = key_bytes(key);
            let record = self.nodes[0].read(&k);
            for (i, node) in self.nodes.iter().enumerate() {
                prop_assert_eq!(
                    node.read(&k),
                    record.clone(),
                    "n{} and n0 disagree on {:?} after healing",
                    i,
                    k
                );
            }
            let visible: BTreeSet<u64> = record
                .map(|r| r.visible_data(self.mode, now))
                .unwrap_or_default()
                .iter()
                .map(|data| {
                    write_id(data)
                        .filter(|id| {
                            self.writes
                                .get(*id as usize)
                                .is_some_and(|w| w.put && w.key == key)
                        })
                        .ok_or_else(|| {
                            TestCaseError::fail(format!(
                                "{k:?} holds a value that was never written: {data:?}"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            if self.mode == ConflictMode::Lww {
                prop_assert!(visible.len() <= 1, "lww shows {:?} for {:?}", visible, k);
            }
            let superseded = self.superseded(key);
            for (id, w) in self.writes.iter().enumerate() {
                let id = id as u64;
                if w.key != key || !w.acked {
                    continue;
                }
                // In lww mode a put may lose to a concurrent write with a
                // later timestamp, by design; what it replaced still stays
                // replaced.
                if w.put && self.mode == ConflictMode::Siblings {
                    puts += 1;
                    let expired = w.expires_at_ms.is_some_and(|at| at <= now);
                    prop_assert!(
                        visible.contains(&id) || expired || superseded.contains(&id),
                        "acknowledged put w{} of {:?} was lost: the key shows {:?}",
                        id,
                        k,
                        visible
                    );
                } else if !w.put {
                    deletes += 1;
                }
                let undone: Vec<&u64> = w.seen.iter().filter(|s| visible.contains(s)).collect();
                prop_assert!(
                    undone.is_empty(),
                    "acknowledged write w{} of {:?} replaced {:?}, which came back",
                    id,
                    k,
                    undone
                );
            }
        }
        Ok((puts, deletes))
    }
}

fn history() -> impl Strategy<Value = (usize, ConflictMode, Vec<Op>)> {
    let mode = prop_oneof![3 => Just(ConflictMode::Siblings), 1 => Just(ConflictMode::Lww)];
    (3..=MAX_NODES, mode, prop::collection::vec(op(), 1..40))
}

#[test]
fn random_histories_never_lose_an_acknowledged_write_or_undo_a_delete() {
    let cases: u32 = std::env::var("RINGKV_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let puts = AtomicU64::new(0);
    let deletes = AtomicU64::new(0);
    let quorum_reads = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&history(), |(size, mode, ops)| {
        let mut sim = Sim::new(size, mode);
        for op in &ops {
            sim.run(op)?;
        }
        sim.heal()?;
        let (p, d) = sim.check()?;
        puts.fetch_add(p, Ordering::Relaxed);
        quorum_reads.fetch_add(sim.quorum_reads, Ordering::Relaxed);
        deletes.fetch_add(d, Ordering::Relaxed);
        Ok(())
    });
    println!(
        "replica model: {cases} histories, {} acknowledged puts and {} acknowledged deletes checked; {} quorum reads checked during the histories",
        puts.load(Ordering::Relaxed),
        deletes.load(Ordering::Relaxed),
        quorum_reads.load(Ordering::Relaxed)
    );
    if let Err(error) = result {
        panic!("{error}");
    }
}
