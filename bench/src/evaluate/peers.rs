//! Section 2: ringkv, etcd and Cassandra side by side, three nodes each,
//! driven by the same driver with the same keys, values and concurrency.
//! A peer that cannot start is reported with the reason; the rest runs.

use std::{sync::Arc, time::Duration};

use super::{
    cassandra_cluster::CassandraCluster,
    connect,
    etcd_cluster::EtcdCluster,
    load, measure,
    report::{PeerRun, Peers, Versions},
    ringkv_cluster, say, Settings, System,
};
use crate::{
    driver::{Amount, RunConfig},
    keys::KeyDistribution,
    measurement::Measurement,
    target::{Target, TargetKind, TargetSpec},
    workload::Workload,
    BenchError,
};

pub const WORKLOADS: [Workload; 4] = [Workload::Put, Workload::Get, Workload::A, Workload::B];

/// The floor of any request on ringkv's server stack (a gRPC health check),
/// measured beside ringkv's workloads.
pub const FLOOR: Workload = Workload::Noop;

/// The performance issue states its goals at one concurrency: batch puts
/// (ringkv's RawBatchPut against etcd's Txn, 100 keys each) and etcd's
/// serializable gets run only there.
pub const GOAL_CONCURRENCY: usize = 64;

/// The system name of etcd's runs with serializable gets: answered by the
/// member asked, without a Raft round, as a fair floor for an eventually
/// consistent store's reads.
pub const ETCD_SERIALIZABLE: &str = "etcd, serializable gets";

pub async fn run(settings: &Settings, versions: &mut Versions) -> Peers {
    let mut peers = Peers::default();
    peers.durability.push(
        "ringkv: `--durability sync` (the default): the WAL is fsync'd, grouped across \
         writers, before a replica acknowledges; N=3, R=W=2, last-writer-wins"
            .into(),
    );
    if settings.systems.contains(&System::Ringkv) {
        match ringkv(settings).await {
            Ok(runs) => peers.runs.extend(runs),
            Err(error) => peers.notes.push(format!("ringkv did not run: {error}")),
        }
    }
    if settings.smoke {
        peers
            .notes
            .push("etcd and Cassandra are skipped in the smoke run".into());
        return peers;
    }
    let etcd_binary = settings
        .etcd_binary
        .as_ref()
        .filter(|_| settings.systems.contains(&System::Etcd));
    match etcd_binary {
        Some(binary) => match etcd(settings, binary, versions).await {
            Ok(runs) => {
                peers.durability.push(
                    "etcd: every write is committed through Raft and fsync'd to the WAL of a \
                     majority; gets are linearizable (the default)"
                        .into(),
                );
                peers.runs.extend(runs)
            }
            Err(error) => peers.notes.push(format!("etcd did not run: {error}")),
        },
        None => peers.notes.push(
            "etcd did not run: no etcd binary was given (--etcd), or --systems left it out".into(),
        ),
    }
    let cassandra = settings
        .cassandra
        .as_ref()
        .filter(|_| settings.systems.contains(&System::Cassandra));
    match cassandra {
        Some(cassandra) => match cassandra_runs(settings, cassandra, versions).await {
            Ok(runs) => {
                peers.durability.push(format!(
                    "Cassandra: RF=3, QUORUM reads and writes; commit log {}; measured after {} s of YCSB A at c=64 to warm its JVMs up",
                    if cassandra.commitlog_sync_batch {
                        "`batch` (synced before the acknowledgement)"
                    } else {
                        "`periodic` (its default: acknowledged before the sync, synced every 10 s)"
                    },
                    settings.profile.cassandra_warmup.as_secs()
                ));
                peers.runs.extend(runs)
            }
            Err(error) => peers.notes.push(format!("Cassandra did not run: {error}")),
        },
        None => peers.notes.push(
            "Cassandra did not run: no jars were given (--cassandra-lib), or --systems left it out"
                .into(),
        ),
    }
    peers
}

async fn ringkv(settings: &Settings) -> Result<Vec<PeerRun>, BenchError> {
    say("  ringkv, 3 nodes");
    let cluster = ringkv_cluster(settings, "peers-ringkv", 3).await?;
    let target = connect(TargetKind::Ringkv, cluster.endpoints(), 4).await?;
    let sweep = [WORKLOADS.as_slice(), &[FLOOR]].concat();
    let runs = drive(
        settings,
        "ringkv",
        TargetKind::Ringkv,
        &target,
        cluster.pids(),
        settings.profile.warmup,
        Plan {
            sweep: &sweep,
            at_goal: &[Workload::BatchPut],
        },
    )
    .await;
    cluster.stop().await;
    runs
}

