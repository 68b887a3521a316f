//! The Prometheus Operator's ServiceMonitor for one KVCluster's nodes.
//!
//! Built as an untyped object: the Prometheus Operator's CRDs are not ours
//! to vendor, and a cluster without them simply gets none.

use std::collections::BTreeMap;

use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind},
    Resource,
};
use serde_json::json;

use super::{meta, peers_service_name, selector_labels, METRICS_PORT_NAME};
use crate::crd::KVCluster;

/// How the operator makes ServiceMonitors, from its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceMonitors {
    /// How often Prometheus scrapes each node, e.g. `30s`.
    pub interval: String,
    /// Extra labels, e.g. the one a Prometheus selects monitors by.
    pub labels: BTreeMap<String, String>,
}

/// monitoring.coreos.com/v1 ServiceMonitor.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
    ))
}

/// Scrapes `/metrics` of every node pod, ready or not, through the peers
/// Service: a node that is down or still joining is the one to watch.
pub fn service_monitor(kvc: &KVCluster, config: &ServiceMonitors) -> DynamicObject {
    let resource = service_monitor_resource();
    let mut metadata = meta(kvc, peers_service_name(kvc));
    if let Some(labels) = metadata.labels.as_mut() {
        labels.extend(config.labels.clone());
    }
    let mut selector = selector_labels(kvc);
    selector.insert("app.kubernetes.io/component".into(), "peers".into());
    let mut object = DynamicObject::new(&peers_service_name(kvc), &resource);
    object.metadata = metadata;
    object.metadata.namespace = kvc.meta().namespace.clone();
    object.data = json!({
        "spec": {
            "selector": { "matchLabels": selector },
            "endpoints": [{
                "port": METRICS_PORT_NAME,
                "path": "/metrics",
                "interval": config.interval,
            }],
        }
    });
    object
}
