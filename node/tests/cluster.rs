//! The Dynamo core against real multi-node clusters: formation, a node
//! crash under load with hinted handoff, siblings and lww, read repair and
//! quorum errors. Every node is its own `ringkv-node` process on its own
//! 127.0.x.y address.

mod common;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{batch_put_at, eventually, get_at, put_at, TestCluster, TestNode};
use tokio::sync::Mutex;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

async fn assert_formed(cluster: &TestCluster, started: Instant, bound: Duration) {
    let expected = cluster.nodes.len();
    for node in &cluster.nodes {
        let endpoint = node.peer.to_string();
        let status = eventually(
            &format!("{endpoint} sees {expected} normal members on one layout"),
            bound,
            || {
                let endpoint = endpoint.clone();
                async move {
                    let status = common::admin().cluster_status(&endpoint).await.ok()?;
                    let version = status.layout_version;
                    (status.members.len() == expected
                        && status.members.iter().all(|m| {
                            m.alive && m.status == "normal" && m.layout_version == version
                        }))
                    .then_some(status)
                }
            },
        )
        .await;
        let owned: u32 = status.members.iter().map(|m| m.partitions_owned).sum();
        assert_eq!(
            owned,
            status.partitions * 3,
            "every partition has N replicas"
        );
    }
    let took = started.elapsed();
    println!("{expected}-node cluster formed in {took:?} (bound {bound:?})");
    assert!(took < bound);
}

#[tokio::test]
async fn clusters_of_three_and_five_form_from_seeds() {
    let bound = Duration::from_secs(20);
    let started = Instant::now();
    let three = TestCluster::start(20, 3, &[]).await;
    assert_formed(&three, started, bound).await;

    let started = Instant::now();
    let five = TestCluster::start(21, 5, &[]).await;
    assert_formed(&five, started, bound).await;
    // Data written through one member is readable through every other.
    let mut first = five.nodes[0].client().await;
    first.put(b"formed", b"yes").await.expect("put");
    for node in &five.nodes {
        let got = node.client().await.get(b"formed").await.expect("get");
        assert_eq!(got.map(|found| found.value).as_deref(), Some(&b"yes"[..]));
    }
}

#[tokio::test]
async fn node_crash_under_load_loses_no_acknowledged_write() {
    const WRITERS: usize = 8;
    let mut cluster = TestCluster::start(22, 3, &[]).await;
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        // Writers use the two nodes that stay up; the crashed one would
        // only turn every write it coordinates into a connection error.
        let mut client = cluster.nodes[w % 2].client().await;
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("crash-{w}-{i:06}");
                let value = format!("value-{w}-{i}");
                if client.raw().raw_put(put_at(&key, &value, 2)).await.is_ok() {
                    acknowledged.lock().await.insert(key, value);
                }
                i += 1;
            }
        }));
    }
    eventually(
        "writes before the crash",
        Duration::from_secs(20),
        || async { (acknowledged.lock().await.len() >= 500).then_some(()) },
    )
    .await;
    cluster.nodes[2].kill9();
    cluster.wait_alive(0, 2, false).await;
    let before = acknowledged.lock().await.len();
    eventually(
        "writes during the outage",
        Duration::from_secs(20),
        || async { (acknowledged.lock().await.len() >= before + 500).then_some(()) },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let acknowledged = acknowledged.lock().await.clone();

    // During the outage every acknowledged write is readable at R=2.
    let mut client = cluster.nodes[0].client().await;
    for (key, value) in &acknowledged {
        let got = client
            .raw()
            .raw_get(get_at(key, 2))
            .await
            .expect("R=2 read");
        assert_eq!(
            got.into_inner().value,
            value.as_bytes(),
            "{key} during outage"
        );
    }

    // The hints kept meanwhile are announced, for an operator's health check.
    let announced = eventually(
        "hints pending announced",
        Duration::from_secs(20),
        || async {
            let status = common::ring_status(&cluster.nodes[0]).await?;
            let hints: u64 = status.members.iter().map(|m| m.hints_pending).sum();
            (hints > 0).then_some(hints)
        },
    )
    .await;
    println!("hints pending during the outage, as gossiped: {announced}");

    // The node returns; hints are replayed until it holds every write.
    let started = Instant::now();
    cluster.nodes[2].restart().await;
    cluster.wait_alive(0, 2, true).await;
    let returned = &cluster.nodes[2];
    eventually(
        "hints replayed to the returned node",
        Duration::from_secs(60),
        || async {
            for key in acknowledged.keys() {
                returned.replica_record(key.as_bytes()).await?;
            }
            Some(())
        },
    )
    .await;
    println!("hints replayed in {:?}", started.elapsed());

    // Now every acknowledged write is readable at R=3 and the three replicas
    // hold equal records.
    for (key, value) in &acknowledged {
        let got = client
            .raw()
            .raw_get(get_at(key, 3))
            .await
            .expect("R=3 read");
        assert_eq!(
            got.into_inner().value,
            value.as_bytes(),
            "{key} after return"
        );
        let mut records = Vec::new();
        for node in &cluster.nodes {
            records.push(node.replica_record(key.as_bytes()).await);
        }
        assert!(
            records.windows(2).all(|w| w[0] == w[1]),
            "replicas of {key} differ: {records:?}"
        );
    }
    println!(
        "node crash: checked {} acknowledged writes at R=2 during the outage and at R=3 on equal replicas after",
        acknowledged.len()
    );
    assert!(acknowledged.len() >= 1000);
}

/// Reads the key "shared" from all three replicas.
async fn read_shared(client: &mut ringkv_client::Client) -> ringkv_client::proto::RawGetResponse {
    client
        .raw()
        .raw_get(get_at("shared", 3))
        .await
        .expect("get")
        .into_inner()
}

