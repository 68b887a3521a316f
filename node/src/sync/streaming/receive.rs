//! Receiving partitions during a ring transition.
//!
//! A node that owns a partition in the next layout but not in the current
//! one needs the copy of every live current owner, and of every owner that
//! gives it up, down or not (see [`plan_round`]). It streams the partition
//! whole from one owner with `Replica.StreamPartitions`, then has each other
//! owner stream only the hashes of its records and pulls the records that
//! differ, so a partition crosses the network about once.
//! Partitions that come from the same source share one stream: one ordered
//! scan of the source's data, filtered by partition. After every batch the
//! receiver applies the records (merging, so re-sent records are harmless)
//! and persists the last scanned key as each partition's cursor; a crash of
//! either side resumes from the cursors.
//! When every incoming partition is complete, the node gossips `synced` for
//! the ring state version and the claimant may promote the next layout.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use ringkv_proto::v1::{
    replica_client::ReplicaClient, PartitionProgress, ReplicaReadRequest, ReplicaRecord,
    StreamPartitionsRequest,
};

use crate::{
    cluster::membership::{Membership, View},
    cluster::peers::{PeerChannel, PeerClients},
    cluster::rpc::RING_VERSION,
    replica::{blocking, LocalReplica, ReplicaError},
    ring::{partition_of, LayoutError, Ring, RingState},
    server::metrics::ReplicationMetrics,
    storage::Storage,
    sync::anti_entropy::pair_hash,
    sync::refill::Refill,
};

/// Progress of the partitions this node receives, for `RingStatus`.
#[derive(Default)]
pub struct StreamProgress {
    inner: Mutex<(u64, BTreeMap<u32, PartitionProgress>)>,
}

impl StreamProgress {
    /// The state version and every partition's progress.
    pub fn snapshot(&self) -> (u64, Vec<PartitionProgress>) {
        match self.inner.lock() {
            Ok(guard) => (guard.0, guard.1.values().cloned().collect()),
            Err(_) => (0, Vec::new()),
        }
    }

    /// Everything `source` holds of `partitions` has arrived.
    fn streamed(&self, version: u64, partitions: &[u32], source: &str) {
        self.update(version, |map| {
            for p in partitions {
                if let Some(entry) = map.get_mut(p) {
                    if !entry.streamed_from.iter().any(|s| s == source) {
                        entry.streamed_from.push(source.to_string());
                    }
                }
            }
        });
    }

    fn update(&self, version: u64, f: impl FnOnce(&mut BTreeMap<u32, PartitionProgress>)) {
        if let Ok(mut guard) = self.inner.lock() {
            if guard.0 != version {
                *guard = (version, BTreeMap::new());
            }
            f(&mut guard.1);
        }
    }
}

/// The progress of `partition` as received by `receiver`, started if new.
fn entry<'m>(
    map: &'m mut BTreeMap<u32, PartitionProgress>,
    partition: u32,
    receiver: &str,
) -> &'m mut PartitionProgress {
    map.entry(partition).or_insert_with(|| PartitionProgress {
        partition,
        node_id: receiver.to_string(),
        ..Default::default()
    })
}

fn cursor_key(version: u64, partition: u32, source: &str) -> String {
    format!("sync/{version}/{partition}/from/{source}")
}

/// Everything `source` holds of the partition has arrived.
fn source_done_key(version: u64, partition: u32, source: &str) -> String {
    format!("sync/{version}/{partition}/from/{source}/done")
}

fn done_key(version: u64, partition: u32) -> String {
    format!("sync/{version}/{partition}/done")
}

