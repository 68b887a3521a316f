//! What the scenarios share: one control plane, one pod runner, kubectl
//! and helm, the cluster's Service endpoints, and a load generator that
//! remembers every acknowledged write.
//!
//! Scenarios run in order in one process (`--test-threads=1`), each
//! building on the last, as an operator's user would: install, use, scale,
//! crash, upgrade, delete.

use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{api::ListParams, Api, Client};
use ringkv_client::proto::{Consistency, RawGetRequest, RawPutRequest};

pub const NAMESPACE: &str = "default";
pub const CLUSTER: &str = "demo";
pub const OPERATOR_NAMESPACE: &str = "ringkv-system";

/// The control plane and the runner, started once per test process; or,
/// with `RINGKV_E2E_KUBECONFIG` set, an existing cluster such as kind's
/// (`e2e/kind/`), with kubectl and helm from PATH.
pub struct Env {
    pub root: PathBuf,
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub target: PathBuf,
    pub kubeconfig: PathBuf,
    pub runner_state: PathBuf,
    /// The kind node container when running on kind.
    pub kind_node: Option<String>,
}

static ENV: OnceLock<Env> = OnceLock::new();

fn run_script(script: &Path, args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed",
        script.display()
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl Env {
    /// Builds (or finds cached) the control plane, starts it, and starts the
    /// pod runner.
    pub fn get() -> &'static Env {
        ENV.get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("workspace root")
                .to_path_buf();
            if let Ok(kubeconfig) = std::env::var("RINGKV_E2E_KUBECONFIG") {
                return Env::external(root, PathBuf::from(kubeconfig));
            }
            let started = Instant::now();
            let bin = run_script(&root.join("e2e/scripts/build-controlplane.sh"), &[]);
            let bin = PathBuf::from(bin.lines().last().expect("bin dir"));
            let target = std::env::current_exe()
                .expect("test binary")
                .parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_path_buf();
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            let dir = PathBuf::from(home).join(".cache/ringkv/e2e-run");
            // Whatever a previous run left behind goes first.
            let _ = Command::new("bash")
                .arg(root.join("e2e/scripts/e2e-cleanup.sh"))
                .arg(&dir)
                .status();
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("e2e dir");
            let cp = dir.join("controlplane");
            run_script(
                &root.join("e2e/scripts/controlplane.sh"),
                &["start", cp.to_str().expect("utf-8 path")],
            );
            let kubeconfig = cp.join("admin.kubeconfig");
            let runner_state = dir.join("runner");
            let log = std::fs::File::create(dir.join("runner.log")).expect("runner log");
            let runner = Command::new(target.join("ringkv-pod-runner"))
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--state-dir")
                .arg(&runner_state)
                .arg("--image")
                .arg(format!(
                    "ringkv/ringkv-node={}",
                    target.join("ringkv-node").display()
                ))
                .arg("--image")
                .arg(format!(
                    "ringkv/ringkv-operator={}",
                    target.join("ringkv-operator").display()
                ))
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start ringkv-pod-runner (build it first: scripts/test.sh does)");
            std::fs::write(dir.join("runner.pid"), runner.id().to_string()).expect("pid file");
            // The runner outlives every scenario; this thread reaps it.
            let mut runner = runner;
            std::thread::spawn(move || {
                let _ = runner.wait();
            });
            println!(
                "e2e: control plane (bin {}) and pod runner up in {:?}; state in {}",
                bin.display(),
                started.elapsed(),
                dir.display()
            );
            Env {
                root,
                dir,
                bin,
                target,
                kubeconfig,
                runner_state,
                kind_node: None,
            }
        })
    }

    fn external(root: PathBuf, kubeconfig: PathBuf) -> Env {
        let dir = std::env::temp_dir().join("ringkv-e2e-external");
        let _ = std::fs::create_dir_all(&dir);
        Env {
            root,
            runner_state: dir.join("runner"),
            dir,
            // Empty: kubectl and helm come from PATH.
            bin: PathBuf::new(),
            target: PathBuf::new(),
            kubeconfig,
            kind_node: std::env::var("RINGKV_E2E_KIND_NODE").ok(),
        }
    }

    /// Whether pods run through the pod runner (so its logs can be read).
    pub fn has_runner(&self) -> bool {
        self.kind_node.is_none() && !self.bin.as_os_str().is_empty()
    }

    /// SIGKILL to the node process of `pod`, as a crash: through the
    /// runner's pid file, or through crictl on the kind node.
    pub fn crash(&self, namespace: &str, pod: &str) -> String {
        if let Some(node) = &self.kind_node {
            let script = format!(
                "id=$(crictl ps -q --name node --label io.kubernetes.pod.name={pod} --label io.kubernetes.pod.namespace={namespace}); \
                 pid=$(crictl inspect --output go-template --template '{{{{.info.pid}}}}' $id); kill -9 $pid; echo $pid"
            );
            let output = Command::new("docker")
                .args(["exec", node, "sh", "-c", &script])
                .output()
                .expect("docker exec");
            assert!(
                output.status.success(),
                "crash via crictl: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            return String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        let pid = self
            .container_pid(namespace, pod)
            .expect("the pod's process runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL");
        pid.to_string()
    }

    fn tool(&self, name: &str, args: &[&str]) -> Output {
        Command::new(self.program(name))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"))
            .current_dir(&self.root)
            .output()
            .unwrap_or_else(|e| panic!("running {name}: {e}"))
    }

    /// kubectl; its output whatever the outcome.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.tool("kubectl", args)
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// kubectl with `stdin`; its output.
    /// A tool from the control plane's bin dir, or from PATH on kind.
    fn program(&self, name: &str) -> PathBuf {
        if self.bin.as_os_str().is_empty() {
            PathBuf::from(name)
        } else {
            self.bin.join(name)
        }
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(self.program("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// The Prometheus Operator's CRDs, generated from its API types
    /// (`e2e/scripts/build-monitoring-crds.sh`, cached).
    pub fn monitoring_crds(&self) -> PathBuf {
        PathBuf::from(run_script(
            &self.root.join("e2e/scripts/build-monitoring-crds.sh"),
            &[],
        ))
    }

    pub fn helm_ok(&self, args: &[&str]) -> String {
        let output = self.tool("helm", args);
        assert!(
            output.status.success(),
            "helm {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub async fn client(&self) -> Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("client config");
        Client::try_from(config).expect("client")
    }

    /// Every container start the runner recorded: `time ns/pod container image`.
    pub fn starts(&self) -> Vec<String> {
        std::fs::read_to_string(self.runner_state.join("starts.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The pid of a running container, from the runner's pid file.
    pub fn container_pid(&self, namespace: &str, pod: &str) -> Option<i32> {
        let pods = std::fs::read_dir(self.runner_state.join("pods")).ok()?;
        let prefix = format!("{namespace}_{pod}_");
        for entry in pods.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                if let Ok(pid) = std::fs::read_to_string(entry.path().join("node.pid")) {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        if Path::new(&format!("/proc/{pid}")).exists() {
                            return Some(pid);
                        }
                    }
                }
            }
        }
        None
    }

    /// A custom resource's field through kubectl's jsonpath.
    pub fn jsonpath(&self, kind: &str, name: &str, namespace: &str, path: &str) -> String {
        let output = self.kubectl(&[
            "get",
            kind,
            name,
            "-n",
            namespace,
            "-o",
            &format!("jsonpath={path}"),
        ]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// Polls `check` until it yields a value or `deadline` passes.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Ready `ip:port` addresses behind a Service, from its EndpointSlices, as
/// a gRPC client without kube-proxy would find them.
pub async fn service_endpoints(client: &Client, service: &str, port_name: &str) -> Vec<String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let Ok(list) = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
    else {
        return Vec::new();
    };
    let mut addresses = Vec::new();
    for slice in list.items {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(port_name))
            .and_then(|p| p.port);
        let Some(port) = port else { continue };
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(false);
            if ready {
                addresses.extend(endpoint.addresses.iter().map(|a| format!("{a}:{port}")));
            }
        }
    }
    addresses.sort();
    addresses
}

/// Writers that put unique keys through the Service and remember which
/// writes were acknowledged.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub acknowledged: Arc<Mutex<BTreeMap<String, Bytes>>>,
    pub failed: Arc<AtomicU64>,
    /// The first errors, for the report of a failed scenario.
    pub errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub fn value_of(key: &str) -> Bytes {
    let mut value = key.as_bytes().to_vec();
    value.resize(256, b'.');
    Bytes::from(value)
}

impl Load {
    /// `writers` tasks writing `prefix-W-N` keys at W=2.
    pub async fn start(client: &Client, prefix: &str, writers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (stop, acknowledged, failed) = (stop.clone(), acknowledged.clone(), failed.clone());
            let errors = errors.clone();
            let client = client.clone();
            let prefix = prefix.to_string();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut service = ServiceClient::new(&client, w);
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}-{w}-{n:07}");
                    n += 1;
                    match service.put(&key).await {
                        Ok(()) => {
                            acknowledged
                                .lock()
                                .expect("ledger")
                                .insert(key.clone(), value_of(&key));
                        }
                        Err(error) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut errors) = errors.lock() {
                                if errors.len() < 20 {
                                    errors.push(error);
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
        }
        Self {
            stop,
            acknowledged,
            failed,
            errors,
            tasks,
        }
    }

    pub fn count(&self) -> usize {
        self.acknowledged.lock().expect("ledger").len()
    }

    /// Stops the writers; the acknowledged writes.
    pub async fn stop(self) -> (BTreeMap<String, Bytes>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let acknowledged = self.acknowledged.lock().expect("ledger").clone();
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            println!(
                "first write errors: {:#?}",
                self.errors.lock().expect("errors")
            );
        }
        (acknowledged, failed)
    }
}

fn consistency(r: u32, w: u32) -> Option<Consistency> {
    Some(Consistency {
        read_quorum: Some(r),
        write_quorum: Some(w),
    })
}

/// A client-side view of the Service: its ready endpoints, refreshed every
/// second or after a failure, and one connection per endpoint.
pub struct ServiceClient {
    client: Client,
    endpoints: Vec<String>,
    refreshed: Option<Instant>,
    connections: BTreeMap<String, ringkv_client::Client>,
    next: usize,
}

impl ServiceClient {
    pub fn new(client: &Client, start: usize) -> Self {
        Self {
            client: client.clone(),
            endpoints: Vec::new(),
            refreshed: None,
            connections: BTreeMap::new(),
            next: start,
        }
    }

    async fn refresh(&mut self, force: bool) {
        let stale = self
            .refreshed
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        if force || stale || self.endpoints.is_empty() {
            self.endpoints = service_endpoints(&self.client, CLUSTER, "grpc").await;
            self.refreshed = Some(Instant::now());
            let live = self.endpoints.clone();
            self.connections.retain(|address, _| live.contains(address));
        }
    }

    /// One write at W=2. A connection that cannot be made (an endpoint that
    /// just went away) moves on to the next endpoint, as a client-side load
    /// balancer would; an answer from a node is final.
    pub async fn put(&mut self, key: &str) -> Result<(), String> {
        let mut last = String::from("no ready endpoints");
        for attempt in 0..6 {
            self.refresh(attempt > 0).await;
            if self.endpoints.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            self.next = (self.next + 1) % self.endpoints.len();
            let address = self.endpoints[self.next].clone();
            if !self.connections.contains_key(&address) {
                match ringkv_client::Client::connect(&address).await {
                    Ok(kv) => {
                        self.connections.insert(address.clone(), kv);
                    }
                    Err(error) => {
                        last = error.to_string();
                        continue;
                    }
                }
            }
            let Some(kv) = self.connections.get_mut(&address) else {
                continue;
            };
            let request = RawPutRequest {
                key: Bytes::from(key.to_string()),
                value: value_of(key),
                consistency: consistency(2, 2),
                ..Default::default()
            };
            match kv.raw().raw_put(request).await {
                Ok(_) => return Ok(()),
                // Not sent: the connection broke before the request went out.
                Err(status)
                    if status.code() == tonic::Code::Unavailable && is_transport(&status) =>
                {
                    self.connections.remove(&address);
                    last = format!("{address}: {status}");
                }
                Err(status) => return Err(format!("{address}: {status}")),
            }
        }
        Err(last)
    }
}

/// A tonic status made by the transport rather than sent by a node.
fn is_transport(status: &tonic::Status) -> bool {
    let message = status.message();
    message.contains("transport error")
        || message.contains("connect error")
        || message.contains("connection")
        || message.contains("Connection")
        || message.contains("error trying to connect")
}

/// Reads every acknowledged write back at R=2 through the Service; the
/// number checked.
pub async fn verify(client: &Client, acknowledged: &BTreeMap<String, Bytes>) -> usize {
    let endpoints = eventually("ready endpoints", Duration::from_secs(60), || async {
        let e = service_endpoints(client, CLUSTER, "grpc").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    let mut clients = Vec::new();
    for address in &endpoints {
        clients.push(
            ringkv_client::Client::connect(address)
                .await
                .expect("connect"),
        );
    }
    for (i, (key, value)) in acknowledged.iter().enumerate() {
        let kv = &mut clients[i % endpoints.len()];
        let got = kv
            .raw()
            .raw_get(RawGetRequest {
                key: Bytes::from(key.clone()),
                consistency: consistency(2, 2),
            })
            .await
            .unwrap_or_else(|status| panic!("reading {key}: {status}"))
            .into_inner();
        assert_eq!(&got.value, value, "acknowledged write {key} lost");
    }
    acknowledged.len()
}
