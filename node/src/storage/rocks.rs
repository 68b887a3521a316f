//! The RocksDB implementation of [`Storage`].

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use bytes::Bytes;
use rocksdb::{
    compaction_filter::Decision, properties, statistics::Ticker, BlockBasedOptions, Cache,
    ColumnFamilyDescriptor, DBCompressionType, Options, ReadOptions, ReadTier, WriteBatch,
    WriteOptions, DB,
};

use super::{
    disk_space::DiskGuard,
    stored_value::{now_millis, payload, raw_is_expired, StoredValue},
    Cached, Durability, KeyValue, Modify, ScanRange, Storage, StorageError,
};

const CF_DATA: &str = "data";
const CF_META: &str = "meta";
const CF_HINTS: &str = "hints";
const META_NODE_ID: &[u8] = b"node_id";

/// Decides, during compaction, whether a live record may be dropped (given
/// its key and stored value): how tombstones are purged without the storage
/// layer knowing what a tombstone is.
#[derive(Clone)]
pub struct PurgeHook(pub Arc<PurgeFn>);

/// (key, stored value) → whether compaction may drop the record.
pub type PurgeFn = dyn Fn(&[u8], &[u8]) -> bool + Send + Sync;

impl std::fmt::Debug for PurgeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PurgeHook")
    }
}

/// Tunables of the RocksDB engine.
#[derive(Debug, Clone)]
pub struct RocksStorageOptions {
    /// Extra purge rule applied by the compaction filter.
    pub purge: Option<PurgeHook>,
    pub durability: Durability,
    /// Memtable size of the data column family. Small values force frequent
    /// flushes and compactions, which tests use.
    pub write_buffer_bytes: usize,
    pub block_cache_bytes: usize,
    /// Table files RocksDB keeps open at most; -1 for all of them. The node
    /// sets its share of the file descriptors (`server::fd_budget`).
    pub max_open_files: i32,
    /// Keep the files in memory instead of on disk: the same engine, for
    /// simulations that open thousands of databases.
    pub in_memory: Option<MemoryFiles>,
    /// Writes that store data are refused while the data volume has less
    /// than this many bytes free; 0 for no margin.
    pub min_free_disk_bytes: u64,
}

/// An in-memory file system for RocksDB. Clones share the files, so a
/// database closed and opened again on the same `MemoryFiles` finds what it
/// wrote, as after a process restart.
#[derive(Clone)]
pub struct MemoryFiles(rocksdb::Env);

impl MemoryFiles {
    pub fn new() -> Result<Self, StorageError> {
        rocksdb::Env::mem_env()
            .map(Self)
            .map_err(engine("create an in-memory file system"))
    }
}

impl std::fmt::Debug for MemoryFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryFiles")
    }
}

impl Default for RocksStorageOptions {
    fn default() -> Self {
        Self {
            purge: None,
            durability: Durability::Sync,
            write_buffer_bytes: 64 << 20,
            block_cache_bytes: 256 << 20,
            max_open_files: -1,
            in_memory: None,
            min_free_disk_bytes: 0,
        }
    }
}

/// RocksDB with a `data` and a `meta` column family, WAL always on.
pub struct RocksStorage {
    db: Arc<DB>,
    options: Options,
    write_options: WriteOptions,
    path: PathBuf,
    wal_syncer: Option<WalSyncer>,
    disk: DiskGuard,
}

impl std::fmt::Debug for RocksStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStorage")
            .field("path", &self.path)
            .finish()
    }
}

