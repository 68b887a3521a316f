//! Test harness: real `ringkv-node` processes, each on its own loopback
//! address, with helpers to poll conditions against a deadline.

#![allow(dead_code)]

pub mod volume;
mod watchdog;

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::{sys::signal, unistd::Pid};
use ringkv_client::Client;
use tokio::time::{sleep, Instant};
use watchdog::Watched;

/// How long the harness waits for any one call's answer: a node that stops
/// answering fails the test's call instead of hanging it.
pub const CALL_DEADLINE: Duration = Duration::from_secs(60);

pub const GRPC_PORT: u16 = 7379;
pub const PEER_PORT: u16 = 7381;
/// The `--cluster-secret` every test node runs with, unless its test sets
/// one: the suite exercises the authenticated peer port.
pub const TEST_SECRET: &str = "ringkv-test-cluster-secret";
pub const GOSSIP_PORT: u16 = 7946;

/// Flags of a one-node cluster: one replica, quorums of one, no wait for
/// other members before the first layout.
pub const STANDALONE: [&str; 8] = [
    "--replication-factor",
    "1",
    "--read-quorum",
    "1",
    "--write-quorum",
    "1",
    "--layout-settle-ms",
    "0",
];
pub const METRICS_PORT: u16 = 9379;

/// A connector that signs Admin calls with [`TEST_SECRET`].
pub fn admin() -> ringkv_client::Connector {
    ringkv_client::Connector::plaintext().with_cluster_secret(TEST_SECRET.as_bytes(), "test")
}

/// Polls `check` until it returns `Some`, failing the test at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        // A check that hangs fails the wait at its deadline too.
        let left = until.saturating_duration_since(Instant::now());
        if let Ok(Some(value)) = tokio::time::timeout(left, check()).await {
            return value;
        }
        assert!(
            Instant::now() < until,
            "{what}: not true within {deadline:?}"
        );
        sleep(Duration::from_millis(25)).await;
    }
}

/// One `ringkv-node` process and its data dir.
pub struct TestNode {
    pub ip: Ipv4Addr,
    pub grpc: SocketAddr,
    /// The peer port: Replica and Admin.
    pub peer: SocketAddr,
    pub metrics: SocketAddr,
    pub data_dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    _tempdir: Option<tempfile::TempDir>,
    /// How the harness reaches the node: plaintext unless the test runs TLS.
    pub connector: ringkv_client::Connector,
    watched: Watched,
    /// The process's file-descriptor limit (soft and hard), as `ulimit -n`
    /// sets it; `None` to inherit the test's.
    fd_limit: Option<u64>,
}

impl TestNode {
    /// Starts a standalone node (N = R = W = 1) on `ip` with a fresh data dir
    /// and waits until it serves.
    pub async fn start(ip: Ipv4Addr, args: &[&str]) -> Self {
        let mut all = STANDALONE.to_vec();
        all.extend_from_slice(args);
        Self::start_fresh(ip, &all).await
    }

    /// Starts a node on `ip` with a fresh data dir and waits until it serves.
    pub async fn start_fresh(ip: Ipv4Addr, args: &[&str]) -> Self {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let data_dir = tempdir.path().join("db");
        let mut node = Self::unstarted(ip, &data_dir, args);
        node._tempdir = Some(tempdir);
        node.spawn().await;
        node
    }

    /// Starts a node on `ip` with a fresh data dir, without waiting for it
    /// to serve.
    pub fn spawn_unready(ip: Ipv4Addr, args: &[&str]) -> Self {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let data_dir = tempdir.path().join("db");
        let mut node = Self::unstarted(ip, &data_dir, args);
        node._tempdir = Some(tempdir);
        node.spawn_process();
        node
    }

    /// Starts a standalone node on `ip` over an existing data dir.
    pub async fn start_in(ip: Ipv4Addr, data_dir: &Path, args: &[&str]) -> Self {
        let mut all = STANDALONE.to_vec();
        all.extend_from_slice(args);
        let mut node = Self::unstarted(ip, data_dir, &all);
        node.spawn().await;
        node
    }

