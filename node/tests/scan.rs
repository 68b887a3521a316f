//! RawScan over gRPC returns keys in order across memtable flushes and
//! compactions, and honours limit, key_only and reverse.

mod common;

use std::net::Ipv4Addr;

use bytes::Bytes;
use common::{eventually, TestNode};
use ringkv_client::proto::{KvPair, RawBatchPutRequest, RawScanRequest};
use std::time::Duration;

const KEYS: usize = 20_000;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("scan-{i:06}"))
}

async fn scan_all(node: &TestNode, reverse: bool) -> Vec<KvPair> {
    let mut client = node.client().await;
    let mut out: Vec<KvPair> = Vec::new();
    // Page through with the largest limit the node allows.
    loop {
        let (start, end) = match (reverse, out.last()) {
            (false, Some(last)) => {
                let mut next = last.key.to_vec();
                next.push(0);
                (Bytes::from(next), Bytes::new())
            }
            (true, Some(last)) => (Bytes::new(), last.key.clone()),
            (_, None) => (Bytes::new(), Bytes::new()),
        };
        let page = client
            .raw()
            .raw_scan(RawScanRequest {
                start_key: start,
                end_key: end,
                limit: 7_000,
                reverse,
                ..Default::default()
            })
            .await
            .expect("scan")
            .into_inner()
            .kvs;
        if page.is_empty() {
            return out;
        }
        assert!(page.len() <= 7_000);
        out.extend(page);
    }
}

#[tokio::test]
async fn scan_is_ordered_across_flushes_and_compactions() {
    // A 64 KiB memtable turns these writes into many flushes and compactions.
    let mut node = TestNode::start(
        Ipv4Addr::new(127, 0, 4, 1),
        &["--write-buffer-bytes", "65536"],
    )
    .await;
    let mut client = node.client().await;
    // Written in a scattered order, so that order comes from the engine.
    let mut order: Vec<usize> = (0..KEYS).collect();
    order.sort_by_key(|i| (i * 7_919) % KEYS);
    for chunk in order.chunks(500) {
        client
            .raw()
            .raw_batch_put(RawBatchPutRequest {
                pairs: chunk
                    .iter()
                    .map(|&i| KvPair {
                        key: key(i),
                        value: Bytes::from(format!("value-{i}-{}", "x".repeat(64))),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("batch put");
    }
    let compacted = eventually(
        "RocksDB ran flushes and compactions",
        Duration::from_secs(30),
        || async {
            node.metric("ringkv_rocksdb_compact_write_bytes_total")
                .await
                .filter(|bytes| *bytes > 0.0)
        },
    )
    .await;
    println!("compactions wrote {compacted} bytes before the scans");

    for pass in ["live", "after restart"] {
        let forward = scan_all(&node, false).await;
        assert_eq!(forward.len(), KEYS, "{pass}: every key");
        for (i, pair) in forward.iter().enumerate() {
            assert_eq!(pair.key, key(i), "{pass}: key {i} in order");
            assert_eq!(pair.value, format!("value-{i}-{}", "x".repeat(64)));
        }
        let backward = scan_all(&node, true).await;
        assert_eq!(backward.len(), KEYS, "{pass}: every key in reverse");
        assert!(backward
            .iter()
            .rev()
            .map(|p| &p.key)
            .eq(forward.iter().map(|p| &p.key)));

        let limited = client_scan(&node, "scan-000100", "scan-000200", 10, true, true).await;
        let keys: Vec<_> = limited.iter().map(|p| p.key.clone()).collect();
        let want: Vec<_> = (190..200).rev().map(key).collect();
        assert_eq!(keys, want, "{pass}: reverse with limit, end exclusive");
        assert!(limited.iter().all(|p| p.value.is_empty()), "key_only");

        node.stop().await;
        node.restart().await;
    }
}

async fn client_scan(
    node: &TestNode,
    start: &str,
    end: &str,
    limit: u32,
    key_only: bool,
    reverse: bool,
) -> Vec<KvPair> {
    node.client()
        .await
        .raw()
        .raw_scan(RawScanRequest {
            start_key: Bytes::from(start.to_string()),
            end_key: Bytes::from(end.to_string()),
            limit,
            key_only,
            reverse,
            consistency: None,
        })
        .await
        .expect("scan")
        .into_inner()
        .kvs
}
