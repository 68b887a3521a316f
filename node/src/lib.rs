//! The ringkv storage node.
//!
//! Layered like Garage: local storage at the bottom, versioned replicas on
//! it, the ring and membership beside them, coordination on top, and the
//! gRPC services at the edge.
//!
//! - [`storage`]: the local RocksDB engine.
//! - [`versions`]: dotted version vector sets and hybrid logical clocks.
//! - [`context_seal`]: the cluster's seal on the causal contexts clients hold.
//! - [`replica`]: this node's versioned records.
//! - [`ring`]: partition layouts and the claimant that makes them.
//! - [`membership`] and [`discovery`]: gossip and where seeds come from;
//!   [`contact`]: whether this node has heard from the cluster since it
//!   started or stalled.
//! - [`replication`]: quorum coordination, sloppy quorum, read repair.
//! - [`handoff`]: delivery of hints.
//! - [`rebalance`]: streaming partitions to their new owners;
//!   [`partition_stream`] is the side that sends them.
//! - [`refill`]: a node that lost its data counts toward no read until it
//!   has streamed its partitions back.
//! - [`repair`]: anti-entropy with hash trees, and tombstone purge rules.
//! - [`cleanup`]: former owners drop partitions once a transition is over.
//! - [`lifecycle`]: whether this node is leaving or has left.
//! - [`rawkv_service`], [`internal_service`]: the gRPC services.
//! - [`validate`], [`metrics`], [`telemetry`], [`config`], [`node`].
//! - [`wall_clock`]: the time every TTL, grace period and clock reads.

pub mod cleanup;
pub mod config;
pub mod contact;
pub mod context_seal;
pub mod deadline;
pub mod discovery;
pub mod handoff;
pub mod internal_service;
pub mod lifecycle;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod partition_stream;
pub mod peers;
pub mod rawkv_service;
pub mod readiness;
pub mod rebalance;
pub mod refill;
pub mod repair;
pub mod replica;
pub mod replication;
pub mod ring;
pub mod storage;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod validate;
pub mod versions;
pub mod wall_clock;

pub use config::NodeConfig;
