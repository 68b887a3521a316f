//! The cluster secret: made once per KVCluster from random bytes, mounted
//! into every node as `--cluster-secret`, and read back on every reconcile
//! to sign the operator's Admin calls. A Secret of that name made before
//! the KVCluster is kept, so a user may choose the secret.

use k8s_openapi::api::core::v1::Secret;
use kube::{api::PostParams, runtime::events::EventType, Api};
use rand::RngCore;

use super::{events::publish, kube_error, Context, ReconcileError, FIELD_MANAGER};
use crate::{build, crd::KVCluster};

/// Random bytes in a made secret: as many as the HMAC-SHA256 key.
const SECRET_BYTES: usize = 32;

/// The cluster's secret, made now if it does not exist yet.
pub async fn ensure(
    ctx: &Context,
    kvc: &KVCluster,
    namespace: &str,
) -> Result<Vec<u8>, ReconcileError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = build::cluster_secret_name(kvc);
    if let Some(found) = read(&secrets, &name, namespace).await? {
        return Ok(found);
    }
    let made = random_secret();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match secrets
        .create(&params, &build::cluster_secret(kvc, &made))
        .await
    {
        Ok(_) => {
            publish(
                ctx,
                kvc,
                EventType::Normal,
                "ClusterSecretCreated",
                "Secure",
                format!("made Secret {name}, which authenticates the nodes' peer and admin calls"),
            )
            .await;
            Ok(made.into_bytes())
        }
        // Another reconcile made it first: use theirs.
        Err(kube::Error::Api(status)) if status.code == 409 => read(&secrets, &name, namespace)
            .await?
            .ok_or_else(|| ReconcileError::ClusterSecret {
                secret: format!("{namespace}/{name}"),
                problem: "was made by someone else and is gone again",
            }),
        Err(error) => Err(kube_error::<Secret>("creating", &name)(error)),
    }
}

async fn read(
    secrets: &Api<Secret>,
    name: &str,
    namespace: &str,
) -> Result<Option<Vec<u8>>, ReconcileError> {
    let Some(secret) = secrets
        .get_opt(name)
        .await
        .map_err(kube_error::<Secret>("reading", name))?
    else {
        return Ok(None);
    };
    let value = secret
        .data
        .and_then(|mut data| data.remove(build::CLUSTER_SECRET_KEY))
        .map(|bytes| bytes.0)
        .filter(|bytes| !bytes.is_empty())
        .ok_or_else(|| ReconcileError::ClusterSecret {
            secret: format!("{namespace}/{}", secret.metadata.name.unwrap_or_default()),
            problem: "has no non-empty key `secret`",
        })?;
    Ok(Some(value))
}

/// Hex, so that the value is also a valid environment variable and flag.
fn random_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_secrets_are_long_hex_and_differ() {
        let (a, b) = (random_secret(), random_secret());
        assert_eq!(a.len(), SECRET_BYTES * 2);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