    fn unstarted(ip: Ipv4Addr, data_dir: &Path, args: &[&str]) -> Self {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if !args.iter().any(|a| a == "--cluster-secret") {
            args.extend(["--cluster-secret".to_string(), TEST_SECRET.to_string()]);
        }
        let mut node = Self {
            ip,
            grpc: SocketAddr::from((ip, GRPC_PORT)),
            peer: SocketAddr::from((ip, PEER_PORT)),
            metrics: SocketAddr::from((ip, METRICS_PORT)),
            data_dir: data_dir.to_path_buf(),
            args,
            child: None,
            _tempdir: None,
            connector: ringkv_client::Connector::plaintext(),
            watched: Watched::new(format!("{ip}")),
            fd_limit: None,
        };
        node.use_connector(ringkv_client::Connector::plaintext());
        node
    }

    /// The secret this node runs with.
    pub fn secret(&self) -> String {
        let at = self.args.iter().position(|a| a == "--cluster-secret");
        at.and_then(|at| self.args.get(at + 1))
            .cloned()
            .unwrap_or_default()
    }

    /// Reaches the node through `connector`, signing Admin calls with the
    /// node's secret.
    pub fn use_connector(&mut self, connector: ringkv_client::Connector) {
        self.connector = connector
            .with_cluster_secret(self.secret().as_bytes(), "test")
            .with_request_timeout(CALL_DEADLINE);
    }

    /// A channel to the peer port whose calls a node signs.
    pub async fn peer_channel(&self) -> ringkv_client::SignedChannel {
        self.connector
            .signed_channel(&self.peer.to_string(), ringkv_client::peer_auth::Role::Peer)
            .await
            .expect("connect to the peer port")
    }

    async fn spawn(&mut self) {
        self.spawn_process();
        self.wait_serving().await;
    }

    /// Runs the node under `ulimit -n limit` from its next start.
    pub fn set_fd_limit(&mut self, limit: u64) {
        self.fd_limit = Some(limit);
    }

    fn spawn_process(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringkv-node"));
        if let Some(limit) = self.fd_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe, and the closure
            // allocates nothing between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        limit,
                        limit,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        }
        let child = command
            .arg("--listen")
            .arg(self.grpc.to_string())
            .arg("--peer-listen")
            .arg(self.peer.to_string())
            .arg("--metrics-listen")
            .arg(self.metrics.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(
                (!self.args.iter().any(|a| a == "--node-id"))
                    .then(|| ["--node-id".to_string(), self.node_id()])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.args)
            .env("RINGKV_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ringkv-node");
        self.watched.set_pid(Some(child.id()));
        self.child = Some(child);
    }

    /// The running process, which the watchdog no longer kills.
    fn take_child(&mut self) -> Option<Child> {
        self.watched.set_pid(None);
        self.child.take()
    }

    /// Waits until the node serves RawKV: it is in the ring.
    pub async fn wait_serving(&self) {
        eventually(
            &format!("node {} serving", self.grpc),
            Duration::from_secs(30),
            || async { self.is_serving().await.then_some(()) },
        )
        .await;
    }

    /// Whether the health service reports RawKV as SERVING now.
    pub async fn is_serving(&self) -> bool {
        matches!(
            self.connector.is_serving(&self.grpc.to_string()).await,
            Ok(true)
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// Freezes the process (SIGSTOP): it holds its sockets and answers
    /// nothing, as a node stuck in a long GC pause or on a dead disk does.
    pub fn pause(&self) {
        signal::kill(Pid::from_raw(self.pid() as i32), signal::Signal::SIGSTOP).expect("SIGSTOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        signal::kill(Pid::from_raw(self.pid() as i32), signal::Signal::SIGCONT).expect("SIGCONT");
    }

    pub async fn client(&self) -> Client {
        self.connector
            .client(&self.grpc.to_string())
            .await
            .expect("connect to node")
    }

    /// Kills the process with SIGKILL: no flush, no clean close.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.take_child() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let pid = Pid::from_raw(self.pid() as i32);
        signal::kill(pid, signal::Signal::SIGTERM).expect("SIGTERM");
        self.wait_exit(Duration::from_secs(30)).await
    }

    /// Waits for the process to exit, polling, at most `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let mut child = self.take_child().expect("node running");
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node did not exit within {deadline:?}");
            }
            sleep(Duration::from_millis(25)).await;
        }
    }

    /// Wipes the data dir; the node must be stopped.
    pub fn wipe(&self) {
        assert!(self.child.is_none(), "stop the node first");
        std::fs::remove_dir_all(&self.data_dir).expect("wipe data dir");
    }

    /// Starts the process again without waiting for it to serve.
    pub fn respawn(&mut self) {
        assert!(self.child.is_none(), "stop or kill the node first");
        self.spawn_process();
    }

    /// Adds arguments for the next start.
    pub fn add_args(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|a| a.to_string()));
    }

    /// Sets `flag` to `value` for the next start, replacing an earlier value.
    pub fn set_arg(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(at) => self.args[at + 1] = value.to_string(),
            None => self.add_args(&[flag, value]),
        }
    }

    /// Starts the process again over the same data dir.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the node first");
        self.spawn().await;
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Resident memory of the process, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        self.status_bytes("VmRSS:")
    }

    /// The process's peak resident set size so far.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_bytes("VmHWM:")
    }

    /// The process's threads now.
    pub fn threads(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("Threads in /proc status")
    }

    /// CPU seconds the process has used, user and system.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read /proc stat");
        // Fields after the command name, which ends at the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // USER_HZ, 100 on every Linux architecture ringkv runs on.
        ticks as f64 / 100.0
    }

    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }

    /// The node's /metrics page.
    pub async fn metrics_text(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics)
            .await
            .expect("connect to metrics");
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut body = String::new();
        stream.read_to_string(&mut body).await.expect("read");
        body
    }

    /// The value of one unlabelled metric on the /metrics page.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        text.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.take_child() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Several nodes gossiping with each other, each on 127.0.`subnet`.`i`.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
}

