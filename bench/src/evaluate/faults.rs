//! Section 4: a timeline of steady load through a fault. One node is
//! SIGKILLed and restarted on its data; throughput, errors and p99 are
//! recorded second by second. Beside the load, a checker writes unique keys
//! and, once the cluster has settled, reads every acknowledged one back.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;

use super::{
    connect, load,
    partition::{self, Partition},
    report::FaultRun,
    ringkv_cluster::RingkvCluster,
    say, Settings,
};
use crate::{
    driver::{self, Amount, RunConfig},
    target::{Reply, Target, TargetKind},
    workload::{Op, Workload},
    BenchError,
};

const CHECKERS: usize = 4;

pub async fn run(settings: &Settings) -> Result<(Vec<FaultRun>, Vec<String>), BenchError> {
    let mut runs = vec![fault_run(settings, Fault::Crash).await?];
    let mut notes = Vec::new();
    match partition::check_available() {
        Ok(()) => runs.push(fault_run(settings, Fault::Partition).await?),
        Err(error) => notes.push(format!("the partition run did not run: {error}")),
    }
    Ok((runs, notes))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL, then a restart on the same data dir.
    Crash,
    /// nftables cuts the node off from the other nodes, then lets it back.
    Partition,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::Crash => "SIGKILL of one node, restarted on its data",
            Fault::Partition => "one node partitioned from the other two, then healed",
        }
    }
}

async fn fault_run(settings: &Settings, fault: Fault) -> Result<FaultRun, BenchError> {
    let profile = &settings.profile;
    say(format!(
        "  {}: fault at {:?}, healed at {:?}",
        fault.describe(),
        profile.fault_at,
        profile.heal_at
    ));
    let mut ringkv = settings.ringkv("faults", 3);
    ringkv.own_uids = fault == Fault::Partition;
    let mut cluster = RingkvCluster::start(ringkv, 3).await?;
    let target = connect(TargetKind::Ringkv, cluster.endpoints(), 4).await?;
    let keys = profile.keys;
    load(&target, TargetKind::Ringkv, keys, 256).await?;

    let mut load = RunConfig::new(
        TargetKind::Ringkv,
        Workload::A,
        Amount::For(profile.fault_run),
    );
    load.keys = keys;
    load.concurrency = 16;
    let started = Instant::now();
    let background = tokio::spawn({
        let target = Arc::clone(&target);
        async move { driver::run(target, &load).await }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let checkers: Vec<_> = (0..CHECKERS)
        .map(|checker| {
            let target = Arc::clone(&target);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move { write_unique(&target, checker, &stop).await })
        })
        .collect();

    tokio::time::sleep_until(started + profile.fault_at).await;
    let victim = 2;
    let partition = match fault {
        Fault::Crash => {
            cluster.kill(victim).await;
            None
        }
        Fault::Partition => Some(isolate(&cluster, victim)?),
    };
    let injected = started.elapsed().as_secs_f64();
    tokio::time::sleep_until(started + profile.heal_at).await;
    match partition {
        Some(partition) => partition.heal(),
        None => cluster.restart(victim).await?,
    }
    let healed = started.elapsed().as_secs_f64();
    let measurement = background.await.map_err(task_failed)??;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for checker in checkers {
        acknowledged.extend(checker.await.map_err(task_failed)?);
    }
    cluster.wait_settled(Duration::from_secs(120)).await?;
    let lost = count_lost(&target, &acknowledged).await?;
    say(format!(
        "  checked {} acknowledged writes after the {}: {lost} lost",
        acknowledged.len(),
        match fault {
            Fault::Crash => "crash",
            Fault::Partition => "partition",
        }
    ));
    cluster.stop().await;
    Ok(FaultRun {
        fault: fault.describe().into(),
        injected_second: injected,
        healed_second: healed,
        measurement,
        acknowledged_writes: acknowledged.len() as u64,
        lost_writes: lost,
    })
}

/// Cuts node `victim` off from the others.
pub fn isolate(cluster: &RingkvCluster, victim: usize) -> Result<Partition, BenchError> {
    let node = |index| {
        cluster
            .uid(index)
            .map(|uid| (uid, cluster.address_of(index)))
            .ok_or_else(|| BenchError::Config("a partition needs nodes with their own uids".into()))
    };
    let others = (0..cluster.count())
        .filter(|&index| index != victim)
        .map(node)
        .collect::<Result<Vec<_>, _>>()?;
    Partition::isolate(node(victim)?, &others)
}

fn task_failed(error: tokio::task::JoinError) -> BenchError {
    BenchError::Process {
        what: "a fault-run task".into(),
        message: error.to_string(),
    }
}

fn checked_key(checker: usize, sequence: u64) -> Bytes {
    Bytes::from(format!("checked-{checker}-{sequence:010}"))
}

/// Writes fresh keys one after another until stopped; returns the keys
/// whose write was acknowledged, with the value written.
async fn write_unique(target: &Target, checker: usize, stop: &AtomicBool) -> Vec<(Bytes, Bytes)> {
    let mut acknowledged = Vec::new();
    let mut sequence = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = checked_key(checker, sequence);
        let value = Bytes::from(format!("value-{sequence}"));
        if target
            .execute(checker, Op::Put, std::slice::from_ref(&key), &value)
            .await
            .is_ok()
        {
            acknowledged.push((key, value));
        }
        sequence += 1;
    }
    acknowledged
}

/// Reads every acknowledged key at the cluster's R, 64 at a time; a
/// missing or different value is a lost write.
async fn count_lost(target: &Target, acknowledged: &[(Bytes, Bytes)]) -> Result<u64, BenchError> {
    let reads = futures::stream::iter(acknowledged)
        .map(|(key, value)| async move {
            let mut attempts = 0;
            loop {
                match target
                    .execute(0, Op::Get, std::slice::from_ref(key), value)
                    .await
                {
                    Ok(reply) => return Ok(reply != Reply::Value(Some(value.clone()))),
                    Err(error) if attempts >= 5 => return Err(error),
                    Err(_) => {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        })
        .buffer_unordered(64);
    let outcomes: Vec<Result<bool, BenchError>> = reads.collect().await;
    let mut lost = 0;
    for outcome in outcomes {
        lost += u64::from(outcome?);
    }
    Ok(lost)
}
