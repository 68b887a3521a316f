//! What keeps a cluster's own surfaces to itself: the Secret that
//! authenticates peer calls, the NetworkPolicy that fences the peer and
//! gossip ports, and the pods' security contexts.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{
            Capabilities, EnvVar, EnvVarSource, PodSecurityContext, SeccompProfile, Secret,
            SecretKeySelector, SecurityContext,
        },
        networking::v1::{
            NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
            NetworkPolicySpec,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
    ByteString,
};

use super::{
    meta, selector_labels, NameOrDefault, GOSSIP_PORT, GRPC_PORT, HEALTH_PORT, METRICS_PORT,
    PEER_PORT,
};
use crate::crd::KVCluster;

/// The key of the cluster Secret that holds `--cluster-secret`.
pub const CLUSTER_SECRET_KEY: &str = "secret";
/// The label the Helm chart puts on the operator's pods: the NetworkPolicy
/// lets them reach the peer port, where the Admin service is.
pub const OPERATOR_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "ringkv-operator");
/// The user every node runs as (distroless's `nonroot`).
const NODE_USER: i64 = 65532;

/// Name of the Secret whose key [`CLUSTER_SECRET_KEY`] every node of the
/// cluster runs with as `--cluster-secret`.
pub fn cluster_secret_name(kvc: &KVCluster) -> String {
    format!("{}-cluster-secret", kvc.name_any_or_default())
}

/// The cluster Secret, holding `secret` (random, made once by the operator
/// and never overwritten: changing it would also void every causal
/// context clients hold).
pub fn cluster_secret(kvc: &KVCluster, secret: &str) -> Secret {
    Secret {
        metadata: meta(kvc, cluster_secret_name(kvc)),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            CLUSTER_SECRET_KEY.to_string(),
            ByteString(secret.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// `RINGKV_CLUSTER_SECRET` from the cluster Secret.
pub fn cluster_secret_env(kvc: &KVCluster) -> EnvVar {
    EnvVar {
        name: "RINGKV_CLUSTER_SECRET".into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: cluster_secret_name(kvc),
                key: CLUSTER_SECRET_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Clients reach the client, health and metrics ports from anywhere; the
/// peer port and gossip only from the cluster's own pods and the operator.
/// The token on every peer call stays the guard where the network plugin
/// does not enforce policies.
pub fn network_policy(kvc: &KVCluster) -> NetworkPolicy {
    let port = |port: i32, protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    let own_pods = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(kvc)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                OPERATOR_POD_LABEL.0.to_string(),
                OPERATOR_POD_LABEL.1.to_string(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta(kvc, kvc.name_any_or_default()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(kvc)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: Some(vec![
                        port(GRPC_PORT, "TCP"),
                        port(HEALTH_PORT, "TCP"),
                        port(METRICS_PORT, "TCP"),
                    ]),
                    from: None,
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(PEER_PORT, "TCP"), port(GOSSIP_PORT, "UDP")]),
                    from: Some(vec![own_pods, operator]),
                },
            ]),
            ..Default::default()
        }),
    }
}

/// The node container holds no capability and cannot gain privileges.
pub fn node_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The node pod runs as a fixed non-root user under the runtime's default
/// seccomp profile.
pub fn node_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NODE_USER),
        fs_group: Some(NODE_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{node_env, stateful_set};

    fn cluster() -> KVCluster {
        let mut kvc: KVCluster = serde_yaml::from_str(
            "apiVersion: ringkv.io/v1alpha1\nkind: KVCluster\nmetadata: {name: demo, namespace: store}\nspec: {replicas: 3}\n",
        )
        .expect("KVCluster");
        kvc.metadata.uid = Some("uid-1".into());
        kvc
    }

    #[test]
    fn nodes_run_with_the_cluster_secret_from_its_secret() {
        let kvc = cluster();
        let env = node_env(&kvc);
        let var = env
            .iter()
            .find(|v| v.name == "RINGKV_CLUSTER_SECRET")
            .expect("the secret's variable");
        let key = var
            .value_from
            .as_ref()
            .and_then(|s| s.secret_key_ref.as_ref())
            .expect("from a Secret");
        assert_eq!(key.name, "demo-cluster-secret");
        assert_eq!(key.key, CLUSTER_SECRET_KEY);
        assert_eq!(var.value, None, "never inline in the pod spec");
        let secret = cluster_secret(&kvc, "s3cret");
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-cluster-secret"));
        assert_eq!(
            secret.data.expect("data")[CLUSTER_SECRET_KEY].0,
            b"s3cret".to_vec()
        );
        assert!(
            !secret
                .metadata
                .owner_references
                .unwrap_or_default()
                .is_empty(),
            "deleted with its KVCluster"
        );
    }

    #[test]
    fn only_the_cluster_and_the_operator_reach_peer_and_gossip() {
        let policy = network_policy(&cluster()).spec.expect("spec");
        let rules = policy.ingress.expect("ingress rules");
        let open: Vec<i32> = rules
            .iter()
            .filter(|r| r.from.is_none())
            .flat_map(|r| r.ports.iter().flatten())
            .filter_map(|p| match p.port {
                Some(IntOrString::Int(port)) => Some(port),
                _ => None,
            })
            .collect();
        assert_eq!(open, [GRPC_PORT, HEALTH_PORT, METRICS_PORT]);
        let fenced = rules
            .iter()
            .find(|r| r.from.is_some())
            .expect("a fenced rule");
        let ports: Vec<(i32, String)> = fenced
            .ports
            .iter()
            .flatten()
            .filter_map(|p| match p.port {
                Some(IntOrString::Int(port)) => Some((port, p.protocol.clone()?)),
                _ => None,
            })
            .collect();
        assert_eq!(
            ports,
            [(PEER_PORT, "TCP".to_string()), (GOSSIP_PORT, "UDP".into())]
        );
        let from = fenced.from.as_ref().expect("peers");
        assert_eq!(
            from[0]
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(selector_labels(&cluster()))
        );
        assert!(
            from[1].namespace_selector.is_some(),
            "the operator's namespace may differ"
        );
    }

    #[test]
    fn node_pods_drop_every_capability_under_runtime_default_seccomp() {
        let set = stateful_set(&cluster(), 3, 0);
        let pod = set.spec.template.spec.expect("pod");
        let seccomp = pod
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref())
            .expect("seccomp");
        assert_eq!(seccomp.type_, "RuntimeDefault");
        let container = pod.containers[0].security_context.clone().expect("context");
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(
            container.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
    }
}
