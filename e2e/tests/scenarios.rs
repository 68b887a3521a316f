//! The end-to-end scenarios, against a real control plane built from
//! upstream Kubernetes with the pod runner as its only node. They run one at
//! a time in one process (`cargo test -p ringkv-e2e -- --test-threads=1`,
//! which `scripts/test.sh` does). Each starts from what it needs, set up by
//! [`installed`] and [`demo_with`], so any one of them runs alone by name:
//! `cargo test -p ringkv-e2e -- --exact s5_node_crash`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{api::ListParams, Api};
use ringkv_e2e::harness::{
    eventually, service_endpoints, verify, Env, Load, ServiceClient, CLUSTER, NAMESPACE,
    OPERATOR_NAMESPACE,
};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(300);

/// Whether the operator's chart and the demo cluster were installed by
/// this process.
static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// The operator, installed by its chart, and the demo cluster of
/// `examples/kvcluster.yaml`: done once per process, by whichever
/// scenario runs first.
async fn installed(env: &Env) {
    INSTALLED
        .get_or_init(|| async {
            let chart = env.root.join("charts/ringkv-operator");
            let chart = chart.to_str().expect("utf-8");
            operator_namespace(env);
            env.helm_ok(&[
                "upgrade",
                "--install",
                "ringkv-operator",
                chart,
                "-n",
                OPERATOR_NAMESPACE,
                "--wait",
                "--timeout",
                "5m",
            ]);
            env.kubectl_ok(&["apply", "-f", "examples/kvcluster.yaml", "-n", NAMESPACE]);
        })
        .await;
}

/// The operator's namespace, created unless it exists.
fn operator_namespace(env: &Env) {
    let namespaces = env.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    if !namespaces
        .lines()
        .any(|n| n == format!("namespace/{OPERATOR_NAMESPACE}"))
    {
        env.kubectl_ok(&["create", "namespace", OPERATOR_NAMESPACE]);
    }
}

/// The demo cluster, Available with `replicas` normal members: what most
/// scenarios start from.
async fn demo_with(env: &Env, replicas: usize) -> Value {
    installed(env).await;
    let asked = kvc(env)["spec"]["replicas"].as_u64();
    if asked != Some(replicas as u64) {
        env.kubectl_ok(&[
            "scale",
            "kvc/demo",
            "-n",
            NAMESPACE,
            &format!("--replicas={replicas}"),
        ]);
    }
    wait_available(env, replicas, LONG).await
}

fn kvc(env: &Env) -> Value {
    kvc_named(env, CLUSTER)
}

fn kvc_named(env: &Env, name: &str) -> Value {
    let out = env.kubectl_ok(&["get", "kvc", name, "-n", NAMESPACE, "-o", "json"]);
    serde_json::from_str(&out).expect("KVCluster JSON")
}

fn condition(kvc: &Value, type_: &str) -> Option<(String, String, String)> {
    kvc["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            )
        })
}

/// Waits until the cluster is Available with `replicas` normal members.
async fn wait_available(env: &Env, replicas: usize, deadline: Duration) -> Value {
    wait_available_named(env, CLUSTER, replicas, deadline).await
}