/// Receives partitions until the process stops.
pub async fn run(
    ring: Arc<Ring>,
    membership: Arc<Membership>,
    local: Arc<LocalReplica>,
    peers: Arc<PeerClients>,
    progress: Arc<StreamProgress>,
    metrics: ReplicationMetrics,
    refill: Arc<Refill>,
) {
    let me = membership.self_id().to_string();
    let mut states = ring.subscribe();
    let mut synced = 0u64;
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(500), states.changed()).await;
        let Some(state) = ring.state() else { continue };
        if state.next.is_none() || synced >= state.version {
            continue;
        }
        let incoming = state.receiving(&me);
        let view = membership.view();
        let context = Receiving {
            state: &state,
            me: &me,
            view: &view,
            membership: &membership,
            local: &local,
            peers: &peers,
            progress: &progress,
            metrics: &metrics,
        };
        match receive_all(&context, &incoming).await {
            Ok(true) => {
                tracing::info!(
                    version = state.version,
                    partitions = incoming.len(),
                    "received every incoming partition"
                );
                // A received partition holds what the owners giving it up
                // held, what the live owners held, and every write since:
                // with the owners that keep it, any read quorum of the new
                // owners finds every acknowledged write. A node that joined
                // with an empty data dir need not refill it again, which
                // would wait for every owner, dead ones included.
                for p in &incoming {
                    refill.mark_refilled(*p);
                }
                membership.set_synced(state.version).await;
                synced = state.version;
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "partition stream interrupted; resuming"),
        }
    }
}

/// What one round of receiving works with.
struct Receiving<'a> {
    state: &'a RingState,
    me: &'a str,
    view: &'a View,
    /// Gossip's current view, for whether a source is still up.
    membership: &'a Membership,
    local: &'a Arc<LocalReplica>,
    peers: &'a PeerClients,
    progress: &'a StreamProgress,
    metrics: &'a ReplicationMetrics,
}

/// Why a round of partition streaming stopped short. The next round
/// resumes from the cursors, so these are logged, never fatal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("local replica: {0}")]
    Local(#[from] ReplicaError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("no live owner of partition {0} to stream from")]
    NoLiveOwner(u32),
    #[error("source {0} is unknown to gossip")]
    UnknownSource(String),
    #[error("source {0} went down mid-stream")]
    SourceDown(String),
    #[error("stream from {node}: {status}")]
    Source { node: String, status: tonic::Status },
}

/// Streams every incomplete incoming partition; true once all are complete.
///
/// A round first copies each partition from one live owner, then has the
/// other owners send the hashes of their records and pulls the records
/// that differ: a join moves each partition about once, not once per owner.
async fn receive_all(cx: &Receiving<'_>, incoming: &[u32]) -> Result<bool, StreamError> {
    let Receiving {
        state,
        me,
        view,
        local,
        progress,
        ..
    } = *cx;
    let version = state.version;
    let storage = local.storage().clone();
    let pending: Vec<u32> = {
        let incoming = incoming.to_vec();
        blocking(move || {
            let mut pending = Vec::new();
            for p in incoming {
                if storage.meta_get(&done_key(version, p))?.is_none() {
                    pending.push(p);
                }
            }
            Ok(pending)
        })
        .await
        .map_err(StreamError::Local)?
    };
    for p in incoming.iter().filter(|p| !pending.contains(p)) {
        progress.update(version, |map| entry(map, *p, me).complete = true);
    }
    if pending.is_empty() {
        return Ok(true);
    }
    let mut owners: BTreeMap<u32, Owners> = BTreeMap::new();
    for p in &pending {
        let now = state.current.preference_list(*p)?;
        let next = match &state.next {
            Some(next) => next.preference_list(*p)?,
            None => Vec::new(),
        };
        owners.insert(
            *p,
            Owners {
                now: now.iter().map(|id| id.to_string()).collect(),
                next: next.iter().map(|id| id.to_string()).collect(),
            },
        );
    }
    // Copies first, then digests: two passes, or one more when a copy
    // finished in the second (its source had not adopted the transition).
    let mut plan = Plan::default();
    for _ in 0..3 {
        let arrived = arrived_copies(local, version, &owners).await?;
        plan = plan_round(
            &owners,
            me,
            |id| view.is_alive(id),
            |p, id| arrived.contains(&(p, id.to_string())),
        );
        report_awaiting(progress, version, me, &plan);
        for (p, source) in &plan.arrived {
            progress.streamed(version, &[*p], source);
        }
        if let Some(p) = plan.no_live_owner.first() {
            return Err(StreamError::NoLiveOwner(*p));
        }
        if plan.streams.is_empty() {
            break;
        }
        let streams = std::mem::take(&mut plan.streams).into_iter().map(
            |((source, transfer), partitions)| {
                receive_group_retrying(cx, source, transfer, partitions)
            },
        );
        for result in futures::future::join_all(streams).await {
            result?;
        }
    }
    let finished = plan.complete.clone();
    let storage = local.storage().clone();
    let marked = finished.clone();
    blocking(move || {
        let done: Vec<(String, Vec<u8>)> = marked
            .iter()
            .map(|p| (done_key(version, *p), b"1".to_vec()))
            .collect();
        Ok(storage.meta_put_many(&done)?)
    })
    .await
    .map_err(StreamError::Local)?;
    progress.update(version, |map| {
        for p in &finished {
            if let Some(entry) = map.get_mut(p) {
                entry.complete = true;
                entry.keys_remaining = 0;
            }
        }
    });
    Ok(finished.len() == pending.len())
}

