//! The reconciler's decisions against a mocked API server (tower-test) and a
//! scripted ring. A small simulated world plays the StatefulSet controller
//! and the nodes between reconciles; the scale-down and upgrade state
//! machines are interrupted at every step (the mock fails every call from
//! the Kth mutation on, as if the operator died there) and resumed by a
//! fresh reconcile. Every pod deletion, whoever makes it, is checked: the
//! node must hold no data.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use kube::{client::Body, runtime::events::Reporter, Client};
use ringkv_client::Connector;
use ringkv_operator::{
    controller::{self, Context},
    crd::KVCluster,
    metrics::Metrics,
    ring_admin::{MemberView, RingAdmin, RingAdminError, RingView},
};
use serde_json::{json, Value};

const NS: &str = "store";
const NAME: &str = "demo";

fn node(ordinal: i32) -> String {
    format!("{NAME}-{ordinal}")
}

/// Everything the API server and the nodes hold.
#[derive(Default)]
struct World {
    kvc: Value,
    /// Applied objects by API path.
    objects: BTreeMap<String, Value>,
    /// Secrets the operator created, by name: the cluster secret.
    secrets: BTreeMap<String, Value>,
    /// Pods by ordinal: (revision, ready).
    pods: BTreeMap<i32, (String, bool)>,
    /// Ring members by ordinal.
    ring: BTreeMap<i32, MemberView>,
    /// Revision of each template seen, by its JSON.
    revisions: Vec<String>,
    current_revision: String,
    sts_generation: i64,
    sts_observed: i64,
    /// Mutations left before the simulated crash; `None`: no crash.
    budget: Option<usize>,
    crashed: bool,
    mutations: usize,
    events: Vec<String>,
    violations: Vec<String>,
    pvcs: Vec<String>,
    /// Ordinals deleted by the operator, to be recreated by the world.
    restarted: Vec<i32>,
    /// Zone annotations the operator wrote, by pod name.
    zones: BTreeMap<String, String>,
    /// The Prometheus Operator's ServiceMonitor CRD is installed.
    service_monitor_crd: bool,
}

impl World {
    fn new(replicas: i32, spec: Value) -> Self {
        let mut world = World {
            kvc: json!({
                "apiVersion": "ringkv.io/v1alpha1",
                "kind": "KVCluster",
                "metadata": { "name": NAME, "namespace": NS, "uid": "uid-1", "generation": 1 },
                "spec": spec,
            }),
            ..World::default()
        };
        for o in 0..replicas {
            world.ring.insert(o, member(o, "normal"));
            world.pvcs.push(format!("data-{NAME}-{o}"));
        }
        world
    }

    fn spend(&mut self) -> bool {
        if self.crashed {
            return false;
        }
        self.mutations += 1;
        match self.budget.as_mut() {
            Some(0) => {
                self.crashed = true;
                false
            }
            Some(left) => {
                *left -= 1;
                true
            }
            None => true,
        }
    }

    fn sts(&self) -> Option<&Value> {
        self.objects.get(&format!(
            "/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}"
        ))
    }

    fn sts_replicas(&self) -> i32 {
        self.sts()
            .and_then(|s| s["spec"]["replicas"].as_i64())
            .map(|r| r as i32)
            .unwrap_or(0)
    }

    fn partition(&self) -> i32 {
        self.sts()
            .and_then(|s| s["spec"]["updateStrategy"]["rollingUpdate"]["partition"].as_i64())
            .unwrap_or(0) as i32
    }

    fn update_revision(&self) -> String {
        self.revisions.last().cloned().unwrap_or_default()
    }

    /// Removing a pod must lose no data.
    fn check_removable(&mut self, ordinal: i32, by: &str) {
        if let Some(m) = self.ring.get(&ordinal) {
            if !m.holds_no_data() {
                self.violations.push(format!(
                    "{by} removed {} while it was {}",
                    node(ordinal),
                    m.status
                ));
            }
        }
    }

    fn sts_json(&self) -> Value {
        let mut sts = self.sts().cloned().unwrap_or(Value::Null);
        sts["metadata"]["generation"] = json!(self.sts_generation);
        sts["status"] = json!({
            "observedGeneration": self.sts_observed,
            "replicas": self.pods.len(),
            "currentRevision": self.current_revision,
            "updateRevision": self.update_revision(),
        });
        sts
    }

