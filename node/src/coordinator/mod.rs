//! Request coordination: quorum writes and reads over a partition's
//! preference list, with sloppy quorum, hinted handoff and read repair.
//!
//! Any node coordinates any read. A write is coordinated by a replica of its
//! key, because a new dot must come from a node that holds the key's record;
//! a node outside the preference list forwards the write to a live replica.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::{future::BoxFuture, stream::FuturesUnordered, FutureExt, StreamExt};
use ringkv_proto::v1::{
    Consistency, RawDeleteRequest, RawPutRequest, ReplicaApplyRequest, ReplicaReadRequest,
    ReplicaScanRequest,
};
use tonic::{Request, Status};

mod batch;
mod place;
mod stale_coordinator;
#[cfg(test)]
mod transition_model;
mod write_quorum;

pub use batch::{BatchOptions, BatchWrite};
use place::{Owed, Place, Receipt};
use stale_coordinator::why_stale;
use write_quorum::WriteQuorum;

use crate::{
    cluster::deadline::Deadline,
    cluster::membership::{Membership, View},
    cluster::peers::PeerClients,
    replica::{blocking, LocalReplica, ReplicaError, Update},
    ring::{partition_of, Layout, Ring, RingState},
    server::lifecycle::Lifecycle,
    server::metrics::ReplicationMetrics,
    storage::{now_millis, ScanRange},
    sync::refill::Refill,
    versions::seal::ContextSeal,
    versions::{CausalContext, ConflictMode, Siblings},
};

/// Metadata that marks a forwarded write, so that it is never forwarded twice.
pub const FORWARDED: &str = "ringkv-forwarded";

/// Metadata on a replica write: how many nodes passed it on already.
pub const FORWARD_HOPS: &str = "ringkv-forward-hops";

/// Metadata on a passed-on replica write: the sender's ring state version.
pub const RING_VERSION: &str = "ringkv-ring-version";

/// What a replica write says about the nodes that passed it on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relay {
    /// How many nodes passed it on before this one.
    pub hops: u32,
    /// The ring state version of the node that passed it on; 0 when unknown.
    pub ring_version: u64,
    /// When the node that passed it on stops waiting: a node passing it on
    /// again answers before then.
    pub deadline: Option<Deadline>,
}

impl Relay {
    /// The relay of a write this node passes on: one more hop, the same
    /// deadline.
    fn onward(self) -> Self {
        Self {
            hops: self.hops + 1,
            ..self
        }
    }
}

/// A node's place among the owners of one key in one ring state.
struct Roles {
    partition: u32,
    /// The key's owners in the current layout.
    now: Vec<String>,
    place: Place,
}

/// The longest chain of nodes passing one replica write on. Two hops are
/// needed when ring views agree: a node outside the partition passes the
/// write to an owner that is handing the partition off, which passes it to
/// the receiver. A longer chain means views disagree; without a limit two
/// such nodes could pass a write back and forth until it timed out.
pub const MAX_FORWARD_HOPS: u32 = 2;

/// How a record reaches a node.
#[derive(Clone, Copy, Debug)]
enum Delivery<'a> {
    /// As one of the key's replicas.
    Replica,
    /// As a hint, kept for the named replica while it is down.
    HintFor(&'a str),
    /// Passed on by a node that does not keep it (or not alone): the chain
    /// is now `hops` long.
    Forwarded { hops: u32 },
}

/// What a request was routed with: the membership view, and the version of
/// the ring state its owners came from. Peers refuse a version below their
/// ring state's floor, so it must be the version the owners were chosen
/// from, not whatever this node has adopted since.
pub(crate) struct Route {
    pub view: Arc<View>,
    pub version: u64,
}

impl std::ops::Deref for Route {
    type Target = View;

    fn deref(&self) -> &View {
        &self.view
    }
}

/// A request to another node's RawKV, marked as forwarded and bounded by
/// the client's remaining time.
fn forwarded<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
        .metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    request
}

/// What the client hears when a write this node passed on to a replica
/// failed there. The replica's own answer keeps its code; no answer within
/// the deadline is UNAVAILABLE, as for a quorum that a frozen replica left
/// short, and not the bare CANCELLED of a timeout, which would read as the
/// client's own.
fn passed_on_failed(target: &str, partition: u32, status: Status) -> Status {
    let passed = format!("write passed on to {target}, a replica of partition {partition}");
    match status.code() {
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => Status::unavailable(format!(
            "{passed}, got no answer within the deadline: {}",
            status.message()
        )),
        code => Status::new(code, format!("{passed}: {}", status.message())),
    }
}

/// Names the first few of `partitions`, and how many more there are.
fn name_some(partitions: &[u32]) -> String {
    const SHOWN: usize = 8;
    let named: Vec<String> = partitions.iter().take(SHOWN).map(u32::to_string).collect();
    let more = partitions.len().saturating_sub(SHOWN);
    if more > 0 {
        format!("partitions {} and {more} more", named.join(", "))
    } else {
        format!("partitions {}", named.join(", "))
    }
}