#[tokio::test]
async fn concurrent_writers_make_siblings_and_a_merged_context_resolves_them() {
    let cluster = TestCluster::start(23, 3, &[]).await;
    let mut a = cluster.nodes[0].client().await;
    let mut b = cluster.nodes[1].client().await;
    let (ra, rb) = tokio::join!(
        a.raw().raw_put(put_at("shared", "from-a", 3)),
        b.raw().raw_put(put_at("shared", "from-b", 3)),
    );
    ra.expect("a writes");
    rb.expect("b writes");

    let read = read_shared(&mut a).await;
    assert_eq!(
        Some(&read.value),
        read.siblings.first(),
        "value is the first sibling"
    );
    let mut siblings: Vec<_> = read.siblings.iter().map(|v| v.to_vec()).collect();
    siblings.sort();
    assert_eq!(
        siblings,
        vec![b"from-a".to_vec(), b"from-b".to_vec()],
        "two siblings"
    );

    // A write carrying the merged context supersedes both.
    let mut resolve = put_at("shared", "merged", 3);
    resolve.context = read.context;
    b.raw().raw_put(resolve).await.expect("resolving write");
    let after = read_shared(&mut a).await;
    assert_eq!(after.value, &b"merged"[..]);
    assert!(after.siblings.is_empty(), "resolved: {:?}", after.siblings);

    // `Client::put` sends no context, so it adds a sibling;
    // `Client::overwrite` (what `ringkv put` does) reads first and replaces.
    a.put(b"shared", b"blind").await.expect("blind put");
    let blind = read_shared(&mut a).await;
    assert_eq!(
        blind.siblings.len(),
        2,
        "a put without a context adds a sibling"
    );
    // `Client::get` returns every sibling and the context that covers them;
    // `Client::put_with_context` with that context replaces them all.
    let found = a.get(b"shared").await.expect("get").expect("present");
    let mut values = found.values();
    values.sort();
    assert_eq!(values, [&b"blind"[..], &b"merged"[..]], "{found:?}");
    assert!(values.contains(&&found.value[..]), "{found:?}");
    b.put_with_context(b"shared", b"chosen", found.context)
        .await
        .expect("put with the context read");
    let chosen = read_shared(&mut a).await;
    assert_eq!(chosen.value, &b"chosen"[..]);
    assert!(chosen.siblings.is_empty(), "{:?}", chosen.siblings);
    a.put(b"shared", b"blind again").await.expect("blind put");
    b.overwrite(b"shared", b"overwritten")
        .await
        .expect("overwrite");
    let overwritten = read_shared(&mut a).await;
    assert_eq!(overwritten.value, &b"overwritten"[..]);
    assert!(
        overwritten.siblings.is_empty(),
        "overwrite replaces every value it read: {:?}",
        overwritten.siblings
    );
}

#[tokio::test]
async fn lww_mode_keeps_the_highest_timestamp() {
    let cluster = TestCluster::start(24, 3, &["--conflict-resolution", "lww"]).await;
    let mut a = cluster.nodes[0].client().await;
    let mut c = cluster.nodes[2].client().await;
    a.raw()
        .raw_put(put_at("lww", "first", 3))
        .await
        .expect("first");
    // No context: in siblings mode this would make a sibling; in lww mode the
    // later write carries the higher hybrid-logical-clock timestamp and wins.
    c.raw()
        .raw_put(put_at("lww", "second", 3))
        .await
        .expect("second");
    for node in &cluster.nodes {
        let got = node
            .client()
            .await
            .raw()
            .raw_get(get_at("lww", 3))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(got.value, &b"second"[..]);
        assert!(got.siblings.is_empty());
    }
}

#[tokio::test]
async fn reads_alone_repair_a_stale_replica() {
    const KEYS: usize = 300;
    let mut cluster = TestCluster::start(25, 3, &["--hinted-handoff", "false"]).await;
    cluster.nodes[2].stop().await;
    cluster.wait_alive(0, 2, false).await;
    let mut client = cluster.nodes[0].client().await;
    for i in 0..KEYS {
        client
            .raw()
            .raw_put(put_at(&format!("repair-{i:04}"), &format!("v{i}"), 2))
            .await
            .expect("put with one replica down");
    }
    cluster.nodes[2].restart().await;
    cluster.wait_alive(0, 2, true).await;
    let stale = &cluster.nodes[2];
    for i in 0..KEYS {
        let key = format!("repair-{i:04}");
        assert!(
            stale.replica_record(key.as_bytes()).await.is_none(),
            "with hints off, {key} has not reached the restarted replica"
        );
    }
    // Half the keys at R=3: the stale replica is among the replies the
    // read waits for and is repaired before the answer. The other half at
    // R=2: when it replies after the answer, it is repaired in the
    // background.
    for i in 0..KEYS {
        let key = format!("repair-{i:04}");
        let r = if i % 2 == 0 { 3 } else { 2 };
        let got = client.raw().raw_get(get_at(&key, r)).await.expect("read");
        assert_eq!(got.into_inner().value, format!("v{i}").as_bytes());
        if r == 3 {
            assert!(
                stale.replica_record(key.as_bytes()).await.is_some(),
                "{key}: a replica among the R replies is repaired before the answer"
            );
        }
    }
    for i in 0..KEYS {
        let key = format!("repair-{i:04}");
        eventually(
            &format!("{key} repaired by the read"),
            Duration::from_secs(10),
            || async { stale.replica_record(key.as_bytes()).await.map(|_| ()) },
        )
        .await;
    }
    let repairs = cluster.nodes[0].metric("ringkv_read_repairs_total").await;
    println!("read repair: {KEYS} keys restored on the stale replica, {repairs:?} repairs counted");
    assert!(
        repairs.unwrap_or(0.0) >= KEYS as f64,
        "every repair is counted: {repairs:?}"
    );
}

