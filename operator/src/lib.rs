//! The ringkv operator.
pub mod crd;
