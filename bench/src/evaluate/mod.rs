//! `ringkv-bench evaluate`: the whole evaluation in one run. It starts what
//! it measures (ringkv, etcd and Cassandra clusters on loopback), measures
//! it with the one driver, and writes docs/benchmarks.md, its plots and the
//! figures as JSON. Every figure stands beside a baseline from the same run.

mod cassandra_cluster;
mod consistency;
mod document;
mod etcd_cluster;
mod faults;
mod metrics;
mod partition;
mod peers;
mod plot;
mod process;
pub mod report;
mod ringkv_cluster;
mod scalability;
mod seed_table;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

pub use cassandra_cluster::CassandraSettings;
pub use report::Report;
use ringkv_cluster::{RingkvCluster, RingkvSettings};

use crate::{
    driver::{self, Amount, RunConfig},
    keys::KeyDistribution,
    measurement::Measurement,
    target::{Target, TargetKind, TargetSpec},
    workload::Workload,
    BenchError,
};

/// How much of everything to run: the full evaluation, or the smoke run the
/// test suite uses so that the evaluation cannot rot.
#[derive(Debug, Clone)]
pub struct Profile {
    pub seed_sizes: Vec<u64>,
    /// A seed-table cell longer than this, judged by the row before, is
    /// projected instead of measured.
    pub cell_budget: Duration,
    pub phase: Duration,
    pub warmup: Duration,
    pub concurrencies: Vec<usize>,
    pub keys: u64,
    pub cassandra_warmup: Duration,
    pub cluster_sizes: Vec<usize>,
    pub placement_sizes: Vec<usize>,
    /// Fault timeline: its length, when the fault starts and when it heals.
    pub fault_run: Duration,
    pub fault_at: Duration,
    pub heal_at: Duration,
    pub staleness_after_ms: Vec<u64>,
    pub staleness_trials: u64,
    pub streaming_keys: u64,
    /// Keys written during the partition of each convergence run.
    pub convergence_keys: Vec<u64>,
    /// How long the convergence runs keep their node cut off, at least.
    pub partition_length: Duration,
}

impl Profile {
    pub fn full() -> Self {
        Self {
            seed_sizes: vec![100, 1_000, 10_000, 100_000, 1_000_000],
            cell_budget: Duration::from_secs(40),
            phase: Duration::from_secs(5),
            warmup: Duration::from_secs(2),
            concurrencies: vec![1, 16, 64, 256],
            keys: 100_000,
            cassandra_warmup: Duration::from_secs(150),
            cluster_sizes: vec![1, 3, 5],
            placement_sizes: vec![3, 5, 10, 20, 50, 100],
            fault_run: Duration::from_secs(60),
            fault_at: Duration::from_secs(15),
            heal_at: Duration::from_secs(35),
            staleness_after_ms: vec![0, 1, 2, 5, 10, 20, 50, 100],
            staleness_trials: 400,
            streaming_keys: 100_000,
            convergence_keys: vec![10_000, 100_000],
            partition_length: Duration::from_secs(20),
        }
    }

    pub fn smoke() -> Self {
        Self {
            seed_sizes: vec![100, 1_000],
            cell_budget: Duration::from_secs(5),
            phase: Duration::from_millis(800),
            warmup: Duration::ZERO,
            concurrencies: vec![1, 16],
            keys: 1_000,
            cassandra_warmup: Duration::ZERO,
            cluster_sizes: vec![1, 3],
            placement_sizes: vec![3, 5],
            fault_run: Duration::from_secs(12),
            fault_at: Duration::from_secs(3),
            heal_at: Duration::from_secs(7),
            staleness_after_ms: vec![0, 5],
            staleness_trials: 20,
            streaming_keys: 2_000,
            convergence_keys: vec![500],
            partition_length: Duration::from_secs(2),
        }
    }
}

/// The evaluation's parts, which can be run alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Seed,
    Peers,
    Scalability,
    Faults,
    Consistency,
}

/// The systems the peers section compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    Ringkv,
    Etcd,
    Cassandra,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The systems the peers section runs.
    pub systems: Vec<System>,
    pub profile: Profile,
    /// The sections to run; the others stay empty in the document.
    pub sections: Vec<Section>,
    pub smoke: bool,
    /// Where benchmarks.md goes; the plots and JSON go to `benchmarks/`
    /// beside it.
    pub docs_dir: PathBuf,
    /// Data dirs and logs of every process started.
    pub work_dir: PathBuf,
    pub node_binary: PathBuf,
    pub etcd_binary: Option<PathBuf>,
    pub cassandra: Option<CassandraSettings>,
    /// ringkv nodes take addresses from here up; etcd and Cassandra from
    /// the next two /16s' same offsets.
    pub first_address: Ipv4Addr,
    pub command: String,
}

impl Settings {
    fn ringkv(&self, name: &str, replication_factor: usize) -> RingkvSettings {
        RingkvSettings {
            binary: self.node_binary.clone(),
            data_root: self.work_dir.join(name),
            first_address: self.first_address,
            replication_factor,
            // Every system compared here keeps the last write: blind
            // overwrites in ringkv's default mode would pile up siblings.
            extra_args: vec!["--conflict-resolution".into(), "lww".into()],
            own_uids: false,
        }
    }

    fn peer_address(&self, slot: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.first_address) + (slot << 16))
    }

    pub fn plots_dir(&self) -> PathBuf {
        self.docs_dir.join("benchmarks")
    }
}

