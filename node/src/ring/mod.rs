//! The ring: which nodes hold which partition.
//!
//! [`layout`] computes placements. [`Ring`] holds the newest [`RingState`]
//! this node knows (the current layout, and the next one while partitions
//! move to it), persists it, and hands it to everyone who routes requests.
//! [`claimant`] is the loop that adopts newer layouts from peers and, on the
//! one node that is claimant, makes the next one.

pub mod claimant;
pub mod layout;

use std::{collections::BTreeSet, sync::Arc};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use layout::{partition_of, Layout, LayoutError, Member};

use crate::storage::{RocksStorage, StorageError};

const META_LAYOUT: &str = "ring_state";
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

/// Who owns what: the current layout, and while partitions move, the next.
///
/// Reads use `current`. Writes go to the owners in both, so that a node
/// receiving a partition misses nothing while it streams. Once every
/// receiving node has reported its partitions complete, the claimant
/// promotes `next` to `current` in a new state version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingState {
    /// Changes at every transition start and end; the newest wins.
    pub version: u64,
    pub current: Arc<Layout>,
    pub next: Option<Arc<Layout>>,
}

impl RingState {
    /// Nodes that own `partition` in `next` but not in `current`: they are
    /// receiving it.
    pub fn receivers(&self, partition: u32) -> Vec<String> {
        let Some(next) = &self.next else {
            return Vec::new();
        };
        let now: BTreeSet<&str> = self
            .current
            .preference_list(partition)
            .map(|p| p.into_iter().collect())
            .unwrap_or_default();
        next.preference_list(partition)
            .map(|p| {
                p.into_iter()
                    .filter(|id| !now.contains(id))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Partitions `node` receives in this transition.
    pub fn receiving(&self, node: &str) -> Vec<u32> {
        (0..self.current.partitions())
            .filter(|p| self.receivers(*p).iter().any(|id| id == node))
            .collect()
    }

    /// Every node that receives at least one partition.
    pub fn receiving_nodes(&self) -> BTreeSet<String> {
        (0..self.current.partitions())
            .flat_map(|p| self.receivers(p))
            .collect()
    }

    /// Whether `node` is a member of the current or the next layout.
    pub fn involves(&self, node: &str) -> bool {
        let member = |l: &Arc<Layout>| l.members().iter().any(|m| m.id == node);
        member(&self.current) || self.next.as_ref().is_some_and(member)
    }
}

/// The newest ring state this node knows, shared by every request path.
pub struct Ring {
    storage: Arc<RocksStorage>,
    partitions: u32,
    state: watch::Sender<Option<Arc<RingState>>>,
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
        let state = match storage.meta_get(META_LAYOUT)? {
            Some(raw) => Some(Arc::new(
                serde_json::from_slice::<RingState>(&raw)
                    .map_err(|e| RingError::Decode(e.to_string()))?,
            )),
            None => None,
        };
        let (state, _) = watch::channel(state);
        Ok(Self {
            storage,
            partitions,
            state,
        })
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn storage(&self) -> &Arc<RocksStorage> {
        &self.storage
    }

    /// The newest ring state, if the cluster has made one.
    pub fn state(&self) -> Option<Arc<RingState>> {
        self.state.borrow().clone()
    }

    /// The current layout (what reads use), if the cluster has made one.
    pub fn current(&self) -> Option<Arc<Layout>> {
        self.state().map(|s| s.current.clone())
    }

    pub fn version(&self) -> u64 {
        self.state.borrow().as_ref().map_or(0, |s| s.version)
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<RingState>>> {
        self.state.subscribe()
    }

    /// Installs `state` if it is newer than the current one; the newest
    /// version wins. Returns whether it was installed.
    pub fn install(&self, state: RingState) -> Result<bool, RingError> {
        for layout in std::iter::once(&state.current).chain(&state.next) {
            if layout.partitions() != self.partitions {
                return Err(RingError::WrongPartitions {
                    found: layout.partitions(),
                    expected: self.partitions,
                });
            }
        }
        if state.version <= self.version() {
            return Ok(false);
        }
        let json = serde_json::to_vec(&state).map_err(|e| RingError::Decode(e.to_string()))?;
        self.storage.meta_put(META_LAYOUT, &json)?;
        tracing::info!(
            version = state.version,
            members = state.current.members().len(),
            transition = state.next.is_some(),
            "installed ring state"
        );
        self.state.send_replace(Some(Arc::new(state)));
        Ok(true)
    }

    /// The ring state as JSON, for peers that ask for it.
    pub fn state_json(&self) -> Option<(u64, String)> {
        let state = self.state()?;
        let json = serde_json::to_string(state.as_ref()).ok()?;
        Some((state.version, json))
    }
}
