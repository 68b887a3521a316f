//! gRPC channels to other nodes, one lazily connected channel per address.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use ringkv_proto::v1::{
    admin_client::AdminClient, raw_kv_client::RawKvClient, replica_client::ReplicaClient,
};
use tonic::transport::{Channel, Endpoint};

/// A cache of channels to peers, keyed by gRPC address.
#[derive(Default)]
pub struct PeerClients {
    channels: Mutex<HashMap<String, Channel>>,
}

impl PeerClients {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| tonic::Status::internal("peer channel cache poisoned"))?;
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| tonic::Status::internal(format!("peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10));
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