#[tokio::test]
async fn quorum_errors_name_how_many_replied() {
    let mut cluster = TestCluster::start(26, 3, &[]).await;
    let mut client = cluster.nodes[0].client().await;
    client.put(b"q", b"v").await.expect("put");
    cluster.nodes[2].kill9();
    cluster.wait_alive(0, 2, false).await;
    // Readiness settles once: a peer that dies later does not take this
    // node out of its Service.
    assert!(
        cluster.nodes[0].is_serving().await,
        "still SERVING with a peer dead"
    );

    let status = client
        .raw()
        .raw_get(get_at("q", 3))
        .await
        .expect_err("R=3 with one node down");
    println!(
        "R=3 with one node down: {:?} {}",
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("2 of 3"), "{}", status.message());

    client
        .raw()
        .raw_put(put_at("q", "w1", 1))
        .await
        .expect("W=1 write with one node down");
    let bad = client
        .raw()
        .raw_put(put_at("q", "w4", 4))
        .await
        .expect_err("W=4 exceeds N");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_restarted_node_is_ready_only_once_it_sees_its_peers() {
    // Readiness puts a pod behind the Service. A node that restarts over its
    // data dir is in the layout at once, but until gossip has found its
    // peers it would refuse every quorum read it coordinates.
    let mut cluster = TestCluster::start(28, 3, &[]).await;
    let mut client = cluster.nodes[0].client().await;
    client
        .raw()
        .raw_put(put_at("settle", "v", 3))
        .await
        .expect("W=3 put");
    for round in 0..3 {
        cluster.nodes[2].kill9();
        cluster.wait_alive(0, 2, false).await;
        // restart() returns as soon as the node reports SERVING.
        cluster.nodes[2].restart().await;
        let got = cluster.nodes[2]
            .client()
            .await
            .raw()
            .raw_get(get_at("settle", 3))
            .await
            .unwrap_or_else(|status| {
                panic!("round {round}: R=3 read right after SERVING: {status}")
            });
        assert_eq!(got.into_inner().value, "v".as_bytes());
    }
}

const HOPS: &str = "ringkv-forward-hops";

#[tokio::test]
async fn a_write_is_passed_on_at_most_twice() {
    // Four nodes, N=3: each key has a node outside its replicas.
    let cluster = TestCluster::start(29, 4, &[]).await;
    let mut client = cluster.nodes[0].client().await;
    client
        .raw()
        .raw_put(put_at("hops", "v", 3))
        .await
        .expect("W=3 put");
    let mut owners = Vec::new();
    let mut outsider = None;
    for node in &cluster.nodes {
        match node.replica_record(b"hops").await {
            Some(_) => owners.push(node),
            None => outsider = Some(node),
        }
    }
    assert_eq!(owners.len(), 3, "three replicas hold the key");
    let outsider = outsider.expect("a node outside the key's replicas");
    let record = owners[0].replica_bytes(b"hops").await;

    // A node outside the replicas passes a write on to the owners...
    outsider
        .replica_apply(b"hops", record.clone(), None, &[])
        .await
        .expect("passed on to the owners");
    assert!(
        outsider.replica_record(b"hops").await.is_none(),
        "the outsider keeps no copy nobody reads"
    );
    // ...but not once two nodes have passed it on already.
    let refused = outsider
        .replica_apply(b"hops", record.clone(), None, &[(HOPS, 2)])
        .await
        .expect_err("a third hop");
    println!("third hop: {:?} {}", refused.code(), refused.message());
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(
        refused.message().contains("at most 2"),
        "{}",
        refused.message()
    );
    // An owner that needs to pass nothing on takes it after any chain.
    owners[0]
        .replica_apply(b"hops", record.clone(), None, &[(HOPS, 2)])
        .await
        .expect("an owner keeps it");

    // A sender whose ring state is newer knows something this node has not
    // adopted yet (it is a receiver in a new transition, say): it keeps the
    // record rather than bouncing it back.
    let version = common::ring_status(outsider)
        .await
        .expect("ring status")
        .state_version;
    outsider
        .replica_apply(
            b"hops",
            record,
            None,
            &[(HOPS, 1), ("ringkv-ring-version", version + 1)],
        )
        .await
        .expect("kept on a newer sender's word");
    assert!(
        outsider.replica_record(b"hops").await.is_some(),
        "the outsider keeps what a newer ring gives it"
    );
}

#[tokio::test]
async fn a_node_with_another_partition_count_refuses_to_join() {
    let cluster = TestCluster::start(27, 3, &[]).await;
    let data = tempfile::tempdir().expect("tempdir");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ringkv-node"))
            .args([
                "--listen",
                "127.0.27.9:7379",
                "--metrics-listen",
                "127.0.27.9:9379",
            ])
            .args(["--node-id", "odd-one", "--partitions", "128"])
            // The cluster's secret: without it the cluster's gossip would
            // not even reach it.
            .args(["--cluster-secret", common::TEST_SECRET])
            .args(["--seeds", &format!("{}:7946", cluster.nodes[0].ip)])
            .arg("--data-dir")
            .arg(data.path())
            .env("RINGKV_LOG", "error")
            .output(),
    )
    .await
    .expect("the node stops by itself")
    .expect("run ringkv-node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stderr}");
    assert!(!output.status.success(), "refused with a non-zero exit");
    assert!(
        stderr.contains("refusing to join")
            && stderr.contains("256 partitions")
            && stderr.contains("this node has 128"),
        "clear error: {stderr}"
    );
    let status = common::admin()
        .cluster_status(&cluster.nodes[0].peer.to_string())
        .await
        .expect("status");
    assert!(
        !status
            .members
            .iter()
            .any(|m| m.node_id == "odd-one" && m.partitions_owned > 0),
        "the cluster's layout never took the odd node in"
    );
}

/// The partition count is fixed when a data dir is created: restarting a
/// node over it with another `--partitions` fails with an error naming
/// both counts, and the data dir is left as it was.
#[tokio::test]
async fn a_data_dir_keeps_its_partition_count() {
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("db");
    let ip = std::net::Ipv4Addr::new(127, 0, 59, 1);
    let mut node = TestNode::start_in(ip, &data_dir, &["--partitions", "64"]).await;
    node.client().await.put(b"kept", b"v").await.expect("put");
    node.stop().await;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ringkv-node"))
            .args(["--listen", "127.0.59.1:7379"])
            .args(["--metrics-listen", "127.0.59.1:9379"])
            .args(["--node-id", "test-127.0.59.1"])
            .args(common::STANDALONE)
            .args(["--partitions", "128"])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RINGKV_LOG", "error")
            .output(),
    )
    .await
    .expect("the node stops by itself")
    .expect("run ringkv-node");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "refused with a non-zero exit");
    assert!(
        printed.contains("created with 64 partitions, but --partitions is 128"),
        "clear error: {printed}"
    );
    node.restart().await;
    assert_eq!(
        common::value_of(&mut node.client().await, b"kept")
            .await
            .as_deref(),
        Some(&b"v"[..]),
        "the data dir is as it was"
    );
}

/// A node alone in a cluster with N=3 makes no layout, and its requests
/// fail with UNAVAILABLE, naming N, until N nodes are alive.
#[tokio::test]
async fn without_a_layout_requests_fail_naming_n() {
    let node = TestNode::spawn_unready(std::net::Ipv4Addr::new(127, 0, 56, 1), &[]);
    let status = eventually(
        "an answer from the node",
        Duration::from_secs(30),
        || async {
            let mut client = ringkv_client::Client::connect(&node.grpc.to_string())
                .await
                .ok()?;
            let status = client.raw().raw_get(get_at("k", 1)).await.err()?;
            status.message().contains("layout").then_some(status)
        },
    )
    .await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("needs 3 live nodes (N)"),
        "{status:?}"
    );
    // The process runs: the server as a whole is SERVING while RawKV is not.
    let channel = ringkv_client::Connector::plaintext()
        .endpoint(&node.grpc.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for (service, expected) in [
        ("", ServingStatus::Serving),
        ("ringkv.v1.RawKV", ServingStatus::NotServing),
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, expected as i32, "health of {service:?}");
    }
}

/// A write answers once W replicas hold it; the others still receive it
/// afterwards. No hints, no anti-entropy and no reads here, so nothing else
/// could bring it to them.
#[tokio::test]
async fn replicas_beyond_w_receive_the_write_after_the_answer() {
    const KEYS: usize = 50;
    let args = [
        "--hinted-handoff",
        "false",
        "--anti-entropy-interval-secs",
        "3600",
    ];
    let cluster = TestCluster::start(58, 3, &args).await;
    let mut client = cluster.nodes[0].client().await;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("beyond-w-{i:02}")).collect();
    for key in &keys {
        client
            .raw()
            .raw_put(put_at(key, "v", 1))
            .await
            .expect("put at W=1");
    }
    for node in &cluster.nodes {
        for key in &keys {
            eventually(
                &format!("{key} on {}", node.node_id()),
                Duration::from_secs(10),
                || async { node.replica_record(key.as_bytes()).await.map(|_| ()) },
            )
            .await;
        }
    }
    println!("{KEYS} writes acknowledged at W=1 reached all 3 replicas");
}

