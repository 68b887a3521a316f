//! The Rust client of ringkv.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ringkv_client::ClientError> {
//! let mut client = ringkv_client::Client::connect("127.0.0.1:7379").await?;
//! client.put(b"greeting", b"hello").await?;
//! assert_eq!(client.get(b"greeting").await?.as_deref(), Some(&b"hello"[..]));
//! # Ok(()) }
//! ```

use bytes::Bytes;
use ringkv_proto::v1::{
    raw_kv_client::RawKvClient, KvPair, RawDeleteRequest, RawGetRequest, RawPutRequest,
    RawScanRequest,
};
use tonic::{
    transport::{Channel, Endpoint},
    Code,
};

pub use connector::Connector;
pub use ringkv_proto::v1 as proto;

mod connector;

/// A failed client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint}: {source}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered with an error status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("reading {path}: {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The gRPC status code, when the server answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}

/// Options of a range scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub limit: u32,
    pub key_only: bool,
    pub reverse: bool,
}

/// Turns `HOST:PORT` (or a full URI) into a plaintext gRPC endpoint.
pub fn endpoint(address: &str) -> Result<Endpoint, ClientError> {
    Connector::plaintext().endpoint(address)
}

/// Opens a plaintext channel to `HOST:PORT`.
pub async fn connect_channel(address: &str) -> Result<Channel, ClientError> {
    Connector::plaintext().channel(address).await
}

/// A connection to one ringkv node. Cloning shares the connection.
#[derive(Debug, Clone)]
pub struct Client {
    raw: RawKvClient<Channel>,
}

impl Client {
    /// Connects to `HOST:PORT` in plaintext; see [`Connector`] for TLS.
    pub async fn connect(address: &str) -> Result<Self, ClientError> {
        Connector::plaintext().client(address).await
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel) -> Self {
        Self {
            raw: RawKvClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        }
    }

    /// The generated client, for requests with every option.
    pub fn raw(&mut self) -> &mut RawKvClient<Channel> {
        &mut self.raw
    }

    /// The value of `key`, or `None` when it holds none.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, ClientError> {
        let request = RawGetRequest {
            key: Bytes::copy_from_slice(key),
            ..Default::default()
        };
        match self.raw.raw_get(request).await {
            Ok(response) => Ok(Some(response.into_inner().value)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// Stores `value` under `key`.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        let request = RawPutRequest {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            ..Default::default()
        };
        self.raw.raw_put(request).await?;
        Ok(())
    }

    /// Replaces whatever `key` holds: reads its causal context first and
    /// writes with it, so that the write supersedes every value read instead
    /// of becoming a sibling of them.
    pub async fn overwrite(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        let context = match self
            .raw
            .raw_get(RawGetRequest {
                key: Bytes::copy_from_slice(key),
                ..Default::default()
            })
            .await
        {
            Ok(response) => response.into_inner().context,
            Err(status) if status.code() == Code::NotFound => Bytes::new(),
            Err(status) => return Err(status.into()),
        };
        let request = RawPutRequest {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            context,
            ..Default::default()
        };
        self.raw.raw_put(request).await?;
        Ok(())
    }

    /// Deletes `key`; deleting a missing key succeeds.
    pub async fn delete(&mut self, key: &[u8]) -> Result<(), ClientError> {
        let request = RawDeleteRequest {
            key: Bytes::copy_from_slice(key),
            ..Default::default()
        };
        self.raw.raw_delete(request).await?;
        Ok(())
    }

    /// Pairs of a key range.
    pub async fn scan(&mut self, options: ScanOptions) -> Result<Vec<KvPair>, ClientError> {
        let request = RawScanRequest {
            start_key: options.start.into(),
            end_key: options.end.into(),
            limit: options.limit,
            key_only: options.key_only,
            reverse: options.reverse,
            consistency: None,
        };
        Ok(self.raw.raw_scan(request).await?.into_inner().kvs)
    }
}

/// [`Connector::is_serving`] in plaintext.
pub async fn is_serving(address: &str) -> Result<bool, ClientError> {
    Connector::plaintext().is_serving(address).await
}

/// [`Connector::cluster_status`] in plaintext.
pub async fn cluster_status(address: &str) -> Result<proto::ClusterStatusResponse, ClientError> {
    Connector::plaintext().cluster_status(address).await
}

/// [`Connector::decommission`] in plaintext.
pub async fn decommission(address: &str, node_id: &str) -> Result<(), ClientError> {
    Connector::plaintext().decommission(address, node_id).await
}

/// [`Connector::ring_status`] in plaintext.
pub async fn ring_status(address: &str) -> Result<proto::RingStatusResponse, ClientError> {
    Connector::plaintext().ring_status(address).await
}