    fn pod_list(&self) -> Value {
        let items: Vec<Value> = self
            .pods
            .iter()
            .map(|(o, (revision, ready))| {
                json!({
                    "spec": { "nodeName": "runner-0", "containers": [] },
                    "metadata": {
                        "name": node(*o), "namespace": NS,
                        "annotations": self.zones.get(&node(*o)).map(|z| json!({ "ringkv.io/zone": z })).unwrap_or(json!({})),
                        "labels": { "app.kubernetes.io/name": "ringkv", "app.kubernetes.io/instance": NAME,
                                    "controller-revision-hash": revision }
                    },
                    "status": {
                        "podIP": format!("127.0.9.{}", o + 1),
                        "conditions": [{ "type": "Ready", "status": if *ready { "True" } else { "False" } }],
                        "containerStatuses": [{
                            "name": "node", "image": "ringkv/ringkv-node", "imageID": "", "ready": *ready,
                            "restartCount": 0, "state": { "running": { "startedAt": POD_STARTED } }
                        }]
                    }
                })
            })
            .collect();
        json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items })
    }

    fn handle(&mut self, method: Method, path: &str, body: &[u8]) -> (StatusCode, Value) {
        let not_found = (
            StatusCode::NOT_FOUND,
            json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" }),
        );
        let crash = (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "simulated crash" }),
        );
        if path.contains("/events") {
            let event: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if method == Method::POST || method == Method::PATCH {
                self.events.push(format!(
                    "{}: {}",
                    event["reason"].as_str().unwrap_or(""),
                    event["note"].as_str().unwrap_or("")
                ));
            }
            return (StatusCode::OK, event);
        }
        if self.crashed && method != Method::GET {
            return crash;
        }
        let kvc_path = format!("/apis/ringkv.io/v1alpha1/namespaces/{NS}/kvclusters/{NAME}");
        match method {
            Method::GET if path.ends_with("/pods") => (StatusCode::OK, self.pod_list()),
            Method::GET if path == "/api/v1/nodes/runner-0" => (
                StatusCode::OK,
                json!({ "apiVersion": "v1", "kind": "Node",
                        "metadata": { "name": "runner-0", "labels": { "topology.kubernetes.io/zone": "zone-a" } } }),
            ),
            Method::GET if path.ends_with("/persistentvolumeclaims") => {
                let items: Vec<Value> = self
                    .pvcs
                    .iter()
                    .map(|n| json!({ "metadata": { "name": n, "namespace": NS } }))
                    .collect();
                (
                    StatusCode::OK,
                    json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {}, "items": items }),
                )
            }
            Method::GET
                if self.sts().is_some() && path.ends_with(&format!("statefulsets/{NAME}")) =>
            {
                (StatusCode::OK, self.sts_json())
            }
            Method::GET if path.contains("/secrets/") => {
                let name = path.rsplit('/').next().unwrap_or_default();
                match self.secrets.get(name) {
                    Some(secret) => (StatusCode::OK, secret.clone()),
                    None => not_found,
                }
            }
            Method::GET => not_found,
            Method::PATCH if path.contains("/servicemonitors/") && !self.service_monitor_crd => {
                not_found
            }
            _ if !self.spend() => crash,
            Method::POST if path.ends_with("/secrets") => {
                let secret: Value = serde_json::from_slice(body).expect("a Secret");
                let name = secret["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.secrets.contains_key(&name) {
                    return (
                        StatusCode::CONFLICT,
                        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "already exists" }),
                    );
                }
                self.secrets.insert(name, secret.clone());
                (StatusCode::CREATED, secret)
            }
            Method::PATCH if path == format!("{kvc_path}/status") => {
                let patch: Value = serde_json::from_slice(body).expect("merge patch");
                merge(&mut self.kvc, &patch);
                (StatusCode::OK, self.kvc.clone())
            }
            Method::PATCH if path.contains("/pods/") => {
                let patch: Value = serde_json::from_slice(body).expect("merge patch");
                let name = path.rsplit('/').next().unwrap_or_default().to_string();
                if let Some(zone) = patch["metadata"]["annotations"]["ringkv.io/zone"].as_str() {
                    self.zones.insert(name.clone(), zone.to_string());
                }
                (StatusCode::OK, json!({ "metadata": { "name": name } }))
            }
            Method::PATCH => {
                let object: Value = serde_json::from_slice(body).expect("applied object");
                if path.contains("/statefulsets/") {
                    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(0) as i32;
                    for o in replicas..self.sts_replicas() {
                        self.check_removable(o, "the operator's StatefulSet");
                    }
                    let template = object["spec"]["template"].to_string();
                    if !self.revisions.contains(&template) {
                        self.revisions.push(template.clone());
                    }
                    if self.sts().map(|s| s["spec"].clone()) != Some(object["spec"].clone()) {
                        self.sts_generation += 1;
                    }
                }
                self.objects.insert(path.to_string(), object.clone());
                (StatusCode::OK, object)
            }
            Method::DELETE if path.contains("/pods/") => {
                let name = path.rsplit('/').next().unwrap_or_default();
                let ordinal: i32 = name
                    .trim_start_matches(&format!("{NAME}-"))
                    .parse()
                    .expect("ordinal");
                self.check_removable(ordinal, "a pod deletion");
                self.pods.remove(&ordinal);
                self.restarted.push(ordinal);
                (StatusCode::OK, json!({ "metadata": { "name": name } }))
            }
            Method::DELETE if path.contains("/persistentvolumeclaims/") => {
                let name = path.rsplit('/').next().unwrap_or_default().to_string();
                self.pvcs.retain(|p| *p != name);
                (StatusCode::OK, json!({ "metadata": { "name": name } }))
            }
            _ => not_found,
        }
    }

    /// What the StatefulSet controller, the kubelet and the nodes do between
    /// two reconciles.
    fn advance(&mut self) {
        // Nodes: leaving finishes, joining completes, restarts rejoin.
        for member in self.ring.values_mut() {
            member.status = match member.status.as_str() {
                "leaving" => {
                    member.partitions_owned = 0;
                    member.partitions_next = 0;
                    "left".into()
                }
                "joining" => {
                    member.partitions_owned = 100;
                    member.partitions_next = 100;
                    "normal".into()
                }
                other => other.to_string(),
            };
            member.alive = true;
        }
        let replicas = self.sts_replicas();
        if self.sts().is_none() {
            return;
        }
        self.sts_observed = self.sts_generation;
        // Scale-down: the StatefulSet controller deletes the highest pods.
        let gone: Vec<i32> = self
            .pods
            .keys()
            .copied()
            .filter(|&o| o >= replicas)
            .collect();
        for o in gone {
            self.check_removable(o, "the StatefulSet controller");
            self.pods.remove(&o);
            self.ring.remove(&o);
        }
        // Rolling update: one outdated pod at or above the partition restarts.
        let update = self.update_revision();
        let partition = self.partition();
        if let Some((&o, _)) = self
            .pods
            .iter()
            .rev()
            .find(|(o, (rev, _))| **o >= partition && *rev != update)
        {
            self.pods.insert(o, (update.clone(), false));
            if let Some(m) = self.ring.get_mut(&o) {
                m.alive = false;
            }
        } else {
            for (rev, ready) in self.pods.values_mut() {
                if *rev == update {
                    *ready = true;
                }
            }
        }
        if self.pods.len() as i32 == replicas
            && self
                .pods
                .values()
                .all(|(rev, ready)| *rev == update && *ready)
        {
            self.current_revision = update.clone();
        }
        // Missing pods come (back): a new node joins the ring.
        for o in 0..replicas {
            if !self.pods.contains_key(&o) {
                let revision = if o >= partition {
                    update.clone()
                } else {
                    self.current_revision.clone()
                };
                self.pods.insert(o, (revision, true));
                let rejoining = self.ring.get(&o).is_none_or(|m| m.status == "left");
                if rejoining {
                    self.ring.insert(o, member(o, "joining"));
                    if !self.pvcs.contains(&format!("data-{NAME}-{o}")) {
                        self.pvcs.push(format!("data-{NAME}-{o}"));
                    }
                }
            }
        }
        if self.current_revision.is_empty() {
            self.current_revision = update;
        }
    }

    fn kvc(&self) -> KVCluster {
        serde_json::from_value(self.kvc.clone()).expect("a KVCluster")
    }

    fn normal_members(&self) -> usize {
        self.ring
            .values()
            .filter(|m| m.status == "normal" && m.alive)
            .count()
    }
}

