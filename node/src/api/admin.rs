//! The Admin service: cluster status, decommissioning, ring status and
//! compaction, for `ringkv` and the operator.

use std::{collections::BTreeSet, sync::Arc};

use ringkv_proto::peer_auth::METADATA_KEY;
use ringkv_proto::v1::{
    admin_server::Admin, ClusterStatusRequest, ClusterStatusResponse, CompactRequest,
    CompactResponse, DecommissionRequest, DecommissionResponse, HandoffProgressRequest,
    MemberStatus, RingStatusRequest, RingStatusResponse,
};
use tonic::{Request, Response, Status};

use crate::{
    api::peer_auth::require_admin,
    cluster::{membership::Membership, peers::PeerClients},
    ring::Ring,
    server::lifecycle::Lifecycle,
    storage::RocksStorage,
    versions::ConflictMode,
};

/// Cluster status, decommissioning and ring status, for `ringkv` and the
/// operator.
pub(crate) struct AdminService {
    pub membership: Arc<Membership>,
    pub ring: Arc<Ring>,
    pub lifecycle: Arc<Lifecycle>,
    pub peers: Arc<PeerClients>,
    pub storage: Arc<RocksStorage>,
    /// N, which a decommission may not take the cluster below.
    pub replication: u32,
    pub mode: ConflictMode,
}

impl AdminService {
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
        require_admin(&request, "Decommission")?;
        let token = request.metadata().get(METADATA_KEY).cloned();
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
        // The leaving node checks the administrator's token itself.
        let mut forwarded = Request::new(DecommissionRequest { node_id });
        if let Some(token) = token {
            forwarded.metadata_mut().insert(METADATA_KEY, token);
        }
        self.peers.admin(&addr)?.decommission(forwarded).await?;
        Ok(Response::new(DecommissionResponse {}))
    }

    async fn compact(
        &self,
        request: Request<CompactRequest>,
    ) -> Result<Response<CompactResponse>, Status> {
        require_admin(&request, "Compact")?;
        let storage = self.storage.clone();
        let started = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(move || storage.compact())
            .await
            .map_err(|e| Status::internal(format!("compaction task failed: {e}")))?
            .map_err(Status::from)?;
        tracing::info!(
            records_dropped = done.records_dropped,
            live_sst_bytes_before = done.live_sst_bytes_before,
            live_sst_bytes_after = done.live_sst_bytes_after,
            seconds = started.elapsed().as_secs_f64(),
            "compaction requested by an administrator done"
        );
        Ok(Response::new(CompactResponse {
            records_dropped: done.records_dropped,
            live_sst_bytes_before: done.live_sst_bytes_before,
            live_sst_bytes_after: done.live_sst_bytes_after,
        }))
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
