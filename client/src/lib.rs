//! The Rust client of ringkv.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ringkv_client::ClientError> {
//! let mut client = ringkv_client::Client::connect("127.0.0.1:7379").await?;
//! client.put(b"greeting", b"hello").await?;
//! let found = client.get(b"greeting").await?.expect("just written");
//! assert_eq!(found.values(), [&b"hello"[..]]);
//! // Writing with the context read replaces exactly what was read.
//! client.put_with_context(b"greeting", b"hi", found.context).await?;
//! # Ok(()) }
//! ```
//!
//! Only [`Connector`] opens connections: [`Connector::plaintext`] for a
//! cluster without TLS, [`Connector::tls`] for one with it.
//!
//! ```no_run
//! # async fn status() -> Result<(), ringkv_client::ClientError> {
//! use ringkv_client::Connector;
//! let status = Connector::plaintext().cluster_status("127.0.0.1:7379").await?;
//! println!("{} members", status.members.len());
//! # Ok(()) }
//! ```

use bytes::Bytes;
use ringkv_proto::v1::{
    raw_kv_client::RawKvClient, KvPair, RawDeleteRequest, RawGetRequest, RawPutRequest,
    RawScanRequest,
};
use tonic::{transport::Channel, Code};

pub use connector::{Connector, SignedChannel};
pub use ringkv_proto::peer_auth;
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

/// What a key holds, as a read found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// One of the values: the only one unless writes were concurrent.
    pub value: Bytes,
    /// Every concurrent value, `value` among them, when there is more than
    /// one; empty otherwise.
    pub siblings: Vec<Bytes>,
    /// The causal context of what was read: send it with the next write of
    /// the key ([`Client::put_with_context`]) so that the write replaces
    /// these values instead of becoming their sibling.
    pub context: Bytes,
}

impl Versioned {
    /// Every value the key holds: one, or the siblings of concurrent writes.
    pub fn values(&self) -> Vec<&[u8]> {
        if self.siblings.is_empty() {
            vec![&self.value[..]]
        } else {
            self.siblings.iter().map(|v| &v[..]).collect()
        }
    }
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

    /// What `key` holds: its value, any siblings and its causal context;
    /// `None` when it holds nothing.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Versioned>, ClientError> {
        let request = RawGetRequest {
            key: Bytes::copy_from_slice(key),
            ..Default::default()
        };
        match self.raw.raw_get(request).await {
            Ok(response) => {
                let found = response.into_inner();
                Ok(Some(Versioned {
                    value: found.value,
                    siblings: found.siblings,
                    context: found.context,
                }))
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// Stores `value` under `key` without a context: a *blind* write, which
    /// becomes a sibling of any value the key holds (see docs/api.md).
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        self.put_with_context(key, value, Bytes::new()).await
    }

    /// Stores `value` under `key`, replacing exactly the values `context`
    /// (from a [`get`](Self::get) of the key) covers.
    pub async fn put_with_context(
        &mut self,
        key: &[u8],
        value: &[u8],
        context: Bytes,
    ) -> Result<(), ClientError> {
        let request = RawPutRequest {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            context,
            ..Default::default()
        };
        self.raw.raw_put(request).await?;
        Ok(())
    }

    /// Replaces whatever `key` holds: reads its causal context first and
    /// writes with it, so that the write supersedes every value read instead
    /// of becoming a sibling of them.
    pub async fn overwrite(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        let context = self
            .get(key)
            .await?
            .map_or_else(Bytes::new, |found| found.context);
        self.put_with_context(key, value, context).await
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

    /// Pairs of a key range: up to `limit` (the node's `--max-scan-limit`
    /// when 0). A response the node ended early at its `--max-scan-bytes`
    /// says `more`, and the scan goes on after its last key.
    pub async fn scan(&mut self, options: ScanOptions) -> Result<Vec<KvPair>, ClientError> {
        let mut out: Vec<KvPair> = Vec::new();
        let (mut start, mut end) = (Bytes::from(options.start), Bytes::from(options.end));
        loop {
            let limit = match options.limit {
                0 => 0,
                limit => limit.saturating_sub(u32::try_from(out.len()).unwrap_or(u32::MAX)),
            };
            let request = RawScanRequest {
                start_key: start.clone(),
                end_key: end.clone(),
                limit,
                key_only: options.key_only,
                reverse: options.reverse,
                consistency: None,
            };
            let page = self.raw.raw_scan(request).await?.into_inner();
            let Some(last) = page.kvs.last() else {
                return Ok(out);
            };
            if options.reverse {
                end = last.key.clone();
            } else {
                let mut next = last.key.to_vec();
                next.push(0);
                start = Bytes::from(next);
            }
            out.extend(page.kvs);
            let enough = options.limit != 0 && out.len() >= options.limit as usize;
            if !page.more || enough {
                return Ok(out);
            }
        }
    }
}
