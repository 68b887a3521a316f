//! The node-to-node Replica service and the Admin service.

use std::sync::Arc;

use ringkv_proto::v1::{
    admin_server::Admin, replica_server::Replica, ClusterStatusRequest, ClusterStatusResponse,
    GetLayoutRequest, GetLayoutResponse, MemberStatus, ReplicaApplyRequest, ReplicaApplyResponse,
    ReplicaReadRequest, ReplicaReadResponse, ReplicaRecord, ReplicaScanRequest,
    ReplicaScanResponse,
};
use tonic::{Request, Response, Status};

use crate::{
    membership::Membership,
    replica::{blocking, LocalReplica},
    ring::Ring,
    storage::{now_millis, ScanRange},
    validate::Limits,
    versions::ConflictMode,
};

/// Serves this node's replicas to its peers.
pub struct ReplicaService {
    local: Arc<LocalReplica>,
    ring: Arc<Ring>,
    limits: Limits,
}

impl ReplicaService {
    pub fn new(local: Arc<LocalReplica>, ring: Arc<Ring>, limits: Limits) -> Self {
        Self {
            local,
            ring,
            limits,
        }
    }
}

#[tonic::async_trait]
impl Replica for ReplicaService {
    async fn read(
        &self,
        request: Request<ReplicaReadRequest>,
    ) -> Result<Response<ReplicaReadResponse>, Status> {
        let key = request.into_inner().key;
        self.limits.key(&key)?;
        let local = self.local.clone();
        let record = blocking(move || local.read(&key)).await?;
        Ok(Response::new(ReplicaReadResponse {
            record: record.map(|r| r.encode()).unwrap_or_default(),
        }))
    }

    async fn apply(
        &self,
        request: Request<ReplicaApplyRequest>,
    ) -> Result<Response<ReplicaApplyResponse>, Status> {
        let req = request.into_inner();
        self.limits.key(&req.key)?;
        let local = self.local.clone();
        blocking(move || {
            if req.hint_for.is_empty() {
                local.apply_encoded(&req.key, &req.record)
            } else {
                Ok(local
                    .storage()
                    .put_hint(&req.hint_for, &req.key, &req.record, now_millis())?)
            }
        })
        .await?;
        Ok(Response::new(ReplicaApplyResponse {}))
    }

    async fn scan_local(
        &self,
        request: Request<ReplicaScanRequest>,
    ) -> Result<Response<ReplicaScanResponse>, Status> {
        let req = request.into_inner();
        let limit = self.limits.scan(&req.start_key, &req.end_key, req.limit)?;
        let range = ScanRange {
            start: req.start_key,
            end: req.end_key,
            limit,
            key_only: false,
            reverse: req.reverse,
        };
        let local = self.local.clone();
        let records = blocking(move || local.scan(&range)).await?;
        Ok(Response::new(ReplicaScanResponse {
            records: records
                .into_iter()
                .map(|(key, record)| ReplicaRecord {
                    key,
                    record: record.encode(),
                })
                .collect(),
        }))
    }

    async fn get_layout(
        &self,
        _request: Request<GetLayoutRequest>,
    ) -> Result<Response<GetLayoutResponse>, Status> {
        let (version, layout_json) = self.ring.current_json().unwrap_or_default();
        Ok(Response::new(GetLayoutResponse {
            version,
            layout_json,
        }))
    }
}

/// Cluster status for `ringkv status` and the operator.
pub struct AdminService {
    membership: Arc<Membership>,
    ring: Arc<Ring>,
    replication: u32,
    mode: ConflictMode,
}

impl AdminService {
    pub fn new(
        membership: Arc<Membership>,
        ring: Arc<Ring>,
        replication: u32,
        mode: ConflictMode,
    ) -> Self {
        Self {
            membership,
            ring,
            replication,
            mode,
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let view = self.membership.view();
        let layout = self.ring.current();
        let members = view
            .peers
            .values()
            .map(|peer| MemberStatus {
                node_id: peer.id.clone(),
                grpc_address: peer.grpc.clone(),
                zone: peer.zone.clone().unwrap_or_default(),
                status: peer.status.to_string(),
                generation: peer.generation,
                alive: peer.alive,
                partitions_owned: layout
                    .as_ref()
                    .map_or(0, |l| l.partitions_of(&peer.id).len() as u32),
                layout_version: peer.layout_version,
            })
            .collect();
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
}