/// Every simulated pod's node container started then, and its node
/// process half a second later.
const POD_STARTED: &str = "2026-01-01T00:00:00Z";
const NODE_GENERATION: u64 = 1_767_225_600_500;

fn member(ordinal: i32, status: &str) -> MemberView {
    let owned = if status == "normal" { 100 } else { 0 };
    MemberView {
        node_id: node(ordinal),
        status: status.into(),
        alive: true,
        generation: NODE_GENERATION,
        partitions_owned: owned,
        partitions_next: owned,
        hints_pending: 0,
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// The nodes' Admin service, answering from the world.
struct ScriptedRing(Arc<Mutex<World>>);

impl RingAdmin for ScriptedRing {
    fn ring_status<'a>(
        &'a self,
        _connector: &'a Connector,
        address: &'a str,
    ) -> BoxFuture<'a, Result<RingView, RingAdminError>> {
        Box::pin(async move {
            let world = self.0.lock().expect("world");
            if world.crashed {
                return Err(RingAdminError::Status {
                    address: address.into(),
                    message: "crashed".into(),
                });
            }
            Ok(RingView {
                state_version: 7,
                transition: world
                    .ring
                    .values()
                    .any(|m| m.status != "normal" && m.status != "left"),
                members: world
                    .ring
                    .values()
                    .map(|m| (m.node_id.clone(), m.clone()))
                    .collect(),
                handoffs: BTreeMap::new(),
            })
        })
    }

    fn decommission<'a>(
        &'a self,
        _connector: &'a Connector,
        address: &'a str,
        node_id: &'a str,
    ) -> BoxFuture<'a, Result<(), RingAdminError>> {
        Box::pin(async move {
            let mut world = self.0.lock().expect("world");
            let refused = |message: &str| RingAdminError::Decommission {
                address: address.into(),
                node_id: node_id.into(),
                message: message.into(),
            };
            if !world.spend() {
                return Err(refused("crashed"));
            }

            let members = world.ring.values().filter(|m| m.status == "normal").count();
            if members <= 3 {
                return Err(refused("would leave fewer than N"));
            }
            let member = world
                .ring
                .values_mut()
                .find(|m| m.node_id == node_id)
                .ok_or_else(|| refused("not a member"))?;
            if member.status == "normal" {
                member.status = "leaving".into();
            }
            Ok(())
        })
    }
}

