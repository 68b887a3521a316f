//! Reads of many keys at once: a client's RawBatchGet, and the reads a
//! batch of blind deletes makes first.
//!
//! Each replica is asked once, with `ReadBatch`, for every key of the batch
//! it holds, instead of once a key: a batch of 100 keys on three nodes made
//! 200 peer calls and 100 local reads, each its own task. Each key is then
//! settled as a single read would be (see `read`): its first R answers
//! that count, merged, and read repair for the replicas that answered with
//! less, sent to each such replica as one `ApplyBatch`. The batch answers
//! once every key has R answers that count, or every replica has answered;
//! answers that come later still repair.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{stream::FuturesUnordered, StreamExt};
use ringkv_proto::v1::ReplicaRecord;

use super::{
    read::{is_stale, Answers},
    route, Coordinator, CoordinatorError, Route,
};
use crate::{cluster::deadline::Deadline, versions::Siblings};

impl Coordinator {
    /// Reads every key from R replicas; returns each key's merged record
    /// or its own failure, in order, or one error for the whole batch when
    /// this node cannot coordinate it at all.
    pub async fn read_batch(
        &self,
        keys: &[Bytes],
        read_quorum: Option<u32>,
        deadline: Option<Deadline>,
    ) -> Result<Vec<Result<Siblings, CoordinatorError>>, CoordinatorError> {
        let r = self.read_quorum(read_quorum)?;
        let state = self.coordinating_state()?;
        let route = Arc::new(self.route(state.version));
        let timeout = self.timeout(deadline);

        let mut owners_of = Vec::with_capacity(keys.len());
        let mut asked: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (index, key) in keys.iter().enumerate() {
            let owners = route::owners(&state.current, key).map(|(_, owners)| owners);
            if let Ok(owners) = &owners {
                for node in route::read_targets(owners, &route, self.me()) {
                    asked.entry(node).or_default().push(index);
                }
            }
            owners_of.push(owners);
        }
        let mut pending: FuturesUnordered<_> = asked
            .into_iter()
            .map(|(node, indexes)| {
                let (this, route) = (self.clone(), route.clone());
                let share = indexes.iter().map(|&i| keys[i].clone()).collect();
                async move {
                    let call = route.call(&node, timeout);
                    let result = this.inner.rpc.read_batch(call, share).await;
                    (node, indexes, result)
                }
            })
            .collect();

        let mut answers: Vec<Answers> = keys.iter().map(|_| Answers::default()).collect();
        // Keys a replica left out past its byte cap: read one by one.
        let mut left_out = vec![false; keys.len()];
        let mut unsettled = owners_of.iter().filter(|owners| owners.is_ok()).count();
        while unsettled > 0 {
            let Some((node, indexes, result)) = pending.next().await else {
                break;
            };
            let replies = match result {
                Ok(replies) => replies,
                Err(status) => {
                    tracing::debug!(%node, %status, "replica batch read failed");
                    continue;
                }
            };
            for &index in &indexes[replies.len().min(indexes.len())..] {
                left_out[index] = true;
            }
            for (&index, reply) in indexes.iter().zip(replies) {
                let short = answers[index].counted.len() < r;
                answers[index].take(node.clone(), reply);
                if short && answers[index].counted.len() >= r {
                    unsettled -= 1;
                }
            }
        }

        let mode = self.mode();
        let mut outcomes = Vec::with_capacity(keys.len());
        let mut merged_of: Vec<Option<(Siblings, Bytes)>> = Vec::with_capacity(keys.len());
        let mut repairs: BTreeMap<String, Vec<ReplicaRecord>> = BTreeMap::new();
        let mut one_by_one = Vec::new();
        for (index, owners) in owners_of.into_iter().enumerate() {
            let merged = owners
                .map_err(CoordinatorError::from)
                .and_then(|owners| answers[index].merge(&owners, r, mode));
            match merged {
                Err(_) if left_out[index] => {
                    one_by_one.push(index);
                    outcomes.push(Err(CoordinatorError::NoOutcome));
                    merged_of.push(None);
                }
                Ok(merged) if !merged.is_empty() => {
                    let encoded = merged.encode();
                    for node in answers[index].stale(&merged) {
                        repairs
                            .entry(node.to_owned())
                            .or_default()
                            .push(ReplicaRecord {
                                key: keys[index].clone(),
                                record: encoded.clone(),
                            });
                    }
                    merged_of.push(Some((merged.clone(), encoded)));
                    outcomes.push(Ok(merged));
                }
                other => {
                    merged_of.push(None);
                    outcomes.push(other);
                }
            }
        }
        futures::future::join_all(
            repairs
                .into_iter()
                .map(|(node, records)| self.repair_share(&route, node, records, timeout)),
        )
        .await;
        let singles = futures::future::join_all(
            one_by_one
                .iter()
                .map(|&index| self.read(keys[index].clone(), read_quorum, deadline)),
        )
        .await;
        for (index, outcome) in one_by_one.into_iter().zip(singles) {
            outcomes[index] = outcome;
        }

        let (this, keys) = (self.clone(), keys.to_vec());
        tokio::spawn(async move {
            while let Some((node, indexes, result)) = pending.next().await {
                let Ok(replies) = result else {
                    continue;
                };
                let records: Vec<ReplicaRecord> = indexes
                    .iter()
                    .zip(replies)
                    .filter_map(|(&index, reply)| {
                        let (merged, encoded) = merged_of[index].as_ref()?;
                        is_stale(&reply.record, merged).then(|| ReplicaRecord {
                            key: keys[index].clone(),
                            record: encoded.clone(),
                        })
                    })
                    .collect();
                if !records.is_empty() {
                    this.repair_share(&route, node, records, timeout).await;
                }
            }
        });
        Ok(outcomes)
    }

    /// Sends a replica the merged records of every key it answered with
    /// less, in one call.
    async fn repair_share(
        &self,
        route: &Route,
        node: String,
        records: Vec<ReplicaRecord>,
        timeout: Duration,
    ) {
        let repaired = records.len() as u64;
        let call = route.call(&node, timeout);
        match self.inner.rpc.apply_batch(call, records).await {
            Ok(()) => {
                self.inner.metrics.read_repairs.inc_by(repaired);
            }
            Err(status) => tracing::debug!(%node, %status, "read repair failed"),
        }
    }
}
