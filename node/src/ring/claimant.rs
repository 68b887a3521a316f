//! The loop that keeps this node's layout current.
//!
//! Every node adopts the newest layout any live peer reports (fetched over
//! gRPC). One node at a time, the claimant, makes the next layout: the
//! lowest id among live members of the current layout, or, before any
//! layout exists, the lowest id among live nodes once membership has settled.
//! Each new layout is derived deterministically from the previous one and a
//! single membership change.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use ringkv_proto::v1::GetLayoutRequest;
use tokio::{sync::mpsc, time::Instant};

use super::{Layout, Member, Ring};
use crate::{
    membership::{Membership, NodeStatus, Peer, View},
    peers::PeerClients,
};

/// Settings of the claimant loop.
#[derive(Debug, Clone)]
pub struct ClaimantConfig {
    pub replication: usize,
    pub settle: Duration,
    pub tick: Duration,
}

/// Runs until the process stops. A fatal condition (a cluster with a
/// different partition count) is sent on `fatal`.
pub async fn run(
    ring: Arc<Ring>,
    membership: Arc<Membership>,
    peers: Arc<PeerClients>,
    config: ClaimantConfig,
    fatal: mpsc::Sender<String>,
) {
    let me = membership.self_id().to_string();
    let mut ticker = tokio::time::interval(config.tick);
    let mut last_set: BTreeSet<String> = BTreeSet::new();
    let mut stable_since = Instant::now();
    let mut announced: Option<(u64, NodeStatus)> = None;
    loop {
        ticker.tick().await;
        let view = membership.view();

        if let Some(message) = partition_conflict(&view, &me, &ring) {
            let _ = fatal.send(message).await;
            return;
        }
        adopt_newer_layout(&view, &me, &ring, &peers).await;

        let eligible: BTreeSet<String> = view
            .alive()
            .filter(|p| p.partitions == ring.partitions())
            .map(|p| p.id.clone())
            .collect();
        if eligible != last_set {
            last_set = eligible.clone();
            stable_since = Instant::now();
        }
        if let Err(error) = claim(&view, &me, &ring, &config, &eligible, stable_since) {
            tracing::warn!(%error, "claimant could not make the next layout");
        }

        let version = ring.version();
        let status = match ring.current() {
            Some(layout) if layout.members().iter().any(|m| m.id == me) => NodeStatus::Normal,
            _ => NodeStatus::Joining,
        };
        if announced != Some((version, status)) {
            membership.set_layout_version(version).await;
            membership.set_status(status).await;
            announced = Some((version, status));
        }
    }
}

/// A node that is in no layout yet refuses to join a cluster that runs with
/// a different partition count.
fn partition_conflict(view: &View, me: &str, ring: &Ring) -> Option<String> {
    if ring
        .current()
        .is_some_and(|l| l.members().iter().any(|m| m.id == me))
    {
        return None;
    }
    let other = view
        .alive()
        .find(|p| p.id != me && p.layout_version > 0 && p.partitions != ring.partitions())?;
    Some(format!(
        "refusing to join: node {} belongs to a cluster with {} partitions, this node has {}; \
         the partition count is fixed when a cluster is created",
        other.id,
        other.partitions,
        ring.partitions()
    ))
}

async fn adopt_newer_layout(view: &View, me: &str, ring: &Ring, peers: &PeerClients) {
    let Some(source) = view
        .alive()
        .filter(|p| p.id != me && p.partitions == ring.partitions())
        .max_by_key(|p| p.layout_version)
    else {
        return;
    };
    if source.layout_version <= ring.version() {
        return;
    }
    match fetch_layout(source, peers).await {
        Ok(layout) => {
            if let Err(error) = ring.install(layout) {
                tracing::warn!(%error, peer = %source.id, "rejected a peer's layout");
            }
        }
        Err(error) => tracing::debug!(%error, peer = %source.id, "fetching layout"),
    }
}

async fn fetch_layout(peer: &Peer, peers: &PeerClients) -> Result<Layout, String> {
    let mut client = peers.replica(&peer.grpc).map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(GetLayoutRequest {});
    request.set_timeout(Duration::from_secs(2));
    let response = client
        .get_layout(request)
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    serde_json::from_str(&response.layout_json).map_err(|e| e.to_string())
}

fn member_of(peer: &Peer) -> Member {
    match &peer.zone {
        Some(zone) => Member::in_zone(peer.id.clone(), zone.clone()),
        None => Member::new(peer.id.clone()),
    }
}

/// Makes the next layout if this node is the claimant and something changed.
fn claim(
    view: &View,
    me: &str,
    ring: &Ring,
    config: &ClaimantConfig,
    eligible: &BTreeSet<String>,
    stable_since: Instant,
) -> Result<(), String> {
    match ring.current() {
        None => {
            let first = eligible.iter().next();
            if eligible.len() < config.replication
                || first.map(String::as_str) != Some(me)
                || stable_since.elapsed() < config.settle
            {
                return Ok(());
            }
            let members = eligible
                .iter()
                .filter_map(|id| view.peers.get(id))
                .map(member_of)
                .collect();
            let layout = Layout::initial(ring.partitions(), config.replication, members)
                .map_err(|e| e.to_string())?;
            ring.install(layout).map_err(|e| e.to_string())?;
        }
        Some(current) => {
            let claimant = current
                .members()
                .iter()
                .map(|m| m.id.as_str())
                .find(|id| view.is_alive(id));
            if claimant != Some(me) {
                return Ok(());
            }
            // One change per layout version, in id order.
            let newcomer = eligible
                .iter()
                .filter_map(|id| view.peers.get(id))
                .find(|p| {
                    p.status == NodeStatus::Joining
                        && !current.members().iter().any(|m| m.id == p.id)
                });
            if let Some(peer) = newcomer {
                let next = current
                    .with_member_added(member_of(peer))
                    .map_err(|e| e.to_string())?;
                ring.install(next).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}
