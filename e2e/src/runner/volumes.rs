//! A pod's volumes as host directories, bind-mounted at each container's
//! mount paths by [`super::process`].

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::{
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, ServiceAccount, Volume},
    },
    ByteString,
};
use kube::{api::PostParams, Api, ResourceExt};

use super::{provisioner, Runner, RunnerError};

/// Host directories of a pod's volumes, by volume name.
pub type VolumePaths = BTreeMap<String, PathBuf>;

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RunnerError> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(RunnerError::io(format!("creating {}", parent.display())))?;
    }
    std::fs::write(&path, bytes).map_err(RunnerError::io(format!("writing {}", path.display())))
}

/// A service-account token bound to the pod, as the kubelet requests it.
pub async fn token(
    runner: &Runner,
    pod: &Pod,
    audience: Option<String>,
    seconds: i64,
) -> Result<String, RunnerError> {
    let namespace = pod.namespace().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(runner.client.clone(), &namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a]),
            expiration_seconds: Some(seconds.max(600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let response = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(RunnerError::kube(format!(
            "token for {namespace}/{account}"
        )))?;
    Ok(response.status.and_then(|s| s.token).unwrap_or_default())
}

/// The kubeconfig through which a pod's processes reach the API server
/// with the pod's service-account token.
pub async fn write_kubeconfig(
    runner: &Runner,
    pod: &Pod,
    dir: &Path,
) -> Result<PathBuf, RunnerError> {
    let token = token(runner, pod, None, 24 * 3600).await?;
    let namespace = pod.namespace().unwrap_or_default();
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority: {dir}/ca.crt\nusers:\n- name: pod\n  user:\n    token: {token}\ncontexts:\n- name: pod\n  context:\n    cluster: e2e\n    user: pod\n    namespace: {namespace}\ncurrent-context: pod\n",
        server = runner.api_server,
        dir = dir.display(),
    );
    write_file(dir, "ca.crt", runner.ca_pem.as_bytes())?;
    write_file(dir, "kubeconfig", config.as_bytes())?;
    Ok(dir.join("kubeconfig"))
}

async fn config_map(
    runner: &Runner,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, RunnerError> {
    let maps: Api<ConfigMap> = Api::namespaced(runner.client.clone(), namespace);
    let map = maps
        .get(name)
        .await
        .map_err(RunnerError::kube(format!("configmap {namespace}/{name}")))?;
    let mut out: BTreeMap<String, Vec<u8>> = map
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    out.extend(
        map.binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, ByteString(v))| (k, v)),
    );
    Ok(out)
}

async fn secret(
    runner: &Runner,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, RunnerError> {
    let secrets: Api<Secret> = Api::namespaced(runner.client.clone(), namespace);
    let secret = secrets
        .get(name)
        .await
        .map_err(RunnerError::kube(format!("secret {namespace}/{name}")))?;
    let mut out: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, ByteString(v))| (k, v))
        .collect();
    out.extend(
        secret
            .string_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    Ok(out)
}

/// One key of a ConfigMap or Secret, for `valueFrom`.
pub async fn key(
    runner: &Runner,
    namespace: &str,
    name: &str,
    key: &str,
    is_secret: bool,
) -> Option<String> {
    let data = if is_secret {
        secret(runner, namespace, name).await.ok()?
    } else {
        config_map(runner, namespace, name).await.ok()?
    };
    data.get(key)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
) -> Result<(), RunnerError> {
    match items {
        Some(items) => {
            for item in items {
                if let Some(bytes) = data.get(&item.key) {
                    write_file(dir, &item.path, bytes)?;
                }
            }
        }
        None => {
            for (k, v) in data {
                write_file(dir, k, v)?;
            }
        }
    }
    Ok(())
}

/// Makes every volume of the pod a host directory.
pub async fn prepare(
    runner: &Runner,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<VolumePaths, RunnerError> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut paths = VolumePaths::new();
    let volumes: Vec<Volume> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for volume in volumes {
        let dir = pod_dir.join("volumes").join(&volume.name);
        let path = if let Some(claim) = &volume.persistent_volume_claim {
            claim_dir(runner, &namespace, &claim.claim_name).await?
        } else if let Some(host) = &volume.host_path {
            PathBuf::from(&host.path)
        } else {
            std::fs::create_dir_all(&dir)
                .map_err(RunnerError::io(format!("creating {}", dir.display())))?;
            if let Some(source) = &volume.config_map {
                let data = config_map(runner, &namespace, &source.name).await?;
                write_items(&dir, &data, source.items.as_ref())?;
            } else if let Some(source) = &volume.secret {
                let name = source.secret_name.clone().unwrap_or_default();
                let data = secret(runner, &namespace, &name).await?;
                write_items(&dir, &data, source.items.as_ref())?;
            } else if let Some(projected) = &volume.projected {
                for source in projected.sources.iter().flatten() {
                    if let Some(token_source) = &source.service_account_token {
                        let token = token(
                            runner,
                            pod,
                            token_source.audience.clone(),
                            token_source.expiration_seconds.unwrap_or(3600),
                        )
                        .await?;
                        write_file(&dir, &token_source.path, token.as_bytes())?;
                    }
                    if let Some(map) = &source.config_map {
                        let data = config_map(runner, &namespace, &map.name).await?;
                        write_items(&dir, &data, map.items.as_ref())?;
                    }
                    if let Some(downward) = &source.downward_api {
                        for item in downward.items.iter().flatten() {
                            if item
                                .field_ref
                                .as_ref()
                                .is_some_and(|f| f.field_path == "metadata.namespace")
                            {
                                write_file(&dir, &item.path, namespace.as_bytes())?;
                            }
                        }
                    }
                }
            }
            dir
        };
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

/// The directory behind a claim: that of its bound PersistentVolume, so
/// that it outlives the pod and dies with the claim.
async fn claim_dir(runner: &Runner, namespace: &str, claim: &str) -> Result<PathBuf, RunnerError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(runner.client.clone(), namespace);
    for _ in 0..600 {
        let pvc = claims
            .get(claim)
            .await
            .map_err(RunnerError::kube(format!("claim {namespace}/{claim}")))?;
        if let Some(volume) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) {
            let dir = provisioner::volume_dir(runner, &volume);
            std::fs::create_dir_all(&dir)
                .map_err(RunnerError::io(format!("creating {}", dir.display())))?;
            return Ok(dir);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(RunnerError::Unsupported(format!(
        "claim {namespace}/{claim} never bound"
    )))
}
