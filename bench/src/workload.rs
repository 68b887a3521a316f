//! What the clients ask for: YCSB's core workloads, a load phase, single
//! operations and their batch variants.

use clap::ValueEnum;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::keys::KeyDistribution;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Writes every key once, in order.
    Load,
    Put,
    Get,
    Delete,
    /// YCSB A: 50% reads, 50% updates.
    A,
    /// YCSB B: 95% reads, 5% updates.
    B,
    /// YCSB C: reads only.
    C,
    /// RawBatchPut (etcd: a Txn of puts; Cassandra: an unlogged batch).
    BatchPut,
    BatchGet,
    BatchDelete,
    /// A call that touches no storage: gRPC health checks on ringkv's
    /// server stack, the floor of any request.
    Noop,
}

/// One request's kind; batches carry `--batch-size` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Delete,
    BatchPut,
    BatchGet,
    BatchDelete,
    Noop,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Load => "load",
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Delete => "delete",
            Workload::A => "ycsb-a",
            Workload::B => "ycsb-b",
            Workload::C => "ycsb-c",
            Workload::BatchPut => "batch-put",
            Workload::BatchGet => "batch-get",
            Workload::BatchDelete => "batch-delete",
            Workload::Noop => "noop",
        }
    }

    pub fn is_batch(self) -> bool {
        matches!(
            self,
            Workload::BatchPut | Workload::BatchGet | Workload::BatchDelete
        )
    }

    /// The next request of this workload's mix.
    pub fn next_op(self, rng: &mut impl Rng) -> Op {
        match self {
            Workload::Load | Workload::Put => Op::Put,
            Workload::Get | Workload::C => Op::Get,
            Workload::Delete => Op::Delete,
            Workload::A => {
                if rng.random_bool(0.5) {
                    Op::Get
                } else {
                    Op::Put
                }
            }
            Workload::B => {
                if rng.random_bool(0.95) {
                    Op::Get
                } else {
                    Op::Put
                }
            }
            Workload::BatchPut => Op::BatchPut,
            Workload::BatchGet => Op::BatchGet,
            Workload::BatchDelete => Op::BatchDelete,
            Workload::Noop => Op::Noop,
        }
    }

    /// A load phase visits each key once whatever distribution was asked.
    pub fn distribution(self, asked: KeyDistribution) -> KeyDistribution {
        match self {
            Workload::Load => KeyDistribution::Sequential,
            _ => asked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn read_share(workload: Workload) -> f64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let reads = (0..100_000)
            .filter(|_| workload.next_op(&mut rng) == Op::Get)
            .count();
        reads as f64 / 100_000.0
    }

    #[test]
    fn ycsb_mixes_have_their_read_shares() {
        assert!((read_share(Workload::A) - 0.5).abs() < 0.01);
        assert!((read_share(Workload::B) - 0.95).abs() < 0.01);
        assert_eq!(read_share(Workload::C), 1.0);
        assert_eq!(read_share(Workload::Put), 0.0);
    }
}
