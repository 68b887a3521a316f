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
    versions::Siblings,
};

/// Whether a replica's record lacks something the merged record has.
fn is_stale(record: &Option<Siblings>, merged: &Siblings) -> bool {
    record.as_ref().is_none_or(|r| !r.descends(merged))
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
        // A refilling replica's answer is merged but counts toward no
        // quorum: it may lack acknowledged writes (see `refill`).
        let mut replies: Vec<(String, Option<Siblings>)> = Vec::new();
        let (mut counted, mut refilling) = (Vec::new(), Vec::new());
        while counted.len() < r {
            match pending.next().await {
                Some((node, Ok(reply))) => {
                    if reply.counts {
                        counted.push(node.clone());
                    } else {
                        refilling.push(node.clone());
                    }
                    replies.push((node, reply.record));
                }
                Some((node, Err(status))) => {
                    tracing::debug!(%node, %status, "replica read failed");
                }
                None => break,
            }
        }
        if counted.len() < r {
            let silent = owners
                .iter()
                .filter(|o| !counted.contains(o) && !refilling.contains(o))
                .cloned()
                .collect();
            return Err(QuorumFailure {
                shortfall: Shortfall::Read {
                    replicas: owners.len(),
                    refilling,
                },
                needed: r,
                replied: counted,
                silent,
            }
            .into());
        }
        let mode = self.mode();
        let merged = replies
            .iter()
            .filter_map(|(_, record)| record.as_ref())
            .fold(Siblings::default(), |acc, record| {
                acc.merge_with(mode, record)
            });
        if merged.is_empty() {
            return Ok(merged);
        }
        let encoded = merged.encode();
        let repairs = replies
            .iter()
            .filter(|(_, record)| is_stale(record, &merged))
            .map(|(node, _)| self.read_repair(&route, node, &key, &encoded, timeout));
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
