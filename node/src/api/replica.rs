//! The node-to-node Replica service: the replica side of reads, writes,
//! scans, partition streams and anti-entropy.

use std::{collections::BTreeSet, sync::Arc};

use ringkv_proto::v1::{
    replica_server::Replica, BucketDigestsRequest, BucketDigestsResponse, GetLayoutRequest,
    GetLayoutResponse, HandoffProgressRequest, HandoffProgressResponse, KeyDigest, PartitionTree,
    PartitionTreesRequest, PartitionTreesResponse, ReplicaApplyBatchRequest,
    ReplicaApplyBatchResponse, ReplicaApplyRequest, ReplicaApplyResponse, ReplicaReadBatchRequest,
    ReplicaReadBatchResponse, ReplicaReadRequest, ReplicaReadResponse, ReplicaRecord,
    ReplicaScanRequest, ReplicaScanResponse, StreamBatch, StreamPartitionsRequest,
};
use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    api::limits::Limits,
    cluster::{
        deadline::Deadline,
        rpc::{FORWARD_HOPS, RING_VERSION},
    },
    coordinator::{Coordinator, Relay},
    replica::{blocking, memory_first, LocalReplica},
    ring::Ring,
    server::metrics::RpcMetrics,
    storage::ScanRange,
    sync::anti_entropy::{bucket_digests, TreeCache},
    sync::streaming::receive::StreamProgress,
    sync::streaming::send::{self, StreamSource},
    sync::throttle::Throttle,
};

/// What a replica write says about the nodes that passed it on: nothing
/// (zero hops) for a coordinator's own write.
fn relay<T>(request: &Request<T>) -> Result<Relay, Status> {
    Ok(Relay {
        hops: whole_number(request, FORWARD_HOPS)?.unwrap_or(0),
        ring_version: whole_number(request, RING_VERSION)?.unwrap_or(0),
        deadline: Deadline::of(request.metadata()),
    })
}

/// Refuses a replica request from a coordinator that missed a ring change
/// (see [`crate::ring::RingState::refuses`]).
fn fence<T>(coordinator: &Coordinator, request: &Request<T>) -> Result<(), Status> {
    let sender = whole_number(request, RING_VERSION)?.unwrap_or(0);
    match coordinator.ring_state().and_then(|s| s.refuses(sender)) {
        Some(reason) => Err(Status::failed_precondition(reason)),
        None => Ok(()),
    }
}

fn whole_number<T, N: std::str::FromStr>(
    request: &Request<T>,
    name: &str,
) -> Result<Option<N>, Status> {
    let Some(value) = request.metadata().get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("metadata {name} must be a whole number")))
}

/// Serves this node's replicas to its peers.
pub(crate) struct ReplicaService {
    pub local: Arc<LocalReplica>,
    pub coordinator: Coordinator,
    pub ring: Arc<Ring>,
    pub limits: Limits,
    pub progress: Arc<StreamProgress>,
    pub trees: Arc<TreeCache>,
    /// The rate anti-entropy digests are scanned at for a peer.
    pub repair_bytes_per_sec: u64,
    /// The rate partitions are streamed at to a receiver.
    pub stream_bytes_per_sec: u64,
    /// One permit per partition stream being sent (`--max-partition-streams`).
    pub streams: Arc<Semaphore>,
    pub max_partition_streams: usize,
    /// `--stream-stall-timeout-secs`.
    pub stream_stall_timeout: std::time::Duration,
    pub metrics: RpcMetrics,
}

/// The data path's handlers, metered in `ringkv_grpc_requests_total`.
impl ReplicaService {
    async fn serve_read(
        &self,
        request: Request<ReplicaReadRequest>,
    ) -> Result<ReplicaReadResponse, Status> {
        fence(&self.coordinator, &request)?;
        let key = request.into_inner().key;
        self.limits.key(&key)?;
        let refilling = !self.coordinator.refill().serves_key(&key);
        let record = memory_first::read(&self.local, key).await?;
        Ok(ReplicaReadResponse {
            record: record.map(|r| r.encode()).unwrap_or_default(),
            refilling,
        })
    }

