//! One node id, one member. Gossip datagrams are sealed with the cluster
//! secret, so garbage and a process with another secret change nothing; a
//! second process that holds the secret but claims a live node's id is
//! refused, and the real node stays the member in every view, before and
//! after the impostor stops.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::{eventually, get_at, put_at, TestCluster, TestNode, GOSSIP_PORT};

const SUBNET: u8 = 86;

/// Every node's view of `id`: its address and whether it is alive.
async fn views_of(cluster: &TestCluster, id: &str) -> Vec<Option<(String, bool)>> {
    let mut views = Vec::new();
    for node in &cluster.nodes {
        let status = common::admin().cluster_status(&node.peer.to_string()).await;
        views.push(status.ok().and_then(|s| {
            s.members
                .into_iter()
                .find(|m| m.node_id == id)
                .map(|m| (m.grpc_address, m.alive))
        }));
    }
    views
}

#[tokio::test]
async fn impostors_are_refused_and_the_real_node_stays_a_member() {
    let cluster = TestCluster::start(SUBNET, 3, &[]).await;
    let real = &cluster.nodes[1];
    let id = real.node_id();
    let real_address = real.peer.to_string();
    let seeds = cluster
        .nodes
        .iter()
        .map(|n| format!("{}:{GOSSIP_PORT}", n.ip))
        .collect::<Vec<_>>()
        .join(",");

    // Garbage at every gossip port: dropped and counted.
    let outsider = tokio::net::UdpSocket::bind((Ipv4Addr::new(127, 0, SUBNET, 20), 0))
        .await
        .expect("bind");
    for node in &cluster.nodes {
        for i in 0..300u32 {
            let junk: Vec<u8> = (0..(i % 200) + 1).map(|b| (b * 31 + i) as u8).collect();
            outsider
                .send_to(&junk, (node.ip, GOSSIP_PORT))
                .await
                .expect("send");
        }
    }

    // Two impostors of the real node's id at other addresses: one with
    // another secret, one with the cluster's own.
    let args = |secret: &'static str| {
        vec![
            "--node-id".to_string(),
            id.clone(),
            "--seeds".to_string(),
            seeds.clone(),
            "--gossip-interval-ms".to_string(),
            "100".to_string(),
            "--cluster-secret".to_string(),
            secret.to_string(),
        ]
    };
    let outsider_args = args("another-secret");
    let outsider_args: Vec<&str> = outsider_args.iter().map(String::as_str).collect();
    let mut stranger = TestNode::spawn_unready(Ipv4Addr::new(127, 0, SUBNET, 9), &outsider_args);
    let twin_args = args(common::TEST_SECRET);
    let twin_args: Vec<&str> = twin_args.iter().map(String::as_str).collect();
    let mut twin = TestNode::spawn_unready(Ipv4Addr::new(127, 0, SUBNET, 10), &twin_args);

    // The real node sees the twin's claim (so its gossip arrived) and
    // reports it; every node refuses the stranger's datagrams.
    eventually(
        "the real node reports the twin",
        Duration::from_secs(30),
        || async {
            (real.metric("ringkv_gossip_identity_conflicts").await == Some(1.0)).then_some(())
        },
    )
    .await;
    let bad_tag = "ringkv_gossip_datagrams_refused_total{reason=\"bad_tag\"}";
    for node in &cluster.nodes {
        let refused = eventually("bad datagrams counted", Duration::from_secs(30), || async {
            node.metric(bad_tag).await.filter(|n| *n >= 300.0)
        })
        .await;
        println!(
            "{}: {refused} datagrams refused for their seal",
            node.node_id()
        );
    }

    // While both run, every view keeps the id at the real node, alive, and
    // writes at W=3 reach the real node.
    let mut client = cluster.nodes[0].client().await;
    let mut acknowledged = Vec::new();
    for i in 0..100 {
        let key = format!("during-{i:03}");
        client
            .raw()
            .raw_put(put_at(&key, &key, 3))
            .await
            .unwrap_or_else(|e| panic!("W=3 write {key} while impostors run: {e}"));
        acknowledged.push(key);
        let views = views_of(&cluster, &id).await;
        assert!(
            views
                .iter()
                .all(|v| v.as_ref() == Some(&(real_address.clone(), true))),
            "every view keeps {id} at {real_address}, alive: {views:?}"
        );
    }
    for key in &acknowledged {
        assert!(
            real.replica_record(key.as_bytes()).await.is_some(),
            "the real node holds {key}"
        );
    }

    // The impostors stop: the real node stays alive in every view, and
    // reads and writes at R = W = 3 keep working.
    twin.stop().await;
    stranger.stop().await;
    eventually("the conflict is over", Duration::from_secs(60), || async {
        (real.metric("ringkv_gossip_identity_conflicts").await == Some(0.0)).then_some(())
    })
    .await;
    let views = views_of(&cluster, &id).await;
    assert!(
        views
            .iter()
            .all(|v| v.as_ref() == Some(&(real_address.clone(), true))),
        "after the impostors stopped: {views:?}"
    );
    for i in 0..100 {
        let key = format!("after-{i:03}");
        client
            .raw()
            .raw_put(put_at(&key, &key, 3))
            .await
            .unwrap_or_else(|e| panic!("W=3 write {key} after the impostors: {e}"));
        acknowledged.push(key);
    }
    for key in &acknowledged {
        let got = client
            .raw()
            .raw_get(get_at(key, 3))
            .await
            .unwrap_or_else(|e| panic!("R=3 read {key}: {e}"))
            .into_inner();
        assert_eq!(got.value, key.as_bytes(), "{key}");
    }
    let peak = cluster.nodes.iter().map(|n| n.peak_rss_bytes()).max();
    println!(
        "impostors refused: checked {} acknowledged writes at W=3 and R=3; peak RSS of a node {} MiB",
        acknowledged.len(),
        peak.unwrap_or(0) >> 20
    );
}