async fn wait_available_named(env: &Env, name: &str, replicas: usize, deadline: Duration) -> Value {
    eventually(
        &format!("{name} Available with {replicas} normal members"),
        deadline,
        || async {
            let kvc = kvc_named(env, name);
            let available = condition(&kvc, "Available").is_some_and(|c| c.0 == "True");
            let members = kvc["status"]["members"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let normal = members
                .iter()
                .filter(|m| m["ringStatus"] == "normal")
                .count();
            let settled = kvc["status"]["decommissioning"]
                .as_array()
                .is_none_or(|d| d.is_empty())
                && kvc["status"]["phase"] == "Available";
            (available && settled && normal == replicas && members.len() == replicas).then_some(kvc)
        },
    )
    .await
}

/// Four writers through the Service, once their writes are flowing.
async fn flowing_load(client: &kube::Client, prefix: &str) -> Load {
    let load = Load::start(client, prefix, 4).await;
    eventually("writes flowing", Duration::from_secs(30), || async {
        (load.count() > 200).then_some(())
    })
    .await;
    load
}

fn events(env: &Env) -> String {
    events_as(
        env,
        "custom-columns=REASON:.reason,NOTE:.note,MESSAGE:.message",
    )
}

/// The demo KVCluster's events, in kubectl's `-o` format `output`.
fn events_as(env: &Env, output: &str) -> String {
    env.kubectl_ok(&[
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        &format!("involvedObject.name={CLUSTER},involvedObject.kind=KVCluster"),
        "-o",
        output,
    ])
}

fn report(scenario: &str, started: Instant, checked: usize) {
    println!(
        "e2e scenario {scenario}: {:.1}s wall time, {checked} acknowledged writes checked",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn s1_install() {
    let started = Instant::now();
    let env = Env::get();
    let chart = env.root.join("charts/ringkv-operator");
    let chart = chart.to_str().expect("utf-8");
    env.helm_ok(&["lint", chart]);
    // The chart's manifests pass the API server's own validation.
    let rendered = env.helm_ok(&[
        "template",
        "ringkv-operator",
        chart,
        "-n",
        OPERATOR_NAMESPACE,
        "--include-crds",
    ]);
    assert!(!rendered.contains("RINGKV_SEEDS") && !rendered.contains("--seeds"));
    operator_namespace(env);
    let dry = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &rendered);
    assert!(
        dry.status.success(),
        "dry run: {}",
        String::from_utf8_lossy(&dry.stderr)
    );
    // With monitoring on, the chart renders the Prometheus Operator's
    // objects and the dashboard. (The control plane has no Prometheus
    // Operator CRDs to validate them against.)
    let monitoring = env.helm_ok(&[
        "template",
        "ringkv-operator",
        chart,
        "-n",
        OPERATOR_NAMESPACE,
        "--set",
        "monitoring.enabled=true",
    ]);
    for kind in [
        "kind: ServiceMonitor",
        "--service-monitors=true",
        "kind: PrometheusRule",
        "grafana_dashboard",
    ] {
        assert!(monitoring.contains(kind), "monitoring renders {kind}");
    }
    assert!(!rendered.contains("kind: ServiceMonitor"), "off by default");
    // With the Prometheus Operator's CRDs installed, the API server takes
    // them as they are.
    let crds = env.monitoring_crds();
    for kind in ["servicemonitors", "prometheusrules"] {
        let file = crds.join(format!("monitoring.coreos.com_{kind}.yaml"));
        env.kubectl_ok(&[
            "apply",
            "--server-side",
            "-f",
            file.to_str().expect("utf-8"),
        ]);
        env.kubectl_ok(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            &format!("crd/{kind}.monitoring.coreos.com"),
        ]);
    }
    let accepted = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &monitoring);
    assert!(
        accepted.status.success(),
        "the monitoring objects against the Prometheus Operator's CRDs: {}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    println!(
        "monitoring objects accepted: {}",
        String::from_utf8_lossy(&accepted.stdout).trim()
    );
    let kvc = demo_with(env, 3).await;
    // Monitoring turned on for real: the chart's objects are created, and
    // the operator makes the cluster a ServiceMonitor of its own.
    env.helm_ok(&[
        "upgrade",
        "ringkv-operator",
        chart,
        "-n",
        OPERATOR_NAMESPACE,
        "--reuse-values",
        "--set",
        "monitoring.enabled=true",
        "--wait",
        "--timeout",
        "5m",
    ]);
    let monitor = eventually(
        "the operator makes demo a ServiceMonitor",
        Duration::from_secs(120),
        || async {
            let out = env.kubectl(&[
                "get",
                "servicemonitor",
                &format!("{CLUSTER}-peers"),
                "-n",
                NAMESPACE,
                "-o",
                "json",
            ]);
            out.status
                .success()
                .then(|| serde_json::from_slice::<Value>(&out.stdout).expect("JSON"))
        },
    )
    .await;
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        monitor["metadata"]["ownerReferences"][0]["kind"], "KVCluster",
        "collected with the cluster"
    );
    let peers = env.kubectl_ok(&[
        "get",
        "service",
        &format!("{CLUSTER}-peers"),
        "-n",
        NAMESPACE,
        "-o",
        "json",
    ]);
    assert!(peers.contains("\"name\": \"metrics\""), "{peers}");
    println!("ServiceMonitor {CLUSTER}-peers scrapes port metrics of every node");

    let table = env.kubectl_ok(&["get", "kvc", "-n", NAMESPACE]);
    println!("{table}");
    for column in [
        "NAME", "REPLICAS", "READY", "N", "R", "W", "PHASE", "AGE", "MESSAGE",
    ] {
        assert!(table.contains(column), "kubectl get kvc shows {column}");
    }
    assert!(table.contains("Available"));
    // Seeds come from the Kubernetes API, through the nodes' own account.
    let sts = env.kubectl_ok(&["get", "statefulset", CLUSTER, "-n", NAMESPACE, "-o", "json"]);
    assert!(sts.contains("\"RINGKV_DISCOVERY\"") && sts.contains("\"kubernetes\""));
    assert!(!sts.contains("RINGKV_SEEDS"));
    assert!(sts.contains("\"serviceAccountName\": \"demo-node\""));
    // Each node pod carries the zone of the Kubernetes node it runs on.
    let zones = each_node_pod(env, "{.metadata.annotations.ringkv\\.io/zone}");
    assert_eq!(
        zones.lines().filter(|z| *z == "e2e-a").count(),
        3,
        "zones: {zones}"
    );
    peer_port_needs_the_cluster_secret(env).await;
    let operator = env.kubectl_ok(&["get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide"]);
    println!("{operator}");
    assert!(operator.contains("Running"));
    println!("members: {}", kvc["status"]["members"]);
    report("1 install", started, 0);
}

