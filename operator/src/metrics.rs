//! The operator's own metrics: reconcile counts, durations, and failures by
//! kind.

use std::{sync::Mutex, time::Duration};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureKind {
    kind: &'static str,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<Outcome, Counter>,
    failures: Counter,
    failures_by_kind: Family<FailureKind, Counter>,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ringkv_operator");
        let reconciles = Family::<Outcome, Counter>::default();
        let failures = Counter::default();
        let failures_by_kind = Family::<FailureKind, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed",
            failures.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by the kind of failure (kubernetes_api, finalizer_patch, ...)",
            failures_by_kind.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciles,
            failures,
            failures_by_kind,
            duration,
        }
    }

    /// Counts one reconcile; `failure` is the kind of error it ended
    /// with, if any.
    pub fn observe_reconcile(&self, took: Duration, failure: Option<&'static str>) {
        let result = if failure.is_none() {
            "success"
        } else {
            "error"
        };
        self.reconciles.get_or_create(&Outcome { result }).inc();
        if let Some(kind) = failure {
            self.failures.inc();
            self.failures_by_kind
                .get_or_create(&FailureKind { kind })
                .inc();
        }
        self.duration.observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(error) = encode(&mut text, &registry) {
            tracing::warn!(%error, "encoding metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reconciles_and_errors() {
        let metrics = Metrics::new();
        metrics.observe_reconcile(Duration::from_millis(20), None);
        metrics.observe_reconcile(Duration::from_millis(20), Some("kubernetes_api"));
        let text = metrics.encode();
        assert!(
            text.contains("ringkv_operator_reconciles_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ringkv_operator_reconcile_errors_total 1"),
            "{text}"
        );
        assert!(
            text.contains("ringkv_operator_reconcile_failures_total{kind=\"kubernetes_api\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ringkv_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }
}