#[tokio::test]
async fn the_client_deadline_bounds_every_call_to_a_replica() {
    // The replica timeout is far beyond the client's deadline, so only the
    // deadline, passed on to each call to a replica, can end the wait for
    // a frozen replica early enough for the coordinator to say, within the
    // deadline, how many replicas answered.
    let cluster = TestCluster::start(66, 3, &["--replica-timeout-ms", "30000"]).await;
    let mut client = cluster.nodes[0].client().await;
    client
        .raw()
        .raw_put(put_at("deadline", "v", 3))
        .await
        .expect("W=3 put");
    let deadline = Duration::from_millis(1500);
    let ops = [
        "RawGet at R=3",
        "RawPut at W=3",
        "RawScan at R=3",
        "RawDelete without a context at R=3",
    ];
    for op in ops {
        cluster.wait_alive(0, 2, true).await;
        cluster.nodes[2].pause();
        let started = Instant::now();
        let outcome = match op {
            "RawGet at R=3" => {
                let mut request = tonic::Request::new(get_at("deadline", 3));
                request.set_timeout(deadline);
                client.raw().raw_get(request).await.map(|_| ())
            }
            "RawPut at W=3" => {
                let mut request = tonic::Request::new(put_at("deadline", "w", 3));
                request.set_timeout(deadline);
                client.raw().raw_put(request).await.map(|_| ())
            }
            "RawDelete without a context at R=3" => {
                // Its read phase waits on the frozen replica; the write
                // phase would get what is left.
                let mut request = tonic::Request::new(ringkv_client::proto::RawDeleteRequest {
                    key: "deadline".into(),
                    consistency: Some(ringkv_client::proto::Consistency {
                        read_quorum: Some(3),
                        write_quorum: Some(1),
                    }),
                    ..Default::default()
                });
                request.set_timeout(deadline);
                client.raw().raw_delete(request).await.map(|_| ())
            }
            _ => {
                let mut request = tonic::Request::new(ringkv_client::proto::RawScanRequest {
                    limit: 10,
                    consistency: Some(ringkv_client::proto::Consistency {
                        read_quorum: Some(3),
                        write_quorum: None,
                    }),
                    ..Default::default()
                });
                request.set_timeout(deadline);
                client.raw().raw_scan(request).await.map(|_| ())
            }
        };
        let took = started.elapsed();
        cluster.nodes[2].resume();
        let status = outcome.expect_err("a quorum of 3 with one replica frozen");
        println!(
            "{op} with a replica frozen: {:?} after {took:?}: {}",
            status.code(),
            status.message()
        );
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "{op}: the coordinator answers with the quorum it got, not a bare timeout: {}",
            status.message()
        );
        assert!(
            status.message().contains("quorum not met"),
            "{}",
            status.message()
        );
        // It did wait for the frozen replica (gossip still counted it alive)
        // and answered within the client's deadline.
        assert!(
            took >= deadline / 2 && took < deadline,
            "{op} took {took:?}"
        );
    }
}

/// A node that holds no copy of a key passes a client's write on to a
/// replica within the client's deadline: when that replica is frozen (gossip
/// still counts it alive), the client hears within its deadline from the
/// node it called, which names the replica that did not answer, rather than
/// timing out on its own.
#[tokio::test]
async fn a_write_passed_on_to_a_frozen_replica_is_answered_within_the_client_deadline() {
    let cluster = TestCluster::start(75, 4, &["--replica-timeout-ms", "30000"]).await;
    let all: Vec<&TestNode> = cluster.nodes.iter().collect();
    common::wait_stable(&cluster.nodes[0], &all, Duration::from_secs(60)).await;
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.node_id()).collect();
    let key = "passed-on";
    let state = cluster.nodes[0].ring_state().await;
    let partition = state.current.partition_for_key(key.as_bytes());
    let replicas: Vec<String> = state
        .current
        .preference_list(partition)
        .expect("a preference list")
        .into_iter()
        .map(String::from)
        .collect();
    let outsider = ids
        .iter()
        .position(|id| !replicas.contains(id))
        .expect("4 nodes, 3 replicas");
    // The first live replica is where the write goes.
    let first = ids
        .iter()
        .position(|id| *id == replicas[0])
        .expect("a member");
    let mut client = cluster.nodes[outsider].client().await;
    client
        .raw()
        .raw_put(put_at(key, "v1", 2))
        .await
        .expect("a write passed on to a live replica");
    assert!(
        cluster.nodes[outsider]
            .replica_record(key.as_bytes())
            .await
            .is_none(),
        "a node that passes a write on keeps no copy"
    );
    // A write that was already passed on is coordinated where it lands,
    // even by a node that does not count itself a replica: it is never
    // passed on twice.
    let mut landed = tonic::Request::new(put_at("landed", "v", 2));
    landed
        .metadata_mut()
        .insert(ringkv_node::FORWARDED, "1".parse().expect("metadata"));
    let landed_replicas = state
        .current
        .preference_list(state.current.partition_for_key(b"landed"))
        .expect("replicas");
    let landing = ids
        .iter()
        .position(|id| !landed_replicas.contains(&id.as_str()))
        .expect("4 nodes, 3 replicas");
    cluster.nodes[landing]
        .client()
        .await
        .raw()
        .raw_put(landed)
        .await
        .expect("a passed-on write is coordinated where it lands");
    assert!(
        cluster.nodes[landing]
            .replica_record(b"landed")
            .await
            .is_some(),
        "the node it landed on coordinated it, with a copy of its own"
    );

    let status = put_while_frozen(
        &cluster,
        &mut client,
        outsider,
        &[first],
        put_at(key, "v2", 2),
        "a write passed on to a frozen replica",
    )
    .await;
    assert!(
        status.message().contains(&replicas[0]) && status.message().contains("passed"),
        "names the replica the write was passed to: {}",
        status.message()
    );
}

/// Sends `put` through `client`, whose node is `observer`, with a 1.5 s
/// deadline while the nodes `frozen` are SIGSTOPped (gossip still counts
/// them alive), and checks that it fails with UNAVAILABLE within the
/// deadline: the node's own answer, not the client's timeout. Returns the
/// error.
///
/// That gossip counts the frozen nodes alive is the premise. Under a
/// saturated machine phi accrual can flap, and a write the observer then
/// routes around the frozen nodes is acknowledged, which a frozen node could
/// not have done: the premise failed, not the node. The freeze is then
/// lifted, the premise waited for again, and the write tried again, at most
/// three times.
async fn put_while_frozen(
    cluster: &TestCluster,
    client: &mut ringkv_client::Client,
    observer: usize,
    frozen: &[usize],
    put: ringkv_client::proto::RawPutRequest,
    what: &str,
) -> tonic::Status {
    let deadline = Duration::from_millis(1500);
    for attempt in 1..=3 {
        for &node in frozen {
            cluster.wait_alive(observer, node, true).await;
        }
        for &node in frozen {
            cluster.nodes[node].pause();
        }
        let mut request = tonic::Request::new(put.clone());
        request.set_timeout(deadline);
        let started = Instant::now();
        let outcome = client.raw().raw_put(request).await;
        let took = started.elapsed();
        for &node in frozen {
            cluster.nodes[node].resume();
        }
        let status = match outcome {
            Ok(_) => {
                println!(
                    "{what}: acknowledged on attempt {attempt}: gossip did not count the frozen nodes alive; again"
                );
                continue;
            }
            Err(status) => status,
        };
        println!(
            "{what}: {:?} after {took:?}: {}",
            status.code(),
            status.message()
        );
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "{what}: {}",
            status.message()
        );
        assert!(took < deadline, "{what}: answered after {took:?}");
        return status;
    }
    panic!("{what}: acknowledged in 3 of 3 attempts with the nodes frozen");
}

