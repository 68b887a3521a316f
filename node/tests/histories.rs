//! Generated histories against real processes, in the manner of Jepsen:
//! client workers issue random reads, overwrites, deletes (with and without
//! a context), scans and batches while a seeded nemesis kills, pauses and
//! wipes nodes, and adds and decommissions members. A checker holds every
//! acknowledged answer against what the acknowledged writes before it left.
//!
//! Each worker owns its keys, so each key's history is sequential and the
//! checker can be exact: an acknowledged read must show exactly the last
//! acknowledged write, with no siblings. A write that fails or times out may
//! still take effect later, so its key is retired: the worker moves on to a
//! fresh key, and the retired key may from then on show either outcome but
//! nothing else. The seed is printed and can be replayed with
//! `RINGKV_HISTORY_SEED`.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{eventually, wait_equal_trees, wait_left, wait_stable, TestCluster, TestNode};
use rand::{rngs::StdRng, Rng, SeedableRng};
use ringkv_client::{
    proto::{
        Consistency, KvPair, RawBatchDeleteRequest, RawBatchGetRequest, RawBatchPutRequest,
        RawDeleteRequest, RawGetRequest, RawPutRequest, RawScanRequest,
    },
    Client,
};
use tokio::time::{sleep, timeout};
use tonic::{Code, Status};

/// How long a client waits for one request; past it the outcome is unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(4);
/// Keys each worker writes at a time.
const ACTIVE_KEYS: usize = 6;
const WORKERS: usize = 4;
const PARTITIONS: u32 = 256;

/// What a key holds, as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Held {
    Absent,
    Value(Bytes),
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Held::Absent => write!(f, "absent"),
            Held::Value(v) => write!(f, "{}", String::from_utf8_lossy(v)),
        }
    }
}

/// What one read showed: nothing, one value, or siblings.
#[derive(Clone, Debug)]
enum Seen {
    Absent,
    Values(Vec<Bytes>),
}

impl Seen {
    fn of(value: Bytes, siblings: Vec<Bytes>) -> Self {
        if siblings.is_empty() {
            Seen::Values(vec![value])
        } else {
            Seen::Values(siblings)
        }
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Absent => write!(f, "absent"),
            Seen::Values(values) => {
                let shown: Vec<_> = values.iter().map(|v| String::from_utf8_lossy(v)).collect();
                write!(f, "{}", shown.join(" | "))
            }
        }
    }
}

/// One key's sequential history and what may be read from it.
#[derive(Debug)]
struct KeyModel {
    /// What the last acknowledged write left.
    acked: Held,
    /// The outcome of the write that failed or timed out, once the key is
    /// retired: it may or may not have taken, now or later.
    unsure: Option<Held>,
    log: Vec<String>,
}

impl KeyModel {
    fn new() -> Self {
        Self {
            acked: Held::Absent,
            unsure: None,
            log: Vec::new(),
        }
    }

    /// Whether `seen` is a state some order of this key's writes can leave.
    fn admits(&self, seen: &Seen) -> bool {
        let held = match seen {
            Seen::Absent => Held::Absent,
            Seen::Values(values) if values.len() == 1 => Held::Value(values[0].clone()),
            // One writer per key, always with a fresh context: siblings mean
            // a write was kept beside the one that replaced it.
            Seen::Values(_) => return false,
        };
        held == self.acked || self.unsure.as_ref() == Some(&held)
    }
}

#[derive(Default, Debug)]
struct Tally {
    puts: u64,
    deletes: u64,
    reads: u64,
    unknown: u64,
    failed_reads: u64,
    /// Keys of partly failed batches that the error did not name.
    unnamed_in_failed_batches: u64,
}

/// A worker: its own keys, its models of them, and what it found.
struct Worker {
    id: usize,
    rng: StdRng,
    active: Vec<String>,
    next_key: usize,
    models: BTreeMap<String, KeyModel>,
    clients: HashMap<SocketAddr, Client>,
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    tally: Tally,
    violations: Vec<String>,
    /// The node the last request went to, and when the worker started: a
    /// violation's steps name both, to line them up with the nemesis.
    via: Option<SocketAddr>,
}

/// Milliseconds since the first call, the common clock of the workers' logs
/// and the nemesis.
fn at_ms() -> u128 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis()
}

fn quorums(r: u32, w: u32) -> Option<Consistency> {
    Some(Consistency {
        read_quorum: Some(r),
        write_quorum: Some(w),
    })
}

