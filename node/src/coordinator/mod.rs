//! Request coordination: quorum writes and reads over a partition's
//! preference list, with sloppy quorum, hinted handoff and read repair.
//!
//! Any node coordinates any read. A write is coordinated by a replica of its
//! key, because a new dot must come from a node that holds the key's record;
//! a node outside the preference list forwards the write to a live replica.
//!
//! - [`route`]: pure decisions: owners, a node's place, a write's targets.
//! - `read`, `write`, `scan`, `batch`: the client-side paths.
//! - `relay`: the replica side of a write during a ring transition: keep,
//!   pass on, or refuse.
//! - [`write_quorum`], [`place`], [`stale_coordinator`]: the rules they
//!   count acknowledgements and refuse stale coordinators by.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

mod batch;
mod error;
mod place;
mod read;
mod read_batch;
mod relay;
mod route;
mod scan;
mod stale_coordinator;
#[cfg(test)]
mod transition_model;
mod write;
mod write_quorum;

pub(crate) use error::{CoordinatorError, QuorumFailure, Shortfall};
pub(crate) use relay::Relay;
pub(crate) use write::{WriteOptions, WriteRequest};

use relay::MAX_FORWARD_HOPS;
use stale_coordinator::why_stale;

use crate::{
    cluster::{
        deadline::Deadline,
        membership::{Membership, View},
        rpc::{PeerCall, PeerRpc},
    },
    replica::{GroupCommit, LocalReplica},
    ring::{Ring, RingState},
    server::{lifecycle::Lifecycle, metrics::ReplicationMetrics},
    storage::now_millis,
    sync::refill::Refill,
    versions::{seal::ContextSeal, ConflictMode, Siblings},
};

/// What a request was routed with: the membership view, and the version of
/// the ring state its owners came from. Peers refuse a version below their
/// ring state's floor, so it must be the version the owners were chosen
/// from, not whatever this node has adopted since.
pub(crate) struct Route {
    pub view: Arc<View>,
    pub version: u64,
}

impl Route {
    /// A call to `node` on this route, bounded by `timeout`.
    fn call<'a>(&'a self, node: &'a str, timeout: Duration) -> PeerCall<'a> {
        PeerCall {
            node,
            view: &self.view,
            ring_version: self.version,
            timeout,
        }
    }
}

impl std::ops::Deref for Route {
    type Target = View;

    fn deref(&self) -> &View {
        &self.view
    }
}

/// The cluster's N, R and W.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quorums {
    pub n: usize,
    pub r: usize,
    pub w: usize,
}

/// Settings of the coordinator.
#[derive(Debug, Clone)]
pub(crate) struct CoordinatorConfig {
    pub quorums: Quorums,
    pub hinted_handoff: bool,
    pub replica_timeout: Duration,
    /// Seals the contexts clients get, and opens the ones they send.
    pub seal: ContextSeal,
    /// How long a node that has just started or stalled waits for news
    /// from a peer before it coordinates anyway (`--gossip-settle-ms`).
    pub gossip_settle: Duration,
}

/// What a coordinator works with, by name.
pub(crate) struct CoordinatorParts {
    pub me: String,
    pub lifecycle: Arc<Lifecycle>,
    pub local: Arc<LocalReplica>,
    /// Writes to `local` from requests, committed in groups.
    pub writes: GroupCommit,
    pub ring: Arc<Ring>,
    pub membership: Arc<Membership>,
    pub rpc: Arc<PeerRpc>,
    pub refill: Arc<Refill>,
    pub config: CoordinatorConfig,
    pub metrics: ReplicationMetrics,
}

/// When a value written now with `ttl_seconds` expires; 0 for never.
fn expiry(ttl_seconds: u64) -> u64 {
    if ttl_seconds > 0 {
        now_millis().saturating_add(ttl_seconds.saturating_mul(1000))
    } else {
        0
    }
}

/// Coordinates client requests across replicas. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Coordinator {
    inner: Arc<CoordinatorParts>,
}

/// What a client may see of a record now: see [`Siblings::visible_data`].
pub(crate) fn visible_values(record: &Siblings, mode: ConflictMode) -> Vec<Bytes> {
    record.visible_data(mode, now_millis())
}

impl Coordinator {
    pub fn new(parts: CoordinatorParts) -> Self {
        Self {
            inner: Arc::new(parts),
        }
    }

    /// The newest ring state this node knows.
    pub fn ring_state(&self) -> Option<Arc<RingState>> {
        self.inner.ring.state()
    }

    /// Which of this node's partitions count toward reads.
    pub fn refill(&self) -> &Refill {
        &self.inner.refill
    }

    pub fn mode(&self) -> ConflictMode {
        self.inner.local.mode()
    }

    /// The token a client gets for the context of `record`, read from `key`.
    pub fn seal_context(&self, key: &[u8], record: &Siblings) -> Bytes {
        self.inner.config.seal.seal(key, &record.context())
    }

    fn me(&self) -> &str {
        &self.inner.me
    }

    fn state(&self) -> Result<Arc<RingState>, CoordinatorError> {
        self.inner.ring.state().ok_or(CoordinatorError::NoLayout {
            n: self.inner.config.quorums.n,
        })
    }

    /// The ring state, if it is current enough for this node to coordinate
    /// a client's request (see [`stale_coordinator`]).
    fn coordinating_state(&self) -> Result<Arc<RingState>, CoordinatorError> {
        let state = self.state()?;
        let view = self.inner.membership.view();
        let touch = self.inner.membership.touch();
        match why_stale(
            &state,
            &view,
            self.me(),
            touch,
            self.inner.config.gossip_settle,
        ) {
            Some(reason) => Err(CoordinatorError::StaleView(reason)),
            None => Ok(state),
        }
    }

    /// R for a request: the client's override, checked against N, or the
    /// cluster's.
    pub fn read_quorum(&self, requested: Option<u32>) -> Result<usize, CoordinatorError> {
        self.quorum("read_quorum", requested, self.inner.config.quorums.r)
    }

    /// W for a request: the client's override, checked against N, or the
    /// cluster's.
    pub fn write_quorum(&self, requested: Option<u32>) -> Result<usize, CoordinatorError> {
        self.quorum("write_quorum", requested, self.inner.config.quorums.w)
    }

    fn quorum(
        &self,
        name: &'static str,
        requested: Option<u32>,
        default: usize,
    ) -> Result<usize, CoordinatorError> {
        let n = self.inner.config.quorums.n;
        match requested {
            None => Ok(default),
            Some(q) if q >= 1 && q as usize <= n => Ok(q as usize),
            Some(requested) => Err(CoordinatorError::QuorumOutOfRange { name, requested, n }),
        }
    }

    /// A route from the current membership view and ring state `version`.
    fn route(&self, version: u64) -> Route {
        Route {
            view: self.inner.membership.view(),
            version,
        }
    }

    /// How long the next call to a replica may take: the replica timeout,
    /// or less if the client's deadline comes sooner.
    fn timeout(&self, deadline: Option<Deadline>) -> Duration {
        let default = self.inner.config.replica_timeout;
        deadline.map_or(default, |d| d.for_replicas().min(default))
    }
}