/// Which (partition, source) copies have arrived in full, by their markers.
async fn arrived_copies(
    local: &Arc<LocalReplica>,
    version: u64,
    owners: &BTreeMap<u32, Owners>,
) -> Result<BTreeSet<(u32, String)>, StreamError> {
    let storage = local.storage().clone();
    let asked: Vec<(u32, String)> = owners
        .iter()
        .flat_map(|(p, o)| o.now.iter().map(move |id| (*p, id.clone())))
        .collect();
    blocking(move || {
        let mut arrived = BTreeSet::new();
        for (p, id) in asked {
            if storage
                .meta_get(&source_done_key(version, p, &id))?
                .is_some()
            {
                arrived.insert((p, id));
            }
        }
        Ok(arrived)
    })
    .await
    .map_err(StreamError::Local)
}

/// Records which partitions wait for a down owner, warning once per change.
fn report_awaiting(progress: &StreamProgress, version: u64, me: &str, plan: &Plan) {
    let mut newly_awaiting = Vec::new();
    progress.update(version, |map| {
        for (p, awaited) in &plan.awaited {
            let entry = entry(map, *p, me);
            if entry.awaiting != *awaited {
                entry.awaiting = awaited.clone();
                if !entry.awaiting.is_empty() {
                    newly_awaiting.push(*p);
                }
            }
        }
    });
    if !newly_awaiting.is_empty() {
        tracing::warn!(
            partitions = ?newly_awaiting,
            "these partitions wait for an owner that gives them up and is down (see RingStatus): its copy may hold acknowledged writes no other owner holds"
        );
    }
}

/// A partition's owners in the current and the next layout.
#[derive(Clone, Debug)]
pub(crate) struct Owners {
    pub now: Vec<String>,
    pub next: Vec<String>,
}

/// How a source sends a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Transfer {
    /// Every record.
    Copy,
    /// The hash of every record; the receiver pulls those that differ.
    Digests,
}

/// What one round of receiving does next.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Streams to run, per source and transfer.
    pub streams: BTreeMap<(String, Transfer), Vec<u32>>,
    /// Partitions whose every needed copy has arrived.
    pub complete: Vec<u32>,
    /// Per partition, the owners that give it up, are down and whose copy
    /// has not arrived: it cannot complete until each is back.
    pub awaited: BTreeMap<u32, Vec<String>>,
    /// Copies that have arrived, per partition and source.
    pub arrived: Vec<(u32, String)>,
    /// Partitions no live owner can send.
    pub no_live_owner: Vec<u32>,
}

