//! Receiving partitions during a ring transition.
//!
//! A node that owns a partition in the next layout but not in the current
//! one pulls it from every live current owner, and from every owner that
//! gives it up, down or not (see [`stream_sources`]), with
//! `Replica.StreamPartitions`.
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
use ringkv_proto::v1::{PartitionProgress, StreamPartitionsRequest};

use crate::{
    cluster::membership::{Membership, View},
    cluster::peers::PeerClients,
    cluster::rpc::RING_VERSION,
    replica::{blocking, LocalReplica, ReplicaError},
    ring::{partition_of, LayoutError, Ring, RingState},
    server::metrics::ReplicationMetrics,
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
    #[error("stream from {node}: {status}")]
    Source { node: String, status: tonic::Status },
}

/// Streams every incomplete incoming partition; true once all are complete.
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
    // Every live current owner streams its copy: a write acknowledged by W
    // of them may be missing on any single one, and the copies of owners
    // that leave are gone once they have left (CASSANDRA-2434). One stream
    // per source, each resumable on its own.
    let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut incomplete = Vec::new();
    let mut newly_awaiting = Vec::new();
    for p in &pending {
        let now = state.current.preference_list(*p)?;
        let next = match &state.next {
            Some(next) => next.preference_list(*p)?,
            None => Vec::new(),
        };
        let sources = stream_sources(&now, &next, me, |id| view.is_alive(id));
        progress.update(version, |map| {
            let entry = entry(map, *p, me);
            if entry.awaiting != sources.awaited {
                entry.awaiting = sources.awaited.clone();
                if !entry.awaiting.is_empty() {
                    newly_awaiting.push(*p);
                }
            }
        });
        if !sources.awaited.is_empty() {
            incomplete.push(*p);
        }
        if sources.live.is_empty() {
            return Err(StreamError::NoLiveOwner(*p));
        }
        for source in sources.live {
            let storage = local.storage().clone();
            let key = source_done_key(version, *p, &source);
            let done = blocking(move || Ok(storage.meta_get(&key)?.is_some()))
                .await
                .map_err(StreamError::Local)?;
            if done {
                progress.streamed(version, &[*p], &source);
            } else {
                groups.entry(source).or_default().push(*p);
            }
        }
    }
    if !newly_awaiting.is_empty() {
        tracing::warn!(
            partitions = ?newly_awaiting,
            "these partitions wait for an owner that gives them up and is down (see RingStatus): its copy may hold acknowledged writes no other owner holds"
        );
    }
    let streams = groups
        .into_iter()
        .map(|(source, partitions)| receive_group_retrying(cx, source, partitions));
    for result in futures::future::join_all(streams).await {
        result?;
    }
    let finished: Vec<u32> = pending
        .iter()
        .copied()
        .filter(|p| !incomplete.contains(p))
        .collect();
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
    Ok(incomplete.is_empty())
}

/// Whom a receiver streams one partition from.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Sources {
    /// The live owners to stream from now.
    pub live: Vec<String>,
    /// Owners that give the partition up and are down: the partition is
    /// not complete until each has come back and streamed.
    pub awaited: Vec<String>,
}

/// The owners a receiver streams a partition from, given the partition's
/// owners `now` and `next`.
///
/// Every live owner streams its copy: a write acknowledged by W owners may
/// be missing on any single one. An owner that gives the partition up
/// must stream even if it is down now: it may hold writes acknowledged by
/// it and by owners whose streams had passed the key (or, at W=1, by it
/// alone), and once the next layout is promoted nobody reads it. The
/// receiver waits for it, as Riak's handoff and Cassandra's consistent
/// range movements wait for the owner they replace. An owner that keeps
/// the partition and is down only adds a copy the others already cover:
/// its data stays where reads find it.
pub(crate) fn stream_sources(
    now: &[&str],
    next: &[&str],
    me: &str,
    is_alive: impl Fn(&str) -> bool,
) -> Sources {
    let mut sources = Sources::default();
    for id in now.iter().filter(|id| **id != me) {
        if is_alive(id) {
            sources.live.push(id.to_string());
        } else if !next.contains(id) {
            sources.awaited.push(id.to_string());
        }
    }
    sources
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
    partitions: Vec<u32>,
) -> Result<(), StreamError> {
    let mut attempt = 1;
    loop {
        match receive_group(cx, source.clone(), partitions.clone()).await {
            Ok(()) => return Ok(()),
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
    for p in &partitions {
        progress.update(version, |map| entry(map, *p, me).source = source.clone());
    }
    tracing::info!(%source, partitions = partitions.len(), resume = !start_after.is_empty(), "streaming partitions");
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
    });
    // The source refuses until it has adopted this transition itself.
    request
        .metadata_mut()
        .insert(RING_VERSION, tonic::metadata::MetadataValue::from(version));
    let mut stream = client
        .stream_partitions(request)
        .await
        .map_err(from_source)?
        .into_inner();
    let wanted: BTreeSet<u32> = partitions.iter().copied().collect();
    let mut estimate_per_partition = 0u64;
    while let Some(batch) = stream.message().await.map_err(from_source)? {
        if batch.estimated_keys > 0 {
            estimate_per_partition = batch.estimated_keys / partitions.len().max(1) as u64;
        }
        let mut counts: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for wire in &batch.records {
            let p = partition_of(&wire.key, partition_count);
            if wanted.contains(&p) {
                let entry = counts.entry(p).or_default();
                entry.0 += 1;
                entry.1 += (wire.key.len() + wire.record.len()) as u64;
            }
        }
        let (local_ref, parts) = (local.clone(), partitions.clone());
        let last_key = batch.last_key.clone();
        let source_name = source.clone();
        blocking(move || {
            for wire in batch.records {
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
            for p in &partitions {
                if let Some(entry) = map.get_mut(p) {
                    entry.keys_remaining = estimate_per_partition.saturating_sub(entry.keys_done);
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