/// A client whose every request the world answers.
fn context(world: Arc<Mutex<World>>) -> Context {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server_world = world.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_string();
            let body = request
                .into_body()
                .collect_bytes()
                .await
                .expect("request body");
            let (status, value) = server_world
                .lock()
                .expect("world")
                .handle(method, &path, &body);
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&value).expect("json")))
                .expect("response");
            respond.send_response(response);
        }
    });
    let client = Client::new(service, NS);
    Context {
        client: client.clone(),
        ring_admin: Arc::new(ScriptedRing(world)),
        reporter: Reporter {
            controller: "ringkv-operator".into(),
            instance: None,
        },
        metrics: Arc::new(Metrics::new()),
        max_pending_hints: 1000,
        written: Default::default(),
        service_monitors: None,
    }
}

fn spec(replicas: i32) -> Value {
    json!({ "replicas": replicas, "image": "ringkv/ringkv-node:1",
            "persistentVolumeClaimRetentionPolicy": { "whenScaled": "Delete", "whenDeleted": "Delete" } })
}

/// Reconciles and advances the world until `done` holds; returns rounds.
async fn converge(
    world: &Arc<Mutex<World>>,
    ctx: &Context,
    done: impl Fn(&World) -> bool,
) -> usize {
    for round in 1..=60 {
        let kvc = world.lock().expect("world").kvc();
        let _ = controller::apply(&kvc, ctx).await;
        {
            let mut w = world.lock().expect("world");
            w.crashed = false;
            w.budget = None;
            w.advance();
            if done(&w) {
                return round;
            }
        }
    }
    let w = world.lock().expect("world");
    panic!(
        "did not converge: replicas {} pods {:?} ring {:?} status {}",
        w.sts_replicas(),
        w.pods,
        w.ring
            .values()
            .map(|m| (&m.node_id, &m.status))
            .collect::<Vec<_>>(),
        w.kvc["status"]
    );
}

/// A world whose StatefulSet already exists with `replicas` normal nodes.
async fn running(replicas: i32) -> (Arc<Mutex<World>>, Context) {
    let world = Arc::new(Mutex::new(World::new(replicas, spec(replicas))));
    let ctx = context(world.clone());
    converge(&world, &ctx, |w| {
        w.sts_replicas() == replicas && w.pods.len() as i32 == replicas
    })
    .await;
    (world, ctx)
}

