//! The standard gRPC health and reflection services, and graceful shutdown.

mod common;

use std::net::Ipv4Addr;

use common::TestNode;
use tokio_stream::StreamExt;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

#[tokio::test]
async fn health_is_serving_and_reflection_lists_rawkv() {
    let mut node = TestNode::start(Ipv4Addr::new(127, 0, 5, 1), &[]).await;
    let channel = ringkv_client::Connector::plaintext()
        .endpoint(&node.grpc.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "ringkv.v1.RawKV".into(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    let whole = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check of the whole server")
        .into_inner();
    assert_eq!(whole.status, ServingStatus::Serving as i32);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .next()
        .await
        .expect("one response")
        .expect("reflection answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    println!("reflection lists {names:?}");
    assert!(names.contains(&"ringkv.v1.RawKV"));
    assert!(names.contains(&"grpc.health.v1.Health"));

    let mut client = node.client().await;
    client.put(b"k", b"v").await.expect("put");
    assert_eq!(client.get(b"missing").await.expect("get"), None);
    let metrics = node.metrics_text().await;
    assert!(
        metrics.contains(r#"ringkv_grpc_requests_total{method="RawGet",code="NotFound"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("ringkv_grpc_requests_total"), "{metrics}");
    assert!(metrics.contains("ringkv_rocksdb_estimated_keys"));
    // Every metric the docs name is exported. A family with labels has no
    // line before its first sample; the docs show it with its labels
    // (`name{label}`), and the test that makes its first sample checks it
    // (`ringkv_anti_entropy_last_exchange_timestamp_seconds` in
    // histories.rs).
    let documented = documented_metrics();
    let missing: Vec<&String> = documented
        .iter()
        .filter(|name| !metrics.contains(name.as_str()))
        .collect();
    println!(
        "{} metric names in the docs, all exported",
        documented.len()
    );
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}"
    );

    let status = node.stop().await;
    assert!(status.success(), "SIGTERM gives a clean exit, got {status}");
}

/// Every `ringkv_*` metric name that docs/ mention.
fn documented_metrics() -> std::collections::BTreeSet<String> {
    let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs");
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(docs).expect("docs dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read doc");
        for (at, _) in text.match_indices("ringkv_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if text[at + name.len()..].starts_with('{') {
                continue;
            }
            // Crate names are not metrics, and the operator's metrics are
            // checked in operator/src/metrics.rs.
            let crate_name = ["ringkv_node", "ringkv_client", "ringkv_proto", "ringkv_e2e"]
                .contains(&name.as_str());
            if !crate_name && !name.starts_with("ringkv_operator") && !name.ends_with('_') {
                names.insert(name);
            }
        }
    }
    names
}
