//! The write path: a coordinator that replicates the key stamps the write
//! and sends the new record to the key's replicas until W hold it; any other
//! node passes the client's write to a replica that does.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{future::BoxFuture, stream::FuturesUnordered, FutureExt, StreamExt};
use ringkv_proto::v1::{Consistency, RawDeleteRequest, RawPutRequest};

use super::{
    expiry,
    relay::Relayed,
    route::{self, WriteTargets},
    write_quorum::WriteQuorum,
    Coordinator, CoordinatorError, QuorumFailure, Relay, Route, Shortfall,
};
use crate::{
    cluster::{
        deadline::Deadline,
        membership::View,
        rpc::{Delivery, PeerCall},
    },
    replica::{blocking, Update},
    versions::CausalContext,
};

/// A client's write of one key: a put, or a delete when `value` is `None`.
#[derive(Debug, Clone)]
pub(crate) struct WriteRequest {
    pub key: Bytes,
    pub value: Option<Bytes>,
    /// The sealed causal context the client sent; empty for none.
    pub context: Bytes,
}

/// What a client asked of a write besides its key and value; a batch's
/// writes share one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteOptions {
    pub read_quorum: Option<u32>,
    pub write_quorum: Option<u32>,
    pub ttl_seconds: u64,
    pub deadline: Option<Deadline>,
    /// Passed on by another node's RawKV service: it is never passed on
    /// again, except by a node that has left.
    pub forwarded: bool,
}

/// A delete without a context deletes what the cluster holds, which it
/// must read first (docs/api.md).
fn is_blind_delete(write: &WriteRequest, context: &CausalContext) -> bool {
    write.value.is_none() && context.is_empty()
}

impl Coordinator {
    /// Writes `write.value` (or a tombstone, for `None`) under `write.key`.
    ///
    /// A delete without a context deletes what the cluster holds, not only
    /// what this node holds: it first reads the key from R replicas (the
    /// request's `read_quorum`) and writes its tombstone with their merged
    /// context, as Riak's clients do before a delete. A replica that missed
    /// a write is thereby never the only judge of what a delete removes.
    pub async fn write(
        &self,
        write: WriteRequest,
        options: WriteOptions,
    ) -> Result<(), CoordinatorError> {
        let w = self.write_quorum(options.write_quorum)?;
        let state = self.coordinating_state()?;
        let (partition, owners) = route::owners(&state.current, &write.key)?;
        let view = self.inner.membership.view();

        // A node that has left keeps no data but still knows the ring: it
        // passes on a client's write that reaches it through a Service for a
        // moment after it left, and also a write passed to it by a node whose
        // view predates the departure. Its target owns the partition in the
        // newest layout and coordinates, so a write moves at most twice.
        let replicates = owners.iter().any(|id| id == self.me());
        if !replicates && (!options.forwarded || self.inner.lifecycle.has_left()) {
            let target = route::write_coordinator(&owners, &view).ok_or_else(|| QuorumFailure {
                shortfall: Shortfall::Write {
                    partition,
                    replicas: owners.len(),
                },
                needed: w,
                replied: Vec::new(),
                silent: owners.clone(),
            })?;
            return self
                .pass_to_coordinator(&view, target, write, &options)
                .await
                .map_err(|answer| CoordinatorError::PassedOn {
                    target: target.to_owned(),
                    partition,
                    answer,
                });
        }

        let context = self
            .context_for(&write, options.read_quorum, options.deadline)
            .await?;
        let update = Update {
            key: write.key.clone(),
            context,
            blind: write.context.is_empty(),
            value: write.value,
            expires_at_ms: expiry(options.ttl_seconds),
        };
        let encoded = self.inner.writes.update(update).await?.encode();
        self.replicate_stamped(write.key, encoded, w, options.deadline)
            .await
    }

    /// The client's context of a write, once its seal is checked; empty
    /// when it sent none.
    fn client_context(&self, write: &WriteRequest) -> Result<CausalContext, CoordinatorError> {
        if write.context.is_empty() {
            Ok(CausalContext::new())
        } else {
            Ok(self.inner.config.seal.open(&write.key, &write.context)?)
        }
    }

