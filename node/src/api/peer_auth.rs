//! The peer port's door: every call must carry a token signed with the
//! cluster secret (see `ringkv_proto::peer_auth`), and ring changes an
//! admin token.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use ringkv_proto::peer_auth::{now_ms, AuthError, Caller, ClusterKey, Role, METADATA_KEY};
use tonic::{Request, Status};

use crate::server::log_limit::LogLimit;

static REFUSED_LOG: LogLimit = LogLimit::new(Duration::from_secs(10));

/// Checks each call on the peer port and records who made it in the
/// request's extensions. A tonic interceptor.
#[derive(Clone, Debug)]
pub struct VerifyPeer {
    /// None: the cluster has no secret, and every caller is trusted.
    key: Option<ClusterKey>,
    refused: Counter,
}

impl VerifyPeer {
    pub fn new(key: Option<ClusterKey>, refused: Counter) -> Self {
        Self { key, refused }
    }

    fn caller(&self, request: &Request<()>) -> Result<Caller, AuthError> {
        let Some(key) = &self.key else {
            return Ok(Caller {
                role: Role::Admin,
                issuer: "anyone (no --cluster-secret)".to_string(),
            });
        };
        let token = request
            .metadata()
            .get(METADATA_KEY)
            .ok_or(AuthError::Missing)?
            .to_str()
            .map_err(|_| AuthError::Malformed("not ASCII"))?;
        key.verify(token, now_ms())
    }
}

impl tonic::service::Interceptor for VerifyPeer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.caller(&request) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Err(error) => {
                self.refused.inc();
                if let Some(held_back) = REFUSED_LOG.admit() {
                    let from = request.remote_addr().map(|a| a.to_string());
                    tracing::warn!(%error, ?from, held_back, "refused a call on the peer port");
                }
                Err(Status::unauthenticated(error.to_string()))
            }
        }
    }
}

/// Ring changes need an administrator's token; a peer's will not do.
pub fn require_admin<T>(request: &Request<T>, what: &str) -> Result<(), Status> {
    match request.extensions().get::<Caller>() {
        Some(caller) if caller.role == Role::Admin => Ok(()),
        Some(caller) => Err(Status::permission_denied(format!(
            "{what} needs an admin token; {} signed a peer token",
            caller.issuer
        ))),
        None => Err(Status::unauthenticated(format!(
            "{what} is served on the peer port only"
        ))),
    }
}
