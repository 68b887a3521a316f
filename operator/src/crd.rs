//! The `KVCluster` custom resource (`ringkv.io/v1alpha1`).
//!
//! The schema is generated from these types; `ringkv-operator crd` prints
//! it and `crds/kvcluster.yaml` is that output, checked by a drift test.
//! CEL rules (`x-kubernetes-validations`) make the API server reject bad
//! specs with a message, before the operator ever sees them.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A ringkv cluster: storage-node pods holding a replicated, partitioned
/// key-value store.
// kube's printcolumn attributes repeat the same keys once per column.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ringkv.io",
    version = "v1alpha1",
    kind = "KVCluster",
    plural = "kvclusters",
    shortname = "kvc",
    namespaced,
    status = "KVClusterStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "N", type_ = "integer", json_path = ".spec.replicationFactor"),
    printcolumn(name = "R", type_ = "integer", json_path = ".spec.readQuorum"),
    printcolumn(name = "W", type_ = "integer", json_path = ".spec.writeQuorum"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message")
)]
#[serde(rename_all = "camelCase")]
// Messages name the value and the bound through `format`: `string(int)`
// concatenation makes the API server estimate an unbounded cost and refuse
// the CRD (kubernetes/kubernetes#124234).
#[x_kube(validation = Rule::new("self.readQuorum >= 1").field_path(".readQuorum").message(Message::Expression("'readQuorum %d is below 1'.format([self.readQuorum])".into())))]
#[x_kube(validation = Rule::new("self.readQuorum <= self.replicationFactor").field_path(".readQuorum").message(Message::Expression("'readQuorum %d exceeds replicationFactor %d'.format([self.readQuorum, self.replicationFactor])".into())))]
#[x_kube(validation = Rule::new("self.writeQuorum >= 1").field_path(".writeQuorum").message(Message::Expression("'writeQuorum %d is below 1'.format([self.writeQuorum])".into())))]
#[x_kube(validation = Rule::new("self.writeQuorum <= self.replicationFactor").field_path(".writeQuorum").message(Message::Expression("'writeQuorum %d exceeds replicationFactor %d'.format([self.writeQuorum, self.replicationFactor])".into())))]
pub struct KVClusterSpec {
    /// Number of storage nodes. Scaling below replicationFactor is refused
    /// by the operator (condition ScalingBlocked).
    #[x_kube(validation = Rule::new("self >= 1").message(Message::Expression("'replicas %d is below 1'.format([self])".into())))]
    pub replicas: i32,

    /// N: replicas of each partition.
    #[serde(default = "default_replication_factor")]
    #[x_kube(validation = Rule::new("self >= 1").message(Message::Expression("'replicationFactor %d is below 1'.format([self])".into())))]
    pub replication_factor: i32,

    /// R: replicas that must answer a read (default ⌊N/2⌋+1).
    #[serde(default = "default_quorum")]
    pub read_quorum: i32,

    /// W: replicas that must acknowledge a write (default ⌊N/2⌋+1).
    #[serde(default = "default_quorum")]
    pub write_quorum: i32,

    /// Partition count, fixed when the cluster is created.
    #[serde(default = "default_partitions")]
    #[x_kube(validation = Rule::new("self == oldSelf").message(Message::Expression("'partitions is fixed when the cluster is created: it is %d, not %d'.format([oldSelf, self])".into())))]
    pub partitions: i32,

    /// How concurrent writes are resolved; fixed when the cluster is created.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message(Message::Expression("'conflictResolution is fixed when the cluster is created: it is %s, not %s'.format([oldSelf, self])".into())))]
    pub conflict_resolution: ConflictResolution,

    /// The node image.
    #[serde(default = "default_image")]
    pub image: String,

    /// Pull policy of the node image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,

    /// CPU and memory of each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The volume of each node.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Overrides merged into the node pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,

    /// Node label whose value becomes each node's zone, e.g.
    /// `topology.kubernetes.io/zone`; replicas of a partition then go to
    /// distinct zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_topology_key: Option<String>,

    /// What happens to volumes on scale-down and on deletion.
    #[serde(default)]
    pub persistent_volume_claim_retention_policy: RetentionPolicy,

    /// TLS for the gRPC API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Node tunables.
    #[serde(default)]
    pub config: NodeTunables,
}

fn default_replication_factor() -> i32 {
    3
}

