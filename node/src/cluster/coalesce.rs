//! Replica calls to one peer, coalesced: while a few calls to a peer are
//! in flight, the records and reads that coordinators have for it meanwhile
//! wait and go out together, as one `Replica.ApplyBatch` (which the peer
//! merges in one write batch and one sync) or one `Replica.ReadBatch`.
//! Cassandra and Scylla coalesce their messages the same way.
//!
//! A lone item goes out at once, as a plain `Replica.Apply` or
//! `Replica.Read`, so a request on an idle cluster waits for nobody. Under
//! load, one replica call serves many client requests: per-call work
//! (HTTP/2 frames, loopback TCP, allocations, thread wake-ups) was most of
//! a replicated request's CPU (docs/benchmarks/profile.md).
//!
//! Each item still gets its own answer: a call that fails fails every item
//! in it, and each caller then falls back as it would after its own call (a
//! hint, another replica). A record is acknowledged only by a call that
//! carried it and succeeded.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use futures::{future::BoxFuture, FutureExt};
use ringkv_proto::v1::{
    replica_client::ReplicaClient, ReplicaApplyBatchRequest, ReplicaApplyRequest,
    ReplicaReadBatchRequest, ReplicaReadRequest, ReplicaRecord,
};
use tokio::sync::oneshot;
use tonic::{metadata::MetadataValue, Request, Status};

use super::{
    peers::{PeerChannel, PeerClients},
    rpc::{ReadReply, RING_VERSION},
};

/// Calls of one kind to one peer in flight at once; items arriving
/// meanwhile wait for the call to return and go out together in the next.
/// One: the peer's writer thread commits what arrives in groups anyway, so
/// a second call in flight only waits at the peer, and it takes items that
/// would have shared the next call. With four, 77% of the calls carried a
/// lone record, and a put on three nodes cost 15% more CPU
/// (docs/benchmarks/profile.md, "One replica call in flight a peer"). A
/// slow peer holds up only its own copies: W counts the other replicas too.
const IN_FLIGHT: usize = 1;

/// What one batch call to a peer may carry: its batch and message limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallCaps {
    pub records: usize,
    pub bytes: usize,
}

impl CallCaps {
    /// Records a call carries at most, whatever the peer allows.
    const RECORDS: usize = 256;
    /// Bytes a call carries at most, unless one record is bigger.
    const BYTES: usize = 4 << 20;

    /// Caps within a peer's `--max-batch-keys` and half its message limit,
    /// which leaves room for the records' framing.
    pub fn within(max_batch_keys: usize, max_peer_message_bytes: usize) -> Self {
        Self {
            records: Self::RECORDS.min(max_batch_keys).max(1),
            bytes: Self::BYTES.min(max_peer_message_bytes / 2).max(1),
        }
    }

    /// Whether a call holding `records` records of `bytes` bytes takes one
    /// more of `size` bytes. An empty call takes any record.
    pub fn admit(&self, records: usize, bytes: usize, size: usize) -> bool {
        records == 0 || (records < self.records && bytes + size <= self.bytes)
    }
}

/// One kind of replica call whose items coalesce: each item gets its own
/// answer, and a call of several answers them in order.
pub(crate) trait Coalesce: Send + Sync + 'static {
    type Item: Send + 'static;
    type Answer: Send + 'static;

    /// The bytes an item adds to a call.
    fn size(item: &Self::Item) -> usize;

    /// Sends `items` in one call to the peer at `address`. The answers come
    /// in the items' order and may stop short: a peer answers a prefix once
    /// its reply would pass its byte cap.
    fn call(
        client: ReplicaClient<PeerChannel>,
        address: &str,
        items: Vec<Self::Item>,
        meta: CallMeta,
    ) -> BoxFuture<'static, Result<Vec<Self::Answer>, Status>>;
}

/// What bounds one call and fences it at its target.
#[derive(Clone, Copy)]
pub(crate) struct CallMeta {
    pub timeout: Duration,
    pub ring_version: u64,
}

impl CallMeta {
    pub fn request<T>(self, message: T) -> Request<T> {
        versioned(message, self.timeout, self.ring_version)
    }
}

/// Items waiting for one peer, at one ring state version (a call carries
/// one version, by which the peer fences it).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Lane {
    address: String,
    ring_version: u64,
}

