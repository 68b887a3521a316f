//! ringkv through its gRPC API, as any client reaches it: RawKV calls over
//! HTTP/2 connections to every node. Like Cassandra's and etcd's drivers,
//! the client stops sending to a node whose connection failed, for a
//! second, so that a dead node costs the requests in flight to it and not
//! every request that would have picked it.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use ringkv_client::proto::{
    raw_kv_client::RawKvClient, Consistency, KvPair, RawBatchDeleteRequest, RawBatchGetRequest,
    RawBatchPutRequest, RawDeleteRequest, RawGetRequest, RawPutRequest,
};
use tonic::{transport::Channel, Code};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use super::{single, Reply, TargetSpec};
use crate::{workload::Op, BenchError};

/// How long a node whose connection failed is left out.
const DOWN_FOR: Duration = Duration::from_secs(1);

struct Node {
    /// `connections` channels to this node.
    channels: Vec<Channel>,
    /// Milliseconds since `epoch` until which the node is left out.
    down_until_ms: AtomicU64,
}

pub struct Ringkv {
    nodes: Vec<Node>,
    epoch: Instant,
    consistency: Option<Consistency>,
}

impl Ringkv {
    pub async fn connect(spec: &TargetSpec) -> Result<Self, BenchError> {
        let connector = ringkv_client::Connector::plaintext();
        let mut nodes = Vec::with_capacity(spec.endpoints.len());
        for address in &spec.endpoints {
            let endpoint = connector
                .endpoint(address)
                .map_err(|e| BenchError::target("ringkv", e))?;
            nodes.push(Node {
                channels: (0..spec.connections.max(1))
                    .map(|_| endpoint.connect_lazy())
                    .collect(),
                down_until_ms: AtomicU64::new(0),
            });
        }
        let consistency =
            (spec.read_quorum.is_some() || spec.write_quorum.is_some()).then_some(Consistency {
                read_quorum: spec.read_quorum,
                write_quorum: spec.write_quorum,
            });
        Ok(Self {
            nodes,
            epoch: Instant::now(),
            consistency,
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The node this client sends to: its own by default, the next live one
    /// while that is left out.
    fn pick(&self, client: usize) -> usize {
        let now = self.now_ms();
        let count = self.nodes.len();
        (0..count)
            .map(|offset| (client + offset) % count)
            .find(|&index| self.nodes[index].down_until_ms.load(Ordering::Relaxed) <= now)
            .unwrap_or(client % count)
    }

    pub async fn execute(
        &self,
        client: usize,
        op: Op,
        keys: &[Bytes],
        value: &Bytes,
    ) -> Result<Reply, BenchError> {
        let index = self.pick(client);
        let node = &self.nodes[index];
        let channel = node.channels[(client / self.nodes.len()) % node.channels.len()].clone();
        let mut raw = RawKvClient::new(channel.clone());
        let consistency = self.consistency;
        let outcome = match op {
            Op::Noop => HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .map(|_| Reply::Done),
            Op::Put => raw
                .raw_put(RawPutRequest {
                    key: single(keys)?.clone(),
                    value: value.clone(),
                    consistency,
                    ..Default::default()
                })
                .await
                .map(|_| Reply::Done),
            Op::Get => match raw
                .raw_get(RawGetRequest {
                    key: single(keys)?.clone(),
                    consistency,
                })
                .await
            {
                Ok(found) => Ok(Reply::Value(Some(found.into_inner().value))),
                Err(status) if status.code() == Code::NotFound => Ok(Reply::Value(None)),
                Err(status) => Err(status),
            },
            Op::Delete => raw
                .raw_delete(RawDeleteRequest {
                    key: single(keys)?.clone(),
                    consistency,
                    ..Default::default()
                })
                .await
                .map(|_| Reply::Done),
            Op::BatchPut => raw
                .raw_batch_put(RawBatchPutRequest {
                    pairs: keys
                        .iter()
                        .map(|key| KvPair {
                            key: key.clone(),
                            value: value.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    consistency,
                    ttl_seconds: 0,
                })
                .await
                .map(|_| Reply::Done),
            Op::BatchGet => raw
                .raw_batch_get(RawBatchGetRequest {
                    keys: keys.to_vec(),
                    consistency,
                })
                .await
                .map(|_| Reply::Done),
            Op::BatchDelete => raw
                .raw_batch_delete(RawBatchDeleteRequest {
                    keys: keys.to_vec(),
                    consistency,
                })
                .await
                .map(|_| Reply::Done),
        };
        outcome.map_err(|status| {
            if is_connection_failure(&status) {
                node.down_until_ms.store(
                    self.now_ms() + DOWN_FOR.as_millis() as u64,
                    Ordering::Relaxed,
                );
            }
            BenchError::target("ringkv", status)
        })
    }
}

/// A status the client made up because the connection failed, as opposed
/// to one the node answered with.
fn is_connection_failure(status: &tonic::Status) -> bool {
    let message = status.message();
    match status.code() {
        // The node's own UNAVAILABLE ("write quorum not met") is an answer.
        Code::Unavailable => message.contains("connect") || message.contains("transport"),
        Code::Unknown => message.contains("transport error"),
        _ => false,
    }
}
