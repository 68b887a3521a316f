//! `ringkv status`: every member with its status and partitions, and whether
//! the members' gossip views agree.

use std::collections::{BTreeMap, BTreeSet};

use ringkv_client::{
    proto::{ClusterStatusResponse, PartitionProgress},
    Connector,
};

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
    for line in members(&first) {
        println!("{line}");
    }
    // Ask every live member for its own view and compare.
    let mut views = BTreeMap::new();
    let mut unreachable = Vec::new();
    for m in first.members.iter().filter(|m| m.alive) {
        match connector.cluster_status(&m.grpc_address).await {
            Ok(view) => {
                views.insert(m.node_id.clone(), view);
            }
            Err(error) => unreachable.push(format!("{} ({error})", m.node_id)),
        }
    }
    for line in agreement(&first, &views, &unreachable) {
        println!("{line}");
    }
    Ok(())
}

/// The cluster as one member sees it: a heading, a row per member, and a
/// line for each member that refills lost data.
fn members(first: &ClusterStatusResponse) -> Vec<String> {
    let mut lines = vec![
        format!(
            "cluster seen from {}: layout v{}, {} partitions, N={}, {} conflicts",
            first.node_id,
            first.layout_version,
            first.partitions,
            first.replication_factor,
            first.conflict_resolution
        ),
        format!(
            "{:<16} {:<22} {:<8} {:<6} {:>10} {:>9} {:>7} {:>10}",
            "NODE", "ADDRESS", "STATUS", "ALIVE", "PARTITIONS", "REFILLING", "LAYOUT", "ZONE"
        ),
    ];
    for m in &first.members {
        lines.push(format!(
            "{:<16} {:<22} {:<8} {:<6} {:>10} {:>9} {:>7} {:>10}",
            m.node_id,
            m.grpc_address,
            m.status,
            if m.alive { "yes" } else { "no" },
            m.partitions_owned,
            m.partitions_refilling,
            format!("v{}", m.layout_version),
            if m.zone.is_empty() { "-" } else { &m.zone }
        ));
    }
    for m in first.members.iter().filter(|m| m.partitions_refilling > 0) {
        lines.push(format!(
            "{} lost its data: it refills {} partitions from their other owners and counts toward no read of them until then",
            m.node_id, m.partitions_refilling
        ));
    }
    lines
}

/// Whether every live member's own view matches the first one's.
fn agreement(
    first: &ClusterStatusResponse,
    views: &BTreeMap<String, ClusterStatusResponse>,
    unreachable: &[String],
) -> Vec<String> {
    let reference = fingerprint(first);
    let disagreeing: Vec<&String> = views
        .iter()
        .filter(|(_, view)| fingerprint(view) != reference)
        .map(|(id, _)| id)
        .collect();
    if disagreeing.is_empty() && unreachable.is_empty() {
        return vec![format!(
            "views agree: all {} live members see the same members and layout",
            views.len()
        )];
    }
    let mut lines = Vec::new();
    if !disagreeing.is_empty() {
        lines.push(format!(
            "views disagree: {disagreeing:?} see other members or another layout"
        ));
    }
    if !unreachable.is_empty() {
        lines.push(format!("unreachable: {}", unreachable.join(", ")));
    }
    lines
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
    for line in handoff_lines(&status.handoffs) {
        println!("{line}");
    }
    if !status.unreachable.is_empty() {
        println!("no progress from: {}", status.unreachable.join(", "));
    }
    Ok(())
}

