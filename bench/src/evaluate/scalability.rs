//! Section 3: throughput and CPU per request at 1, 3 and 5 nodes; the
//! layout's balance and the data a join moves, for 3 to 100 simulated nodes;
//! and client throughput and p99 while a fourth node streams its share in.

use std::{sync::Arc, time::Duration};

use ringkv_node::{Layout, Member, DEFAULT_PARTITIONS};
use tokio::time::Instant;

use super::{
    connect, load, measure,
    metrics::metric,
    report::{NodesRun, PlacementRow, Scalability, StreamingRun},
    ringkv_cluster, say, Settings,
};
use crate::{
    driver::{self, Amount, RunConfig},
    keys::KeyDistribution,
    target::TargetKind,
    workload::Workload,
    BenchError,
};

pub async fn run(settings: &Settings) -> Result<Scalability, BenchError> {
    Ok(Scalability {
        throughput: throughput(settings).await?,
        placement: placement(&settings.profile.placement_sizes)?,
        streaming: Some(streaming(settings).await?),
    })
}

async fn throughput(settings: &Settings) -> Result<Vec<NodesRun>, BenchError> {
    let profile = &settings.profile;
    let mut runs = Vec::new();
    for &nodes in &profile.cluster_sizes {
        say(format!("  {nodes} node(s)"));
        let cluster = ringkv_cluster(settings, "scalability", nodes).await?;
        let target = connect(TargetKind::Ringkv, cluster.endpoints(), 4).await?;
        let keys = profile.keys;
        load(&target, TargetKind::Ringkv, keys, 256).await?;
        for workload in [Workload::Put, Workload::Get] {
            let measurement = measure(
                &target,
                RunConfig::new(TargetKind::Ringkv, workload, Amount::For(profile.phase))
                    .with_keys(keys, KeyDistribution::Uniform)
                    .with_concurrency(64)
                    .with_server_pids(cluster.pids()),
            )
            .await?;
            runs.push(NodesRun { nodes, measurement });
        }
        cluster.stop().await;
    }
    Ok(runs)
}

/// The layout's balance and a join's movement, computed by the claimant's
/// own planner for clusters this machine cannot run.
pub fn placement(sizes: &[usize]) -> Result<Vec<PlacementRow>, BenchError> {
    let failed = |e: ringkv_node::LayoutError| BenchError::Config(format!("layout: {e}"));
    let mut rows = Vec::new();
    for &nodes in sizes {
        let members = (0..nodes)
            .map(|i| Member::new(format!("node-{i:03}")))
            .collect();
        let layout = Layout::initial(DEFAULT_PARTITIONS, 3, members).map_err(failed)?;
        let loads: Vec<usize> = layout.loads().into_iter().map(|(_, load)| load).collect();
        let replicas = (DEFAULT_PARTITIONS as usize * 3) as f64;
        let mean = replicas / nodes as f64;
        let max = loads.iter().copied().max().unwrap_or(0) as f64;
        let joined = layout
            .with_member_added(Member::new("node-new"))
            .map_err(failed)?;
        let moved = joined.moves_from(&layout).map_err(failed)?.len() as f64;
        rows.push(PlacementRow {
            nodes,
            partitions: DEFAULT_PARTITIONS,
            max_over_mean: max / mean,
            moved_on_join: moved / replicas,
            ideal_on_join: 1.0 / (nodes + 1) as f64,
        });
    }
    Ok(rows)
}

/// 3→4 under load: the clients' throughput and p99 second by second while
/// the new node streams its share, beside the same load before the join.
async fn streaming(settings: &Settings) -> Result<StreamingRun, BenchError> {
    say("  3→4 join under load");
    let profile = &settings.profile;
    let mut cluster = ringkv_cluster(settings, "streaming", 3).await?;
    let target = connect(TargetKind::Ringkv, cluster.endpoints(), 4).await?;
    let keys = profile.streaming_keys;
    load(&target, TargetKind::Ringkv, keys, 1024).await?;
    let before = measure(
        &target,
        RunConfig::new(TargetKind::Ringkv, Workload::A, Amount::For(profile.phase))
            .with_keys(keys, KeyDistribution::Uniform)
            .with_concurrency(16),
    )
    .await?;

    let lead = profile.phase;
    let total = lead * 8;
    let mut during = RunConfig::new(TargetKind::Ringkv, Workload::A, Amount::For(total));
    during.keys = keys;
    during.concurrency = 16;
    let background = tokio::spawn({
        let target = Arc::clone(&target);
        async move { driver::run(target, &during).await }
    });
    let started = Instant::now();
    tokio::time::sleep(lead).await;
    let join_started = started.elapsed().as_secs_f64();
    let index = cluster.add_node().await?;
    cluster.wait_settled(Duration::from_secs(600)).await?;
    let join_settled = started.elapsed().as_secs_f64();
    let measurement = background.await.map_err(|e| BenchError::Process {
        what: "the load during the join".into(),
        message: e.to_string(),
    })??;
    let metrics = cluster.metrics_address(index);
    let records = metric(metrics, "ringkv_handoff_keys_received_total").await? as u64;
    let bytes = metric(metrics, "ringkv_handoff_bytes_received_total").await? as u64;
    cluster.stop().await;
    Ok(StreamingRun {
        measurement,
        join_started_second: join_started,
        join_settled_second: join_settled,
        records_received: records,
        bytes_received: bytes,
        before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_balanced_and_a_join_moves_about_its_share() {
        for row in placement(&[3, 10, 50]).unwrap() {
            assert!(row.max_over_mean < 1.1, "{row:?}");
            assert!(row.moved_on_join >= row.ideal_on_join * 0.9, "{row:?}");
            assert!(row.moved_on_join <= row.ideal_on_join * 1.5, "{row:?}");
        }
    }
}
