//! Spec errors the CRD's CEL rules cannot express, or that an older CRD let
//! through. A bad spec changes nothing in the cluster: the reconcile writes
//! it as a condition, with the generation it judged, and waits for a fix.

use crate::crd::KVClusterSpec;

/// Why a spec is refused, naming the field and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.replicationFactor: replicationFactor {0} is below 1")]
    ReplicationFactor(i32),
    #[error("spec.{field}: {field} {value} is below 1")]
    QuorumBelowOne { field: &'static str, value: i32 },
    #[error("spec.{field}: {field} {value} exceeds replicationFactor {n}")]
    QuorumAboveN {
        field: &'static str,
        n: i32,
        value: i32,
    },
    #[error("spec.replicas: replicas {0} is below 1")]
    Replicas(i32),
    #[error("spec.partitions: partitions {0} is below 1")]
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
        if value < 1 {
            return Err(SpecError::QuorumBelowOne { field, value });
        }
        if value > n {
            return Err(SpecError::QuorumAboveN { field, n, value });
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
