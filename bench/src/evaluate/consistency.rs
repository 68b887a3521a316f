//! Section 5: eventual consistency. PBS staleness (Bailis et al.): the
//! probability that a read issued t ms after a write was acknowledged
//! returns that write, at R=1/W=1 and at R=2/W=2. Convergence: how long
//! after a partition heals the replica that was cut off holds every write
//! acknowledged meanwhile, and how fast hints are replayed.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use ringkv_client::{
    proto::{replica_client::ReplicaClient, ReplicaReadRequest},
    SignedChannel,
};
use tokio::time::Instant;

use super::{
    connect, faults,
    metrics::metric,
    partition,
    report::{Consistency, ConvergenceRun, StalenessCurve, StalenessPoint},
    ringkv_cluster,
    ringkv_cluster::RingkvCluster,
    say, Settings,
};
use crate::{
    driver::{self, Amount, RunConfig},
    keys::{key, KeyDistribution},
    target::{Reply, Target, TargetKind, TargetSpec},
    workload::{Op, Workload},
    BenchError,
};

const CLIENTS: u64 = 16;

pub async fn run(settings: &Settings) -> Result<Consistency, BenchError> {
    let cluster = ringkv_cluster(settings, "consistency", 3).await?;
    let mut staleness = Vec::new();
    for quorum in [1, 2] {
        say(format!("  staleness at R={quorum}, W={quorum}"));
        let mut spec = TargetSpec::new(TargetKind::Ringkv, cluster.endpoints());
        spec.read_quorum = Some(quorum);
        spec.write_quorum = Some(quorum);
        let target = Arc::new(Target::connect(&spec).await?);
        let mut points = Vec::new();
        for &after_ms in &settings.profile.staleness_after_ms {
            points.push(point(&target, quorum, after_ms, settings.profile.staleness_trials).await?);
        }
        staleness.push(StalenessCurve {
            read_quorum: quorum,
            write_quorum: quorum,
            points,
        });
    }
    cluster.stop().await;
    let mut convergence = Vec::new();
    let mut notes = Vec::new();
    match partition::check_available() {
        Ok(()) => {
            for &keys in &settings.profile.convergence_keys {
                convergence.push(converge(settings, keys).await?);
            }
        }
        Err(error) => notes.push(format!("convergence was not measured: {error}")),
    }
    Ok(Consistency {
        staleness,
        convergence,
        notes,
    })
}