/// The operator made the cluster's Secret and fenced the peer and gossip
/// ports; a node's peer port refuses a call without the secret's token and
/// answers one signed with it, as the operator's own calls are (the
/// cluster is Available only because the operator read the ring).
async fn peer_port_needs_the_cluster_secret(env: &Env) {
    let secret = env.kubectl_ok(&[
        "get",
        "secret",
        &format!("{CLUSTER}-cluster-secret"),
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.data.secret}",
    ]);
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .expect("base64 secret");
    assert_eq!(secret.len(), 64, "32 random bytes, hex");
    let policy = env.kubectl_ok(&[
        "get",
        "networkpolicy",
        CLUSTER,
        "-n",
        NAMESPACE,
        "-o",
        "json",
    ]);
    assert!(
        policy.contains("7381") && policy.contains("7946"),
        "{policy}"
    );
    let sts = env.kubectl_ok(&["get", "statefulset", CLUSTER, "-n", NAMESPACE, "-o", "json"]);
    assert!(
        sts.contains("\"RuntimeDefault\"") && sts.contains("\"ALL\""),
        "{sts}"
    );

    let client = env.client().await;
    let peers = service_endpoints(&client, &format!("{CLUSTER}-peers"), "peer").await;
    let peer = peers.first().expect("a ready peer endpoint");
    let ring_status = |connector: ringkv_client::Connector| {
        let peer = peer.clone();
        async move { connector.ring_status(&peer).await }
    };
    let unsigned = ring_status(ringkv_client::Connector::plaintext()).await;
    assert_eq!(
        unsigned.as_ref().err().and_then(|e| e.code()),
        Some(tonic::Code::Unauthenticated),
        "an unsigned Admin call on {peer}: {unsigned:?}"
    );
    let signed =
        ring_status(ringkv_client::Connector::plaintext().with_cluster_secret(&secret, "e2e"))
            .await
            .expect("an Admin call signed with the cluster secret");
    assert_eq!(signed.members.len(), 3);
    println!("peer port {peer}: unsigned call UNAUTHENTICATED, signed call answered");
}

#[tokio::test]
async fn s2_client_through_the_service() {
    let started = Instant::now();
    let env = Env::get();
    demo_with(env, 3).await;
    let client = env.client().await;
    let endpoints = service_endpoints(&client, CLUSTER, "grpc").await;
    assert_eq!(endpoints.len(), 3, "three ready endpoints: {endpoints:?}");
    let mut service = ServiceClient::new(&client, 0);
    let mut acknowledged = std::collections::BTreeMap::new();
    for i in 0..10_000 {
        let key = format!("service-{i:05}");
        service
            .put(&key)
            .await
            .unwrap_or_else(|e| panic!("write {key}: {e}"));
        acknowledged.insert(key.clone(), ringkv_e2e::harness::value_of(&key));
    }
    let checked = verify(&client, &acknowledged).await;
    assert_eq!(checked, 10_000);
    report("2 client through the Service", started, checked);
}

