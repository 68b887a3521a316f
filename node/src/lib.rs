//! The ringkv storage node.
//!
//! The folders follow the data path of a request, from the gRPC edge down to
//! RocksDB (docs/architecture.md traces a RawPut and a RawGet through them):
//!
//! - `api`: the gRPC services: RawKV for clients, Replica for peers, Admin.
//! - `coordinator`: quorum reads, writes and scans; routing during ring
//!   transitions.
//! - `replica`: this node's versioned records, applied under per-key locks.
//! - `versions`: dotted version vector sets, hybrid logical clocks, the
//!   causal contexts clients hold and the seal on them.
//! - `storage`: the local RocksDB engine.
//! - `ring`: partition layouts and the claimant that makes them.
//! - `cluster`: gossip membership, seed discovery and peer clients.
//! - `sync`: hint delivery, partition streaming, refill, anti-entropy and
//!   garbage collection.
//! - `server`: configuration, TLS, telemetry, metrics, readiness and the
//!   wiring that starts it all.
//!
//! The public items are what the binary, the operator and the tests need.

mod api;
mod cluster;
mod coordinator;
mod replica;
mod ring;
mod server;
mod storage;
mod sync;
mod versions;

pub use cluster::discovery::{KubernetesSeeds, SeedProvider};
pub use cluster::rpc::{FORWARDED, RING_VERSION};
pub use replica::{LocalReplica, Update};
pub use ring::{
    layout::{Layout, LayoutError, Member, DEFAULT_PARTITIONS},
    partition_of, RingState,
};
pub use server::{
    config::NodeConfig,
    telemetry::init as init_telemetry,
    wiring::{run, termination_signal},
};
pub use storage::{
    now_millis, Durability, MemoryFiles, Modify, PurgeHook, RocksStorage, RocksStorageOptions,
    Storage,
};
pub use sync::{
    anti_entropy::{purgeable, Agreement},
    refill::Refill,
};
pub use versions::{
    seal::ContextSeal, wall_clock::WallClock, CausalContext, ConflictMode, Hlc, Siblings,
};
