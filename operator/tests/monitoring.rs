//! Every operator metric that the chart's Grafana dashboard and Prometheus
//! alerts read is one the operator exports. (Node metrics are checked in
//! `node/tests/monitoring.rs`, against a running node.)

use std::{collections::BTreeSet, path::Path, time::Duration};

use ringkv_operator::metrics::Metrics;

#[test]
fn every_operator_metric_the_dashboard_and_alerts_use_is_exported() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ringkv-operator");
    let mut used = BTreeSet::new();
    for file in ["dashboards/ringkv.json", "templates/monitoring.yaml"] {
        let text = std::fs::read_to_string(chart.join(file)).expect("chart file");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("ringkv_operator_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert(name);
        }
    }
    assert!(
        !used.is_empty(),
        "the dashboard reads the operator's metrics"
    );
    // Labelled families show once they have a series: one reconcile that
    // worked and one that failed.
    let metrics = Metrics::new();
    metrics.observe_reconcile(Duration::from_millis(5), None);
    metrics.observe_reconcile(Duration::from_millis(5), Some("kubernetes_api"));
    let families: BTreeSet<String> = metrics
        .encode()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| {
            !families.contains(*name)
                && !["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s).is_some_and(|f| families.contains(f)))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "used by the chart but not exported by the operator: {missing:?}; exported: {families:?}"
    );
    println!("operator metrics used by the dashboard and alerts, all exported: {used:?}");
}
