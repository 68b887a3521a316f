//! This node's replicas: versioned records in local storage.
//!
//! Every record is a dotted version vector set ([`Siblings`]). Writes that
//! this node coordinates get a new dot of one of its actors; writes from
//! peers and repairs are merged in. Read-modify-write of one key is
//! serialised by its key lock (`key_locks.rs`), so different keys never wait
//! on each other.
//!
//! # Dots are never reused
//!
//! A dot `(actor, counter)` that two different writes carry makes replicas
//! that saw the first take the second as already seen, and drop it (Riak's
//! kv679). A counter is safe to continue only where this node's own record
//! holds the latest dot it issued for the actor. That holds for an actor
//! this process created, as long as the key's record has not vanished. So:
//! - every start is a new *incarnation* with a random 64-bit id, and an
//!   actor of an earlier incarnation is never continued: an unclean stop
//!   under `--durability periodic` may have lost the tail of the WAL, a data
//!   dir restored from a copy has lost everything after the copy, and a
//!   wiped one everything;
//! - a key whose record holds no actor of this incarnation (a new key, one
//!   whose tombstone was purged, one last written before the restart) gets
//!   a fresh actor `(node, incarnation, epoch)` whose epoch is a tick of
//!   this node's hybrid logical clock, unique within the incarnation.
//!
//! Uniqueness rests on the random id, not on clocks, so it holds even when
//! a wiped node's clock is behind the one it had. The clock still never
//! goes backwards across a restart that keeps the data dir: a ceiling above
//! every timestamp issued is kept in the meta column family, synced, and a
//! restarted node starts its clock above it.

use std::collections::BTreeMap;
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

use bytes::Bytes;

mod bound;
mod group_commit;
mod key_locks;
pub mod memory_first;

use key_locks::KeyLocks;

pub use group_commit::GroupCommit;

pub use bound::{
    BoundError, RecordBound, RecordSize, DEFAULT_MAX_RECORD_BYTES, DEFAULT_MAX_SIBLINGS,
};

use crate::{
    storage::{Cached, Hint, Modify, RocksStorage, ScanRange, Storage, StorageError},
    versions::wall_clock::WallClock,
    versions::{Actor, CausalContext, ConflictMode, Hlc, HlcClock, Siblings, VersionError},
};

/// Physical milliseconds that no timestamp this node issued has reached.
const META_CLOCK_CEILING: &str = "clock-ceiling";
/// Present in the meta column family from the first start of a data dir
/// until its refill ends (see `refill`).
pub const META_REFILLING: &str = "refilling";
/// How far ahead of the clock the ceiling is moved at a time: one synced
/// metadata write per this many milliseconds of clock. A restarted node's
/// clock starts at the ceiling, so the lease stays well below the tolerated
/// clock offset.
const CEILING_LEASE_MS: u64 = 200;

/// Why a local replica operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored record is unreadable: {0}")]
    Corrupt(VersionError),
    #[error("record from a peer is unreadable: {0}")]
    BadRecord(VersionError),
    #[error("key lock poisoned")]
    Poisoned,
    #[error("storage task failed: {0}")]
    Task(String),
    #[error("starting the node's writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
    #[error("the node's writer thread has stopped")]
    WriterStopped,
    #[error("the writer thread's group gave no outcome for an update: a bug in LocalReplica::change_many")]
    WriterLostAnswer,
    #[error(transparent)]
    Bound(#[from] BoundError),
    #[error(
        "{what} carries a timestamp {ahead_ms} ms ahead of this node's clock, \
         more than --max-clock-offset-ms ({limit_ms}); check the clock synchronisation of the nodes"
    )]
    ClockAhead {
        what: &'static str,
        ahead_ms: u64,
        limit_ms: u64,
    },
}

/// The default of `--max-clock-offset-ms`.
pub const DEFAULT_MAX_CLOCK_OFFSET_MS: u64 = 500;

/// A record as this node stored it; one that does not decode is corrupt.
fn decode_stored(raw: Option<Bytes>) -> Result<Option<Siblings>, ReplicaError> {
    raw.map(|raw| Siblings::decode(&raw).map_err(ReplicaError::Corrupt))
        .transpose()
}

/// Runs a replica call on tokio's blocking pool (RocksDB blocks).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReplicaError> + Send + 'static,
) -> Result<T, ReplicaError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ReplicaError::Task(e.to_string()))?
}

/// One write of a batch, as [`LocalReplica::update_many`] takes it.
#[derive(Debug, Clone)]
pub struct Update {
    pub key: Bytes,
    pub context: CausalContext,
    /// `None` for a delete.
    pub value: Option<Bytes>,
    /// 0 for no expiry.
    pub expires_at_ms: u64,
    /// The client sent no context: `context` is what the coordinator read
    /// from R replicas, if anything. A delete then also removes every
    /// value this replica holds, whether or not its answer was among the R.
    pub blind: bool,
}