async fn etcd(
    settings: &Settings,
    binary: &std::path::Path,
    versions: &mut Versions,
) -> Result<Vec<PeerRun>, BenchError> {
    say("  etcd, 3 members");
    let cluster = EtcdCluster::start(
        binary,
        &settings.work_dir.join("peers-etcd"),
        settings.peer_address(1),
        3,
    )
    .await?;
    versions.etcd = Some(cluster.version.clone());
    let target = connect(TargetKind::Etcd, cluster.endpoints(), 4).await?;
    let pids = cluster.pids();
    let runs = async {
        let mut runs = drive(
            settings,
            "etcd",
            TargetKind::Etcd,
            &target,
            pids.clone(),
            settings.profile.warmup,
            Plan {
                sweep: &WORKLOADS,
                at_goal: &[Workload::BatchPut],
            },
        )
        .await?;
        let mut spec = TargetSpec::new(TargetKind::Etcd, cluster.endpoints());
        spec.serializable_reads = true;
        let serializable = Arc::new(Target::connect(&spec).await?);
        let gets = phase(
            settings,
            TargetKind::Etcd,
            &serializable,
            &pids,
            Workload::Get,
            GOAL_CONCURRENCY,
        )
        .await?;
        runs.push(run_of(ETCD_SERIALIZABLE, gets));
        Ok::<_, BenchError>(runs)
    }
    .await;
    cluster.stop().await;
    runs
}

async fn cassandra_runs(
    settings: &Settings,
    cassandra: &super::CassandraSettings,
    versions: &mut Versions,
) -> Result<Vec<PeerRun>, BenchError> {
    say("  Cassandra, 3 nodes (one at a time)");
    let cluster = CassandraCluster::start(
        cassandra,
        &settings.work_dir.join("peers-cassandra"),
        settings.peer_address(2),
        3,
    )
    .await?;
    versions.cassandra = Some(cluster.version.clone());
    versions.java = java_version(&cassandra.java).await;
    let target = connect(TargetKind::Cassandra, cluster.endpoints(), 1).await?;
    say(format!(
        "  warming Cassandra's JVMs up for {:?}",
        settings.profile.cassandra_warmup
    ));
    let runs = drive(
        settings,
        "Cassandra",
        TargetKind::Cassandra,
        &target,
        cluster.pids(),
        settings.profile.cassandra_warmup,
        Plan {
            sweep: &WORKLOADS,
            at_goal: &[],
        },
    )
    .await;
    cluster.stop().await;
    runs
}

/// What `drive` runs: every workload of `sweep` at every concurrency, then
/// those of `at_goal` at [`GOAL_CONCURRENCY`] only.
struct Plan<'a> {
    sweep: &'a [Workload],
    at_goal: &'a [Workload],
}

/// Loads the key space, warms up, then runs the plan, one phase a run.
async fn drive(
    settings: &Settings,
    system: &str,
    kind: TargetKind,
    target: &Arc<Target>,
    pids: Vec<u32>,
    warmup: Duration,
    plan: Plan<'_>,
) -> Result<Vec<PeerRun>, BenchError> {
    let profile = &settings.profile;
    let keys = profile.keys;
    load(target, kind, keys, 256).await?;
    if !warmup.is_zero() {
        measure(
            target,
            RunConfig::new(kind, Workload::A, Amount::For(warmup))
                .with_keys(keys, KeyDistribution::Uniform)
                .with_concurrency(64),
        )
        .await?;
    }
    let mut runs = Vec::new();
    let sweep = plan
        .sweep
        .iter()
        .flat_map(|&w| profile.concurrencies.iter().map(move |&c| (w, c)));
    let at_goal = plan.at_goal.iter().map(|&w| (w, GOAL_CONCURRENCY));
    for (workload, concurrency) in sweep.chain(at_goal) {
        let measurement = phase(settings, kind, target, &pids, workload, concurrency).await?;
        runs.push(run_of(system, measurement));
    }
    Ok(runs)
}

/// One phase of `workload` over the keys `drive` loaded, uniformly; a
/// batch carries the driver's default of 100 keys.
async fn phase(
    settings: &Settings,
    kind: TargetKind,
    target: &Arc<Target>,
    pids: &[u32],
    workload: Workload,
    concurrency: usize,
) -> Result<Measurement, BenchError> {
    let profile = &settings.profile;
    measure(
        target,
        RunConfig::new(kind, workload, Amount::For(profile.phase))
            .with_keys(profile.keys, KeyDistribution::Uniform)
            .with_concurrency(concurrency)
            .with_server_pids(pids.to_vec()),
    )
    .await
}

/// A measurement of `system`, said as it is recorded.
fn run_of(system: &str, measurement: Measurement) -> PeerRun {
    say(format!(
        "    {system} {} c={}: {:.0} ops/s ({:.0} keys/s), p99 {} µs, {} errors",
        measurement.workload.name(),
        measurement.concurrency,
        measurement.requests_per_second(),
        measurement.keys_per_second(),
        measurement.latency.p99_us,
        measurement.errors
    ));
    PeerRun {
        system: system.to_string(),
        measurement,
    }
}

async fn java_version(java: &std::path::Path) -> Option<String> {
    let output = tokio::process::Command::new(java)
        .arg("-version")
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .next()
        .map(str::to_string)
}