impl TestCluster {
    /// Starts one more node on 127.0.`subnet`.`index`, seeded with the
    /// cluster's nodes, without waiting: a joining node serves only once it
    /// holds its partitions.
    pub fn spawn_joining(&self, subnet: u8, index: u8, args: &[&str]) -> TestNode {
        let ip = Ipv4Addr::new(127, 0, subnet, index);
        let seeds = self
            .nodes
            .iter()
            .map(|n| SocketAddr::from((n.ip, GOSSIP_PORT)).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let tempdir = tempfile::tempdir().expect("tempdir");
        let data_dir = tempdir.path().join("db");
        let mut all: Vec<&str> = vec!["--seeds", &seeds, "--gossip-interval-ms", "100"];
        all.extend_from_slice(args);
        let mut node = TestNode::unstarted(ip, &data_dir, &all);
        node._tempdir = Some(tempdir);
        node.spawn_process();
        node
    }

    /// Starts `count` nodes with `args` and waits until every one serves.
    pub async fn start(subnet: u8, count: u8, args: &[&str]) -> Self {
        Self::start_with(subnet, count, args, ringkv_client::Connector::plaintext()).await
    }

    /// [`TestCluster::start`], reaching the nodes through `connector`.
    pub async fn start_with(
        subnet: u8,
        count: u8,
        args: &[&str],
        connector: ringkv_client::Connector,
    ) -> Self {
        let ips: Vec<Ipv4Addr> = (1..=count)
            .map(|i| Ipv4Addr::new(127, 0, subnet, i))
            .collect();
        let seeds = ips
            .iter()
            .map(|ip| SocketAddr::from((*ip, GOSSIP_PORT)).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for ip in &ips {
            let tempdir = tempfile::tempdir().expect("tempdir");
            let data_dir = tempdir.path().join("db");
            let mut all: Vec<&str> = vec!["--seeds", &seeds, "--gossip-interval-ms", "100"];
            all.extend_from_slice(args);
            let mut node = TestNode::unstarted(*ip, &data_dir, &all);
            node._tempdir = Some(tempdir);
            node.use_connector(connector.clone());
            node.spawn_process();
            nodes.push(node);
        }
        for node in &nodes {
            node.wait_serving().await;
        }
        let cluster = Self { nodes };
        cluster.wait_refilled().await;
        cluster
    }

    /// Waits until the first node sees every node alive and none refilling.
    /// A node reports SERVING once its refill is over, or after the gossip
    /// settle limit; tests that kill a node at once need the former, or the
    /// others keep refilling from the dead node.
    pub async fn wait_refilled(&self) {
        let endpoint = self.nodes[0].peer.to_string();
        let connector = self.nodes[0].connector.clone();
        let count = self.nodes.len();
        // A setup step, not a measured one: under CI's load a fresh
        // cluster's first gossip rounds and refills once took over 30 s.
        eventually(
            "every node alive and refilled",
            Duration::from_secs(60),
            || {
                let (endpoint, connector) = (endpoint.clone(), connector.clone());
                async move {
                    let status = connector.cluster_status(&endpoint).await.ok()?;
                    let ready = status
                        .members
                        .iter()
                        .filter(|m| m.alive && m.partitions_refilling == 0)
                        .count();
                    (ready == count).then_some(())
                }
            },
        )
        .await;
    }

    /// Waits until every node sees every other alive: what a test needs
    /// before it coordinates quorum requests through each of them.
    pub async fn wait_all_alive(&self) {
        for observer in 0..self.nodes.len() {
            for node in (0..self.nodes.len()).filter(|n| *n != observer) {
                self.wait_alive(observer, node, true).await;
            }
        }
    }

    /// Waits until `observer` sees `node` as alive (or dead).
    pub async fn wait_alive(&self, observer: usize, node: usize, alive: bool) {
        let endpoint = self.nodes[observer].peer.to_string();
        let connector = self.nodes[observer].connector.clone();
        let id = self.nodes[node].node_id();
        eventually(
            &format!("{id} alive={alive} as seen by node {observer}"),
            Duration::from_secs(30),
            || {
                let (endpoint, id, connector) = (endpoint.clone(), id.clone(), connector.clone());
                async move {
                    let status = connector.cluster_status(&endpoint).await.ok()?;
                    status
                        .members
                        .iter()
                        .any(|m| m.node_id == id && m.alive == alive)
                        .then_some(())
                }
            },
        )
        .await;
    }
}

impl TestNode {
    /// `--node-id` if the test gave one, else `test-IP`.
    pub fn node_id(&self) -> String {
        let given = self.args.iter().position(|a| a == "--node-id");
        given
            .and_then(|at| self.args.get(at + 1).cloned())
            .unwrap_or_else(|| format!("test-{}", self.ip))
    }

    /// This node's own record of `key`, read through the replica API.
    pub async fn replica_record(&self, key: &[u8]) -> Option<ringkv_node::Siblings> {
        let record = self.replica_bytes(key).await;
        (!record.is_empty()).then(|| ringkv_node::Siblings::decode(&record).expect("decodes"))
    }

    /// This node's own encoded record of `key`; empty when it has none.
    pub async fn replica_bytes(&self, key: &[u8]) -> bytes::Bytes {
        self.replica_client()
            .await
            .read(ringkv_client::proto::ReplicaReadRequest {
                key: bytes::Bytes::copy_from_slice(key),
            })
            .await
            .expect("replica read")
            .into_inner()
            .record
    }

    /// Compacts this node's data now, through the Admin service.
    pub async fn compact(&self) -> ringkv_client::proto::CompactResponse {
        admin()
            .compact(&self.peer.to_string())
            .await
            .expect("compact")
    }

    /// The ring state this node holds.
    pub async fn ring_state(&self) -> ringkv_node::RingState {
        let json = self
            .replica_client()
            .await
            .get_layout(ringkv_client::proto::GetLayoutRequest {})
            .await
            .expect("get layout")
            .into_inner()
            .layout_json;
        serde_json::from_str(&json).expect("a ring state")
    }

    /// Sends this node one replica write: a hint for `hint_for` when set,
    /// with `metadata` such as `ringkv-forward-hops`.
    pub async fn replica_apply(
        &self,
        key: &[u8],
        record: bytes::Bytes,
        hint_for: Option<String>,
        metadata: &[(&'static str, u64)],
    ) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(ringkv_client::proto::ReplicaApplyRequest {
            key: bytes::Bytes::copy_from_slice(key),
            record,
            hint_for: hint_for.unwrap_or_default(),
        });
        for (name, value) in metadata {
            request.metadata_mut().insert(*name, (*value).into());
        }
        self.replica_client().await.apply(request).await.map(|_| ())
    }

    /// The node's Replica service, called as a peer would.
    pub async fn replica_client(
        &self,
    ) -> ringkv_client::proto::replica_client::ReplicaClient<ringkv_client::SignedChannel> {
        // Records of up to --max-record-bytes, as peers read them.
        ringkv_client::proto::replica_client::ReplicaClient::new(self.peer_channel().await)
            .max_decoding_message_size(usize::MAX)
    }
}

/// The value a read of `key` through `client` returns; `None` when the key
/// holds none.
pub async fn value_of(client: &mut Client, key: &[u8]) -> Option<bytes::Bytes> {
    client.get(key).await.expect("get").map(|found| found.value)
}

/// The admin view of one node.
pub async fn ring_status(node: &TestNode) -> Option<ringkv_client::proto::RingStatusResponse> {
    node.connector
        .ring_status(&node.peer.to_string())
        .await
        .ok()
}

/// Waits until `observer` reports `node` as left.
pub async fn wait_left(observer: &TestNode, node: &TestNode, deadline: Duration) {
    let id = node.node_id();
    eventually(&format!("{id} reports left"), deadline, || {
        let id = id.clone();
        async move {
            let status = ring_status(observer).await?;
            status
                .members
                .iter()
                .any(|m| m.node_id == id && m.status == "left")
                .then_some(())
        }
    })
    .await;
}

/// Waits until `observer` sees no transition and exactly `members` normal,
/// live members, all on its ring state version.
pub async fn wait_stable(observer: &TestNode, members: &[&TestNode], deadline: Duration) {
    let ids: std::collections::BTreeSet<String> = members.iter().map(|n| n.node_id()).collect();
    eventually("the ring settles", deadline, || {
        let ids = ids.clone();
        async move {
            let status = ring_status(observer).await?;
            let normal: std::collections::BTreeSet<String> = status
                .members
                .iter()
                .filter(|m| m.alive && m.status == "normal" && m.partitions_owned > 0)
                .map(|m| m.node_id.clone())
                .collect();
            let agree = status
                .members
                .iter()
                .filter(|m| ids.contains(&m.node_id))
                .all(|m| m.layout_version == status.state_version);
            (!status.transition && normal == ids && agree).then_some(())
        }
    })
    .await;
}

/// Waits until every partition's owners report equal hash trees; returns how
/// long that took.
pub async fn wait_equal_trees(
    nodes: &[&TestNode],
    partitions: u32,
    deadline: Duration,
) -> Duration {
    use ringkv_client::proto::{replica_client::ReplicaClient, PartitionTreesRequest};
    let started = Instant::now();
    let all: Vec<u32> = (0..partitions).collect();
    eventually(
        "every partition's replicas have equal hash trees",
        deadline,
        || {
            let all = all.clone();
            async move {
                let mut trees: Vec<std::collections::BTreeMap<u32, Vec<u64>>> = Vec::new();
                for node in nodes {
                    let response = ReplicaClient::new(node.peer_channel().await)
                        .partition_trees(PartitionTreesRequest {
                            partitions: all.clone(),
                        })
                        .await
                        .ok()?
                        .into_inner();
                    trees.push(
                        response
                            .trees
                            .into_iter()
                            .map(|t| (t.partition, t.buckets))
                            .collect(),
                    );
                }
                // Every node here owns every partition (N equals the node count).
                let complete = trees.iter().all(|t| t.len() == all.len());
                (complete && trees.windows(2).all(|w| w[0] == w[1])).then_some(())
            }
        },
    )
    .await;
    started.elapsed()
}

/// A read of `key` at R=`r`.
pub fn get_at(key: &str, r: u32) -> ringkv_client::proto::RawGetRequest {
    ringkv_client::proto::RawGetRequest {
        key: bytes::Bytes::from(key.to_string()),
        consistency: Some(ringkv_client::proto::Consistency {
            read_quorum: Some(r),
            write_quorum: None,
        }),
    }
}

/// A write of `key` at W=`w`.
pub fn put_at(key: &str, value: &str, w: u32) -> ringkv_client::proto::RawPutRequest {
    ringkv_client::proto::RawPutRequest {
        key: bytes::Bytes::from(key.to_string()),
        value: bytes::Bytes::from(value.to_string()),
        consistency: Some(ringkv_client::proto::Consistency {
            read_quorum: None,
            write_quorum: Some(w),
        }),
        ..Default::default()
    }
}

/// A batch writing `value` under each of `keys` at W=`w`.
pub fn batch_put_at(
    keys: impl IntoIterator<Item = String>,
    value: &str,
    w: u32,
) -> ringkv_client::proto::RawBatchPutRequest {
    ringkv_client::proto::RawBatchPutRequest {
        pairs: keys
            .into_iter()
            .map(|key| ringkv_client::proto::KvPair {
                key: bytes::Bytes::from(key),
                value: bytes::Bytes::from(value.to_string()),
                ..Default::default()
            })
            .collect(),
        consistency: Some(ringkv_client::proto::Consistency {
            read_quorum: None,
            write_quorum: Some(w),
        }),
        ttl_seconds: 0,
    }
}

/// The owners of `key` in the current layout of `state`.
pub fn owners_of(state: &ringkv_node::RingState, key: &str) -> Vec<String> {
    let p = state.current.partition_for_key(key.as_bytes());
    state
        .current
        .preference_list(p)
        .expect("owners")
        .into_iter()
        .map(String::from)
        .collect()
}