impl RocksStorage {
    /// Opens (or creates) the database under `path`, owned by `node_id`.
    /// Refuses a data dir that another node created, so that a mis-mounted
    /// volume is never served under the wrong identity.
    pub fn open(
        path: &Path,
        node_id: &str,
        opts: &RocksStorageOptions,
    ) -> Result<Self, StorageError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        if opts.in_memory.is_none() {
            // Statistics feed /metrics. An in-memory database serves a
            // simulation that opens thousands of them, where collecting and
            // dumping statistics is most of the cost of an open.
            db_opts.enable_statistics();
        } else {
            db_opts.set_stats_dump_period_sec(0);
            db_opts.set_stats_persist_period_sec(0);
        }
        db_opts.increase_parallelism(2);
        db_opts.set_max_open_files(opts.max_open_files);
        db_opts.set_keep_log_file_num(4);
        // Concurrent writers share the memtable without a lock of ours.
        db_opts.set_allow_concurrent_memtable_write(true);
        db_opts.set_enable_pipelined_write(true);
        if let Some(files) = &opts.in_memory {
            db_opts.set_env(&files.0);
        }

        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(opts.block_cache_bytes));
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);

        let mut data_opts = Options::default();
        data_opts.set_block_based_table_factory(&table);
        data_opts.set_compression_type(DBCompressionType::Lz4);
        data_opts.set_write_buffer_size(opts.write_buffer_bytes);
        // After a write failed for lack of space, RocksDB resumes only once
        // the volume has room for its largest memtable: no column family's,
        // the unused default one included, may be larger than the data's
        // (64 MiB each by default).
        let mut default_opts = Options::default();
        default_opts.set_write_buffer_size(opts.write_buffer_bytes.min(1 << 20));
        let mut meta_opts = Options::default();
        meta_opts.set_write_buffer_size(opts.write_buffer_bytes.min(1 << 20));
        let mut hints_opts = Options::default();
        hints_opts.set_write_buffer_size(opts.write_buffer_bytes);
        let purge = opts.purge.clone();
        data_opts.set_compaction_filter("ringkv-ttl-gc", move |_level, key, value| {
            let expired = raw_is_expired(value, now_millis());
            let purged = purge
                .as_ref()
                .zip(payload(value))
                .is_some_and(|(hook, stored)| (hook.0)(key, stored));
            if expired || purged {
                Decision::Remove
            } else {
                Decision::Keep
            }
        });

        let cfs = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, default_opts),
            ColumnFamilyDescriptor::new(CF_DATA, data_opts),
            ColumnFamilyDescriptor::new(CF_META, meta_opts),
            ColumnFamilyDescriptor::new(CF_HINTS, hints_opts),
        ];
        let db =
            DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|source| StorageError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let db = Arc::new(db);

        let mut write_options = WriteOptions::default();
        write_options.set_sync(opts.durability == Durability::Sync);
        let wal_syncer = match opts.durability {
            Durability::Sync => None,
            Durability::Periodic(period) => Some(WalSyncer::start(db.clone(), period)),
        };

        let storage = Self {
            db,
            options: db_opts,
            write_options,
            path: path.to_path_buf(),
            wal_syncer,
            disk: DiskGuard::new(path, opts.min_free_disk_bytes),
        };
        storage.claim_for(node_id)?;
        Ok(storage)
    }

    fn claim_for(&self, node_id: &str) -> Result<(), StorageError> {
        let meta = self.cf(CF_META)?;
        let stored = self
            .db
            .get_cf(meta, META_NODE_ID)
            .map_err(|source| StorageError::Engine {
                op: "read node id",
                source,
            })?;
        match stored {
            Some(found) if found != node_id.as_bytes() => Err(StorageError::WrongNode {
                path: self.path.display().to_string(),
                found: String::from_utf8_lossy(&found).into_owned(),
                expected: node_id.to_string(),
            }),
            Some(_) => Ok(()),
            None => {
                let mut sync = WriteOptions::default();
                sync.set_sync(true);
                self.db
                    .put_cf_opt(meta, META_NODE_ID, node_id.as_bytes(), &sync)
                    .map_err(|source| StorageError::Engine {
                        op: "write node id",
                        source,
                    })
            }
        }
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or(StorageError::MissingColumnFamily(name))
    }

    /// A value of the node's own metadata.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get_cf(self.cf(CF_META)?, key.as_bytes())
            .map_err(engine("read metadata"))
    }

    /// Stores a value of the node's own metadata, synced.
    pub fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db
            .put_cf_opt(self.cf(CF_META)?, key.as_bytes(), value, &sync)
            .map_err(engine("write metadata"))
    }

    /// Removes a value of the node's own metadata, synced.
    pub fn meta_delete(&self, key: &str) -> Result<(), StorageError> {
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db
            .delete_cf_opt(self.cf(CF_META)?, key.as_bytes(), &sync)
            .map_err(engine("delete metadata"))
    }

    /// Stores several metadata values in one synced batch.
    pub fn meta_put_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StorageError> {
        let meta = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        for (key, value) in entries {
            batch.put_cf(meta, key.as_bytes(), value);
        }
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db
            .write_opt(batch, &sync)
            .map_err(engine("write metadata"))
    }

    /// Keeps the `encoded` record of `key` for node `target`, stamped with
    /// `now_ms`.
    pub fn put_hint(
        &self,
        target: &str,
        key: &[u8],
        encoded: &[u8],
        now_ms: u64,
    ) -> Result<(), StorageError> {
        self.disk.check()?;
        let mut value = Vec::with_capacity(8 + encoded.len());
        value.extend_from_slice(&now_ms.to_be_bytes());
        value.extend_from_slice(encoded);
        self.db
            .put_cf_opt(
                self.cf(CF_HINTS)?,
                hint_key(target, key),
                value,
                &self.write_options,
            )
            .map_err(engine("write hint"))
    }

    /// The record of the hint kept for `target` under `key`, if any.
    pub fn hint(&self, target: &str, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        let raw = self
            .db
            .get_cf(self.cf(CF_HINTS)?, hint_key(target, key))
            .map_err(engine("read hint"))?;
        Ok(raw
            .filter(|raw| raw.len() >= 8)
            .map(|raw| Bytes::copy_from_slice(&raw[8..])))
    }

    /// Up to `limit` hints, at most `per_target` of each target, so that one
    /// target with many hints (a node that stays down) never keeps the
    /// others' hints from being delivered.
    pub fn hints(&self, per_target: usize, limit: usize) -> Result<Vec<Hint>, StorageError> {
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_HINTS)?);
        iter.seek_to_first();
        let mut out = Vec::new();
        let mut taken: Option<(Vec<u8>, usize)> = None;
        while out.len() < limit {
            let (Some(raw_key), Some(raw)) = (iter.key(), iter.value()) else {
                break;
            };
            let Some(split) = raw_key.iter().position(|b| *b == 0) else {
                iter.next();
                continue;
            };
            let target = &raw_key[..split];
            let count = match &mut taken {
                Some((current, count)) if current.as_slice() == target => count,
                _ => &mut taken.insert((target.to_vec(), 0)).1,
            };
            if *count >= per_target {
                // Past this target's share: on to the next target, whose
                // keys start right after every `target\0…` key.
                let mut next = target.to_vec();
                next.push(1);
                iter.seek(&next);
                continue;
            }
            *count += 1;
            if raw.len() >= 8 {
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&raw[..8]);
                out.push(Hint {
                    target: String::from_utf8_lossy(target).into_owned(),
                    key: Bytes::copy_from_slice(&raw_key[split + 1..]),
                    encoded: Bytes::copy_from_slice(&raw[8..]),
                    stored_at_ms: u64::from_be_bytes(stamp),
                });
            }
            iter.next();
        }
        iter.status().map_err(engine("scan hints"))?;
        Ok(out)
    }

    /// Removes delivered or expired hints, in one write batch.
    pub fn delete_hints(&self, hints: &[(&str, &[u8])]) -> Result<(), StorageError> {
        if hints.is_empty() {
            return Ok(());
        }
        let cf = self.cf(CF_HINTS)?;
        let mut wb = WriteBatch::default();
        for (target, key) in hints {
            wb.delete_cf(cf, hint_key(target, key));
        }
        self.db
            .write_opt(wb, &self.write_options)
            .map_err(engine("delete hints"))
    }

    /// Whether any hint is waiting.
    pub fn has_hints(&self) -> Result<bool, StorageError> {
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_HINTS)?);
        iter.seek_to_first();
        let found = iter.valid();
        iter.status().map_err(engine("scan hints"))?;
        Ok(found)
    }

    /// Calls `visit` with each live (unexpired) record of the data column
    /// family after `start_after`, in key order, until it returns false.
    pub fn for_each_after(
        &self,
        start_after: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_DATA)?);
        iter.seek(start_after);
        if iter.key() == Some(start_after) && !start_after.is_empty() {
            iter.next();
        }
        let now = now_millis();
        while let (Some(key), Some(raw)) = (iter.key(), iter.value()) {
            let stored = StoredValue::decode(key, raw)?;
            if !stored.is_expired(now) && !visit(key, &stored.value) {
                break;
            }
            iter.next();
        }
        iter.status().map_err(engine("scan"))
    }

    /// How many hints are waiting, estimated by RocksDB.
    pub fn pending_hints(&self) -> u64 {
        self.cf(CF_HINTS)
            .ok()
            .and_then(|cf| {
                self.db
                    .property_int_value_cf(cf, properties::ESTIMATE_NUM_KEYS)
                    .ok()
                    .flatten()
            })
            .unwrap_or(0)
    }

    /// Syncs the WAL to disk: every write so far survives a crash.
    pub fn sync_wal(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(engine("sync WAL"))
    }

    /// Compacts the whole data column family, memtables included, so that
    /// the compaction filter purges what it may now rather than whenever
    /// write traffic happens to compact the files holding it.
    pub fn compact(&self) -> Result<Compaction, StorageError> {
        let data = self.cf(CF_DATA)?;
        let live_sst_bytes = || self.stats().live_sst_bytes;
        let dropped = || self.options.get_ticker_count(Ticker::CompactionKeyDropUser);
        let (bytes_before, dropped_before) = (live_sst_bytes(), dropped());
        self.db.flush_cf(data).map_err(engine("flush"))?;
        // The last level is compacted too, where the oldest tombstones
        // lie: RocksDB does so by default for a column family with a
        // compaction filter, as the data one has.
        self.db.compact_range_cf(data, None::<&[u8]>, None::<&[u8]>);
        Ok(Compaction {
            records_dropped: dropped().saturating_sub(dropped_before),
            live_sst_bytes_before: bytes_before,
            live_sst_bytes_after: live_sst_bytes(),
        })
    }

    /// Engine figures for the metrics endpoint.
    pub fn stats(&self) -> EngineStats {
        let data = self.cf(CF_DATA).ok();
        let property = |name: &std::ffi::CStr| -> u64 {
            data.and_then(|cf| self.db.property_int_value_cf(cf, name).ok().flatten())
                .unwrap_or(0)
        };
        let tickers = [
            Ticker::BlockCacheHit,
            Ticker::BlockCacheMiss,
            Ticker::BytesWritten,
            Ticker::BytesRead,
            Ticker::NumberKeysWritten,
            Ticker::NumberKeysRead,
            Ticker::WalFileSynced,
            Ticker::CompactReadBytes,
            Ticker::CompactWriteBytes,
            Ticker::CompactionKeyDropUser,
        ]
        .into_iter()
        .map(|ticker| (ticker.name(), self.options.get_ticker_count(ticker)))
        .collect();
        EngineStats {
            estimated_keys: property(properties::ESTIMATE_NUM_KEYS),
            live_sst_bytes: property(properties::LIVE_SST_FILES_SIZE),
            memtable_bytes: property(properties::CUR_SIZE_ALL_MEM_TABLES),
            running_compactions: property(properties::NUM_RUNNING_COMPACTIONS),
            running_flushes: property(properties::NUM_RUNNING_FLUSHES),
            background_errors: property(properties::BACKGROUND_ERRORS),
            tickers,
        }
    }

    fn read_options(range: &ScanRange) -> ReadOptions {
        let mut read = ReadOptions::default();
        if !range.start.is_empty() {
            read.set_iterate_lower_bound(range.start.to_vec());
        }
        if !range.end.is_empty() {
            read.set_iterate_upper_bound(range.end.to_vec());
        }
        read
    }
}