/// A write to a replica and then to its fallback share the client's
/// deadline: with a replica and its fallback both frozen (gossip still
/// counts them alive), the fallback gets only what the replica's wait left,
/// and the coordinator answers within the deadline with the quorum it got,
/// rather than giving the fallback a fresh wait of its own.
#[tokio::test]
async fn a_fallback_gets_only_what_is_left_of_the_client_deadline() {
    let cluster = TestCluster::start(77, 4, &["--replica-timeout-ms", "30000"]).await;
    let all: Vec<&TestNode> = cluster.nodes.iter().collect();
    common::wait_stable(&cluster.nodes[0], &all, Duration::from_secs(60)).await;
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.node_id()).collect();
    let key = "fallback-deadline";
    let state = cluster.nodes[0].ring_state().await;
    let replicas = state
        .current
        .preference_list(state.current.partition_for_key(key.as_bytes()))
        .expect("replicas");
    let index = |id: &str| ids.iter().position(|i| i == id).expect("a member");
    let coordinator = index(replicas[0]);
    let frozen_replica = index(replicas[1]);
    let fallback = ids
        .iter()
        .position(|id| !replicas.contains(&id.as_str()))
        .expect("4 nodes, 3 replicas");
    let mut client = cluster.nodes[coordinator].client().await;
    client
        .raw()
        .raw_put(put_at(key, "v1", 3))
        .await
        .expect("W=3 with every replica up");

    let status = put_while_frozen(
        &cluster,
        &mut client,
        coordinator,
        &[frozen_replica, fallback],
        put_at(key, "v2", 3),
        "W=3 with a replica and its fallback frozen",
    )
    .await;
    assert!(
        status.message().contains("2 of 3"),
        "the coordinator's own answer, not a timeout: {}",
        status.message()
    );
}

/// Sloppy quorum for a replica that gossip still counts alive: its write
/// times out, so the next node outside the preference list stores the
/// record as a hint for it, and that counts toward W. Once it answers
/// again, the hint reaches it.
#[tokio::test]
async fn a_frozen_replica_is_replaced_by_a_fallback_that_keeps_a_hint() {
    let cluster = TestCluster::start(73, 4, &["--replica-timeout-ms", "1000"]).await;
    let state = cluster.nodes[0].ring_state().await;
    let key = "fallback";
    let partition = state.current.partition_for_key(key.as_bytes());
    let owners: Vec<String> = state
        .current
        .preference_list(partition)
        .expect("owners")
        .into_iter()
        .map(String::from)
        .collect();
    let node = |id: &str| {
        cluster
            .nodes
            .iter()
            .find(|n| n.node_id() == id)
            .expect("a member")
    };
    let (coordinator, frozen) = (node(&owners[0]), node(&owners[1]));
    let fallback = cluster
        .nodes
        .iter()
        .find(|n| !owners.contains(&n.node_id()))
        .expect("a node outside the preference list");

    frozen.pause();
    let started = Instant::now();
    let written = coordinator
        .client()
        .await
        .raw()
        .raw_put(put_at(key, "v", 3))
        .await;
    let took = started.elapsed();
    frozen.resume();
    written.expect("W=3 met with the fallback's hint");
    let stored = coordinator.metric("ringkv_hints_stored_total").await;
    println!("W=3 with a frozen replica answered in {took:?}; {stored:?} hints stored");
    assert!(
        stored.unwrap_or(0.0) >= 1.0,
        "the coordinator counted the hint"
    );
    assert!(
        fallback.replica_record(key.as_bytes()).await.is_none(),
        "a hint is no replica copy"
    );
    eventually(
        "the hint reaches the replica once it answers",
        Duration::from_secs(30),
        || async { frozen.replica_record(key.as_bytes()).await.map(|_| ()) },
    )
    .await;
}

#[tokio::test]
async fn a_batch_waits_for_every_replica_where_a_single_write_answers_at_w() {
    let timeout = Duration::from_millis(3000);
    let cluster = TestCluster::start(68, 3, &["--replica-timeout-ms", "3000"]).await;
    let mut client = cluster.nodes[0].client().await;
    cluster.nodes[2].pause();

    let started = Instant::now();
    client
        .raw()
        .raw_put(put_at("single", "v", 2))
        .await
        .expect("W=2 put with one replica frozen");
    let single = started.elapsed();

    let started = Instant::now();
    client
        .raw()
        .raw_batch_put(batch_put_at((0..16).map(|i| format!("batch-{i}")), "v", 2))
        .await
        .expect("W=2 batch with one replica frozen");
    let batch = started.elapsed();
    println!("with a replica frozen: a W=2 put answered in {single:?}, a W=2 batch in {batch:?}");
    assert!(single < timeout / 2, "a single write answers at W");
    // The frozen replica's share times out, then its keys one by one.
    assert!(
        batch >= timeout * 9 / 10 && batch < timeout * 5 / 2,
        "a batch answers once every replica answered or timed out, twice"
    );
    // A client deadline bounds both waits (with the replica frozen anew:
    // gossip has counted it dead by now).
    cluster.nodes[2].resume();
    cluster.wait_alive(0, 2, true).await;
    cluster.nodes[2].pause();
    let started = Instant::now();
    let mut request = tonic::Request::new(ringkv_client::proto::RawBatchPutRequest {
        pairs: vec![ringkv_client::proto::KvPair {
            key: "batch-deadline".into(),
            value: "v".into(),
            ..Default::default()
        }],
        consistency: Some(ringkv_client::proto::Consistency {
            read_quorum: None,
            write_quorum: Some(2),
        }),
        ttl_seconds: 0,
    });
    request.set_timeout(Duration::from_secs(1));
    let outcome = client.raw().raw_batch_put(request).await;
    let bounded = started.elapsed();
    println!(
        "a W=2 batch with a 1 s deadline: {:?} after {bounded:?}",
        outcome.as_ref().map(|_| ())
    );
    assert!(
        bounded < Duration::from_secs(1),
        "answered within the deadline"
    );
    cluster.nodes[2].resume();
    for i in 0..16 {
        let got = client
            .raw()
            .raw_get(get_at(&format!("batch-{i}"), 2))
            .await
            .expect("read a batch key");
        assert_eq!(got.into_inner().value, "v".as_bytes());
    }
}

/// The replica calls one node served, by method and code, from its
/// `ringkv_grpc_requests_total`.
async fn replica_calls(node: &TestNode, method: &str) -> f64 {
    node.metric(&format!(
        "ringkv_grpc_requests_total{{method=\"Replica.{method}\",code=\"Ok\"}}"
    ))
    .await
    .unwrap_or(0.0)
}

