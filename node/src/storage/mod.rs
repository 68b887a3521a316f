//! Local storage: the engine one node keeps its replicas in.
//!
//! The [`Storage`] trait is what the layers above see. It is synchronous on
//! purpose: RocksDB calls block, so callers run them on tokio's blocking pool,
//! where concurrent writers meet inside RocksDB and share one WAL sync. The
//! one call that never blocks on a file, `RocksStorage::get_cached`, may run
//! on the runtime (`replica::memory_first`).

mod disk_space;
mod rocks;
mod stored_value;

use std::{fmt, time::Duration};

use bytes::Bytes;

pub use disk_space::Reserve;
pub use rocks::{Hint, MemoryFiles, PurgeHook, RocksStorage, RocksStorageOptions};
pub use stored_value::now_millis;

/// An answer storage gave from memory, or the news that it would have had
/// to read a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached<T> {
    Hit(T),
    Miss,
}

/// One change in an atomic write batch (the seed's `storage.Modify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modify {
    /// Store `value` under `key`, expiring at `expires_at_ms` (Unix
    /// milliseconds) when set.
    Put {
        key: Bytes,
        value: Bytes,
        expires_at_ms: Option<u64>,
    },
    /// Remove `key`.
    Delete { key: Bytes },
}

/// A bytewise key range to scan, `start` inclusive and `end` exclusive.
#[derive(Debug, Clone, Default)]
pub struct ScanRange {
    /// First key, inclusive; empty for the start of the keyspace.
    pub start: Bytes,
    /// End key, exclusive; empty for the end of the keyspace.
    pub end: Bytes,
    /// Most pairs to return.
    pub limit: usize,
    /// Leave values out.
    pub key_only: bool,
    /// Walk from the end of the range towards its start.
    pub reverse: bool,
    /// Stop once the pairs returned hold this many bytes of keys and
    /// values (at least one pair is returned, so a scan always moves on);
    /// `None` for no cap.
    pub max_bytes: Option<usize>,
}

impl ScanRange {
    /// Whether a page of `pairs` pairs holding `bytes` bytes stopped at a
    /// limit, so pairs past its last one may exist.
    pub fn is_full(&self, pairs: usize, bytes: usize) -> bool {
        pairs >= self.limit || self.max_bytes.is_some_and(|cap| bytes >= cap)
    }
}

/// A key and its live value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
}

/// How acknowledged writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every acknowledged write is fsync'd before the acknowledgement.
    /// Concurrent writers are grouped by RocksDB into one sync.
    Sync,
    /// Writes are acknowledged once in the WAL's OS buffer, and the WAL is
    /// fsync'd on this period. A machine crash loses at most one period;
    /// a process crash loses nothing.
    Periodic(Duration),
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Sync => write!(f, "sync"),
            Durability::Periodic(period) => write!(f, "periodic({}ms)", period.as_millis()),
        }
    }
}

/// A storage failure, with the operation it interrupted.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("opening the database at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("storage {op} failed: {source}")]
    Engine {
        op: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    #[error("stored record for a key of {key_len} bytes is corrupt: {reason}")]
    Corrupt { key_len: usize, reason: String },
    #[error("the data volume has {free} bytes free, less than --min-free-disk-bytes {min_free}: writes are refused until space is freed")]
    DiskFull { free: u64, min_free: u64 },
    #[error("column family {0} is missing")]
    MissingColumnFamily(&'static str),
    #[error("data dir {path} belongs to node {found}, not {expected}")]
    WrongNode {
        path: String,
        found: String,
        expected: String,
    },
}

impl StorageError {
    /// Whether retrying later may succeed (a busy or failing disk) as opposed
    /// to a fault that needs an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::DiskFull { .. } => true,
            StorageError::Engine { source, .. } => matches!(
                source.kind(),
                rocksdb::ErrorKind::IOError
                    | rocksdb::ErrorKind::Busy
                    | rocksdb::ErrorKind::TryAgain
                    | rocksdb::ErrorKind::TimedOut
                    | rocksdb::ErrorKind::Incomplete
                    | rocksdb::ErrorKind::ShutdownInProgress
            ),
            _ => false,
        }
    }
}

/// The storage engine of one node.
pub trait Storage: Send + Sync + 'static {
    /// The live value of `key`, if any. Expired values are absent.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError>;
    /// Applies every change atomically.
    fn write(&self, batch: Vec<Modify>) -> Result<(), StorageError>;
    /// Live pairs of a range, in key order (or reverse order).
    fn scan(&self, range: &ScanRange) -> Result<Vec<KeyValue>, StorageError>;
    /// Persists memtables to SST files and syncs the WAL.
    fn flush(&self) -> Result<(), StorageError>;
}
