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
use ringkv_node::partition_of;
use tonic::Code;

const KEYS: usize = 20;

/// Neither hints nor anti-entropy: a replica that missed a write stays
/// behind, which is the state these histories need.
const NO_REPAIR: [&str; 4] = [
    "--hinted-handoff",
    "false",
    "--anti-entropy-interval-secs",
    "3600",
];

fn key(i: usize) -> String {
    format!("key-{i:02}")
}

/// Kills `node` with SIGKILL and waits until node 1 sees it dead.
async fn kill(cluster: &mut TestCluster, node: usize) {
    cluster.nodes[node].kill9();
    cluster.wait_alive(0, node, false).await;
}

/// A RawBatchPut of `value` under each of `keys`, at W=3.
fn batch_at_w3(
    keys: impl Iterator<Item = String>,
    value: &[u8],
) -> ringkv_client::proto::RawBatchPutRequest {
    ringkv_client::proto::RawBatchPutRequest {
        pairs: keys
            .map(|key| ringkv_client::proto::KvPair {
                key: Bytes::from(key),
                value: Bytes::copy_from_slice(value),
                ..Default::default()
            })
            .collect(),
        consistency: Some(Consistency {
            read_quorum: None,
            write_quorum: Some(3),
        }),
        ttl_seconds: 0,
    }
}

/// How many of the first `KEYS` keys `node` holds a record of.
async fn held_by(cluster: &TestCluster, node: usize) -> usize {
    let mut held = 0;
    for i in 0..KEYS {
        let record = cluster.nodes[node].replica_record(key(i).as_bytes()).await;
        held += usize::from(record.is_some());
    }
    held
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
    let endpoint = cluster.nodes[observer].peer.to_string();
    eventually(
        &format!("the partitions {id} refills, as node {observer} sees them"),
        Duration::from_secs(60),
        || async {
            let status = common::admin().cluster_status(&endpoint).await.ok()?;
            status
                .members
                .iter()
                .any(|m| m.node_id == id && m.alive && check(m.partitions_refilling))
                .then_some(())
        },
    )
    .await;
}

/// Keys of partitions none of the first `keys` test keys is in, each with a
/// 256-byte value: writing them makes a node flush and compact without
/// keeping the test keys' replicas from agreeing.
fn fillers(keys: usize) -> impl Iterator<Item = String> {
    let ours: BTreeSet<u32> = (0..keys)
        .map(|i| partition_of(key(i).as_bytes(), 256))
        .collect();
    (0..)
        .map(|f| format!("filler-{f:06}"))
        .filter(move |k| !ours.contains(&partition_of(k.as_bytes(), 256)))
}

/// Writes `count` fillers at W=1 through `client`.
async fn write_fillers(
    client: &mut ringkv_client::Client,
    fillers: &mut impl Iterator<Item = String>,
    count: usize,
) {
    for filler in fillers.take(count) {
        client
            .raw()
            .raw_put(put_at(&filler, &"x".repeat(256), 1))
            .await
            .expect("filler");
    }
}