    /// The causal context a write replaces: the client's, once its seal is
    /// checked; for a delete without one, what R replicas hold.
    pub(super) async fn context_for(
        &self,
        write: &WriteRequest,
        read_quorum: Option<u32>,
        deadline: Option<Deadline>,
    ) -> Result<CausalContext, CoordinatorError> {
        let context = self.client_context(write)?;
        if is_blind_delete(write, &context) {
            Ok(self
                .read(write.key.clone(), read_quorum, deadline)
                .await?
                .context())
        } else {
            Ok(context)
        }
    }

    /// The contexts of several writes, as [`Self::context_for`] gives
    /// them, with the reads of every blind delete made as one batch read.
    pub(super) async fn contexts_for(
        &self,
        writes: &[&WriteRequest],
        read_quorum: Option<u32>,
        deadline: Option<Deadline>,
    ) -> Vec<Result<CausalContext, CoordinatorError>> {
        let mut contexts: Vec<Result<CausalContext, CoordinatorError>> = writes
            .iter()
            .map(|write| self.client_context(write))
            .collect();
        let blind: Vec<usize> = (0..writes.len())
            .filter(|&i| {
                contexts[i]
                    .as_ref()
                    .is_ok_and(|context| is_blind_delete(writes[i], context))
            })
            .collect();
        if blind.is_empty() {
            return contexts;
        }
        let keys: Vec<Bytes> = blind.iter().map(|&i| writes[i].key.clone()).collect();
        match self.read_batch(&keys, read_quorum, deadline).await {
            Ok(records) => {
                for (index, record) in blind.into_iter().zip(records) {
                    contexts[index] = record.map(|record| record.context());
                }
            }
            // The batch cannot be read at all (a read quorum outside 1..=N,
            // no layout): each key fails with its own copy of the reason.
            Err(_) => {
                let singles = futures::future::join_all(
                    blind
                        .iter()
                        .map(|&i| self.context_for(writes[i], read_quorum, deadline)),
                )
                .await;
                for (index, context) in blind.into_iter().zip(singles) {
                    contexts[index] = context;
                }
            }
        }
        contexts
    }

    /// Sends a record this node has just stamped and written to the key's
    /// other replicas and answers once W of them (this node included) hold
    /// it.
    ///
    /// Every decision here comes from the ring state read *after* the local
    /// write. A transition may have started since the coordinator last
    /// looked, and a receiver's stream of this node's data may already be
    /// past the key: from a state read before the write, this node would
    /// count itself at once, and the receiver would never get the write.
    pub(super) async fn replicate_stamped(
        &self,
        key: Bytes,
        encoded: Bytes,
        w: usize,
        deadline: Option<Deadline>,
    ) -> Result<(), CoordinatorError> {
        let state = self.state()?;
        let WriteTargets {
            partition,
            owners,
            previous,
            former,
            receivers,
            handing_off,
            counts_self,
        } = route::write_targets(&state, &key, self.me())?;
        let view = self.inner.membership.view();
        let me = self.me().to_string();
        let mut quorum = WriteQuorum::new(w, partition, owners.clone(), previous);
        if counts_self {
            quorum.acknowledge(&me);
        }
        let fallbacks = Arc::new(Mutex::new(route::live_fallbacks(
            &state.current,
            partition,
            &view,
            &me,
        )));
        let route = Arc::new(Route {
            view,
            version: state.version,
        });
        // Receivers get the write besides, unless this node hands the
        // partition off: then they get it as part of its own
        // acknowledgement (below).
        let besides: FuturesUnordered<_> = receivers
            .iter()
            .filter(|_| !handing_off)
            .map(|target| {
                self.clone().replicate(
                    route.clone(),
                    target.clone(),
                    key.clone(),
                    encoded.clone(),
                    Arc::new(Mutex::new(Vec::new())),
                    deadline,
                )
            })
            .collect();
        if !besides.is_empty() {
            tokio::spawn(besides.collect::<Vec<_>>());
        }
        let mut pending: FuturesUnordered<BoxFuture<'static, (String, bool)>> = owners
            .iter()
            .filter(|id| **id != me)
            .map(|target| (target, fallbacks.clone()))
            .chain(
                former
                    .iter()
                    .map(|target| (target, Arc::new(Mutex::new(Vec::new())))),
            )
            .map(|(target, fallbacks)| {
                let write = self.clone().replicate(
                    route.clone(),
                    target.clone(),
                    key.clone(),
                    encoded.clone(),
                    fallbacks,
                    deadline,
                );
                let target = target.clone();
                async move { (target, write.await) }.boxed()
            })
            .collect();
        if handing_off {
            // This node drops its copy once the transition ends, and the
            // stream may already have passed the key: its acknowledgement
            // counts once the receivers hold the write. It runs alongside
            // the other replicas' writes, within the same deadline.
            let (this, state) = (self.clone(), state.clone());
            let (key, encoded) = (key.clone(), encoded.clone());
            pending.push(
                async move {
                    let relay = Relay {
                        hops: 1,
                        ring_version: state.version,
                        deadline,
                    };
                    let item = Relayed {
                        partition,
                        key: &key,
                        encoded: &encoded,
                    };
                    let held = this.relay_to_receivers(&state, item, relay).await;
                    (this.me().to_string(), held.is_ok())
                }
                .boxed(),
            );
        }
        while !quorum.met() {
            match pending.next().await {
                Some((target, true)) => quorum.acknowledge(&target),
                Some((_, false)) => {}
                None => break,
            }
        }
        // The remaining replicas still get the write, after the client has
        // its answer.
        if !pending.is_empty() {
            tokio::spawn(async move { while pending.next().await.is_some() {} });
        }
        Ok(quorum.outcome()?)
    }

