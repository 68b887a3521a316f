//! Section 5: eventual consistency. PBS staleness (Bailis et al.): the
//! probability that a read issued t ms after a write was acknowledged
//! returns that write, at R=1/W=1 and at R=2/W=2.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use super::{
    report::{Consistency, StalenessCurve, StalenessPoint},
    ringkv_cluster, say, Settings,
};
use crate::{
    target::{Reply, Target, TargetKind, TargetSpec},
    workload::Op,
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
    Ok(Consistency { staleness })
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
