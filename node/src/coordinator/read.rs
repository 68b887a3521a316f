//! The read path: ask the key's live owners, merge the first R answers that
//! count, and repair the replicas that answered with less.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{stream::FuturesUnordered, StreamExt};

use super::{route, Coordinator, CoordinatorError, QuorumFailure, Route, Shortfall};
use crate::{
    cluster::{
        deadline::Deadline,
        rpc::{Delivery, ReadReply},
    },
    versions::{ConflictMode, Siblings},
};

/// Whether a replica's record lacks something the merged record has.
pub(super) fn is_stale(record: &Option<Siblings>, merged: &Siblings) -> bool {
    record.as_ref().is_none_or(|r| !r.descends(merged))
}

/// What a key's replicas answered a read. A refilling replica's answer is
/// merged but counts toward no quorum: it may lack acknowledged writes
/// (see `refill`).
#[derive(Debug, Default)]
pub(super) struct Answers {
    replies: Vec<(String, Option<Siblings>)>,
    pub counted: Vec<String>,
    refilling: Vec<String>,
}

impl Answers {
    pub fn take(&mut self, node: String, reply: ReadReply) {
        if reply.counts {
            self.counted.push(node.clone());
        } else {
            self.refilling.push(node.clone());
        }
        self.replies.push((node, reply.record));
    }

    /// The merge of every answer once R of them count, or the quorum
    /// failure naming who replied and who stayed silent.
    pub fn merge(
        &self,
        owners: &[String],
        r: usize,
        mode: ConflictMode,
    ) -> Result<Siblings, CoordinatorError> {
        if self.counted.len() < r {
            let silent = owners
                .iter()
                .filter(|o| !self.counted.contains(o) && !self.refilling.contains(o))
                .cloned()
                .collect();
            return Err(QuorumFailure {
                shortfall: Shortfall::Read {
                    replicas: owners.len(),
                    refilling: self.refilling.clone(),
                },
                needed: r,
                replied: self.counted.clone(),
                silent,
            }
            .into());
        }
        Ok(self
            .replies
            .iter()
            .filter_map(|(_, record)| record.as_ref())
            .fold(Siblings::default(), |acc, record| {
                acc.merge_with(mode, record)
            }))
    }

    /// The replicas whose answer lacks something of `merged`.
    pub fn stale<'a>(&'a self, merged: &'a Siblings) -> impl Iterator<Item = &'a str> + 'a {
        self.replies
            .iter()
            .filter(|(_, record)| is_stale(record, merged))
            .map(|(node, _)| node.as_str())
    }
}

impl Coordinator {
    /// Reads `key` from R replicas, merges their records and repairs stale
    /// replicas: synchronously those that answered, later the rest.
    pub async fn read(
        &self,
        key: Bytes,
        read_quorum: Option<u32>,
        deadline: Option<Deadline>,
    ) -> Result<Siblings, CoordinatorError> {
        let r = self.read_quorum(read_quorum)?;
        let state = self.coordinating_state()?;
        let (_, owners) = route::owners(&state.current, &key)?;
        let route = Arc::new(self.route(state.version));
        let timeout = self.timeout(deadline);

        let mut pending: FuturesUnordered<_> = route::read_targets(&owners, &route, self.me())
            .into_iter()
            .map(|node| {
                let (this, route, key) = (self.clone(), route.clone(), key.clone());
                async move {
                    let call = route.call(&node, timeout);
                    let result = this.inner.rpc.read(call, &key).await;
                    (node, result)
                }
            })
            .collect();
        let mut answers = Answers::default();
        while answers.counted.len() < r {
            match pending.next().await {
                Some((node, Ok(reply))) => answers.take(node, reply),
                Some((node, Err(status))) => {
                    tracing::debug!(%node, %status, "replica read failed");
                }
                None => break,
            }
        }
        let merged = answers.merge(&owners, r, self.mode())?;
        if merged.is_empty() {
            return Ok(merged);
        }
        let encoded = merged.encode();
        let repairs = answers
            .stale(&merged)
            .map(|node| self.read_repair(&route, node, &key, &encoded, timeout));
        futures::future::join_all(repairs).await;

        let (this, merged_late) = (self.clone(), merged.clone());
        tokio::spawn(async move {
            while let Some((node, result)) = pending.next().await {
                if let Ok(ReadReply { record, .. }) = result {
                    if is_stale(&record, &merged_late) {
                        this.read_repair(&route, &node, &key, &encoded, timeout)
                            .await;
                    }
                }
            }
        });
        Ok(merged)
    }

    /// Sends the merged record to a replica that answered with less.
    async fn read_repair(
        &self,
        route: &Route,
        node: &str,
        key: &Bytes,
        record: &Bytes,
        timeout: Duration,
    ) {
        let call = route.call(node, timeout);
        match self
            .inner
            .rpc
            .apply(call, key, record, Delivery::Replica)
            .await
        {
            Ok(()) => {
                self.inner.metrics.read_repairs.inc();
            }
            Err(status) => tracing::debug!(%node, %status, "read repair failed"),
        }
    }
}