#[tokio::test]
async fn s3_scale_up_under_load() {
    let started = Instant::now();
    let env = Env::get();
    demo_with(env, 3).await;
    let client = env.client().await;
    let load = flowing_load(&client, "up").await;
    env.kubectl_ok(&["scale", "kvc/demo", "-n", NAMESPACE, "--replicas=5"]);
    let kvc = wait_available(env, 5, LONG).await;
    let (acknowledged, failed) = load.stop().await;
    let owned: Vec<f64> = kvc["status"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["partitionsOwned"].as_f64().unwrap_or(0.0))
        .collect();
    let mean = owned.iter().sum::<f64>() / owned.len() as f64;
    let max = owned.iter().cloned().fold(0.0, f64::max);
    println!(
        "partitions owned after scale-up: {owned:?} (max/mean {:.3})",
        max / mean
    );
    assert!(max / mean <= 1.15, "balanced partitions");
    let checked = verify(&client, &acknowledged).await;
    println!("writes that failed during the scale-up: {failed}");
    report("3 scale up under load", started, checked);
}

/// Scales to 3 under load; with `restart_operator`, kills the operator pod
/// while the decommission runs.
/// Waits until the status records a decommission; returns its ordinals.
async fn wait_decommissioning(env: &Env) -> String {
    eventually(
        "status shows the decommission",
        Duration::from_secs(60),
        || async {
            kvc(env)["status"]["decommissioning"]
                .as_array()
                .filter(|d| !d.is_empty())
                .map(|d| format!("{d:?}"))
        },
    )
    .await
}

/// Kills the operator the way a node drain would: its pod is deleted and
/// the Deployment starts another.
fn delete_operator_pod(env: &Env) {
    env.kubectl_ok(&[
        "delete",
        "pod",
        "-n",
        OPERATOR_NAMESPACE,
        "-l",
        "app.kubernetes.io/name=ringkv-operator",
        "--wait=false",
    ]);
}

async fn scale_down(env: &Env, prefix: &str, restart_operator: bool) -> usize {
    let client = env.client().await;
    let load = flowing_load(&client, prefix).await;
    env.kubectl_ok(&["scale", "kvc/demo", "-n", NAMESPACE, "--replicas=3"]);
    let decommissioning = wait_decommissioning(env).await;
    println!("status.decommissioning: {decommissioning}");
    if restart_operator {
        delete_operator_pod(env);
        println!("operator pod deleted midway through the decommission");
    }
    wait_available(env, 3, LONG).await;
    let (acknowledged, failed) = load.stop().await;
    let events = events(env);
    println!("{events}");
    for reason in ["ScaleDownStarted", "ScaledDown"] {
        assert!(events.contains(reason), "event {reason}");
    }
    // whenScaled: Delete in the example: the removed ordinals' volumes go.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NAMESPACE);
    eventually(
        "volumes of removed nodes deleted",
        Duration::from_secs(120),
        || async {
            let names: Vec<String> = claims
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .collect();
            let gone = !names
                .iter()
                .any(|n| n == "data-demo-3" || n == "data-demo-4");
            (gone && names.iter().filter(|n| n.starts_with("data-demo-")).count() == 3)
                .then_some(())
        },
    )
    .await;
    println!("writes that failed during the scale-down: {failed}");
    verify(&client, &acknowledged).await
}

#[tokio::test]
async fn s4_scale_down_under_load() {
    let started = Instant::now();
    let env = Env::get();
    demo_with(env, 5).await;
    let mut checked = scale_down(env, "down", false).await;
    // Again, restarting the operator midway.
    env.kubectl_ok(&["scale", "kvc/demo", "-n", NAMESPACE, "--replicas=5"]);
    wait_available(env, 5, LONG).await;
    checked += scale_down(env, "down-restart", true).await;
    // Below N=3 the request is refused, and `kubectl get kvc` says so in
    // its MESSAGE column beside the phase; the three nodes stay.
    env.kubectl_ok(&["scale", "kvc/demo", "-n", NAMESPACE, "--replicas=2"]);
    let row = eventually(
        "kubectl get kvc shows the refusal",
        Duration::from_secs(60),
        || async {
            let row = env.kubectl_ok(&["get", "kvc", "demo", "-n", NAMESPACE, "--no-headers"]);
            row.contains("replicas 2 is below replicationFactor 3")
                .then_some(row)
        },
    )
    .await;
    println!("kubectl get kvc after --replicas=2: {}", row.trim());
    assert!(
        row.contains("Available"),
        "the cluster itself is fine: {row}"
    );
    let cluster = kvc(env);
    assert_eq!(cluster["status"]["phase"], "Available");
    assert_eq!(cluster["status"]["readyReplicas"], 3, "three nodes stay");
    env.kubectl_ok(&["scale", "kvc/demo", "-n", NAMESPACE, "--replicas=3"]);
    eventually(
        "the message clears once the request can be served",
        Duration::from_secs(60),
        || async {
            kvc(env)["status"]["message"]
                .as_str()
                .is_none_or(str::is_empty)
                .then_some(())
        },
    )
    .await;
    report(
        "4 scale down under load (twice, the second with an operator restart)",
        started,
        checked,
    );
}

