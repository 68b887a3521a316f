//! The closed-loop driver: `concurrency` clients, each sending its next
//! request when the last one returned, for a duration or until a number of
//! keys is done, after an unrecorded warm-up. Each client records into its
//! own histograms; they are merged at the end.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;

use crate::{
    cpu,
    keys::{KeyChooser, KeyDistribution},
    measurement::{Measurement, Percentiles, Second},
    target::{Target, TargetKind},
    workload::Workload,
    BenchError,
};

/// How long a run lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    For(Duration),
    /// Until this many keys were touched (a batch counts its keys).
    Keys(u64),
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: TargetKind,
    pub workload: Workload,
    pub distribution: KeyDistribution,
    pub keys: u64,
    pub value_size: usize,
    pub concurrency: usize,
    pub amount: Amount,
    pub warmup: Duration,
    pub batch_size: usize,
    pub progress: bool,
    /// Server processes whose CPU is read before and after the measured part.
    pub server_pids: Vec<u32>,
}

impl RunConfig {
    pub fn new(target: TargetKind, workload: Workload, amount: Amount) -> Self {
        Self {
            target,
            workload,
            distribution: KeyDistribution::Uniform,
            keys: 100_000,
            value_size: 256,
            concurrency: 16,
            amount,
            warmup: Duration::ZERO,
            batch_size: 100,
            progress: false,
            server_pids: Vec::new(),
        }
    }
}

impl RunConfig {
    pub fn with_keys(mut self, keys: u64, distribution: KeyDistribution) -> Self {
        self.keys = keys;
        self.distribution = distribution;
        self
    }

    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    pub fn with_server_pids(mut self, pids: Vec<u32>) -> Self {
        self.server_pids = pids;
        self
    }
}

/// Latencies up to an hour, three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

struct ClientRecord {
    latency: Histogram<u64>,
    seconds: Vec<(u64, u64, Histogram<u64>)>,
    requests: u64,
    keys: u64,
    errors: u64,
    first_error: Option<String>,
}

impl ClientRecord {
    fn new() -> Self {
        Self {
            latency: histogram(),
            seconds: Vec::new(),
            requests: 0,
            keys: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn slot(&mut self, second: usize) -> &mut (u64, u64, Histogram<u64>) {
        while self.seconds.len() <= second {
            self.seconds.push((0, 0, histogram()));
        }
        &mut self.seconds[second]
    }
}

/// Runs the warm-up, then the measured part.
pub async fn run(target: Arc<Target>, config: &RunConfig) -> Result<Measurement, BenchError> {
    if config.concurrency == 0 || config.batch_size == 0 {
        return Err(BenchError::Config(
            "--concurrency and --batch-size must be at least 1".into(),
        ));
    }
    let chooser = KeyChooser::new(
        config.workload.distribution(config.distribution),
        config.keys,
    )?;
    if !config.warmup.is_zero() {
        measure(&target, config, &chooser, Amount::For(config.warmup), false).await?;
    }
    let pids = server_pids(&target, config);
    let cpu_before = match &pids {
        Some(pids) => Some(cpu::cpu_seconds(pids)?),
        None => None,
    };
    let mut measurement =
        measure(&target, config, &chooser, config.amount, config.progress).await?;
    if let (Some(pids), Some(before)) = (&pids, cpu_before) {
        measurement.server_cpu_seconds = Some(cpu::cpu_seconds(pids)? - before);
    }
    Ok(measurement)
}

fn server_pids(target: &Target, config: &RunConfig) -> Option<Vec<u32>> {
    if target.is_in_process() {
        Some(vec![std::process::id()])
    } else if config.server_pids.is_empty() {
        None
    } else {
        Some(config.server_pids.clone())
    }
}

async fn measure(
    target: &Arc<Target>,
    config: &RunConfig,
    chooser: &KeyChooser,
    amount: Amount,
    progress: bool,
) -> Result<Measurement, BenchError> {
    let started = Instant::now();
    let claimed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let value = Bytes::from(vec![b'v'; config.value_size]);
    let per_request = if config.workload.is_batch() {
        config.batch_size as u64
    } else {
        1
    };
    let bar = progress_bar(amount, progress);
    let mut clients = Vec::with_capacity(config.concurrency);
    for client in 0..config.concurrency {
        let target = Arc::clone(target);
        let chooser = chooser.clone();
        let claimed = Arc::clone(&claimed);
        let done = Arc::clone(&done);
        let value = value.clone();
        let workload = config.workload;
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::from_rng(&mut rand::rng());
            let mut record = ClientRecord::new();
            let mut keys = Vec::with_capacity(per_request as usize);
            loop {
                let count = match amount {
                    Amount::For(duration) => {
                        if started.elapsed() >= duration {
                            break;
                        }
                        per_request
                    }
                    Amount::Keys(total) => {
                        let first = claimed.fetch_add(per_request, Ordering::Relaxed);
                        if first >= total {
                            break;
                        }
                        per_request.min(total - first)
                    }
                };
                chooser.next_batch(&mut rng, count, &mut keys);
                let count = keys.len() as u64;
                let op = workload.next_op(&mut rng);
                let sent = Instant::now();
                let outcome = target.execute(client, op, &keys, &value).await;
                let second = started.elapsed().as_secs() as usize;
                match outcome {
                    Ok(_) => {
                        let micros = sent.elapsed().as_micros().max(1) as u64;
                        record.latency.saturating_record(micros);
                        record.requests += 1;
                        record.keys += count;
                        let slot = record.slot(second);
                        slot.0 += 1;
                        slot.2.saturating_record(micros);
                    }
                    Err(error) => {
                        record.errors += 1;
                        record.slot(second).1 += 1;
                        if record.first_error.is_none() {
                            record.first_error = Some(error.to_string());
                        }
                    }
                }
                done.fetch_add(count, Ordering::Relaxed);
            }
            record
        }));
    }
    let ticker = bar.clone().map(|bar| {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                match amount {
                    Amount::For(_) => bar.set_position(started.elapsed().as_secs()),
                    Amount::Keys(_) => bar.set_position(done.load(Ordering::Relaxed)),
                }
            }
        })
    });
    let mut merged = ClientRecord::new();
    for client in clients {
        let record = client.await.map_err(|e| BenchError::Process {
            what: "a client task".into(),
            message: e.to_string(),
        })?;
        merge(&mut merged, record);
    }
    let elapsed = started.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // The last second is cut short by the end of the run.
    let whole_seconds = elapsed.as_secs() as usize;
    let timeline = merged
        .seconds
        .iter()
        .take(whole_seconds)
        .enumerate()
        .map(|(second, (requests, errors, latency))| Second {
            second: second as u64,
            requests: *requests,
            errors: *errors,
            p99_us: if latency.is_empty() {
                0
            } else {
                latency.value_at_quantile(0.99)
            },
        })
        .collect();
    Ok(Measurement {
        target: config.target,
        workload: config.workload,
        concurrency: config.concurrency,
        batch_size: per_request as usize,
        requests: merged.requests,
        keys: merged.keys,
        errors: merged.errors,
        elapsed_seconds: elapsed.as_secs_f64(),
        latency: Percentiles::of(&merged.latency),
        server_cpu_seconds: None,
        timeline,
        first_error: merged.first_error,
    })
}

