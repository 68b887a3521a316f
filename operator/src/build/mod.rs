//! The objects a KVCluster owns, built as pure functions of its spec (the
//! "build" step of validate, build, apply, update-status), so that every
//! decision about their shape is unit-tested without an API server.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{
            RollingUpdateStatefulSetStrategy, StatefulSet,
            StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
            StatefulSetUpdateStrategy,
        },
        core::v1::{
            Container, ContainerPort, EnvVar, EnvVarSource, GRPCAction, ObjectFieldSelector,
            PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe,
            SecretVolumeSource, Service, ServiceAccount, ServicePort, ServiceSpec, Volume,
            VolumeMount, VolumeResourceRequirements,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::Resource;

use crate::crd::{ConflictResolution, KVCluster, RetentionRule};

mod security;
mod service_monitor;
pub use security::{
    cluster_secret, cluster_secret_name, network_policy, CLUSTER_SECRET_KEY, OPERATOR_POD_LABEL,
};
pub use service_monitor::{service_monitor, service_monitor_resource, ServiceMonitors};

pub const GRPC_PORT: i32 = 7379;
/// Replica and Admin: the cluster's own port, which the operator calls.
pub const PEER_PORT: i32 = ringkv_client::peer_auth::DEFAULT_PEER_PORT as i32;
pub const GOSSIP_PORT: i32 = 7946;
pub const METRICS_PORT: i32 = 9379;
/// The name of the metrics port, on the pods and the peers Service.
pub const METRICS_PORT_NAME: &str = "metrics";
/// Plaintext gRPC health for the probes, which cannot speak TLS.
pub const HEALTH_PORT: i32 = 7380;
const TLS_DIR: &str = "/etc/ringkv/tls";
const TLS_CA_DIR: &str = "/etc/ringkv/tls-ca";
/// The storage node's container in each pod.
pub const NODE_CONTAINER: &str = "node";
/// Pod annotation that carries a node's zone, copied by the operator from
/// the label `zoneTopologyKey` of the Kubernetes node the pod runs on.
pub const ZONE_ANNOTATION: &str = "ringkv.io/zone";
const DATA_DIR: &str = "/data";

/// Labels every node pod of a cluster carries; the selector of everything.
pub fn selector_labels(kvc: &KVCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "ringkv".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            kvc.name_any_or_default(),
        ),
    ])
}

/// `key=value,...` form of the selector, for the scale subresource and the
/// nodes' Kubernetes seed provider.
pub fn selector_string(kvc: &KVCluster) -> String {
    selector_labels(kvc)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels(kvc: &KVCluster) -> BTreeMap<String, String> {
    let mut labels = selector_labels(kvc);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "ringkv-operator".into(),
    );
    labels
}

trait NameOrDefault {
    fn name_any_or_default(&self) -> String;
}

impl NameOrDefault for KVCluster {
    fn name_any_or_default(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }
}

fn owner(kvc: &KVCluster) -> Vec<OwnerReference> {
    kvc.controller_owner_ref(&()).into_iter().collect()
}

fn meta(kvc: &KVCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: kvc.meta().namespace.clone(),
        labels: Some(labels(kvc)),
        owner_references: Some(owner(kvc)),
        ..Default::default()
    }
}

/// Name of the headless Service used for seeding and stable pod names.
pub fn peers_service_name(kvc: &KVCluster) -> String {
    format!("{}-peers", kvc.name_any_or_default())
}

/// Name of the nodes' ServiceAccount, Role and RoleBinding.
pub fn node_account_name(kvc: &KVCluster) -> String {
    format!("{}-node", kvc.name_any_or_default())
}