/// Overwrites each of the test keys through `node` with `value` at W=2,
/// with the context of a read at R=2, so that it replaces what was read;
/// `ttl_seconds` 0 for no expiry.
async fn overwrite_each(cluster: &TestCluster, node: usize, value: &'static str, ttl_seconds: u64) {
    let mut client = cluster.nodes[node].client().await;
    for i in 0..KEYS {
        let read = client
            .raw()
            .raw_get(get_at(&key(i), 2))
            .await
            .unwrap_or_else(|status| panic!("read {} at R=2: {status}", key(i)))
            .into_inner();
        client
            .raw()
            .raw_put(RawPutRequest {
                key: Bytes::from(key(i)),
                value: Bytes::from_static(value.as_bytes()),
                context: read.context,
                ttl_seconds,
                consistency: Some(Consistency {
                    read_quorum: None,
                    write_quorum: Some(2),
                }),
            })
            .await
            .unwrap_or_else(|status| panic!("overwrite {} at W=2: {status}", key(i)));
    }
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
    let mut cluster = TestCluster::start(40, 3, &NO_REPAIR).await;
    // Node 3 holds replica data before it goes down, so it restarts as a
    // node that missed some writes, not as one that lost its disk (which
    // would refill the keys, and serve no reads until it had).
    cluster.nodes[0]
        .client()
        .await
        .raw()
        .raw_put(put_at("warm", "on every replica", 3))
        .await
        .expect("W=3 put");
    kill(&mut cluster, 2).await;
    put_each(&cluster, 0, KEYS, "acknowledged", 2).await;
    cluster.nodes[2].restart().await;
    // The reads at R=3 below go through every node: each must see node 3
    // alive again, or it does not ask it.
    cluster.wait_all_alive().await;

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
    kill(&mut cluster, 2).await;
    overwrite_each(&cluster, 0, "v2", 1).await;
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
    kill(&mut cluster, 4).await;
    let mut client = cluster.nodes[0].client().await;
    let status = client
        .raw()
        .raw_batch_put(batch_at_w3((0..BATCH).map(key), b"batched"))
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
    let mut cluster = TestCluster::start(44, 3, &["--anti-entropy-interval-secs", "1"]).await;
    // Only the first node purges tombstones after a second; the others keep
    // them for the default ten days, as replicas that have not compacted.
    cluster.nodes[0].stop().await;
    cluster.nodes[0].add_args(&["--gc-grace-secs", "1"]);
    cluster.nodes[0].restart().await;
    // Writes at W=3 through the restarted node need it to see the others.
    cluster.wait_all_alive().await;
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
    // The first node compacts until its compaction filter has purged every
    // tombstone: after the grace period, and once an anti-entropy round saw
    // all replicas agree.
    let node = &cluster.nodes[0];
    let mut compactions = 0usize;
    eventually(
        "the first node purges the tombstones",
        Duration::from_secs(60),
        || {
            compactions += 1;
            async move {
                node.compact().await;
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
        "recreate after purge: {KEYS} acknowledged puts, deletes and recreates checked at R=3; tombstones purged after {compactions} compactions"
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
    kill(&mut cluster, 2).await;
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

    // While it refills, node 3 takes writes: with node 2 down, these are
    // acknowledged by nodes 1 and 3 only.
    let mut during = cluster.nodes[0].client().await;
    for i in KEYS..2 * KEYS {
        during
            .raw()
            .raw_put(put_at(&key(i), "acknowledged", 2))
            .await
            .expect("put at W=2 while node 3 refills");
    }

    // Node 2 comes back: node 3 refills from it and serves again.
    cluster.nodes[1].restart().await;
    wait_refilling(&cluster, 0, 2, |partitions| partitions == 0).await;
    cluster.nodes[2].wait_serving().await;
    assert_eq!(
        held_by(&cluster, 2).await,
        KEYS,
        "the refill brought every key back to node 3"
    );
    let acknowledged = [Bytes::from_static(b"acknowledged")];
    assert_reads(&cluster, 2 * KEYS, 3, &acknowledged, "after the refill").await;
    println!(
        "lost disk: {KEYS} acknowledged puts refused at R=2 while their only surviving copy was down, {KEYS} more acknowledged during the refill, all {} read at R=3 on 3 nodes after it",
        2 * KEYS
    );
}

/// The tombstone purge rule against real compactions: a tombstone is purged
/// only after an anti-entropy round in which every replica of its partition
/// agreed. Deleted while a replica is down (no hints), the keys keep their
/// tombstones on the live replicas through grace periods and compactions;
/// the returning replica, which still holds the values, is then overruled,
/// and only after that are the tombstones purged, with nothing coming back.
#[tokio::test]
async fn a_tombstone_outlives_its_grace_period_while_a_replica_is_down() {
    let mut cluster = TestCluster::start(
        48,
        3,
        &[
            "--anti-entropy-interval-secs",
            "1",
            "--write-buffer-bytes",
            "65536",
            "--gc-grace-secs",
            "1",
            "--hinted-handoff",
            "false",
        ],
    )
    .await;
    put_each(&cluster, 0, KEYS, "deleted later", 3).await;
    kill(&mut cluster, 2).await;
    let mut client = cluster.nodes[0].client().await;
    for i in 0..KEYS {
        client
            .raw()
            .raw_delete(RawDeleteRequest {
                key: Bytes::from(key(i)),
                ..Default::default()
            })
            .await
            .expect("delete at W=2 with a replica down");
    }
    // Well past the grace period, with many flushes and compactions.
    let mut fillers = fillers(KEYS);
    for _ in 0..6 {
        write_fillers(&mut client, &mut fillers, 500).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for node in 0..2 {
        for i in 0..KEYS {
            let held = cluster.nodes[node].replica_record(key(i).as_bytes()).await;
            assert!(
                held.is_some_and(|r| r.deleted_since(u64::MAX).is_some()),
                "node {node} purged the tombstone of {} while a replica that holds its value was down",
                key(i)
            );
        }
    }
    cluster.nodes[2].restart().await;
    let nodes: Vec<&common::TestNode> = cluster.nodes.iter().collect();
    wait_equal_trees(&nodes, 256, Duration::from_secs(60)).await;
    assert_reads(
        &cluster,
        KEYS,
        3,
        &[],
        "once the returning replica was overruled",
    )
    .await;
    // With every replica agreeing, compactions now purge the tombstones,
    // and the keys stay deleted.
    let node = &cluster.nodes[0];
    eventually(
        "the first node purges the tombstones once all replicas agree",
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            let batch: Vec<String> = fillers.by_ref().take(500).collect();
            async move {
                write_fillers(&mut client, &mut batch.into_iter(), usize::MAX).await;
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
    assert_reads(&cluster, KEYS, 3, &[], "after the purge").await;
    println!(
        "tombstone purge rule: {KEYS} acknowledged deletes kept through grace periods and compactions with a replica down, then purged, checked at R=3"
    );
}

/// Sloppy quorum: the coordinator's own hint for a dead replica is no
/// acknowledgement. With three nodes and one down there is no fallback, so a
/// put at W=3 must fail, while W=2 succeeds and the hint reaches the
/// replica when it returns.
#[tokio::test]
async fn a_coordinators_own_hint_does_not_count_toward_w() {
    let mut cluster = TestCluster::start(49, 3, &["--anti-entropy-interval-secs", "3600"]).await;
    kill(&mut cluster, 2).await;
    let mut client = cluster.nodes[0].client().await;
    for i in 0..KEYS {
        let status = client
            .raw()
            .raw_put(put_at(&key(i), "w3", 3))
            .await
            .expect_err("W=3 with one of three replicas down and no fallback");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("2 of 3"),
            "the error counts the real copies: {}",
            status.message()
        );
    }
    put_each(&cluster, 0, KEYS, "w2", 2).await;
    cluster.nodes[2].restart().await;
    let node = &cluster.nodes[2];
    eventually(
        "the hints reach the returning replica",
        Duration::from_secs(30),
        || async {
            for i in 0..KEYS {
                let record = node.replica_record(key(i).as_bytes()).await?;
                let values = record.visible_data(ringkv_node::ConflictMode::Siblings, u64::MAX);
                values.contains(&Bytes::from_static(b"w2")).then_some(())?;
            }
            Some(())
        },
    )
    .await;
    println!(
        "sloppy quorum: {KEYS} puts at W=3 refused with 2 real copies; {KEYS} acknowledged puts at W=2 delivered by hint to the returning replica"
    );
}

/// Blind deletes, single and batched: each reads the key from R replicas
/// first, so it deletes what the cluster holds, and without R answers it
/// fails with UNAVAILABLE and deletes nothing.
#[tokio::test]
async fn blind_deletes_need_r_answers_and_batched_ones_delete_what_the_cluster_holds() {
    let mut cluster = TestCluster::start(50, 3, &NO_REPAIR).await;
    put_each(&cluster, 0, KEYS, "v1", 3).await;
    // Node 3 misses the overwrite.
    kill(&mut cluster, 2).await;
    overwrite_each(&cluster, 0, "v2", 0).await;
    let mut client = cluster.nodes[0].client().await;
    // With two replicas down, a blind delete cannot read R=2: refused.
    kill(&mut cluster, 1).await;
    let status = client
        .raw()
        .raw_delete(RawDeleteRequest {
            key: Bytes::from(key(0)),
            ..Default::default()
        })
        .await
        .expect_err("a blind delete with one replica alive");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = client
        .raw()
        .raw_batch_delete(ringkv_client::proto::RawBatchDeleteRequest {
            keys: (0..KEYS).map(|i| Bytes::from(key(i))).collect(),
            ..Default::default()
        })
        .await
        .expect_err("a blind batch delete with one replica alive");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    cluster.nodes[1].restart().await;
    cluster.nodes[2].restart().await;
    // Every node coordinates a read below: each must see the others alive.
    cluster.wait_all_alive().await;
    // Replica reads, which repair nothing: node 3 must still miss v2.
    let v2 = vec![Bytes::from_static(b"v2")];
    for i in 0..KEYS {
        for (node, want) in [(0, v2.clone()), (2, vec![Bytes::from_static(b"v1")])] {
            let held = cluster.nodes[node]
                .replica_record(key(i).as_bytes())
                .await
                .map(|r| r.visible_data(ringkv_node::ConflictMode::Siblings, 0))
                .unwrap_or_default();
            assert_eq!(
                held,
                want,
                "node {node}'s copy of {} after refused deletes",
                key(i)
            );
        }
    }
    // Through the replica that missed v2, one blind batch deletes every key:
    // what R replicas hold, v2 included.
    cluster.nodes[2]
        .client()
        .await
        .raw()
        .raw_batch_delete(ringkv_client::proto::RawBatchDeleteRequest {
            keys: (0..KEYS).map(|i| Bytes::from(key(i))).collect(),
            ..Default::default()
        })
        .await
        .expect("a blind batch delete through the lagging replica");
    assert_reads(&cluster, KEYS, 3, &[], "after an acknowledged batch delete").await;
    println!(
        "blind deletes: {} refused below R deleted nothing; {KEYS} acknowledged batched deletes checked at R=3",
        KEYS + 1
    );
}

/// Scans merge every counted replica's copy: a key deleted while a replica
/// was down stays hidden although that replica still holds its value, and
/// pages continue past tombstones until `limit` visible pairs are found.
#[tokio::test]
async fn scans_hide_deleted_keys_that_a_stale_replica_holds_and_page_past_tombstones() {
    const SCANNED: usize = 60;
    let mut cluster = TestCluster::start(51, 3, &NO_REPAIR).await;
    put_each(&cluster, 0, SCANNED, "scanned", 3).await;
    kill(&mut cluster, 2).await;
    // The first 50 keys are deleted while node 3 is down.
    let mut client = cluster.nodes[0].client().await;
    for i in 0..50 {
        client
            .raw()
            .raw_delete(RawDeleteRequest {
                key: Bytes::from(key(i)),
                ..Default::default()
            })
            .await
            .expect("delete at W=2");
    }
    cluster.nodes[2].restart().await;
    cluster.wait_all_alive().await;
    for i in 0..50 {
        assert!(
            cluster.nodes[2]
                .replica_record(key(i).as_bytes())
                .await
                .is_some_and(|r| r.deleted_since(u64::MAX).is_none()),
            "node 3 still holds the value of {}, as the test needs",
            key(i)
        );
    }
    let scan = |limit: u32, r: u32| ringkv_client::proto::RawScanRequest {
        start_key: Bytes::from_static(b"key-"),
        end_key: Bytes::from_static(b"key."),
        limit,
        consistency: Some(Consistency {
            read_quorum: Some(r),
            write_quorum: None,
        }),
        ..Default::default()
    };
    let expected: Vec<String> = (50..SCANNED).map(key).collect();
    for (limit, r) in [(5, 3), (5, 2), (100, 3)] {
        let found: Vec<String> = client
            .raw()
            .raw_scan(scan(limit, r))
            .await
            .expect("scan")
            .into_inner()
            .kvs
            .iter()
            .map(|p| String::from_utf8_lossy(&p.key).into_owned())
            .collect();
        let want = &expected[..expected.len().min(limit as usize)];
        assert_eq!(found, want, "scan limit {limit} at R={r}");
    }
    println!(
        "scans: 50 acknowledged deletes hidden from scans at R=2 and R=3 while a stale replica holds the values; {} acknowledged puts found past the tombstones",
        SCANNED - 50
    );
}

/// A joining node streams each partition it receives from every live owner,
/// not from one (CASSANDRA-2434): a write acknowledged at W=2 may be missing
/// on any single owner. The keys here were acknowledged while node 3 was
/// down and never repaired, so a receiver that streamed from node 3 alone
/// would miss them.
#[tokio::test]
async fn a_joining_node_receives_every_acknowledged_write_of_its_partitions() {
    const JOINED: usize = 200;
    let mut cluster = TestCluster::start(52, 3, &NO_REPAIR).await;
    kill(&mut cluster, 2).await;
    put_each(&cluster, 0, JOINED, "before the join", 2).await;
    cluster.nodes[2].restart().await;
    cluster.wait_alive(0, 2, true).await;
    let fourth = cluster.spawn_joining(52, 4, &NO_REPAIR);
    let members: Vec<&common::TestNode> = cluster.nodes.iter().chain([&fourth]).collect();
    common::wait_stable(&cluster.nodes[0], &members, Duration::from_secs(120)).await;

    let state = cluster.nodes[0].ring_state().await;
    let joined = fourth.node_id();
    let mut received = 0;
    for i in 0..JOINED {
        let partition = state.current.partition_for_key(key(i).as_bytes());
        let owners = state.current.preference_list(partition).expect("owners");
        if owners.contains(&joined.as_str()) {
            assert!(
                fourth.replica_record(key(i).as_bytes()).await.is_some(),
                "the joining node owns {} but did not receive it",
                key(i)
            );
            received += 1;
        }
    }
    assert!(received > 0, "the joining node received some partitions");
    cluster.nodes.push(fourth);
    let acknowledged = [Bytes::from_static(b"before the join")];
    assert_reads(&cluster, JOINED, 2, &acknowledged, "after the join").await;
    println!(
        "join: {received} acknowledged puts of the joining node's partitions held by it; all {JOINED} read at R=2 through each of 4 nodes"
    );
}

/// Sloppy quorum with a fallback: on four nodes (N=3) a write whose replica
/// is down is kept by a fallback node as a hint, which counts toward W. The
/// hints survive restarts of every node that keeps them, and reach the
/// replica when it returns, with neither reads nor anti-entropy to help.
#[tokio::test]
async fn a_fallbacks_hint_counts_toward_w_survives_restarts_and_is_delivered() {
    const HINTED: usize = 60;
    let mut cluster = TestCluster::start(
        53,
        4,
        &[
            "--anti-entropy-interval-secs",
            "3600",
            "--gossip-settle-ms",
            "2000",
        ],
    )
    .await;
    kill(&mut cluster, 3).await;
    put_each(&cluster, 0, HINTED, "hinted", 3).await;
    for node in 0..3 {
        cluster.nodes[node].stop().await;
        cluster.nodes[node].restart().await;
    }
    cluster.nodes[3].restart().await;
    cluster.wait_refilled().await;
    let state = cluster.nodes[0].ring_state().await;
    let returning = cluster.nodes[3].node_id();
    let owned: Vec<usize> = (0..HINTED)
        .filter(|i| {
            let partition = state.current.partition_for_key(key(*i).as_bytes());
            state
                .current
                .preference_list(partition)
                .is_ok_and(|owners| owners.contains(&returning.as_str()))
        })
        .collect();
    assert!(!owned.is_empty(), "the dead node owns some of the keys");
    let node = &cluster.nodes[3];
    eventually(
        "the hints reach the returning replica",
        Duration::from_secs(60),
        || async {
            for &i in &owned {
                node.replica_record(key(i).as_bytes()).await?;
            }
            Some(())
        },
    )
    .await;
    assert_reads(
        &cluster,
        HINTED,
        3,
        &[Bytes::from_static(b"hinted")],
        "after hinted handoff",
    )
    .await;
    println!(
        "fallback hints: {HINTED} puts acknowledged at W=3 with a replica down, {} of them delivered by hint after restarts of the nodes that kept them, all read at R=3",
        owned.len()
    );
}

/// A hint older than `--hint-max-age-secs` is dropped, not delivered, and
/// counted in `ringkv_hints_dropped_total`; the write it carried is still
/// read from the replicas that acknowledged it.
#[tokio::test]
async fn hints_past_their_maximum_age_are_dropped_and_counted() {
    let args = [
        "--hint-max-age-secs",
        "1",
        "--anti-entropy-interval-secs",
        "3600",
    ];
    let mut cluster = TestCluster::start(57, 3, &args).await;
    kill(&mut cluster, 2).await;
    put_each(&cluster, 0, KEYS, "aged", 2).await;
    let coordinator = &cluster.nodes[0];
    let dropped = eventually(
        "the coordinator drops its hints once they are a second old",
        Duration::from_secs(30),
        || async {
            let dropped = coordinator.metric("ringkv_hints_dropped_total").await?;
            (dropped >= KEYS as f64).then_some(dropped)
        },
    )
    .await;
    cluster.nodes[2].restart().await;
    // Hand-off runs every 500 ms: give it a few rounds to deliver anything
    // it had kept, then check that nothing arrived.
    cluster.wait_alive(0, 2, true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        held_by(&cluster, 2).await,
        0,
        "a dropped hint was delivered"
    );
    let delivered = cluster.nodes[0]
        .metric("ringkv_hints_delivered_total")
        .await
        .unwrap_or(0.0);
    assert_eq!(delivered, 0.0, "no hint was delivered");
    assert_reads(
        &cluster,
        KEYS,
        2,
        &[Bytes::from_static(b"aged")],
        "hints dropped",
    )
    .await;
    println!("{dropped} hints dropped past their maximum age; {KEYS} acknowledged writes still read at R=2");
}

/// Readiness waits for the refill: a node restarted with an empty data dir
/// reports RawKV NOT_SERVING while it refills, also once it sees every
/// peer alive, and SERVING once the refill is over, long before
/// `--gossip-settle-ms` would have let it serve anyway. The streams are
/// throttled so that the refill lasts a while.
#[tokio::test]
async fn a_refilling_node_is_ready_only_once_refilled() {
    const ROWS: usize = 2000;
    let args = [
        "--handoff-bytes-per-sec",
        "262144",
        "--gossip-settle-ms",
        "120000",
        "--anti-entropy-interval-secs",
        "3600",
    ];
    let mut cluster = TestCluster::start(62, 3, &args).await;
    let mut client = cluster.nodes[0].client().await;
    let rows: Vec<String> = (0..ROWS).map(|i| format!("row-{i:05}")).collect();
    for chunk in rows.chunks(200) {
        client
            .raw()
            .raw_batch_put(batch_at_w3(chunk.iter().cloned(), &[b'r'; 1024]))
            .await
            .expect("rows at W=3");
    }
    cluster.nodes[2].kill9();
    cluster.nodes[2].wipe();
    cluster.nodes[2].respawn();
    let started = std::time::Instant::now();
    let wiped = cluster.nodes[2].peer.to_string();
    let id = cluster.nodes[2].node_id();
    eventually(
        "the wiped node sees both peers alive while it refills",
        Duration::from_secs(30),
        || {
            let (wiped, id) = (wiped.clone(), id.clone());
            async move {
                let status = common::admin().cluster_status(&wiped).await.ok()?;
                let all_alive = status.members.iter().filter(|m| m.alive).count() == 3;
                let refilling = status
                    .members
                    .iter()
                    .find(|m| m.node_id == id)?
                    .partitions_refilling;
                (all_alive && refilling > 0).then_some(())
            }
        },
    )
    .await;
    assert!(
        matches!(
            ringkv_client::Connector::plaintext()
                .is_serving(&cluster.nodes[2].grpc.to_string())
                .await,
            Ok(false)
        ),
        "not ready while it refills, though every peer is alive"
    );
    cluster.nodes[2].wait_serving().await;
    // Its own count reaches gossip on the next round.
    eventually(
        "the ready node reports its refill over",
        Duration::from_secs(5),
        || {
            let (wiped, id) = (wiped.clone(), id.clone());
            async move {
                let status = common::admin().cluster_status(&wiped).await.ok()?;
                let me = status.members.iter().find(|m| m.node_id == id)?;
                (me.partitions_refilling == 0).then_some(())
            }
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "ready because the refill ended, not because the settle limit passed"
    );
    println!(
        "a wiped node refilled {ROWS} rows at 256 KiB/s per stream and reported SERVING after {:?}",
        started.elapsed()
    );
}

/// A context the cluster sealed, whose timestamp lies more than
/// `--max-clock-offset-ms` ahead of the node's clock (a node whose clock
/// runs ahead issued it), is refused with UNAVAILABLE before anything is
/// written, and the node's clock does not jump to it.
#[tokio::test]
async fn a_context_from_a_clock_ahead_is_refused_with_unavailable() {
    use ringkv_node::{CausalContext, ContextSeal, Hlc};
    let node = common::TestNode::start(
        std::net::Ipv4Addr::new(127, 0, 64, 1),
        &["--cluster-secret", "s3cret"],
    )
    .await;
    let mut client = node.client().await;
    client.put(b"ahead", b"before").await.expect("put");
    let token = client
        .raw()
        .raw_get(get_at("ahead", 1))
        .await
        .expect("get")
        .into_inner()
        .context;
    // The context's HLC is the fixed64 at the end of its body, before the
    // 32-byte seal. Move it ten seconds ahead and seal it again, as a node
    // of this cluster whose clock runs ahead would have.
    let mut body = token[..token.len() - 32].to_vec();
    let now_ms = ringkv_node::now_millis();
    let at = body.len() - 8;
    body[at..].copy_from_slice(&Hlc::new(now_ms + 10_000, 0).as_raw().to_le_bytes());
    let context = CausalContext::from_bytes(&body).expect("a context");
    let sealed = ContextSeal::new(b"s3cret").seal(b"ahead", &context);
    let status = client
        .raw()
        .raw_put(RawPutRequest {
            key: Bytes::from_static(b"ahead"),
            value: Bytes::from_static(b"from the future"),
            context: sealed,
            ..Default::default()
        })
        .await
        .expect_err("a timestamp ten seconds ahead");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("ahead of this node's clock")
            && status.message().contains("--max-clock-offset-ms (500)"),
        "{status:?}"
    );
    assert_eq!(
        common::value_of(&mut client, b"ahead").await.as_deref(),
        Some(&b"before"[..]),
        "nothing was written"
    );
    // A write after the refusal is stamped by the node's own clock.
    client.put(b"after", b"now").await.expect("put");
    let fresh = client
        .raw()
        .raw_get(get_at("after", 1))
        .await
        .expect("get")
        .into_inner()
        .context;
    let fresh = ContextSeal::new(b"s3cret")
        .open(b"after", &fresh)
        .expect("a context this cluster sealed");
    assert!(
        fresh.max_hlc().physical_ms() < now_ms + 5_000,
        "the node's clock did not adopt the future timestamp"
    );
}

/// Writes 1 KiB under each of `keys` at W=3, through node 1: bulk that
/// holds a throttled stream back.
async fn put_filler(cluster: &TestCluster, keys: &[String]) {
    let mut writer = cluster.nodes[0].client().await;
    for chunk in keys.chunks(200) {
        writer
            .raw()
            .raw_batch_put(batch_at_w3(chunk.iter().cloned(), &[7; 1024]))
            .await
            .expect("filler at W=3");
    }
}

/// A refilling replica's answers count toward no read quorum, but a read
/// still repairs it: a key it lacks and a counted replica holds is written
/// back to it by the read, well before its refill would bring it. The
/// refill is held back by a slow stream (1 KB/s per source, behind more
/// than 1 MiB of filler that sorts before the keys), and anti-entropy is
/// off, so only the reads can have brought the keys.
#[tokio::test]
async fn a_read_repairs_a_refilling_replica() {
    let mut args = NO_REPAIR.to_vec();
    args.extend(["--handoff-bytes-per-sec", "1000"]);
    let mut cluster = TestCluster::start(79, 3, &args).await;
    let filler: Vec<String> = (0..1_500).map(|i| format!("a-filler-{i:05}")).collect();
    put_filler(&cluster, &filler).await;
    put_each(&cluster, 0, KEYS, "acknowledged", 3).await;
    cluster.nodes[2].kill9();
    cluster.nodes[2].wipe();
    cluster.nodes[2].respawn();
    cluster.wait_alive(0, 2, true).await;
    wait_refilling(&cluster, 0, 2, |partitions| partitions > 0).await;
    assert_eq!(
        held_by(&cluster, 2).await,
        0,
        "the refill has not reached the keys"
    );

    let mut reader = cluster.nodes[0].client().await;
    for i in 0..KEYS {
        let value = reader
            .raw()
            .raw_get(get_at(&key(i), 1))
            .await
            .expect("a read at R=1 with two counted replicas")
            .into_inner()
            .value;
        assert_eq!(value, Bytes::from_static(b"acknowledged"), "{}", key(i));
    }
    eventually(
        "every key read is repaired onto the refilling node",
        Duration::from_secs(30),
        || async { (held_by(&cluster, 2).await == KEYS).then_some(()) },
    )
    .await;
    wait_refilling(&cluster, 0, 2, |partitions| partitions > 0).await;
    println!(
        "{KEYS} acknowledged writes read at R=1 and repaired onto a replica that still refills"
    );
}

/// A partition that a refilling node receives in a ring transition counts
/// at once: what it received holds what the owner giving it up held and
/// what the live owners held, while a refill would wait for every other
/// owner, dead ones included. Node 3 loses its data; its refill cannot end,
/// because node 2 streams it more than 1 MiB of filler at 1 kB/s (the
/// partitions it receives hold no filler, so those streams are quick).
/// Node 4 leaves, and node 3 receives the partitions node 4 gives up. Then
/// node 2 dies: reads at R=2 of keys in the received partitions, whose
/// only other live owner is node 1, need node 3's answer to count.
#[tokio::test]
async fn a_partition_received_while_refilling_counts_at_once() {
    const WRITTEN: usize = 200;
    let mut cluster = TestCluster::start(81, 4, &NO_REPAIR).await;
    cluster.nodes[1].stop().await;
    cluster.nodes[1].set_arg("--handoff-bytes-per-sec", "1000");
    cluster.nodes[1].restart().await;
    // Node 0 passes each write to an owner that coordinates it, so every
    // node must see node 1 back before a W=3 write can count on it.
    for observer in 0..4 {
        cluster.wait_alive(observer, 1, true).await;
    }
    put_each(&cluster, 0, WRITTEN, "acknowledged", 3).await;

    let before = cluster.nodes[0].ring_state().await;
    let (slow, refilling) = (cluster.nodes[1].node_id(), cluster.nodes[2].node_id());
    let owners = common::owners_of;
    let filler: Vec<String> = (0..10_000)
        .map(|i| format!("a-filler-{i:05}"))
        .filter(|k| {
            let owners = owners(&before, k);
            owners.contains(&slow) && owners.contains(&refilling)
        })
        .take(1_200)
        .collect();
    put_filler(&cluster, &filler).await;

    cluster.nodes[2].kill9();
    cluster.nodes[2].wipe();
    cluster.nodes[2].respawn();
    cluster.wait_alive(0, 2, true).await;
    wait_refilling(&cluster, 0, 2, |partitions| partitions > 0).await;
    common::admin()
        .decommission(
            &cluster.nodes[0].peer.to_string(),
            &cluster.nodes[3].node_id(),
        )
        .await
        .expect("decommission accepted");
    common::wait_left(
        &cluster.nodes[0],
        &cluster.nodes[3],
        Duration::from_secs(120),
    )
    .await;
    let after = cluster.nodes[0].ring_state().await;
    kill(&mut cluster, 1).await;
    wait_refilling(&cluster, 0, 2, |partitions| partitions > 0).await;

    let received: Vec<String> = (0..WRITTEN)
        .map(key)
        .filter(|k| {
            !owners(&before, k).contains(&refilling) && owners(&after, k).contains(&refilling)
        })
        .collect();
    assert!(!received.is_empty(), "node 3 received none of the keys");
    let mut reader = cluster.nodes[0].client().await;
    for k in &received {
        let value = reader
            .raw()
            .raw_get(get_at(k, 2))
            .await
            .unwrap_or_else(|s| panic!("{k} at R=2, counting the received partition: {s:?}"))
            .into_inner()
            .value;
        assert_eq!(value, Bytes::from_static(b"acknowledged"), "{k}");
    }
    println!(
        "{} acknowledged writes in received partitions read at R=2 through a node that still refills its own",
        received.len()
    );
}
