//! gRPC channels to other nodes' peer ports, one lazily connected channel
//! per address, each call signed with this node's token.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use ringkv_proto::peer_auth::{Authenticate, ClusterKey, Role};
use ringkv_proto::v1::{
    admin_client::AdminClient, raw_kv_client::RawKvClient, replica_client::ReplicaClient,
};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, ClientTlsConfig, Endpoint},
};

/// A channel to a peer's peer port whose calls carry this node's token.
pub type PeerChannel = InterceptedService<Channel, Authenticate>;

/// A cache of channels to peers, keyed by gRPC address.
pub struct PeerClients {
    channels: Mutex<HashMap<String, Channel>>,
    /// TLS towards peers, when the cluster runs it.
    tls: Option<ClientTlsConfig>,
    /// Signs every call as this node.
    sign: Authenticate,
}

impl PeerClients {
    /// Channels that sign each call as `node_id` with `key` (unsigned
    /// without one).
    pub fn new(tls: Option<ClientTlsConfig>, key: Option<ClusterKey>, node_id: &str) -> Self {
        Self {
            channels: Mutex::default(),
            tls,
            sign: Authenticate::new(key, Role::Peer, node_id),
        }
    }

    fn channel(&self, addr: &str) -> Result<PeerChannel, tonic::Status> {
        Ok(InterceptedService::new(
            self.plain_channel(addr)?,
            self.sign.clone(),
        ))
    }

    fn plain_channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| tonic::Status::internal("peer channel cache poisoned"))?;
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let invalid = |e: tonic::transport::Error| {
            tonic::Status::internal(format!("peer address {addr}: {e}"))
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(invalid)?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(invalid)?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// The replica service of the node at `addr`.
    pub fn replica(&self, addr: &str) -> Result<ReplicaClient<PeerChannel>, tonic::Status> {
        Ok(ReplicaClient::new(self.channel(addr)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// The public RawKV service of the node at `addr`, for forwarding.
    pub fn rawkv(&self, addr: &str) -> Result<RawKvClient<PeerChannel>, tonic::Status> {
        Ok(RawKvClient::new(self.channel(addr)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// The admin service of the node at `addr`.
    pub fn admin(&self, addr: &str) -> Result<AdminClient<PeerChannel>, tonic::Status> {
        Ok(AdminClient::new(self.channel(addr)?))
    }
}