/// Whether a replica's record lacks something the merged record has.
fn is_stale(record: &Option<Siblings>, merged: &Siblings) -> bool {
    record.as_ref().is_none_or(|r| !r.descends(merged))
}

/// The cluster's N, R and W.
#[derive(Debug, Clone, Copy)]
pub struct Quorums {
    pub n: usize,
    pub r: usize,
    pub w: usize,
}

/// Settings of the coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub quorums: Quorums,
    pub hinted_handoff: bool,
    pub replica_timeout: Duration,
    /// Seals the contexts clients get, and opens the ones they send.
    pub seal: ContextSeal,
    /// How long a node that has just started or stalled waits for news
    /// from a peer before it coordinates anyway (`--gossip-settle-ms`).
    pub gossip_settle: Duration,
}

struct Inner {
    me: String,
    lifecycle: Arc<Lifecycle>,
    local: Arc<LocalReplica>,
    ring: Arc<Ring>,
    membership: Arc<Membership>,
    peers: Arc<PeerClients>,
    config: CoordinatorConfig,
    metrics: ReplicationMetrics,
    refill: Arc<Refill>,
}

/// When a value written now with `ttl_seconds` expires; 0 for never.
fn expiry(ttl_seconds: u64) -> u64 {
    if ttl_seconds > 0 {
        now_millis().saturating_add(ttl_seconds.saturating_mul(1000))
    } else {
        0
    }
}

/// One replica's answer to a read.
struct ReplicaReply {
    record: Option<Siblings>,
    /// False while the replica refills the key's partition.
    counts: bool,
}

/// One replica's answer to a scan.
struct ScanReply {
    records: Vec<(Bytes, Siblings)>,
    /// Partitions the replica still refills: its records of them count
    /// toward no quorum.
    refilling: Vec<u32>,
}

/// Coordinates client requests across replicas. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

impl From<ReplicaError> for Status {
    fn from(error: ReplicaError) -> Self {
        match error {
            ReplicaError::Storage(error) => error.into(),
            error @ ReplicaError::ClockAhead { .. } => {
                tracing::warn!(%error, "refused a timestamp from the future");
                Status::unavailable(error.to_string())
            }
            other => {
                tracing::error!(error = %other, "replica failure");
                Status::internal(other.to_string())
            }
        }
    }
}

/// What a client may see of a record now: see [`Siblings::visible_data`].
pub fn visible_values(record: &Siblings, mode: ConflictMode) -> Vec<Bytes> {
    record.visible_data(mode, now_millis())
}