async fn within<T>(
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match timeout(OP_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded("client gave up")),
    }
}

impl Worker {
    fn new(id: usize, seed: u64, targets: Arc<Mutex<Vec<SocketAddr>>>) -> Self {
        let mut worker = Self {
            id,
            rng: StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            active: Vec::new(),
            next_key: 0,
            models: BTreeMap::new(),
            clients: HashMap::new(),
            targets,
            tally: Tally::default(),
            violations: Vec::new(),
            via: None,
        };
        at_ms();
        for _ in 0..ACTIVE_KEYS {
            let key = worker.fresh_key();
            worker.active.push(key);
        }
        worker
    }

    fn prefix(&self) -> String {
        format!("h/w{}/", self.id)
    }

    fn fresh_key(&mut self) -> String {
        let key = format!("{}k{:05}", self.prefix(), self.next_key);
        self.next_key += 1;
        self.models.insert(key.clone(), KeyModel::new());
        key
    }

    fn fresh_value(&mut self, key: &str) -> Bytes {
        let n = self.models.get(key).map_or(0, |m| m.log.len());
        Bytes::from(format!("{key}#{n}-{}", self.rng.random::<u32>()))
    }

    fn client(&mut self) -> Client {
        let targets = self.targets.lock().expect("targets").clone();
        let address = targets[self.rng.random_range(0..targets.len())];
        self.via = Some(address);
        self.clients
            .entry(address)
            .or_insert_with(|| {
                let channel = ringkv_client::Connector::plaintext()
                    .endpoint(&address.to_string())
                    .expect("endpoint")
                    .connect_timeout(Duration::from_secs(1))
                    .connect_lazy();
                Client::from_channel(channel)
            })
            .clone()
    }

    /// Where and when the last request went, for the log of a key.
    fn stamp(&self) -> String {
        let via = self
            .via
            .map_or_else(|| "?".to_string(), |a| a.ip().to_string());
        format!("@{}ms via {via}", at_ms())
    }

    fn model(&mut self, key: &str) -> &mut KeyModel {
        self.models.get_mut(key).expect("a model for every key")
    }

    /// Checks an acknowledged read of `key`.
    fn observe(&mut self, key: &str, how: &str, seen: Seen) {
        self.tally.reads += 1;
        let stamp = self.stamp();
        let model = self.models.get_mut(key).expect("model");
        model.log.push(format!("{how} {stamp} -> {seen}"));
        if !model.admits(&seen) {
            let unsure = model
                .unsure
                .as_ref()
                .map_or(String::new(), |u| format!(" or {u}"));
            let recent = &model.log[model.log.len().saturating_sub(12)..];
            self.violations.push(format!(
                "{key}: {how} showed {seen}, but the acknowledged writes leave {}{unsure}; its last steps: {recent:?}",
                model.acked
            ));
        }
    }

    /// Records the outcome of a write of `key` that would leave `outcome`.
    fn wrote(&mut self, key: &str, how: &str, outcome: Held, result: &Result<(), Status>) {
        let stamp = self.stamp();
        let model = self.model(key);
        match result {
            Ok(()) => {
                model.log.push(format!("{how} {outcome} {stamp}: ok"));
                model.acked = outcome.clone();
                match outcome {
                    Held::Absent => self.tally.deletes += 1,
                    Held::Value(_) => self.tally.puts += 1,
                }
            }
            Err(status) => {
                model.log.push(format!(
                    "{how} {outcome} {stamp}: {:?} {}",
                    status.code(),
                    status.message()
                ));
                model.unsure = Some(outcome);
                self.tally.unknown += 1;
                self.retire(key);
            }
        }
    }

    fn retire(&mut self, key: &str) {
        if let Some(slot) = self.active.iter().position(|k| k == key) {
            let fresh = self.fresh_key();
            self.active[slot] = fresh;
        }
    }

    fn pick_keys(&mut self, count: usize) -> Vec<String> {
        let mut keys = self.active.clone();
        let mut picked = Vec::new();
        while picked.len() < count && !keys.is_empty() {
            picked.push(keys.swap_remove(self.rng.random_range(0..keys.len())));
        }
        picked
    }

