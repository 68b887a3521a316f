//! Client batches: each replica takes its share in one RocksDB write batch.
//!
//! The keys of a batch whose partition this node replicates, with no ring
//! transition under way, are stamped here together (`GroupCommit::update_many`
//! on the node's writer thread: one write batch, shared with the writes
//! queued meanwhile) and sent to each other replica as one `ApplyBatch` (one
//! write batch there). A replica that is down or refuses its share gets
//! those keys one by one through the single-key path, with its fallbacks
//! and hints. Every other key (one this node does not replicate, or one
//! whose partition is moving) takes [`Coordinator::write`]. Each key
//! succeeds or fails on its own, at W acknowledgements; unlike a single
//! write, a batch waits for every replica's answer, up to the replica
//! timeout, before it answers.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use ringkv_proto::v1::ReplicaRecord;
use tonic::Status;

use super::{
    expiry, route, write_quorum::WriteQuorum, Coordinator, CoordinatorError, Relay, Route,
    WriteOptions, WriteRequest,
};
use crate::{
    cluster::deadline::Deadline,
    replica::{ReplicaError, Update},
    ring::RingState,
};

/// A write of the batch stamped here.
struct Stamped {
    /// Its position in the batch.
    index: usize,
    partition: u32,
    replicas: Vec<String>,
    key: Bytes,
    encoded: Bytes,
}

