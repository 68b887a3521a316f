//! The seed's correctness and concurrency tests, against a real node.

mod common;

use std::{net::Ipv4Addr, sync::Arc};

use common::TestNode;
use tokio::sync::Semaphore;

#[tokio::test]
async fn put_get_delete_then_not_found() {
    let node = TestNode::start(Ipv4Addr::new(127, 0, 1, 1), &[]).await;
    let mut client = node.client().await;

    client.put(b"testkey", b"testvalue").await.expect("put");
    assert_eq!(
        common::value_of(&mut client, b"testkey").await.as_deref(),
        Some(&b"testvalue"[..])
    );
    client.delete(b"testkey").await.expect("delete");
    let status = client
        .raw()
        .raw_get(ringkv_client::proto::RawGetRequest {
            key: "testkey".into(),
            ..Default::default()
        })
        .await
        .expect_err("get after delete fails");
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn fifty_concurrent_clients_ten_thousand_checked_operations() {
    const CLIENTS: usize = 50;
    const KEYS_PER_CLIENT: usize = 67; // 50 × 67 keys × 3 ops = 10,050 operations
    let node = TestNode::start(Ipv4Addr::new(127, 0, 1, 2), &[]).await;
    let gate = Arc::new(Semaphore::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = node.client().await;
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            // Every client starts together, so the operations really overlap.
            let _permit = gate.acquire().await.expect("gate");
            let mut checked = 0usize;
            for k in 0..KEYS_PER_CLIENT {
                let key = format!("client-{c}-key-{k}");
                let value = format!("value-{c}-{k}");
                client
                    .put(key.as_bytes(), value.as_bytes())
                    .await
                    .expect("put");
                let got = client.get(key.as_bytes()).await.expect("get");
                assert_eq!(
                    got.map(|found| found.value).as_deref(),
                    Some(value.as_bytes()),
                    "get {key}"
                );
                client.delete(key.as_bytes()).await.expect("delete");
                assert_eq!(client.get(key.as_bytes()).await.expect("get"), None);
                checked += 3;
            }
            checked
        }));
    }
    gate.add_permits(CLIENTS);
    let mut checked = 0;
    for task in tasks {
        checked += task.await.expect("client task");
    }
    println!("checked {checked} concurrent operations from {CLIENTS} clients");
    assert!(checked >= 10_000);
}
