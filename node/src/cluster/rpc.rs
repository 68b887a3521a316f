//! One typed call per peer RPC that carries records, as Garage's
//! `net/endpoint` gives each of its RPCs.
//!
//! A call finds the peer's address in the membership view, is bounded by a
//! timeout, carries the request's metadata (the ring state version it was
//! routed with, the hops of a relayed write), decodes the answer, and
//! short-circuits to this node's replica when the target is this node. The
//! coordinator, the relay of writes during transitions, hint delivery and
//! anti-entropy all send records through it, so none of them builds a
//! request by hand.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use ringkv_proto::v1::{
    raw_kv_client::RawKvClient, replica_client::ReplicaClient, BucketDigestsRequest, BucketRef,
    PartitionTreesRequest, RawDeleteRequest, RawPutRequest, ReplicaApplyBatchRequest,
    ReplicaApplyRequest, ReplicaReadBatchRequest, ReplicaReadRequest, ReplicaReadResponse,
    ReplicaRecord, ReplicaScanRequest,
};
use tonic::{metadata::MetadataValue, Request, Status};

use crate::{
    cluster::{
        coalesce::{versioned, Applies, CallCaps, CallMeta, Coalescer, Reads},
        membership::View,
        peers::{PeerChannel, PeerClients},
    },
    replica::{blocking, memory_first, LocalReplica},
    storage::ScanRange,
    sync::refill::Refill,
    versions::Siblings,
};

/// Metadata on a client write that a node passed on to a replica's RawKV
/// service, so that it is never passed on twice.
pub const FORWARDED: &str = "ringkv-forwarded";

/// Metadata on a relayed replica write: how many nodes passed it on already.
pub const FORWARD_HOPS: &str = "ringkv-forward-hops";

/// Metadata on a replica request: the ring state version its targets were
/// chosen from, by which a replica refuses a coordinator that missed a ring
/// change (see [`crate::ring::RingState::refuses`]).
pub const RING_VERSION: &str = "ringkv-ring-version";

/// Where one peer call goes, and what bounds it.
#[derive(Clone, Copy)]
pub(crate) struct PeerCall<'a> {
    pub node: &'a str,
    /// Where `node` is found.
    pub view: &'a View,
    /// The ring state version the caller chose `node` from; 0 for an
    /// [`unversioned`](Self::unversioned) call.
    pub ring_version: u64,
    pub timeout: Duration,
}

impl<'a> PeerCall<'a> {
    /// A call that carries no ring version, which no replica refuses: for
    /// work outside a client's request (hint delivery, anti-entropy), and
    /// for a client's write passed on whole, which its target coordinates
    /// as any client's.
    pub fn unversioned(node: &'a str, view: &'a View, timeout: Duration) -> Self {
        Self {
            node,
            view,
            ring_version: 0,
            timeout,
        }
    }
}

/// How a record reaches a replica.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Delivery<'a> {
    /// As one of the key's replicas.
    Replica,
    /// As a hint, kept for the named replica while it is down.
    HintFor(&'a str),
    /// Relayed by a node that does not keep it (or not alone): the chain is
    /// now `hops` long.
    Relayed { hops: u32 },
}

/// One replica's answer to a read.
pub(crate) struct ReadReply {
    pub record: Option<Siblings>,
    /// False while the replica refills the key's partition.
    pub counts: bool,
}

impl ReadReply {
    /// A replica's answer as `node` sent it.
    pub fn decode(node: &str, reply: ReplicaReadResponse) -> Result<Self, Status> {
        let record = if reply.record.is_empty() {
            None
        } else {
            Some(Siblings::decode(&reply.record).map_err(|e| PeerRpc::unreadable(node, e))?)
        };
        Ok(Self {
            record,
            counts: !reply.refilling,
        })
    }
}

/// One replica's answer to a scan.
pub(crate) struct ScanReply {
    pub records: Vec<(Bytes, Siblings)>,
    /// The page stopped at its limit or byte cap: records past its last one
    /// may exist.
    pub full: bool,
    /// Partitions the replica still refills: its records of them count
    /// toward no quorum.
    pub refilling: Vec<u32>,
}

/// Calls other nodes' replica services (and their RawKV service, to pass a
/// client's write to a replica), and this node's own replica directly.
pub(crate) struct PeerRpc {
    me: String,
    local: Arc<LocalReplica>,
    refill: Arc<Refill>,
    peers: Arc<PeerClients>,
    caps: CallCaps,
    applies: Arc<Coalescer<Applies>>,
    reads: Arc<Coalescer<Reads>>,
}