/// Writes `keys` fresh keys while one node is cut off for at least the
/// profile's partition time, heals, and times the way back to agreement.
async fn converge(settings: &Settings, keys: u64) -> Result<ConvergenceRun, BenchError> {
    let profile = &settings.profile;
    say(format!(
        "  convergence after {keys} keys written during a {:?} partition",
        profile.partition_length
    ));
    let mut ringkv = settings.ringkv("convergence", 3);
    ringkv.own_uids = true;
    let cluster = RingkvCluster::start(ringkv, 3).await?;
    // The writers stay on the majority side: what the cut-off node
    // coordinates fails for want of a quorum, and is no acknowledged write.
    let majority = cluster.endpoints().into_iter().take(2).collect();
    let target = connect(TargetKind::Ringkv, majority, 4).await?;
    let cut_off = 2;
    let partition = faults::isolate(&cluster, cut_off)?;
    let cut = Instant::now();
    let mut writes = RunConfig::new(TargetKind::Ringkv, Workload::BatchPut, Amount::Keys(keys))
        .with_keys(keys, KeyDistribution::Sequential)
        .with_concurrency(16);
    writes.batch_size = 100;
    let written = driver::run(Arc::clone(&target), &writes).await?;
    if written.errors > 0 {
        return Err(BenchError::Process {
            what: "convergence".into(),
            message: format!(
                "{} batch puts on the majority side failed during the partition: {}",
                written.errors,
                written.first_error.unwrap_or_default()
            ),
        });
    }
    tokio::time::sleep_until(cut + profile.partition_length).await;
    let partitioned = cut.elapsed().as_secs_f64();
    let at_heal = hints_delivered(&cluster).await?;
    partition.heal();
    let healed = Instant::now();
    let deadline = healed + Duration::from_secs(900);
    let replica = cluster.replica_client(cut_off).await?;
    let (mut checked, mut delivered, mut last_delivery) = (0, at_heal, 0.0);
    while checked < keys {
        checked = holds_from(&replica, checked, keys).await?;
        let now = hints_delivered(&cluster).await?;
        if now > delivered {
            delivered = now;
            last_delivery = healed.elapsed().as_secs_f64();
        }
        if checked < keys {
            if Instant::now() > deadline {
                return Err(BenchError::Process {
                    what: "convergence".into(),
                    message: format!(
                        "the healed node holds {checked} of {keys} keys 900 s after the heal"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let converged = healed.elapsed().as_secs_f64();
    // A delivery is counted once its RPC returns, which can be after the
    // record is readable: keep counting until the count holds for 1 s.
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = hints_delivered(&cluster).await?;
        if now > delivered {
            delivered = now;
            last_delivery = healed.elapsed().as_secs_f64();
            quiet_since = Instant::now();
        }
    }
    cluster.stop().await;
    Ok(ConvergenceRun {
        keys,
        acknowledged_keys: written.keys,
        partition_seconds: partitioned,
        converged_seconds: converged,
        hints_delivered: delivered - at_heal,
        hints_drained_seconds: last_delivery,
    })
}

/// How many of the keys `from..keys`, in order, the replica holds before
/// the first it lacks, read 256 at a time. A fresh key, once there, stays.
async fn holds_from(
    replica: &ReplicaClient<SignedChannel>,
    from: u64,
    keys: u64,
) -> Result<u64, BenchError> {
    let mut next = from;
    while next < keys {
        let chunk: Vec<u64> = (next..keys.min(next + 256)).collect();
        let reads = chunk.iter().map(|&index| {
            let mut replica = replica.clone();
            async move {
                replica
                    .read(ReplicaReadRequest { key: key(index) })
                    .await
                    .map(|response| !response.into_inner().record.is_empty())
            }
        });
        let held = futures::future::join_all(reads).await;
        for (index, outcome) in chunk.iter().zip(held) {
            match outcome {
                Ok(true) => next = index + 1,
                // Missing, or the node is not answering yet.
                _ => return Ok(next),
            }
        }
    }
    Ok(next)
}

/// Hints every node has delivered so far.
async fn hints_delivered(cluster: &RingkvCluster) -> Result<u64, BenchError> {
    let mut total = 0.0;
    for index in 0..cluster.count() {
        total += metric(
            cluster.metrics_address(index),
            "ringkv_hints_delivered_total",
        )
        .await?;
    }
    Ok(total as u64)
}

/// `trials` writes of fresh keys, each read back `after_ms` after its
/// acknowledgement, by clients spread over the nodes.
async fn point(
    target: &Arc<Target>,
    quorum: u32,
    after_ms: u64,
    trials: u64,
) -> Result<StalenessPoint, BenchError> {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let target = Arc::clone(target);
            tokio::spawn(async move {
                let mut point = StalenessPoint {
                    after_ms,
                    ..Default::default()
                };
                let mut trial = client;
                while trial < trials {
                    let key = Bytes::from(format!("pbs-{quorum}-{after_ms}-{trial}"));
                    let value = Bytes::from(format!("written-{trial}"));
                    let keys = std::slice::from_ref(&key);
                    // A write that was not acknowledged is no trial.
                    if target
                        .execute(client as usize, Op::Put, keys, &value)
                        .await
                        .is_ok()
                    {
                        tokio::time::sleep(Duration::from_millis(after_ms)).await;
                        // The read goes out on another connection, so that
                        // it is not always coordinated by the writer's node.
                        let read = target
                            .execute(client as usize + 1, Op::Get, keys, &value)
                            .await?;
                        point.trials += 1;
                        if read == Reply::Value(Some(value)) {
                            point.consistent += 1;
                        }
                    }
                    trial += CLIENTS;
                }
                Ok::<_, BenchError>(point)
            })
        })
        .collect();
    let mut total = StalenessPoint {
        after_ms,
        ..Default::default()
    };
    for task in tasks {
        let point = task.await.map_err(|e| BenchError::Process {
            what: "a staleness client".into(),
            message: e.to_string(),
        })??;
        total.trials += point.trials;
        total.consistent += point.consistent;
    }
    Ok(total)
}