    /// Reads `key` at R=2; `None` when the read failed.
    async fn read(&mut self, key: &str) -> Option<Bytes> {
        let mut client = self.client();
        let request = RawGetRequest {
            key: Bytes::from(key.to_string()),
            consistency: quorums(2, 2),
        };
        match within(client.raw().raw_get(request)).await {
            Ok(response) => {
                let response = response.into_inner();
                self.observe(key, "get", Seen::of(response.value, response.siblings));
                Some(response.context)
            }
            Err(status) if status.code() == Code::NotFound => {
                self.observe(key, "get", Seen::Absent);
                Some(Bytes::new())
            }
            Err(_) => {
                self.tally.failed_reads += 1;
                None
            }
        }
    }

    async fn overwrite(&mut self, key: &str) {
        let Some(context) = self.read(key).await else {
            return;
        };
        let value = self.fresh_value(key);
        let mut client = self.client();
        let request = RawPutRequest {
            key: Bytes::from(key.to_string()),
            value: value.clone(),
            consistency: quorums(2, 2),
            context,
            ..Default::default()
        };
        let result = within(client.raw().raw_put(request)).await.map(|_| ());
        self.wrote(key, "put", Held::Value(value), &result);
    }

    async fn delete(&mut self, key: &str, with_context: bool) {
        let context = if with_context {
            match self.read(key).await {
                Some(context) => context,
                None => return,
            }
        } else {
            Bytes::new()
        };
        let mut client = self.client();
        let request = RawDeleteRequest {
            key: Bytes::from(key.to_string()),
            consistency: quorums(2, 2),
            context,
        };
        let result = within(client.raw().raw_delete(request)).await.map(|_| ());
        let how = if with_context {
            "delete"
        } else {
            "blind delete"
        };
        self.wrote(key, how, Held::Absent, &result);
    }

