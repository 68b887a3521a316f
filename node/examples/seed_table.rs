//! Reproduces the seed design's performance table (PUT, GET and DELETE of n
//! keys, one at a time, in-process against the storage engine) on ringkv's
//! RocksDB storage, beside a same-run baseline: the same operations on an
//! in-memory `BTreeMap`, the floor any engine pays.
//!
//! `cargo run --example seed_table -p ringkv-node` prints a Markdown table;
//! `scripts/` has no wrapper because it needs nothing else.

use std::{collections::BTreeMap, time::Instant};

use bytes::Bytes;
use ringkv_node::{Durability, Modify, RocksStorage, RocksStorageOptions, Storage};

/// The seed's table: n, PUT ms, GET ms, DELETE ms.
const SEED: [(usize, u64, u64, u64); 5] = [
    (100, 5, 0, 4),
    (1_000, 35, 0, 27),
    (10_000, 266, 4, 264),
    (100_000, 2_652, 50, 2_639),
    (1_000_000, 26_563, 910, 26_517),
];

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key-{i:010}"))
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("| n | PUT ms (seed) | PUT ms | GET ms (seed) | GET ms | DELETE ms (seed) | DELETE ms | BTreeMap PUT/GET/DELETE ms (baseline) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---|");
    for (n, seed_put, seed_get, seed_delete) in SEED {
        let dir = tempfile::tempdir()?;
        // The seed's Badger ran without a sync per write; periodic sync is
        // the comparable mode (sync mode is measured by `ringkv bench`).
        let options = RocksStorageOptions {
            durability: Durability::Periodic(std::time::Duration::from_millis(100)),
            ..Default::default()
        };
        let storage = RocksStorage::open(dir.path(), "bench", &options)?;
        let value = Bytes::from_static(b"value-of-ten-bytes");

        let started = Instant::now();
        for i in 0..n {
            storage.write(vec![Modify::Put {
                key: key(i),
                value: value.clone(),
                expires_at_ms: None,
            }])?;
        }
        let put = ms(started);
        let started = Instant::now();
        for i in 0..n {
            if storage.get(&key(i))?.is_none() {
                return Err(format!("key {i} missing").into());
            }
        }
        let get = ms(started);
        let started = Instant::now();
        for i in 0..n {
            storage.write(vec![Modify::Delete { key: key(i) }])?;
        }
        let delete = ms(started);

        let mut map = BTreeMap::new();
        let started = Instant::now();
        for i in 0..n {
            map.insert(key(i), value.clone());
        }
        let map_put = ms(started);
        let started = Instant::now();
        for i in 0..n {
            if !map.contains_key(&key(i)) {
                return Err("baseline lost a key".into());
            }
        }
        let map_get = ms(started);
        let started = Instant::now();
        for i in 0..n {
            map.remove(&key(i));
        }
        let map_delete = ms(started);

        println!(
            "| {n} | {seed_put} | {put:.0} | {seed_get} | {get:.0} | {seed_delete} | {delete:.0} | {map_put:.0} / {map_get:.0} / {map_delete:.0} |"
        );
    }
    Ok(())
}