/// Plans a round of receiving for `me`, given each partition's owners,
/// who is alive and which copies have arrived.
///
/// Every owner's copy must reach the receiver: a write acknowledged by W
/// owners may be missing on any single one, and the copies of owners that
/// leave are gone once they have left (CASSANDRA-2434). An owner that
/// gives the partition up must do so even if it is down now: once the next
/// layout is promoted nobody reads it, so the receiver waits for it, as
/// Riak's handoff and Cassandra's consistent range movements wait for the
/// owner they replace. An owner that keeps the partition and is down adds
/// only a copy the others already cover: its data stays where reads find
/// it. Writes acknowledged after a copy or digest scan passed their key
/// reach the receiver through pending ownership, so a copy that has
/// arrived stays arrived.
///
/// One owner sends the whole partition, preferably one that gives it up;
/// each other one then sends only hashes, and the receiver pulls the
/// records that differ.
pub(crate) fn plan_round(
    owners: &BTreeMap<u32, Owners>,
    me: &str,
    is_alive: impl Fn(&str) -> bool,
    has_arrived: impl Fn(u32, &str) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    for (p, o) in owners {
        let sources: Vec<&String> = o.now.iter().filter(|id| *id != me).collect();
        let (mut live, mut awaited) = (Vec::new(), Vec::new());
        let mut copied = false;
        for id in &sources {
            if has_arrived(*p, id) {
                copied = true;
                plan.arrived.push((*p, id.to_string()));
            } else if is_alive(id) {
                live.push(id.to_string());
            } else if !o.next.contains(id) {
                awaited.push(id.to_string());
            }
        }
        let missing = !live.is_empty() || !awaited.is_empty();
        plan.awaited.insert(*p, awaited);
        if !missing {
            if copied || sources.is_empty() {
                plan.complete.push(*p);
            } else {
                plan.no_live_owner.push(*p);
            }
            continue;
        }
        if copied {
            for id in live {
                plan.streams
                    .entry((id, Transfer::Digests))
                    .or_default()
                    .push(*p);
            }
            continue;
        }
        let giving_up = live.iter().find(|id| !o.next.contains(*id));
        match giving_up.or(live.first()) {
            Some(primary) => plan
                .streams
                .entry((primary.clone(), Transfer::Copy))
                .or_default()
                .push(*p),
            None => plan.no_live_owner.push(*p),
        }
    }
    plan
}

/// How often a failed stream from one source is retried at once, before
/// the round gives up and starts over with a fresh view.
const STREAM_ATTEMPTS: u32 = 10;