/// What one poll of the KVCluster found wrong, if anything: the phase and
/// the MESSAGE column (`.status.phase`, `.status.message`, what `kubectl get
/// kvc` prints) against the conditions.
fn disagreement(kvc: &Value) -> Option<String> {
    let phase = kvc["status"]["phase"].as_str()?;
    let is_true = |type_: &str| condition(kvc, type_).is_some_and(|c| c.0 == "True");
    let progressing = is_true("Progressing");
    let moving = matches!(phase, "Creating" | "Blocked" | "Scaling" | "Upgrading");
    if progressing != moving {
        return Some(format!("phase {phase} with Progressing={progressing}"));
    }
    if phase == "Available" && (!is_true("Available") || is_true("Degraded")) {
        return Some("phase Available but the conditions say otherwise".into());
    }
    if phase == "Degraded" && !is_true("Degraded") {
        return Some("phase Degraded with Degraded not True".into());
    }
    if let Some((status, _, refusal)) = condition(kvc, "ScalingBlocked") {
        let message = kvc["status"]["message"].as_str().unwrap_or("");
        if status == "True" && !message.contains(&refusal) {
            return Some(format!("MESSAGE {message:?} hides the refusal {refusal:?}"));
        }
    }
    None
}

/// What a poller saw while a scenario ran.
#[derive(Default)]
struct Watched {
    polls: usize,
    disagreements: Vec<String>,
    /// Per (member, ring state version): keys received at the last poll.
    handoff_keys: std::collections::BTreeMap<(String, i64), i64>,
    /// Polls that caught a handoff with keys received and partitions left.
    mid_handoff: usize,
    regressions: Vec<String>,
    most_restarts: u64,
}

impl Watched {
    fn poll(&mut self, kvc: &Value, restarts: u64) {
        self.polls += 1;
        self.most_restarts = self.most_restarts.max(restarts);
        if let Some(wrong) = disagreement(kvc) {
            self.disagreements.push(wrong);
        }
        for member in kvc["status"]["members"].as_array().into_iter().flatten() {
            let progress = &member["handoffProgress"];
            let (Some(name), Some(version), Some(keys)) = (
                member["name"].as_str(),
                progress["stateVersion"].as_i64(),
                progress["keysReceived"].as_i64(),
            ) else {
                continue;
            };
            let complete = progress["partitionsComplete"].as_i64().unwrap_or(0);
            let total = progress["partitionsTotal"].as_i64().unwrap_or(0);
            if keys > 0 && complete < total {
                self.mid_handoff += 1;
            }
            let last = self.handoff_keys.insert((name.to_string(), version), keys);
            if last.is_some_and(|last| keys < last) {
                self.regressions.push(format!(
                    "{name} at ring version {version}: {keys} keys after {last:?}"
                ));
            }
        }
    }
}

/// How many times each (reason, message) of the KVCluster's events was
/// recorded: repeats are counted in the event, not as new objects.
fn event_counts(env: &Env) -> std::collections::BTreeMap<(String, String, String), i64> {
    let out = events_as(env, "json");
    let list: Value = serde_json::from_str(&out).expect("events JSON");
    let mut counts = std::collections::BTreeMap::new();
    for event in list["items"].as_array().into_iter().flatten() {
        let count = event["count"]
            .as_i64()
            .max(event["series"]["count"].as_i64())
            .unwrap_or(1)
            .max(1);
        let key = (
            event["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            event["reason"].as_str().unwrap_or("").to_string(),
            event["message"].as_str().unwrap_or("").to_string(),
        );
        counts.insert(key, count);
    }
    counts
}

/// The node pods' container restarts, summed.
fn node_restarts(env: &Env) -> u64 {
    each_node_pod(env, "{.status.containerStatuses[0].restartCount}")
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum()
}

/// A JSONPath `field` of every node pod, one line each.
fn each_node_pod(env: &Env, field: &str) -> String {
    env.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/name=ringkv",
        "-o",
        &format!("jsonpath={{range .items[*]}}{field}{{\"\\n\"}}{{end}}"),
    ])
}