fn condition(world: &World, type_: &str) -> (String, String, String) {
    let conditions = world.kvc["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let c = conditions
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (
        c["status"].as_str().unwrap_or("").into(),
        c["reason"].as_str().unwrap_or("").into(),
        c["message"].as_str().unwrap_or("").into(),
    )
}

fn scaled_down_to_three(w: &World) -> bool {
    w.sts_replicas() == 3
        && w.pods.len() == 3
        && w.normal_members() == 3
        && w.kvc["status"]["decommissioning"]
            .as_array()
            .is_some_and(|d| d.is_empty())
}

#[tokio::test]
async fn creates_every_owned_object_with_server_side_apply() {
    let (world, ctx) = running(3).await;
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    let w = world.lock().expect("world");
    for path in [
        "/api/v1/namespaces/store/serviceaccounts/demo-node",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/store/roles/demo-node",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/store/rolebindings/demo-node",
        "/api/v1/namespaces/store/services/demo-peers",
        "/api/v1/namespaces/store/services/demo",
        "/apis/policy/v1/namespaces/store/poddisruptionbudgets/demo",
        "/apis/apps/v1/namespaces/store/statefulsets/demo",
    ] {
        let object = w
            .objects
            .get(path)
            .unwrap_or_else(|| panic!("{path} applied; have {:?}", w.objects.keys()));
        assert_eq!(
            object["metadata"]["ownerReferences"][0]["uid"], "uid-1",
            "{path} is owned"
        );
    }
    assert_eq!(condition(&w, "Available").0, "True");
    assert_eq!(w.kvc["status"]["phase"], "Available");
}

/// With `--service-monitors`, each cluster gets a ServiceMonitor where the
/// CRD exists, and a reconcile goes on without one where it does not.
#[tokio::test]
async fn a_service_monitor_is_made_where_its_crd_exists_and_skipped_where_not() {
    let path = "/apis/monitoring.coreos.com/v1/namespaces/store/servicemonitors/demo-peers";
    for crd in [false, true] {
        let world = Arc::new(Mutex::new(World::new(3, spec(3))));
        world.lock().expect("world").service_monitor_crd = crd;
        let mut ctx = context(world.clone());
        ctx.service_monitors = Some(ringkv_operator::build::ServiceMonitors {
            interval: "15s".into(),
            labels: BTreeMap::from([("release".to_string(), "prom".to_string())]),
        });
        converge(&world, &ctx, |w| {
            w.sts_replicas() == 3 && w.pods.len() == 3 && w.normal_members() == 3
        })
        .await;
        let kvc = world.lock().expect("world").kvc();
        controller::apply(&kvc, &ctx)
            .await
            .unwrap_or_else(|e| panic!("reconcile with the CRD {crd}: {e}"));
        let w = world.lock().expect("world");
        match w.objects.get(path) {
            Some(monitor) => {
                assert!(crd, "applied without the CRD");
                assert_eq!(monitor["kind"], "ServiceMonitor");
                assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
                assert_eq!(monitor["metadata"]["ownerReferences"][0]["uid"], "uid-1");
                assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
            }
            None => assert!(!crd, "no ServiceMonitor though the CRD exists"),
        }
        assert_eq!(condition(&w, "Available").0, "True");
    }
}

#[tokio::test]
async fn scale_down_decommissions_first_and_records_it() {
    let (world, ctx) = running(5).await;
    world.lock().expect("world").kvc["spec"]["replicas"] = json!(3);
    // One reconcile: intent recorded, nodes asked, nothing removed.
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    {
        let w = world.lock().expect("world");
        assert_eq!(w.kvc["status"]["decommissioning"], json!([3, 4]));
        assert_eq!(w.sts_replicas(), 5, "no pod goes before its node left");
        assert_eq!(w.ring[&3].status, "leaving");
        assert_eq!(condition(&w, "Progressing").0, "True");
        assert!(
            w.events.iter().any(|e| e.starts_with("ScaleDownStarted")),
            "{:?}",
            w.events
        );
        assert!(
            w.events
                .iter()
                .any(|e| e.starts_with("ScaleDownStarted") && e.contains("demo-3, demo-4")),
            "{:?}",
            w.events
        );
    }
    let rounds = converge(&world, &ctx, scaled_down_to_three).await;
    let w = world.lock().expect("world");
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    assert!(
        w.events.iter().any(|e| e.starts_with("ScaledDown")),
        "{:?}",
        w.events
    );
    println!(
        "scale-down 5→3 settled in {rounds} reconciles; events: {:?}",
        w.events
    );
}

#[tokio::test]
async fn scale_down_interrupted_at_every_step_never_removes_a_node_with_data() {
    // Count the mutating steps of an uninterrupted scale-down.
    let (world, ctx) = running(5).await;
    let before = world.lock().expect("world").mutations;
    world.lock().expect("world").kvc["spec"]["replicas"] = json!(3);
    converge(&world, &ctx, scaled_down_to_three).await;
    let steps = world.lock().expect("world").mutations - before;
    assert!(steps > 10, "a scale-down takes many steps ({steps})");

    for crash_at in 0..steps {
        let (world, ctx) = running(5).await;
        {
            let mut w = world.lock().expect("world");
            w.kvc["spec"]["replicas"] = json!(3);
            w.budget = Some(crash_at);
        }
        // The first reconcile dies at step `crash_at`; later ones resume.
        let kvc = world.lock().expect("world").kvc();
        let _ = controller::apply(&kvc, &ctx).await;
        {
            let mut w = world.lock().expect("world");
            w.crashed = false;
            w.budget = None;
        }
        converge(&world, &ctx, scaled_down_to_three).await;
        let w = world.lock().expect("world");
        assert!(
            w.violations.is_empty(),
            "crash at step {crash_at}: {:?}",
            w.violations
        );
    }
    println!("scale-down interrupted at each of its {steps} steps: every run finished with no node removed while holding data");
}

#[tokio::test]
async fn a_restart_between_every_reconcile_and_world_step_resumes() {
    // Crash inside every reconcile, at a different step of the scaling part
    // each time (the first six steps apply the Services, RBAC and PDB).
    let (world, ctx) = running(5).await;
    world.lock().expect("world").kvc["spec"]["replicas"] = json!(3);
    let mut finished = false;
    for round in 0..80 {
        let kvc = world.lock().expect("world").kvc();
        world.lock().expect("world").budget = Some(6 + round % 5);
        let _ = controller::apply(&kvc, &ctx).await;
        let mut w = world.lock().expect("world");
        w.crashed = false;
        w.budget = None;
        w.advance();
        if scaled_down_to_three(&w) {
            finished = true;
            break;
        }
    }
    let w = world.lock().expect("world");
    assert!(
        finished,
        "a scale-down with a crash in every reconcile still finishes"
    );
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}

#[tokio::test]
async fn flipping_back_midway_keeps_nodes_and_rejoins_the_left_one() {
    let (world, ctx) = running(5).await;
    world.lock().expect("world").kvc["spec"]["replicas"] = json!(3);
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    {
        // Node 4 finished leaving, node 3 is still leaving; the user flips back.
        let mut w = world.lock().expect("world");
        w.ring.get_mut(&4).expect("4").status = "left".into();
        w.kvc["spec"]["replicas"] = json!(5);
    }
    let rounds = converge(&world, &ctx, |w| {
        w.sts_replicas() == 5 && w.pods.len() == 5 && w.normal_members() == 5
    })
    .await;
    let w = world.lock().expect("world");
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    assert!(
        w.events
            .iter()
            .any(|e| e.starts_with("NodeRejoining: demo-4")),
        "{:?}",
        w.events
    );
    assert_eq!(w.kvc["status"]["decommissioning"], json!([]));
    assert!(
        w.events
            .iter()
            .any(|e| e.starts_with("ScaleDownCancelled") && e.contains("demo-3, demo-4")),
        "{:?}",
        w.events
    );
    println!("flip back 5→3→5 settled in {rounds} reconciles with both nodes rejoined");
}

#[tokio::test]
async fn scaling_below_n_is_blocked_with_a_condition() {
    let (world, ctx) = running(3).await;
    world.lock().expect("world").kvc["spec"]["replicas"] = json!(2);
    converge(&world, &ctx, |w| w.kvc["status"]["phase"] != json!("")).await;
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    {
        let w = world.lock().expect("world");
        assert_eq!(w.sts_replicas(), 3);
        let (status, reason, message) = condition(&w, "ScalingBlocked");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "BelowReplicationFactor")
        );
        assert!(
            message.contains("replicas 2 is below replicationFactor 3"),
            "{message}"
        );
        assert!(
            w.events.iter().any(|e| e.starts_with("ScalingBlocked")),
            "{:?}",
            w.events
        );
        assert!(
            w.ring.values().all(|m| m.status == "normal"),
            "nobody asked to leave"
        );
        assert!(
            w.kvc["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("replicas 2 is below replicationFactor 3")),
            "kubectl get kvc shows the refusal: {}",
            w.kvc["status"]
        );
    }
    // Taken back: the message clears (the status is a merge patch, so an
    // empty message must be written, not left out).
    world.lock().expect("world").kvc["spec"]["replicas"] = json!(3);
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    let w = world.lock().expect("world");
    assert_eq!(w.kvc["status"]["message"], json!(""), "{}", w.kvc["status"]);
    assert_eq!(condition(&w, "ScalingBlocked").0, "False");
}

