//! Every operator metric that the chart's Grafana dashboard and Prometheus
//! alerts read is one the operator exports. (Node metrics are checked in
//! `node/tests/monitoring.rs`, against a running node.)

mod support {
    pub mod chart_metrics;
}

use std::time::Duration;

use ringkv_operator::metrics::Metrics;
use support::chart_metrics::{missing, used_metrics};

#[test]
fn every_operator_metric_the_dashboard_and_alerts_use_is_exported() {
    let used = used_metrics("ringkv_operator_");
    assert!(
        !used.is_empty(),
        "the dashboard reads the operator's metrics"
    );
    // Labelled families show once they have a series: one reconcile that
    // worked and one that failed.
    let metrics = Metrics::new();
    metrics.observe_reconcile(Duration::from_millis(5), None);
    metrics.observe_reconcile(Duration::from_millis(5), Some("kubernetes_api"));
    let text = metrics.encode();
    let missing = missing(&used, &text);
    assert!(
        missing.is_empty(),
        "used by the chart but not exported by the operator: {missing:?}; exported: {text}"
    );
    println!("operator metrics used by the dashboard and alerts, all exported: {used:?}");
}
