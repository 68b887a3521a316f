//! The node-to-node Replica service and the Admin service.

use std::{collections::BTreeSet, sync::Arc};

use ringkv_proto::v1::{
    admin_server::Admin, replica_server::Replica, BucketDigestsRequest, BucketDigestsResponse,
    ClusterStatusRequest, ClusterStatusResponse, DecommissionRequest, DecommissionResponse,
    GetLayoutRequest, GetLayoutResponse, HandoffProgressRequest, HandoffProgressResponse,
    KeyDigest, MemberStatus, PartitionTree, PartitionTreesRequest, PartitionTreesResponse,
    ReplicaApplyBatchRequest, ReplicaApplyBatchResponse, ReplicaApplyRequest, ReplicaApplyResponse,
    ReplicaReadRequest, ReplicaReadResponse, ReplicaRecord, ReplicaScanRequest,
    ReplicaScanResponse, RingStatusRequest, RingStatusResponse, StreamBatch,
    StreamPartitionsRequest,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    api::limits::Limits,
    cluster::deadline::Deadline,
    cluster::membership::Membership,
    cluster::peers::PeerClients,
    coordinator::{Coordinator, Relay, FORWARD_HOPS, RING_VERSION},
    replica::{blocking, LocalReplica},
    ring::Ring,
    server::lifecycle::Lifecycle,
    server::metrics::RpcMetrics,
    storage::ScanRange,
    sync::anti_entropy::{bucket_digests, TreeCache},
    sync::streaming::receive::HandoffProgress,
    sync::streaming::send::{self, StreamSource},
    sync::throttle::Throttle,
    versions::ConflictMode,
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
pub struct ReplicaService {
    local: Arc<LocalReplica>,
    coordinator: Coordinator,
    ring: Arc<Ring>,
    limits: Limits,
    progress: Arc<HandoffProgress>,
    trees: Arc<TreeCache>,
    repair_bytes_per_sec: u64,
    handoff_bytes_per_sec: u64,
    metrics: RpcMetrics,
}

impl ReplicaService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        local: Arc<LocalReplica>,
        coordinator: Coordinator,
        ring: Arc<Ring>,
        limits: Limits,
        progress: Arc<HandoffProgress>,
        trees: Arc<TreeCache>,
        repair_bytes_per_sec: u64,
        handoff_bytes_per_sec: u64,
        metrics: RpcMetrics,
    ) -> Self {
        Self {
            local,
            coordinator,
            ring,
            limits,
            progress,
            trees,
            repair_bytes_per_sec,
            handoff_bytes_per_sec,
            metrics,
        }
    }
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
        let local = self.local.clone();
        let record = blocking(move || local.read(&key)).await?;
        Ok(ReplicaReadResponse {
            record: record.map(|r| r.encode()).unwrap_or_default(),
            refilling,
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
        let records = request.into_inner().records;
        self.limits.batch(records.len())?;
        for record in &records {
            self.limits.key(&record.key)?;
        }
        self.coordinator
            .accept_batch(
                records.into_iter().map(|r| (r.key, r.record)).collect(),
                relay,
            )
            .await?;
        Ok(ReplicaApplyBatchResponse {})
    }

    async fn serve_scan_local(
        &self,
        request: Request<ReplicaScanRequest>,
    ) -> Result<ReplicaScanResponse, Status> {
        fence(&self.coordinator, &request)?;
        let req = request.into_inner();
        let limit = self.limits.scan(&req.start_key, &req.end_key, req.limit)?;
        let range = ScanRange {
            start: req.start_key,
            end: req.end_key,
            limit,
            key_only: false,
            reverse: req.reverse,
        };
        let refilling = self.coordinator.refill().unserved();
        let local = self.local.clone();
        let records = blocking(move || local.scan(&range)).await?;
        Ok(ReplicaScanResponse {
            refilling,
            records: records
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
        let req = request.into_inner();
        let partition_count = self.ring.partitions();
        let wanted: BTreeSet<u32> = req.partitions.iter().copied().collect();
        let owned = self
            .ring
            .current()
            .map_or(1, |l| l.partitions_of(self.local.node_id()).len().max(1));
        let storage = self.local.storage().clone();
        let estimated_keys = storage.stats().estimated_keys * wanted.len() as u64 / owned as u64;
        let (tx, rx) = send::channel();
        let source = StreamSource {
            partition_count,
            wanted,
            estimated_keys,
            throttle: Throttle::new(self.handoff_bytes_per_sec),
        };
        tokio::task::spawn_blocking(move || {
            source.run(|visit| storage.for_each_after(&req.start_after, visit), &tx)
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

/// Cluster status, decommissioning and ring status, for `ringkv` and the
/// operator.
pub struct AdminService {
    membership: Arc<Membership>,
    ring: Arc<Ring>,
    lifecycle: Arc<Lifecycle>,
    peers: Arc<PeerClients>,
    replication: u32,
    mode: ConflictMode,
}

impl AdminService {
    pub fn new(
        membership: Arc<Membership>,
        ring: Arc<Ring>,
        lifecycle: Arc<Lifecycle>,
        peers: Arc<PeerClients>,
        replication: u32,
        mode: ConflictMode,
    ) -> Self {
        Self {
            membership,
            ring,
            lifecycle,
            peers,
            replication,
            mode,
        }
    }

    fn members(&self) -> Vec<MemberStatus> {
        let view = self.membership.view();
        let state = self.ring.state();
        view.peers
            .values()
            .map(|peer| MemberStatus {
                node_id: peer.id.clone(),
                grpc_address: peer.grpc.clone(),
                zone: peer.zone.clone().unwrap_or_default(),
                status: peer.status.to_string(),
                generation: peer.generation,
                alive: peer.alive,
                partitions_owned: state
                    .as_ref()
                    .map_or(0, |s| s.current.partitions_of(&peer.id).len() as u32),
                layout_version: peer.layout_version,
                hints_pending: peer.hints_pending,
                partitions_refilling: peer.refilling,
                partitions_next: state.as_ref().map_or(0, |s| {
                    s.next
                        .as_ref()
                        .unwrap_or(&s.current)
                        .partitions_of(&peer.id)
                        .len() as u32
                }),
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let members = self.members();
        Ok(Response::new(ClusterStatusResponse {
            node_id: self.membership.self_id().to_string(),
            layout_version: self.ring.version(),
            partitions: self.ring.partitions(),
            replication_factor: self.replication,
            members,
            conflict_resolution: match self.mode {
                ConflictMode::Siblings => "siblings".into(),
                ConflictMode::Lww => "lww".into(),
            },
        }))
    }

    async fn decommission(
        &self,
        request: Request<DecommissionRequest>,
    ) -> Result<Response<DecommissionResponse>, Status> {
        let node_id = request.into_inner().node_id;
        let state = self
            .ring
            .state()
            .ok_or_else(|| Status::failed_precondition("the cluster has no layout yet"))?;
        let members = state.current.members();
        if !members.iter().any(|m| m.id == node_id) {
            return Err(Status::not_found(format!(
                "node {node_id} is not a member of the current layout"
            )));
        }
        let remaining = members.len() - 1;
        if remaining < self.replication as usize {
            return Err(Status::failed_precondition(format!(
                "decommissioning {node_id} would leave {remaining} nodes, fewer than the replication factor {}",
                self.replication
            )));
        }
        if node_id == self.membership.self_id() {
            let lifecycle = self.lifecycle.clone();
            tokio::task::spawn_blocking(move || lifecycle.start_decommission())
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
            tracing::info!("decommission requested: leaving the ring");
            return Ok(Response::new(DecommissionResponse {}));
        }
        // Only the leaving node records its decision; others pass it on.
        let view = self.membership.view();
        let addr = view
            .peers
            .get(&node_id)
            .filter(|p| p.alive)
            .map(|p| p.grpc.clone())
            .ok_or_else(|| Status::unavailable(format!("node {node_id} is not alive")))?;
        self.peers
            .admin(&addr)?
            .decommission(DecommissionRequest { node_id })
            .await?;
        Ok(Response::new(DecommissionResponse {}))
    }

    async fn ring_status(
        &self,
        _request: Request<RingStatusRequest>,
    ) -> Result<Response<RingStatusResponse>, Status> {
        let state = self.ring.state();
        let view = self.membership.view();
        let mut handoffs = Vec::new();
        let mut unreachable = Vec::new();
        if let Some(state) = state.as_ref().filter(|s| s.next.is_some()) {
            for node in state.receiving_nodes() {
                let Some(peer) = view.peers.get(&node).filter(|p| p.alive) else {
                    unreachable.push(node);
                    continue;
                };
                let mut request = Request::new(HandoffProgressRequest {});
                request.set_timeout(std::time::Duration::from_secs(2));
                let answer = match self.peers.replica(&peer.grpc) {
                    Ok(mut client) => client.handoff_progress(request).await,
                    Err(status) => Err(status),
                };
                match answer {
                    Ok(response) => {
                        let response = response.into_inner();
                        let expected: BTreeSet<u32> = state.receiving(&node).into_iter().collect();
                        let mut seen = BTreeSet::new();
                        if response.state_version == state.version {
                            for p in response.partitions {
                                seen.insert(p.partition);
                                handoffs.push(p);
                            }
                        }
                        // Partitions the receiver has not started yet.
                        let synced = peer.synced >= state.version;
                        for p in expected.difference(&seen) {
                            handoffs.push(ringkv_proto::v1::PartitionProgress {
                                partition: *p,
                                node_id: node.clone(),
                                complete: synced,
                                ..Default::default()
                            });
                        }
                    }
                    Err(_) => unreachable.push(node),
                }
            }
        }
        Ok(Response::new(RingStatusResponse {
            state_version: self.ring.version(),
            transition: state.as_ref().is_some_and(|s| s.in_transition()),
            members: self.members(),
            handoffs,
            unreachable,
        }))
    }
}