#[tokio::test]
async fn scale_up_is_available_only_once_new_members_are_normal() {
    let (world, ctx) = running(3).await;
    world.lock().expect("world").kvc["spec"]["replicas"] = json!(5);
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    {
        let mut w = world.lock().expect("world");
        assert_eq!(w.sts_replicas(), 5);
        w.advance(); // pods 3 and 4 start and join
        assert_eq!(w.ring[&3].status, "joining");
    }
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    assert_eq!(
        condition(&world.lock().expect("world"), "Available").0,
        "False"
    );
    converge(&world, &ctx, |w| w.normal_members() == 5).await;
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    assert_eq!(
        condition(&world.lock().expect("world"), "Available").0,
        "True"
    );
}

fn upgraded(w: &World) -> bool {
    let update = w.update_revision();
    w.revisions.len() == 2
        && w.pods.values().all(|(rev, ready)| *rev == update && *ready)
        && w.current_revision == update
        && w.normal_members() == 3
}

async fn upgrade_with_crash(crash_at: Option<usize>) -> (usize, usize) {
    let (world, ctx) = running(3).await;
    let before = world.lock().expect("world").mutations;
    {
        let mut w = world.lock().expect("world");
        w.kvc["spec"]["image"] = json!("ringkv/ringkv-node:2");
        w.budget = crash_at;
    }
    let mut rounds = 0;
    let mut most_down = 0;
    loop {
        rounds += 1;
        assert!(rounds < 80, "upgrade did not finish");
        let kvc = world.lock().expect("world").kvc();
        let _ = controller::apply(&kvc, &ctx).await;
        let mut w = world.lock().expect("world");
        w.crashed = false;
        w.budget = None;
        w.advance();
        let down = w.pods.values().filter(|(_, ready)| !ready).count();
        most_down = most_down.max(down);
        if upgraded(&w) {
            assert!(w.violations.is_empty(), "{:?}", w.violations);
            return (most_down, w.mutations - before);
        }
    }
}

