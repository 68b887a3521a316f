//! Row 2 of the hardening issue: hundreds of `Replica.StreamPartitions`
//! calls whose receiver never reads. A node sends at most
//! `--max-partition-streams` at once and refuses the rest with
//! RESOURCE_EXHAUSTED; the streams it sends hold at most three batches
//! each while they wait (memory stays bounded); clients' reads and writes
//! go on meanwhile within a 2 s deadline; and a stream whose receiver took nothing for
//! `--stream-stall-timeout-secs` is dropped, so a new receiver is served.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use bytes::Bytes;
use common::{eventually, TestNode};
use ringkv_client::proto::{RawGetRequest, RawPutRequest, StreamPartitionsRequest};
use tonic::Code;

const STREAMS: usize = 600;
const LIMIT: usize = 16;
const VALUES: usize = 96;
const VALUE_BYTES: usize = 1 << 20;
const PARTITIONS: u32 = 64;

#[tokio::test]
async fn stalled_receivers_are_bounded_and_refused_past_the_limit() {
    let node = TestNode::start(
        Ipv4Addr::new(127, 0, 92, 1),
        &[
            "--partitions",
            &PARTITIONS.to_string(),
            "--max-partition-streams",
            &LIMIT.to_string(),
            "--stream-stall-timeout-secs",
            "5",
        ],
    )
    .await;
    let mut client = node.client().await;
    let mut acknowledged = Vec::new();
    for i in 0..VALUES {
        let key = format!("big-{i:03}");
        client
            .raw()
            .raw_put(RawPutRequest {
                key: Bytes::from(key.clone()),
                value: Bytes::from(vec![b'v'; VALUE_BYTES]),
                ..Default::default()
            })
            .await
            .expect("put");
        acknowledged.push(key);
    }
    let (rss_before, threads_before) = (node.rss_bytes(), node.threads());

    // Ten connections of 60 streams each; none is ever read.
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(node.replica_client().await);
    }
    let all: Vec<u32> = (0..PARTITIONS).collect();
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..STREAMS {
        let mut replica = channels[i % channels.len()].clone();
        let request = StreamPartitionsRequest {
            partitions: all.clone(),
            ..Default::default()
        };
        match replica.stream_partitions(request).await {
            Ok(stream) => held.push(stream.into_inner()),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
                assert!(
                    status.message().contains("--max-partition-streams"),
                    "{}",
                    status.message()
                );
                refused += 1;
            }
        }
    }
    assert_eq!(held.len(), LIMIT, "streams sent at once");
    assert_eq!(refused, STREAMS - LIMIT);
    // Clients are served while the streams wait, each within a 2 s deadline.
    for i in 0..50 {
        let key = format!("while-stalled-{i:02}");
        let mut put = tonic::Request::new(RawPutRequest {
            key: Bytes::from(key.clone()),
            value: Bytes::from(format!("{key}=value")),
            ..Default::default()
        });
        put.set_timeout(Duration::from_secs(2));
        client
            .raw()
            .raw_put(put)
            .await
            .expect("a put while streams stall");
        let mut get = tonic::Request::new(RawGetRequest {
            key: Bytes::from(key.clone()),
            ..Default::default()
        });
        get.set_timeout(Duration::from_secs(2));
        client
            .raw()
            .raw_get(get)
            .await
            .expect("a get while streams stall");
        acknowledged.push(key);
    }
    let peak = node.peak_rss_bytes();
    let threads_held = node.threads();
    // Each stream holds at most three batches of about 1 MiB (plus one
    // value), and HTTP/2 buffers what the receiver's window takes.
    let bound = LIMIT as u64 * 3 * (2 * VALUE_BYTES as u64) + (64 << 20);
    assert!(
        peak.saturating_sub(rss_before) <= bound,
        "peak RSS grew by {} MiB, bound {} MiB",
        peak.saturating_sub(rss_before) >> 20,
        bound >> 20
    );

    // Past the stall timeout the stalled streams are dropped: a new
    // receiver gets the whole store.
    let fresh = node.replica_client().await;
    let mut stream = eventually(
        "a new stream is served once the stalled ones are dropped",
        Duration::from_secs(40),
        || {
            let (mut fresh, all) = (fresh.clone(), all.clone());
            async move {
                fresh
                    .stream_partitions(StreamPartitionsRequest {
                        partitions: all,
                        ..Default::default()
                    })
                    .await
                    .ok()
                    .map(|s| s.into_inner())
            }
        },
    )
    .await;
    let mut streamed = std::collections::BTreeSet::new();
    while let Some(batch) = stream.message().await.expect("a batch") {
        streamed.extend(batch.records.into_iter().map(|r| r.key));
    }
    for key in &acknowledged {
        assert!(
            streamed.contains(key.as_bytes()),
            "{key} is missing from the stream"
        );
    }
    drop(held);
    println!(
        "{STREAMS} stalled partition streams: {LIMIT} sent, {refused} refused; threads {threads_before} before, {threads_held} while stalled; RSS {} MiB before, peak {} MiB; {} acknowledged writes streamed out whole",
        rss_before >> 20,
        peak >> 20,
        acknowledged.len()
    );
}
