//! The one place the node's errors become gRPC statuses: which code a
//! client sees for each, and what is logged on the way out.

use tonic::Status;

use crate::{
    coordinator::CoordinatorError, replica::ReplicaError, server::log_limit::LogLimit,
    storage::StorageError,
};

static DISK_FULL_LOG: LogLimit = LogLimit::new(std::time::Duration::from_secs(10));
static TRANSIENT_STORAGE_LOG: LogLimit = LogLimit::new(std::time::Duration::from_secs(1));

impl From<StorageError> for Status {
    fn from(error: StorageError) -> Self {
        replica_status(&ReplicaError::Storage(error))
    }
}

impl From<ReplicaError> for Status {
    fn from(error: ReplicaError) -> Self {
        replica_status(&error)
    }
}

fn replica_status(error: &ReplicaError) -> Status {
    match error {
        // Refused on purpose, once per write while the volume stays full.
        ReplicaError::Storage(error @ StorageError::DiskFull { .. }) => {
            if let Some(held_back) = DISK_FULL_LOG.admit() {
                tracing::warn!(%error, held_back, "write refused: the data volume is short of space");
            }
            Status::unavailable(error.to_string())
        }
        ReplicaError::Storage(error) => {
            if error.is_transient() {
                // Every request fails alike until the disk recovers.
                if let Some(held_back) = TRANSIENT_STORAGE_LOG.admit() {
                    tracing::error!(%error, held_back, "storage failure");
                }
                Status::unavailable(error.to_string())
            } else {
                tracing::error!(%error, "storage failure");
                Status::internal(error.to_string())
            }
        }
        ReplicaError::ClockAhead { .. } => {
            tracing::warn!(%error, "refused a timestamp from the future");
            Status::unavailable(error.to_string())
        }
        // A peer's bytes that do not decode are the sender's mistake.
        ReplicaError::BadRecord(_) => {
            tracing::warn!(%error, "refused a record from a peer");
            Status::invalid_argument(error.to_string())
        }
        // The client resolves it: a put with the context read replaces the
        // siblings instead of adding one.
        ReplicaError::Bound(_) => Status::failed_precondition(error.to_string()),
        other => {
            tracing::error!(error = %other, "replica failure");
            Status::internal(other.to_string())
        }
    }
}

impl From<CoordinatorError> for Status {
    fn from(error: CoordinatorError) -> Self {
        use CoordinatorError as E;
        let message = error.to_string();
        match error {
            E::QuorumOutOfRange { .. } | E::BadContext(_) => Status::invalid_argument(message),
            E::NoLayout { .. }
            | E::StaleView(_)
            | E::QuorumNotMet(_)
            | E::TooManyHops { .. }
            | E::NoLiveOwner { .. }
            | E::RelayFailed { .. } => Status::unavailable(message),
            E::PassedOn { answer, .. } => match answer.code() {
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
                    Status::unavailable(message)
                }
                code => Status::new(code, message),
            },
            // Shared by the keys of one failed write batch.
            E::Replica(shared) => replica_status(&shared),
            E::Layout(error) => {
                tracing::error!(%error, "the ring layout cannot name a key's owners");
                Status::internal(message)
            }
            E::NoOutcome => Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::{
        coordinator::{QuorumFailure, Shortfall},
        versions::seal::ContextError,
    };

    /// Each coordinator error reaches the client with the code docs/api.md
    /// gives it, and with its own message.
    #[test]
    fn each_coordinator_error_gets_its_documented_code() {
        let quorum = QuorumFailure {
            shortfall: Shortfall::Write {
                partition: 1,
                replicas: 3,
            },
            needed: 2,
            replied: vec!["n1".into()],
            silent: vec!["n2".into(), "n3".into()],
        };
        let cases = [
            (
                CoordinatorError::QuorumOutOfRange {
                    name: "read_quorum",
                    requested: 4,
                    n: 3,
                },
                Code::InvalidArgument,
            ),
            (
                CoordinatorError::BadContext(ContextError::BadSeal),
                Code::InvalidArgument,
            ),
            (CoordinatorError::NoLayout { n: 3 }, Code::Unavailable),
            (CoordinatorError::QuorumNotMet(quorum), Code::Unavailable),
            (
                CoordinatorError::PassedOn {
                    target: "n2".into(),
                    partition: 1,
                    answer: Status::deadline_exceeded("late"),
                },
                Code::Unavailable,
            ),
            (
                CoordinatorError::PassedOn {
                    target: "n2".into(),
                    partition: 1,
                    answer: Status::failed_precondition("refused"),
                },
                Code::FailedPrecondition,
            ),
            (
                ReplicaError::ClockAhead {
                    what: "the causal context",
                    ahead_ms: 900,
                    limit_ms: 500,
                }
                .into(),
                Code::Unavailable,
            ),
            (ReplicaError::Poisoned.into(), Code::Internal),
            (
                ReplicaError::BadRecord(crate::versions::VersionError::Truncated {
                    what: "stored value",
                })
                .into(),
                Code::InvalidArgument,
            ),
            (
                ReplicaError::Bound(crate::replica::BoundError::TooManySiblings {
                    siblings: 101,
                    max: 100,
                })
                .into(),
                Code::FailedPrecondition,
            ),
            (CoordinatorError::NoOutcome, Code::Internal),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