/// Starts a ringkv cluster of `nodes` with N = min(3, nodes).
async fn ringkv_cluster(
    settings: &Settings,
    name: &str,
    nodes: usize,
) -> Result<RingkvCluster, BenchError> {
    RingkvCluster::start(settings.ringkv(name, nodes.min(3)), nodes).await
}

/// One measured run against `target`.
async fn measure(target: &Arc<Target>, config: RunConfig) -> Result<Measurement, BenchError> {
    driver::run(Arc::clone(target), &config).await
}

/// Writes keys 0..keys, so that reads find values. The load is not
/// measured, so it goes in batches of 100 (a RawBatchPut, an etcd Txn, a
/// Cassandra unlogged batch): one put at a time, the ten loads of a full
/// run took about 6 minutes. A pass with failed requests is repeated
/// (puts of the same values are idempotent), up to `LOAD_PASSES`: a cold
/// Cassandra times some batches out at QUORUM.
async fn load(
    target: &Arc<Target>,
    kind: TargetKind,
    keys: u64,
    value_size: usize,
) -> Result<(), BenchError> {
    const LOAD_PASSES: usize = 3;
    let mut config = RunConfig::new(kind, Workload::BatchPut, Amount::Keys(keys))
        .with_keys(keys, KeyDistribution::Sequential)
        .with_concurrency(16);
    config.value_size = value_size;
    config.batch_size = 100;
    let mut failed = None;
    for pass in 1..=LOAD_PASSES {
        let loaded = measure(target, config.clone()).await?;
        if loaded.errors == 0 {
            return Ok(());
        }
        say(format!(
            "  load pass {pass}: {} batch puts failed; loading again",
            loaded.errors
        ));
        failed = Some((loaded.errors, loaded.first_error));
    }
    let (errors, first) = failed.unwrap_or_default();
    Err(BenchError::Process {
        what: "load".into(),
        message: format!(
            "{errors} batch puts still failed in the last of {LOAD_PASSES} passes: {}",
            first.unwrap_or_default()
        ),
    })
}

async fn connect(
    kind: TargetKind,
    endpoints: Vec<String>,
    connections: usize,
) -> Result<Arc<Target>, BenchError> {
    let mut spec = TargetSpec::new(kind, endpoints);
    spec.connections = connections;
    Ok(Arc::new(Target::connect(&spec).await?))
}

fn say(line: impl AsRef<str>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "[evaluate] {}", line.as_ref());
}

/// Runs every section, then writes the document, the plots and the JSON.
pub async fn evaluate(settings: &Settings) -> Result<Report, BenchError> {
    let started = Instant::now();
    let mut report = Report {
        date: today(),
        machine: machine(),
        command: settings.command.clone(),
        smoke: settings.smoke,
        ..Default::default()
    };
    report.versions.ringkv = format!(
        "{} ({} build)",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let runs = |section| settings.sections.contains(&section);
    let mut timer = SectionTimer::default();
    if runs(Section::Seed) {
        say("1/5 the seed's table through the network");
        report.seed_table = seed_table::run(settings).await?;
        timer.lap("the seed's table");
    }
    if runs(Section::Peers) {
        say("2/5 peers side by side");
        report.peers = peers::run(settings, &mut report.versions).await;
        timer.lap("peers (with starting and warming them up)");
    }
    if runs(Section::Scalability) {
        say("3/5 scalability");
        report.scalability = scalability::run(settings).await?;
        timer.lap("scalability");
    }
    if runs(Section::Faults) {
        say("4/5 fault tolerance");
        (report.faults, report.fault_notes) = faults::run(settings).await?;
        timer.lap("fault tolerance");
    }
    if runs(Section::Consistency) {
        say("5/5 eventual consistency");
        report.consistency = consistency::run(settings).await?;
        timer.lap("eventual consistency");
    }
    report.section_seconds = timer.laps;
    report.seconds = started.elapsed().as_secs_f64();
    write_all(settings, &report)?;
    Ok(report)
}

/// Times the sections one after another.
struct SectionTimer {
    since: Instant,
    laps: Vec<(String, f64)>,
}

impl Default for SectionTimer {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            laps: Vec::new(),
        }
    }
}

impl SectionTimer {
    fn lap(&mut self, section: &str) {
        self.laps
            .push((section.to_string(), self.since.elapsed().as_secs_f64()));
        self.since = Instant::now();
    }
}

/// Writes the JSON, the plots and the document from a report.
pub fn write_all(settings: &Settings, report: &Report) -> Result<(), BenchError> {
    let plots = settings.plots_dir();
    std::fs::create_dir_all(&plots)
        .map_err(|e| BenchError::io(format!("creating {}", plots.display()), e))?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| BenchError::Config(format!("serialising the report: {e}")))?;
    write(&plots.join("results.json"), json.as_bytes())?;
    let drawn = plot::draw_all(report, &plots)?;
    // Written by scripts/profile.sh, which samples the nodes with perf.
    let profile = std::fs::read_to_string(plots.join("profile.md")).ok();
    let document = document::render(report, &drawn, profile.as_deref());
    write(
        &settings.docs_dir.join("benchmarks.md"),
        document.as_bytes(),
    )
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    std::fs::write(path, bytes)
        .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Cores, memory and CPU model, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| {
            meminfo
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|kb| kb.trim().trim_end_matches(" kB").parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} cores ({model}), {memory_gib:.0} GiB")
}
