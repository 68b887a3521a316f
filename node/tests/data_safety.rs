//! Data-safety regressions against real `ringkv-node` processes: the client
//! histories and faults that once lost acknowledged writes or undid
//! deletes. Each test prints how many acknowledged operations it checked.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use bytes::Bytes;
use common::{eventually, get_at, put_at, wait_equal_trees, TestCluster};
use ringkv_client::proto::{Consistency, RawDeleteRequest, RawPutRequest};
use ringkv_node::ring::partition_of;
use tonic::Code;

const KEYS: usize = 20;

fn key(i: usize) -> String {
    format!("key-{i:02}")
}

/// Puts `value` under each of the first `keys` keys through `node` at
/// W=`w`; every put must be acknowledged.
async fn put_each(cluster: &TestCluster, node: usize, keys: usize, value: &str, w: u32) {
    let mut client = cluster.nodes[node].client().await;
    for i in 0..keys {
        client
            .raw()
            .raw_put(put_at(&key(i), value, w))
            .await
            .unwrap_or_else(|status| {
                panic!("put {} at W={w} through node {node}: {status}", key(i))
            });
    }
}

/// Waits until `observer` sees `node` alive and refilling a number of
/// partitions that passes `check`.
async fn wait_refilling(
    cluster: &TestCluster,
    observer: usize,
    node: usize,
    check: impl Fn(u32) -> bool,
) {
    let id = cluster.nodes[node].node_id();
    let endpoint = cluster.nodes[observer].grpc.to_string();
    eventually(
        &format!("the partitions {id} refills, as node {observer} sees them"),
        Duration::from_secs(60),
        || async {
            let status = ringkv_client::cluster_status(&endpoint).await.ok()?;
            status
                .members
                .iter()
                .any(|m| m.node_id == id && m.alive && check(m.partitions_refilling))
                .then_some(())
        },
    )
    .await;
}

/// Reads `key` at R=`r` through `node`: its values, or none when not found.
async fn values_at(cluster: &TestCluster, node: usize, key: &str, r: u32) -> Vec<Bytes> {
    let mut client = cluster.nodes[node].client().await;
    match client.raw().raw_get(get_at(key, r)).await {
        Ok(found) => {
            let found = found.into_inner();
            if found.siblings.is_empty() {
                vec![found.value]
            } else {
                found.siblings
            }
        }
        Err(status) if status.code() == Code::NotFound => Vec::new(),
        Err(status) => panic!("reading {key} at R={r} through node {node}: {status}"),
    }
}

/// Reads each of `keys` at R=`r` through every node and checks that it
/// shows exactly `expected`.
async fn assert_reads(cluster: &TestCluster, keys: usize, r: u32, expected: &[Bytes], after: &str) {
    for i in 0..keys {
        for node in 0..cluster.nodes.len() {
            let values = values_at(cluster, node, &key(i), r).await;
            assert_eq!(
                values,
                expected,
                "{} at R={r} through node {node} {after}",
                key(i)
            );
        }
    }
}

/// Row 3 of the data-safety issue: a put acknowledged by two replicas while
/// the third is down, then a delete without a context through the third.
/// The delete used to cover only what its coordinator held (nothing), so
/// the key read back.
#[tokio::test]
async fn a_delete_without_context_through_a_replica_that_missed_the_put_deletes_it() {
    // Without hints or anti-entropy the third replica stays behind, which is
    // the case a delete must handle.
    let mut cluster = TestCluster::start(
        40,
        3,
        &[
            "--hinted-handoff",
            "false",
            "--anti-entropy-interval-secs",
            "3600",
        ],
    )
    .await;
    cluster.nodes[2].kill9();
    cluster.wait_alive(0, 2, false).await;
    put_each(&cluster, 0, KEYS, "acknowledged", 2).await;
    cluster.nodes[2].restart().await;
    cluster.wait_alive(0, 2, true).await;
    cluster.wait_alive(2, 0, true).await;
    cluster.wait_alive(2, 1, true).await;

    let mut deleter = cluster.nodes[2].client().await;
    for i in 0..KEYS {
        assert!(
            cluster.nodes[2]
                .replica_record(key(i).as_bytes())
                .await
                .is_none(),
            "node 3 missed the put, as the history needs"
        );
        deleter
            .raw()
            .raw_delete(RawDeleteRequest {
                key: Bytes::from(key(i)),
                ..Default::default()
            })
            .await
            .expect("delete without a context");
    }
    assert_reads(&cluster, KEYS, 3, &[], "after an acknowledged delete").await;
    println!(
        "blind delete through a lagging replica: {KEYS} acknowledged puts and {KEYS} acknowledged deletes checked at R=3 on 3 nodes"
    );
}

