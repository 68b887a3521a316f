//! This node's own place in the ring's life cycle, beyond what the layout
//! says: whether it was asked to leave, and whether it has left.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use crate::storage::{RocksStorage, StorageError};

const META_DECOMMISSION: &str = "decommission";

/// Decommissioning is recorded on disk, so that a restart midway neither
/// forgets it nor re-derives anything from a stale signal: the next
/// reconcile of the claimant picks it up again (level-triggered).
pub struct Lifecycle {
    storage: Arc<RocksStorage>,
    decommissioning: AtomicBool,
    left: AtomicBool,
}

impl Lifecycle {
    pub fn load(storage: Arc<RocksStorage>) -> Result<Self, StorageError> {
        let decommissioning = storage.meta_get(META_DECOMMISSION)?.is_some();
        Ok(Self {
            storage,
            decommissioning: AtomicBool::new(decommissioning),
            left: AtomicBool::new(false),
        })
    }

    pub fn decommissioning(&self) -> bool {
        self.decommissioning.load(Ordering::Acquire)
    }

    /// Records the decision to leave; idempotent.
    pub fn start_decommission(&self) -> Result<(), StorageError> {
        self.storage.meta_put(META_DECOMMISSION, b"1")?;
        self.decommissioning.store(true, Ordering::Release);
        Ok(())
    }

    pub fn has_left(&self) -> bool {
        self.left.load(Ordering::Acquire)
    }

    pub fn mark_left(&self) {
        self.left.store(true, Ordering::Release);
    }
}
