//! Clients that ask for much and read nothing cost a bounded amount of
//! memory: a scan response ends at `--max-scan-bytes` (saying `more`), so a
//! stalled reader holds one capped page, not the whole range.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use bytes::Bytes;
use common::{eventually, TestNode};
use prost::Message;
use ringkv_client::{
    proto::{KvPair, RawBatchPutRequest, RawScanRequest},
    ScanOptions,
};
use tokio::{io::AsyncWriteExt, net::TcpStream};

const SUBNET: u8 = 87;
const VALUE_BYTES: usize = 1 << 20;
const VALUES: usize = 192;
const STALLED_SCANS: usize = 6;
const MIB: u64 = 1 << 20;

fn value_of(i: usize) -> Bytes {
    let mut value = format!("value-{i:04}-").into_bytes();
    value.resize(VALUE_BYTES, b'x');
    Bytes::from(value)
}

/// An HPACK header field, literal without indexing, no Huffman coding.
fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    for part in [name, value] {
        assert!(part.len() < 127);
        out.push(part.len() as u8);
        out.extend_from_slice(part.as_bytes());
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Opens a connection, asks for a scan of the whole store and never reads
/// a byte of the answer: the node can send only the first 64 KiB window.
async fn stalled_scan(address: std::net::SocketAddr) -> TcpStream {
    let request = RawScanRequest {
        limit: 10_000,
        ..Default::default()
    }
    .encode_to_vec();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut bytes, 0x4, 0, 0, &[]);
    let mut headers = Vec::new();
    header(&mut headers, ":method", "POST");
    header(&mut headers, ":scheme", "http");
    header(&mut headers, ":path", "/ringkv.v1.RawKV/RawScan");
    header(&mut headers, ":authority", "ringkv");
    header(&mut headers, "content-type", "application/grpc");
    header(&mut headers, "te", "trailers");
    frame(&mut bytes, 0x1, 0x4, 1, &headers);
    let mut message = vec![0u8];
    message.extend_from_slice(&(request.len() as u32).to_be_bytes());
    message.extend_from_slice(&request);
    frame(&mut bytes, 0x0, 0x1, 1, &message);
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(&bytes).await.expect("send the request");
    stream
}

#[tokio::test]
async fn stalled_scans_of_large_values_hold_one_capped_page_each() {
    let node = TestNode::start(Ipv4Addr::new(127, 0, SUBNET, 1), &[]).await;
    let mut client = node.client().await;
    for chunk in (0..VALUES).collect::<Vec<_>>().chunks(8) {
        client
            .raw()
            .raw_batch_put(RawBatchPutRequest {
                pairs: chunk
                    .iter()
                    .map(|&i| KvPair {
                        key: Bytes::from(format!("big-{i:04}")),
                        value: value_of(i),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("write");
    }
    let stored = (VALUES * VALUE_BYTES) as u64;
    let before = node.rss_bytes();

    let mut stalled = Vec::new();
    for _ in 0..STALLED_SCANS {
        stalled.push(stalled_scan(node.grpc).await);
    }
    let first = client
        .raw()
        .raw_scan(RawScanRequest {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("a scan beside the stalled ones")
        .into_inner();
    // Every stalled scan has been answered, and its response waits on a
    // reader that never comes.
    let answered = "ringkv_grpc_requests_total{method=\"RawScan\",code=\"Ok\"}";
    eventually(
        "the stalled scans are answered",
        Duration::from_secs(60),
        || async {
            node.metric(answered)
                .await
                .filter(|n| *n as usize > STALLED_SCANS)
        },
    )
    .await;
    let held = node.rss_bytes().saturating_sub(before);
    let peak = node.peak_rss_bytes();
    println!(
        "{STALLED_SCANS} stalled scans over {} MiB of values: RSS grew by {} MiB (peak RSS {} MiB); one response held {} pairs, more={}",
        stored / MIB,
        held / MIB,
        peak / MIB,
        first.kvs.len(),
        first.more
    );
    assert!(first.more, "a response ends at the byte cap and says so");
    assert!(
        first.kvs.len() < VALUES / 4,
        "{} pairs in one response: the default cap is 4 MiB",
        first.kvs.len()
    );
    // Unbounded, each stalled scan would hold the whole store (192 MiB);
    // capped, a page of about 5 MiB and its encoding.
    let bound = 160 * MIB;
    assert!(
        held < bound,
        "stalled scans hold {} MiB, over {} MiB",
        held / MIB,
        bound / MIB
    );

    // Following `more`, the client library reads every pair, in order.
    let all = client
        .scan(ScanOptions {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("scan everything");
    assert_eq!(all.len(), VALUES);
    for (i, pair) in all.iter().enumerate() {
        assert_eq!(pair.key, format!("big-{i:04}").as_bytes());
        assert_eq!(pair.value, value_of(i), "big-{i:04}");
    }
    let reversed = client
        .scan(ScanOptions {
            limit: 10_000,
            reverse: true,
            key_only: true,
            ..Default::default()
        })
        .await
        .expect("reverse scan");
    assert_eq!(reversed.len(), VALUES);
    assert_eq!(reversed[0].key, format!("big-{:04}", VALUES - 1).as_bytes());
    drop(stalled);
    println!("slow readers: checked {VALUES} acknowledged writes");
}