/// A client batch whose keys the coordinator replicates, with no ring
/// transition under way, reaches each other replica as one `ApplyBatch`
/// and no single-key `Apply`: each replica merges its share in one write
/// batch, and holds every key of it afterwards.
#[tokio::test]
async fn a_batch_reaches_each_other_replica_as_one_apply_batch() {
    const KEYS: usize = 50;
    let cluster = TestCluster::start(80, 3, &["--anti-entropy-interval-secs", "3600"]).await;
    let others = &cluster.nodes[1..];
    let mut before = Vec::new();
    for node in others {
        before.push((
            replica_calls(node, "ApplyBatch").await,
            replica_calls(node, "Apply").await,
        ));
    }
    let keys: Vec<String> = (0..KEYS).map(|i| format!("batched-{i:03}")).collect();
    let mut client = cluster.nodes[0].client().await;
    client
        .raw()
        .raw_batch_put(batch_put_at(keys.iter().cloned(), "v", 3))
        .await
        .expect("a batch at W=3");
    for (node, (batches, singles)) in others.iter().zip(before) {
        let id = node.node_id();
        assert_eq!(
            replica_calls(node, "ApplyBatch").await - batches,
            1.0,
            "{id} got its share as one ApplyBatch"
        );
        assert_eq!(
            replica_calls(node, "Apply").await - singles,
            0.0,
            "{id} got no key on its own"
        );
        for key in &keys {
            assert!(
                node.replica_record(key.as_bytes()).await.is_some(),
                "{id} holds {key}"
            );
        }
    }
    println!("a batch of {KEYS} keys at W=3 reached each of 2 other replicas as one ApplyBatch");
}

/// Concurrent single-key puts and gets reach another replica coalesced:
/// what a coordinator has for a peer while its earlier calls are in flight
/// goes out together, as Cassandra's and Scylla's message coalescing sends
/// it, so a replica takes fewer calls (and syncs) than it gets requests.
/// Every acknowledged write at W=3 is on every replica afterwards, and
/// every get at R=3 reads it back.
#[tokio::test]
async fn concurrent_requests_reach_a_replica_in_fewer_calls_than_requests() {
    const CLIENTS: usize = 64;
    const EACH: usize = 8;
    let cluster = TestCluster::start(104, 3, &["--anti-entropy-interval-secs", "3600"]).await;
    let others = &cluster.nodes[1..];
    let mut before = Vec::new();
    for node in others {
        before.push(replica_calls(node, "ApplyBatch").await + replica_calls(node, "Apply").await);
    }
    let mut client = cluster.nodes[0].client().await;
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..CLIENTS {
        let mut raw = client.raw().clone();
        writers.spawn(async move {
            let mut keys = Vec::new();
            for i in 0..EACH {
                let key = format!("coalesced-{writer:02}-{i}");
                raw.raw_put(put_at(&key, "v", 3))
                    .await
                    .unwrap_or_else(|status| panic!("put {key} at W=3: {status}"));
                keys.push(key);
            }
            keys
        });
    }
    let mut acknowledged = Vec::new();
    while let Some(keys) = writers.join_next().await {
        acknowledged.extend(keys.expect("a writer"));
    }
    let writes = acknowledged.len();
    assert_eq!(writes, CLIENTS * EACH);
    for (node, before) in others.iter().zip(before) {
        let id = node.node_id();
        let calls =
            replica_calls(node, "ApplyBatch").await + replica_calls(node, "Apply").await - before;
        println!("{id} took {writes} writes in {calls} Apply and ApplyBatch calls");
        assert!(
            calls * 2.0 <= writes as f64,
            "{id} took {writes} concurrent writes in {calls} calls: they were not coalesced"
        );
        for key in &acknowledged {
            assert!(
                node.replica_record(key.as_bytes()).await.is_some(),
                "{id} holds the acknowledged {key}"
            );
        }
    }
    println!("checked {writes} acknowledged writes at W=3 on 2 other replicas");

    let mut before = Vec::new();
    for node in others {
        before.push(replica_calls(node, "ReadBatch").await + replica_calls(node, "Read").await);
    }
    let mut readers = tokio::task::JoinSet::new();
    for keys in acknowledged.chunks(EACH) {
        let (mut raw, keys) = (client.raw().clone(), keys.to_vec());
        readers.spawn(async move {
            for key in &keys {
                let got = raw
                    .raw_get(get_at(key, 3))
                    .await
                    .unwrap_or_else(|status| panic!("get {key} at R=3: {status}"))
                    .into_inner();
                assert_eq!(got.value, "v".as_bytes(), "{key} reads back at R=3");
            }
            keys.len()
        });
    }
    let mut reads = 0;
    while let Some(count) = readers.join_next().await {
        reads += count.expect("a reader");
    }
    for (node, before) in others.iter().zip(before) {
        let id = node.node_id();
        let calls =
            replica_calls(node, "ReadBatch").await + replica_calls(node, "Read").await - before;
        println!("{id} took {reads} reads in {calls} Read and ReadBatch calls");
        assert!(
            calls * 2.0 <= reads as f64,
            "{id} took {reads} concurrent reads in {calls} calls: they were not coalesced"
        );
    }
    println!("read back {reads} acknowledged writes at R=3");
}