impl Coordinator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: String,
        lifecycle: Arc<Lifecycle>,
        local: Arc<LocalReplica>,
        ring: Arc<Ring>,
        membership: Arc<Membership>,
        peers: Arc<PeerClients>,
        config: CoordinatorConfig,
        metrics: ReplicationMetrics,
        refill: Arc<Refill>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                me,
                lifecycle,
                local,
                ring,
                membership,
                peers,
                config,
                metrics,
                refill,
            }),
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

    fn state(&self) -> Result<Arc<RingState>, Status> {
        self.inner.ring.state().ok_or_else(|| {
            Status::unavailable(format!(
                "the cluster has no partition layout yet: it needs {} live nodes (N) to make one",
                self.inner.config.quorums.n
            ))
        })
    }

    /// The ring state, if it is current enough for this node to coordinate
    /// a client's request (see [`stale_coordinator`]).
    fn coordinating_state(&self) -> Result<Arc<RingState>, Status> {
        let state = self.state()?;
        let view = self.inner.membership.view();
        let touch = self.inner.membership.touch();
        match why_stale(
            &state,
            &view,
            &self.inner.me,
            touch,
            self.inner.config.gossip_settle,
        ) {
            Some(reason) => Err(Status::unavailable(reason)),
            None => Ok(state),
        }
    }

    /// A quorum override, checked against N.
    pub fn quorum(
        &self,
        name: &str,
        requested: Option<u32>,
        default: usize,
    ) -> Result<usize, Status> {
        let n = self.inner.config.quorums.n;
        match requested {
            None => Ok(default),
            Some(q) if q >= 1 && q as usize <= n => Ok(q as usize),
            Some(q) => Err(Status::invalid_argument(format!(
                "{name} {q} is outside 1..={n}, the replication factor"
            ))),
        }
    }

    /// A request to a peer's replica service, bounded by `timeout` and
    /// carrying the ring state version of `route`, by which the peer refuses
    /// a coordinator that missed a ring change (see [`RingState::refuses`]).
    pub(crate) fn to_replica<T>(&self, route: &Route, message: T, timeout: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        request.metadata_mut().insert(
            RING_VERSION,
            tonic::metadata::MetadataValue::from(route.version),
        );
        request
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

    fn preference(&self, layout: &Layout, key: &[u8]) -> Result<(u32, Vec<String>), Status> {
        let partition = layout.partition_for_key(key);
        let pref = layout
            .preference_list(partition)
            .map_err(|e| Status::internal(e.to_string()))?
            .into_iter()
            .map(String::from)
            .collect();
        Ok((partition, pref))
    }

    fn address(view: &View, node: &str) -> Result<String, Status> {
        view.peers
            .get(node)
            .map(|p| p.grpc.clone())
            .ok_or_else(|| Status::unavailable(format!("node {node} is unknown to gossip")))
    }

    async fn read_from(
        &self,
        route: &Route,
        node: &str,
        key: &Bytes,
        timeout: Duration,
    ) -> Result<ReplicaReply, Status> {
        if node == self.inner.me {
            let (local, key) = (self.inner.local.clone(), key.clone());
            let counts = self.inner.refill.serves_key(&key);
            let record = blocking(move || local.read(&key)).await?;
            return Ok(ReplicaReply { record, counts });
        }
        let mut client = self.inner.peers.replica(&Self::address(route, node)?)?;
        let request = self.to_replica(route, ReplicaReadRequest { key: key.clone() }, timeout);
        let reply = client.read(request).await?.into_inner();
        let counts = !reply.refilling;
        if reply.record.is_empty() {
            return Ok(ReplicaReply {
                record: None,
                counts,
            });
        }
        Siblings::decode(&reply.record)
            .map(|record| ReplicaReply {
                record: Some(record),
                counts,
            })
            .map_err(|e| Status::internal(format!("node {node} sent an unreadable record: {e}")))
    }

    /// A record sent to this node as a replica (or as a hint for another).
    ///
    /// A node that is handing the key's partition off acknowledges only once
    /// the partition's receivers hold the record too: a coordinator whose
    /// ring view is older than the transition counts this node's
    /// acknowledgement, and the stream may already have passed the key
    /// (Riak forwards such writes after a handoff for the same reason). A
    /// node that replicates the partition in neither layout keeps no copy,
    /// which the coordinator would count but nobody would read: it
    /// passes the record to the partition's live owners instead (a stale
    /// coordinator or a hint for a node that gave the partition up).
    ///
    /// `relay.hops` counts the nodes that passed this record on before; past
    /// [`MAX_FORWARD_HOPS`] it is refused rather than passed on again. A
    /// record passed on by a node with a newer ring state is kept even by a
    /// node that replicates the partition in neither of its own layouts: in
    /// the sender's newer state it does (typically a receiver that has not
    /// adopted the transition yet), and passing the record back would only
    /// bounce it between the two.
    pub async fn accept(
        &self,
        key: Bytes,
        record: Bytes,
        hint_for: Option<String>,
        relay: Relay,
    ) -> Result<(), Status> {
        let hops = relay.hops;
        let local = self.inner.local.clone();
        let Some(state) = self.inner.ring.state().filter(|_| hint_for.is_none()) else {
            return blocking(move || local.receive(&key, &record, hint_for.as_deref())).await;
        };
        let roles = self.roles(&state, &key)?;
        match roles
            .place
            .receipt(hops, relay.ring_version, state.version)
        {
            Receipt::Refuse => Err(Status::unavailable(format!(
                "node {} would pass a write for partition {} on after {hops} nodes already did (at most {MAX_FORWARD_HOPS}): ring views disagree (this node has version {}); retry once they agree",
                self.inner.me, roles.partition, state.version
            ))),
            Receipt::PassToOwners => {
                self.forward_to_owners(
                    state.version,
                    roles.partition,
                    &roles.now,
                    &key,
                    &record,
                    relay.onward(),
                )
                .await
            }
            Receipt::Keep => {
                {
                    let (key, record) = (key.clone(), record.clone());
                    blocking(move || local.receive(&key, &record, None)).await?;
                }
                self.pass_on_after_receive(&key, &record, relay).await
            }
        }
    }

    /// What this node must do, once it holds a record it received, before
    /// it acknowledges it: an owner handing the partition off passes it to
    /// the receivers, and a former owner written to by a sender that has
    /// not adopted the promotion passes it to the new owners.
    ///
    /// The ring state is read *after* the local write: a transition may
    /// have started meanwhile, and a receiver's stream of this node's data
    /// may already be past the key.
    async fn pass_on_after_receive(
        &self,
        key: &Bytes,
        record: &Bytes,
        relay: Relay,
    ) -> Result<(), Status> {
        let Some(state) = self.inner.ring.state() else {
            return Ok(());
        };
        let roles = self.roles(&state, key)?;
        match roles.place.owes(relay.ring_version, state.version) {
            Owed::Nothing => Ok(()),
            Owed::Receivers => {
                self.forward_to_receivers(&state, roles.partition, key, record, relay.onward())
                    .await
            }
            Owed::GainedOwners => {
                let gained: Vec<String> = state
                    .gained_owners(roles.partition)
                    .into_iter()
                    .filter(|id| *id != self.inner.me)
                    .collect();
                let route = self.route(state.version);
                self.pass_on(
                    &route,
                    &gained,
                    "new owner",
                    roles.partition,
                    key,
                    record,
                    relay.onward(),
                )
                .await
            }
        }
    }

    /// This node's place, in ring state `state`, among the owners of `key`.
    fn roles(&self, state: &RingState, key: &[u8]) -> Result<Roles, Status> {
        let me = &self.inner.me;
        let (partition, now) = self.preference(&state.current, key)?;
        let in_next = match &state.next {
            Some(next) => self.preference(next, key)?.1.contains(me),
            None => false,
        };
        let in_now = now.contains(me);
        Ok(Roles {
            partition,
            place: Place {
                in_now,
                in_next,
                former: !in_now && !in_next && state.previous_owners(partition).contains(me),
                in_transition: state.next.is_some(),
            },
            now,
        })
    }

    /// Whether `node` is in no layout of this node's ring state: it left the
    /// ring (or never joined), so a hint kept for it will never be delivered.
    pub fn has_departed(&self, node: &str) -> bool {
        self.inner
            .ring
            .state()
            .is_some_and(|state| !state.involves(node))
    }

    /// Delivers a hint kept for a node that has left the ring to the key's
    /// owners now, in every layout of the ring state: the write was
    /// acknowledged, and its intended replica no longer exists. Fails unless
    /// one owner at least is alive and all the live ones took it.
    pub async fn deliver_to_owners(&self, key: &Bytes, record: &Bytes) -> Result<(), Status> {
        let state = self.state()?;
        let (partition, mut owners) = self.preference(&state.current, key)?;
        owners.extend(state.receivers(partition));
        // Right after a promotion, members still read the former owners.
        for former in state.previous_owners(partition) {
            if !owners.contains(&former) {
                owners.push(former);
            }
        }
        self.forward_to_owners(
            state.version,
            partition,
            &owners,
            key,
            record,
            Relay::default(),
        )
        .await
    }

    /// Sends a record to every live owner of `partition`; fails unless one
    /// at least is alive and all the live ones took it.
    async fn forward_to_owners(
        &self,
        version: u64,
        partition: u32,
        owners: &[String],
        key: &Bytes,
        record: &Bytes,
        relay: Relay,
    ) -> Result<(), Status> {
        let route = self.route(version);
        let live: Vec<String> = owners
            .iter()
            .filter(|o| route.is_alive(o))
            .cloned()
            .collect();
        if live.is_empty() {
            return Err(Status::unavailable(format!(
                "node {} cannot pass a write on: none of the owners of partition {partition} is alive",
                self.inner.me
            )));
        }
        self.pass_on(&route, &live, "owner", partition, key, record, relay)
            .await
    }

    /// Sends a record to every node receiving `partition`; fails unless all
    /// of them took it.
    async fn forward_to_receivers(
        &self,
        state: &RingState,
        partition: u32,
        key: &Bytes,
        record: &Bytes,
        relay: Relay,
    ) -> Result<(), Status> {
        let route = self.route(state.version);
        let receivers: Vec<String> = state
            .receivers(partition)
            .into_iter()
            .filter(|r| *r != self.inner.me)
            .collect();
        self.pass_on(
            &route, &receivers, "receiver", partition, key, record, relay,
        )
        .await
    }

    /// Passes a record on to each of `targets` in turn, as the chain's
    /// `relay.hops`-th node and within its deadline; fails on the first that
    /// does not take it.
    #[allow(clippy::too_many_arguments)]
    async fn pass_on(
        &self,
        route: &Route,
        targets: &[String],
        role: &str,
        partition: u32,
        key: &Bytes,
        record: &Bytes,
        relay: Relay,
    ) -> Result<(), Status> {
        for target in targets {
            self.apply_to(
                route,
                target,
                key,
                record,
                Delivery::Forwarded { hops: relay.hops },
                self.timeout(relay.deadline),
            )
            .await
            .map_err(|status| {
                Status::unavailable(format!(
                    "passing a write for partition {partition} on to its {role} {target}: {}",
                    status.message()
                ))
            })?;
        }
        Ok(())
    }

    async fn apply_to(
        &self,
        route: &Route,
        node: &str,
        key: &Bytes,
        record: &Bytes,
        delivery: Delivery<'_>,
        timeout: Duration,
    ) -> Result<(), Status> {
        let hint_for = match delivery {
            Delivery::HintFor(target) => Some(target),
            Delivery::Replica | Delivery::Forwarded { .. } => None,
        };
        if node == self.inner.me {
            let (local, key, record) = (self.inner.local.clone(), key.clone(), record.clone());
            let hint_for = hint_for.map(str::to_string);
            return blocking(move || local.receive(&key, &record, hint_for.as_deref())).await;
        }
        let mut client = self.inner.peers.replica(&Self::address(route, node)?)?;
        let mut request = self.to_replica(
            route,
            ReplicaApplyRequest {
                key: key.clone(),
                record: record.clone(),
                hint_for: hint_for.unwrap_or_default().to_string(),
            },
            timeout,
        );
        if let Delivery::Forwarded { hops } = delivery {
            request
                .metadata_mut()
                .insert(FORWARD_HOPS, tonic::metadata::MetadataValue::from(hops));
        }
        client.apply(request).await?;
        Ok(())
    }

    /// Sends a write to one replica; if that replica is down or fails, to the
    /// next live fallback as a hint for it. Returns whether the write was
    /// acknowledged by either.
    async fn replicate(
        self,
        route: Arc<Route>,
        target: String,
        key: Bytes,
        record: Bytes,
        fallbacks: Arc<Mutex<Vec<String>>>,
        deadline: Option<Deadline>,
    ) -> bool {
        if route.is_alive(&target) {
            let timeout = self.timeout(deadline);
            match self
                .apply_to(&route, &target, &key, &record, Delivery::Replica, timeout)
                .await
            {
                Ok(()) => return true,
                Err(status) => {
                    tracing::debug!(%target, %status, "replica write failed");
                }
            }
        }
        if !self.inner.config.hinted_handoff {
            return false;
        }
        let fallback = fallbacks.lock().ok().and_then(|mut f| f.pop());
        if let Some(fallback) = fallback {
            // What the first attempt left of the client's deadline.
            let timeout = self.timeout(deadline);
            let sent = self
                .apply_to(
                    &route,
                    &fallback,
                    &key,
                    &record,
                    Delivery::HintFor(&target),
                    timeout,
                )
                .await;
            if sent.is_ok() {
                self.inner.metrics.hints_stored.inc();
                return true;
            }
        }
        // No fallback took it: keep the hint here, without counting it as an
        // acknowledgement (this node already holds the write).
        let local = self.inner.local.clone();
        let stored = blocking(move || local.keep_hint(&target, &key, &record)).await;
        if stored.is_ok() {
            self.inner.metrics.hints_stored.inc();
        }
        false
    }

    /// The live fallbacks of `partition`, in reverse: they are popped from
    /// the end, so the first fallback goes first.
    fn live_fallbacks(&self, layout: &Layout, partition: u32, view: &View) -> Vec<String> {
        let mut fallbacks: Vec<String> = layout
            .fallbacks(partition)
            .unwrap_or_default()
            .into_iter()
            .filter(|id| *id != self.inner.me && view.is_alive(id))
            .map(String::from)
            .collect();
        fallbacks.reverse();
        fallbacks
    }

    /// The causal context a write of `key` replaces: the client's, once its
    /// seal is checked; for a delete without one, what R replicas hold.
    async fn context_for(
        &self,
        key: &Bytes,
        delete: bool,
        sealed: &Bytes,
        read_quorum: Option<u32>,
        deadline: Option<Deadline>,
    ) -> Result<CausalContext, Status> {
        let context = if sealed.is_empty() {
            CausalContext::new()
        } else {
            self.inner
                .config
                .seal
                .open(key, sealed)
                .map_err(|e| Status::invalid_argument(e.to_string()))?
        };
        if delete && context.is_empty() {
            Ok(self
                .read(key.clone(), read_quorum, deadline)
                .await?
                .context())
        } else {
            Ok(context)
        }
    }

    /// Writes `value` (or a tombstone, for `None`) under `key`.
    ///
    /// A delete without a context deletes what the cluster holds, not only
    /// what this node holds: it first reads the key from R replicas (the
    /// request's `read_quorum`) and writes its tombstone with their merged
    /// context, as Riak's clients do before a delete. A replica that missed
    /// a write is thereby never the only judge of what a delete removes.
    #[allow(clippy::too_many_arguments)]
    pub async fn write(
        &self,
        key: Bytes,
        value: Option<Bytes>,
        context: Bytes,
        read_quorum: Option<u32>,
        write_quorum: Option<u32>,
        ttl_seconds: u64,
        deadline: Option<Deadline>,
        forwarded: bool,
    ) -> Result<(), Status> {
        let quorums = self.inner.config.quorums;
        let w = self.quorum("write_quorum", write_quorum, quorums.w)?;
        let state = self.coordinating_state()?;
        let (partition, pref) = self.preference(&state.current, &key)?;
        let view = self.inner.membership.view();
        let me = self.inner.me.clone();

        // A node that has left keeps no data but still knows the ring: it
        // passes on a client's write that reaches it through a Service for a
        // moment after it left, and also a write passed to it by a node whose
        // view predates the departure. Its target owns the partition in the
        // newest layout and coordinates, so a write moves at most twice.
        if !pref.contains(&me) && (!forwarded || self.inner.lifecycle.has_left()) {
            let target = pref
                .iter()
                .find(|id| view.is_alive(id))
                .ok_or_else(|| {
                    Status::unavailable(format!(
                        "write quorum not met: 0 of {w} required acknowledgements, no replica of partition {partition} is alive"
                    ))
                })?;
            return self
                .forward(
                    &view,
                    target,
                    key,
                    value,
                    context,
                    (read_quorum, write_quorum),
                    ttl_seconds,
                    self.timeout(deadline),
                )
                .await
                .map_err(|status| passed_on_failed(target, partition, status));
        }

        let update = Update {
            key: key.clone(),
            context: self
                .context_for(&key, value.is_none(), &context, read_quorum, deadline)
                .await?,
            value,
            expires_at_ms: expiry(ttl_seconds),
            blind: context.is_empty(),
        };
        let local = self.inner.local.clone();
        let record = blocking(move || local.update(&update)).await?.encode();
        self.replicate_stamped(key, record, w, deadline).await
    }

    /// Sends a record this node has just stamped and written to the key's
    /// other replicas and answers once W of them (this node included) hold
    /// it.
    ///
    /// Every decision here comes from the ring state read *after* the local
    /// write. A transition may have started since the coordinator last
    /// looked, and a receiver's stream of this node's data may already be
    /// past the key: from a state read before the write, this node would
    /// count itself at once, and the receiver would never get the write.
    async fn replicate_stamped(
        &self,
        key: Bytes,
        record: Bytes,
        w: usize,
        deadline: Option<Deadline>,
    ) -> Result<(), Status> {
        let state = self.state()?;
        let roles = self.roles(&state, &key)?;
        let (partition, pref) = (roles.partition, roles.now);
        // Nodes receiving this partition get every write too (pending
        // ownership), so that nothing written during the stream is missed.
        let receivers: Vec<String> = state
            .receivers(partition)
            .into_iter()
            .filter(|id| *id != self.inner.me)
            .collect();
        let view = self.inner.membership.view();
        let me = self.inner.me.clone();
        // A coordinator that hands this partition off counts itself only
        // once the receivers hold the write (see `accept`).
        let handing_off = roles.place.hands_off();
        // Counted at once, unless it hands the partition off: then only once
        // the receivers hold the write (see below).
        let own_ack = pref.contains(&me) && !handing_off;
        // Right after a promotion, members that have not adopted it still
        // read from the owners before it: the write needs W of them too.
        let previous = state.previous_owners(partition);
        let mut quorum = WriteQuorum::new(w, partition, pref.clone(), previous.clone());
        if own_ack {
            quorum.acknowledge(&me);
        }
        let former: Vec<String> = previous
            .iter()
            .filter(|id| !pref.contains(id) && **id != me)
            .cloned()
            .collect();

        let fallbacks = Arc::new(Mutex::new(self.live_fallbacks(
            &state.current,
            partition,
            &view,
        )));
        let route = Arc::new(Route {
            view: view.clone(),
            version: state.version,
        });
        // Nodes receiving this partition get the write too. A coordinator
        // that hands it off sends it to them as part of its own
        // acknowledgement instead.
        let extra: FuturesUnordered<_> = receivers
            .iter()
            .filter(|_| !handing_off)
            .map(|target| {
                self.clone().replicate(
                    route.clone(),
                    target.clone(),
                    key.clone(),
                    record.clone(),
                    Arc::new(Mutex::new(Vec::new())),
                    deadline,
                )
            })
            .collect();
        if !extra.is_empty() {
            tokio::spawn(extra.collect::<Vec<_>>());
        }
        let mut pending: FuturesUnordered<BoxFuture<'static, (String, bool)>> = pref
            .iter()
            .filter(|id| **id != me)
            .map(|target| (target, fallbacks.clone()))
            .chain(
                former
                    .iter()
                    .map(|target| (target, Arc::new(Mutex::new(Vec::new())))),
            )
            .map(|(target, fallbacks)| {
                let write = self.clone().replicate(
                    route.clone(),
                    target.clone(),
                    key.clone(),
                    record.clone(),
                    fallbacks,
                    deadline,
                );
                let target = target.clone();
                async move { (target, write.await) }.boxed()
            })
            .collect();
        if handing_off {
            // This node drops its copy once the transition ends, and the
            // stream may already have passed the key: its acknowledgement
            // counts once the receivers hold the write. It runs alongside
            // the other replicas' writes, within the same deadline.
            let (this, state) = (self.clone(), state.clone());
            let (key, record) = (key.clone(), record.clone());
            pending.push(
                async move {
                    let relay = Relay {
                        hops: 1,
                        ring_version: state.version,
                        deadline,
                    };
                    let held = this
                        .forward_to_receivers(&state, partition, &key, &record, relay)
                        .await;
                    (this.inner.me.clone(), held.is_ok())
                }
                .boxed(),
            );
        }
        while !quorum.met() {
            match pending.next().await {
                Some((target, true)) => quorum.acknowledge(&target),
                Some((_, false)) => {}
                None => break,
            }
        }
        // The remaining replicas still get the write, after the client has
        // its answer.
        if !pending.is_empty() {
            tokio::spawn(async move { while pending.next().await.is_some() {} });
        }
        quorum.outcome()
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        view: &View,
        target: &str,
        key: Bytes,
        value: Option<Bytes>,
        context: Bytes,
        (read_quorum, write_quorum): (Option<u32>, Option<u32>),
        ttl_seconds: u64,
        timeout: Duration,
    ) -> Result<(), Status> {
        let mut client = self.inner.peers.rawkv(&Self::address(view, target)?)?;
        let consistency = Some(Consistency {
            read_quorum,
            write_quorum,
        });
        match value {
            Some(value) => {
                let request = RawPutRequest {
                    key,
                    value,
                    consistency,
                    context,
                    ttl_seconds,
                };
                client.raw_put(forwarded(request, timeout)).await?;
            }
            None => {
                let request = RawDeleteRequest {
                    key,
                    consistency,
                    context,
                };
                client.raw_delete(forwarded(request, timeout)).await?;
            }
        }
        Ok(())
    }

    /// Reads `key` from R replicas, merges their records and repairs stale
    /// replicas: synchronously those that answered, later the rest.
    pub async fn read(
        &self,
        key: Bytes,
        read_quorum: Option<u32>,
        deadline: Option<Deadline>,
    ) -> Result<Siblings, Status> {
        let quorums = self.inner.config.quorums;
        let r = self.quorum("read_quorum", read_quorum, quorums.r)?;
        let state = self.coordinating_state()?;
        let (_, pref) = self.preference(&state.current, &key)?;
        let route = Arc::new(self.route(state.version));
        let timeout = self.timeout(deadline);

        let mut pending: FuturesUnordered<_> = pref
            .iter()
            .filter(|id| route.is_alive(id) || **id == self.inner.me)
            .map(|node| {
                let (this, route, node, key) =
                    (self.clone(), route.clone(), node.clone(), key.clone());
                async move {
                    let result = this.read_from(&route, &node, &key, timeout).await;
                    (node, result)
                }
            })
            .collect();
        // A refilling replica's answer is merged but counts toward no
        // quorum: it may lack acknowledged writes (see `refill`).
        let mut replies: Vec<(String, Option<Siblings>)> = Vec::new();
        let (mut counted, mut refilling) = (0usize, 0usize);
        while counted < r {
            match pending.next().await {
                Some((node, Ok(reply))) => {
                    if reply.counts {
                        counted += 1;
                    } else {
                        refilling += 1;
                    }
                    replies.push((node, reply.record));
                }
                Some((node, Err(status))) => {
                    tracing::debug!(%node, %status, "replica read failed");
                }
                None => break,
            }
        }
        if counted < r {
            let refilling = if refilling > 0 {
                format!(" ({refilling} more replied but are refilling after losing their data)")
            } else {
                String::new()
            };
            return Err(Status::unavailable(format!(
                "read quorum not met: {counted} of {} replicas replied, R={r} required{refilling}",
                pref.len()
            )));
        }
        let mode = self.mode();
        let merged = replies
            .iter()
            .filter_map(|(_, record)| record.as_ref())
            .fold(Siblings::default(), |acc, record| {
                acc.merge_with(mode, record)
            });
        if merged.is_empty() {
            return Ok(merged);
        }
        let encoded = merged.encode();
        let repairs = replies
            .iter()
            .filter(|(_, record)| is_stale(record, &merged))
            .map(|(node, _)| self.repair(&route, node, &key, &encoded, timeout));
        futures::future::join_all(repairs).await;

        let (this, merged_late) = (self.clone(), merged.clone());
        tokio::spawn(async move {
            while let Some((node, result)) = pending.next().await {
                if let Ok(ReplicaReply { record, .. }) = result {
                    if is_stale(&record, &merged_late) {
                        this.repair(&route, &node, &key, &encoded, timeout).await;
                    }
                }
            }
        });
        Ok(merged)
    }

    async fn repair(
        &self,
        route: &Route,
        node: &str,
        key: &Bytes,
        record: &Bytes,
        timeout: Duration,
    ) {
        match self
            .apply_to(route, node, key, record, Delivery::Replica, timeout)
            .await
        {
            Ok(()) => {
                self.inner.metrics.read_repairs.inc();
            }
            Err(status) => tracing::debug!(%node, %status, "read repair failed"),
        }
    }

    /// Scans a key range: every live member returns its own records, of
    /// which only those of partitions it owns in the current layout count
    /// (a former owner's leftover copy is no answer), and the copies of one
    /// key are merged. Every partition needs answers from R of its owners,
    /// or the scan fails with UNAVAILABLE naming the partitions short of R,
    /// rather than silently returning part of the range. Pages continue
    /// past keys that every copy shows deleted, until `limit` visible pairs
    /// are found.
    pub async fn scan(
        &self,
        range: ScanRange,
        read_quorum: Option<u32>,
        deadline: Option<Deadline>,
    ) -> Result<Vec<(Bytes, Siblings)>, Status> {
        let r = self.quorum("read_quorum", read_quorum, self.inner.config.quorums.r)?;
        let state = self.coordinating_state()?;
        let layout = state.current.clone();
        // Every page goes out on the version the owners came from: once the
        // ring has moved past it, peers refuse the pages and the scan fails
        // rather than count copies their former owners have dropped.
        let view = self.route(state.version);
        let timeout = self.timeout(deadline);
        let members: Vec<String> = layout
            .members()
            .iter()
            .map(|m| m.id.clone())
            .filter(|id| view.is_alive(id) || *id == self.inner.me)
            .collect();
        let partitions = layout.partitions();
        let owners: Vec<Vec<String>> = (0..partitions)
            .map(|p| {
                layout
                    .preference_list(p)
                    .map(|list| list.into_iter().map(String::from).collect())
                    .map_err(|e| Status::internal(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let mode = self.mode();
        let page = range.limit.clamp(1, 10_000);
        let mut cursor = range.clone();
        let mut out = Vec::new();
        loop {
            let pages = futures::future::join_all(
                members
                    .iter()
                    .map(|node| self.scan_node(&view, node, &cursor, page, timeout)),
            )
            .await;
            let mut merged: BTreeMap<Bytes, Siblings> = BTreeMap::new();
            // Keys past the first full page's last key may be missing from
            // that node's answer, so only keys up to it are final this round.
            let mut frontier: Option<Bytes> = None;
            // Per partition, how many of its owners answered for it.
            let mut answers = vec![0usize; partitions as usize];
            for (node, result) in members.iter().zip(pages) {
                let ScanReply { records, refilling } = match result {
                    Ok(reply) => reply,
                    Err(status) => {
                        tracing::debug!(%node, %status, "replica scan failed");
                        continue;
                    }
                };
                let counts = |p: u32| {
                    owners[p as usize].iter().any(|o| o == node) && !refilling.contains(&p)
                };
                for (p, count) in answers.iter_mut().enumerate() {
                    *count += usize::from(counts(p as u32));
                }
                if records.len() >= page {
                    if let Some((last, _)) = records.last() {
                        frontier = Some(match (frontier, range.reverse) {
                            (None, _) => last.clone(),
                            (Some(f), false) => f.min(last.clone()),
                            (Some(f), true) => f.max(last.clone()),
                        });
                    }
                }
                for (key, record) in records {
                    if !counts(partition_of(&key, partitions)) {
                        continue;
                    }
                    let entry = merged.entry(key).or_default();
                    *entry = entry.merge_with(mode, &record);
                }
            }
            let short: Vec<u32> = (0..partitions)
                .filter(|p| answers[*p as usize] < r)
                .collect();
            if !short.is_empty() {
                return Err(Status::unavailable(format!(
                    "scan: read quorum not met for {} of {partitions} partitions (R={r}): {}",
                    short.len(),
                    name_some(&short)
                )));
            }
            let keys: Box<dyn Iterator<Item = (Bytes, Siblings)>> = if range.reverse {
                Box::new(merged.into_iter().rev())
            } else {
                Box::new(merged.into_iter())
            };
            for (key, record) in keys {
                let beyond =
                    frontier.as_ref().is_some_and(
                        |f| {
                            if range.reverse {
                                key < *f
                            } else {
                                key > *f
                            }
                        },
                    );
                if beyond {
                    break;
                }
                if !visible_values(&record, mode).is_empty() {
                    out.push((key, record));
                    if out.len() >= range.limit {
                        return Ok(out);
                    }
                }
            }
            let Some(frontier) = frontier else {
                return Ok(out);
            };
            if range.reverse {
                cursor.end = frontier;
            } else {
                let mut next = frontier.to_vec();
                next.push(0);
                cursor.start = Bytes::from(next);
            }
        }
    }

    async fn scan_node(
        &self,
        route: &Route,
        node: &str,
        range: &ScanRange,
        page: usize,
        timeout: Duration,
    ) -> Result<ScanReply, Status> {
        let range = ScanRange {
            limit: page,
            key_only: false,
            ..range.clone()
        };
        if node == self.inner.me {
            let local = self.inner.local.clone();
            let refilling = self.inner.refill.unserved();
            let records = blocking(move || local.scan(&range)).await?;
            return Ok(ScanReply { records, refilling });
        }
        let mut client = self.inner.peers.replica(&Self::address(route, node)?)?;
        let request = self.to_replica(
            route,
            ReplicaScanRequest {
                start_key: range.start,
                end_key: range.end,
                limit: page as u32,
                reverse: range.reverse,
            },
            timeout,
        );
        let reply = client.scan_local(request).await?.into_inner();
        let records = reply
            .records
            .into_iter()
            .map(|r| {
                Siblings::decode(&r.record)
                    .map(|record| (r.key, record))
                    .map_err(|e| {
                        Status::internal(format!("node {node} sent an unreadable record: {e}"))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(ScanReply {
            records,
            refilling: reply.refilling,
        })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    /// A pass-on that got no answer in time reads as UNAVAILABLE, not as
    /// the client's own timeout; the replica's own answer keeps its code;
    /// both name the replica and the partition.
    #[test]
    fn a_failed_pass_on_names_the_replica_and_keeps_a_real_answer() {
        for (from, to) in [
            (Code::Cancelled, Code::Unavailable),
            (Code::DeadlineExceeded, Code::Unavailable),
            (Code::Unavailable, Code::Unavailable),
            (Code::InvalidArgument, Code::InvalidArgument),
            (Code::Internal, Code::Internal),
            (Code::FailedPrecondition, Code::FailedPrecondition),
        ] {
            let status = passed_on_failed("n2", 17, Status::new(from, "because"));
            assert_eq!(status.code(), to, "{from:?}");
            assert!(
                status
                    .message()
                    .starts_with("write passed on to n2, a replica of partition 17")
                    && status.message().ends_with("because"),
                "{}",
                status.message()
            );
        }
    }
}