/// One change of a group that [`LocalReplica::change_many`] stores together.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A write coordinated here, stamped with a new dot of this node.
    Update(&'a Update),
    /// A record a peer sent, merged into this replica's.
    Merge(&'a Bytes, &'a Siblings),
}

impl Change<'_> {
    fn key(&self) -> &[u8] {
        match self {
            Change::Update(update) => &update.key,
            Change::Merge(key, _) => key,
        }
    }
}

/// A page of this node's records of a range.
#[derive(Debug)]
pub struct ScanPage {
    pub records: Vec<(Bytes, Siblings)>,
    /// The page stopped at the range's limit or byte cap: records past its
    /// last one may exist.
    pub full: bool,
}

/// The local replica store of one node.
pub struct LocalReplica {
    storage: Arc<RocksStorage>,
    key_locks: KeyLocks,
    node_id: String,
    /// Random per start: the actors this process created carry it.
    incarnation: u64,
    clock: HlcClock,
    /// The persisted ceiling, in physical milliseconds.
    ceiling_ms: AtomicU64,
    ceiling_lock: Mutex<()>,
    wall: WallClock,
    mode: ConflictMode,
    max_clock_offset_ms: u64,
    bound: RecordBound,
}

impl LocalReplica {
    /// Opens the replica store as a new incarnation of this node.
    pub fn open(
        storage: Arc<RocksStorage>,
        node_id: &str,
        mode: ConflictMode,
    ) -> Result<Self, ReplicaError> {
        Self::open_with_clock(storage, node_id, mode, WallClock::system())
    }

