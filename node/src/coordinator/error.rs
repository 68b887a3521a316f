//! Why the coordinator could not serve a request. `api::status` turns each
//! of these into a gRPC status, in that one place; everything below the API
//! keeps the structure (which quorum, which nodes) for logs and tests.

use std::{fmt, sync::Arc};

use tonic::Status;

use crate::{replica::ReplicaError, ring::LayoutError, versions::seal::ContextError};

/// A request the coordinator could not serve.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CoordinatorError {
    /// A client's R or W override outside 1..=N.
    #[error("{name} {requested} is outside 1..={n}, the replication factor")]
    QuorumOutOfRange {
        name: &'static str,
        requested: u32,
        n: usize,
    },
    #[error("the cluster has no partition layout yet: it needs {n} live nodes (N) to make one")]
    NoLayout { n: usize },
    /// This node's view of the ring may be too old to coordinate with.
    #[error("{0}")]
    StaleView(String),
    #[error(transparent)]
    QuorumNotMet(#[from] QuorumFailure),
    #[error(transparent)]
    BadContext(#[from] ContextError),
    /// This node's ring layout cannot name a key's owners.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Shared, because one failed write batch fails each of its keys.
    #[error(transparent)]
    Replica(Arc<ReplicaError>),
    /// A write this node passed on to a replica of its key failed there.
    #[error("write passed on to {target}, a replica of partition {partition}{}", passed_on_detail(.answer))]
    PassedOn {
        target: String,
        partition: u32,
        answer: Status,
    },
    /// A relayed write reached a node after too many hops: ring views
    /// disagree.
    #[error(
        "node {node} would pass a write for partition {partition} on after {hops} nodes already did (at most {max}): ring views disagree (this node has version {version}); retry once they agree"
    )]
    TooManyHops {
        node: String,
        partition: u32,
        hops: u32,
        max: u32,
        version: u64,
    },
    #[error(
        "node {node} cannot pass a write on: none of the owners of partition {partition} is alive"
    )]
    NoLiveOwner { node: String, partition: u32 },
    /// A node this write had to be relayed to did not take it.
    #[error("passing a write for partition {partition} on to its {role} {target}: {}", .answer.message())]
    RelayFailed {
        partition: u32,
        role: &'static str,
        target: String,
        answer: Status,
    },
    /// A write of a batch that no path of the batch wrote: a bug.
    #[error("a batch write got no outcome")]
    NoOutcome,
}

impl From<ReplicaError> for CoordinatorError {
    fn from(error: ReplicaError) -> Self {
        Self::Replica(Arc::new(error))
    }
}

/// A timeout of the replica a write was passed on to reads as no answer,
/// not as the client's own timeout; any other answer is quoted.
fn passed_on_detail(answer: &Status) -> String {
    match answer.code() {
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
            format!(", got no answer within the deadline: {}", answer.message())
        }
        _ => format!(": {}", answer.message()),
    }
}

/// Which quorum fell short, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shortfall {
    /// A read of one key, from its `replicas` owners. `refilling` replied
    /// but count toward no quorum: they lost their data and are refilling.
    Read {
        replicas: usize,
        refilling: Vec<String>,
    },
    /// A write, counted among the owners of `partition`.
    Write { partition: u32, replicas: usize },
    /// A write, counted among the owners `partition` had before its last
    /// move: members that have not adopted the move still read from them.
    WriteBeforeMove { partition: u32, owners: usize },
    /// A scan in which `short` of the ring's `partitions` lacked R owners.
    Scan { short: Vec<u32>, partitions: u32 },
}

/// A quorum that was not met: how many answers it needed, which nodes gave
/// one that counts, and which of those it was counted among did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuorumFailure {
    pub shortfall: Shortfall,
    pub needed: usize,
    pub replied: Vec<String>,
    pub silent: Vec<String>,
}

impl std::error::Error for QuorumFailure {}

