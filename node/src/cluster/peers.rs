//! gRPC channels to other nodes, one lazily connected channel per address.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use ringkv_proto::v1::{
    admin_client::AdminClient, raw_kv_client::RawKvClient, replica_client::ReplicaClient,
};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// A cache of channels to peers, keyed by gRPC address.
#[derive(Default)]
pub struct PeerClients {
    channels: Mutex<HashMap<String, Channel>>,
    /// TLS towards peers, when the cluster runs it.
    tls: Option<ClientTlsConfig>,
}

impl PeerClients {
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Self {
            channels: Mutex::default(),
            tls,
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
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
    pub fn replica(&self, addr: &str) -> Result<ReplicaClient<Channel>, tonic::Status> {
        Ok(ReplicaClient::new(self.channel(addr)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// The public RawKV service of the node at `addr`, for forwarding.
    pub fn rawkv(&self, addr: &str) -> Result<RawKvClient<Channel>, tonic::Status> {
        Ok(RawKvClient::new(self.channel(addr)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// The admin service of the node at `addr`.
    pub fn admin(&self, addr: &str) -> Result<AdminClient<Channel>, tonic::Status> {
        Ok(AdminClient::new(self.channel(addr)?))
    }
}
