//! Which key each operation touches: YCSB's uniform, zipfian and sequential
//! request distributions over a fixed key space.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use bytes::Bytes;
use clap::ValueEnum;
use rand::Rng;
use rand_distr::{Distribution as _, Zipf};
use serde::{Deserialize, Serialize};

use crate::BenchError;

/// YCSB's skew: a few keys take most requests.
pub const ZIPFIAN_THETA: f64 = 0.99;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    Uniform,
    /// Zipfian with θ 0.99, scrambled over the key space as YCSB does, so
    /// that the hot keys do not all sit in one partition.
    Zipfian,
    /// Each key once, in order, shared by every client: a load phase.
    Sequential,
}

/// Picks keys; cheap to clone, and every clone shares the sequential cursor.
#[derive(Clone)]
pub struct KeyChooser {
    distribution: KeyDistribution,
    keys: u64,
    zipf: Option<Zipf<f64>>,
    cursor: Arc<AtomicU64>,
}

impl KeyChooser {
    pub fn new(distribution: KeyDistribution, keys: u64) -> Result<Self, BenchError> {
        if keys == 0 {
            return Err(BenchError::Config("--keys must be at least 1".into()));
        }
        let zipf = match distribution {
            KeyDistribution::Zipfian => Some(
                Zipf::new(keys as f64, ZIPFIAN_THETA)
                    .map_err(|e| BenchError::Config(format!("zipfian over {keys} keys: {e}")))?,
            ),
            _ => None,
        };
        Ok(Self {
            distribution,
            keys,
            zipf,
            cursor: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The next key index; sequential wraps around at the end of the space.
    pub fn next_index(&self, rng: &mut impl Rng) -> u64 {
        match (self.distribution, &self.zipf) {
            (KeyDistribution::Zipfian, Some(zipf)) => {
                // Zipf ranks start at 1; the hash spreads the hot ranks.
                let rank = zipf.sample(rng) as u64 - 1;
                scramble(rank) % self.keys
            }
            (KeyDistribution::Sequential, _) => {
                self.cursor.fetch_add(1, Ordering::Relaxed) % self.keys
            }
            _ => rng.random_range(0..self.keys),
        }
    }

    /// Fills `keys` with up to `count` distinct keys: a batch names each
    /// key once (ringkv and etcd refuse one that repeats a key), so a
    /// repeat is drawn again, a bounded number of times, which a key space
    /// smaller than the batch needs.
    pub fn next_batch(&self, rng: &mut impl Rng, count: u64, keys: &mut Vec<Bytes>) {
        keys.clear();
        let mut draws = 0;
        while (keys.len() as u64) < count && draws < count.saturating_mul(20) {
            draws += 1;
            let next = key(self.next_index(rng));
            if !keys.contains(&next) {
                keys.push(next);
            }
        }
    }
}

/// FNV-1a of the rank, as YCSB's ScrambledZipfianGenerator.
fn scramble(rank: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in rank.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// YCSB's key format: fixed width, so that keys sort as their indexes do.
pub fn key(index: u64) -> Bytes {
    Bytes::from(format!("user{index:012}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sequential_visits_every_key_once_before_wrapping() {
        let chooser = KeyChooser::new(KeyDistribution::Sequential, 5).unwrap();
        let other = chooser.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let seen: Vec<u64> = (0..6)
            .map(|i| {
                if i % 2 == 0 {
                    chooser.next_index(&mut rng)
                } else {
                    other.next_index(&mut rng)
                }
            })
            .collect();
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 0]);
    }

    #[test]
    fn a_batch_names_each_key_once_and_a_tiny_key_space_ends_the_draw() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut keys = Vec::new();
        for distribution in [KeyDistribution::Uniform, KeyDistribution::Zipfian] {
            let chooser = KeyChooser::new(distribution, 1_000).unwrap();
            for _ in 0..200 {
                chooser.next_batch(&mut rng, 100, &mut keys);
                let distinct: std::collections::HashSet<&Bytes> = keys.iter().collect();
                assert_eq!((keys.len(), distinct.len()), (100, 100), "{distribution:?}");
            }
        }
        let tiny = KeyChooser::new(KeyDistribution::Uniform, 3).unwrap();
        tiny.next_batch(&mut rng, 100, &mut keys);
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn zipfian_is_skewed_and_stays_in_range() {
        let chooser = KeyChooser::new(KeyDistribution::Zipfian, 10_000).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = std::collections::HashMap::<u64, u64>::new();
        for _ in 0..100_000 {
            let index = chooser.next_index(&mut rng);
            assert!(index < 10_000);
            *counts.entry(index).or_default() += 1;
        }
        let mut sorted: Vec<u64> = counts.values().copied().collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let top_ten: u64 = sorted.iter().take(10).sum();
        // Uniform would give the ten hottest keys about 0.1% of requests.
        assert!(
            top_ten > 10_000,
            "top ten keys took only {top_ten} of 100,000"
        );
    }

    #[test]
    fn uniform_spreads_requests() {
        let chooser = KeyChooser::new(KeyDistribution::Uniform, 100).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[chooser.next_index(&mut rng) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (700..1300).contains(&c)),
            "{counts:?}"
        );
    }
}