/// Row 2 of the data-safety issue: put v1 everywhere; overwrite it with v2
/// (with its context and a TTL) while one replica is down; wait past the
/// TTL. The expired v2 used to read as "no record at all", so read repair
/// and anti-entropy brought v1 back from the replica that missed v2.
#[tokio::test]
async fn an_expired_overwrite_never_brings_back_what_it_replaced() {
    let mut cluster = TestCluster::start(
        41,
        3,
        &[
            "--hinted-handoff",
            "false",
            "--anti-entropy-interval-secs",
            "1",
        ],
    )
    .await;
    put_each(&cluster, 0, KEYS, "v1", 3).await;
    let mut client = cluster.nodes[0].client().await;
    cluster.nodes[2].kill9();
    cluster.wait_alive(0, 2, false).await;
    for i in 0..KEYS {
        let read = client
            .raw()
            .raw_get(get_at(&key(i), 2))
            .await
            .expect("read v1")
            .into_inner();
        client
            .raw()
            .raw_put(RawPutRequest {
                key: Bytes::from(key(i)),
                value: Bytes::from_static(b"v2"),
                context: read.context,
                ttl_seconds: 1,
                consistency: Some(Consistency {
                    read_quorum: None,
                    write_quorum: Some(2),
                }),
            })
            .await
            .expect("overwrite with v2 and a TTL at W=2");
    }
    cluster.nodes[2].restart().await;
    cluster.wait_alive(0, 2, true).await;
    // Reads at R=3 repair, before and past the TTL; v1 must never show,
    // and once v2 expires the key must read as absent.
    for i in 0..KEYS {
        eventually(
            &format!("{} expires", key(i)),
            Duration::from_secs(10),
            || async {
                let values = values_at(&cluster, 0, &key(i), 3).await;
                assert!(
                    !values.contains(&Bytes::from_static(b"v1")),
                    "{} brought back v1: {values:?}",
                    key(i)
                );
                values.is_empty().then_some(())
            },
        )
        .await;
    }
    let nodes: Vec<&common::TestNode> = cluster.nodes.iter().collect();
    wait_equal_trees(&nodes, 256, Duration::from_secs(30)).await;
    assert_reads(&cluster, KEYS, 1, &[], "after anti-entropy").await;
    println!(
        "expired overwrite: {KEYS} acknowledged puts of v1 and {KEYS} acknowledged overwrites checked at R=3 and on each replica"
    );
}

/// Row 8 of the data-safety issue: a batch in which some keys cannot reach
/// W. It used to stop at the first failure and say nothing of which keys
/// took; now every key is tried and the error names exactly those that did
/// not take.
#[tokio::test]
async fn a_batch_that_partly_fails_names_the_keys_that_did_not_take() {
    const BATCH: usize = 100;
    // With N=3 on five nodes, a dead node is a replica of some keys only;
    // without hints those keys cannot reach W=3, and the others can.
    let mut cluster = TestCluster::start(42, 5, &["--hinted-handoff", "false"]).await;
    cluster.nodes[4].kill9();
    cluster.wait_alive(0, 4, false).await;
    let mut client = cluster.nodes[0].client().await;
    let status = client
        .raw()
        .raw_batch_put(ringkv_client::proto::RawBatchPutRequest {
            pairs: (0..BATCH)
                .map(|i| ringkv_client::proto::KvPair {
                    key: Bytes::from(key(i)),
                    value: Bytes::from_static(b"batched"),
                    ..Default::default()
                })
                .collect(),
            consistency: Some(Consistency {
                read_quorum: None,
                write_quorum: Some(3),
            }),
            ttl_seconds: 0,
        })
        .await
        .expect_err("keys replicated on the dead node cannot reach W=3");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let message = status.message();
    let named: Vec<usize> = (0..BATCH)
        .filter(|i| message.contains(&format!("{:?}", Bytes::from(key(*i)))))
        .collect();
    let counted: usize = message
        .split_once(" of ")
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("the error says how many keys did not take: {message}"));
    assert_eq!(named.len(), counted, "every failed key is named: {message}");
    assert!(
        counted > 0 && counted < BATCH,
        "some keys failed and some took: {message}"
    );
    for i in (0..BATCH).filter(|i| !named.contains(i)) {
        let values = values_at(&cluster, 1, &key(i), 2).await;
        assert_eq!(
            values,
            vec![Bytes::from_static(b"batched")],
            "{} was not named as failed, so it was written",
            key(i)
        );
    }
    println!(
        "partly failed batch: {} keys acknowledged and read back, {counted} named as not taken",
        BATCH - counted
    );
}

