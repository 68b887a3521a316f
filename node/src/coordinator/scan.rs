//! The scan path: every live member returns its own records of a range,
//! page by page, and each partition needs R of its owners among them.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{route, visible_values, Coordinator, CoordinatorError, QuorumFailure, Shortfall};
use crate::{
    cluster::{deadline::Deadline, rpc::ScanReply},
    ring::partition_of,
    storage::ScanRange,
    versions::Siblings,
};

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Keys with at least one visible value, in scan order.
    pub pairs: Vec<(Bytes, Siblings)>,
    /// The scan stopped at the range's byte cap: pairs past the last one
    /// may exist.
    pub more: bool,
}

impl Coordinator {
    /// Scans a key range: every live member returns its own records, of
    /// which only those of partitions it owns in the current layout count
    /// (a former owner's leftover copy is no answer), and the copies of one
    /// key are merged. Every partition needs answers from R of its owners,
    /// or the scan fails with UNAVAILABLE naming the partitions short of R,
    /// rather than silently returning part of the range. Pages continue
    /// past keys that every copy shows deleted, until `limit` visible pairs
    /// are found or their keys and visible values reach the range's byte
    /// cap (each replica's page is capped the same way, so one scan holds
    /// at most a page per member in memory).
    pub async fn scan(
        &self,
        range: ScanRange,
        read_quorum: Option<u32>,
        deadline: Option<Deadline>,
    ) -> Result<ScanOutcome, CoordinatorError> {
        let r = self.read_quorum(read_quorum)?;
        let state = self.coordinating_state()?;
        let layout = state.current.clone();
        // Every page goes out on the version the owners came from: once the
        // ring has moved past it, peers refuse the pages and the scan fails
        // rather than count copies their former owners have dropped.
        let view = self.route(state.version);
        let timeout = self.timeout(deadline);
        let everyone: Vec<String> = layout.members().iter().map(|m| m.id.clone()).collect();
        let members = route::read_targets(&everyone, &view, self.me());
        let partitions = layout.partitions();
        let owners: Vec<Vec<String>> = (0..partitions)
            .map(|p| {
                layout
                    .preference_list(p)
                    .map(|list| list.into_iter().map(String::from).collect())
            })
            .collect::<Result<_, _>>()?;
        let mode = self.mode();
        let page = range.limit.clamp(1, 10_000);
        let mut cursor = range.clone();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        loop {
            let pages = futures::future::join_all(members.iter().map(|node| {
                let page = ScanRange {
                    limit: page,
                    key_only: false,
                    ..cursor.clone()
                };
                let view = &view;
                async move { self.inner.rpc.scan(view.call(node, timeout), &page).await }
            }))
            .await;
            let mut merged: BTreeMap<Bytes, Siblings> = BTreeMap::new();
            // Keys past the first full page's last key may be missing from
            // that node's answer, so only keys up to it are final this round.
            let mut frontier: Option<Bytes> = None;
            // Per partition, how many of its owners answered for it.
            let mut answers = vec![0usize; partitions as usize];
            let mut answered = Vec::new();
            for (node, result) in members.iter().zip(pages) {
                let ScanReply {
                    records,
                    full: reply_full,
                    refilling,
                } = match result {
                    Ok(reply) => reply,
                    Err(status) => {
                        tracing::debug!(%node, %status, "replica scan failed");
                        continue;
                    }
                };
                answered.push(node.clone());
                let counts = |p: u32| {
                    owners[p as usize].iter().any(|o| o == node) && !refilling.contains(&p)
                };
                for (p, count) in answers.iter_mut().enumerate() {
                    *count += usize::from(counts(p as u32));
                }
                if reply_full {
                    if let Some((last, _)) = records.last() {
                        frontier = Some(match (frontier, range.reverse) {
                            (None, _) => last.clone(),
                            (Some(f), false) => f.min(last.clone()),
                            (Some(f), true) => f.max(last.clone()),
                        });
                    }
                }
                for (key, record) in records {
                    if !counts(partition_of(&key, partitions)) {
                        continue;
                    }
                    let entry = merged.entry(key).or_default();
                    *entry = entry.merge_with(mode, &record);
                }
            }
            let short: Vec<u32> = (0..partitions)
                .filter(|p| answers[*p as usize] < r)
                .collect();
            if !short.is_empty() {
                return Err(QuorumFailure {
                    shortfall: Shortfall::Scan { short, partitions },
                    needed: r,
                    silent: everyone
                        .iter()
                        .filter(|m| !answered.contains(m))
                        .cloned()
                        .collect(),
                    replied: answered,
                }
                .into());
            }
            let keys: Box<dyn Iterator<Item = (Bytes, Siblings)>> = if range.reverse {
                Box::new(merged.into_iter().rev())
            } else {
                Box::new(merged.into_iter())
            };
            for (key, record) in keys {
                let beyond =
                    frontier.as_ref().is_some_and(
                        |f| {
                            if range.reverse {
                                key < *f
                            } else {
                                key > *f
                            }
                        },
                    );
                if beyond {
                    break;
                }
                let visible = visible_values(&record, mode);
                if !visible.is_empty() {
                    let values: usize = visible.iter().map(|v| v.len()).sum();
                    bytes += key.len() + if range.key_only { 0 } else { values };
                    out.push((key, record));
                    if range.is_full(out.len(), bytes) {
                        let more = range.max_bytes.is_some_and(|cap| bytes >= cap);
                        return Ok(ScanOutcome { pairs: out, more });
                    }
                }
            }
            let Some(frontier) = frontier else {
                return Ok(ScanOutcome {
                    pairs: out,
                    more: false,
                });
            };
            if range.reverse {
                cursor.end = frontier;
            } else {
                let mut next = frontier.to_vec();
                next.push(0);
                cursor.start = Bytes::from(next);
            }
        }
    }
}