    async fn serve_read_batch(
        &self,
        request: Request<ReplicaReadBatchRequest>,
    ) -> Result<ReplicaReadBatchResponse, Status> {
        fence(&self.coordinator, &request)?;
        let keys = request.into_inner().keys;
        self.limits.batch(keys.len())?;
        for key in &keys {
            self.limits.key(key)?;
        }
        let refill = self.coordinator.refill();
        let refilling: Vec<bool> = keys.iter().map(|key| !refill.serves_key(key)).collect();
        let cap = self.limits.max_peer_message_bytes / 2;
        let records = memory_first::read_many(&self.local, keys, cap).await?;
        Ok(ReplicaReadBatchResponse {
            answers: records
                .into_iter()
                .zip(refilling)
                .map(|(record, refilling)| ReplicaReadResponse {
                    record: record.map(|r| r.encode()).unwrap_or_default(),
                    refilling,
                })
                .collect(),
        })
    }

    async fn serve_apply(
        &self,
        request: Request<ReplicaApplyRequest>,
    ) -> Result<ReplicaApplyResponse, Status> {
        fence(&self.coordinator, &request)?;
        let relay = relay(&request)?;
        let req = request.into_inner();
        self.limits.key(&req.key)?;
        let hint_for = Some(req.hint_for).filter(|t| !t.is_empty());
        self.coordinator
            .accept(req.key, req.record, hint_for, relay)
            .await?;
        Ok(ReplicaApplyResponse {})
    }

    async fn serve_apply_batch(
        &self,
        request: Request<ReplicaApplyBatchRequest>,
    ) -> Result<ReplicaApplyBatchResponse, Status> {
        fence(&self.coordinator, &request)?;
        let relay = relay(&request)?;
        let wire = request.into_inner().records;
        self.limits.batch(wire.len())?;
        for each in &wire {
            self.limits.key(&each.key)?;
        }
        let share = wire.into_iter().map(|w| (w.key, w.record)).collect();
        self.coordinator.accept_batch(share, relay).await?;
        Ok(ReplicaApplyBatchResponse {})
    }

