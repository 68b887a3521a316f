//! `ringkv status`: every member with its status and partitions, and whether
//! the members' gossip views agree.

use std::collections::BTreeMap;

use ringkv_client::{proto::ClusterStatusResponse, Connector};

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

pub async fn run(connector: &Connector, endpoint: &str) -> anyhow::Result<()> {
    let first = connector.cluster_status(endpoint).await?;
    println!(
        "cluster seen from {}: layout v{}, {} partitions, N={}, {} conflicts",
        first.node_id,
        first.layout_version,
        first.partitions,
        first.replication_factor,
        first.conflict_resolution
    );
    println!(
        "{:<16} {:<22} {:<8} {:<6} {:>10} {:>9} {:>7} {:>10}",
        "NODE", "ADDRESS", "STATUS", "ALIVE", "PARTITIONS", "REFILLING", "LAYOUT", "ZONE"
    );
    for m in &first.members {
        println!(
            "{:<16} {:<22} {:<8} {:<6} {:>10} {:>9} {:>7} {:>10}",
            m.node_id,
            m.grpc_address,
            m.status,
            if m.alive { "yes" } else { "no" },
            m.partitions_owned,
            m.partitions_refilling,
            format!("v{}", m.layout_version),
            if m.zone.is_empty() { "-" } else { &m.zone }
        );
    }
    for m in first.members.iter().filter(|m| m.partitions_refilling > 0) {
        println!(
            "{} lost its data: it refills {} partitions from their other owners and counts toward no read of them until then",
            m.node_id, m.partitions_refilling
        );
    }

    // Ask every live member for its own view and compare.
    let mut views = BTreeMap::new();
    let mut unreachable = Vec::new();
    for m in first.members.iter().filter(|m| m.alive) {
        match connector.cluster_status(&m.grpc_address).await {
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

/// `ringkv ring`: members, and per receiving node the handoff progress.
pub async fn ring(connector: &Connector, endpoint: &str) -> anyhow::Result<()> {
    let status = connector.ring_status(endpoint).await?;
    println!(
        "ring state v{}: {}",
        status.state_version,
        if status.transition {
            "partitions are moving"
        } else {
            "stable"
        }
    );
    println!(
        "{:<16} {:<8} {:<6} {:>8} {:>8}",
        "NODE", "STATUS", "ALIVE", "OWNS", "WILL OWN"
    );
    for m in &status.members {
        println!(
            "{:<16} {:<8} {:<6} {:>8} {:>8}",
            m.node_id,
            m.status,
            if m.alive { "yes" } else { "no" },
            m.partitions_owned,
            m.partitions_next
        );
    }
    let mut per_node: BTreeMap<&str, (usize, usize, u64, u64, u64)> = BTreeMap::new();
    for h in &status.handoffs {
        let entry = per_node.entry(&h.node_id).or_default();
        entry.0 += 1;
        entry.1 += usize::from(h.complete);
        entry.2 += h.keys_done;
        entry.3 += h.bytes_done;
        entry.4 += h.keys_remaining;
    }
    for (node, (total, complete, keys, bytes, remaining)) in per_node {
        println!(
            "handoff to {node}: {complete}/{total} partitions complete, {keys} keys ({:.1} MiB) done, about {remaining} keys to go",
            bytes as f64 / (1 << 20) as f64
        );
    }
    if !status.unreachable.is_empty() {
        println!("no progress from: {}", status.unreachable.join(", "));
    }
    Ok(())
}