    /// [`LocalReplica::open`] reading the time from `wall`.
    pub fn open_with_clock(
        storage: Arc<RocksStorage>,
        node_id: &str,
        mode: ConflictMode,
        wall: WallClock,
    ) -> Result<Self, ReplicaError> {
        let clock = HlcClock::new();
        let stored_ceiling = storage.meta_get(META_CLOCK_CEILING)?;
        if stored_ceiling.is_none() {
            // No ceiling: this data dir never held a replica, and the node
            // must refill before it counts toward reads (see `refill`). The
            // mark goes down before the first ceiling, so that a crash in
            // between cannot leave a dir that looks used and skips it.
            storage.meta_put(META_REFILLING, b"1")?;
        }
        let ceiling_ms = match stored_ceiling {
            Some(raw) if raw.len() == 8 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&raw);
                u64::from_be_bytes(bytes)
            }
            _ => 0,
        };
        clock.observe(Hlc::new(ceiling_ms, u16::MAX));
        // Never 0, which marks actors from before incarnations existed.
        let incarnation = rand::random::<u64>().max(1);
        let replica = Self {
            storage,
            key_locks: KeyLocks::default(),
            node_id: node_id.to_string(),
            incarnation,
            clock,
            ceiling_ms: AtomicU64::new(0),
            ceiling_lock: Mutex::new(()),
            wall,
            mode,
            max_clock_offset_ms: DEFAULT_MAX_CLOCK_OFFSET_MS,
            bound: RecordBound::default(),
        };
        replica.tick()?;
        tracing::info!(
            incarnation = format!("{incarnation:x}"),
            "started a new incarnation: every key gets fresh actors"
        );
        Ok(replica)
    }

    /// Refuses timestamps more than `ms` ahead of this node's clock.
    pub fn with_max_clock_offset(mut self, ms: u64) -> Self {
        self.max_clock_offset_ms = ms;
        self
    }

    /// Refuses puts that would grow a record past `bound`.
    pub fn with_record_bound(mut self, bound: RecordBound) -> Self {
        self.bound = bound;
        self
    }

    /// Refuses a timestamp further ahead of the wall clock than the
    /// tolerated offset: adopted, one bad timestamp would drag the clock,
    /// and every write stamped after it, towards the end of time.
    fn check_offset(&self, what: &'static str, hlc: Hlc) -> Result<(), ReplicaError> {
        let now = self.wall.now_ms();
        let ahead_ms = hlc.physical_ms().saturating_sub(now);
        if ahead_ms > self.max_clock_offset_ms {
            return Err(ReplicaError::ClockAhead {
                what,
                ahead_ms,
                limit_ms: self.max_clock_offset_ms,
            });
        }
        Ok(())
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn mode(&self) -> ConflictMode {
        self.mode
    }

    pub fn storage(&self) -> &Arc<RocksStorage> {
        &self.storage
    }

    /// A new timestamp of this node's clock, below the persisted ceiling.
    fn tick(&self) -> Result<Hlc, ReplicaError> {
        let now = self.clock.now_at(self.wall.now_ms());
        self.raise_ceiling(now)?;
        Ok(now)
    }

    /// Persists a ceiling above `issued` before it is used anywhere.
    fn raise_ceiling(&self, issued: Hlc) -> Result<(), ReplicaError> {
        let needed = issued.physical_ms().saturating_add(1);
        if needed <= self.ceiling_ms.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self
            .ceiling_lock
            .lock()
            .map_err(|_| ReplicaError::Poisoned)?;
        if needed <= self.ceiling_ms.load(Ordering::Acquire) {
            return Ok(());
        }
        let ceiling = needed.saturating_add(CEILING_LEASE_MS);
        self.storage
            .meta_put(META_CLOCK_CEILING, &ceiling.to_be_bytes())?;
        self.ceiling_ms.store(ceiling, Ordering::Release);
        Ok(())
    }

    /// The actor that stamps this node's next write of a key whose record
    /// here is `local`: its actor of this incarnation if it has one, else a
    /// fresh one (see the module's notes on dots).
    fn actor_for(&self, local: &Siblings) -> Result<Actor, ReplicaError> {
        let current = local
            .actors()
            .filter(|a| a.node == self.node_id && a.incarnation == self.incarnation)
            .max();
        match current {
            Some(actor) => Ok(actor.clone()),
            None => Ok(Actor::of_incarnation(
                self.node_id.clone(),
                self.incarnation,
                self.tick()?.as_raw(),
            )),
        }
    }

    /// This node's record of `key`.
    pub fn read(&self, key: &[u8]) -> Result<Option<Siblings>, ReplicaError> {
        decode_stored(self.storage.get(key)?)
    }

    /// [`LocalReplica::read`] from memory alone, or [`Cached::Miss`] where
    /// a table file would have to be read.
    pub fn read_cached(&self, key: &[u8]) -> Result<Cached<Option<Siblings>>, ReplicaError> {
        Ok(match self.storage.get_cached(key)? {
            Cached::Hit(raw) => Cached::Hit(decode_stored(raw)?),
            Cached::Miss => Cached::Miss,
        })
    }

    /// This node's records of `keys`, in order, while their encoded sizes
    /// add up to at most `cap` bytes: the first is always read, and the
    /// keys past the cap are left out.
    pub fn read_many(
        &self,
        keys: &[Bytes],
        cap: usize,
    ) -> Result<Vec<Option<Siblings>>, ReplicaError> {
        let Ok(records) = self.read_many_with(keys, cap, |key| {
            Ok(Ok::<_, std::convert::Infallible>(self.storage.get(key)?))
        })?;
        Ok(records)
    }

    /// [`LocalReplica::read_many`] from memory alone, or [`Cached::Miss`]
    /// if any of the keys would need a table file read.
    pub fn read_many_cached(
        &self,
        keys: &[Bytes],
        cap: usize,
    ) -> Result<Cached<Vec<Option<Siblings>>>, ReplicaError> {
        let records = self.read_many_with(keys, cap, |key| {
            Ok(match self.storage.get_cached(key)? {
                Cached::Hit(raw) => Ok(raw),
                Cached::Miss => Err(()),
            })
        })?;
        Ok(records.map_or(Cached::Miss, Cached::Hit))
    }

    /// The records of `keys` up to `cap` bytes, each fetched by `get`,
    /// which may give up on a key (`Err(M)`), and with it on them all.
    fn read_many_with<M>(
        &self,
        keys: &[Bytes],
        cap: usize,
        mut get: impl FnMut(&[u8]) -> Result<Result<Option<Bytes>, M>, ReplicaError>,
    ) -> Result<Result<Vec<Option<Siblings>>, M>, ReplicaError> {
        let mut records = Vec::with_capacity(keys.len());
        let mut bytes = 0;
        for key in keys {
            let raw = match get(key)? {
                Ok(raw) => raw,
                Err(gave_up) => return Ok(Err(gave_up)),
            };
            bytes += raw.as_ref().map_or(0, Bytes::len) + key.len();
            if bytes > cap && !records.is_empty() {
                break;
            }
            records.push(decode_stored(raw)?);
        }
        Ok(Ok(records))
    }

    /// Stores a record. Expiry stays inside the record: an expired value is
    /// kept, as a tombstone, until tombstone purge removes the whole record.
    fn write(&self, key: &Bytes, record: &Siblings) -> Result<(), ReplicaError> {
        self.storage.write(vec![Modify::Put {
            key: key.clone(),
            value: record.encode(),
            expires_at_ms: None,
        }])?;
        Ok(())
    }

    /// Refuses a client's context stamped too far ahead of this node's
    /// clock, as [`LocalReplica::update`] would.
    pub fn check_context(&self, context: &CausalContext) -> Result<(), ReplicaError> {
        self.check_offset("the causal context", context.max_hlc())
    }

    /// Stores every record in one RocksDB write batch.
    fn write_all(&self, records: BTreeMap<Bytes, Siblings>) -> Result<(), ReplicaError> {
        let batch = records
            .into_iter()
            .map(|(key, record)| Modify::Put {
                key,
                value: record.encode(),
                expires_at_ms: None,
            })
            .collect();
        Ok(self.storage.write(batch)?)
    }

    /// The writes of a batch coordinated here, each as [`LocalReplica::update`]
    /// would make it, stored in one RocksDB write batch: on this replica the
    /// batch lands whole or not at all. A key named twice is updated twice,
    /// in order. Returns each write's record, in the order given, or why
    /// the bound refused it.
    pub fn update_many(
        &self,
        updates: &[Update],
    ) -> Result<Vec<Result<Siblings, BoundError>>, ReplicaError> {
        self.change_many(&updates.iter().map(Change::Update).collect::<Vec<_>>())
    }

    /// Merges a batch of records from a peer, stored in one RocksDB write
    /// batch: on this replica the batch lands whole or not at all.
    pub fn apply_many(&self, incoming: &[(Bytes, Siblings)]) -> Result<(), ReplicaError> {
        let changes: Vec<_> = incoming
            .iter()
            .map(|(key, record)| Change::Merge(key, record))
            .collect();
        self.change_many(&changes).map(|_| ())
    }

    /// Updates and merges, each as [`LocalReplica::update`] or
    /// [`LocalReplica::apply`] would make it alone, in the order given,
    /// stored in one RocksDB write batch: they land whole or not at all.
    /// A key changed twice sees its first change. Returns, for each update
    /// in order, its record or why the bound refused it; a merge is never
    /// refused on its own.
    pub fn change_many(
        &self,
        changes: &[Change<'_>],
    ) -> Result<Vec<Result<Siblings, BoundError>>, ReplicaError> {
        // Refused before anything is locked or read, so that a group from
        // a skewed clock fails whole and its callers can retry alone.
        for change in changes {
            match change {
                Change::Update(update) => {
                    self.check_offset("the causal context", update.context.max_hlc())?
                }
                Change::Merge(_, record) => {
                    self.check_offset("a peer's record", record.max_hlc())?
                }
            }
        }
        let _guard = self.key_locks.lock(changes.iter().map(Change::key))?;
        let mut changed: BTreeMap<Bytes, Siblings> = BTreeMap::new();
        let mut updated = Vec::new();
        for change in changes {
            let key = change.key();
            let local = match changed.get(key) {
                Some(record) => Some(record.clone()),
                None => self.read(key)?,
            };
            match change {
                Change::Update(update) => {
                    // A put refused by the bound is left out; the others go on.
                    match self.stamp(&local.unwrap_or_default(), update) {
                        Ok(record) => {
                            changed.insert(update.key.clone(), record.clone());
                            updated.push(Ok(record));
                        }
                        Err(ReplicaError::Bound(refused)) => updated.push(Err(refused)),
                        Err(other) => return Err(other),
                    }
                }
                Change::Merge(key, incoming) => {
                    // Observed in order, so that an update queued after a
                    // peer's record is stamped as it would be alone.
                    self.clock.observe(incoming.max_hlc());
                    let merged = match &local {
                        Some(local) => local.merge_with(self.mode, incoming),
                        None => (*incoming).clone(),
                    };
                    if local.as_ref() != Some(&merged) {
                        changed.insert((*key).clone(), merged);
                    }
                }
            }
        }
        if !changed.is_empty() {
            self.write_all(changed)?;
        }
        Ok(updated)
    }

    /// The record `local` becomes after `update`, with a new dot of this
    /// node's actor for the key.
    fn stamp(&self, local: &Siblings, update: &Update) -> Result<Siblings, ReplicaError> {
        // A delete without a client context removes at least every value
        // this replica knows, as well as what the replicas read for it
        // held; a put without context stays a sibling of what it did not
        // see.
        let context = if update.value.is_none() && (update.blind || update.context.is_empty()) {
            update.context.merge(&local.context())
        } else {
            update.context.clone()
        };
        let actor = self.actor_for(local)?;
        let now = self.tick()?;
        let updated = local.update_with(
            self.mode,
            &context,
            update.value.clone(),
            update.expires_at_ms,
            &actor,
            now,
        );
        if update.value.is_some() {
            self.bound
                .admit(RecordSize::of(local), RecordSize::of(&updated))?;
        }
        self.raise_ceiling(updated.max_hlc())?;
        Ok(updated)
    }

    /// A write coordinated here: supersedes what `context` covers and gets a
    /// new dot of this node's actor for the key.
    pub fn update(&self, update: &Update) -> Result<Siblings, ReplicaError> {
        self.check_offset("the causal context", update.context.max_hlc())?;
        let _guard = self.key_locks.lock([update.key.as_ref()])?;
        let local = self.read(&update.key)?.unwrap_or_default();
        let updated = self.stamp(&local, update)?;
        self.write(&update.key, &updated)?;
        Ok(updated)
    }

    /// Merges a record from a peer (a replicated write or a repair).
    /// Returns the merged record.
    pub fn apply(&self, key: &Bytes, incoming: &Siblings) -> Result<Siblings, ReplicaError> {
        self.check_offset("a peer's record", incoming.max_hlc())?;
        self.clock.observe(incoming.max_hlc());
        let _guard = self.key_locks.lock([key.as_ref()])?;
        let local = self.read(key)?;
        let merged = match &local {
            Some(local) => local.merge_with(self.mode, incoming),
            None => incoming.clone(),
        };
        if local.as_ref() != Some(&merged) {
            self.write(key, &merged)?;
        }
        Ok(merged)
    }

    /// Decodes a record sent by a peer and merges it.
    pub fn apply_encoded(&self, key: &Bytes, encoded: &[u8]) -> Result<(), ReplicaError> {
        let incoming = Siblings::decode(encoded).map_err(ReplicaError::BadRecord)?;
        self.apply(key, &incoming).map(|_| ())
    }

    /// Merges encoded records sent by peers, in one write batch.
    pub fn apply_encoded_many(&self, records: Vec<(Bytes, Bytes)>) -> Result<(), ReplicaError> {
        let decoded = records
            .into_iter()
            .map(|(key, encoded)| {
                Siblings::decode(&encoded)
                    .map(|record| (key, record))
                    .map_err(ReplicaError::BadRecord)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.apply_many(&decoded)
    }

    /// Keeps the `encoded` record as a hint for node `target`, stamped now. A hint
    /// already kept for the same key and target is merged with it, so
    /// neither write is lost.
    pub fn keep_hint(&self, target: &str, key: &[u8], encoded: &[u8]) -> Result<(), ReplicaError> {
        let _guard = self.key_locks.lock([key])?;
        let kept = match self.storage.hint(target, key)? {
            Some(earlier) => {
                let earlier = Siblings::decode(&earlier).map_err(ReplicaError::Corrupt)?;
                let incoming = Siblings::decode(encoded).map_err(ReplicaError::BadRecord)?;
                earlier.merge_with(self.mode, &incoming).encode()
            }
            None => Bytes::copy_from_slice(encoded),
        };
        Ok(self
            .storage
            .put_hint(target, key, &kept, self.wall.now_ms())?)
    }

    /// Forgets hints once they have been delivered (or given up on), in
    /// one write batch, except those a newer write was merged into
    /// meanwhile: that one is still owed.
    pub fn forget_hints(&self, hints: &[Hint]) -> Result<(), ReplicaError> {
        let _guard = self
            .key_locks
            .lock(hints.iter().map(|hint| hint.key.as_ref()))?;
        let mut delivered = Vec::new();
        for hint in hints {
            if self.storage.hint(&hint.target, &hint.key)?.as_ref() == Some(&hint.encoded) {
                delivered.push((hint.target.as_str(), hint.key.as_ref()));
            }
        }
        Ok(self.storage.delete_hints(&delivered)?)
    }

    /// Takes a record sent to this node: merged into its own copy, or kept as
    /// a hint when it is meant for `hint_for`.
    pub fn receive(
        &self,
        key: &Bytes,
        encoded: &[u8],
        hint_for: Option<&str>,
    ) -> Result<(), ReplicaError> {
        match hint_for {
            Some(target) => self.keep_hint(target, key, encoded),
            None => self.apply_encoded(key, encoded),
        }
    }

    /// This node's records of a range, tombstones included.
    pub fn scan(&self, range: &ScanRange) -> Result<ScanPage, ReplicaError> {
        let pairs = self.storage.scan(range)?;
        let bytes = pairs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
        let full = range.is_full(pairs.len(), bytes);
        let records = pairs
            .into_iter()
            .map(|kv| {
                let record = Siblings::decode(&kv.value).map_err(ReplicaError::Corrupt)?;
                Ok((kv.key, record))
            })
            .collect::<Result<_, ReplicaError>>()?;
        Ok(ScanPage { records, full })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::storage::{MemoryFiles, RocksStorageOptions};
    use crate::versions::Hlc;

    fn open(files: &MemoryFiles, wall: &WallClock) -> LocalReplica {
        let options = RocksStorageOptions {
            in_memory: Some(files.clone()),
            ..Default::default()
        };
        let storage = Arc::new(RocksStorage::open(Path::new("/db"), "n1", &options).expect("open"));
        LocalReplica::open_with_clock(storage, "n1", ConflictMode::Siblings, wall.clone())
            .expect("replica")
    }

    fn stamped_at(ms: u64) -> Siblings {
        Siblings::new().update(
            &CausalContext::new(),
            Some(Bytes::from_static(b"v")),
            &Actor::new("n2", 1),
            Hlc::new(ms, 0),
        )
    }

    /// A delete the client sent without a context removes every value
    /// this replica holds, also those the context its coordinator read
    /// from other replicas does not cover (this replica's own answer may
    /// not have been among the R); a delete with a client's context removes
    /// only what that context covers.
    #[test]
    fn a_blind_delete_removes_what_this_replica_holds_beyond_the_read_context() {
        let wall = WallClock::manual(1_000_000);
        for blind in [true, false] {
            let files = MemoryFiles::new().expect("files");
            let replica = open(&files, &wall);
            let key = Bytes::from_static(b"k");
            replica
                .update(&put(b"k", b"mine"))
                .expect("a value only this replica holds");
            // What the other replicas answered: a value of another node's.
            let read_elsewhere = stamped_at(wall.now_ms());
            replica.apply(&key, &read_elsewhere).expect("apply");
            let deleted = replica
                .update(&Update {
                    key: key.clone(),
                    context: read_elsewhere.context(),
                    value: None,
                    expires_at_ms: 0,
                    blind,
                })
                .expect("delete");
            let left = deleted.visible_data(ConflictMode::Siblings, wall.now_ms());
            if blind {
                assert!(left.is_empty(), "a blind delete left {left:?}");
            } else {
                assert_eq!(
                    left,
                    vec![Bytes::from_static(b"mine")],
                    "unseen by the client's context"
                );
            }
        }
    }

    /// A batch read from memory gives what the full one gives, byte cap
    /// included, for every cap from nothing to everything.
    #[test]
    fn a_batch_read_from_memory_matches_the_full_read() {
        let files = MemoryFiles::new().expect("files");
        let wall = WallClock::manual(1_000_000);
        let replica = open(&files, &wall);
        for key in [&b"a"[..], b"b", b"c", b"d"] {
            replica
                .update(&Update {
                    key: Bytes::copy_from_slice(key),
                    ..put(b"", b"a value of some bytes")
                })
                .expect("put");
        }
        let keys: Vec<Bytes> = [&b"a"[..], b"b", b"x", b"c", b"d"]
            .iter()
            .map(|k| Bytes::copy_from_slice(k))
            .collect();
        for cap in 0..400 {
            let full = replica.read_many(&keys, cap).expect("read_many");
            assert_eq!(
                replica.read_many_cached(&keys, cap).expect("cached"),
                Cached::Hit(full),
                "cap {cap}"
            );
        }
    }

    #[test]
    fn timestamps_beyond_the_clock_offset_are_refused_not_adopted() {
        let files = MemoryFiles::new().expect("files");
        let wall = WallClock::manual(1_000_000);
        let replica = open(&files, &wall);
        let key = Bytes::from_static(b"k");
        let far = stamped_at(1_000_000 + 10_000);
        for refused in [
            replica.apply(&key, &far).map(|_| ()),
            replica.update(&overwrite(&key, &far)).map(|_| ()),
        ] {
            assert!(
                matches!(
                    refused,
                    Err(ReplicaError::ClockAhead {
                        ahead_ms: 10_000,
                        limit_ms: 500,
                        ..
                    })
                ),
                "{refused:?}"
            );
        }
        assert!(
            replica.read(&key).expect("read").is_none(),
            "nothing was stored"
        );
        let near = stamped_at(1_000_000 + 400);
        replica.apply(&key, &near).expect("within the offset");
        let written = replica.update(&overwrite(&key, &near)).expect("write");
        assert!(written.max_hlc() > near.max_hlc());
        assert!(written.max_hlc().physical_ms() < 1_000_000 + 1_000);
    }

    #[test]
    fn the_clock_never_goes_backwards_across_a_restart() {
        let files = MemoryFiles::new().expect("files");
        let key = Bytes::from_static(b"k");
        let before = {
            let replica = open(&files, &WallClock::manual(5_000_000));
            replica.update(&put(b"k", b"v")).expect("write").max_hlc()
        };
        // The wall clock stepped back a whole minute while the node was down.
        let replica = open(&files, &WallClock::manual(5_000_000 - 60_000));
        let after = replica.update(&put(b"k", b"w")).expect("write").max_hlc();
        assert!(after > before, "{after:?} after {before:?}");
        // And the restarted node's writes are new dots, not continuations.
        let record = replica.read(&key).expect("read").expect("record");
        assert_eq!(record.actors().count(), 2, "{record:?}");
    }

    fn put(key: &'static [u8], value: &'static [u8]) -> Update {
        Update {
            key: Bytes::from_static(key),
            context: CausalContext::new(),
            value: Some(Bytes::from_static(value)),
            expires_at_ms: 0,
            blind: false,
        }
    }

    /// A put of `key` that replaces what `read` holds.
    fn overwrite(key: &Bytes, read: &Siblings) -> Update {
        Update {
            key: key.clone(),
            context: read.context(),
            value: Some(Bytes::from_static(b"w")),
            expires_at_ms: 0,
            blind: false,
        }
    }

    #[test]
    fn a_batch_lands_whole_or_not_at_all() {
        let wall = WallClock::manual(1_000_000);
        let files = MemoryFiles::new().expect("files");
        let replica = open(&files, &wall);
        let ahead = stamped_at(wall.now_ms() + 10 * DEFAULT_MAX_CLOCK_OFFSET_MS);

        // One record of a peer's batch is refused: none of it is stored.
        let incoming = vec![
            (Bytes::from_static(b"a"), stamped_at(wall.now_ms())),
            (Bytes::from_static(b"b"), ahead.clone()),
        ];
        assert!(matches!(
            replica.apply_many(&incoming),
            Err(ReplicaError::ClockAhead { .. })
        ));
        assert_eq!(replica.read(b"a").expect("read"), None);

        // One write of a coordinated batch is refused: none of it is stored.
        let mut refused = put(b"d", b"4");
        refused.context = ahead.context();
        let batch = vec![put(b"c", b"3"), refused];
        assert!(matches!(
            replica.update_many(&batch),
            Err(ReplicaError::ClockAhead { .. })
        ));
        assert_eq!(replica.read(b"c").expect("read"), None);

        // A good batch: every write stored, a key named twice updated twice,
        // the second time as a sibling of the first (no context).
        let records: Vec<Siblings> = replica
            .update_many(&[put(b"c", b"3"), put(b"e", b"5"), put(b"c", b"33")])
            .expect("batch")
            .into_iter()
            .map(|r| r.expect("within the bound"))
            .collect();
        assert_eq!(records.len(), 3);
        let c = replica.read(b"c").expect("read").expect("c stored");
        assert_eq!(c, records[2]);
        assert_eq!(c.values().len(), 2, "both writes of c are siblings");
        assert_eq!(replica.read(b"e").expect("read"), Some(records[1].clone()));

        // A peer's batch merges like single applies.
        replica
            .apply_many(&[(Bytes::from_static(b"a"), stamped_at(wall.now_ms()))])
            .expect("apply");
        assert!(replica.read(b"a").expect("read").is_some());
    }

    #[test]
    fn a_hint_merges_later_writes_and_is_forgotten_only_as_delivered() {
        let wall = WallClock::manual(1_000_000);
        let files = MemoryFiles::new().expect("files");
        let replica = open(&files, &wall);
        let first = replica.update(&put(b"k", b"1")).expect("first");
        replica
            .keep_hint("n2", b"k", &first.encode())
            .expect("keep");
        let delivered = replica.storage().hints(16, 16).expect("hints");
        assert_eq!(delivered.len(), 1);

        // A second write for the same target lands while the first is
        // being delivered: the hint now holds both.
        let second = replica.update(&put(b"k", b"2")).expect("second");
        replica
            .keep_hint("n2", b"k", &second.encode())
            .expect("keep");
        let kept = replica.storage().hints(16, 16).expect("hints");
        let merged = Siblings::decode(&kept[0].encoded).expect("decodes");
        assert!(merged.descends(&first) && merged.descends(&second));

        // Forgetting what was delivered keeps the newer hint...
        replica.forget_hints(&delivered).expect("forget");
        assert_eq!(replica.storage().hints(16, 16).expect("hints").len(), 1);
        // ...and forgetting the hint as it now is removes it.
        replica.forget_hints(&kept).expect("forget");
        assert!(replica.storage().hints(16, 16).expect("hints").is_empty());
    }

    /// One step of a client history on one key, for the bound's model test.
    #[derive(Debug, Clone)]
    enum Step {
        /// A put of `size` bytes with the context of the read `reads_back`
        /// steps ago, or none.
        Put {
            size: usize,
            context: Option<usize>,
        },
        Delete {
            context: Option<usize>,
        },
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0usize..=6, proptest::option::of(0usize..4))
                .prop_map(|(size, context)| Step::Put { size, context }),
            1 => proptest::option::of(0usize..4).prop_map(|context| Step::Delete { context }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Against a model of the bound, over generated histories of puts
        /// and deletes with and without contexts, single and batched: a put
        /// is refused exactly when it would grow the record past a limit; a
        /// refused put changes nothing stored, and a batch's other writes
        /// still land; a delete is never refused; and a put with the context
        /// of the whole record always goes through, so a key can always be
        /// brought back under the bound.
        #[test]
        fn a_put_is_refused_exactly_when_it_would_grow_the_record_past_the_bound(
            steps in proptest::collection::vec(step(), 1..40),
            batched in proptest::collection::vec(proptest::bool::ANY, 40),
        ) {
            let bound = RecordBound { max_siblings: 3, max_bytes: 10 };
            let wall = WallClock::manual(1_000_000);
            let files = MemoryFiles::new().expect("files");
            let replica = open(&files, &wall).with_record_bound(bound);
            let key = Bytes::from_static(b"k");
            let mut reads: Vec<Siblings> = Vec::new();
            let (mut admitted, mut refused) = (0, 0);
            for (i, step) in steps.into_iter().enumerate() {
                let before = replica.read(&key).expect("read").unwrap_or_default();
                reads.push(before.clone());
                let context_of = |back: Option<usize>| {
                    back.map_or_else(CausalContext::new, |b| {
                        reads[reads.len().saturating_sub(1 + b)].context()
                    })
                };
                let (value, context) = match &step {
                    Step::Put { size, context } => (Some(Bytes::from(vec![b'v'; *size])), context_of(*context)),
                    Step::Delete { context } => (None, context_of(*context)),
                };
                let whole = matches!(step, Step::Put { context: Some(0), .. });
                let update = Update {
                    key: key.clone(),
                    blind: context.is_empty(),
                    context,
                    value: value.clone(),
                    expires_at_ms: 0,
                };
                // The model: what the put would make, stamped on a copy.
                let would = before.update_with(
                    ConflictMode::Siblings,
                    &update.context,
                    value.clone(),
                    0,
                    &Actor::new("model", 1),
                    Hlc::new(u64::MAX >> 20, 0),
                );
                let (was, will) = (RecordSize::of(&before), RecordSize::of(&would));
                let grows_past = (will.siblings > 3 && will.siblings > was.siblings)
                    || (will.bytes > 10 && will.bytes > was.bytes);
                let expect_refused = value.is_some() && grows_past;
                let outcome = if batched[i] {
                    // Beside a write of another key, which must land anyway.
                    let other = Update {
                        key: Bytes::from(format!("other-{i}")),
                        context: CausalContext::new(),
                        blind: true,
                        value: Some(Bytes::from_static(b"o")),
                        expires_at_ms: 0,
                    };
                    let mut results = replica.update_many(&[update, other]).expect("batch");
                    let other_result = results.pop().expect("two results");
                    proptest::prop_assert!(other_result.is_ok());
                    let stored = replica.read(format!("other-{i}").as_bytes()).expect("read");
                    proptest::prop_assert!(stored.is_some(), "the other write landed");
                    results.pop().expect("two results").map_err(ReplicaError::from)
                } else {
                    replica.update(&update)
                };
                let after = replica.read(&key).expect("read").unwrap_or_default();
                if whole {
                    proptest::prop_assert!(outcome.is_ok(), "a put with the whole record's context replaces it: {:?}", outcome);
                }
                match outcome {
                    Ok(_) => {
                        admitted += 1;
                        proptest::prop_assert!(!expect_refused, "admitted a put past the bound: {:?} -> {:?}", was, RecordSize::of(&after));
                        if value.is_some() {
                            proptest::prop_assert_eq!(RecordSize::of(&after), will);
                        }
                    }
                    Err(ReplicaError::Bound(_)) => {
                        refused += 1;
                        proptest::prop_assert!(expect_refused, "refused a put within the bound: {:?} -> {:?}", was, will);
                        proptest::prop_assert_eq!(&after, &before, "a refused put changes nothing");
                    }
                    Err(other) => proptest::prop_assert!(false, "unexpected error {}", other),
                }
            }
            // Both outcomes occur across the generated histories; printed for
            // the record of what was checked.
            println!("bound model: {admitted} puts and deletes admitted, {refused} refused");
        }
    }
}