/// A caller's item and where its answer goes: `None` when the call that
/// carried it left it out.
struct Waiting<C: Coalesce> {
    item: C::Item,
    timeout: Duration,
    answer: oneshot::Sender<Result<Option<C::Answer>, Status>>,
}

struct Queue<C: Coalesce> {
    waiting: VecDeque<Waiting<C>>,
    in_flight: usize,
}

impl<C: Coalesce> Default for Queue<C> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            in_flight: 0,
        }
    }
}

impl<C: Coalesce> Queue<C> {
    /// The next call's items: the oldest that fit in one call.
    fn next_call(&mut self, caps: CallCaps) -> Vec<Waiting<C>> {
        let mut call = Vec::new();
        let mut bytes = 0;
        while let Some(next) = self.waiting.front() {
            let size = C::size(&next.item);
            if !caps.admit(call.len(), bytes, size) {
                break;
            }
            bytes += size;
            call.extend(self.waiting.pop_front());
        }
        call
    }
}

/// The lanes of one kind of replica call to every peer.
pub(crate) struct Coalescer<C: Coalesce> {
    peers: Arc<PeerClients>,
    caps: CallCaps,
    lanes: Mutex<HashMap<Lane, Queue<C>>>,
}

impl<C: Coalesce> Coalescer<C> {
    pub fn new(peers: Arc<PeerClients>, caps: CallCaps) -> Self {
        Self {
            peers,
            caps,
            lanes: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `item` to the peer at `address`, in a call of its own or with
    /// other items for it; answers within `meta.timeout`, with `None` when
    /// the call left the item out.
    pub async fn send(
        self: &Arc<Self>,
        address: &str,
        meta: CallMeta,
        item: C::Item,
    ) -> Result<Option<C::Answer>, Status> {
        let lane = Lane {
            address: address.to_string(),
            ring_version: meta.ring_version,
        };
        let (answer, answered) = oneshot::channel();
        let call = {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            let queue = lanes.entry(lane.clone()).or_default();
            queue.waiting.push_back(Waiting {
                item,
                timeout: meta.timeout,
                answer,
            });
            (queue.in_flight < IN_FLIGHT).then(|| {
                queue.in_flight += 1;
                queue.next_call(self.caps)
            })
        };
        // The call runs on its own task: it answers other callers too, and
        // must finish even if this caller's request is dropped.
        if let Some(call) = call {
            tokio::spawn(self.clone().send_until_drained(lane, call));
        }
        match tokio::time::timeout(meta.timeout, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Status::internal(format!(
                "the call to {address} carrying this item ended without an answer"
            ))),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{address} did not answer within {:?}",
                meta.timeout
            ))),
        }
    }

    /// Sends `call`, then the lane's next calls while items wait.
    async fn send_until_drained(self: Arc<Self>, lane: Lane, mut call: Vec<Waiting<C>>) {
        loop {
            // The longest wait among the callers: each stops listening at
            // its own.
            let meta = CallMeta {
                timeout: call
                    .iter()
                    .map(|w| w.timeout)
                    .max()
                    .unwrap_or(Duration::ZERO),
                ring_version: lane.ring_version,
            };
            let (items, answers): (Vec<_>, Vec<_>) =
                call.drain(..).map(|w| (w.item, w.answer)).unzip();
            let result = match self.peers.replica(&lane.address) {
                Ok(client) => C::call(client, &lane.address, items, meta).await,
                Err(status) => Err(status),
            };
            // A caller that gave up no longer listens.
            match result {
                Ok(replies) => {
                    let mut replies = replies.into_iter();
                    for answer in answers {
                        let _ = answer.send(Ok(replies.next()));
                    }
                }
                Err(status) => {
                    for answer in answers {
                        let _ = answer.send(Err(status.clone()));
                    }
                }
            }
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(queue) = lanes.get_mut(&lane) else {
                return;
            };
            if queue.waiting.is_empty() {
                queue.in_flight -= 1;
                if queue.in_flight == 0 {
                    lanes.remove(&lane);
                }
                return;
            }
            call = queue.next_call(self.caps);
        }
    }
}

