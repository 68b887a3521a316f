//! `ringkv status`: every member with its status and partitions, and whether
//! the members' gossip views agree.

use std::collections::BTreeMap;

use ringkv_client::{cluster_status, proto::ClusterStatusResponse};

/// What one member's view says, reduced to what must agree across members.
fn fingerprint(view: &ClusterStatusResponse) -> (u64, Vec<(String, String, bool)>) {
    (
        view.layout_version,
        view.members
            .iter()
            .map(|m| (m.node_id.clone(), m.status.clone(), m.alive))
            .collect(),
    )
}

pub async fn run(endpoint: &str) -> anyhow::Result<()> {
    let first = cluster_status(endpoint).await?;
    println!(
        "cluster seen from {}: layout v{}, {} partitions, N={}, {} conflicts",
        first.node_id,
        first.layout_version,
        first.partitions,
        first.replication_factor,
        first.conflict_resolution
    );
    println!(
        "{:<16} {:<22} {:<8} {:<6} {:>10} {:>7} {:>10}",
        "NODE", "ADDRESS", "STATUS", "ALIVE", "PARTITIONS", "LAYOUT", "ZONE"
    );
    for m in &first.members {
        println!(
            "{:<16} {:<22} {:<8} {:<6} {:>10} {:>7} {:>10}",
            m.node_id,
            m.grpc_address,
            m.status,
            if m.alive { "yes" } else { "no" },
            m.partitions_owned,
            format!("v{}", m.layout_version),
            if m.zone.is_empty() { "-" } else { &m.zone }
        );
    }

    // Ask every live member for its own view and compare.
    let mut views = BTreeMap::new();
    let mut unreachable = Vec::new();
    for m in first.members.iter().filter(|m| m.alive) {
        match cluster_status(&m.grpc_address).await {
            Ok(view) => {
                views.insert(m.node_id.clone(), fingerprint(&view));
            }
            Err(error) => unreachable.push(format!("{} ({error})", m.node_id)),
        }
    }
    let reference = fingerprint(&first);
    let disagreeing: Vec<&String> = views
        .iter()
        .filter(|(_, view)| **view != reference)
        .map(|(id, _)| id)
        .collect();
    if disagreeing.is_empty() && unreachable.is_empty() {
        println!(
            "views agree: all {} live members see the same members and layout",
            views.len()
        );
    } else {
        if !disagreeing.is_empty() {
            println!("views disagree: {disagreeing:?} see other members or another layout");
        }
        if !unreachable.is_empty() {
            println!("unreachable: {}", unreachable.join(", "));
        }
    }
    Ok(())
}