/// The issue's scale-down taken back: 4 → 2 (N=3, so one node leaves and
/// the rest is refused), the operator killed midway, then back to 4 before
/// the node has gone. Polled all along: the table and the conditions agree
/// at every poll, handoff progress only grows, no node pod restarts, and
/// each event is recorded once.
#[tokio::test]
async fn s4b_scale_down_taken_back() {
    let started = Instant::now();
    let env = Env::get();
    demo_with(env, 4).await;
    // `kubectl get kvc` prints these two fields as PHASE and MESSAGE.
    let crd = env.kubectl_ok(&["get", "crd", "kvclusters.ringkv.io", "-o", "json"]);
    assert!(crd.contains(".status.phase") && crd.contains(".status.message"));
    let before = event_counts(env);
    let restarts_before = node_restarts(env);
    let client = env.client().await;
    let load = flowing_load(&client, "taken-back").await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut watched = Watched::default();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let restarts = node_restarts(env).saturating_sub(restarts_before);
                watched.poll(&kvc(env), restarts);
                std::thread::sleep(Duration::from_millis(300));
            }
            watched
        })
    };

    env.kubectl_ok(&["scale", "kvc/demo", "-n", NAMESPACE, "--replicas=2"]);
    wait_decommissioning(env).await;
    delete_operator_pod(env);
    env.kubectl_ok(&["scale", "kvc/demo", "-n", NAMESPACE, "--replicas=4"]);
    println!("scaled to 2, killed the operator, scaled back to 4");
    wait_available(env, 4, LONG).await;
    let (acknowledged, failed) = load.stop().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let watched = poller.join().expect("poller");

    let after = event_counts(env);
    let mut recorded: std::collections::BTreeMap<(String, String), i64> = Default::default();
    for (key, count) in &after {
        let new = count - before.get(key).copied().unwrap_or(0);
        if new > 0 {
            *recorded.entry((key.1.clone(), key.2.clone())).or_default() += new;
        }
    }
    println!("events recorded: {recorded:#?}");
    println!(
        "{} polls, {} caught a handoff midway, {} handoffs followed; most node restarts {}",
        watched.polls,
        watched.mid_handoff,
        watched.handoff_keys.len(),
        watched.most_restarts
    );
    assert!(watched.polls > 10, "the poller polled");
    assert!(
        watched.disagreements.is_empty(),
        "table and conditions disagreed: {:?}",
        watched.disagreements
    );
    assert!(
        watched.regressions.is_empty(),
        "handoff progress went back: {:?}",
        watched.regressions
    );
    assert_eq!(watched.most_restarts, 0, "a node pod restarted");
    for ((reason, message), count) in &recorded {
        assert_eq!(
            *count, 1,
            "event {reason} ({message}) recorded {count} times"
        );
    }
    let reasons: Vec<&str> = recorded.keys().map(|(r, _)| r.as_str()).collect();
    assert!(reasons.contains(&"ScaleDownStarted"), "{reasons:?}");
    assert!(
        reasons.contains(&"ScaleDownCancelled") || reasons.contains(&"NodeRejoining"),
        "the scale-down was taken back: {reasons:?}"
    );
    println!("writes that failed meanwhile: {failed}");
    let checked = verify(&client, &acknowledged).await;
    report("4b scale-down taken back", started, checked);
}

#[tokio::test]
async fn s5_node_crash() {
    let started = Instant::now();
    let env = Env::get();
    demo_with(env, 3).await;
    let client = env.client().await;
    let load = flowing_load(&client, "crash").await;
    let pid = env.crash(NAMESPACE, "demo-1");
    println!("SIGKILL to demo-1 (pid {pid})");
    eventually("demo-1 restarted", Duration::from_secs(60), || async {
        let restarts = env.jsonpath(
            "pod",
            "demo-1",
            NAMESPACE,
            "{.status.containerStatuses[0].restartCount}",
        );
        (restarts.trim().parse::<i32>().unwrap_or(0) >= 1).then_some(())
    })
    .await;
    wait_available(env, 3, LONG).await;
    let (acknowledged, failed) = load.stop().await;
    println!("writes that failed around the crash: {failed}");
    let checked = verify(&client, &acknowledged).await;
    report("5 node crash", started, checked);
}