/// The headless Service: every pod, ready or not, so that nodes find each
/// other before they are ready.
pub fn peers_service(kvc: &KVCluster) -> Service {
    let mut metadata = meta(kvc, peers_service_name(kvc));
    // What the cluster's ServiceMonitor selects: the client Service has
    // the same instance labels but no metrics port.
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert("app.kubernetes.io/component".into(), "peers".into());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(kvc)),
            ports: Some(vec![
                ServicePort {
                    name: Some("grpc".into()),
                    port: GRPC_PORT,
                    app_protocol: Some("grpc".into()),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("peer".into()),
                    port: PEER_PORT,
                    app_protocol: Some("grpc".into()),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("gossip".into()),
                    port: GOSSIP_PORT,
                    protocol: Some("UDP".into()),
                    ..Default::default()
                },
                ServicePort {
                    name: Some(METRICS_PORT_NAME.into()),
                    port: METRICS_PORT,
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The client Service: ready nodes only, port named `grpc`.
pub fn client_service(kvc: &KVCluster) -> Service {
    Service {
        metadata: meta(kvc, kvc.name_any_or_default()),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(kvc)),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: GRPC_PORT,
                target_port: Some(IntOrString::Int(GRPC_PORT)),
                app_protocol: Some("grpc".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// How many nodes may be down at once without losing a quorum:
/// N − max(R, W), and at least 1 so that drains can progress.
pub fn max_unavailable(kvc: &KVCluster) -> i32 {
    let spec = &kvc.spec;
    (spec.replication_factor - spec.read_quorum.max(spec.write_quorum)).max(1)
}

pub fn pod_disruption_budget(kvc: &KVCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(kvc, kvc.name_any_or_default()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable(kvc))),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(kvc)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn node_service_account(kvc: &KVCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(kvc, node_account_name(kvc)),
        ..Default::default()
    }
}

/// Node pods may list and watch pods in their namespace (their seeds), and
/// nothing more.
pub fn node_role(kvc: &KVCluster) -> Role {
    Role {
        metadata: meta(kvc, node_account_name(kvc)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["list".into(), "watch".into()],
            ..Default::default()
        }]),
    }
}

pub fn node_role_binding(kvc: &KVCluster) -> RoleBinding {
    RoleBinding {
        metadata: meta(kvc, node_account_name(kvc)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: node_account_name(kvc),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: node_account_name(kvc),
            namespace: kvc.meta().namespace.clone(),
            ..Default::default()
        }]),
    }
}

fn env(name: &str, value: impl ToString) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.to_string()),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Environment of a node container: every setting through its `RINGKV_*`
/// variable, identity from the downward API, seeds from the Kubernetes API.
pub fn node_env(kvc: &KVCluster) -> Vec<EnvVar> {
    let spec = &kvc.spec;
    let mut vars = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
        env("RINGKV_NODE_ID", "$(POD_NAME)"),
        env("RINGKV_POD_NAME", "$(POD_NAME)"),
        env("RINGKV_LISTEN", format!("0.0.0.0:{GRPC_PORT}")),
        env("RINGKV_ADVERTISE_ADDRESS", format!("$(POD_IP):{GRPC_PORT}")),
        env("RINGKV_PEER_LISTEN", format!("0.0.0.0:{PEER_PORT}")),
        env("RINGKV_GOSSIP_LISTEN", format!("0.0.0.0:{GOSSIP_PORT}")),
        env("RINGKV_METRICS_LISTEN", format!("0.0.0.0:{METRICS_PORT}")),
        env("RINGKV_HEALTH_LISTEN", format!("0.0.0.0:{HEALTH_PORT}")),
        env("RINGKV_DATA_DIR", DATA_DIR),
        env("RINGKV_DISCOVERY", "kubernetes"),
        env("RINGKV_KUBERNETES_SELECTOR", selector_string(kvc)),
        env("RINGKV_KUBERNETES_NAMESPACE", "$(POD_NAMESPACE)"),
        env("RINGKV_CLUSTER_ID", kvc.name_any_or_default()),
        env("RINGKV_PARTITIONS", spec.partitions),
        env("RINGKV_REPLICATION_FACTOR", spec.replication_factor),
        env("RINGKV_READ_QUORUM", spec.read_quorum),
        env("RINGKV_WRITE_QUORUM", spec.write_quorum),
        env(
            "RINGKV_CONFLICT_RESOLUTION",
            match spec.conflict_resolution {
                ConflictResolution::Siblings => "siblings",
                ConflictResolution::Lww => "lww",
            },
        ),
        env(
            "RINGKV_ANTI_ENTROPY_INTERVAL_SECS",
            spec.config.anti_entropy_interval_seconds,
        ),
        env("RINGKV_HINT_MAX_AGE_SECS", spec.config.hint_max_age_seconds),
        env("RINGKV_GC_GRACE_SECS", spec.config.gc_grace_seconds),
        env("RINGKV_LOG_FORMAT", "json"),
        // A pod the StatefulSet keeps is meant to be a member, even one
        // whose node left in a scale-down the user took back.
        env("RINGKV_REJOIN_AFTER_LEAVE", "true"),
        // Endpoints drop a terminating pod within a second or two; requests
        // already on their way are still served.
        env("RINGKV_SHUTDOWN_DELAY_MS", 3000),
        security::cluster_secret_env(kvc),
    ];
    if spec.zone_topology_key.is_some() {
        vars.push(env("RINGKV_ZONE_ANNOTATION", ZONE_ANNOTATION));
    }
    if let Some(tls) = &spec.tls {
        let ca_dir = if tls.ca_secret_name.is_some() {
            TLS_CA_DIR
        } else {
            TLS_DIR
        };
        vars.extend([
            env("RINGKV_TLS_CERT_FILE", format!("{TLS_DIR}/tls.crt")),
            env("RINGKV_TLS_KEY_FILE", format!("{TLS_DIR}/tls.key")),
            env("RINGKV_TLS_CA_FILE", format!("{ca_dir}/ca.crt")),
            env(
                "RINGKV_TLS_SERVER_NAME",
                format!("{}.$(POD_NAMESPACE).svc", peers_service_name(kvc)),
            ),
            env("RINGKV_TLS_CLIENT_AUTH", tls.client_auth),
        ]);
    }
    vars
}

