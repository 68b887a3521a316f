//! Row 7 of the hardening issue: a node whose data volume fills up. It runs
//! on a tmpfs of its own, which the test grows and fills from outside, as
//! a volume that is resized or shared with another writer.

mod common;

use std::{net::Ipv4Addr, path::Path, time::Duration};

use bytes::Bytes;
use common::{eventually, volume::Volume, TestNode};
use tonic::Code;

const VALUE_BYTES: usize = 256 << 10;

fn value(i: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; VALUE_BYTES])
}

fn key(i: usize) -> String {
    format!("full-{i:05}")
}

/// Writes new keys from `next` on until one is refused; returns the refusal
/// and advances `next` past the acknowledged keys.
async fn write_until_refused(node: &TestNode, next: &mut usize) -> tonic::Status {
    let mut client = node.client().await;
    for _ in 0..10_000 {
        match client.put(key(*next).as_bytes(), &value(*next)).await {
            Ok(_) => *next += 1,
            Err(ringkv_client::ClientError::Status(status)) => return status,
            Err(other) => panic!("put {}: {other}", key(*next)),
        }
    }
    panic!("10,000 writes of {VALUE_BYTES} bytes were all acknowledged");
}

async fn assert_all_read_back(node: &TestNode, acknowledged: usize, after: &str) {
    let mut client = node.client().await;
    for i in 0..acknowledged {
        let found = client
            .get(key(i).as_bytes())
            .await
            .unwrap_or_else(|e| panic!("get {} {after}: {e}", key(i)));
        assert_eq!(found.map(|f| f.value), Some(value(i)), "{} {after}", key(i));
    }
}

/// Retries the next key's write until it is acknowledged, without a
/// restart of the node.
async fn write_once_resumed(node: &TestNode, next: &mut usize, when: &str) {
    let client = node.client().await;
    let i = *next;
    eventually(
        &format!("writes resume {when}"),
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            async move { client.put(key(i).as_bytes(), &value(i)).await.ok() }
        },
    )
    .await;
    *next += 1;
}

async fn start(ip: Ipv4Addr, data_dir: &Path, args: &[&str]) -> TestNode {
    let mut all = vec!["--write-buffer-bytes", "4194304"];
    all.extend_from_slice(args);
    TestNode::start_in(ip, data_dir, &all).await
}

#[tokio::test]
async fn a_full_volume_refuses_writes_recovers_stops_and_restarts() {
    let ip = Ipv4Addr::new(127, 0, 93, 1);
    let volume = Volume::mount(48);
    let data_dir = volume.mount.join("db");
    let mut acknowledged = 0usize;

    // Without the margin, RocksDB itself runs out of space, and resumes
    // once the volume grows.
    let mut node = start(
        ip,
        &data_dir,
        &["--min-free-disk-bytes", "0", "--disk-reserve-bytes", "0"],
    )
    .await;
    let refused = write_until_refused(&node, &mut acknowledged).await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("No space left on device"),
        "{}",
        refused.message()
    );
    assert!(acknowledged > 0, "some writes fit");
    assert_all_read_back(&node, acknowledged, "on a full volume").await;
    volume.resize(96);
    write_once_resumed(&node, &mut acknowledged, "once the volume grew").await;
    let status = node.stop().await;
    assert!(status.success(), "a clean stop after recovery: {status}");

    // With the margin, writes are refused before the volume is full.
    let margin = [
        "--min-free-disk-bytes",
        "16777216",
        "--disk-reserve-bytes",
        "8388608",
    ];
    let mut node = start(ip, &data_dir, &margin).await;
    assert!(
        data_dir.join("ringkv.reserve").exists(),
        "the reserve is allocated while there is room"
    );
    let refused = write_until_refused(&node, &mut acknowledged).await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("--min-free-disk-bytes"),
        "the refusal names the margin: {}",
        refused.message()
    );
    assert!(
        volume.free() > 8 << 20,
        "the margin was kept: {}",
        volume.free()
    );
    assert_all_read_back(&node, acknowledged, "once the margin is reached").await;
    let status = node.stop().await;
    assert!(status.success(), "a clean stop at the margin: {status}");

    // Another writer takes the last byte while the node is down: the
    // reserve lets it open its database and serve reads.
    let filler = volume.fill();
    assert_eq!(volume.free(), 0);
    let mut node = start(ip, &data_dir, &margin).await;
    assert_all_read_back(&node, acknowledged, "after a start on a full volume").await;
    let refused = node
        .client()
        .await
        .put(b"refused", b"v")
        .await
        .expect_err("no room for writes");
    assert!(
        refused.to_string().contains("--min-free-disk-bytes"),
        "{refused}"
    );
    // Space comes back: writes resume without a restart.
    std::fs::remove_file(&filler).expect("free the space");
    write_once_resumed(&node, &mut acknowledged, "once space is freed").await;
    // With space back, the node allocates its reserve again by itself.
    let reserve = data_dir.join("ringkv.reserve");
    eventually(
        "the reserve is allocated again",
        Duration::from_secs(30),
        || async { reserve.exists().then_some(()) },
    )
    .await;
    // The volume fills up again under the node, with writes in its
    // memtable: the stop is clean all the same, frees the reserve for the
    // next start, and the WAL keeps the writes.
    let filler = volume.fill();
    let status = node.stop().await;
    assert!(status.success(), "a clean stop on a full volume: {status}");
    assert!(!reserve.exists(), "the stop freed the reserve");
    std::fs::remove_file(&filler).expect("free the space");
    let node = start(ip, &data_dir, &margin).await;
    assert_all_read_back(&node, acknowledged, "after a stop on a full volume").await;
    println!(
        "full disk: {acknowledged} acknowledged writes of {VALUE_BYTES} bytes read back after every phase; peak RSS {} MiB",
        node.peak_rss_bytes() >> 20
    );
}
