//! `ringkv-bench`: drive ringkv, etcd, Cassandra or raw RocksDB with one
//! workload driver (`run`), or regenerate docs/benchmarks.md (`evaluate`).

use std::{net::Ipv4Addr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ringkv_bench::{
    driver::{self, Amount, RunConfig},
    evaluate::{self, CassandraSettings, Profile, Report, Section, Settings, System},
    keys::KeyDistribution,
    measurement::Measurement,
    target::{Target, TargetKind, TargetSpec},
    workload::Workload,
};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one workload against one target and print what it measured.
    Run(RunArgs),
    /// Start ringkv, etcd and Cassandra on loopback, measure them all, and
    /// write docs/benchmarks.md with its plots (scripts/evaluate.sh).
    Evaluate(EvaluateArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CommitLog {
    /// Cassandra's default: acknowledged before the sync.
    Periodic,
    /// Synced before the acknowledgement, like ringkv's `sync`.
    Batch,
}

#[derive(Debug, Args)]
struct EvaluateArgs {
    /// Small n, short phases, no peers: checks the evaluation end to end.
    #[arg(long)]
    smoke: bool,
    /// Where benchmarks.md goes; plots and JSON go to its `benchmarks/`.
    #[arg(long, default_value = "docs")]
    docs_dir: PathBuf,
    /// Data dirs and logs of the clusters started.
    #[arg(long, default_value = "/tmp/ringkv-evaluate")]
    work_dir: PathBuf,
    /// The ringkv-node binary; by default the one next to this binary.
    #[arg(long)]
    node_binary: Option<PathBuf>,
    /// etcd's binary; etcd is skipped without it.
    #[arg(long)]
    etcd: Option<PathBuf>,
    /// Directory of Cassandra's jars; Cassandra is skipped without it.
    #[arg(long)]
    cassandra_lib: Option<PathBuf>,
    #[arg(long, default_value = "java")]
    java: PathBuf,
    #[arg(long, default_value = "bench/peers/cassandra/logback.xml")]
    cassandra_logback: PathBuf,
    #[arg(long, value_enum, default_value = "periodic")]
    cassandra_commitlog: CommitLog,
    /// ringkv's nodes take addresses from here; etcd's from the next /16,
    /// Cassandra's from the one after.
    #[arg(long, default_value = "127.96.0.1")]
    first_address: Ipv4Addr,
    /// The command to name in the document.
    #[arg(long, default_value = "scripts/evaluate.sh")]
    command_name: String,
    /// Run only these sections (the document leaves the others empty).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "seed,peers,scalability,faults,consistency"
    )]
    sections: Vec<Section>,
    /// The systems the peers section runs.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ringkv,etcd,cassandra"
    )]
    systems: Vec<System>,
    /// Redraw the document and plots from the saved JSON, measuring nothing.
    #[arg(long)]
    redraw: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[arg(long, value_enum, default_value = "ringkv")]
    target: TargetKind,
    /// `HOST:PORT` of each node; requests are balanced over them.
    #[arg(
        long = "endpoint",
        value_delimiter = ',',
        default_value = "127.0.0.1:7379"
    )]
    endpoints: Vec<String>,
    #[arg(long, value_enum, default_value = "a")]
    workload: Workload,
    #[arg(long, value_enum, default_value = "uniform")]
    distribution: KeyDistribution,
    /// Size of the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, short, default_value_t = 16)]
    concurrency: usize,
    /// Connections (HTTP/2 or CQL sessions' pools) the clients share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measure for this many seconds...
    #[arg(long, conflicts_with = "operations")]
    duration: Option<f64>,
    /// ...or until this many keys were touched.
    #[arg(long)]
    operations: Option<u64>,
    /// Seconds of unrecorded load first.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Keys per batch request.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// ringkv: R for each request (the cluster's default when unset).
    #[arg(long)]
    read_quorum: Option<u32>,
    /// ringkv: W for each request.
    #[arg(long)]
    write_quorum: Option<u32>,
    /// etcd: serializable reads instead of linearizable ones.
    #[arg(long)]
    serializable: bool,
    /// Cassandra: replication factor of the benchmark keyspace.
    #[arg(long, default_value_t = 3)]
    replication_factor: u32,
    /// Server processes whose CPU to report per 1,000 keys.
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} {value}"))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut spec = TargetSpec::new(args.target, args.endpoints.clone());
    spec.connections = args.connections;
    spec.read_quorum = args.read_quorum;
    spec.write_quorum = args.write_quorum;
    spec.serializable_reads = args.serializable;
    spec.cassandra.replication_factor = args.replication_factor;
    let target = Arc::new(Target::connect(&spec).await?);
    let amount = match (args.duration, args.operations) {
        (_, Some(keys)) => Amount::Keys(keys),
        (Some(duration), None) => Amount::For(seconds(duration, "--duration")?),
        (None, None) if args.workload == Workload::Load => Amount::Keys(args.keys),
        (None, None) => Amount::For(Duration::from_secs(10)),
    };
    let mut config = RunConfig::new(args.target, args.workload, amount);
    config.distribution = args.distribution;
    config.keys = args.keys;
    config.value_size = args.value_size;
    config.concurrency = args.concurrency;
    config.warmup = seconds(args.warmup, "--warmup")?;
    config.batch_size = args.batch_size;
    config.progress = matches!(args.output, Output::Table);
    config.server_pids = args.server_pids;
    let measurement = driver::run(target, &config).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&measurement)?),
        Output::Table => print_table(&measurement),
    }
    Ok(())
}

