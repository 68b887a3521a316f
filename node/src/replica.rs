//! This node's replicas: versioned records in local storage.
//!
//! Every record is a dotted version vector set ([`Siblings`]). Writes that
//! this node coordinates get a new dot of its actor (node id plus epoch);
//! writes from peers and repairs are merged in. Read-modify-write of one key
//! is serialised by a striped lock, so different keys never wait on each
//! other and there is no global lock.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::{
    storage::{now_millis, Modify, RocksStorage, ScanRange, Storage, StorageError},
    versions::{Actor, CausalContext, ConflictMode, HlcClock, Siblings, VersionError},
};

const STRIPES: usize = 1024;
const META_EPOCH: &str = "epoch";

/// Why a local replica operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored record is unreadable: {0}")]
    Corrupt(VersionError),
    #[error("record from a peer is unreadable: {0}")]
    BadRecord(VersionError),
    #[error("causal context is unreadable: {0}")]
    BadContext(VersionError),
    #[error("key lock poisoned")]
    Poisoned,
}

/// Runs a replica call on tokio's blocking pool (RocksDB blocks) and maps
/// its failure to a gRPC status.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReplicaError> + Send + 'static,
) -> Result<T, tonic::Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| tonic::Status::internal(format!("storage task failed: {e}")))?
        .map_err(tonic::Status::from)
}

/// The local replica store of one node.
pub struct LocalReplica {
    storage: Arc<RocksStorage>,
    stripes: Vec<Mutex<()>>,
    actor: Actor,
    clock: HlcClock,
    mode: ConflictMode,
}

impl LocalReplica {
    /// Opens the replica store, starting a new actor epoch when the data dir
    /// has none: a node that lost its disk must never reuse old dots (Riak's
    /// kv679).
    pub fn open(
        storage: Arc<RocksStorage>,
        node_id: &str,
        mode: ConflictMode,
    ) -> Result<Self, ReplicaError> {
        let epoch = match storage.meta_get(META_EPOCH)? {
            Some(raw) if raw.len() == 8 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&raw);
                u64::from_be_bytes(bytes)
            }
            _ => {
                let epoch = now_millis();
                storage.meta_put(META_EPOCH, &epoch.to_be_bytes())?;
                tracing::info!(epoch, "started a new actor epoch for this data dir");
                epoch
            }
        };
        Ok(Self {
            storage,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            actor: Actor::new(node_id, epoch),
            clock: HlcClock::new(),
            mode,
        })
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    pub fn mode(&self) -> ConflictMode {
        self.mode
    }

    pub fn storage(&self) -> &Arc<RocksStorage> {
        &self.storage
    }

    fn stripe(&self, key: &[u8]) -> Result<std::sync::MutexGuard<'_, ()>, ReplicaError> {
        let index = (xxhash_rust::xxh3::xxh3_64(key) as usize) % STRIPES;
        self.stripes[index]
            .lock()
            .map_err(|_| ReplicaError::Poisoned)
    }

    /// This node's record of `key`.
    pub fn read(&self, key: &[u8]) -> Result<Option<Siblings>, ReplicaError> {
        match self.storage.get(key)? {
            Some(raw) => Ok(Some(Siblings::decode(&raw).map_err(ReplicaError::Corrupt)?)),
            None => Ok(None),
        }
    }

    fn write(&self, key: &Bytes, record: &Siblings) -> Result<(), ReplicaError> {
        self.storage.write(vec![Modify::Put {
            key: key.clone(),
            value: record.encode(),
            expires_at_ms: expiry_of(record),
        }])?;
        Ok(())
    }

    /// A write coordinated here: supersedes what `context` covers and gets a
    /// new dot of this node's actor.
    pub fn update(
        &self,
        key: &Bytes,
        context: &[u8],
        value: Option<Bytes>,
        expires_at_ms: u64,
    ) -> Result<Siblings, ReplicaError> {
        let context = if context.is_empty() {
            CausalContext::new()
        } else {
            CausalContext::from_bytes(context).map_err(ReplicaError::BadContext)?
        };
        let _guard = self.stripe(key)?;
        let local = self.read(key)?.unwrap_or_default();
        // A delete that names no context removes every value this replica
        // knows, as a raw delete is expected to; a put without context
        // stays a sibling of what it did not see.
        let context = if value.is_none() && context.is_empty() {
            local.context()
        } else {
            context
        };
        let updated = local.update_with(
            self.mode,
            &context,
            value,
            expires_at_ms,
            &self.actor,
            self.clock.now(),
        );
        self.write(key, &updated)?;
        Ok(updated)
    }

    /// Merges a record from a peer (a replicated write or a repair).
    /// Returns the merged record.
    pub fn apply(&self, key: &Bytes, incoming: &Siblings) -> Result<Siblings, ReplicaError> {
        self.clock.observe(incoming.max_hlc());
        let _guard = self.stripe(key)?;
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
    pub fn apply_encoded(&self, key: &Bytes, record: &[u8]) -> Result<(), ReplicaError> {
        let incoming = Siblings::decode(record).map_err(ReplicaError::BadRecord)?;
        self.apply(key, &incoming).map(|_| ())
    }

    /// Keeps `record` as a hint for node `target`, stamped now.
    pub fn keep_hint(&self, target: &str, key: &[u8], record: &[u8]) -> Result<(), ReplicaError> {
        Ok(self.storage.put_hint(target, key, record, now_millis())?)
    }

    /// Takes a record sent to this node: merged into its own copy, or kept as
    /// a hint when it is meant for `hint_for`.
    pub fn receive(
        &self,
        key: &Bytes,
        record: &[u8],
        hint_for: Option<&str>,
    ) -> Result<(), ReplicaError> {
        match hint_for {
            Some(target) => self.keep_hint(target, key, record),
            None => self.apply_encoded(key, record),
        }
    }

    /// This node's records of a range, tombstones included.
    pub fn scan(&self, range: &ScanRange) -> Result<Vec<(Bytes, Siblings)>, ReplicaError> {
        self.storage
            .scan(range)?
            .into_iter()
            .map(|kv| {
                let record = Siblings::decode(&kv.value).map_err(ReplicaError::Corrupt)?;
                Ok((kv.key, record))
            })
            .collect()
    }
}

/// A record expires when every value in it does; the compaction filter then
/// purges it.
fn expiry_of(record: &Siblings) -> Option<u64> {
    let values = record.values();
    if values.is_empty() || values.iter().any(|v| v.expires_at_ms == 0) {
        return None;
    }
    values.iter().map(|v| v.expires_at_ms).max()
}