    /// Sends a write to one replica; if that replica is down or fails, to the
    /// next live fallback as a hint for it. Returns whether the write was
    /// acknowledged by either.
    pub(super) async fn replicate(
        self,
        route: Arc<Route>,
        target: String,
        key: Bytes,
        encoded: Bytes,
        fallbacks: Arc<Mutex<Vec<String>>>,
        deadline: Option<Deadline>,
    ) -> bool {
        let rpc = &self.inner.rpc;
        if route.is_alive(&target) {
            let call = route.call(&target, self.timeout(deadline));
            match rpc.apply(call, &key, &encoded, Delivery::Replica).await {
                Ok(()) => return true,
                Err(status) => {
                    tracing::debug!(%target, %status, "replica write failed");
                }
            }
        }
        if !self.inner.config.hinted_handoff {
            return false;
        }
        let fallback = fallbacks.lock().ok().and_then(|mut f| f.pop());
        if let Some(fallback) = fallback {
            // What the first attempt left of the client's deadline.
            let call = route.call(&fallback, self.timeout(deadline));
            let sent = rpc
                .apply(call, &key, &encoded, Delivery::HintFor(&target))
                .await;
            if sent.is_ok() {
                self.inner.metrics.hints_stored.inc();
                return true;
            }
        }
        // No fallback took it: keep the hint here, without counting it as an
        // acknowledgement (this node already holds the write).
        let local = self.inner.local.clone();
        let stored = blocking(move || local.keep_hint(&target, &key, &encoded)).await;
        if stored.is_ok() {
            self.inner.metrics.hints_stored.inc();
        }
        false
    }

    /// Passes a client's write to `target`'s RawKV service, which
    /// coordinates it as a replica of the key.
    async fn pass_to_coordinator(
        &self,
        view: &View,
        target: &str,
        write: WriteRequest,
        options: &WriteOptions,
    ) -> Result<(), tonic::Status> {
        // The target coordinates the write as any client's: no ring version
        // rides along, as none does on a client's request.
        let call = PeerCall::unversioned(target, view, self.timeout(options.deadline));
        let consistency = Some(Consistency {
            read_quorum: options.read_quorum,
            write_quorum: options.write_quorum,
        });
        let WriteRequest {
            key,
            value,
            context,
        } = write;
        match value {
            Some(value) => {
                let request = RawPutRequest {
                    key,
                    value,
                    consistency,
                    context,
                    ttl_seconds: options.ttl_seconds,
                };
                self.inner.rpc.forward_put(call, request).await
            }
            None => {
                let request = RawDeleteRequest {
                    key,
                    consistency,
                    context,
                };
                self.inner.rpc.forward_delete(call, request).await
            }
        }
    }
}