fn default_quorum() -> i32 {
    2
}

fn default_partitions() -> i32 {
    256
}

fn default_image() -> String {
    format!("ringkv/ringkv-node:{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConflictResolution {
    /// Concurrent writes are kept as siblings with causal contexts.
    #[default]
    Siblings,
    /// The write with the highest hybrid-logical-clock timestamp wins.
    Lww,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each node's volume.
    #[serde(default = "default_storage_size")]
    pub size: String,
    /// Storage class of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> String {
    "10Gi".into()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RetentionRule {
    /// Keep the volume.
    #[default]
    Retain,
    /// Delete the volume.
    Delete,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// Volumes of nodes removed by a scale-down.
    #[serde(default)]
    pub when_scaled: RetentionRule,
    /// Volumes of every node when the KVCluster is deleted.
    #[serde(default)]
    pub when_deleted: RetentionRule,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret with `tls.crt` and `tls.key` for the gRPC API, valid for
    /// `NAME-peers.NAMESPACE.svc` (the name nodes and the operator verify)
    /// and whatever names clients use. A cert-manager Certificate's Secret
    /// also carries `ca.crt`, used when `caSecretName` is not set.
    pub server_secret_name: String,
    /// Secret with `ca.crt`, the CA that signed the nodes' certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_name: Option<String>,
    /// Require client certificates signed by that CA (mutual TLS). Nodes
    /// and the operator present the server certificate.
    #[serde(default)]
    pub client_auth: bool,
}

impl TlsSpec {
    /// The Secret and key that hold the CA certificate.
    pub fn ca_secret(&self) -> &str {
        self.ca_secret_name
            .as_deref()
            .unwrap_or(&self.server_secret_name)
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTunables {
    /// Seconds between anti-entropy rounds.
    #[serde(default = "default_anti_entropy")]
    pub anti_entropy_interval_seconds: i64,
    /// Hints older than this are dropped.
    #[serde(default = "default_hint_age")]
    pub hint_max_age_seconds: i64,
    /// Minimum age of a purged tombstone.
    #[serde(default = "default_gc_grace")]
    pub gc_grace_seconds: i64,
}

impl Default for NodeTunables {
    fn default() -> Self {
        Self {
            anti_entropy_interval_seconds: default_anti_entropy(),
            hint_max_age_seconds: default_hint_age(),
            gc_grace_seconds: default_gc_grace(),
        }
    }
}

fn default_anti_entropy() -> i64 {
    60
}

fn default_hint_age() -> i64 {
    3 * 3600
}

fn default_gc_grace() -> i64 {
    10 * 24 * 3600
}

/// What the operator observed and decided.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KVClusterStatus {
    /// The generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Node pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Node pods that are members of the ring with their partitions complete.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the node pods, for the scale subresource.
    #[serde(default)]
    pub selector: String,
    /// Creating, Available, Scaling, Upgrading, Degraded or Blocked.
    #[serde(default)]
    pub phase: String,
    /// What the user should see first, in one line: a refused request
    /// (ScalingBlocked), else what is in progress, else why the cluster is
    /// degraded; empty when it is simply available. Always written, empty
    /// too: the status is a merge patch, where a left-out field keeps its
    /// old value.
    #[serde(default)]
    pub message: String,
    /// Available, Progressing, Degraded and ScalingBlocked.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Every ring member.
    #[serde(default)]
    pub members: Vec<MemberState>,
    /// Ordinals being decommissioned: the scale-down in progress, recorded
    /// so that an operator restart resumes it instead of re-deriving it.
    #[serde(default)]
    pub decommissioning: Vec<i32>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberState {
    pub name: String,
    /// joining, normal, leaving or left.
    pub ring_status: String,
    pub partitions_owned: i32,
    /// Handoff progress, in words: partitions complete of those moving to
    /// this node, records received and the sources' estimate of what is
    /// left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
    /// The same progress, in numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_progress: Option<HandoffProgress>,
}

/// How far the partitions moving to one member have come, for one ring
/// transition: the counts only grow until the transition ends.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandoffProgress {
    /// The ring state version of the transition.
    pub state_version: i64,
    pub partitions_complete: i32,
    pub partitions_total: i32,
    pub keys_received: i64,
    pub bytes_received: i64,
    /// The sources' count of records still to come.
    pub keys_remaining: i64,
}