impl PeerRpc {
    pub fn new(
        me: String,
        local: Arc<LocalReplica>,
        refill: Arc<Refill>,
        peers: Arc<PeerClients>,
        caps: CallCaps,
    ) -> Self {
        Self {
            me,
            local,
            refill,
            applies: Arc::new(Coalescer::new(peers.clone(), caps)),
            reads: Arc::new(Coalescer::new(peers.clone(), caps)),
            peers,
            caps,
        }
    }

    /// What one batch call to a peer may carry.
    pub fn caps(&self) -> CallCaps {
        self.caps
    }

    fn is_me(&self, call: &PeerCall<'_>) -> bool {
        call.node == self.me
    }

    fn address(call: &PeerCall<'_>) -> Result<String, Status> {
        call.view
            .peers
            .get(call.node)
            .map(|p| p.grpc.clone())
            .ok_or_else(|| Status::unavailable(format!("node {} is unknown to gossip", call.node)))
    }

    fn client(&self, call: &PeerCall<'_>) -> Result<ReplicaClient<PeerChannel>, Status> {
        self.peers.replica(&Self::address(call)?)
    }

    fn rawkv(&self, call: &PeerCall<'_>) -> Result<RawKvClient<PeerChannel>, Status> {
        self.peers.rawkv(&Self::address(call)?)
    }

    /// A client's write passed on to a replica's RawKV service, marked so
    /// that it is not passed on again.
    fn forwarded<T>(call: &PeerCall<'_>, message: T) -> Request<T> {
        let mut request = Self::request(call, message);
        request
            .metadata_mut()
            .insert(FORWARDED, MetadataValue::from_static("1"));
        request
    }

    /// Passes a client's put to `call.node`, which coordinates it.
    pub async fn forward_put(&self, call: PeerCall<'_>, put: RawPutRequest) -> Result<(), Status> {
        let request = Self::forwarded(&call, put);
        self.rawkv(&call)?.raw_put(request).await?;
        Ok(())
    }

    /// Passes a client's delete to `call.node`, which coordinates it.
    pub async fn forward_delete(
        &self,
        call: PeerCall<'_>,
        delete: RawDeleteRequest,
    ) -> Result<(), Status> {
        let request = Self::forwarded(&call, delete);
        self.rawkv(&call)?.raw_delete(request).await?;
        Ok(())
    }

    fn request<T>(call: &PeerCall<'_>, message: T) -> Request<T> {
        versioned(message, call.timeout, call.ring_version)
    }

    fn meta(call: &PeerCall<'_>) -> CallMeta {
        CallMeta {
            timeout: call.timeout,
            ring_version: call.ring_version,
        }
    }

    fn unreadable(node: &str, error: impl std::fmt::Display) -> Status {
        Status::internal(format!("node {node} sent an unreadable record: {error}"))
    }

    /// The record of `key` on `call.node`.
    pub async fn read(&self, call: PeerCall<'_>, key: &Bytes) -> Result<ReadReply, Status> {
        if self.is_me(&call) {
            let counts = self.refill.serves_key(key);
            let record = memory_first::read(&self.local, key.clone()).await?;
            return Ok(ReadReply { record, counts });
        }
        let address = Self::address(&call)?;
        let meta = Self::meta(&call);
        if let Some(reply) = self.reads.send(&address, meta, key.clone()).await? {
            return Ok(reply);
        }
        // The call that carried the key was cut at the peer's byte cap.
        let request = Self::request(&call, ReplicaReadRequest { key: key.clone() });
        let reply = self.client(&call)?.read(request).await?.into_inner();
        ReadReply::decode(&address, reply)
    }

    /// The records of `keys` on `call.node`, in order, for a prefix of the
    /// keys: past a byte cap, the node leaves the rest out.
    pub async fn read_batch(
        &self,
        call: PeerCall<'_>,
        keys: Vec<Bytes>,
    ) -> Result<Vec<ReadReply>, Status> {
        if self.is_me(&call) {
            let counts: Vec<bool> = keys.iter().map(|key| self.refill.serves_key(key)).collect();
            // No message to fit in: every key is read.
            let records = memory_first::read_many(&self.local, keys, usize::MAX).await?;
            return Ok(records
                .into_iter()
                .zip(counts)
                .map(|(record, counts)| ReadReply { record, counts })
                .collect());
        }
        let request = Self::request(&call, ReplicaReadBatchRequest { keys });
        let reply = self.client(&call)?.read_batch(request).await?.into_inner();
        reply
            .answers
            .into_iter()
            .map(|answer| ReadReply::decode(call.node, answer))
            .collect()
    }