impl Coordinator {
    /// Writes a client batch; returns each write's outcome, in order, or
    /// one error for the whole batch when this node cannot coordinate it at
    /// all (a quorum outside 1..=N, no current ring state).
    pub async fn write_batch(
        &self,
        writes: Vec<WriteRequest>,
        options: WriteOptions,
    ) -> Result<Vec<Result<(), CoordinatorError>>, CoordinatorError> {
        let w = self.write_quorum(options.write_quorum)?;
        let state = self.coordinating_state()?;
        let mut outcomes: Vec<Option<Result<(), CoordinatorError>>> =
            (0..writes.len()).map(|_| None).collect();
        let mut together = Vec::new();
        let mut alone = Vec::new();
        for (index, write) in writes.iter().enumerate() {
            match route::owners(&state.current, &write.key) {
                Ok((partition, replicas))
                    if !state.in_transition() && replicas.iter().any(|id| id == self.me()) =>
                {
                    together.push((index, partition, replicas));
                }
                Ok(_) => alone.push(index),
                Err(error) => outcomes[index] = Some(Err(error.into())),
            }
        }
        let singles = futures::future::join_all(
            alone
                .iter()
                .map(|&index| self.write(writes[index].clone(), options)),
        );
        let batched = self.write_together(&writes, together, &state, w, options);
        let (singles, batched) = futures::future::join(singles, batched).await;
        for (index, outcome) in alone.into_iter().zip(singles) {
            outcomes[index] = Some(outcome);
        }
        for (index, outcome) in batched {
            outcomes[index] = Some(outcome);
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Err(CoordinatorError::NoOutcome)))
            .collect())
    }

    /// Stamps the writes this node replicates in one local write batch and
    /// sends each other replica its share as one `ApplyBatch`.
    async fn write_together(
        &self,
        writes: &[WriteRequest],
        together: Vec<(usize, u32, Vec<String>)>,
        state: &RingState,
        w: usize,
        options: WriteOptions,
    ) -> Vec<(usize, Result<(), CoordinatorError>)> {
        let mut outcomes = Vec::new();
        let asked: Vec<&WriteRequest> = together
            .iter()
            .map(|(index, _, _)| &writes[*index])
            .collect();
        let contexts = self
            .contexts_for(&asked, options.read_quorum, options.deadline)
            .await;
        let expires_at_ms = expiry(options.ttl_seconds);
        let mut updates = Vec::new();
        let mut placed = Vec::new();
        for ((index, partition, replicas), context) in together.into_iter().zip(contexts) {
            // A key refused on its own must not fail the batch's write batch.
            let context = context.and_then(|context| {
                self.inner.local.check_context(&context)?;
                Ok(context)
            });
            match context {
                Ok(context) => {
                    let write = &writes[index];
                    updates.push(Update {
                        key: write.key.clone(),
                        context,
                        value: write.value.clone(),
                        expires_at_ms,
                        blind: write.context.is_empty(),
                    });
                    placed.push((index, partition, replicas));
                }
                Err(status) => outcomes.push((index, Err(status))),
            }
        }
        if updates.is_empty() {
            return outcomes;
        }
        let records = match self.inner.writes.update_many(updates).await {
            Ok(records) => records,
            Err(error) => {
                let error = Arc::new(error);
                outcomes.extend(
                    placed
                        .into_iter()
                        .map(|(i, _, _)| (i, Err(CoordinatorError::Replica(error.clone())))),
                );
                return outcomes;
            }
        };
        let mut stamped = Vec::new();
        for ((index, partition, replicas), record) in placed.into_iter().zip(records) {
            match record {
                Ok(record) => stamped.push(Stamped {
                    index,
                    partition,
                    replicas,
                    key: writes[index].key.clone(),
                    encoded: record.encode(),
                }),
                Err(refused) => outcomes.push((index, Err(ReplicaError::from(refused).into()))),
            }
        }
        // As for a single write, what follows the local write depends on the
        // ring state read after it: a transition that started meanwhile
        // needs each key sent through the single-write rules (receivers, an
        // owner handing off), which shares do not follow.
        let now = self.inner.ring.state();
        if now.as_ref().is_none_or(|now| now.version != state.version) {
            let singles = futures::future::join_all(stamped.iter().map(|s| {
                self.replicate_stamped(s.key.clone(), s.encoded.clone(), w, options.deadline)
            }))
            .await;
            outcomes.extend(stamped.iter().map(|s| s.index).zip(singles));
            return outcomes;
        }
        let quorums = self
            .replicate_shares(&stamped, state, w, options.deadline)
            .await;
        outcomes.extend(
            stamped
                .iter()
                .zip(quorums)
                .map(|(s, quorum)| (s.index, quorum.outcome().map_err(Into::into))),
        );
        outcomes
    }

    /// Sends every other replica its share of `stamped`, then the keys of
    /// a refused share one by one; returns each write's acknowledgements,
    /// this node's own included, once every replica has answered. (Answering
    /// at W instead, with the rest in the background, let the transition
    /// histories find a delete that did not take; see docs/api.md.)
    async fn replicate_shares(
        &self,
        stamped: &[Stamped],
        state: &RingState,
        w: usize,
        deadline: Option<Deadline>,
    ) -> Vec<WriteQuorum> {
        let me = self.me();
        let mut shares: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (position, s) in stamped.iter().enumerate() {
            for replica in s.replicas.iter().filter(|r| *r != me) {
                shares.entry(replica.as_str()).or_default().push(position);
            }
        }
        let route = Arc::new(self.route(state.version));
        // The blind deletes' reads have used part of the client's deadline.
        let timeout = self.timeout(deadline);
        let sends = futures::future::join_all(shares.iter().map(|(replica, positions)| {
            let wire = positions
                .iter()
                .map(|&p| ReplicaRecord {
                    key: stamped[p].key.clone(),
                    record: stamped[p].encoded.clone(),
                })
                .collect();
            self.apply_share(&route, replica, wire, timeout)
        }))
        .await;
        let mut quorums: Vec<WriteQuorum> = stamped
            .iter()
            .map(|s| {
                let mut quorum = WriteQuorum::new(w, s.partition, s.replicas.clone(), Vec::new());
                quorum.acknowledge(me);
                quorum
            })
            .collect();
        let mut retries = Vec::new();
        for ((replica, positions), sent) in shares.iter().zip(sends) {
            match sent {
                Ok(()) => positions
                    .iter()
                    .for_each(|&p| quorums[p].acknowledge(replica)),
                Err(status) => {
                    tracing::debug!(%replica, %status, "batch share not taken; sending its keys one by one");
                    retries.extend(positions.iter().map(|&p| (p, replica.to_string())));
                }
            }
        }
        // The keys a replica did not take go one by one, with fallbacks and
        // hints, exactly as single writes do, within what the shares left
        // of the client's deadline.
        let fallbacks: Vec<Arc<Mutex<Vec<String>>>> = stamped
            .iter()
            .map(|s| {
                let fallbacks =
                    route::live_fallbacks(&state.current, s.partition, &route, self.me());
                Arc::new(Mutex::new(fallbacks))
            })
            .collect();
        let retried = futures::future::join_all(retries.iter().map(|(p, replica)| {
            self.clone().replicate(
                route.clone(),
                replica.clone(),
                stamped[*p].key.clone(),
                stamped[*p].encoded.clone(),
                fallbacks[*p].clone(),
                deadline,
            )
        }))
        .await;
        for ((p, replica), took) in retries.iter().zip(retried) {
            if took {
                quorums[*p].acknowledge(replica);
            }
        }
        quorums
    }

    async fn apply_share(
        &self,
        route: &Route,
        replica: &str,
        wire: Vec<ReplicaRecord>,
        timeout: Duration,
    ) -> Result<(), Status> {
        if !route.is_alive(replica) {
            return Err(Status::unavailable(format!("{replica} is down")));
        }
        self.inner
            .rpc
            .apply_batch(route.call(replica, timeout), wire)
            .await
    }

    /// This node's share of a client batch, sent by its coordinator (see
    /// `Replica.ApplyBatch`): the records of keys it plainly replicates land
    /// in one write batch; keys a ring transition makes it pass on take
    /// [`Coordinator::accept`] one by one.
    pub async fn accept_batch(
        &self,
        share: Vec<(Bytes, Bytes)>,
        relay: Relay,
    ) -> Result<(), CoordinatorError> {
        let state = self.inner.ring.state();
        let mut kept = Vec::new();
        let mut passed = Vec::new();
        for (key, encoded) in share {
            let plain = match &state {
                None => true,
                Some(state) => {
                    !state.in_transition()
                        && route::owners(&state.current, &key)?
                            .1
                            .iter()
                            .any(|id| id == self.me())
                }
            };
            if plain {
                kept.push((key, encoded));
            } else {
                passed.push((key, encoded));
            }
        }
        if !kept.is_empty() {
            let written = kept.clone();
            self.inner.writes.merge(kept).await?;
            // A transition that started while these were written may need
            // them passed on, as `accept` would (see there).
            let version = state.as_ref().map(|s| s.version);
            if self.inner.ring.state().map(|s| s.version) != version {
                for (key, encoded) in &written {
                    self.pass_on_after_receive(key, encoded, relay).await?;
                }
            }
        }
        for (key, encoded) in passed {
            self.accept(key, encoded, None, relay).await?;
        }
        Ok(())
    }
}
