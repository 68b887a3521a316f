//! The Node this runner stands for, and its heartbeat.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Node, jiff::Timestamp};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use serde_json::json;

use super::RunnerError;

const MANAGER: &str = "ringkv-pod-runner";

/// Creates (or takes over) the Node and reports it Ready.
pub async fn register_node(client: &Client, name: &str) -> Result<(), RunnerError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": "e2e-a",
            },
        },
    });
    nodes
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(node),
        )
        .await
        .map_err(RunnerError::kube(format!("registering node {name}")))?;
    report_ready(&nodes, name).await
}

async fn report_ready(nodes: &Api<Node>, name: &str) -> Result<(), RunnerError> {
    let now = Timestamp::now().to_string();
    let status = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "status": {
            "capacity": { "cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "1Ti" },
            "allocatable": { "cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "1Ti" },
            "conditions": [
                { "type": "Ready", "status": "True", "reason": "RunnerReady",
                  "message": "ringkv pod runner is running", "lastHeartbeatTime": now, "lastTransitionTime": now },
                { "type": "MemoryPressure", "status": "False", "reason": "RunnerReady", "lastHeartbeatTime": now, "lastTransitionTime": now },
                { "type": "DiskPressure", "status": "False", "reason": "RunnerReady", "lastHeartbeatTime": now, "lastTransitionTime": now },
                { "type": "PIDPressure", "status": "False", "reason": "RunnerReady", "lastHeartbeatTime": now, "lastTransitionTime": now },
            ],
            "addresses": [
                { "type": "InternalIP", "address": "127.0.0.1" },
                { "type": "Hostname", "address": name },
            ],
            "nodeInfo": {
                "machineID": name, "systemUUID": name, "bootID": name,
                "kernelVersion": "", "osImage": "ringkv pod runner",
                "containerRuntimeVersion": "ringkv-pod-runner://0.1.0",
                "kubeletVersion": "v1.37.2", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    });
    nodes
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(status),
        )
        .await
        .map_err(RunnerError::kube(format!("reporting node {name} ready")))?;
    Ok(())
}

/// Keeps the Ready condition fresh, as the kubelet's status updates do.
pub async fn heartbeat(client: Client, name: String) {
    let nodes: Api<Node> = Api::all(client);
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    loop {
        ticker.tick().await;
        if let Err(error) = report_ready(&nodes, &name).await {
            tracing::warn!(%error, "node heartbeat");
        }
    }
}
