//! The ringkv operator.
//!
//! - [`crd`]: the `KVCluster` resource.
//! - [`build`]: the objects a KVCluster owns, as pure functions of it.
pub mod build;
pub mod crd;