#[tokio::test]
async fn s6_rolling_upgrade() {
    let started = Instant::now();
    let env = Env::get();
    demo_with(env, 3).await;
    let client = env.client().await;
    let before = env.starts().len();
    let load = flowing_load(&client, "upgrade").await;
    env.kubectl_ok(&[
        "patch",
        "kvc",
        CLUSTER,
        "-n",
        NAMESPACE,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"ringkv/ringkv-node:0.1.1"}}"#,
    ]);
    // One pod at a time: never two node pods unready at once.
    let mut most_unready = 0;
    let deadline = Instant::now() + LONG;
    loop {
        let pods = env.kubectl_ok(&[
            "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=ringkv", "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].image} {.status.containerStatuses[0].ready}{\"\\n\"}{end}",
        ]);
        let lines: Vec<&str> = pods.lines().filter(|l| !l.trim().is_empty()).collect();
        let unready = 3usize.saturating_sub(lines.iter().filter(|l| l.ends_with("true")).count());
        most_unready = most_unready.max(unready);
        let upgraded = lines.len() == 3 && lines.iter().all(|l| l.contains(":0.1.1 true"));
        if upgraded && condition(&kvc(env), "Available").is_some_and(|c| c.0 == "True") {
            break;
        }
        assert!(Instant::now() < deadline, "upgrade did not finish: {pods}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (acknowledged, failed) = load.stop().await;
    if env.has_runner() {
        // The runner's marker: which tag each start ran.
        let starts: Vec<String> = env.starts()[before..].to_vec();
        println!("starts during the roll:\n{}", starts.join("\n"));
        assert_eq!(
            starts
                .iter()
                .filter(|s| s.ends_with("ringkv/ringkv-node:0.1.1"))
                .count(),
            3,
            "each pod restarted once on the new tag"
        );
    }
    assert!(
        most_unready <= 1,
        "at most one pod down at a time, saw {most_unready}"
    );
    assert_eq!(failed, 0, "no W=2 write failed during the roll");
    let events = events(env);
    assert!(events.contains("UpgradingNode"), "{events}");
    let checked = verify(&client, &acknowledged).await;
    report("6 rolling upgrade", started, checked);
}

#[tokio::test]
async fn s7_invalid_specs_are_rejected() {
    let started = Instant::now();
    let env = Env::get();
    installed(env).await;
    let bad = |spec: &str| {
        format!("apiVersion: ringkv.io/v1alpha1\nkind: KVCluster\nmetadata: {{ name: bad, namespace: {NAMESPACE} }}\nspec: {spec}\n")
    };
    // Each names the field, the value and the bound.
    for (spec, field, message) in [
        (
            "{ replicas: 3, replicationFactor: 3, readQuorum: 5 }",
            "spec.readQuorum: Invalid value",
            "readQuorum 5 exceeds replicationFactor 3",
        ),
        (
            "{ replicas: 3, replicationFactor: 3, writeQuorum: 0 }",
            "spec.writeQuorum: Invalid value",
            "writeQuorum 0 is below 1",
        ),
        (
            "{ replicas: 0 }",
            "spec.replicas: Invalid value",
            "replicas 0 is below 1",
        ),
    ] {
        let output = env.kubectl_stdin(&["apply", "-f", "-"], &bad(spec));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{spec} accepted");
        assert!(
            stderr.contains(field) && stderr.contains(message),
            "{spec}: {stderr}"
        );
        println!("rejected {spec}: {}", stderr.trim());
    }
    let output = env.kubectl(&[
        "patch",
        "kvc",
        CLUSTER,
        "-n",
        NAMESPACE,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"partitions":512}}"#,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("partitions is fixed when the cluster is created: it is ")
            && stderr.contains(", not 512"),
        "{stderr}"
    );
    println!("rejected a change of partitions: {}", stderr.trim());
    report("7 invalid specs", started, 0);
}