/// Replica writes: a lone record as `Replica.Apply`, several as one
/// `Replica.ApplyBatch`, which the peer merges in one write batch and one
/// sync. A batch that succeeds holds every record in it.
pub(crate) struct Applies;

impl Coalesce for Applies {
    type Item = ReplicaRecord;
    type Answer = ();

    fn size(item: &ReplicaRecord) -> usize {
        item.key.len() + item.record.len()
    }

    fn call(
        mut client: ReplicaClient<PeerChannel>,
        _address: &str,
        mut records: Vec<ReplicaRecord>,
        meta: CallMeta,
    ) -> BoxFuture<'static, Result<Vec<()>, Status>> {
        async move {
            let count = records.len();
            if count == 1 {
                let only = records.remove(0);
                let message = ReplicaApplyRequest {
                    key: only.key,
                    record: only.record,
                    hint_for: String::new(),
                };
                client.apply(meta.request(message)).await?;
            } else {
                let message = ReplicaApplyBatchRequest { records };
                client.apply_batch(meta.request(message)).await?;
            }
            Ok(vec![(); count])
        }
        .boxed()
    }
}

/// Replica reads: a lone key as `Replica.Read`, several as one
/// `Replica.ReadBatch`, which answers a prefix of them past its byte cap.
pub(crate) struct Reads;

impl Coalesce for Reads {
    type Item = Bytes;
    type Answer = ReadReply;

    fn size(key: &Bytes) -> usize {
        key.len()
    }

    fn call(
        mut client: ReplicaClient<PeerChannel>,
        address: &str,
        mut keys: Vec<Bytes>,
        meta: CallMeta,
    ) -> BoxFuture<'static, Result<Vec<ReadReply>, Status>> {
        let address = address.to_string();
        async move {
            let answers = if keys.len() == 1 {
                let message = ReplicaReadRequest {
                    key: keys.remove(0),
                };
                vec![client.read(meta.request(message)).await?.into_inner()]
            } else {
                let message = ReplicaReadBatchRequest { keys };
                client
                    .read_batch(meta.request(message))
                    .await?
                    .into_inner()
                    .answers
            };
            answers
                .into_iter()
                .map(|answer| ReadReply::decode(&address, answer))
                .collect()
        }
        .boxed()
    }
}

/// A replica request bounded by `timeout` that names the ring state version
/// its target was chosen from (none for 0).
pub(super) fn versioned<T>(message: T, timeout: Duration, ring_version: u64) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    if ring_version > 0 {
        request
            .metadata_mut()
            .insert(RING_VERSION, MetadataValue::from(ring_version));
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(size: usize) -> Waiting<Applies> {
        Waiting {
            item: ReplicaRecord {
                key: Bytes::from_static(b"k"),
                record: Bytes::from(vec![0u8; size]),
            },
            timeout: Duration::from_secs(1),
            answer: oneshot::channel().0,
        }
    }

    #[test]
    fn calls_stay_within_the_caps_and_take_the_oldest_first() {
        let caps = CallCaps {
            records: 3,
            bytes: 100,
        };
        let mut queue = Queue::<Applies>::default();
        for size in [10, 10, 10, 10, 88, 500, 1] {
            queue.waiting.push_back(waiting(size));
        }
        let sizes = |call: Vec<Waiting<Applies>>| -> Vec<usize> {
            call.iter().map(|w| w.item.record.len()).collect()
        };
        assert_eq!(sizes(queue.next_call(caps)), [10, 10, 10], "three records");
        assert_eq!(
            sizes(queue.next_call(caps)),
            [10, 88],
            "100 bytes with the keys"
        );
        assert_eq!(sizes(queue.next_call(caps)), [500], "a big record alone");
        assert_eq!(sizes(queue.next_call(caps)), [1]);
        assert!(queue.next_call(caps).is_empty());
    }

    #[test]
    fn caps_stay_within_the_peers_limits() {
        assert_eq!(
            CallCaps::within(1024, 64 << 20),
            CallCaps {
                records: 256,
                bytes: 4 << 20
            }
        );
        assert_eq!(
            CallCaps::within(10, 2 << 20),
            CallCaps {
                records: 10,
                bytes: 1 << 20
            }
        );
        assert_eq!(CallCaps::within(0, 0).records, 1);
    }
}