#[tokio::test]
async fn upgrades_roll_one_pod_at_a_time_even_when_interrupted() {
    let (most_down, steps) = upgrade_with_crash(None).await;
    assert_eq!(most_down, 1, "one pod at a time");
    for crash_at in 0..steps {
        let (most_down, _) = upgrade_with_crash(Some(crash_at)).await;
        assert_eq!(
            most_down, 1,
            "one pod at a time with a crash at step {crash_at}"
        );
    }
    println!(
        "rolling upgrade interrupted at each of its {steps} steps: never more than one pod down"
    );
}

#[tokio::test]
async fn an_upgrade_waits_for_a_healthy_ring() {
    let (world, ctx) = running(3).await;
    {
        let mut w = world.lock().expect("world");
        w.kvc["spec"]["image"] = json!("ringkv/ringkv-node:2");
    }
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    {
        let mut w = world.lock().expect("world");
        w.advance(); // the StatefulSet sees the new template; nothing rolls yet
        assert!(
            w.pods.values().all(|(_, ready)| *ready),
            "parked at the top"
        );
        w.ring.get_mut(&0).expect("0").alive = false; // a node is down
    }
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    assert_eq!(
        world.lock().expect("world").partition(),
        3,
        "no pod rolls while a member is down"
    );
    {
        let mut w = world.lock().expect("world");
        w.ring.get_mut(&0).expect("0").alive = true;
        w.ring.get_mut(&1).expect("1").hints_pending = 5_000; // it kept writes for 0
    }
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    assert_eq!(
        world.lock().expect("world").partition(),
        3,
        "no pod rolls while hints wait"
    );
    world
        .lock()
        .expect("world")
        .ring
        .get_mut(&1)
        .expect("1")
        .hints_pending = 10;
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    assert_eq!(
        world.lock().expect("world").partition(),
        2,
        "a healthy ring rolls the top pod"
    );
}

/// The upgrade gate itself, on each of its conditions alone: every pod's
/// member alive and `normal`, no partition moving, few enough hints.
#[test]
fn a_ring_is_healthy_only_when_settled_normal_alive_and_caught_up() {
    let ids = || (0..3).map(node);
    let ring = |transition: bool, changed: Option<(i32, &str, bool, u64)>| {
        let mut members: BTreeMap<String, MemberView> =
            (0..3).map(|i| (node(i), member(i, "normal"))).collect();
        if let Some((ordinal, status, alive, hints)) = changed {
            let m = members.get_mut(&node(ordinal)).expect("member");
            m.status = status.into();
            m.alive = alive;
            m.hints_pending = hints;
        }
        RingView {
            state_version: 7,
            transition,
            members,
            handoffs: BTreeMap::new(),
        }
    };
    let healthy = |view: Option<&RingView>| controller::ring_is_healthy(view, ids(), 1_000);
    assert!(healthy(Some(&ring(false, None))), "settled and normal");
    assert!(!healthy(None), "no answer from the ring");
    assert!(!healthy(Some(&ring(true, None))), "partitions moving");
    for status in ["joining", "leaving", "left"] {
        assert!(
            !healthy(Some(&ring(false, Some((1, status, true, 0))))),
            "a member {status}"
        );
    }
    assert!(
        !healthy(Some(&ring(false, Some((1, "normal", false, 0))))),
        "a member down"
    );
    assert!(
        !healthy(Some(&ring(false, Some((1, "normal", true, 1_001))))),
        "hints over the bound"
    );
    assert!(
        healthy(Some(&ring(false, Some((1, "normal", true, 1_000))))),
        "hints at the bound"
    );
    let mut missing = ring(false, None);
    missing.members.remove(&node(2));
    assert!(!healthy(Some(&missing)), "a pod whose node is not a member");
}

#[tokio::test]
async fn deletion_follows_the_volume_policy() {
    let (world, ctx) = running(3).await;
    let kvc = world.lock().expect("world").kvc();
    controller::cleanup(&kvc, &ctx).await.expect("cleanup");
    assert!(
        world.lock().expect("world").pvcs.is_empty(),
        "whenDeleted: Delete"
    );

    let (world, ctx) = running(3).await;
    world.lock().expect("world").kvc["spec"]["persistentVolumeClaimRetentionPolicy"]
        ["whenDeleted"] = json!("Retain");
    let kvc = world.lock().expect("world").kvc();
    controller::cleanup(&kvc, &ctx).await.expect("cleanup");
    let w = world.lock().expect("world");
    assert_eq!(w.pvcs.len(), 3, "whenDeleted: Retain");
    assert!(w.events.iter().any(|e| e.starts_with("VolumesRetained")));
}

