//! What the operator asks the nodes themselves: the ring as they see it, and
//! to decommission one of them. Behind a trait so that the reconciler's
//! decisions are tested against a scripted ring.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use ringkv_client::Connector;

/// One ring member as the answering node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub node_id: String,
    /// joining, normal, leaving or left.
    pub status: String,
    pub alive: bool,
    /// When the member's process started, in milliseconds since the epoch
    /// on its own clock: it changes at every restart.
    pub generation: u64,
    pub partitions_owned: u32,
    pub partitions_next: u32,
    /// Hints the node keeps for unreachable replicas.
    pub hints_pending: u64,
}

impl MemberView {
    /// Whether removing this node's pod can lose nothing: it handed over
    /// everything (`left`), or it never held a partition.
    pub fn holds_no_data(&self) -> bool {
        self.status == "left"
            || (self.status == "joining" && self.partitions_owned == 0 && self.partitions_next == 0)
    }
}

/// Handoff progress of the partitions moving to one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handoff {
    pub complete: u32,
    pub total: u32,
    /// Records and bytes received so far, counted as they arrive.
    pub keys_received: u64,
    pub bytes_received: u64,
    /// The sources' count of records still to come.
    pub keys_remaining: u64,
}

/// The ring as one node reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingView {
    pub state_version: u64,
    /// Partitions are moving.
    pub transition: bool,
    pub members: BTreeMap<String, MemberView>,
    /// Per receiving node.
    pub handoffs: BTreeMap<String, Handoff>,
}

impl RingView {
    pub fn member(&self, node_id: &str) -> Option<&MemberView> {
        self.members.get(node_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RingAdminError {
    #[error("ring status from {address}: {message}")]
    Status { address: String, message: String },
    #[error("decommission of {node_id} through {address}: {message}")]
    Decommission {
        address: String,
        node_id: String,
        message: String,
    },
}

/// The nodes' Admin service.
pub trait RingAdmin: Send + Sync {
    fn ring_status<'a>(
        &'a self,
        connector: &'a Connector,
        address: &'a str,
    ) -> BoxFuture<'a, Result<RingView, RingAdminError>>;
    fn decommission<'a>(
        &'a self,
        connector: &'a Connector,
        address: &'a str,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<(), RingAdminError>>;
}

/// The real thing: gRPC to a node's Admin service.
pub struct GrpcRingAdmin;

impl RingAdmin for GrpcRingAdmin {
    fn ring_status<'a>(
        &'a self,
        connector: &'a Connector,
        address: &'a str,
    ) -> BoxFuture<'a, Result<RingView, RingAdminError>> {
        Box::pin(async move {
            let response =
                connector
                    .ring_status(address)
                    .await
                    .map_err(|error| RingAdminError::Status {
                        address: address.to_string(),
                        message: error.to_string(),
                    })?;
            Ok(view_of(response))
        })
    }

    fn decommission<'a>(
        &'a self,
        connector: &'a Connector,
        address: &'a str,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<(), RingAdminError>> {
        Box::pin(async move {
            connector
                .decommission(address, node_id)
                .await
                .map_err(|error| RingAdminError::Decommission {
                    address: address.to_string(),
                    node_id: node_id.to_string(),
                    message: error.to_string(),
                })
        })
    }
}

fn view_of(response: ringkv_client::proto::RingStatusResponse) -> RingView {
    let members = response
        .members
        .into_iter()
        .map(|m| {
            (
                m.node_id.clone(),
                MemberView {
                    node_id: m.node_id,
                    status: m.status,
                    alive: m.alive,
                    generation: m.generation,
                    partitions_owned: m.partitions_owned,
                    partitions_next: m.partitions_next,
                    hints_pending: m.hints_pending,
                },
            )
        })
        .collect();
    let mut handoffs: BTreeMap<String, Handoff> = BTreeMap::new();
    for progress in response.handoffs {
        let entry = handoffs.entry(progress.node_id).or_default();
        entry.total += 1;
        entry.complete += u32::from(progress.complete);
        entry.keys_received += progress.keys_done;
        entry.bytes_received += progress.bytes_done;
        entry.keys_remaining += progress.keys_remaining;
    }
    RingView {
        state_version: response.state_version,
        transition: response.transition,
        members,
        handoffs,
    }
}
