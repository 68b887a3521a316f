//! Acknowledged writes survive SIGKILL: each was fsync'd before its
//! acknowledgement.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::TestNode;
use tokio::time::Instant;

#[tokio::test]
async fn sigkill_after_ten_thousand_acknowledged_writes_loses_none() {
    const WRITERS: u32 = 16;
    const PER_WRITER: u32 = 625;
    let mut node = TestNode::start(Ipv4Addr::new(127, 0, 2, 1), &[]).await;

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut client = node.client().await;
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..PER_WRITER {
                let key = format!("durable-{w:02}-{i:05}");
                let value = format!("{key}-{}", "v".repeat(100));
                client
                    .put(key.as_bytes(), value.as_bytes())
                    .await
                    .expect("put");
                acknowledged.push((key, value));
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("writer"));
    }
    // Straight after the last acknowledgement: no flush, no clean close.
    node.kill9();
    node.restart().await;

    let mut client = node.client().await;
    for (key, value) in &acknowledged {
        let got = client.get(key.as_bytes()).await.expect("get after restart");
        assert_eq!(
            got.map(|found| found.value).as_deref(),
            Some(value.as_bytes()),
            "lost {key}"
        );
    }
    println!(
        "checked {} acknowledged writes after SIGKILL and restart",
        acknowledged.len()
    );
    assert_eq!(acknowledged.len(), 10_000);
}

/// Row 9 of the hardening issue: a node stopped while a peer stream's
/// reader had stalled logged "database closed" and then held its data
/// dir's lock for minutes, so a restart failed. Now SIGTERM is answered
/// within `--shutdown-timeout-secs` (plus the time to flush) even with a
/// `StreamPartitions` whose client never reads and a health `Watch` on
/// `--health-listen` that never ends, the exit is clean, and
/// the node restarts on the same data dir at once with every
/// acknowledged write.
#[tokio::test]
async fn a_stop_with_a_stalled_stream_ends_within_the_shutdown_timeout() {
    const KEYS: usize = 400;
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("db");
    let ip = Ipv4Addr::new(127, 0, 84, 1);
    let args = [
        "--shutdown-timeout-secs",
        "3",
        "--health-listen",
        "127.0.84.1:7380",
    ];
    let mut node = TestNode::start_in(ip, &data_dir, &args).await;
    let mut client = node.client().await;
    let value = vec![b's'; 50 << 10];
    for i in 0..KEYS {
        client
            .put(format!("stalled-{i:04}").as_bytes(), &value)
            .await
            .expect("put");
    }
    // More than the stream's in-flight batches and HTTP/2 window: the
    // sender blocks on a reader that never reads.
    let stalled = node
        .replica_client()
        .await
        .stream_partitions(ringkv_client::proto::StreamPartitionsRequest {
            partitions: (0..256).collect(),
            start_after: Default::default(),
            digests: false,
        })
        .await
        .expect("a stream opens");
    let health = ringkv_client::Connector::plaintext()
        .channel("127.0.84.1:7380")
        .await
        .expect("the health listener");
    let watching = tonic_health::pb::health_client::HealthClient::new(health)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a health watch opens");
    let peak_rss = node.peak_rss_bytes();
    let pid = nix::unistd::Pid::from_raw(node.pid() as i32);
    let asked = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = node.wait_exit(Duration::from_secs(20)).await;
    let took = asked.elapsed();
    drop((stalled, watching));
    assert!(status.success(), "a clean exit: {status:?}");
    assert!(
        took < Duration::from_secs(3 + 7),
        "stopped {took:?} after SIGTERM, past --shutdown-timeout-secs 3 and the time to flush"
    );
    let node = TestNode::start_in(ip, &data_dir, &args[..2]).await;
    let mut client = node.client().await;
    for i in 0..KEYS {
        let found = client
            .get(format!("stalled-{i:04}").as_bytes())
            .await
            .expect("get after restart")
            .map(|found| found.value);
        assert_eq!(found.as_deref(), Some(&value[..]), "lost stalled-{i:04}");
    }
    println!(
        "stop with a stalled stream: exited in {took:?}; {KEYS} acknowledged writes read back after the restart; peak RSS before the stop {} MiB",
        peak_rss >> 20
    );
}