/// One line per receiving node: its partitions' progress, and the down
/// owners it waits for (each gives partitions up, and only it may hold some
/// acknowledged writes).
fn handoff_lines(handoffs: &[PartitionProgress]) -> Vec<String> {
    #[derive(Default)]
    struct Sum<'a> {
        total: usize,
        complete: usize,
        keys: u64,
        bytes: u64,
        remaining: u64,
        awaiting: BTreeSet<&'a str>,
    }
    let mut per_node: BTreeMap<&str, Sum> = BTreeMap::new();
    for h in handoffs {
        let sum = per_node.entry(&h.node_id).or_default();
        sum.total += 1;
        sum.complete += usize::from(h.complete);
        sum.keys += h.keys_done;
        sum.bytes += h.bytes_done;
        sum.remaining += h.keys_remaining;
        sum.awaiting.extend(h.awaiting.iter().map(String::as_str));
    }
    per_node
        .into_iter()
        .map(|(node, sum)| {
            let mut line = format!(
                "handoff to {node}: {}/{} partitions complete, {} keys ({:.1} MiB) done, about {} keys to go",
                sum.complete,
                sum.total,
                sum.keys,
                sum.bytes as f64 / (1 << 20) as f64,
                sum.remaining
            );
            if !sum.awaiting.is_empty() {
                let names: Vec<&str> = sum.awaiting.into_iter().collect();
                line.push_str(&format!(
                    "; waiting for {} to come back: down, and gives partitions up",
                    names.join(", ")
                ));
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ringkv_client::proto::MemberStatus;

    use super::*;

    #[test]
    fn a_handoff_line_names_the_down_owners_it_waits_for() {
        let progress = |partition: u32, complete: bool, awaiting: &[&str]| PartitionProgress {
            partition,
            node_id: "n3".to_string(),
            keys_done: 10,
            bytes_done: 1 << 20,
            complete,
            awaiting: awaiting.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        };
        let lines = handoff_lines(&[
            progress(1, true, &[]),
            progress(2, false, &["n1"]),
            progress(3, false, &["n1"]),
        ]);
        assert_eq!(
            lines,
            vec![
                "handoff to n3: 1/3 partitions complete, 30 keys (3.0 MiB) done, about 0 keys to go; waiting for n1 to come back: down, and gives partitions up"
            ]
        );
        let lines = handoff_lines(&[progress(1, true, &[])]);
        assert_eq!(
            lines,
            vec!["handoff to n3: 1/1 partitions complete, 10 keys (1.0 MiB) done, about 0 keys to go"]
        );
    }

    fn member(id: &str, alive: bool, refilling: u32) -> MemberStatus {
        MemberStatus {
            node_id: id.to_string(),
            grpc_address: format!("{id}:7379"),
            status: "normal".to_string(),
            alive,
            partitions_owned: 10,
            partitions_refilling: refilling,
            layout_version: 3,
            ..Default::default()
        }
    }

    fn view(from: &str, layout_version: u64, members: Vec<MemberStatus>) -> ClusterStatusResponse {
        ClusterStatusResponse {
            node_id: from.to_string(),
            layout_version,
            members,
            ..Default::default()
        }
    }

    #[test]
    fn a_refilling_member_shows_in_its_column_and_in_a_line_of_its_own() {
        let lines = members(&view(
            "a",
            3,
            vec![member("a", true, 0), member("b", true, 7)],
        ));
        let row = lines.iter().find(|l| l.starts_with("b ")).expect("b's row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[5], "7", "REFILLING: {row}");
        assert!(lines
            .iter()
            .any(|l| l.starts_with("b lost its data: it refills 7 partitions")));
        assert!(!lines.iter().any(|l| l.starts_with("a lost its data")));
    }

    #[test]
    fn members_that_see_another_layout_or_member_are_named() {
        let all = vec![
            member("a", true, 0),
            member("b", true, 0),
            member("c", true, 0),
        ];
        let first = view("a", 3, all.clone());
        let mut views: BTreeMap<String, ClusterStatusResponse> = BTreeMap::new();
        views.insert("a".into(), first.clone());
        views.insert("b".into(), view("b", 3, all.clone()));
        assert_eq!(
            agreement(&first, &views, &[]),
            vec!["views agree: all 2 live members see the same members and layout"]
        );
        let mut c_dead = all.clone();
        c_dead[2].alive = false;
        views.insert("b".into(), view("b", 2, all.clone()));
        views.insert("c".into(), view("c", 3, c_dead));
        let lines = agreement(&first, &views, &["d (connection refused)".to_string()]);
        assert_eq!(
            lines,
            vec![
                r#"views disagree: ["b", "c"] see other members or another layout"#.to_string(),
                "unreachable: d (connection refused)".to_string(),
            ]
        );
    }
}
