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

pub use layout::{partition_of, Layout, LayoutError, Member, DEFAULT_PARTITIONS};

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

/// Who owns what: the current layout, while partitions move the next, and
/// for a moment after they moved the previous one.
///
/// Reads use `current`. Writes go to the owners in both `current` and
/// `next`, so that a node receiving a partition misses nothing while it
/// streams. Once every receiving node has reported its partitions complete,
/// the claimant promotes `next` to `current` in a new state version and
/// keeps the layout it replaced as `previous`: a node that has not heard of
/// the promotion yet still reads from the previous owners, so writes must
/// reach a quorum of them too until every live member has adopted the
/// promotion. Then the claimant drops `previous` in one more version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingState {
    /// Changes at every transition start, promotion and end; the newest wins.
    pub version: u64,
    pub current: Arc<Layout>,
    pub next: Option<Arc<Layout>>,
    /// Left out of the JSON when absent, so that the digest of a state
    /// without it is what it always was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Arc<Layout>>,
    /// The oldest ring state version a coordinator may hold for this state's
    /// nodes to serve its replica reads and writes. Every live member had
    /// adopted it when the claimant raised it; a node on an older version
    /// was dead or paused through a transition, and reading the owners it
    /// knows could miss writes the new owners acknowledged.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub floor: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The owners of `partition` in `to` that do not own it in `from`.
fn owners_gained(from: &Layout, to: &Layout, partition: u32) -> Vec<String> {
    let before: BTreeSet<&str> = from
        .preference_list(partition)
        .map(|p| p.into_iter().collect())
        .unwrap_or_default();
    to.preference_list(partition)
        .map(|p| {
            p.into_iter()
                .filter(|id| !before.contains(id))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

impl RingState {
    /// A state with no transition under way.
    pub fn settled(version: u64, current: Arc<Layout>) -> Self {
        Self {
            version,
            current,
            next: None,
            previous: None,
            floor: 0,
        }
    }

    /// Why a replica request from a coordinator on ring state
    /// `sender_version` must be refused, if it must: the sender missed the
    /// transitions since [`RingState::floor`]. Zero means unknown (a hint
    /// or a repair, which only carry records already acknowledged).
    pub fn refuses(&self, sender_version: u64) -> Option<String> {
        (sender_version > 0 && sender_version < self.floor).then(|| {
            format!(
                "the request comes from ring state version {sender_version}, but this node (on version {}) serves coordinators on version {} or newer: the sender missed a ring change and catches up through gossip",
                self.version, self.floor
            )
        })
    }

    /// Whether partitions are moving, or moved so recently that some member
    /// may not know it yet: no new transition starts and no node drops
    /// data until this is false.
    pub fn in_transition(&self) -> bool {
        self.next.is_some() || self.previous.is_some()
    }

    /// Every layout this state holds.
    pub fn layouts(&self) -> impl Iterator<Item = &Arc<Layout>> {
        std::iter::once(&self.current)
            .chain(&self.next)
            .chain(&self.previous)
    }

    /// The owners of `partition` in the previous layout, while the state
    /// keeps one: each write needs a quorum of them as well.
    pub fn previous_owners(&self, partition: u32) -> Vec<String> {
        self.previous
            .as_ref()
            .and_then(|previous| previous.preference_list(partition).ok())
            .map(|p| p.into_iter().map(String::from).collect())
            .unwrap_or_default()
    }

    /// The owners of `partition` in `current` that were not in `previous`:
    /// what a former owner passes a write on to when its sender may not
    /// know the promotion yet.
    pub fn gained_owners(&self, partition: u32) -> Vec<String> {
        self.previous
            .as_ref()
            .map(|previous| owners_gained(previous, &self.current, partition))
            .unwrap_or_default()
    }

    /// Nodes that own `partition` in `next` but not in `current`: they are
    /// receiving it.
    pub fn receivers(&self, partition: u32) -> Vec<String> {
        self.next
            .as_ref()
            .map(|next| owners_gained(&self.current, next, partition))
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

    /// A hash of the whole state. Two claimants on either side of a
    /// partition can each make a state of the same version; every node
    /// orders states by (version, digest), so all of them settle on the same
    /// one once they hear of both.
    pub fn digest(&self) -> u64 {
        serde_json::to_vec(self).map_or(0, |json| xxhash_rust::xxh3::xxh3_64(&json))
    }

    /// Whether `node` is a member of any layout of this state.
    pub fn involves(&self, node: &str) -> bool {
        self.layouts()
            .any(|l| l.members().iter().any(|m| m.id == node))
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

    /// (version, digest) of the newest state: what decides which of two
    /// states wins, and what gossip announces.
    pub fn rank(&self) -> (u64, u64) {
        self.state
            .borrow()
            .as_ref()
            .map_or((0, 0), |s| (s.version, s.digest()))
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<RingState>>> {
        self.state.subscribe()
    }

    /// Installs `state` if it ranks above the current one: the newest
    /// version wins, and of two states with the same version the one with
    /// the higher digest. Returns whether it was installed.
    pub fn install(&self, state: RingState) -> Result<bool, RingError> {
        for layout in state.layouts() {
            if layout.partitions() != self.partitions {
                return Err(RingError::WrongPartitions {
                    found: layout.partitions(),
                    expected: self.partitions,
                });
            }
        }
        if (state.version, state.digest()) <= self.rank() {
            return Ok(false);
        }
        let json = serde_json::to_vec(&state).map_err(|e| RingError::Decode(e.to_string()))?;
        self.storage.meta_put(META_LAYOUT, &json)?;
        tracing::info!(
            version = state.version,
            members = state.current.members().len(),
            transition = state.next.is_some(),
            closing = state.previous.is_some(),
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::storage::{Durability, RocksStorageOptions};

    fn ring(dir: &std::path::Path) -> Ring {
        let options = RocksStorageOptions {
            durability: Durability::Periodic(std::time::Duration::from_secs(60)),
            ..Default::default()
        };
        let storage = Arc::new(RocksStorage::open(dir, "n0", &options).expect("storage"));
        Ring::load(storage, 8).expect("ring")
    }

    /// A state of `version` whose members are the nodes picked by `mask`.
    fn state(version: u64, mask: u8) -> RingState {
        let members = (0..6)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| Member::new(format!("n{i}")))
            .collect();
        RingState::settled(
            version,
            Arc::new(Layout::initial(8, 1, members).expect("layout")),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Row 10 of the data-safety issue: two claimants may make different
        /// states of one version. In whatever order two nodes hear of the
        /// states, they end on the same one.
        #[test]
        fn nodes_that_hear_of_the_same_states_settle_on_the_same_one(
            states in prop::collection::vec((1u64..4, 1u8..64), 1..6),
            order in any::<u64>(),
        ) {
            let states: Vec<RingState> = states.into_iter().map(|(v, m)| state(v, m)).collect();
            let (a_dir, b_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
            let (a, b) = (ring(a_dir.path()), ring(b_dir.path()));
            for s in &states {
                a.install(s.clone()).expect("install");
            }
            let mut shuffled = states.clone();
            let len = shuffled.len();
            for i in 0..len {
                shuffled.swap(i, (order as usize >> (i * 3)) % len);
            }
            for s in shuffled {
                b.install(s).expect("install");
            }
            prop_assert_eq!(a.state(), b.state());
            prop_assert_eq!(a.rank(), b.rank());
        }
    }
}
