//! Every node metric that the chart's Grafana dashboard and Prometheus
//! alerts read is one a running node exports: a renamed metric fails here,
//! not silently on a user's dashboard. (The operator's metrics are checked
//! in `operator/tests/monitoring.rs`.)

mod common;

use std::{collections::BTreeSet, net::Ipv4Addr, path::Path};

use common::TestNode;

/// The `ringkv_*` names the chart's monitoring files use.
fn used_metrics() -> BTreeSet<String> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ringkv-operator");
    let mut used = BTreeSet::new();
    for file in ["dashboards/ringkv.json", "templates/monitoring.yaml"] {
        let text = std::fs::read_to_string(chart.join(file)).expect("chart file");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("ringkv_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert(name);
        }
    }
    used
}

/// Families on a /metrics page, from its `# TYPE` lines.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Whether `name` is one of `families`' series: the family itself, or a
/// counter's `_total`, a histogram's `_bucket`, `_sum` or `_count`.
fn is_exported(name: &str, families: &BTreeSet<String>) -> bool {
    families.contains(name)
        || ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|f| families.contains(f))
            })
}

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
    let families = exported(&node.metrics_text().await);
    let used: Vec<String> = used_metrics()
        .into_iter()
        .filter(|name| !name.starts_with("ringkv_operator_"))
        .collect();
    assert!(
        used.len() >= 10,
        "the dashboard reads node metrics: {used:?}"
    );
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !is_exported(name, &families))
        .collect();
    assert!(
        missing.is_empty(),
        "used by the chart but not exported by a node: {missing:?}; exported: {families:?}"
    );
    println!(
        "{} node metrics used by the dashboard and alerts, all exported: {used:?}",
        used.len()
    );
}