/// A write kept for a node that could not take it.
#[derive(Debug, Clone)]
pub struct Hint {
    pub target: String,
    pub key: Bytes,
    /// The encoded record owed to `target`.
    pub encoded: Bytes,
    pub stored_at_ms: u64,
}

/// Node ids never contain NUL, so it separates the target from the key and
/// keeps each target's hints together in key order.
fn hint_key(target: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() + 1 + key.len());
    out.extend_from_slice(target.as_bytes());
    out.push(0);
    out.extend_from_slice(key);
    out
}

/// What one explicit compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Records the compaction filter dropped meanwhile, by this compaction
    /// or one RocksDB ran by itself.
    pub records_dropped: u64,
    pub live_sst_bytes_before: u64,
    pub live_sst_bytes_after: u64,
}

/// A snapshot of RocksDB's own counters.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub estimated_keys: u64,
    pub live_sst_bytes: u64,
    pub memtable_bytes: u64,
    pub running_compactions: u64,
    pub running_flushes: u64,
    pub background_errors: u64,
    /// RocksDB ticker name and its cumulative count.
    pub tickers: Vec<(&'static str, u64)>,
}

fn engine(op: &'static str) -> impl FnOnce(rocksdb::Error) -> StorageError {
    move |source| StorageError::Engine { op, source }
}

