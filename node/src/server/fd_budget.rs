//! File descriptors: the node raises its soft limit to the hard one at
//! start, then splits what it has between RocksDB's open files, the peer
//! port, other files and sockets, and client connections. The client port
//! refuses connections past its share (see [`crate::server::accept`]), so a
//! crowd of idle clients can never take the descriptors a flush, a
//! compaction or a peer needs.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept for everything but RocksDB's table files and client
/// connections: the WAL, manifests and LOCK, listeners, the gossip socket,
/// outgoing peer channels, logs, and headroom.
pub const RESERVED_FDS: u64 = 256;
/// Incoming connections on the peer port: other nodes, the operator, an
/// administrator's CLI.
pub const PEER_CONNECTIONS: usize = 256;
/// The most table files RocksDB keeps open, however high the limit: enough
/// for about 640 GiB in 64 MiB files.
pub const MAX_ROCKSDB_FILES: u64 = 10_000;
/// The fewest: below this RocksDB reopens table files on most reads.
pub const MIN_ROCKSDB_FILES: u64 = 64;

/// How this node's descriptors are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft limit the node runs with.
    pub limit: u64,
    /// What the soft limit was before the node raised it.
    pub raised_from: u64,
    /// RocksDB's `max_open_files`.
    pub rocksdb_files: i32,
    /// Incoming connections on the peer port.
    pub peer_connections: usize,
    /// Incoming connections on the client port.
    pub client_connections: usize,
}

impl FdBudget {
    /// Raises the soft limit to the hard limit, and splits it. Raising can
    /// fail only in odd sandboxes; the node then splits what it has.
    pub fn raise() -> Self {
        let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return Self::split(1024, 1024);
        };
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            return Self::split(hard, soft);
        }
        Self::split(soft, soft)
    }

    /// How a soft limit of `limit` descriptors is split: half of what is
    /// left after the reserve and the peer port to RocksDB (within its
    /// bounds), the rest to clients.
    pub fn split(limit: u64, raised_from: u64) -> Self {
        let shared = limit.saturating_sub(RESERVED_FDS + PEER_CONNECTIONS as u64);
        let rocksdb = (shared / 2).clamp(MIN_ROCKSDB_FILES, MAX_ROCKSDB_FILES);
        let clients = shared.saturating_sub(rocksdb).max(1);
        Self {
            limit,
            raised_from,
            rocksdb_files: i32::try_from(rocksdb).unwrap_or(i32::MAX),
            peer_connections: PEER_CONNECTIONS,
            client_connections: usize::try_from(clients).unwrap_or(usize::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_common_limit_of_1024_still_serves_clients() {
        let budget = FdBudget::split(1024, 1024);
        assert_eq!(budget.rocksdb_files, 256);
        assert_eq!(budget.client_connections, 256);
    }

    proptest! {
        /// Whatever the limit: the shares fit within it once it leaves room
        /// for the minimum of RocksDB's files, and RocksDB's share stays
        /// within its bounds.
        #[test]
        fn the_shares_never_exceed_the_limit(limit in 0u64..10_000_000) {
            let budget = FdBudget::split(limit, limit);
            let rocksdb = budget.rocksdb_files as u64;
            prop_assert!((MIN_ROCKSDB_FILES..=MAX_ROCKSDB_FILES).contains(&rocksdb));
            prop_assert!(budget.client_connections >= 1);
            let used = RESERVED_FDS + budget.peer_connections as u64 + rocksdb + budget.client_connections as u64;
            if limit >= RESERVED_FDS + PEER_CONNECTIONS as u64 + 2 * MIN_ROCKSDB_FILES {
                prop_assert!(used <= limit, "{:?} uses {} of {}", budget, used, limit);
            }
        }
    }
}
