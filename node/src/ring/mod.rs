//! The ring: which nodes hold which partition.
//!
//! [`layout`] computes placements. [`Ring`] holds the newest layout this
//! node knows, persists it, and hands it to everyone who routes requests.
//! [`claimant`] is the loop that adopts newer layouts from peers and, on the
//! one node that is claimant, makes the next one.

pub mod claimant;
pub mod layout;

use std::sync::Arc;

use tokio::sync::watch;

pub use layout::{partition_of, Layout, LayoutError, Member};

use crate::storage::{RocksStorage, StorageError};

const META_LAYOUT: &str = "layout";
const META_PARTITIONS: &str = "partitions";

/// Why the ring could not load or install a layout.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored layout is unreadable: {0}")]
    Decode(String),
    #[error(
        "this data dir was created with {stored} partitions, but --partitions is {configured}; \
         the partition count is fixed when a cluster is created"
    )]
    PartitionMismatch { stored: u32, configured: u32 },
    #[error("layout has {found} partitions, this node has {expected}")]
    WrongPartitions { found: u32, expected: u32 },
}

/// The newest layout this node knows, shared by every request path.
pub struct Ring {
    storage: Arc<RocksStorage>,
    partitions: u32,
    current: watch::Sender<Option<Arc<Layout>>>,
}

impl Ring {
    /// Loads the stored layout and checks the partition count on disk
    /// against the configured one (storing it on first start).
    pub fn load(storage: Arc<RocksStorage>, partitions: u32) -> Result<Self, RingError> {
        match storage.meta_get(META_PARTITIONS)? {
            Some(raw) => {
                let stored = std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| RingError::Decode("partition count".into()))?;
                if stored != partitions {
                    return Err(RingError::PartitionMismatch {
                        stored,
                        configured: partitions,
                    });
                }
            }
            None => storage.meta_put(META_PARTITIONS, partitions.to_string().as_bytes())?,
        }
        let layout = match storage.meta_get(META_LAYOUT)? {
            Some(raw) => Some(Arc::new(
                serde_json::from_slice::<Layout>(&raw)
                    .map_err(|e| RingError::Decode(e.to_string()))?,
            )),
            None => None,
        };
        let (current, _) = watch::channel(layout);
        Ok(Self {
            storage,
            partitions,
            current,
        })
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The newest layout, if the cluster has made one.
    pub fn current(&self) -> Option<Arc<Layout>> {
        self.current.borrow().clone()
    }

    pub fn version(&self) -> u64 {
        self.current.borrow().as_ref().map_or(0, |l| l.version())
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Layout>>> {
        self.current.subscribe()
    }

    /// Installs `layout` if it is newer than the current one; the newest
    /// version wins. Returns whether it was installed.
    pub fn install(&self, layout: Layout) -> Result<bool, RingError> {
        if layout.partitions() != self.partitions {
            return Err(RingError::WrongPartitions {
                found: layout.partitions(),
                expected: self.partitions,
            });
        }
        if layout.version() <= self.version() {
            return Ok(false);
        }
        let json = serde_json::to_vec(&layout).map_err(|e| RingError::Decode(e.to_string()))?;
        self.storage.meta_put(META_LAYOUT, &json)?;
        tracing::info!(
            version = layout.version(),
            members = layout.members().len(),
            "installed partition layout"
        );
        self.current.send_replace(Some(Arc::new(layout)));
        Ok(true)
    }

    /// The current layout as JSON, for peers that ask for it.
    pub fn current_json(&self) -> Option<(u64, String)> {
        let layout = self.current()?;
        let json = serde_json::to_string(layout.as_ref()).ok()?;
        Some((layout.version(), json))
    }
}
