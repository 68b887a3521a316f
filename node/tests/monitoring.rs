//! Every node metric that the chart's Grafana dashboard and Prometheus
//! alerts read is one a running node exports: a renamed metric fails here,
//! not silently on a user's dashboard. (The operator's metrics are checked
//! in `operator/tests/monitoring.rs`.)

#[path = "../../operator/tests/support/chart_metrics.rs"]
mod chart_metrics;
mod common;

use std::net::Ipv4Addr;

use chart_metrics::{missing, used_metrics};
use common::TestNode;

#[tokio::test]
async fn every_node_metric_the_dashboard_and_alerts_use_is_exported() {
    let node = TestNode::start(Ipv4Addr::new(127, 0, 95, 1), &[]).await;
    // Labelled families show once they have a series: one request.
    let mut client = node.client().await;
    client
        .raw()
        .raw_put(ringkv_client::proto::RawPutRequest {
            key: bytes::Bytes::from_static(b"monitored"),
            value: bytes::Bytes::from_static(b"value"),
            ..Default::default()
        })
        .await
        .expect("a put");
    let text = node.metrics_text().await;
    let used: Vec<String> = used_metrics("ringkv_")
        .into_iter()
        .filter(|name| !name.starts_with("ringkv_operator_"))
        .collect();
    assert!(
        used.len() >= 10,
        "the dashboard reads node metrics: {used:?}"
    );
    let missing = missing(&used, &text);
    assert!(
        missing.is_empty(),
        "used by the chart but not exported by a node: {missing:?}; exported: {text}"
    );
    println!(
        "{} node metrics used by the dashboard and alerts, all exported: {used:?}",
        used.len()
    );
}