/// Row 5 of the data-safety issue: contexts the cluster did not issue. A
/// context read from one key and sent with a write to another, a token
/// whose clock was pushed towards the end of time, a 2 MB token, garbage:
/// each used to be accepted (or adopted), and each is now refused with
/// INVALID_ARGUMENT before anything is written.
#[tokio::test]
async fn contexts_the_cluster_did_not_issue_are_refused() {
    let cluster = TestCluster::start(43, 3, &["--cluster-secret", "s3cret"]).await;
    let mut client = cluster.nodes[0].client().await;
    let mut token_of = BTreeMap::new();
    for name in ["a", "b"] {
        client
            .raw()
            .raw_put(put_at(name, "first", 3))
            .await
            .expect("put");
        let read = client
            .raw()
            .raw_get(get_at(name, 2))
            .await
            .expect("get")
            .into_inner();
        token_of.insert(name, read.context);
    }
    let token_a = token_of["a"].clone();
    // The context's HLC is the fixed64 just before the 32-byte seal.
    let mut future = token_a.to_vec();
    let hlc_at = future.len() - 32 - 8;
    future[hlc_at..hlc_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let forged: Vec<(&str, &str, Bytes)> = vec![
        ("a context read from key a", "b", token_a.clone()),
        (
            "a context whose clock was pushed to the end of time",
            "a",
            Bytes::from(future),
        ),
        ("a 2 MB context", "a", Bytes::from(vec![0xC7; 2 << 20])),
        ("garbage", "a", Bytes::from_static(b"not a context at all")),
    ];
    for (what, target, context) in &forged {
        let status = client
            .raw()
            .raw_put(RawPutRequest {
                key: Bytes::from(target.to_string()),
                value: Bytes::from_static(b"forged"),
                context: context.clone(),
                ..Default::default()
            })
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains("causal context"),
            "{what}: {}",
            status.message()
        );
    }
    let too_large = client
        .raw()
        .raw_delete(RawDeleteRequest {
            key: Bytes::from_static(b"a"),
            context: Bytes::from(vec![0u8; 2 << 20]),
            ..Default::default()
        })
        .await
        .expect_err("a 2 MB context on a delete");
    assert!(
        too_large.message().contains("65536"),
        "the error names the limit: {}",
        too_large.message()
    );
    // Nothing forged took, and the real context still works for its key.
    for (name, values) in [
        ("a", vec![Bytes::from_static(b"first")]),
        ("b", vec![Bytes::from_static(b"first")]),
    ] {
        assert_eq!(values_at(&cluster, 1, name, 3).await, values, "{name}");
    }
    client
        .raw()
        .raw_put(RawPutRequest {
            key: Bytes::from_static(b"a"),
            value: Bytes::from_static(b"second"),
            context: token_a,
            ..Default::default()
        })
        .await
        .expect("the context issued for a");
    assert_eq!(
        values_at(&cluster, 2, "a", 3).await,
        vec![Bytes::from_static(b"second")],
        "the real context replaced what was read"
    );
    println!(
        "sealed contexts: {} forged writes refused, 2 acknowledged puts and 1 acknowledged overwrite checked at R=3",
        forged.len() + 1
    );
}