impl fmt::Display for QuorumFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (needed, got) = (self.needed, self.replied.len());
        match &self.shortfall {
            Shortfall::Read {
                replicas,
                refilling,
            } => {
                write!(
                    f,
                    "read quorum not met: {got} of {replicas} replicas replied, R={needed} required"
                )?;
                if !refilling.is_empty() {
                    write!(
                        f,
                        " ({} more replied but are refilling after losing their data: {})",
                        refilling.len(),
                        refilling.join(", ")
                    )?;
                }
            }
            Shortfall::Write {
                partition,
                replicas,
            } => write!(
                f,
                "write quorum not met: {got} of {needed} required acknowledgements from the {replicas} replicas of partition {partition}"
            )?,
            Shortfall::WriteBeforeMove { partition, owners } => write!(
                f,
                "write quorum not met: {got} of {needed} required acknowledgements from the {owners} owners partition {partition} had before its last move (members that have not adopted the move still read from them)"
            )?,
            Shortfall::Scan { short, partitions } => write!(
                f,
                "scan: read quorum not met for {} of {partitions} partitions (R={needed}): {}",
                short.len(),
                name_some(short)
            )?,
        }
        write!(
            f,
            "; answered: {}; no answer: {}",
            list(&self.replied),
            list(&self.silent)
        )
    }
}

fn list(nodes: &[String]) -> String {
    if nodes.is_empty() {
        "none".to_owned()
    } else {
        nodes.join(", ")
    }
}

/// Names the first few of `partitions`, and how many more there are.
fn name_some(partitions: &[u32]) -> String {
    const SHOWN: usize = 8;
    let named: Vec<String> = partitions.iter().take(SHOWN).map(u32::to_string).collect();
    let more = partitions.len().saturating_sub(SHOWN);
    if more > 0 {
        format!("partitions {} and {more} more", named.join(", "))
    } else {
        format!("partitions {}", named.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Each shortfall keeps the message documented in docs/api.md and names
    /// the nodes that answered and those that did not.
    #[test]
    fn a_quorum_failure_names_its_quorum_and_its_nodes() {
        let cases = [
            (
                Shortfall::Read {
                    replicas: 3,
                    refilling: nodes(&["n3"]),
                },
                "read quorum not met: 1 of 3 replicas replied, R=2 required (1 more replied but are refilling after losing their data: n3); answered: n1; no answer: n2",
            ),
            (
                Shortfall::Write {
                    partition: 17,
                    replicas: 3,
                },
                "write quorum not met: 1 of 2 required acknowledgements from the 3 replicas of partition 17; answered: n1; no answer: n2",
            ),
            (
                Shortfall::Scan {
                    short: (0..10).collect(),
                    partitions: 256,
                },
                "scan: read quorum not met for 10 of 256 partitions (R=2): partitions 0, 1, 2, 3, 4, 5, 6, 7 and 2 more; answered: n1; no answer: n2",
            ),
        ];
        for (shortfall, message) in cases {
            let failure = QuorumFailure {
                shortfall,
                needed: 2,
                replied: nodes(&["n1"]),
                silent: nodes(&["n2"]),
            };
            assert_eq!(failure.to_string(), message);
        }
        let none = QuorumFailure {
            shortfall: Shortfall::WriteBeforeMove {
                partition: 4,
                owners: 3,
            },
            needed: 2,
            replied: Vec::new(),
            silent: nodes(&["a", "b", "c"]),
        };
        assert!(none
            .to_string()
            .ends_with("before its last move (members that have not adopted the move still read from them); answered: none; no answer: a, b, c"));
    }

    /// A pass-on that got no answer in time reads as no answer, not as the
    /// client's own timeout; any other answer is quoted.
    #[test]
    fn a_failed_pass_on_names_the_replica_and_quotes_its_answer() {
        for code in [tonic::Code::Cancelled, tonic::Code::DeadlineExceeded] {
            let error = CoordinatorError::PassedOn {
                target: "n2".into(),
                partition: 17,
                answer: Status::new(code, "because"),
            };
            assert_eq!(
                error.to_string(),
                "write passed on to n2, a replica of partition 17, got no answer within the deadline: because"
            );
        }
        let error = CoordinatorError::PassedOn {
            target: "n2".into(),
            partition: 17,
            answer: Status::invalid_argument("because"),
        };
        assert_eq!(
            error.to_string(),
            "write passed on to n2, a replica of partition 17: because"
        );
    }
}