/// A CA and a node certificate for `server_name`, as PEM.
fn certificates(server_name: &str) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "ringkv e2e CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    let mut params = CertificateParams::new(vec![server_name.to_string()]).expect("params");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn s8_tls_cluster() {
    let started = Instant::now();
    let env = Env::get();
    installed(env).await;
    const NAME: &str = "secure";
    let server_name = format!("{NAME}-peers.{NAMESPACE}.svc");
    let (ca, cert, key) = certificates(&server_name);
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, pem) in [("ca.crt", &ca), ("tls.crt", &cert), ("tls.key", &key)] {
        std::fs::write(dir.path().join(file), pem).expect("write PEM");
    }
    let from_file = |file: &str| format!("--from-file={file}={}", dir.path().join(file).display());
    env.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "secure-tls",
        "-n",
        NAMESPACE,
        &from_file("ca.crt"),
        &from_file("tls.crt"),
        &from_file("tls.key"),
    ]);
    let manifest = format!(
        "apiVersion: ringkv.io/v1alpha1\nkind: KVCluster\nmetadata: {{ name: {NAME}, namespace: {NAMESPACE} }}\n\
         spec: {{ replicas: 3, image: ringkv/ringkv-node:0.1.0, storage: {{ size: 1Gi }},\n\
         tls: {{ serverSecretName: secure-tls, clientAuth: true }} }}\n"
    );
    let applied = env.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    // Available means the operator read the ring over mutual TLS, and the
    // kubelet's probes reached health on the plaintext port.
    wait_available_named(env, NAME, 3, LONG).await;

    let client = env.client().await;
    let endpoints = eventually("TLS endpoints", Duration::from_secs(60), || async {
        let e = service_endpoints(&client, NAME, "grpc").await;
        (e.len() == 3).then_some(e)
    })
    .await;
    let connector = ringkv_client::Connector::tls(
        ca.as_bytes(),
        Some(&server_name),
        Some((cert.as_bytes(), key.as_bytes())),
    );
    let mut clients = Vec::new();
    for endpoint in &endpoints {
        clients.push(connector.client(endpoint).await.expect("TLS connect"));
    }
    let keys: Vec<String> = (0..300).map(|i| format!("tls-{i:04}")).collect();
    let n = clients.len();
    for (i, key) in keys.iter().enumerate() {
        clients[i % n]
            .put(key.as_bytes(), key.as_bytes())
            .await
            .expect("put over TLS");
    }
    let written = keys.len();
    for (i, key) in keys.iter().enumerate() {
        let got = clients[(i + 1) % n]
            .get(key.as_bytes())
            .await
            .expect("get over TLS");
        assert_eq!(
            got.map(|found| found.value).as_deref(),
            Some(key.as_bytes()),
            "{key}"
        );
    }
    let plaintext = async {
        ringkv_client::Client::connect(&endpoints[0])
            .await?
            .get(b"tls-0000")
            .await
    }
    .await;
    assert!(plaintext.is_err(), "a plaintext client is refused");
    let anonymous = ringkv_client::Connector::tls(ca.as_bytes(), Some(&server_name), None);
    let without_certificate = async {
        anonymous
            .client(&endpoints[0])
            .await?
            .get(b"tls-0000")
            .await
    }
    .await;
    assert!(
        without_certificate.is_err(),
        "clientAuth refuses a client without a certificate"
    );
    env.kubectl_ok(&[
        "delete",
        "kvc",
        NAME,
        "-n",
        NAMESPACE,
        "--wait=true",
        "--timeout=120s",
    ]);
    report("8 TLS cluster", started, written);
}

#[tokio::test]
async fn s9_delete() {
    let started = Instant::now();
    let env = Env::get();
    demo_with(env, 3).await;
    env.kubectl_ok(&[
        "delete",
        "kvc",
        CLUSTER,
        "-n",
        NAMESPACE,
        "--wait=true",
        "--timeout=120s",
    ]);
    let client = env.client().await;
    eventually("owned objects collected", Duration::from_secs(120), || async {
        let left = env.kubectl_ok(&[
            "get", "statefulsets,services,poddisruptionbudgets,serviceaccounts,roles,rolebindings,pods",
            "-n", NAMESPACE, "-l", "app.kubernetes.io/instance=demo", "-o", "name",
        ]);
        left.trim().is_empty().then_some(())
    })
    .await;
    // whenDeleted: Retain in the example: the three volumes stay.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, NAMESPACE);
    let names: Vec<String> = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    println!("volumes after delete: {names:?}");
    assert_eq!(
        names.iter().filter(|n| n.starts_with("data-demo-")).count(),
        3,
        "Retain keeps the volumes"
    );
    let events = events(env);
    assert!(events.contains("VolumesRetained"), "{events}");
    let _ = std::process::Command::new("bash")
        .arg(env.root.join("e2e/scripts/e2e-cleanup.sh"))
        .arg(&env.dir)
        .status();
    report("9 delete", started, 0);
}