#[tokio::test]
async fn an_invalid_spec_changes_nothing_and_is_a_condition_on_its_generation() {
    let mut bad = spec(3);
    bad["replicationFactor"] = json!(3);
    bad["readQuorum"] = json!(4);
    let world = Arc::new(Mutex::new(World::new(0, bad)));
    let ctx = context(world.clone());
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    let w = world.lock().expect("world");
    assert!(w.objects.is_empty(), "nothing applied");
    let (status, reason, message) = condition(&w, "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(
        message.contains("spec.readQuorum: readQuorum 4 exceeds replicationFactor 3"),
        "{message}"
    );
    assert_eq!(
        w.kvc["status"]["observedGeneration"],
        json!(1),
        "the status names the generation it judged"
    );
    assert!(
        w.events
            .iter()
            .any(|e| e.contains("readQuorum 4 exceeds replicationFactor 3")),
        "{:?}",
        w.events
    );
}

#[tokio::test]
async fn a_missing_tls_secret_changes_nothing_and_is_named() {
    let mut secure = spec(3);
    secure["tls"] = json!({ "serverSecretName": "demo-tls" });
    let world = Arc::new(Mutex::new(World::new(0, secure)));
    let ctx = context(world.clone());
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    let w = world.lock().expect("world");
    assert!(
        w.objects.is_empty(),
        "nothing applied: {:?}",
        w.objects.keys()
    );
    assert!(
        w.secrets.is_empty(),
        "no cluster Secret created: {:?}",
        w.secrets.keys()
    );
    assert!(
        w.events
            .iter()
            .any(|e| e.starts_with("TLSSecretUnavailable")
                && e.contains("TLS Secret store/demo-tls does not exist")),
        "{:?}",
        w.events
    );
}

#[tokio::test]
async fn each_pod_gets_the_zone_of_its_kubernetes_node() {
    let mut zoned = spec(3);
    zoned["zoneTopologyKey"] = json!("topology.kubernetes.io/zone");
    let world = Arc::new(Mutex::new(World::new(3, zoned)));
    let ctx = context(world.clone());
    converge(&world, &ctx, |w| w.pods.len() == 3).await;
    let kvc = world.lock().expect("world").kvc();
    controller::apply(&kvc, &ctx).await.expect("reconcile");
    let w = world.lock().expect("world");
    for o in 0..3 {
        assert_eq!(
            w.zones.get(&node(o)).map(String::as_str),
            Some("zone-a"),
            "{}",
            node(o)
        );
    }
    let sts = w.sts().expect("statefulset").to_string();
    assert!(
        sts.contains("RINGKV_ZONE_ANNOTATION"),
        "the nodes wait for the annotation"
    );
}

/// One reconcile reading a KVCluster whose spec is current but whose
/// status is `stale`'s (the watch cache one status write behind), then one
/// step of the world; returns the KVCluster as it now is.
async fn lagging_round(world: &Arc<Mutex<World>>, ctx: &Context, stale: &KVCluster) -> KVCluster {
    let fresh = world.lock().expect("world").kvc();
    let mut cached = fresh.clone();
    cached.status = stale.status.clone();
    let _ = controller::apply(&cached, ctx).await;
    world.lock().expect("world").advance();
    fresh
}

/// Every transition is one event, even when each reconcile reads a
/// KVCluster from a watch cache one status write behind: a scale-down
/// 5→3, then 3→5, then a refused 2.
#[tokio::test]
async fn each_transition_is_one_event_when_the_cache_lags() {
    let (world, ctx) = running(5).await;
    let before = world.lock().expect("world").events.len();
    let all_five =
        |w: &World| w.sts_replicas() == 5 && w.pods.len() == 5 && w.normal_members() == 5;
    let blocked = |w: &World| {
        w.kvc["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "ScalingBlocked" && c["status"] == "True")
        })
    };
    type Done<'a> = &'a dyn Fn(&World) -> bool;
    let steps: [(i32, Done); 3] = [(3, &scaled_down_to_three), (5, &all_five), (2, &blocked)];
    let mut stale = world.lock().expect("world").kvc();
    for (target, done) in steps {
        world.lock().expect("world").kvc["spec"]["replicas"] = json!(target);
        let mut rounds = 0;
        while !done(&world.lock().expect("world")) {
            rounds += 1;
            assert!(rounds <= 60, "did not converge to {target}");
            stale = lagging_round(&world, &ctx, &stale).await;
        }
    }
    // A few more reconciles with nothing new to report.
    for _ in 0..5 {
        stale = lagging_round(&world, &ctx, &stale).await;
    }
    let w = world.lock().expect("world");
    let events = &w.events[before..];
    let count = |reason: &str| {
        events
            .iter()
            .filter(|e| e.starts_with(&format!("{reason}:")))
            .count()
    };
    // Replicas 2 under N=3 keeps 3 nodes: a second scale-down, 5→3.
    for (reason, expected) in [
        ("ScaleDownStarted", 2),
        ("ScaleDownCancelled", 0),
        ("ScaledDown", 2),
        ("ScaledUp", 1),
        ("ScalingBlocked", 1),
    ] {
        assert_eq!(count(reason), expected, "{reason} in {events:#?}");
    }
    println!("events: {events:#?}");
}