/// Load that saturates the machine does not make live peers look dead.
/// Gossip messages processed in bursts shrink phi accrual's mean heartbeat
/// interval, and the next ordinary gap then crossed its threshold: under
/// batch reads at c=64, a node saw both of its peers dead most of the time
/// and failed reads at R=2 with "1 of 3 replicas replied", though every
/// replica answered every call. Every batch get here must succeed, and no
/// node may see a peer dead.
#[tokio::test]
async fn a_saturated_cluster_keeps_its_peers_alive() {
    const KEYS: usize = 2000;
    const CLIENTS: usize = 64;
    const BATCH: usize = 100;
    let cluster = TestCluster::start(106, 3, &["--anti-entropy-interval-secs", "3600"]).await;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("loaded-{i:04}")).collect();
    let mut client = cluster.nodes[0].client().await;
    for chunk in keys.chunks(500) {
        client
            .raw()
            .raw_batch_put(batch_put_at(chunk.iter().cloned(), "v", 3))
            .await
            .expect("a batch put at W=3");
    }
    let until = Instant::now() + Duration::from_secs(8);
    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..CLIENTS {
        let mut raw = cluster.nodes[reader % 3].client().await.raw().clone();
        let keys = keys.clone();
        readers.spawn(async move {
            let mut checked = 0;
            let mut round = reader;
            while Instant::now() < until {
                let batch: Vec<bytes::Bytes> = (0..BATCH)
                    .map(|i| bytes::Bytes::from(keys[(round * BATCH + i * 7) % KEYS].clone()))
                    .collect();
                let got = raw
                    .raw_batch_get(ringkv_client::proto::RawBatchGetRequest {
                        keys: batch,
                        consistency: Some(ringkv_client::proto::Consistency {
                            read_quorum: Some(2),
                            write_quorum: None,
                        }),
                    })
                    .await
                    .unwrap_or_else(|status| panic!("a batch get at R=2 under load: {status}"))
                    .into_inner()
                    .pairs;
                assert_eq!(got.len(), BATCH, "every key is found");
                checked += got.len();
                round += CLIENTS;
            }
            checked
        });
    }
    let mut dead_seen = Vec::new();
    let mut polls = 0;
    while Instant::now() < until {
        for node in &cluster.nodes {
            let endpoint = node.peer.to_string();
            if let Ok(status) = common::admin().cluster_status(&endpoint).await {
                polls += 1;
                for member in status.members.iter().filter(|m| !m.alive) {
                    dead_seen.push(format!("{} saw {} dead", node.node_id(), member.node_id));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reads = 0;
    while let Some(checked) = readers.join_next().await {
        reads += checked.expect("a reader");
    }
    dead_seen.dedup();
    assert!(
        dead_seen.is_empty(),
        "in {polls} status polls under load: {dead_seen:?}"
    );
    println!("read {reads} acknowledged keys at R=2 under load; {polls} status polls saw every peer alive");
}

/// A batch read whose records pass half a replica's peer message limit
/// still reads every key: the replica answers a prefix of its keys, and the
/// coordinator reads the rest on their own. With a 1.25 MiB peer limit, 24
/// records of 60 KiB take more than one call to each other replica.
#[tokio::test]
async fn a_batch_read_past_the_peer_message_cap_reads_every_key() {
    const KEYS: usize = 24;
    const VALUE: usize = 60 << 10;
    let cluster = TestCluster::start(
        107,
        3,
        &[
            "--anti-entropy-interval-secs",
            "3600",
            "--max-request-bytes",
            "1048576",
            "--max-value-bytes",
            "65536",
            "--max-record-bytes",
            "131072",
        ],
    )
    .await;
    let others = &cluster.nodes[1..];
    let keys: Vec<String> = (0..KEYS).map(|i| format!("large-{i:02}")).collect();
    let value = |key: &str| format!("{key}:{}", "x".repeat(VALUE - key.len() - 1));
    let mut client = cluster.nodes[0].client().await;
    for chunk in keys.chunks(8) {
        let mut batch = batch_put_at(chunk.iter().cloned(), "", 3);
        for pair in &mut batch.pairs {
            let key = String::from_utf8(pair.key.to_vec()).expect("a utf-8 key");
            pair.value = bytes::Bytes::from(value(&key));
        }
        client
            .raw()
            .raw_batch_put(batch)
            .await
            .expect("a batch put of 8 records of 60 KiB at W=3");
    }
    let mut before = Vec::new();
    for node in others {
        before.push(replica_calls(node, "ReadBatch").await + replica_calls(node, "Read").await);
    }
    let got = client
        .raw()
        .raw_batch_get(ringkv_client::proto::RawBatchGetRequest {
            keys: keys.iter().map(|k| bytes::Bytes::from(k.clone())).collect(),
            consistency: Some(ringkv_client::proto::Consistency {
                read_quorum: Some(3),
                write_quorum: None,
            }),
        })
        .await
        .expect("a batch get of 1.4 MiB at R=3")
        .into_inner()
        .pairs;
    assert_eq!(got.len(), KEYS, "every key is read");
    for pair in &got {
        let key = String::from_utf8(pair.key.to_vec()).expect("a utf-8 key");
        assert!(
            pair.value == value(&key).as_bytes(),
            "{key} reads back whole"
        );
    }
    for (node, before) in others.iter().zip(before) {
        let calls =
            replica_calls(node, "ReadBatch").await + replica_calls(node, "Read").await - before;
        assert!(
            calls >= 2.0,
            "{} answered 1.4 MiB of records in {calls} call: the cap did not cut it",
            node.node_id()
        );
    }
    println!("read back {KEYS} acknowledged records of 60 KiB past the 640 KiB answer cap");
}

/// Hints owed to a returning replica reach it a batch at a time: with
/// 1,000 writes missed, it takes a few `ApplyBatch` calls, not one call a
/// key, and holds every acknowledged write afterwards.
#[tokio::test]
async fn hints_reach_a_returning_replica_a_batch_at_a_time() {
    const HINTED: usize = 1000;
    let mut cluster = TestCluster::start(99, 3, &["--anti-entropy-interval-secs", "3600"]).await;
    cluster.nodes[2].kill9();
    cluster.wait_alive(0, 2, false).await;
    let keys: Vec<String> = (0..HINTED).map(|i| format!("hinted-{i:04}")).collect();
    let mut client = cluster.nodes[0].client().await;
    for key in &keys {
        client
            .raw()
            .raw_put(put_at(key, "v", 2))
            .await
            .unwrap_or_else(|status| panic!("put {key} at W=2 with a replica down: {status}"));
    }
    cluster.nodes[2].restart().await;
    let coordinator = &cluster.nodes[0];
    eventually(
        "the coordinator delivers every hint it kept",
        Duration::from_secs(120),
        || async {
            let delivered = coordinator.metric("ringkv_hints_delivered_total").await?;
            (delivered >= HINTED as f64).then_some(())
        },
    )
    .await;
    let returning = &cluster.nodes[2];
    for key in &keys {
        assert!(
            returning.replica_record(key.as_bytes()).await.is_some(),
            "the returning replica holds {key}"
        );
    }
    let calls =
        replica_calls(returning, "Apply").await + replica_calls(returning, "ApplyBatch").await;
    println!("{HINTED} acknowledged writes reached the returning replica by hint in {calls} calls");
    assert!(
        calls <= (HINTED / 100) as f64,
        "{HINTED} hints took {calls} calls"
    );
}

/// Each other replica's calls of `methods`, summed, from its
/// `ringkv_grpc_requests_total`.
async fn calls_of(nodes: &[TestNode], methods: &[&str]) -> Vec<f64> {
    let mut calls = Vec::new();
    for node in nodes {
        let mut sum = 0.0;
        for method in methods {
            sum += replica_calls(node, method).await;
        }
        calls.push(sum);
    }
    calls
}

/// A batch get, and a batch of blind deletes (which read what the cluster
/// holds before they delete it), reach each other replica as one
/// `ReadBatch` and no single-key `Read`, and the deletes as one
/// `ApplyBatch`: a batch that reads key by key cannot come back unnoticed.
#[tokio::test]
async fn batch_reads_reach_each_other_replica_as_one_read_batch() {
    const KEYS: usize = 50;
    let cluster = TestCluster::start(100, 3, &["--anti-entropy-interval-secs", "3600"]).await;
    let others = &cluster.nodes[1..];
    let keys: Vec<String> = (0..KEYS).map(|i| format!("read-batch-{i:03}")).collect();
    let all: Vec<bytes::Bytes> = keys.iter().map(|k| bytes::Bytes::from(k.clone())).collect();
    let at_r3 = Some(ringkv_client::proto::Consistency {
        read_quorum: Some(3),
        write_quorum: Some(3),
    });
    let mut client = cluster.nodes[0].client().await;
    client
        .raw()
        .raw_batch_put(batch_put_at(keys.iter().cloned(), "v", 3))
        .await
        .expect("a batch put at W=3");

    let reads = calls_of(others, &["ReadBatch"]).await;
    let singles = calls_of(others, &["Read", "Apply"]).await;
    let got = client
        .raw()
        .raw_batch_get(ringkv_client::proto::RawBatchGetRequest {
            keys: all.clone(),
            consistency: at_r3,
        })
        .await
        .expect("a batch get at R=3")
        .into_inner()
        .pairs;
    assert_eq!(got.len(), KEYS, "every key is found");
    assert!(got.iter().all(|pair| pair.value == "v".as_bytes()));
    for (after, before) in calls_of(others, &["ReadBatch"]).await.iter().zip(&reads) {
        assert_eq!(after - before, 1.0, "one ReadBatch per other replica");
    }
    assert_eq!(
        calls_of(others, &["Read", "Apply"]).await,
        singles,
        "no single-key call"
    );

    let writes = calls_of(others, &["ApplyBatch"]).await;
    client
        .raw()
        .raw_batch_delete(ringkv_client::proto::RawBatchDeleteRequest {
            keys: all.clone(),
            consistency: at_r3,
        })
        .await
        .expect("a blind batch delete at R=3, W=3");
    for (after, before) in calls_of(others, &["ReadBatch"]).await.iter().zip(&reads) {
        assert_eq!(after - before, 2.0, "the deletes read with one ReadBatch");
    }
    for (after, before) in calls_of(others, &["ApplyBatch"]).await.iter().zip(&writes) {
        assert_eq!(after - before, 1.0, "the deletes land with one ApplyBatch");
    }
    assert_eq!(
        calls_of(others, &["Read", "Apply"]).await,
        singles,
        "no single-key call"
    );
    let left = client
        .raw()
        .raw_batch_get(ringkv_client::proto::RawBatchGetRequest {
            keys: all,
            consistency: at_r3,
        })
        .await
        .expect("a batch get after the deletes")
        .into_inner()
        .pairs;
    assert!(left.is_empty(), "{} deleted keys read back", left.len());
    println!("{KEYS} acknowledged writes read at R=3 and deleted in batches: one ReadBatch and one ApplyBatch per other replica per batch, no single-key call");
}

/// A node paused for less than its stall threshold (five gossip intervals,
/// `cluster/contact.rs`) is never seen dead, even by a peer starved of CPU.
/// Such a node does not count itself stalled when it resumes and
/// coordinates on at once, so a peer that declared it dead meanwhile may
/// already have moved on without it: the stall check is only sound if
/// death takes longer than a stall. A starved peer hears nothing while it
/// does not run, and phi accrual counted that time as the other node's
/// silence. Node 0 is made to run in bursts (stopped 40 to 90 ms at a time,
/// as a saturated machine schedules it) while the others are paused in
/// turn, 3 to 4 intervals at a time, 0.3 to 1 s apart, drawn at random
/// (printed seed). A node seen dead is a failure unless its last pause
/// before the sighting, as measured, reached a stall (a test starved of CPU
/// itself may overshoot a pause).
#[tokio::test]
async fn a_pause_shorter_than_a_stall_is_never_seen_as_death() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use std::sync::atomic::{AtomicBool, Ordering};
    const INTERVAL: Duration = Duration::from_millis(100);
    const STALL: Duration = Duration::from_millis(500);
    const PAUSES: usize = 24;
    let cluster = TestCluster::start(111, 3, &["--anti-entropy-interval-secs", "3600"]).await;
    cluster.wait_all_alive().await;
    let seed: u64 = rand::rng().random();
    println!("schedule seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.node_id()).collect();
    // (node, when it was stopped, for how long), as measured.
    let pauses: Arc<std::sync::Mutex<Vec<(String, Instant, Duration)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let mut pollers = tokio::task::JoinSet::new();
    for (observer, node) in cluster.nodes.iter().enumerate() {
        let (endpoint, done) = (node.peer.to_string(), done.clone());
        let me = ids[observer].clone();
        pollers.spawn(async move {
            let admin = common::admin();
            let (mut polls, mut dead_seen) = (0, Vec::new());
            while !done.load(Ordering::Acquire) {
                let status = admin.cluster_status(&endpoint);
                if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(1), status).await {
                    polls += 1;
                    let at = Instant::now();
                    for member in status.members.iter().filter(|m| !m.alive) {
                        dead_seen.push((me.clone(), member.node_id.clone(), at));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (polls, dead_seen)
        });
    }
    let stutter = {
        let (done, pauses) = (done.clone(), pauses.clone());
        let (pid, id) = (cluster.nodes[0].pid(), ids[0].clone());
        let mut rng = StdRng::seed_from_u64(seed ^ 1);
        tokio::spawn(async move {
            use nix::sys::signal::{kill, Signal};
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let mut bursts = 0;
            while !done.load(Ordering::Acquire) {
                let stopped = Instant::now();
                kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
                tokio::time::sleep(Duration::from_millis(rng.random_range(40..90))).await;
                kill(pid, Signal::SIGCONT).expect("SIGCONT");
                pauses
                    .lock()
                    .expect("pauses")
                    .push((id.clone(), stopped, stopped.elapsed()));
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..20))).await;
                bursts += 1;
            }
            bursts
        })
    };
    for i in 0..PAUSES {
        let node = &cluster.nodes[1 + i % 2];
        let pause = rng.random_range(3 * INTERVAL..4 * INTERVAL);
        let stopped = Instant::now();
        node.pause();
        tokio::time::sleep(pause).await;
        node.resume();
        pauses
            .lock()
            .expect("pauses")
            .push((node.node_id(), stopped, stopped.elapsed()));
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1000))).await;
    }
    done.store(true, Ordering::Release);
    let bursts = stutter.await.expect("the stutter");
    let (mut polls, mut dead_seen) = (0, Vec::new());
    while let Some(result) = pollers.join_next().await {
        let (p, seen) = result.expect("a poller");
        polls += p;
        dead_seen.extend(seen);
    }
    let pauses = pauses.lock().expect("pauses").clone();
    let last_pause = |node: &str, at: Instant| {
        pauses
            .iter()
            .filter(|(id, stopped, _)| id == node && *stopped <= at)
            .max_by_key(|(_, stopped, _)| *stopped)
            .map(|(_, _, length)| *length)
    };
    let (mut excused, mut failures) = (Vec::new(), Vec::new());
    for (observer, seen, at) in dead_seen {
        let pause = last_pause(&seen, at);
        let sighting = format!("{observer} saw {seen} dead after a pause of {pause:?}");
        if pause.is_some_and(|p| p >= STALL) {
            excused.push(sighting);
        } else {
            failures.push(sighting);
        }
    }
    failures.dedup();
    excused.dedup();
    let longest = |node: &str| {
        pauses
            .iter()
            .filter(|(id, _, _)| id == node)
            .map(|(_, _, length)| length.as_millis())
            .max()
    };
    let summary = format!(
        "{PAUSES} pauses of nodes 1 and 2 (longest {:?} and {:?} ms), node 0 stopped {bursts} times (longest {:?} ms); {polls} status polls",
        longest(&ids[1]),
        longest(&ids[2]),
        longest(&ids[0]),
    );
    assert!(failures.is_empty(), "{summary}: {failures:?}");
    println!("{summary} saw no node dead after a pause shorter than a stall; excused, after longer pauses: {excused:?}");
}
