//! Every invalid request gets its status code and a message naming the
//! limit, and the node keeps serving afterwards.

mod common;

use std::net::Ipv4Addr;

use bytes::Bytes;
use common::TestNode;
use ringkv_client::proto::{
    Consistency, KvPair, RawBatchDeleteRequest, RawBatchGetRequest, RawBatchPutRequest,
    RawDeleteRequest, RawGetRequest, RawPutRequest, RawScanRequest,
};
use tonic::Code;

fn assert_status<T: std::fmt::Debug>(
    case: &str,
    result: Result<T, tonic::Status>,
    code: Code,
    needle: &str,
) {
    let status = result.expect_err(case);
    assert_eq!(status.code(), code, "{case}: {status:?}");
    assert!(
        status.message().contains(needle),
        "{case}: message {:?} should name {needle:?}",
        status.message()
    );
    println!("{case}: {:?} {:?}", status.code(), status.message());
}

/// A pair of value "v" for each key.
fn pairs(keys: impl IntoIterator<Item = Bytes>) -> Vec<KvPair> {
    keys.into_iter()
        .map(|key| KvPair {
            key,
            value: "v".into(),
            ..Default::default()
        })
        .collect()
}

#[tokio::test]
async fn invalid_requests_get_their_codes_and_messages() {
    let node = TestNode::start(Ipv4Addr::new(127, 0, 3, 1), &[]).await;
    let mut client = node.client().await;
    let raw = client.raw();
    let big_key = Bytes::from(vec![b'k'; 4097]);
    let big_value = Bytes::from(vec![b'v'; (8 << 20) + 1]);

    assert_status(
        "empty key on get",
        raw.raw_get(RawGetRequest::default()).await,
        Code::InvalidArgument,
        "empty",
    );
    assert_status(
        "empty key on put",
        raw.raw_put(RawPutRequest::default()).await,
        Code::InvalidArgument,
        "empty",
    );
    assert_status(
        "empty key on delete",
        raw.raw_delete(RawDeleteRequest::default()).await,
        Code::InvalidArgument,
        "empty",
    );
    assert_status(
        "key over 4 KiB",
        raw.raw_put(RawPutRequest {
            key: big_key.clone(),
            value: "v".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "limit of 4096 bytes",
    );
    assert_status(
        "value over 8 MiB",
        raw.raw_put(RawPutRequest {
            key: "k".into(),
            value: big_value,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "limit of 8388608 bytes (--max-value-bytes)",
    );
    let too_many: Vec<Bytes> = (0..1025).map(|i| Bytes::from(format!("k{i}"))).collect();
    assert_status(
        "batch get over its maximum",
        raw.raw_batch_get(RawBatchGetRequest {
            keys: too_many.clone(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "limit of 1024 keys (--max-batch-keys)",
    );
    assert_status(
        "batch put over its maximum",
        raw.raw_batch_put(RawBatchPutRequest {
            pairs: pairs(too_many.iter().cloned()),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "--max-batch-keys",
    );
    assert_status(
        "batch delete over its maximum",
        raw.raw_batch_delete(RawBatchDeleteRequest {
            keys: too_many,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "--max-batch-keys",
    );
    assert_status(
        "a key twice in one batch",
        raw.raw_batch_delete(RawBatchDeleteRequest {
            keys: vec!["twice".into(), "once".into(), "twice".into()],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        r#"key b"twice" appears more than once in the batch; a batch names each key once"#,
    );
    assert_status(
        "a key twice in one batch put",
        raw.raw_batch_put(RawBatchPutRequest {
            pairs: pairs(["twice", "once", "twice"].map(Bytes::from)),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        r#"key b"twice" appears more than once in the batch; a batch names each key once"#,
    );
    // Each quorum a request sets is checked against N (1 here), whether
    // or not its RPC uses it.
    for (field, r, w) in [
        ("read_quorum 0 is outside 1..=1", Some(0), None),
        ("read_quorum 2 is outside 1..=1", Some(2), None),
        ("write_quorum 0 is outside 1..=1", None, Some(0)),
        ("write_quorum 2 is outside 1..=1", None, Some(2)),
    ] {
        let consistency = Some(Consistency {
            read_quorum: r,
            write_quorum: w,
        });
        let key = Bytes::from_static(b"quorum");
        let refused = [
            (
                "RawGet",
                raw.raw_get(RawGetRequest {
                    key: key.clone(),
                    consistency,
                })
                .await
                .map(drop),
            ),
            (
                "RawPut",
                raw.raw_put(RawPutRequest {
                    key: key.clone(),
                    value: "v".into(),
                    consistency,
                    ..Default::default()
                })
                .await
                .map(drop),
            ),
            (
                "RawDelete",
                raw.raw_delete(RawDeleteRequest {
                    key: key.clone(),
                    consistency,
                    ..Default::default()
                })
                .await
                .map(drop),
            ),
            (
                "RawScan",
                raw.raw_scan(RawScanRequest {
                    consistency,
                    ..Default::default()
                })
                .await
                .map(drop),
            ),
            (
                "RawBatchGet",
                raw.raw_batch_get(RawBatchGetRequest {
                    keys: vec![key.clone()],
                    consistency,
                })
                .await
                .map(drop),
            ),
            (
                "RawBatchPut",
                raw.raw_batch_put(RawBatchPutRequest {
                    pairs: pairs([key.clone()]),
                    consistency,
                    ttl_seconds: 0,
                })
                .await
                .map(drop),
            ),
            (
                "RawBatchDelete",
                raw.raw_batch_delete(RawBatchDeleteRequest {
                    keys: vec![key],
                    consistency,
                })
                .await
                .map(drop),
            ),
        ];
        for (rpc, result) in refused {
            assert_status(
                &format!("{rpc}: {field}"),
                result,
                Code::InvalidArgument,
                field,
            );
        }
    }
    raw.raw_delete(RawDeleteRequest {
        key: "never-written".into(),
        ..Default::default()
    })
    .await
    .expect("deleting a missing key succeeds");
    assert_status(
        "empty batch",
        raw.raw_batch_put(RawBatchPutRequest::default()).await,
        Code::InvalidArgument,
        "batch is empty",
    );
    assert_status(
        "empty batch get",
        raw.raw_batch_get(RawBatchGetRequest::default()).await,
        Code::InvalidArgument,
        "batch is empty",
    );
    assert_status(
        "empty batch delete",
        raw.raw_batch_delete(RawBatchDeleteRequest::default()).await,
        Code::InvalidArgument,
        "batch is empty",
    );
    assert_status(
        "scan with start after end",
        raw.raw_scan(RawScanRequest {
            start_key: "b".into(),
            end_key: "a".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "after its end",
    );
    assert_status(
        "missing key",
        raw.raw_get(RawGetRequest {
            key: "never-written".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "not found",
    );

    // Nothing was lost or half-written by the refused requests.
    let scan = raw
        .raw_scan(RawScanRequest::default())
        .await
        .expect("scan")
        .into_inner();
    assert!(scan.kvs.is_empty(), "refused writes stored nothing");
    client.put(b"after", b"still serving").await.expect("put");
    assert_eq!(
        common::value_of(&mut client, b"after").await.as_deref(),
        Some(&b"still serving"[..])
    );
    // A batch get leaves missing keys out, as api.md says, rather than
    // failing or answering empty values for them.
    let found = client
        .raw()
        .raw_batch_get(RawBatchGetRequest {
            keys: vec!["never-written".into(), "after".into()],
            ..Default::default()
        })
        .await
        .expect("batch get")
        .into_inner();
    let keys: Vec<&[u8]> = found.pairs.iter().map(|kv| kv.key.as_ref()).collect();
    assert_eq!(keys, vec![&b"after"[..]], "only the key that exists");
}

#[tokio::test]
async fn a_100_mib_request_is_refused_within_a_memory_bound() {
    // The node refuses requests over --max-request-bytes (16 MiB) from their
    // length prefix, so one request may not grow it by more than this.
    const RSS_BOUND: u64 = 48 << 20;
    let node = TestNode::start(Ipv4Addr::new(127, 0, 3, 2), &[]).await;
    let mut client = node.client().await;
    client.put(b"before", b"v").await.expect("warm up");
    let rss_before = node.rss_bytes();

    let huge = Bytes::from(vec![b'x'; 100 << 20]);
    let status = client
        .raw()
        .raw_put(RawPutRequest {
            key: "huge".into(),
            value: huge,
            ..Default::default()
        })
        .await
        .expect_err("100 MiB request refused");
    let rss_after = node.rss_bytes();
    println!(
        "100 MiB request: {:?} {:?}; node RSS {} MiB -> {} MiB (bound +{} MiB)",
        status.code(),
        status.message(),
        rss_before >> 20,
        rss_after >> 20,
        RSS_BOUND >> 20
    );
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status
            .message()
            .contains("decoded message length too large: found"),
        "{status:?}"
    );
    assert!(
        rss_after < rss_before + RSS_BOUND,
        "RSS grew from {rss_before} to {rss_after}"
    );

    let mut fresh = node.client().await;
    assert_eq!(
        fresh.get(b"huge").await.expect("get"),
        None,
        "nothing stored"
    );
    fresh
        .put(b"after", b"ok")
        .await
        .expect("node keeps serving");
    assert_eq!(
        common::value_of(&mut fresh, b"before").await.as_deref(),
        Some(&b"v"[..])
    );
}

/// A record that no longer decodes (on-disk corruption) fails what needs
/// it and spares the rest: a write of the key fails with INTERNAL naming
/// the unreadable record; a read counts this replica as failed, so with no
/// other replica it fails with UNAVAILABLE; other keys are served and the
/// node keeps running.
#[tokio::test]
async fn a_corrupt_record_fails_its_key_and_spares_the_others() {
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("db");
    let mut node = TestNode::start_in(Ipv4Addr::new(127, 0, 63, 1), &data_dir, &[]).await;
    let mut client = node.client().await;
    client.put(b"corrupt", b"v").await.expect("put");
    client.put(b"sound", b"v").await.expect("put");
    corrupt(&mut node, b"corrupt").await;
    let mut client = node.client().await;
    let write = client
        .raw()
        .raw_put(RawPutRequest {
            key: Bytes::from_static(b"corrupt"),
            value: Bytes::from_static(b"new"),
            ..Default::default()
        })
        .await
        .expect_err("a write over an unreadable record");
    assert_eq!(write.code(), Code::Internal, "{write:?}");
    assert!(
        write.message().contains("stored record is unreadable"),
        "{write:?}"
    );
    let read = client
        .raw()
        .raw_get(RawGetRequest {
            key: Bytes::from_static(b"corrupt"),
            consistency: None,
        })
        .await
        .expect_err("a read of an unreadable record");
    assert_eq!(read.code(), Code::Unavailable, "{read:?}");
    assert!(
        read.message().contains("read quorum not met: 0 of 1"),
        "{read:?}"
    );
    assert_eq!(
        client
            .get(b"sound")
            .await
            .expect("other keys served")
            .map(|found| found.value)
            .as_deref(),
        Some(&b"v"[..])
    );
    assert!(node.is_running(), "the process keeps running");
    println!(
        "corrupt record: write {:?} {:?}; read {:?} {:?}",
        write.code(),
        write.message(),
        read.code(),
        read.message()
    );
}

/// Stops `node`, overwrites its record of `key` with garbage, as a failing
/// disk would, and starts it again.
async fn corrupt(node: &mut TestNode, key: &'static [u8]) {
    use ringkv_node::{Modify, RocksStorage, RocksStorageOptions, Storage};
    node.stop().await;
    {
        let storage = RocksStorage::open(
            &node.data_dir,
            &node.node_id(),
            &RocksStorageOptions::default(),
        )
        .expect("open the stopped node's data dir");
        storage
            .write(vec![Modify::Put {
                key: Bytes::from_static(key),
                value: Bytes::from_static(b"\xff\xfe not a record"),
                expires_at_ms: None,
            }])
            .expect("overwrite the record with garbage");
    }
    node.restart().await;
}

/// With other replicas, a corrupt record costs its replica's answer and
/// nothing else: a read through that very node still meets R=2 from the
/// other two, and fails only when it needs all three.
#[tokio::test]
async fn a_corrupt_replica_is_outvoted_by_the_other_replicas() {
    let mut cluster = common::TestCluster::start(71, 3, &[]).await;
    cluster.nodes[0]
        .client()
        .await
        .raw()
        .raw_put(common::put_at("corrupt", "v", 3))
        .await
        .expect("W=3 put");
    corrupt(&mut cluster.nodes[2], b"corrupt").await;
    cluster.wait_alive(0, 2, true).await;
    let mut client = cluster.nodes[2].client().await;
    let read = client
        .raw()
        .raw_get(common::get_at("corrupt", 2))
        .await
        .expect("R=2 through the node with the corrupt replica");
    assert_eq!(read.into_inner().value, "v".as_bytes());
    let short = client
        .raw()
        .raw_get(common::get_at("corrupt", 3))
        .await
        .expect_err("R=3 counts the corrupt replica as failed");
    assert_eq!(short.code(), Code::Unavailable, "{short:?}");
    assert!(short.message().contains("2 of 3"), "{short:?}");
    println!(
        "a corrupt replica: R=2 read served by the others; R=3 {}",
        short.message()
    );
}

/// Row 8 of the hardening issue: three blind 7 MiB puts to one key used to
/// make a 21 MiB record that no peer would take ("write quorum not met: 1
/// of 2" with every replica up), left on its coordinator with a hint that
/// could never be delivered. Now the put that would pass
/// `--max-record-bytes` (or `--max-siblings`) is refused with
/// FAILED_PRECONDITION before it is applied anywhere, every replica keeps
/// exactly what was acknowledged, and a put with the context read replaces
/// the siblings.
#[tokio::test]
async fn a_put_past_the_record_bound_is_refused_before_it_is_applied() {
    let cluster = common::TestCluster::start(82, 3, &["--max-siblings", "4"]).await;
    let mut client = cluster.nodes[0].client().await;
    let all = Some(Consistency {
        read_quorum: Some(3),
        write_quorum: Some(3),
    });
    let put = |key: &'static str, value: Bytes, context: Bytes| RawPutRequest {
        key: key.into(),
        value,
        context,
        consistency: all,
        ..Default::default()
    };
    let big = |tag: u8| Bytes::from(vec![tag; 7 << 20]);
    let held = |record: Option<ringkv_node::Siblings>| -> Vec<u8> {
        let record = record.expect("every replica holds the key");
        let mut tags: Vec<u8> = record
            .live_values()
            .iter()
            .filter_map(|v| v.data.as_ref().map(|d| d[0]))
            .collect();
        tags.sort();
        tags
    };
    let mut acknowledged = 0;

    // Bytes: two 7 MiB siblings fit in 16 MiB, a third does not.
    for tag in [b'a', b'b'] {
        client
            .raw()
            .raw_put(put("large", big(tag), Bytes::new()))
            .await
            .expect("a sibling within the bound");
        acknowledged += 1;
    }
    assert_status(
        "a third 7 MiB sibling",
        client
            .raw()
            .raw_put(put("large", big(b'c'), Bytes::new()))
            .await,
        Code::FailedPrecondition,
        "over the limit of 16777216 bytes (--max-record-bytes)",
    );
    for node in &cluster.nodes {
        assert_eq!(held(node.replica_record(b"large").await), b"ab");
    }
    let read = client
        .raw()
        .raw_get(RawGetRequest {
            key: "large".into(),
            consistency: all,
        })
        .await
        .expect("the siblings read back")
        .into_inner();
    assert_eq!(read.siblings.len(), 2);
    client
        .raw()
        .raw_put(put("large", big(b'd'), read.context))
        .await
        .expect("a put with the context read replaces both siblings");
    acknowledged += 1;
    for node in &cluster.nodes {
        assert_eq!(held(node.replica_record(b"large").await), b"d");
    }

    // Count: four small siblings fit --max-siblings 4, a fifth does not,
    // in a batch too, where the batch's other key still lands.
    for tag in [b'1', b'2', b'3', b'4'] {
        client
            .raw()
            .raw_put(put("crowded", Bytes::from(vec![tag]), Bytes::new()))
            .await
            .expect("a sibling within the count");
        acknowledged += 1;
    }
    let batch = RawBatchPutRequest {
        pairs: vec![
            KvPair {
                key: "crowded".into(),
                value: "5".into(),
                ..Default::default()
            },
            KvPair {
                key: "beside".into(),
                value: "b".into(),
                ..Default::default()
            },
        ],
        consistency: all,
        ..Default::default()
    };
    assert_status(
        "a fifth sibling, in a batch",
        client.raw().raw_batch_put(batch).await,
        Code::FailedPrecondition,
        "over the limit of 4 (--max-siblings)",
    );
    acknowledged += 1; // "beside", which the error does not name
    for node in &cluster.nodes {
        assert_eq!(held(node.replica_record(b"crowded").await), b"1234");
        assert_eq!(held(node.replica_record(b"beside").await), b"b");
    }
    let peak = cluster.nodes.iter().map(|n| n.peak_rss_bytes()).max();
    println!(
        "record bound: {acknowledged} acknowledged puts checked on all 3 replicas; 2 refused puts left nothing behind; peak RSS of a node {} MiB",
        peak.unwrap_or(0) >> 20
    );
}

/// Row 10 of the hardening issue: a record a peer cannot decode is bad
/// input, not a failure of this node: `Replica.Apply` and
/// `Replica.ApplyBatch` answer INVALID_ARGUMENT (it was INTERNAL), store
/// nothing of the request, and the node keeps serving.
#[tokio::test]
async fn a_garbage_record_from_a_peer_is_invalid_argument() {
    let node = TestNode::start(Ipv4Addr::new(127, 0, 83, 1), &[]).await;
    let mut client = node.client().await;
    client.put(b"fine", b"v").await.expect("put");
    assert_status(
        "garbage in Replica.Apply",
        node.replica_apply(
            b"garbage",
            Bytes::from_static(b"\xffnot a record"),
            None,
            &[],
        )
        .await,
        Code::InvalidArgument,
        "record from a peer is unreadable",
    );
    let batch = ringkv_client::proto::ReplicaApplyBatchRequest {
        records: vec![
            ringkv_client::proto::ReplicaRecord {
                key: "fine".into(),
                record: node.replica_bytes(b"fine").await,
            },
            ringkv_client::proto::ReplicaRecord {
                key: "garbage".into(),
                record: Bytes::from_static(b"\x00\x01\x02"),
            },
        ],
    };
    assert_status(
        "garbage in Replica.ApplyBatch",
        node.replica_client().await.apply_batch(batch).await,
        Code::InvalidArgument,
        "record from a peer is unreadable",
    );
    assert!(node.replica_record(b"garbage").await.is_none());
    client.put(b"after", b"served").await.expect("put after");
    assert_eq!(
        common::value_of(&mut client, b"after").await.as_deref(),
        Some(&b"served"[..])
    );
    println!(
        "garbage records refused: 1 acknowledged write read back after them; peak RSS {} MiB",
        node.peak_rss_bytes() >> 20
    );
}