    /// Sends the encoded record of `key` to `call.node`, which merges it
    /// into its own. A replica's record may share its call with others for
    /// the same node (see [`super::coalesce`]).
    pub async fn apply(
        &self,
        call: PeerCall<'_>,
        key: &Bytes,
        encoded: &Bytes,
        delivery: Delivery<'_>,
    ) -> Result<(), Status> {
        let hint_for = match delivery {
            Delivery::HintFor(target) => Some(target),
            Delivery::Replica | Delivery::Relayed { .. } => None,
        };
        if self.is_me(&call) {
            let (local, key, encoded) = (self.local.clone(), key.clone(), encoded.clone());
            let hint_for = hint_for.map(str::to_string);
            return Ok(blocking(move || local.receive(&key, &encoded, hint_for.as_deref())).await?);
        }
        if let Delivery::Replica = delivery {
            let record = ReplicaRecord {
                key: key.clone(),
                record: encoded.clone(),
            };
            self.applies
                .send(&Self::address(&call)?, Self::meta(&call), record)
                .await?;
            return Ok(());
        }
        let mut request = Self::request(
            &call,
            ReplicaApplyRequest {
                key: key.clone(),
                record: encoded.clone(),
                hint_for: hint_for.unwrap_or_default().to_string(),
            },
        );
        if let Delivery::Relayed { hops } = delivery {
            request
                .metadata_mut()
                .insert(FORWARD_HOPS, MetadataValue::from(hops));
        }
        self.client(&call)?.apply(request).await?;
        Ok(())
    }

    /// Sends a replica several records to merge in one call: its share of
    /// a client batch, hints, or read repairs.
    pub async fn apply_batch(
        &self,
        call: PeerCall<'_>,
        records: Vec<ReplicaRecord>,
    ) -> Result<(), Status> {
        if self.is_me(&call) {
            let local = self.local.clone();
            let records = records.into_iter().map(|r| (r.key, r.record)).collect();
            return Ok(blocking(move || local.apply_encoded_many(records)).await?);
        }
        let request = Self::request(&call, ReplicaApplyBatchRequest { records });
        self.client(&call)?.apply_batch(request).await?;
        Ok(())
    }

    /// Up to `range.limit` of `call.node`'s own records in `range`.
    pub async fn scan(&self, call: PeerCall<'_>, range: &ScanRange) -> Result<ScanReply, Status> {
        if self.is_me(&call) {
            let (local, range) = (self.local.clone(), range.clone());
            let refilling = self.refill.unserved();
            let page = blocking(move || local.scan(&range)).await?;
            return Ok(ScanReply {
                records: page.records,
                full: page.full,
                refilling,
            });
        }
        let request = Self::request(
            &call,
            ReplicaScanRequest {
                start_key: range.start.clone(),
                end_key: range.end.clone(),
                limit: u32::try_from(range.limit).unwrap_or(u32::MAX),
                reverse: range.reverse,
                max_bytes: range.max_bytes.map_or(0, |cap| cap as u64),
            },
        );
        let reply = self.client(&call)?.scan_local(request).await?.into_inner();
        let records: Vec<(Bytes, Siblings)> = reply
            .records
            .into_iter()
            .map(|r| {
                Siblings::decode(&r.record)
                    .map(|record| (r.key, record))
                    .map_err(|e| Self::unreadable(call.node, e))
            })
            .collect::<Result<_, _>>()?;
        // A node from before the byte cap never sets `full`: a page of
        // `limit` records is full too.
        let full = reply.full || records.len() >= range.limit;
        Ok(ScanReply {
            records,
            full,
            refilling: reply.refilling,
        })
    }

    /// `call.node`'s hash trees of `partitions`, by partition.
    pub async fn partition_trees(
        &self,
        call: PeerCall<'_>,
        partitions: &[u32],
    ) -> Result<HashMap<u32, Vec<u64>>, Status> {
        let request = Self::request(
            &call,
            PartitionTreesRequest {
                partitions: partitions.to_vec(),
            },
        );
        let trees = self
            .client(&call)?
            .partition_trees(request)
            .await?
            .into_inner()
            .trees;
        Ok(trees
            .into_iter()
            .map(|t| (t.partition, t.buckets))
            .collect())
    }

    /// `call.node`'s (key, hash) digests of the tree leaves `buckets`.
    pub async fn bucket_digests(
        &self,
        call: PeerCall<'_>,
        buckets: &[(u32, u32)],
    ) -> Result<HashMap<Bytes, u64>, Status> {
        let request = Self::request(
            &call,
            BucketDigestsRequest {
                buckets: buckets
                    .iter()
                    .map(|(partition, bucket)| BucketRef {
                        partition: *partition,
                        bucket: *bucket,
                    })
                    .collect(),
            },
        );
        let keys = self
            .client(&call)?
            .bucket_digests(request)
            .await?
            .into_inner()
            .keys;
        Ok(keys.into_iter().map(|d| (d.key, d.hash)).collect())
    }
}
