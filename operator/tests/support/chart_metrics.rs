//! The metric names the chart's Grafana dashboard and Prometheus alerts
//! read, and which of them a /metrics page lacks. Shared by the operator's
//! and the node's monitoring tests (the node's includes this file by path),
//! so that both read the chart the same way.

use std::{collections::BTreeSet, path::Path};

/// The names starting with `prefix` that the chart's monitoring files use.
pub fn used_metrics(prefix: &str) -> BTreeSet<String> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ringkv-operator");
    let mut used = BTreeSet::new();
    for file in ["dashboards/ringkv.json", "templates/monitoring.yaml"] {
        let text = std::fs::read_to_string(chart.join(file)).expect("chart file");
        let mut rest = text.as_str();
        while let Some(at) = rest.find(prefix) {
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

/// The names of `used` that no family of the /metrics page `text` serves:
/// a name is served by its family itself, a counter's `_total`, or a
/// histogram's `_bucket`, `_sum` or `_count`.
pub fn missing<'a>(used: impl IntoIterator<Item = &'a String>, text: &str) -> Vec<&'a String> {
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    used.into_iter()
        .filter(|name| {
            !families.contains(name.as_str())
                && !["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s).is_some_and(|f| families.contains(f)))
        })
        .collect()
}