/// Streams from one source, retrying it on its own: a source that has not
/// adopted the transition yet refuses for a moment, and waiting for the
/// other sources' streams to end before asking it again could take as
/// long as the whole handoff. Each attempt resumes from the cursors.
async fn receive_group_retrying(
    cx: &Receiving<'_>,
    source: String,
    transfer: Transfer,
    partitions: Vec<u32>,
) -> Result<(), StreamError> {
    let mut attempt = 1;
    loop {
        match receive_group(cx, source.clone(), transfer, partitions.clone()).await {
            Ok(()) => return Ok(()),
            // The next round plans without it.
            Err(error @ StreamError::SourceDown(_)) => return Err(error),
            Err(error) if attempt < STREAM_ATTEMPTS => {
                tracing::debug!(%error, %source, attempt, "stream failed; retrying this source");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn receive_group(
    cx: &Receiving<'_>,
    source: String,
    transfer: Transfer,
    partitions: Vec<u32>,
) -> Result<(), StreamError> {
    let Receiving {
        state,
        me,
        view,
        local,
        peers,
        progress,
        metrics,
        ..
    } = *cx;
    let version = state.version;
    let partition_count = state.current.partitions();
    let addr = view
        .peers
        .get(&source)
        .map(|p| p.grpc.clone())
        .ok_or_else(|| StreamError::UnknownSource(source.clone()))?;
    // Resume from the earliest cursor of the group: records before a later
    // cursor are re-sent and merged again, which changes nothing.
    let storage = local.storage().clone();
    let start_after: Bytes = {
        let partitions = partitions.clone();
        let source_name = source.clone();
        blocking(move || {
            let mut earliest: Option<Vec<u8>> = None;
            for p in partitions {
                match storage.meta_get(&cursor_key(version, p, &source_name))? {
                    None => return Ok(Vec::new()),
                    Some(cursor) => {
                        if earliest.as_ref().is_none_or(|e| cursor < *e) {
                            earliest = Some(cursor);
                        }
                    }
                }
            }
            Ok(earliest.unwrap_or_default())
        })
        .await
        .map_err(StreamError::Local)?
        .into()
    };
    if transfer == Transfer::Copy {
        progress.update(version, |map| {
            for p in &partitions {
                entry(map, *p, me).source = source.clone();
            }
        });
    }
    tracing::info!(%source, ?transfer, partitions = partitions.len(), resume = !start_after.is_empty(), "streaming partitions");
    if !start_after.is_empty() {
        metrics.handoff_streams_resumed.inc();
    }
    let from_source = |status| StreamError::Source {
        node: source.clone(),
        status,
    };
    let mut client = peers.replica(&addr).map_err(from_source)?;
    let mut request = tonic::Request::new(StreamPartitionsRequest {
        partitions: partitions.clone(),
        start_after,
        digests: transfer == Transfer::Digests,
    });
    // The source refuses until it has adopted this transition itself.
    request
        .metadata_mut()
        .insert(RING_VERSION, tonic::metadata::MetadataValue::from(version));
    let mut stream = while_up(cx, &source, client.stream_partitions(request))
        .await?
        .into_inner();
    let wanted: BTreeSet<u32> = partitions.iter().copied().collect();
    let mut expected: BTreeMap<u32, u64> = BTreeMap::new();
    while let Some(batch) = while_up(cx, &source, stream.message()).await? {
        if transfer == Transfer::Copy && !batch.partition_keys.is_empty() {
            expected = batch.partition_keys.iter().map(|(p, k)| (*p, *k)).collect();
        }
        let last_key = batch.last_key.clone();
        let records = match transfer {
            Transfer::Copy => batch.records,
            Transfer::Digests => {
                let differing = differing_keys(local, batch.records).await?;
                while_up(cx, &source, pull(&client, differing)).await?
            }
        };
        let mut counts: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for wire in &records {
            let p = partition_of(&wire.key, partition_count);
            if wanted.contains(&p) {
                let entry = counts.entry(p).or_default();
                entry.0 += 1;
                entry.1 += (wire.key.len() + wire.record.len()) as u64;
            }
        }
        let (local_ref, parts) = (local.clone(), partitions.clone());
        let source_name = source.clone();
        blocking(move || {
            for wire in records {
                local_ref.apply_encoded(&wire.key, &wire.record)?;
            }
            let cursors: Vec<(String, Vec<u8>)> = parts
                .iter()
                .map(|p| (cursor_key(version, *p, &source_name), last_key.to_vec()))
                .collect();
            local_ref.storage().meta_put_many(&cursors)?;
            Ok(())
        })
        .await
        .map_err(StreamError::Local)?;
        for (keys, bytes) in counts.values() {
            metrics.handoff_keys_received.inc_by(*keys);
            metrics.handoff_bytes_received.inc_by(*bytes);
        }
        progress.update(version, |map| {
            for (p, (keys, bytes)) in counts {
                if let Some(entry) = map.get_mut(&p) {
                    entry.keys_done += keys;
                    entry.bytes_done += bytes;
                }
            }
            for (p, keys) in &expected {
                if let Some(entry) = map.get_mut(p) {
                    entry.keys_remaining = keys.saturating_sub(entry.keys_done);
                }
            }
        });
    }
    let storage = local.storage().clone();
    let parts = partitions.clone();
    let source_name = source.clone();
    blocking(move || {
        let done: Vec<(String, Vec<u8>)> = parts
            .iter()
            .map(|p| (source_done_key(version, *p, &source_name), b"1".to_vec()))
            .collect();
        Ok(storage.meta_put_many(&done)?)
    })
    .await
    .map_err(StreamError::Local)?;
    progress.streamed(version, &partitions, &source);
    Ok(())
}

/// The keys of `digests` (key, record hash) whose record here differs from
/// the sender's.
async fn differing_keys(
    local: &Arc<LocalReplica>,
    digests: Vec<ReplicaRecord>,
) -> Result<Vec<Bytes>, StreamError> {
    let local = local.clone();
    blocking(move || {
        let mut differing = Vec::new();
        for digest in digests {
            let mine = local.storage().get(&digest.key)?;
            let same = mine.is_some_and(|record| {
                pair_hash(&digest.key, &record).to_le_bytes() == *digest.record
            });
            if !same {
                differing.push(digest.key);
            }
        }
        Ok(differing)
    })
    .await
    .map_err(StreamError::Local)
}

/// How often a wait on a source checks that gossip still sees it up.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Waits for `call` to `source`, giving up once gossip finds the source
/// down: a source that stopped without closing its connections (paused, or
/// its host gone) would hold the round for as long as TCP and HTTP/2 take
/// to notice, and every other partition of the round with it.
async fn while_up<T>(
    cx: &Receiving<'_>,
    source: &str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, StreamError> {
    tokio::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => {
                return result.map_err(|status| StreamError::Source {
                    node: source.to_string(),
                    status,
                });
            }
            _ = tokio::time::sleep(LIVENESS_CHECK) => {
                if !cx.membership.view().is_alive(source) {
                    return Err(StreamError::SourceDown(source.to_string()));
                }
            }
        }
    }
}

/// Keys pulled from one source at a time, each with its own read.
const PULL_CONCURRENCY: usize = 16;

/// Reads `keys` from the source, for merging here.
async fn pull(
    client: &ReplicaClient<PeerChannel>,
    keys: Vec<Bytes>,
) -> Result<Vec<ReplicaRecord>, tonic::Status> {
    let reads = futures::stream::iter(keys).map(|key| {
        let mut client = client.clone();
        async move {
            let reply = client
                .read(ReplicaReadRequest { key: key.clone() })
                .await?
                .into_inner();
            Ok::<_, tonic::Status>((!reply.record.is_empty()).then_some(ReplicaRecord {
                key,
                record: reply.record,
            }))
        }
    });
    let mut pulled = Vec::new();
    let mut reads = reads.buffer_unordered(PULL_CONCURRENCY);
    while let Some(read) = reads.next().await {
        pulled.extend(read?);
    }
    Ok(pulled)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NODES: [&str; 5] = ["a", "b", "c", "d", "me"];

    /// Three distinct owners out of [`NODES`], picked by three indexes.
    fn owners(picks: (usize, usize, usize)) -> Vec<String> {
        let mut pool: Vec<&str> = NODES.to_vec();
        let mut chosen = Vec::new();
        for pick in [picks.0, picks.1, picks.2] {
            chosen.push(pool.remove(pick % pool.len()).to_string());
        }
        chosen
    }

    fn any_owners() -> impl Strategy<Value = Owners> {
        (
            (0..5usize, 0..4usize, 0..3usize),
            (0..5usize, 0..4usize, 0..3usize),
        )
            .prop_map(|(now, next)| {
                let mut next = owners(next);
                // The receiver owns the partition next.
                if !next.iter().any(|id| id == "me") {
                    next[0] = "me".to_string();
                }
                Owners {
                    now: owners(now),
                    next,
                }
            })
    }

    proptest! {
        /// Whoever is alive and whatever has arrived: a partition is
        /// complete only once the copy of every live owner and of every
        /// owner that gives it up has arrived; one owner at most copies
        /// it, and only while no copy has arrived; digests are asked only
        /// after one has. With everyone alive and every stream finishing,
        /// each partition is copied once, and complete after two rounds.
        #[test]
        fn a_partition_completes_only_with_every_needed_copy(
            partitions in proptest::collection::vec(any_owners(), 1..6),
            alive in proptest::collection::vec(any::<bool>(), NODES.len()),
            arrived in proptest::collection::btree_set((0..6u32, 0..5usize), 0..12),
        ) {
            let owners: BTreeMap<u32, Owners> =
                partitions.into_iter().enumerate().map(|(p, o)| (p as u32, o)).collect();
            let is_alive = |id: &str| NODES.iter().position(|n| *n == id).is_some_and(|i| alive[i]);
            let has_arrived = |p: u32, id: &str| {
                NODES.iter().position(|n| *n == id).is_some_and(|i| arrived.contains(&(p, i)))
            };
            let plan = plan_round(&owners, "me", is_alive, has_arrived);
            for (p, o) in &owners {
                let sources: Vec<&String> = o.now.iter().filter(|id| *id != "me").collect();
                let copied = sources.iter().any(|id| has_arrived(*p, id));
                let needed_missing = sources.iter().any(|id| {
                    !has_arrived(*p, id) && (is_alive(id) || !o.next.contains(*id))
                });
                let complete = plan.complete.contains(p);
                prop_assert_eq!(
                    complete,
                    !needed_missing && (copied || sources.is_empty()),
                    "partition {} of {:?}", p, o
                );
                let copies: Vec<&String> = plan
                    .streams
                    .iter()
                    .filter(|((_, t), ps)| *t == Transfer::Copy && ps.contains(p))
                    .map(|((s, _), _)| s)
                    .collect();
                let digests = plan
                    .streams
                    .iter()
                    .filter(|((_, t), ps)| *t == Transfer::Digests && ps.contains(p))
                    .count();
                prop_assert!(copies.len() <= 1);
                prop_assert!(copies.is_empty() || !copied);
                prop_assert!(digests == 0 || copied);
                for ((source, _), ps) in &plan.streams {
                    if ps.contains(p) {
                        prop_assert!(is_alive(source) && !has_arrived(*p, source));
                        prop_assert!(source != "me" && o.now.contains(source));
                    }
                }
                // A copy comes from an owner that gives the partition up
                // when one is alive: its copy is the one that goes away.
                if let Some(copy) = copies.first() {
                    let giving_up_alive = sources
                        .iter()
                        .any(|id| is_alive(id) && !o.next.contains(*id));
                    if giving_up_alive {
                        prop_assert!(!o.next.contains(*copy), "copied from {} though an owner giving it up is alive", copy);
                    }
                }
            }
        }

        #[test]
        fn with_everyone_alive_each_partition_is_copied_once(
            partitions in proptest::collection::vec(any_owners(), 1..6),
        ) {
            let owners: BTreeMap<u32, Owners> =
                partitions.into_iter().enumerate().map(|(p, o)| (p as u32, o)).collect();
            let mut arrived: BTreeSet<(u32, String)> = BTreeSet::new();
            let mut copies: BTreeMap<u32, usize> = BTreeMap::new();
            let mut rounds = 0;
            loop {
                let plan = plan_round(&owners, "me", |_| true, |p, id| {
                    arrived.contains(&(p, id.to_string()))
                });
                prop_assert!(plan.no_live_owner.is_empty());
                if plan.complete.len() == owners.len() {
                    break;
                }
                rounds += 1;
                prop_assert!(rounds <= 2, "not complete after two rounds");
                for ((source, transfer), ps) in plan.streams {
                    for p in ps {
                        if transfer == Transfer::Copy {
                            *copies.entry(p).or_default() += 1;
                        }
                        arrived.insert((p, source.clone()));
                    }
                }
            }
            for (p, o) in &owners {
                let sources = o.now.iter().filter(|id| *id != "me").count();
                prop_assert_eq!(copies.get(p).copied().unwrap_or(0), usize::from(sources > 0));
            }
        }
    }
}
