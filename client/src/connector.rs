//! How a client reaches a node: plaintext, or TLS against the cluster's CA.

use std::{path::Path, time::Duration};

use ringkv_proto::peer_auth::{Authenticate, ClusterKey, Role};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::{proto, Client, ClientError};

/// A channel to a node's peer port whose calls carry a signed token.
pub type SignedChannel = InterceptedService<Channel, Authenticate>;

/// Connects to nodes, in plaintext or over TLS. Cloning is cheap.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    tls: Option<ClientTlsConfig>,
    /// Signs calls to the peer port (Admin), when the cluster has a secret.
    key: Option<ClusterKey>,
    /// The name tokens carry, for the nodes' logs.
    issuer: Option<String>,
    /// How long any call may wait for its answer, unless the call sets a
    /// shorter `grpc-timeout` of its own.
    request_timeout: Option<Duration>,
}

impl Connector {
    /// Plain HTTP/2: for clusters without `--tls-cert-file`.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// TLS: trust the nodes' certificates signed by `ca_pem`, verify
    /// `server_name` in them (nodes are usually dialled by IP address, which
    /// certificates rarely name), and present `identity` (certificate and
    /// key, PEM) when the cluster requires client certificates.
    pub fn tls(ca_pem: &[u8], server_name: Option<&str>, identity: Option<(&[u8], &[u8])>) -> Self {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        if let Some(name) = server_name {
            tls = tls.domain_name(name);
        }
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Self {
            tls: Some(tls),
            ..Self::default()
        }
    }

    /// Signs Admin calls with the cluster's `--cluster-secret`, as
    /// `issuer`: nodes refuse unsigned calls on their peer port once the
    /// cluster has a secret.
    pub fn with_cluster_secret(mut self, secret: &[u8], issuer: &str) -> Self {
        self.key = Some(ClusterKey::new(secret));
        self.issuer = Some(issuer.to_string());
        self
    }

    /// Gives every call made through this connector's channels at most
    /// `timeout` to be answered (a call's own shorter deadline still
    /// wins): a node that stops answering fails the call instead of
    /// holding the caller forever.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// [`Connector::tls`] from PEM files.
    pub fn tls_from_files(
        ca: &Path,
        server_name: Option<&str>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, ClientError> {
        let ca = read(ca)?;
        let identity = match identity {
            Some((cert, key)) => Some((read(cert)?, read(key)?)),
            None => None,
        };
        Ok(Self::tls(
            &ca,
            server_name,
            identity
                .as_ref()
                .map(|(cert, key)| (cert.as_slice(), key.as_slice())),
        ))
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Turns `HOST:PORT` (or a full URI) into a gRPC endpoint.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, ClientError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = if address.contains("://") {
            address.to_string()
        } else {
            format!("{scheme}://{address}")
        };
        let invalid = |source| ClientError::InvalidEndpoint {
            endpoint: address.to_string(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(invalid)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(timeout) = self.request_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).map_err(invalid),
            None => Ok(endpoint),
        }
    }

    /// Opens a channel to `HOST:PORT`.
    pub async fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        self.endpoint(address)?
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                endpoint: address.to_string(),
                source,
            })
    }

    /// A RawKV client of the node at `address`.
    pub async fn client(&self, address: &str) -> Result<Client, ClientError> {
        Ok(Client::from_channel(self.channel(address).await?))
    }

    /// Whether the node at `address` reports SERVING for `ringkv.v1.RawKV` on
    /// the standard gRPC health service: it is a member of the ring and
    /// serves its partitions, not merely a running process.
    pub async fn is_serving(&self, address: &str) -> Result<bool, ClientError> {
        use tonic_health::pb::{
            health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
        };
        let response = HealthClient::new(self.channel(address).await?)
            .check(HealthCheckRequest {
                service: "ringkv.v1.RawKV".to_string(),
            })
            .await?;
        Ok(response.into_inner().status == ServingStatus::Serving as i32)
    }

    /// The node at `address`'s view of the cluster.
    pub async fn cluster_status(
        &self,
        address: &str,
    ) -> Result<proto::ClusterStatusResponse, ClientError> {
        let mut request = tonic::Request::new(proto::ClusterStatusRequest {});
        request.set_timeout(Duration::from_secs(5));
        Ok(self
            .admin(address)
            .await?
            .cluster_status(request)
            .await?
            .into_inner())
    }

    /// Asks the cluster at `address` to take `node_id` out of the ring.
    pub async fn decommission(&self, address: &str, node_id: &str) -> Result<(), ClientError> {
        self.admin(address)
            .await?
            .decommission(proto::DecommissionRequest {
                node_id: node_id.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Compacts the data of the node at `address` now, purging what its
    /// compaction filter may purge.
    pub async fn compact(&self, address: &str) -> Result<proto::CompactResponse, ClientError> {
        Ok(self
            .admin(address)
            .await?
            .compact(proto::CompactRequest {})
            .await?
            .into_inner())
    }

    /// Each member's ring status and each moving partition's handoff progress.
    pub async fn ring_status(
        &self,
        address: &str,
    ) -> Result<proto::RingStatusResponse, ClientError> {
        let mut request = tonic::Request::new(proto::RingStatusRequest {});
        request.set_timeout(Duration::from_secs(10));
        Ok(self
            .admin(address)
            .await?
            .ring_status(request)
            .await?
            .into_inner())
    }

    /// A channel to the peer port at `address` whose calls are signed in
    /// `role` (unsigned without a secret).
    pub async fn signed_channel(
        &self,
        address: &str,
        role: Role,
    ) -> Result<SignedChannel, ClientError> {
        let issuer = self.issuer.as_deref().unwrap_or("ringkv");
        Ok(InterceptedService::new(
            self.channel(address).await?,
            Authenticate::new(self.key.clone(), role, issuer),
        ))
    }

    async fn admin(
        &self,
        address: &str,
    ) -> Result<proto::admin_client::AdminClient<SignedChannel>, ClientError> {
        Ok(proto::admin_client::AdminClient::new(
            self.signed_channel(address, Role::Admin).await?,
        ))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadFile {
        path: path.display().to_string(),
        source,
    })
}
