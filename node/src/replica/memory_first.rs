//! Reads that memory can answer are answered on the runtime thread that
//! asks; only the others go to the blocking pool.
//!
//! A read of a key that sits in a memtable or the block cache costs
//! microseconds, while handing it to tokio's blocking pool and back costs
//! two thread wake-ups, and context switches and wake-ups were the largest
//! share of a get's CPU on three nodes (docs/benchmarks/profile.md).
//! RocksDB's block-cache read tier answers from memory or says that it
//! would have to read a table file, so a runtime thread never waits for
//! the disk here.

use std::sync::Arc;

use bytes::Bytes;

use super::{blocking, LocalReplica, ReplicaError};
use crate::{storage::Cached, versions::Siblings};

/// Most keys a batch read answers on a runtime thread: a thread's turn
/// between two awaits stays within tens of microseconds.
const INLINE_KEYS: usize = 32;

/// [`LocalReplica::read`], from memory when it can.
pub async fn read(local: &Arc<LocalReplica>, key: Bytes) -> Result<Option<Siblings>, ReplicaError> {
    if let Cached::Hit(record) = local.read_cached(&key)? {
        return Ok(record);
    }
    let local = local.clone();
    blocking(move || local.read(&key)).await
}

/// [`LocalReplica::read_many`], from memory when every key can be.
pub async fn read_many(
    local: &Arc<LocalReplica>,
    keys: Vec<Bytes>,
    cap: usize,
) -> Result<Vec<Option<Siblings>>, ReplicaError> {
    if keys.len() <= INLINE_KEYS {
        if let Cached::Hit(records) = local.read_many_cached(&keys, cap)? {
            return Ok(records);
        }
    }
    let local = local.clone();
    blocking(move || local.read_many(&keys, cap)).await
}
