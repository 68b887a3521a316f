//! Spec errors the CRD's CEL rules cannot express, or that an older CRD let
//! through. A bad spec changes nothing in the cluster: the reconcile writes
//! it as a condition, with the generation it judged, and waits for a fix.

use crate::crd::KVClusterSpec;

/// Why a spec is refused, naming the field and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("replicationFactor must be at least 1, got {0}")]
    ReplicationFactor(i32),
    #[error("{field} must lie in 1..={n} (replicationFactor), got {value}")]
    Quorum {
        field: &'static str,
        n: i32,
        value: i32,
    },
    #[error("replicas must be at least 1, got {0}")]
    Replicas(i32),
    #[error("partitions must be at least 1, got {0}")]
    Partitions(i32),
}

/// Checks what the CRD schema cannot.
pub fn validate(spec: &KVClusterSpec) -> Result<(), SpecError> {
    let n = spec.replication_factor;
    if n < 1 {
        return Err(SpecError::ReplicationFactor(n));
    }
    for (field, value) in [
        ("readQuorum", spec.read_quorum),
        ("writeQuorum", spec.write_quorum),
    ] {
        if !(1..=n).contains(&value) {
            return Err(SpecError::Quorum { field, n, value });
        }
    }
    if spec.replicas < 1 {
        return Err(SpecError::Replicas(spec.replicas));
    }
    if spec.partitions < 1 {
        return Err(SpecError::Partitions(spec.partitions));
    }
    Ok(())
}
