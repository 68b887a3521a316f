//! `ringkv bench`: throughput and latency of single-key puts and gets, each
//! reported beside a baseline measured in the same run (a gRPC health check,
//! which crosses the network and the server but touches no storage).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use ringkv_client::{proto::RawGetRequest, proto::RawPutRequest, Client, Connector};
use tonic::transport::Channel;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrent clients.
    #[arg(long, short, default_value_t = 32)]
    concurrency: usize,
    /// Operations per phase.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    requests: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Distinct keys; puts cycle over them and gets read them back.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Phases to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "baseline,put,get"
    )]
    phases: Vec<Phase>,
    /// Print results as one JSON object per phase instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// gRPC health checks: the cost of a round trip with no storage.
    Baseline,
    Put,
    Get,
}

struct PhaseResult {
    phase: Phase,
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl PhaseResult {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

fn key_for(i: u64) -> Bytes {
    Bytes::from(format!("bench-{i:012}"))
}

async fn one_op(
    phase: Phase,
    channel: &Channel,
    i: u64,
    value: &Bytes,
) -> Result<(), tonic::Status> {
    match phase {
        Phase::Baseline => {
            HealthClient::new(channel.clone())
                .check(HealthCheckRequest::default())
                .await?;
        }
        Phase::Put => {
            Client::from_channel(channel.clone())
                .raw()
                .raw_put(RawPutRequest {
                    key: key_for(i),
                    value: value.clone(),
                    ..Default::default()
                })
                .await?;
        }
        Phase::Get => {
            Client::from_channel(channel.clone())
                .raw()
                .raw_get(RawGetRequest {
                    key: key_for(i),
                    ..Default::default()
                })
                .await?;
        }
    }
    Ok(())
}

async fn run_phase(
    phase: Phase,
    channels: &[Channel],
    args: &BenchArgs,
) -> anyhow::Result<PhaseResult> {
    let next = Arc::new(AtomicU64::new(0));
    let value = Bytes::from(vec![b'x'; args.value_size]);
    let progress = ProgressBar::new(args.requests).with_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} {per_sec}")
            .context("progress template")?
            .progress_chars("=> "),
    );
    progress.set_message(format!("{phase:?}").to_lowercase());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let channel = channels[worker % channels.len()].clone();
        let next = next.clone();
        let value = value.clone();
        let progress = progress.clone();
        let (requests, keys) = (args.requests, args.keys.max(1));
        tasks.push(tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let op_started = Instant::now();
                if one_op(phase, &channel, i % keys, &value).await.is_err() {
                    errors += 1;
                }
                latency.saturating_record(op_started.elapsed().as_micros() as u64);
                progress.inc(1);
            }
            Ok::<_, hdrhistogram::CreationError>((latency, errors))
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for task in tasks {
        let (histogram, task_errors) = task.await??;
        latency_us.add(histogram)?;
        errors += task_errors;
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    Ok(PhaseResult {
        phase,
        ops: args.requests,
        errors,
        elapsed,
        latency_us,
    })
}

pub async fn run(connector: &Connector, address: &str, args: BenchArgs) -> anyhow::Result<()> {
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            connector
                .endpoint(address)?
                .connect()
                .await
                .with_context(|| format!("connecting to {address}"))?,
        );
    }
    if !args.json {
        println!(
            "ringkv bench: {address}, {} clients over {} connections, {} ops per phase, {}-byte values, {} keys",
            args.concurrency,
            channels.len(),
            args.requests,
            args.value_size,
            args.keys
        );
        println!(
            "{:<9} {:>10} {:>7} {:>12} {:>9} {:>9} {:>9} {:>12}",
            "phase", "ops", "errors", "ops/s", "p50 µs", "p99 µs", "p999 µs", "vs baseline"
        );
    }
    let mut baseline: Option<f64> = None;
    for phase in args.phases.clone() {
        let result = run_phase(phase, &channels, &args).await?;
        let rate = result.ops_per_sec();
        if result.phase == Phase::Baseline {
            baseline = Some(rate);
        }
        let ratio = baseline.map(|b| rate / b);
        let h = &result.latency_us;
        if args.json {
            println!(
                "{{\"phase\":\"{}\",\"ops\":{},\"errors\":{},\"seconds\":{:.3},\"ops_per_sec\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"vs_baseline\":{}}}",
                format!("{:?}", result.phase).to_lowercase(),
                result.ops,
                result.errors,
                result.elapsed.as_secs_f64(),
                rate,
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                ratio.map_or("null".to_string(), |r| format!("{r:.3}"))
            );
        } else {
            println!(
                "{:<9} {:>10} {:>7} {:>12.0} {:>9} {:>9} {:>9} {:>12}",
                format!("{:?}", result.phase).to_lowercase(),
                result.ops,
                result.errors,
                rate,
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                ratio.map_or("-".to_string(), |r| format!("{r:.2}x"))
            );
        }
    }
    Ok(())
}