/// Row 1 of the data-safety issue (the tombstone half of Riak's kv679):
/// put and delete a key through one node, let that node alone purge the
/// tombstone, then put the key again through it. Its fresh write used to
/// restart the key's counter at 1, which the replicas still holding the
/// tombstone took as already seen: acknowledged, then dropped everywhere.
#[tokio::test]
async fn a_recreate_after_a_tombstone_purge_is_kept() {
    let mut cluster = TestCluster::start(
        44,
        3,
        &[
            "--anti-entropy-interval-secs",
            "1",
            "--write-buffer-bytes",
            "65536",
        ],
    )
    .await;
    // Only the first node purges tombstones after a second; the others keep
    // them for the default ten days, as replicas that have not compacted.
    cluster.nodes[0].stop().await;
    cluster.nodes[0].add_args(&["--gc-grace-secs", "1"]);
    cluster.nodes[0].restart().await;
    cluster.wait_alive(1, 0, true).await;
    let mut client = cluster.nodes[0].client().await;
    for i in 0..KEYS {
        client
            .raw()
            .raw_put(put_at(&key(i), "first", 3))
            .await
            .expect("put");
        let read = client
            .raw()
            .raw_get(get_at(&key(i), 3))
            .await
            .expect("get")
            .into_inner();
        client
            .raw()
            .raw_delete(RawDeleteRequest {
                key: Bytes::from(key(i)),
                context: read.context,
                consistency: Some(Consistency {
                    read_quorum: None,
                    write_quorum: Some(3),
                }),
            })
            .await
            .expect("delete at W=3");
    }
    // Filler writes make the first node flush and compact until its
    // compaction filter has purged every tombstone (after the grace period
    // and an anti-entropy round that saw all replicas agree). They go to
    // other partitions, so that they never keep the replicas of the test
    // keys' partitions from agreeing.
    let ours: BTreeSet<u32> = (0..KEYS)
        .map(|i| partition_of(key(i).as_bytes(), 256))
        .collect();
    let fillers = (0..)
        .map(|f| format!("filler-{f:06}"))
        .filter(|k| !ours.contains(&partition_of(k.as_bytes(), 256)));
    let fillers = std::sync::Mutex::new(fillers);
    let mut written = 0usize;
    eventually(
        "the first node purges the tombstones",
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            let node = &cluster.nodes[0];
            let batch: Vec<String> = fillers
                .lock()
                .expect("fillers")
                .by_ref()
                .take(500)
                .collect();
            written += batch.len();
            async move {
                for filler in batch {
                    client
                        .raw()
                        .raw_put(put_at(&filler, &"x".repeat(256), 1))
                        .await
                        .expect("filler");
                }
                for i in 0..KEYS {
                    if node.replica_record(key(i).as_bytes()).await.is_some() {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;
    // The test needs the other replicas to still hold the tombstones.
    for i in 0..KEYS {
        let held = cluster.nodes[1].replica_record(key(i).as_bytes()).await;
        assert!(
            held.is_some_and(|r| r.deleted_since(u64::MAX).is_some()),
            "node 2 still holds the tombstone of {}",
            key(i)
        );
    }
    for i in 0..KEYS {
        client
            .raw()
            .raw_put(put_at(&key(i), "again", 2))
            .await
            .expect("recreate through the purging node");
    }
    let nodes: Vec<&common::TestNode> = cluster.nodes.iter().collect();
    wait_equal_trees(&nodes, 256, Duration::from_secs(30)).await;
    let again = [Bytes::from_static(b"again")];
    assert_reads(&cluster, KEYS, 3, &again, "after the recreate").await;
    println!(
        "recreate after purge: {KEYS} acknowledged puts, deletes and recreates checked at R=3; {written} filler writes"
    );
}

/// Row 6 of the data-safety issue: a scan at R=3 with a replica down used to
/// return whatever answered; it now fails with UNAVAILABLE naming the
/// partitions short of R, and succeeds at R=2 with every acknowledged key.
#[tokio::test]
async fn a_scan_honours_its_read_quorum() {
    let mut cluster = TestCluster::start(45, 3, &[]).await;
    put_each(&cluster, 0, KEYS, "scanned", 3).await;
    let mut client = cluster.nodes[0].client().await;
    cluster.nodes[2].kill9();
    cluster.wait_alive(0, 2, false).await;
    let scan = |r: u32| ringkv_client::proto::RawScanRequest {
        start_key: Bytes::from_static(b"key-"),
        end_key: Bytes::from_static(b"key."),
        consistency: Some(Consistency {
            read_quorum: Some(r),
            write_quorum: None,
        }),
        ..Default::default()
    };
    let status = client
        .raw()
        .raw_scan(scan(3))
        .await
        .expect_err("R=3 with a replica down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("read quorum not met") && status.message().contains("partitions"),
        "the error names the partitions: {}",
        status.message()
    );
    let found = client
        .raw()
        .raw_scan(scan(2))
        .await
        .expect("R=2 with a replica down")
        .into_inner()
        .kvs;
    let keys: Vec<String> = found
        .iter()
        .map(|p| String::from_utf8_lossy(&p.key).into_owned())
        .collect();
    assert_eq!(keys, (0..KEYS).map(key).collect::<Vec<_>>());
    println!(
        "scan quorum: {KEYS} acknowledged puts scanned at R=2; R=3 refused with a replica down"
    );
}

/// Row 4 of the data-safety issue: after a partition moves to a joining
/// node, its former owner used to keep its copy for ever, missing every
/// later delete and purge. Once the transition is over, every key is held
/// by exactly its N=3 owners, and deletes and scans see no leftover copy.
#[tokio::test]
async fn former_owners_drop_moved_partitions_once_the_transition_is_over() {
    const MOVED: usize = 200;
    let args = ["--anti-entropy-interval-secs", "1"];
    let mut cluster = TestCluster::start(46, 3, &args).await;
    put_each(&cluster, 0, MOVED, "before the join", 3).await;
    let mut client = cluster.nodes[0].client().await;
    let fourth = cluster.spawn_joining(46, 4, &args);
    let members: Vec<&common::TestNode> = cluster.nodes.iter().chain([&fourth]).collect();
    common::wait_stable(&cluster.nodes[0], &members, Duration::from_secs(120)).await;
    cluster.nodes.push(fourth);
    eventually(
        "every key is held by exactly its three owners",
        Duration::from_secs(30),
        || async {
            for i in 0..MOVED {
                let mut holders = 0;
                for node in &cluster.nodes {
                    holders += usize::from(node.replica_record(key(i).as_bytes()).await.is_some());
                }
                if holders != 3 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    for i in 0..MOVED {
        client
            .raw()
            .raw_delete(RawDeleteRequest {
                key: Bytes::from(key(i)),
                ..Default::default()
            })
            .await
            .expect("delete");
    }
    let left = client
        .raw()
        .raw_scan(ringkv_client::proto::RawScanRequest {
            start_key: Bytes::from_static(b"key-"),
            end_key: Bytes::from_static(b"key."),
            ..Default::default()
        })
        .await
        .expect("scan")
        .into_inner()
        .kvs;
    assert!(
        left.is_empty(),
        "deleted keys appear in a scan: {}",
        left.len()
    );
    println!(
        "clean-up after a join: {MOVED} acknowledged puts held by exactly 3 of 4 nodes, {MOVED} acknowledged deletes checked by a scan"
    );
}

/// Row 11 of the data-safety issue: a node restarted with an empty data dir
/// but its old id. The keys were acknowledged by nodes 2 and 3 while node 1
/// was down; then node 2 goes down and node 3 loses its disk. Node 3 used
/// to answer reads at once, so a read at R=2 through node 1 heard "no such
/// key" twice and reported the acknowledged writes missing. A node that lost
/// its data counts toward no read until it has been refilled from every
/// co-replica, and `ringkv status` shows it refilling.
#[tokio::test]
async fn a_node_that_lost_its_data_serves_no_reads_until_refilled() {
    let mut cluster = TestCluster::start(
        47,
        3,
        &[
            "--hinted-handoff",
            "false",
            "--anti-entropy-interval-secs",
            "3600",
            "--gossip-settle-ms",
            "2000",
        ],
    )
    .await;
    cluster.nodes[0].kill9();
    cluster.wait_alive(2, 0, false).await;
    put_each(&cluster, 2, KEYS, "acknowledged", 2).await;
    cluster.nodes[1].kill9();
    cluster.nodes[2].kill9();
    cluster.nodes[2].wipe();
    cluster.nodes[0].restart().await;
    cluster.nodes[2].respawn();
    cluster.wait_alive(0, 2, true).await;
    cluster.wait_alive(2, 0, true).await;

    // Node 1 never had the keys, node 3 lost them, node 2 is down: no read
    // may claim they are absent.
    wait_refilling(&cluster, 0, 2, |partitions| partitions > 0).await;
    let mut reader = cluster.nodes[0].client().await;
    for i in 0..KEYS {
        match reader.raw().raw_get(get_at(&key(i), 2)).await {
            Err(status) if status.code() == Code::Unavailable => {}
            other => panic!(
                "{} at R=2 with one replica down and one refilling: want UNAVAILABLE, got {other:?}",
                key(i)
            ),
        }
    }
    let scan = reader
        .raw()
        .raw_scan(ringkv_client::proto::RawScanRequest {
            start_key: Bytes::from_static(b"key-"),
            end_key: Bytes::from_static(b"key."),
            ..Default::default()
        })
        .await;
    assert_eq!(
        scan.as_ref().map_err(|s| s.code()).err(),
        Some(Code::Unavailable),
        "a scan at R=2 with one replica down and one refilling: {scan:?}"
    );

    // Node 2 comes back: node 3 refills from it and serves again.
    cluster.nodes[1].restart().await;
    wait_refilling(&cluster, 0, 2, |partitions| partitions == 0).await;
    cluster.nodes[2].wait_serving().await;
    for i in 0..KEYS {
        assert!(
            cluster.nodes[2]
                .replica_record(key(i).as_bytes())
                .await
                .is_some(),
            "the refill brought {} back to node 3",
            key(i)
        );
    }
    let acknowledged = [Bytes::from_static(b"acknowledged")];
    assert_reads(&cluster, KEYS, 3, &acknowledged, "after the refill").await;
    println!(
        "lost disk: {KEYS} acknowledged puts refused at R=2 while their only surviving copy was down, then read at R=3 on 3 nodes after the refill"
    );
}
