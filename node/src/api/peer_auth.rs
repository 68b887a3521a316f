//! The peer port's door: every call must carry a token signed with the
//! cluster secret (see `ringkv_proto::peer_auth`), and ring changes an
//! admin token. Over TLS, a caller's certificate must also be a node's:
//! one that names the cluster's `--tls-server-name`, not merely one the
//! cluster's CA signed (it may sign clients' too).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use ringkv_proto::peer_auth::{now_ms, AuthError, Caller, ClusterKey, Role, METADATA_KEY};
use rustls_pki_types::ServerName;
use tonic::{Request, Status};

use crate::server::{accept::ConnectionInfo, log_limit::LogLimit};

static REFUSED_LOG: LogLimit = LogLimit::new(Duration::from_secs(10));

/// Why a call on the peer port was refused.
#[derive(Debug, thiserror::Error)]
pub enum PeerRefusal {
    #[error(transparent)]
    Token(#[from] AuthError),
    #[error(
        "the client certificate does not name {name} (--tls-server-name): the CA signed it, \
         but only the cluster's nodes and its operator may call the peer port"
    )]
    NotANode { name: String },
    #[error("the client certificate does not parse: {0}")]
    BadCertificate(webpki::Error),
}

/// Checks each call on the peer port and records who made it in the
/// request's extensions. A tonic interceptor.
#[derive(Clone, Debug)]
pub struct VerifyPeer {
    /// None: the cluster has no secret, and every caller is trusted.
    key: Option<ClusterKey>,
    /// The name a node's certificate carries, when the port runs TLS.
    node_name: Option<ServerName<'static>>,
    refused: Counter,
}

impl VerifyPeer {
    pub fn new(key: Option<ClusterKey>, refused: Counter) -> Self {
        Self {
            key,
            node_name: None,
            refused,
        }
    }

    /// Callers that present a certificate must present one naming
    /// `server_name`, as every node's does. Without client authentication
    /// a caller may present none; its token then decides alone.
    pub fn with_node_certificates(mut self, server_name: ServerName<'static>) -> Self {
        self.node_name = Some(server_name);
        self
    }

    fn check_certificate(&self, request: &Request<()>) -> Result<(), PeerRefusal> {
        let chain = request
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(|info| info.certificates.clone());
        let (Some(name), Some(chain)) = (&self.node_name, chain) else {
            return Ok(());
        };
        let Some(leaf) = chain.first() else {
            return Ok(());
        };
        let cert = webpki::EndEntityCert::try_from(leaf).map_err(PeerRefusal::BadCertificate)?;
        cert.verify_is_valid_for_subject_name(name)
            .map_err(|_| PeerRefusal::NotANode {
                name: name.to_str().into_owned(),
            })
    }

    fn verify(&self, request: &Request<()>) -> Result<Caller, PeerRefusal> {
        self.check_certificate(request)?;
        Ok(self.caller(request)?)
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
        match self.verify(&request) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Err(error) => {
                self.refused.inc();
                if let Some(held_back) = REFUSED_LOG.admit() {
                    let from = request
                        .extensions()
                        .get::<ConnectionInfo>()
                        .and_then(|info| info.remote_addr)
                        .map(|a| a.to_string());
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
