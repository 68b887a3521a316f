//! A container's environment as the kubelet builds it: literal values with
//! `$(VAR)` expansion, and the downward API.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;

/// Values of `fieldRef` paths for one pod.
pub struct PodFields<'a> {
    pub pod: &'a Pod,
    pub ip: &'a str,
    pub node: &'a str,
}

impl PodFields<'_> {
    fn get(&self, path: &str) -> Option<String> {
        let pod = self.pod;
        let quoted = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix("']"))
                .map(str::to_string)
        };
        if let Some(key) = quoted("metadata.labels['") {
            return pod.labels().get(&key).cloned();
        }
        if let Some(key) = quoted("metadata.annotations['") {
            return pod.annotations().get(&key).cloned();
        }
        match path {
            "metadata.name" => Some(pod.name_any()),
            "metadata.namespace" => pod.namespace(),
            "metadata.uid" => pod.uid(),
            "status.podIP" | "status.podIPs" => Some(self.ip.to_string()),
            "status.hostIP" | "status.hostIPs" => Some("127.0.0.1".into()),
            "spec.nodeName" => Some(self.node.to_string()),
            "spec.serviceAccountName" => pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone()),
            _ => None,
        }
    }
}

/// Expands `$(NAME)` references to variables defined earlier; `$$(NAME)`
/// escapes, and unknown names stay as written, as in Kubernetes.
pub fn expand(value: &str, defined: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(escaped) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match defined.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment, in definition order. Secret and ConfigMap
/// references are resolved by the caller, which has the API.
pub fn container_env(
    container: &Container,
    fields: &PodFields<'_>,
    lookup: &dyn Fn(&str, &str, bool) -> Option<String>,
) -> Vec<(String, String)> {
    let mut defined: BTreeMap<String, String> = BTreeMap::new();
    let mut ordered = Vec::new();
    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            Some(expand(value, &defined))
        } else if let Some(source) = &var.value_from {
            if let Some(field) = &source.field_ref {
                fields.get(&field.field_path)
            } else if let Some(key) = &source.config_map_key_ref {
                lookup(&key.name, &key.key, false)
            } else if let Some(key) = &source.secret_key_ref {
                lookup(&key.name, &key.key, true)
            } else {
                None
            }
        } else {
            Some(String::new())
        };
        if let Some(value) = value {
            defined.insert(var.name.clone(), value.clone());
            ordered.push((var.name.clone(), value));
        }
    }
    ordered
}

/// Without a network namespace every pod shares the host's: an address
/// that means "every interface" is narrowed to the pod's own.
pub fn narrow_wildcard(value: &str, ip: &str) -> String {
    value.replace("0.0.0.0", ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_earlier_variables_only() {
        let defined = BTreeMap::from([("POD_IP".to_string(), "127.1.0.1".to_string())]);
        assert_eq!(expand("$(POD_IP):7379", &defined), "127.1.0.1:7379");
        assert_eq!(expand("$(LATER)", &defined), "$(LATER)");
        assert_eq!(expand("$$(POD_IP)", &defined), "$(POD_IP)");
        assert_eq!(expand("a$b", &defined), "a$b");
    }

    #[test]
    fn narrows_wildcards_to_the_pod() {
        assert_eq!(
            narrow_wildcard("0.0.0.0:7946", "127.1.0.3"),
            "127.1.0.3:7946"
        );
    }
}
