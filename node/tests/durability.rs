//! Acknowledged writes survive SIGKILL: each was fsync'd before its
//! acknowledgement.

mod common;

use std::net::Ipv4Addr;

use common::TestNode;

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
