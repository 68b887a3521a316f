//! The ringkv gRPC contract, generated from `proto/ringkv/v1/*.proto`.
//!
//! `v1` holds the messages, the `raw_kv_client` and the `raw_kv_server`.

/// Version 1 of the ringkv API (`package ringkv.v1`).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ringkv.v1");
}

pub mod peer_auth;

/// The encoded `FileDescriptorSet` of every ringkv proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ringkv_descriptor");

/// Largest key the API accepts, in bytes. Part of the contract, not a tunable:
/// keys are copied into hints, indexes and hash-tree leaves.
pub const MAX_KEY_BYTES: usize = 4096;