fn print_table(m: &Measurement) {
    println!(
        "| target | workload | c | req/s | keys/s | p50 µs | p99 µs | p999 µs | max µs | errors | CPU s / 1k keys |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {:?} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
        m.target,
        m.workload.name(),
        m.concurrency,
        m.requests_per_second(),
        m.keys_per_second(),
        m.latency.p50_us,
        m.latency.p99_us,
        m.latency.p999_us,
        m.latency.max_us,
        m.errors,
        m.cpu_seconds_per_thousand()
            .map_or_else(|| "-".to_string(), |cpu| format!("{cpu:.3}")),
    );
    if let Some(error) = &m.first_error {
        eprintln!("first error: {error}");
    }
}

fn node_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let beside = std::env::current_exe()?.with_file_name("ringkv-node");
    anyhow::ensure!(
        beside.exists(),
        "no ringkv-node beside this binary at {}; pass --node-binary",
        beside.display()
    );
    Ok(beside)
}

async fn evaluate_all(args: EvaluateArgs) -> anyhow::Result<()> {
    let settings = Settings {
        profile: if args.smoke {
            Profile::smoke()
        } else {
            Profile::full()
        },
        smoke: args.smoke,
        sections: args.sections.clone(),
        systems: args.systems.clone(),
        docs_dir: args.docs_dir.clone(),
        work_dir: args.work_dir.clone(),
        node_binary: node_binary(args.node_binary.clone())?,
        etcd_binary: args.etcd.clone(),
        cassandra: args.cassandra_lib.clone().map(|lib_dir| CassandraSettings {
            java: args.java.clone(),
            lib_dir,
            logback: args.cassandra_logback.clone(),
            commitlog_sync_batch: matches!(args.cassandra_commitlog, CommitLog::Batch),
        }),
        first_address: args.first_address,
        command: args.command_name.clone(),
    };
    if args.redraw {
        let path = settings.plots_dir().join("results.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let report: Report =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        evaluate::write_all(&settings, &report)?;
        return Ok(());
    }
    let report = evaluate::evaluate(&settings).await?;
    eprintln!(
        "wrote {} in {:.0} s",
        settings.docs_dir.join("benchmarks.md").display(),
        report.seconds
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Evaluate(args) => evaluate_all(args).await,
    }
}