fn merge(into: &mut ClientRecord, record: ClientRecord) {
    // Both histograms share bounds, so adding cannot fail.
    let _ = into.latency.add(&record.latency);
    for (second, (requests, errors, latency)) in record.seconds.into_iter().enumerate() {
        let slot = into.slot(second);
        slot.0 += requests;
        slot.1 += errors;
        let _ = slot.2.add(&latency);
    }
    into.requests += record.requests;
    into.keys += record.keys;
    into.errors += record.errors;
    if into.first_error.is_none() {
        into.first_error = record.first_error;
    }
}

fn progress_bar(amount: Amount, shown: bool) -> Option<ProgressBar> {
    if !shown {
        return None;
    }
    let (length, unit) = match amount {
        Amount::For(duration) => (duration.as_secs().max(1), "s"),
        Amount::Keys(keys) => (keys, "keys"),
    };
    let bar = ProgressBar::new(length).with_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        keys::key,
        target::{Reply, TargetSpec},
    };

    async fn rocks() -> Arc<Target> {
        Arc::new(
            Target::connect(&TargetSpec::new(TargetKind::Rocks, Vec::new()))
                .await
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_keys_run_touches_exactly_that_many_keys_even_in_uneven_batches() {
        let target = rocks().await;
        let mut config = RunConfig::new(TargetKind::Rocks, Workload::BatchPut, Amount::Keys(1_050));
        config.distribution = KeyDistribution::Sequential;
        config.keys = 1_050;
        config.batch_size = 100;
        config.concurrency = 3;
        let measured = run(Arc::clone(&target), &config).await.unwrap();
        assert_eq!(measured.keys, 1_050);
        assert_eq!(measured.requests, 11);
        assert_eq!(measured.errors, 0);
        let value = Bytes::from(vec![b'v'; config.value_size]);
        for index in [0, 999, 1_049] {
            let reply = target
                .execute(0, crate::workload::Op::Get, &[key(index)], &value)
                .await
                .unwrap();
            assert_eq!(reply, Reply::Value(Some(value.clone())), "key {index}");
        }
        let missing = target
            .execute(0, crate::workload::Op::Get, &[key(1_050)], &value)
            .await
            .unwrap();
        assert_eq!(missing, Reply::Value(None));
    }

    #[tokio::test]
    async fn a_timed_run_lasts_its_duration_and_reports_whole_seconds() {
        let target = rocks().await;
        let mut config = RunConfig::new(
            TargetKind::Rocks,
            Workload::A,
            Amount::For(Duration::from_millis(2_200)),
        );
        config.keys = 100;
        config.concurrency = 2;
        let measured = run(target, &config).await.unwrap();
        assert!(
            measured.elapsed_seconds >= 2.2,
            "{}",
            measured.elapsed_seconds
        );
        assert!(measured.requests > 0);
        assert_eq!(measured.timeline.len(), 2);
        let in_timeline: u64 = measured.timeline.iter().map(|s| s.requests).sum();
        assert!(in_timeline <= measured.requests);
        assert!(measured.latency.p50_us <= measured.latency.p99_us);
        assert!(
            measured.server_cpu_seconds.is_some(),
            "in-process CPU is this process's"
        );
    }
}