/// The live value in what the engine stored under `key`.
fn live_value(key: &[u8], raw: Option<&[u8]>) -> Result<Option<Bytes>, StorageError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let stored = StoredValue::decode(key, raw)?;
    Ok((!stored.is_expired(now_millis())).then_some(stored.value))
}

impl RocksStorage {
    /// [`Storage::get`] from the memtables and the block cache alone, or
    /// [`Cached::Miss`] where the answer needs a read from a table file:
    /// a caller on the async runtime may then ask without waiting for the
    /// disk.
    pub fn get_cached(&self, key: &[u8]) -> Result<Cached<Option<Bytes>>, StorageError> {
        let data = self.cf(CF_DATA)?;
        let mut read = ReadOptions::default();
        read.set_read_tier(ReadTier::BlockCache);
        match self.db.get_pinned_cf_opt(data, key, &read) {
            Ok(raw) => Ok(Cached::Hit(live_value(key, raw.as_deref())?)),
            Err(error) if error.kind() == rocksdb::ErrorKind::Incomplete => Ok(Cached::Miss),
            Err(error) => Err(engine("get")(error)),
        }
    }
}

impl Storage for RocksStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        let data = self.cf(CF_DATA)?;
        let raw = self.db.get_pinned_cf(data, key).map_err(engine("get"))?;
        live_value(key, raw.as_deref())
    }

    fn write(&self, batch: Vec<Modify>) -> Result<(), StorageError> {
        // Batches that only delete go on: they are how space comes back.
        if batch
            .iter()
            .any(|change| matches!(change, Modify::Put { .. }))
        {
            self.disk.check()?;
        }
        let data = self.cf(CF_DATA)?;
        let mut wb = WriteBatch::default();
        for change in &batch {
            match change {
                Modify::Put {
                    key,
                    value,
                    expires_at_ms,
                } => wb.put_cf(data, key, StoredValue::encode(value, *expires_at_ms)),
                Modify::Delete { key } => wb.delete_cf(data, key),
            }
        }
        self.db
            .write_opt(wb, &self.write_options)
            .map_err(engine("write"))
    }

    fn scan(&self, range: &ScanRange) -> Result<Vec<KeyValue>, StorageError> {
        let data = self.cf(CF_DATA)?;
        let mut iter = self.db.raw_iterator_cf_opt(data, Self::read_options(range));
        if range.reverse {
            iter.seek_to_last();
        } else {
            iter.seek_to_first();
        }
        let now = now_millis();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while !range.is_full(out.len(), bytes) {
            let (Some(key), Some(raw)) = (iter.key(), iter.value()) else {
                break;
            };
            let stored = StoredValue::decode(key, raw)?;
            if !stored.is_expired(now) {
                bytes += key.len()
                    + if range.key_only {
                        0
                    } else {
                        stored.value.len()
                    };
                out.push(KeyValue {
                    key: Bytes::copy_from_slice(key),
                    value: if range.key_only {
                        Bytes::new()
                    } else {
                        stored.value
                    },
                });
            }
            if range.reverse {
                iter.prev();
            } else {
                iter.next();
            }
        }
        iter.status().map_err(engine("scan"))?;
        Ok(out)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(engine("sync WAL"))?;
        for name in [CF_DATA, CF_META, CF_HINTS] {
            self.db.flush_cf(self.cf(name)?).map_err(engine("flush"))?;
        }
        Ok(())
    }
}

