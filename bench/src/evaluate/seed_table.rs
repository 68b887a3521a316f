//! Section 1: the seed's table (PUT, GET and DELETE of n keys), through the
//! network this time, in four configurations, beside the in-process limit
//! of ringkv's own engine measured in the same run.

use std::sync::Arc;

use super::{
    connect,
    report::{SeedConfiguration, SeedRow, Timing},
    ringkv_cluster, say, Settings,
};
use crate::{
    driver::{Amount, RunConfig},
    keys::KeyDistribution,
    target::{RocksOptions, Target, TargetKind, TargetSpec},
    workload::Workload,
    BenchError,
};

/// The seed's figures: n, PUT ms, GET ms, DELETE ms (one node, in-process
/// against Badger, one key at a time).
pub const SEED: [(u64, u64, u64, u64); 5] = [
    (100, 5, 0, 4),
    (1_000, 35, 0, 27),
    (10_000, 266, 4, 264),
    (100_000, 2_652, 50, 2_639),
    (1_000_000, 26_563, 910, 26_517),
];

struct Configuration {
    name: &'static str,
    nodes: usize,
    batch: bool,
    concurrency: usize,
}

const CONFIGURATIONS: [Configuration; 4] = [
    Configuration {
        name: "one node, single-key requests",
        nodes: 1,
        batch: false,
        concurrency: 64,
    },
    Configuration {
        name: "one node, batch API",
        nodes: 1,
        batch: true,
        concurrency: 16,
    },
    Configuration {
        name: "three nodes (N=3, W=2, R=2), single-key requests",
        nodes: 3,
        batch: false,
        concurrency: 64,
    },
    Configuration {
        name: "three nodes (N=3, W=2, R=2), batch API",
        nodes: 3,
        batch: true,
        concurrency: 16,
    },
];

const BATCH_SIZE: usize = 100;

#[derive(Clone, Copy)]
enum Phase {
    Put,
    Get,
    Delete,
}

impl Phase {
    fn workload(self, batch: bool) -> Workload {
        match (self, batch) {
            (Phase::Put, false) => Workload::Load,
            (Phase::Get, false) => Workload::Get,
            (Phase::Delete, false) => Workload::Delete,
            (Phase::Put, true) => Workload::BatchPut,
            (Phase::Get, true) => Workload::BatchGet,
            (Phase::Delete, true) => Workload::BatchDelete,
        }
    }
}

pub async fn run(settings: &Settings) -> Result<Vec<SeedConfiguration>, BenchError> {
    let limits = in_process_limits(settings).await?;
    let mut configurations = Vec::new();
    for configuration in &CONFIGURATIONS {
        say(format!("  {}", configuration.name));
        let cluster = ringkv_cluster(settings, "seed-table", configuration.nodes).await?;
        let target = connect(TargetKind::Ringkv, cluster.endpoints(), 4).await?;
        let mut rows: Vec<SeedRow> = Vec::new();
        for (&n, limit) in settings.profile.seed_sizes.iter().zip(&limits) {
            let previous = rows.last().cloned();
            let mut row = SeedRow {
                n,
                limit_put_seconds: limit.0,
                limit_get_seconds: limit.1,
                limit_delete_seconds: limit.2,
                ..Default::default()
            };
            row.put = cell(
                settings,
                &target,
                configuration,
                Phase::Put,
                n,
                previous.as_ref().map(|r| (r.n, &r.put)),
            )
            .await?;
            row.get = cell(
                settings,
                &target,
                configuration,
                Phase::Get,
                n,
                previous.as_ref().map(|r| (r.n, &r.get)),
            )
            .await?;
            row.delete = cell(
                settings,
                &target,
                configuration,
                Phase::Delete,
                n,
                previous.as_ref().map(|r| (r.n, &r.delete)),
            )
            .await?;
            rows.push(row);
        }
        cluster.stop().await;
        configurations.push(SeedConfiguration {
            name: configuration.name.to_string(),
            nodes: configuration.nodes,
            batch_size: if configuration.batch { BATCH_SIZE } else { 1 },
            concurrency: configuration.concurrency,
            rows,
        });
    }
    Ok(configurations)
}

/// One cell: measured, or projected from the row before at that row's rate
/// when measuring it would overrun the budget. A projection only happens
/// for a cell whose predecessor was measured.
async fn cell(
    settings: &Settings,
    target: &Arc<Target>,
    configuration: &Configuration,
    phase: Phase,
    n: u64,
    previous: Option<(u64, &Timing)>,
) -> Result<Timing, BenchError> {
    if let Some((previous_n, timing)) = previous {
        let projected = timing.seconds * n as f64 / previous_n as f64;
        if timing.projected || projected > settings.profile.cell_budget.as_secs_f64() {
            return Ok(Timing {
                seconds: projected,
                projected: true,
                ..Default::default()
            });
        }
    }
    let config = seed_config(
        TargetKind::Ringkv,
        phase.workload(configuration.batch),
        n,
        configuration.concurrency,
    );
    let measured = crate::driver::run(Arc::clone(target), &config).await?;
    Ok(Timing {
        seconds: measured.elapsed_seconds,
        projected: false,
        errors: measured.errors,
        first_error: measured.first_error,
    })
}

/// n keys, each touched once in order, with small values as the seed's.
fn seed_config(target: TargetKind, workload: Workload, n: u64, concurrency: usize) -> RunConfig {
    let mut config = RunConfig::new(target, workload, Amount::Keys(n));
    config.distribution = KeyDistribution::Sequential;
    config.keys = n;
    config.concurrency = concurrency;
    config.batch_size = BATCH_SIZE;
    config.value_size = 10;
    config
}

/// PUT, GET and DELETE seconds of each n on ringkv's engine in-process,
/// one key at a time as the seed's loop did, with periodic WAL sync as the
/// seed's Badger did not sync each write.
async fn in_process_limits(settings: &Settings) -> Result<Vec<(f64, f64, f64)>, BenchError> {
    let mut limits = Vec::new();
    for &n in &settings.profile.seed_sizes {
        let mut spec = TargetSpec::new(TargetKind::Rocks, Vec::new());
        spec.rocks = RocksOptions::default();
        let target = Arc::new(Target::connect(&spec).await?);
        let mut seconds = [0.0; 3];
        for (slot, workload) in [Workload::Load, Workload::Get, Workload::Delete]
            .into_iter()
            .enumerate()
        {
            let config = seed_config(TargetKind::Rocks, workload, n, 1);
            let measured = crate::driver::run(Arc::clone(&target), &config).await?;
            seconds[slot] = measured.elapsed_seconds;
        }
        limits.push((seconds[0], seconds[1], seconds[2]));
    }
    Ok(limits)
}