    async fn serve_scan_local(
        &self,
        request: Request<ReplicaScanRequest>,
    ) -> Result<ReplicaScanResponse, Status> {
        fence(&self.coordinator, &request)?;
        let req = request.into_inner();
        let limit = self.limits.scan(&req.start_key, &req.end_key, req.limit)?;
        let cap = self.limits.max_scan_bytes;
        let asked = usize::try_from(req.max_bytes).unwrap_or(usize::MAX);
        let range = ScanRange {
            start: req.start_key,
            end: req.end_key,
            limit,
            key_only: false,
            reverse: req.reverse,
            max_bytes: Some(if asked == 0 { cap } else { asked.min(cap) }),
        };
        let refilling = self.coordinator.refill().unserved();
        let local = self.local.clone();
        let page = blocking(move || local.scan(&range)).await?;
        Ok(ReplicaScanResponse {
            refilling,
            full: page.full,
            records: page
                .records
                .into_iter()
                .map(|(key, record)| ReplicaRecord {
                    key,
                    record: record.encode(),
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl Replica for ReplicaService {
    async fn read(
        &self,
        request: Request<ReplicaReadRequest>,
    ) -> Result<Response<ReplicaReadResponse>, Status> {
        self.metrics
            .timed("Replica.Read", self.serve_read(request))
            .await
    }

    async fn read_batch(
        &self,
        request: Request<ReplicaReadBatchRequest>,
    ) -> Result<Response<ReplicaReadBatchResponse>, Status> {
        self.metrics
            .timed("Replica.ReadBatch", self.serve_read_batch(request))
            .await
    }

    async fn apply(
        &self,
        request: Request<ReplicaApplyRequest>,
    ) -> Result<Response<ReplicaApplyResponse>, Status> {
        self.metrics
            .timed("Replica.Apply", self.serve_apply(request))
            .await
    }

    async fn apply_batch(
        &self,
        request: Request<ReplicaApplyBatchRequest>,
    ) -> Result<Response<ReplicaApplyBatchResponse>, Status> {
        self.metrics
            .timed("Replica.ApplyBatch", self.serve_apply_batch(request))
            .await
    }

    async fn scan_local(
        &self,
        request: Request<ReplicaScanRequest>,
    ) -> Result<Response<ReplicaScanResponse>, Status> {
        self.metrics
            .timed("Replica.ScanLocal", self.serve_scan_local(request))
            .await
    }

    async fn get_layout(
        &self,
        _request: Request<GetLayoutRequest>,
    ) -> Result<Response<GetLayoutResponse>, Status> {
        let (version, layout_json) = self.ring.state_json().unwrap_or_default();
        Ok(Response::new(GetLayoutResponse {
            version,
            layout_json,
        }))
    }

    type StreamPartitionsStream = ReceiverStream<Result<StreamBatch, Status>>;

    async fn stream_partitions(
        &self,
        request: Request<StreamPartitionsRequest>,
    ) -> Result<Response<Self::StreamPartitionsStream>, Status> {
        // A source streams for a transition only once it has adopted it:
        // until then it may acknowledge a write as a plain owner after the
        // scan has passed the key, and the receiver would never get it.
        // After, such a write is passed to the receivers (see `accept`).
        let wanted_version: u64 = whole_number(&request, RING_VERSION)?.unwrap_or(0);
        if self.ring.version() < wanted_version {
            return Err(Status::failed_precondition(format!(
                "this node is on ring state version {}, and streams for version {wanted_version} once it has adopted it",
                self.ring.version()
            )));
        }
        // Each stream holds up to three batches until its receiver reads
        // them: the count of streams is what bounds that memory.
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this node is sending {} partition streams, its limit (--max-partition-streams); retry later",
                self.max_partition_streams
            ))
        })?;
        let req = request.into_inner();
        let partition_count = self.ring.partitions();
        let wanted: BTreeSet<u32> = req.partitions.iter().copied().collect();
        let owned = self
            .ring
            .current()
            .map_or(1, |l| l.partitions_of(self.local.node_id()).len().max(1));
        let storage = self.local.storage().clone();
        // The last tree scan counted each partition's records; before the
        // first, the engine's estimate is spread evenly.
        let engine_share = storage.stats().estimated_keys / owned as u64;
        let counted = self.trees.keys(&req.partitions);
        let partition_keys: std::collections::HashMap<u32, u64> = wanted
            .iter()
            .map(|p| (*p, counted.get(p).copied().unwrap_or(engine_share)))
            .collect();
        let estimated_keys = partition_keys.values().sum();
        let (tx, rx) = send::channel();
        let source = StreamSource {
            partition_count,
            wanted: Arc::new(wanted),
            estimated_keys,
            partition_keys,
            digests: req.digests,
            throttle: Throttle::new(self.stream_bytes_per_sec),
            stall_timeout: self.stream_stall_timeout,
        };
        let scan: send::Scan = Arc::new(move |after, visit| storage.for_each_after(after, visit));
        tokio::spawn(async move {
            source.run(scan, req.start_after, tx).await;
            drop(permit);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn handoff_progress(
        &self,
        _request: Request<HandoffProgressRequest>,
    ) -> Result<Response<HandoffProgressResponse>, Status> {
        let (state_version, partitions) = self.progress.snapshot();
        Ok(Response::new(HandoffProgressResponse {
            partitions,
            state_version,
        }))
    }

    async fn partition_trees(
        &self,
        request: Request<PartitionTreesRequest>,
    ) -> Result<Response<PartitionTreesResponse>, Status> {
        let partitions = request.into_inner().partitions;
        Ok(Response::new(PartitionTreesResponse {
            trees: self
                .trees
                .get(&partitions)
                .into_iter()
                .map(|(partition, tree)| PartitionTree {
                    partition,
                    buckets: tree.to_vec(),
                })
                .collect(),
        }))
    }

    async fn bucket_digests(
        &self,
        request: Request<BucketDigestsRequest>,
    ) -> Result<Response<BucketDigestsResponse>, Status> {
        let leaves: BTreeSet<(u32, u32)> = request
            .into_inner()
            .buckets
            .into_iter()
            .map(|b| (b.partition, b.bucket))
            .collect();
        let (local, count, rate) = (
            self.local.clone(),
            self.ring.partitions(),
            self.repair_bytes_per_sec,
        );
        let digests = blocking(move || bucket_digests(&local, &leaves, count, rate)).await?;
        Ok(Response::new(BucketDigestsResponse {
            keys: digests
                .into_iter()
                .map(|(key, hash)| KeyDigest { key, hash })
                .collect(),
        }))
    }
}