    /// Scans the worker's whole range at R=2, retired keys included.
    async fn scan(&mut self) {
        let prefix = self.prefix();
        let mut end = prefix.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut client = self.client();
        let request = RawScanRequest {
            start_key: Bytes::from(prefix),
            end_key: Bytes::from(end),
            limit: 0,
            key_only: false,
            reverse: false,
            consistency: quorums(2, 2),
        };
        let Ok(response) = within(client.raw().raw_scan(request)).await else {
            self.tally.failed_reads += 1;
            return;
        };
        let mut found: BTreeMap<String, Seen> = response
            .into_inner()
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    Seen::of(kv.value, kv.siblings),
                )
            })
            .collect();
        let keys: Vec<String> = self.models.keys().cloned().collect();
        for key in keys {
            let seen = found.remove(&key).unwrap_or(Seen::Absent);
            self.observe(&key, "scan", seen);
        }
        for (key, seen) in found {
            self.violations
                .push(format!("scan showed {key} = {seen}, a key never written"));
        }
    }

    /// Reads keys with RawBatchGet; returns each present key's context.
    async fn batch_read(&mut self, keys: &[String]) -> Option<HashMap<String, Bytes>> {
        let mut client = self.client();
        let request = RawBatchGetRequest {
            keys: keys.iter().map(|k| Bytes::from(k.clone())).collect(),
            consistency: quorums(2, 2),
        };
        let Ok(response) = within(client.raw().raw_batch_get(request)).await else {
            self.tally.failed_reads += 1;
            return None;
        };
        let mut found: HashMap<String, KvPair> = response
            .into_inner()
            .pairs
            .into_iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv))
            .collect();
        let mut contexts = HashMap::new();
        for key in keys {
            match found.remove(key) {
                Some(kv) => {
                    contexts.insert(key.clone(), kv.context.clone());
                    self.observe(key, "batch get", Seen::of(kv.value, kv.siblings));
                }
                None => self.observe(key, "batch get", Seen::Absent),
            }
        }
        for key in found.into_keys() {
            self.violations.push(format!(
                "batch get answered {key}, which it was not asked for"
            ));
        }
        Some(contexts)
    }

    async fn batch_overwrite(&mut self, keys: &[String]) {
        let Some(mut contexts) = self.batch_read(keys).await else {
            return;
        };
        let values: Vec<Bytes> = keys.iter().map(|k| self.fresh_value(k)).collect();
        let pairs = keys
            .iter()
            .zip(&values)
            .map(|(key, value)| KvPair {
                key: Bytes::from(key.clone()),
                value: value.clone(),
                siblings: Vec::new(),
                context: contexts.remove(key).unwrap_or_default(),
            })
            .collect();
        let mut client = self.client();
        let request = RawBatchPutRequest {
            pairs,
            consistency: quorums(2, 2),
            ttl_seconds: 0,
        };
        let result = within(client.raw().raw_batch_put(request))
            .await
            .map(|_| ());
        for (key, value) in keys.iter().zip(values) {
            let outcome = self.outcome_of(&result, key);
            self.wrote(key, "batch put", Held::Value(value), &outcome);
        }
    }

    async fn batch_delete(&mut self, keys: &[String]) {
        let mut client = self.client();
        let request = RawBatchDeleteRequest {
            keys: keys.iter().map(|k| Bytes::from(k.clone())).collect(),
            consistency: quorums(2, 2),
        };
        let result = within(client.raw().raw_batch_delete(request))
            .await
            .map(|_| ());
        for key in keys {
            let outcome = self.outcome_of(&result, key);
            self.wrote(key, "batch delete", Held::Absent, &outcome);
        }
    }

    /// A batch's outcome for one key. A batch error names every key that
    /// did not take and promises that every other key was written at W, so
    /// a key it does not name counts as acknowledged.
    fn outcome_of(&mut self, result: &Result<(), Status>, key: &str) -> Result<(), Status> {
        match result {
            Err(status)
                if status
                    .message()
                    .contains("keys did not take; every other key was written")
                    && !status.message().contains("more not named here")
                    && !status
                        .message()
                        .contains(&format!("{:?}", Bytes::from(key.to_string()))) =>
            {
                self.tally.unnamed_in_failed_batches += 1;
                Ok(())
            }
            other => other.clone(),
        }
    }

    async fn step(&mut self) {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=24 => {
                let key = self.pick_keys(1).remove(0);
                self.read(&key).await;
            }
            25..=49 => {
                let key = self.pick_keys(1).remove(0);
                self.overwrite(&key).await;
            }
            50..=59 => {
                let key = self.pick_keys(1).remove(0);
                self.delete(&key, true).await;
            }
            60..=69 => {
                let key = self.pick_keys(1).remove(0);
                self.delete(&key, false).await;
            }
            70..=77 => self.scan().await,
            78..=84 => {
                let keys = self.pick_keys(3);
                self.batch_read(&keys).await;
            }
            85..=93 => {
                let keys = self.pick_keys(3);
                self.batch_overwrite(&keys).await;
            }
            _ => {
                let keys = self.pick_keys(2);
                self.batch_delete(&keys).await;
            }
        }
    }

    /// The final check, once the cluster has healed: every key, retired
    /// ones too, read at R=2.
    async fn check_all(&mut self) {
        let keys: Vec<String> = self.models.keys().cloned().collect();
        for key in keys {
            let read = eventually(
                &format!("final read of {key}"),
                Duration::from_secs(30),
                || {
                    let mut client = self.client();
                    let request = RawGetRequest {
                        key: Bytes::from(key.clone()),
                        consistency: quorums(2, 2),
                    };
                    async move {
                        match within(client.raw().raw_get(request)).await {
                            Ok(r) => {
                                let r = r.into_inner();
                                Some(Seen::of(r.value, r.siblings))
                            }
                            Err(s) if s.code() == Code::NotFound => Some(Seen::Absent),
                            Err(_) => None,
                        }
                    }
                },
            )
            .await;
            self.observe(&key, "final get", read);
        }
    }
}

/// The seed of this run: `RINGKV_HISTORY_SEED`, else the clock.
fn seed() -> u64 {
    std::env::var("RINGKV_HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

/// Runs `WORKERS` workers until `stop`; returns them for the final check.
fn start_workers(
    seed: u64,
    targets: &Arc<Mutex<Vec<SocketAddr>>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Worker>> {
    (0..WORKERS)
        .map(|id| {
            let mut worker = Worker::new(id, seed, targets.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    worker.step().await;
                }
                worker
            })
        })
        .collect()
}

/// A fault of one node that heals at its end.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Pause,
    Wipe,
}

async fn inject(node: &mut TestNode, fault: Fault, rng: &mut StdRng) {
    let held = Duration::from_millis(rng.random_range(300..2500));
    match fault {
        Fault::Pause => {
            node.pause();
            sleep(held).await;
            node.resume();
        }
        Fault::Kill => {
            node.kill9();
            sleep(held).await;
            // The caller waits for it: a joining node serves only once it
            // holds its partitions.
            node.respawn();
        }
        Fault::Wipe => {
            node.kill9();
            node.wipe();
            sleep(held).await;
            node.respawn();
        }
    }
}