impl Drop for RocksStorage {
    fn drop(&mut self) {
        if let Some(syncer) = self.wal_syncer.take() {
            syncer.stop();
        }
        // A final sync so that periodic mode loses nothing on a clean stop.
        if let Err(error) = self.db.flush_wal(true) {
            tracing::warn!(%error, "final WAL sync failed");
        }
    }
}

/// The background thread of periodic durability.
struct WalSyncer {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<()>,
}

impl WalSyncer {
    fn start(db: Arc<DB>, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                thread::park_timeout(period);
                if let Err(error) = db.flush_wal(true) {
                    tracing::error!(%error, "periodic WAL sync failed");
                }
            }
        });
        Self { stop, handle }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.thread().unpark();
        if self.handle.join().is_err() {
            tracing::error!("WAL sync thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn open(dir: &Path) -> RocksStorage {
        let opts = RocksStorageOptions {
            write_buffer_bytes: 64 << 10,
            ..Default::default()
        };
        RocksStorage::open(dir, "node-a", &opts).expect("opens")
    }

    fn put(key: &[u8], value: &[u8]) -> Modify {
        Modify::Put {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            expires_at_ms: None,
        }
    }

    fn all(limit: usize, reverse: bool) -> ScanRange {
        ScanRange {
            limit,
            reverse,
            ..Default::default()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// However the hints spread over targets, a round takes from every
        /// target: one node with many hints never starves the others.
        #[test]
        fn hint_rounds_take_from_every_target(
            counts in proptest::collection::vec(0usize..40, 1..6),
            per_target in 1usize..8,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let opts = RocksStorageOptions {
                durability: Durability::Periodic(Duration::from_secs(60)),
                ..Default::default()
            };
            let storage = RocksStorage::open(dir.path(), "node-a", &opts).expect("opens");
            for (t, count) in counts.iter().enumerate() {
                for i in 0..*count {
                    storage
                        .put_hint(&format!("n{t}"), format!("k{i}").as_bytes(), b"r", 1)
                        .expect("hint");
                }
            }
            let round = storage.hints(per_target, usize::MAX).expect("hints");
            for (t, count) in counts.iter().enumerate() {
                let taken = round.iter().filter(|h| h.target == format!("n{t}")).count();
                prop_assert_eq!(taken, (*count).min(per_target));
            }
        }
    }

    #[test]
    fn refuses_a_data_dir_of_another_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(open(dir.path()));
        let err = RocksStorage::open(dir.path(), "node-b", &RocksStorageOptions::default())
            .expect_err("refused");
        assert!(matches!(err, StorageError::WrongNode { .. }), "{err}");
    }

    #[test]
    fn scan_is_ordered_across_flushes_and_compactions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        // Three generations of keys, interleaved in key order, each ending up
        // in a different place: compacted SSTs, a flushed SST, the memtable.
        for generation in 0..3u32 {
            let batch = (0..500u32)
                .map(|i| put(format!("key-{:05}", i * 3 + generation).as_bytes(), b"v"))
                .collect();
            storage.write(batch).expect("write");
            match generation {
                0 => {
                    storage.flush().expect("flush");
                    storage.compact().expect("compact");
                }
                1 => storage.flush().expect("flush"),
                _ => {}
            }
        }
        let keys: Vec<_> = storage
            .scan(&all(usize::MAX, false))
            .expect("scan")
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys.len(), 1500);
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "ascending order");
        let reversed = storage.scan(&all(10, true)).expect("reverse scan");
        assert_eq!(reversed.len(), 10);
        assert_eq!(&reversed[0].key[..], b"key-01499");
        assert!(reversed.windows(2).all(|w| w[0].key > w[1].key));
    }

    #[test]
    fn expired_values_are_invisible_and_purged_by_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        let past = now_millis() - 1;
        storage
            .write(vec![
                Modify::Put {
                    key: Bytes::from_static(b"gone"),
                    value: Bytes::from_static(b"v"),
                    expires_at_ms: Some(past),
                },
                put(b"kept", b"v"),
            ])
            .expect("write");
        assert_eq!(storage.get(b"gone").expect("get"), None);
        assert_eq!(storage.scan(&all(10, false)).expect("scan").len(), 1);
        // Still in the memtable: the compaction flushes it first.
        let done = storage.compact().expect("compact");
        assert_eq!(done.records_dropped, 1, "{done:?}");
        assert!(done.live_sst_bytes_after > 0, "{done:?}");
        let dropped = storage
            .stats()
            .tickers
            .iter()
            .find(|(name, _)| *name == Ticker::CompactionKeyDropUser.name())
            .map(|(_, n)| *n);
        assert_eq!(
            dropped,
            Some(1),
            "the compaction filter purged the expired key"
        );
    }

    #[test]
    fn periodic_durability_keeps_writes_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = RocksStorageOptions {
            durability: Durability::Periodic(Duration::from_millis(10)),
            ..Default::default()
        };
        {
            let storage = RocksStorage::open(dir.path(), "n", &opts).expect("opens");
            storage.write(vec![put(b"k", b"v")]).expect("write");
        }
        let storage = RocksStorage::open(dir.path(), "n", &opts).expect("reopens");
        assert_eq!(storage.get(b"k").expect("get").as_deref(), Some(&b"v"[..]));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8),
        Delete(u8),
        Flush,
        Compact,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            3 => any::<u8>().prop_map(Op::Delete),
            1 => Just(Op::Flush),
            1 => Just(Op::Compact),
        ]
    }

    /// Applies `op` to the storage and to an ordered in-memory model of it.
    fn apply(storage: &RocksStorage, model: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: Op) {
        match op {
            Op::Put(k, v) => {
                storage.write(vec![put(&[k], &[v])]).expect("put");
                model.insert(vec![k], vec![v]);
            }
            Op::Delete(k) => {
                storage
                    .write(vec![Modify::Delete {
                        key: Bytes::copy_from_slice(&[k]),
                    }])
                    .expect("delete");
                model.remove(&vec![k]);
            }
            Op::Flush => storage.flush().expect("flush"),
            Op::Compact => {
                storage.compact().expect("compact");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Scans agree with an ordered in-memory model whatever mix of writes,
        /// deletes, flushes and compactions came before.
        #[test]
        fn scan_matches_model(ops in proptest::collection::vec(op(), 1..200),
                              start in any::<u8>(), len in 0u8..=255, limit in 1usize..300,
                              reverse in any::<bool>(), max_bytes in proptest::option::of(1usize..400)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let storage = open(dir.path());
            let mut model = BTreeMap::new();
            for op in ops {
                apply(&storage, &mut model, op);
            }
            let end = start.saturating_add(len);
            let range = ScanRange {
                start: Bytes::copy_from_slice(&[start]),
                end: Bytes::copy_from_slice(&[end]),
                limit,
                key_only: false,
                reverse,
                max_bytes,
            };
            let got: Vec<(Vec<u8>, Vec<u8>)> = storage.scan(&range).expect("scan")
                .into_iter().map(|kv| (kv.key.to_vec(), kv.value.to_vec())).collect();
            let in_range = model.range(vec![start]..vec![end]).map(|(k, v)| (k.clone(), v.clone()));
            let ordered: Vec<_> = if reverse {
                in_range.rev().collect()
            } else {
                in_range.collect()
            };
            // Pairs are taken while fewer than `limit` were and their bytes
            // stay under the cap: the pair that reaches the cap is the last.
            let mut want = Vec::new();
            let mut bytes = 0;
            for (k, v) in ordered {
                if want.len() >= limit || max_bytes.is_some_and(|cap| bytes >= cap) {
                    break;
                }
                bytes += k.len() + v.len();
                want.push((k, v));
            }
            prop_assert_eq!(got, want);
        }
    }

    #[derive(Debug, Clone)]
    enum CacheOp {
        Write(Op),
        /// Close and open the database: its block cache starts empty.
        Reopen,
        Get(u8),
    }

    fn cache_op() -> impl Strategy<Value = CacheOp> {
        prop_oneof![
            6 => op().prop_map(CacheOp::Write),
            1 => Just(CacheOp::Reopen),
            4 => any::<u8>().prop_map(CacheOp::Get),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// A read from memory alone either says it would need a file, or
        /// gives exactly what a full read gives, whatever writes, flushes,
        /// compactions, reopens and reads came before.
        #[test]
        fn a_cached_read_is_a_full_read_or_a_miss(ops in proptest::collection::vec(cache_op(), 1..200)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut storage = open(dir.path());
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    CacheOp::Write(op) => apply(&storage, &mut model, op),
                    CacheOp::Reopen => {
                        drop(storage);
                        storage = open(dir.path());
                    }
                    CacheOp::Get(k) => {
                        let want = model.get(&vec![k]).map(|v| Bytes::copy_from_slice(v));
                        if let Cached::Hit(got) = storage.get_cached(&[k]).expect("cached get") {
                            prop_assert_eq!(got, want.clone());
                        }
                        prop_assert_eq!(storage.get(&[k]).expect("get"), want);
                    }
                }
            }
        }
    }

    /// The memtable answers at once; after a restart a flushed key needs
    /// its table file, until a full read has brought its block into the
    /// cache.
    #[test]
    fn a_cached_read_misses_until_the_block_is_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = open(dir.path());
        storage.write(vec![put(b"k", b"v")]).expect("put");
        assert_eq!(
            storage.get_cached(b"k").expect("cached get"),
            Cached::Hit(Some(Bytes::from_static(b"v"))),
            "a key in the memtable"
        );
        storage.flush().expect("flush");
        drop(storage);
        let storage = open(dir.path());
        assert_eq!(
            storage.get_cached(b"k").expect("cached get"),
            Cached::Miss,
            "a flushed key after a restart, with nothing cached"
        );
        assert_eq!(
            storage.get(b"k").expect("get"),
            Some(Bytes::from_static(b"v"))
        );
        assert_eq!(
            storage.get_cached(b"k").expect("cached get"),
            Cached::Hit(Some(Bytes::from_static(b"v"))),
            "once a full read has cached its block"
        );
    }
}