/// The name nodes and the operator verify in the nodes' certificates.
pub fn tls_server_name(kvc: &KVCluster) -> String {
    format!(
        "{}.{}.svc",
        peers_service_name(kvc),
        kvc.meta().namespace.as_deref().unwrap_or("default")
    )
}

/// Secret volumes and their mounts for TLS.
fn tls_volumes(kvc: &KVCluster) -> (Vec<Volume>, Vec<VolumeMount>) {
    let Some(tls) = &kvc.spec.tls else {
        return (Vec::new(), Vec::new());
    };
    let secret_volume = |name: &str, secret: &str, dir: &str| {
        (
            Volume {
                name: name.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.into()),
                    default_mode: Some(0o440),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeMount {
                name: name.into(),
                mount_path: dir.into(),
                read_only: Some(true),
                ..Default::default()
            },
        )
    };
    let mut pairs = vec![secret_volume("tls", &tls.server_secret_name, TLS_DIR)];
    if let Some(ca) = &tls.ca_secret_name {
        pairs.push(secret_volume("tls-ca", ca, TLS_CA_DIR));
    }
    pairs.into_iter().unzip()
}

fn grpc_probe(service: &str, period: i32, failures: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: HEALTH_PORT,
            service: Some(service.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn retention(rule: RetentionRule) -> String {
    match rule {
        RetentionRule::Retain => "Retain".into(),
        RetentionRule::Delete => "Delete".into(),
    }
}

/// The StatefulSet of node pods with `replicas` pods. `partition` is the
/// rolling-update partition the operator drives: pods with an ordinal below
/// it keep the old template.
pub fn stateful_set(kvc: &KVCluster, replicas: i32, partition: i32) -> StatefulSet {
    let spec = &kvc.spec;
    let overrides = spec.pod_template.clone().unwrap_or_default();
    let (tls_volumes, tls_mounts) = tls_volumes(kvc);
    let container = Container {
        name: NODE_CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        env: Some(node_env(kvc)),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("peer".into()),
                container_port: PEER_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("gossip".into()),
                container_port: GOSSIP_PORT,
                protocol: Some("UDP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some(METRICS_PORT_NAME.into()),
                container_port: METRICS_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("health".into()),
                container_port: HEALTH_PORT,
                ..Default::default()
            },
        ]),
        // Ready means a member of the ring serving its partitions; alive
        // means the process answers. Readiness is probed often so that a
        // node that left, or is shutting down, leaves the endpoints within
        // seconds.
        readiness_probe: Some(grpc_probe("ringkv.v1.RawKV", 2, 2)),
        liveness_probe: Some(grpc_probe("", 10, 6)),
        resources: spec.resources.clone(),
        volume_mounts: Some(
            [VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..Default::default()
            }]
            .into_iter()
            .chain(tls_mounts)
            .collect(),
        ),
        security_context: Some(security::node_container_security()),
        ..Default::default()
    };
    let mut pod_labels = selector_labels(kvc);
    pod_labels.insert("app.kubernetes.io/component".into(), "storage-node".into());
    StatefulSet {
        metadata: meta(kvc, kvc.name_any_or_default()),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(peers_service_name(kvc)),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(kvc)),
                ..Default::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(partition),
                    ..Default::default()
                }),
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_scaled: Some(retention(
                        spec.persistent_volume_claim_retention_policy.when_scaled,
                    )),
                    when_deleted: Some(retention(
                        spec.persistent_volume_claim_retention_policy.when_deleted,
                    )),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: overrides.annotations,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(node_account_name(kvc)),
                    containers: vec![container],
                    volumes: (!tls_volumes.is_empty()).then_some(tls_volumes),
                    node_selector: overrides.node_selector,
                    tolerations: overrides.tolerations,
                    affinity: overrides.affinity,
                    topology_spread_constraints: overrides.topology_spread_constraints,
                    security_context: Some(security::node_pod_security()),
                    termination_grace_period_seconds: Some(60),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    labels: Some(selector_labels(kvc)),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: spec.storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity(spec.storage.size.clone()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> KVCluster {
        let mut kvc: KVCluster = serde_yaml::from_str(yaml).expect("valid KVCluster");
        kvc.metadata.uid = Some("uid-1".into());
        kvc
    }

    const DEMO: &str = r#"
apiVersion: ringkv.io/v1alpha1
kind: KVCluster
metadata: { name: demo, namespace: store }
spec: { replicas: 3 }
"#;

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let kvc = cluster(DEMO);
        assert_eq!(kvc.spec.replication_factor, 3);
        assert_eq!((kvc.spec.read_quorum, kvc.spec.write_quorum), (2, 2));
        assert_eq!(kvc.spec.partitions, 256);
        assert_eq!(kvc.spec.conflict_resolution, ConflictResolution::Siblings);
    }

    #[test]
    fn the_example_manifest_parses() {
        let example = include_str!("../../../examples/kvcluster.yaml");
        let kvc = cluster(example);
        assert_eq!(kvc.spec.replicas, 3);
        assert_eq!(
            kvc.spec
                .persistent_volume_claim_retention_policy
                .when_scaled,
            RetentionRule::Delete
        );
    }

    #[test]
    fn pdb_allows_n_minus_max_r_w_down_and_at_least_one() {
        let mut kvc = cluster(DEMO);
        assert_eq!(max_unavailable(&kvc), 1);
        kvc.spec.replication_factor = 5;
        kvc.spec.read_quorum = 2;
        kvc.spec.write_quorum = 3;
        assert_eq!(max_unavailable(&kvc), 2);
        kvc.spec.read_quorum = 5;
        assert_eq!(max_unavailable(&kvc), 1, "never below 1");
    }

    #[test]
    fn services_seed_with_unready_pods_and_serve_clients_on_grpc() {
        let kvc = cluster(DEMO);
        let peers = peers_service(&kvc).spec.expect("spec");
        assert_eq!(peers.cluster_ip.as_deref(), Some("None"));
        assert_eq!(peers.publish_not_ready_addresses, Some(true));
        let client = client_service(&kvc).spec.expect("spec");
        let port = &client.ports.expect("ports")[0];
        assert_eq!(port.name.as_deref(), Some("grpc"));
        assert_eq!(port.app_protocol.as_deref(), Some("grpc"));
    }

    #[test]
    fn the_service_monitor_scrapes_every_node_through_the_peers_service() {
        let kvc = cluster(DEMO);
        let config = ServiceMonitors {
            interval: "15s".into(),
            labels: BTreeMap::from([("release".to_string(), "kube-prometheus".to_string())]),
        };
        let monitor = service_monitor(&kvc, &config);
        let types = monitor.types.as_ref().expect("types");
        assert_eq!(
            (types.api_version.as_str(), types.kind.as_str()),
            ("monitoring.coreos.com/v1", "ServiceMonitor")
        );
        let labels = monitor.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get("release").map(String::as_str),
            Some("kube-prometheus")
        );
        assert!(monitor.metadata.owner_references.is_some());
        // It selects the peers Service, and only it: that one publishes
        // unready pods and names the metrics port.
        let peers = peers_service(&kvc);
        let peer_labels = peers.metadata.labels.clone().expect("labels");
        let selected = monitor.data["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        for (k, v) in selected {
            assert_eq!(peer_labels.get(k).map(String::as_str), v.as_str(), "{k}");
        }
        let client_labels = client_service(&kvc).metadata.labels.expect("labels");
        assert!(selected
            .iter()
            .any(|(k, v)| client_labels.get(k).map(String::as_str) != v.as_str()));
        let endpoint = &monitor.data["spec"]["endpoints"][0];
        assert_eq!(endpoint["port"], METRICS_PORT_NAME);
        assert_eq!(endpoint["interval"], "15s");
        let spec = peers.spec.expect("spec");
        assert!(spec
            .ports
            .expect("ports")
            .iter()
            .any(|p| { p.name.as_deref() == Some(METRICS_PORT_NAME) && p.port == METRICS_PORT }));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
    }

    #[test]
    fn stateful_set_pods_seed_from_the_api_and_probe_ring_readiness() {
        let kvc = cluster(DEMO);
        let sts = stateful_set(&kvc, 3, 0);
        let spec = sts.spec;
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(spec.service_name.as_deref(), Some("demo-peers"));
        let pod = spec.template.spec.expect("pod");
        let node = &pod.containers[0];
        let env: BTreeMap<_, _> = node
            .env
            .as_ref()
            .expect("env")
            .iter()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["RINGKV_DISCOVERY"], "kubernetes");
        assert!(!env.contains_key("RINGKV_SEEDS"), "no static seed list");
        assert_eq!(
            env["RINGKV_KUBERNETES_SELECTOR"],
            "app.kubernetes.io/instance=demo,app.kubernetes.io/name=ringkv"
        );
        let readiness = node
            .readiness_probe
            .as_ref()
            .and_then(|p| p.grpc.as_ref())
            .expect("grpc probe");
        assert_eq!(readiness.service.as_deref(), Some("ringkv.v1.RawKV"));
        assert_eq!(readiness.port, HEALTH_PORT, "probes use the plaintext port");
        assert_eq!(env["RINGKV_HEALTH_LISTEN"], "0.0.0.0:7380");
        assert!(
            !env.contains_key("RINGKV_TLS_CERT_FILE"),
            "TLS only when asked"
        );
        assert!(pod.volumes.is_none());
        assert_eq!(pod.service_account_name.as_deref(), Some("demo-node"));
        let owner = sts.metadata.owner_references.expect("owner")[0].clone();
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("KVCluster", Some(true))
        );
    }

    #[test]
    fn tls_mounts_the_secrets_and_names_the_peers_service() {
        let kvc = cluster(
            r#"
apiVersion: ringkv.io/v1alpha1
kind: KVCluster
metadata: { name: demo, namespace: store }
spec:
  replicas: 3
  tls: { serverSecretName: demo-tls, caSecretName: demo-ca, clientAuth: true }
"#,
        );
        assert_eq!(tls_server_name(&kvc), "demo-peers.store.svc");
        let pod = stateful_set(&kvc, 3, 0).spec.template.spec.expect("pod");
        let env: BTreeMap<_, _> = pod.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["RINGKV_TLS_CERT_FILE"], "/etc/ringkv/tls/tls.crt");
        assert_eq!(env["RINGKV_TLS_KEY_FILE"], "/etc/ringkv/tls/tls.key");
        assert_eq!(env["RINGKV_TLS_CA_FILE"], "/etc/ringkv/tls-ca/ca.crt");
        assert_eq!(
            env["RINGKV_TLS_SERVER_NAME"],
            "demo-peers.$(POD_NAMESPACE).svc"
        );
        assert_eq!(env["RINGKV_TLS_CLIENT_AUTH"], "true");
        let secrets: Vec<_> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
            .collect();
        assert_eq!(secrets, ["demo-tls", "demo-ca"]);
        let mounts: Vec<_> = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.mount_path.as_str(), m.read_only))
            .collect();
        assert!(mounts.contains(&("/etc/ringkv/tls", Some(true))));
        assert!(mounts.contains(&("/etc/ringkv/tls-ca", Some(true))));
    }

    #[test]
    fn node_role_lists_and_watches_pods_only() {
        let role = node_role(&cluster(DEMO));
        let rules = role.rules.expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["pods".to_string()][..])
        );
        assert_eq!(
            rules[0].verbs,
            vec!["list".to_string(), "watch".to_string()]
        );
    }
}