/// Stops the workers, checks every key after healing, prints the tally,
/// and fails on any violation.
async fn finish(
    what: &str,
    seed: u64,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Worker>>,
    nemesis: &[String],
) -> Vec<Worker> {
    stop.store(true, Ordering::Relaxed);
    let mut done = Vec::new();
    for worker in workers {
        let mut worker = worker.await.expect("worker");
        worker.check_all().await;
        done.push(worker);
    }
    let mut total = Tally::default();
    let mut violations = Vec::new();
    let mut keys = 0;
    for worker in &done {
        total.puts += worker.tally.puts;
        total.deletes += worker.tally.deletes;
        total.reads += worker.tally.reads;
        total.unknown += worker.tally.unknown;
        total.failed_reads += worker.tally.failed_reads;
        total.unnamed_in_failed_batches += worker.tally.unnamed_in_failed_batches;
        keys += worker.models.len();
        violations.extend(worker.violations.iter().cloned());
    }
    println!(
        "{what} (seed {seed}): {} acknowledged puts and {} acknowledged deletes over {keys} keys, {} acknowledged reads checked exactly, each key of a scan counted ({} writes of unknown outcome, {} failed reads; {} keys of partly failed batches counted as written because the error did not name them); nemesis: {}",
        total.puts,
        total.deletes,
        total.reads,
        total.unknown,
        total.failed_reads,
        total.unnamed_in_failed_batches,
        nemesis.join(", ")
    );
    assert!(
        violations.is_empty(),
        "{what} (seed {seed}, replay with RINGKV_HISTORY_SEED={seed}): {} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(
        total.puts > 100 && total.deletes > 20,
        "too few acknowledged writes to mean anything: {total:?}"
    );
    done
}

/// Three nodes (N=3, so no sloppy quorum: every read at R=2 meets every
/// write acknowledged at W=2) under crashes, pauses and wiped disks, one
/// fault at a time.
#[tokio::test]
async fn generated_histories_survive_crashes_pauses_and_wiped_disks() {
    let seed = seed();
    println!("history seed {seed}: RINGKV_HISTORY_SEED={seed} replays its choices");
    let mut rng = StdRng::seed_from_u64(seed);
    let args = [
        "--replica-timeout-ms",
        "800",
        "--anti-entropy-interval-secs",
        "2",
    ];
    let mut cluster = TestCluster::start(60, 3, &args).await;
    let targets = Arc::new(Mutex::new(
        cluster.nodes.iter().map(|n| n.grpc).collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_workers(seed, &targets, &stop);

    let mut nemesis = Vec::new();
    for _ in 0..12 {
        sleep(Duration::from_millis(rng.random_range(500..1500))).await;
        let victim = rng.random_range(0..cluster.nodes.len());
        let fault = match rng.random_range(0..10) {
            0..=3 => Fault::Kill,
            4..=7 => Fault::Pause,
            _ => Fault::Wipe,
        };
        nemesis.push(format!("{fault:?} n{} @{}ms", victim + 1, at_ms()));
        inject(&mut cluster.nodes[victim], fault, &mut rng).await;
        // One fault at a time: a refill needs every other owner.
        cluster.wait_refilled().await;
    }
    sleep(Duration::from_millis(1000)).await;
    let workers = finish(
        "crashes, pauses and wiped disks",
        seed,
        stop,
        workers,
        &nemesis,
    )
    .await;

    // Replicas converge: once anti-entropy is done, every node alone
    // answers what the quorum read answered.
    let nodes: Vec<&TestNode> = cluster.nodes.iter().collect();
    wait_equal_trees(&nodes, PARTITIONS, Duration::from_secs(120)).await;
    let metrics = cluster.nodes[0].metrics_text().await;
    assert!(
        metrics.contains("ringkv_anti_entropy_last_exchange_timestamp_seconds{partition=\""),
        "anti-entropy reports its exchanges by partition"
    );
    let mut compared = 0;
    for worker in &workers {
        for key in worker.models.keys() {
            let mut answers = Vec::new();
            for node in &cluster.nodes {
                let mut client = node.client().await;
                let answer = client
                    .raw()
                    .raw_get(RawGetRequest {
                        key: Bytes::from(key.clone()),
                        consistency: quorums(1, 1),
                    })
                    .await
                    .map(|r| r.into_inner().value)
                    .map_err(|s| s.code());
                answers.push(answer);
            }
            assert!(
                answers.windows(2).all(|w| w[0] == w[1]),
                "{key}: replicas disagree after anti-entropy: {answers:?}"
            );
            compared += 1;
        }
    }
    println!("{compared} keys read alike from every replica after anti-entropy");
}

/// Joins and decommissions, with crashes and pauses during them, on a
/// cluster without hinted handoff (so every acknowledgement is an owner's
/// and reads at R=2 must see every write acknowledged at W=2).
#[tokio::test]
async fn generated_histories_survive_joins_and_decommissions() {
    let seed = seed();
    println!("history seed {seed}: RINGKV_HISTORY_SEED={seed} replays its choices");
    let mut rng = StdRng::seed_from_u64(seed);
    let args = ["--replica-timeout-ms", "800", "--hinted-handoff", "false"];
    let mut cluster = TestCluster::start(61, 4, &args).await;
    let mut next_index = 5u8;
    let targets = Arc::new(Mutex::new(
        cluster.nodes.iter().map(|n| n.grpc).collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_workers(seed, &targets, &stop);
    let set_targets = |nodes: &[TestNode]| {
        *targets.lock().expect("targets") = nodes.iter().map(|n| n.grpc).collect();
    };

    let mut nemesis = Vec::new();
    for _ in 0..6 {
        sleep(Duration::from_millis(rng.random_range(500..1500))).await;
        let joining = cluster.nodes.len() <= 3 || (cluster.nodes.len() < 5 && rng.random_bool(0.5));
        if joining {
            let node = cluster.spawn_joining(61, next_index, &args);
            next_index += 1;
            nemesis.push(format!("join {} @{}ms", node.node_id(), at_ms()));
            cluster.nodes.push(node);
            let newcomer = cluster.nodes.len() - 1;
            disturb(&mut cluster, newcomer, &mut rng, &mut nemesis).await;
            let members: Vec<&TestNode> = cluster.nodes.iter().collect();
            wait_stable(&cluster.nodes[0], &members, Duration::from_secs(180)).await;
            cluster.nodes[newcomer].wait_serving().await;
            set_targets(&cluster.nodes);
        } else {
            let leaving = rng.random_range(0..cluster.nodes.len());
            let observer = (leaving + 1) % cluster.nodes.len();
            nemesis.push(format!(
                "decommission {} @{}ms",
                cluster.nodes[leaving].node_id(),
                at_ms()
            ));
            common::admin()
                .decommission(
                    &cluster.nodes[observer].peer.to_string(),
                    &cluster.nodes[leaving].node_id(),
                )
                .await
                .expect("decommission accepted");
            disturb(&mut cluster, leaving, &mut rng, &mut nemesis).await;
            wait_left(
                &cluster.nodes[observer],
                &cluster.nodes[leaving],
                Duration::from_secs(180),
            )
            .await;
            let mut gone = cluster.nodes.remove(leaving);
            set_targets(&cluster.nodes);
            // Requests already sent to it may still be running.
            sleep(OP_TIMEOUT).await;
            gone.stop().await;
            let members: Vec<&TestNode> = cluster.nodes.iter().collect();
            wait_stable(&cluster.nodes[0], &members, Duration::from_secs(120)).await;
        }
    }
    sleep(Duration::from_millis(1000)).await;
    finish("joins and decommissions", seed, stop, workers, &nemesis).await;
}

/// Sometimes, while a transition runs, crashes or pauses one member: the
/// moving node itself (`mover`) or another.
async fn disturb(
    cluster: &mut TestCluster,
    mover: usize,
    rng: &mut StdRng,
    nemesis: &mut Vec<String>,
) {
    if rng.random_bool(0.3) {
        return;
    }
    sleep(Duration::from_millis(rng.random_range(100..1500))).await;
    let victim = if rng.random_bool(0.4) {
        mover
    } else {
        rng.random_range(0..cluster.nodes.len())
    };
    let fault = if rng.random_bool(0.5) {
        Fault::Kill
    } else {
        Fault::Pause
    };
    nemesis.push(format!(
        "  {fault:?} {} mid-transition @{}ms",
        cluster.nodes[victim].node_id(),
        at_ms()
    ));
    inject(&mut cluster.nodes[victim], fault, rng).await;
}
