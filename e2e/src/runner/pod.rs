//! One pod's life on the runner: volumes, environment, a process per
//! container, probes, restarts, status, and graceful termination.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Container, Pod},
    jiff::Timestamp,
};
use kube::{
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    Api, ResourceExt,
};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use super::{
    env::{self, PodFields},
    probe,
    process::{self, Mount},
    volumes, Runner, RunnerError,
};

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What the status reports about one container.
#[derive(Clone, Debug, Default)]
struct ContainerStatus {
    name: String,
    image: String,
    binary: String,
    ready: bool,
    running_since: Option<String>,
    waiting: Option<(String, String)>,
    restart_count: i32,
    last_exit: Option<Value>,
}

struct Shared {
    containers: Mutex<Vec<ContainerStatus>>,
    changed: Notify,
}

impl Shared {
    fn update(&self, index: usize, f: impl FnOnce(&mut ContainerStatus)) {
        if let Ok(mut containers) = self.containers.lock() {
            if let Some(status) = containers.get_mut(index) {
                f(status);
            }
        }
        self.changed.notify_one();
    }
}

/// Runs `pod` until it is deleted; `updates` carries each newer version.
pub async fn run(runner: Arc<Runner>, pod: Pod, mut updates: watch::Receiver<Pod>) {
    let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let ip = match runner.allocate_ip() {
        Ok(ip) => ip,
        Err(error) => {
            tracing::error!(pod = %name, %error, "no address for the pod");
            return;
        }
    };
    tracing::info!(pod = %name, %ip, "starting pod");
    let pod_dir = runner.state_dir.join("pods").join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ));
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let shared = Arc::new(Shared {
        containers: Mutex::new(
            containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    waiting: Some(("ContainerCreating".into(), String::new())),
                    ..ContainerStatus::default()
                })
                .collect(),
        ),
        changed: Notify::new(),
    });
    let (terminate_tx, terminate_rx) = watch::channel::<Option<Duration>>(None);
    let reporter = tokio::spawn(report_status(
        runner.clone(),
        pod.clone(),
        ip.clone(),
        shared.clone(),
    ));

    let started = prepare_and_start(
        &runner,
        &pod,
        &pod_dir,
        &ip,
        &containers,
        &shared,
        &terminate_rx,
    )
    .await;
    let tasks = match started {
        Ok(tasks) => tasks,
        Err(error) => {
            tracing::warn!(pod = %name, %error, "pod cannot start");
            for index in 0..containers.len() {
                let message = error.to_string();
                shared.update(index, |s| {
                    s.waiting = Some(("CreateContainerError".into(), message))
                });
            }
            Vec::new()
        }
    };

    // Wait for the deletion request.
    let grace = loop {
        let current = updates.borrow_and_update().clone();
        if current.metadata.deletion_timestamp.is_some() {
            let seconds = current
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| {
                    current
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(30);
            break Duration::from_secs(seconds.max(0) as u64);
        }
        if updates.changed().await.is_err() {
            break Duration::ZERO;
        }
    };
    tracing::info!(pod = %name, ?grace, "stopping pod");
    let _ = terminate_tx.send(Some(grace));
    for task in tasks {
        let _ = task.await;
    }
    reporter.abort();
    let pods: Api<Pod> =
        Api::namespaced(runner.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(error) = pods.delete(&pod.name_any(), &params).await {
        tracing::debug!(pod = %name, %error, "final deletion");
    }
    let _ = std::fs::remove_dir_all(pod_dir.join("volumes"));
    // The address stays on `lo` until the run ends: a client still holding
    // it gets "connection refused", as from a pod that is gone, rather than
    // whatever the host's default route leads to.
    tracing::info!(pod = %name, "pod gone");
}

async fn prepare_and_start(
    runner: &Arc<Runner>,
    pod: &Pod,
    pod_dir: &PathBuf,
    ip: &str,
    containers: &[Container],
    shared: &Arc<Shared>,
    terminate: &watch::Receiver<Option<Duration>>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, RunnerError> {
    std::fs::create_dir_all(pod_dir)
        .map_err(RunnerError::io(format!("creating {}", pod_dir.display())))?;
    let volumes = volumes::prepare(runner, pod, pod_dir).await?;
    let kubeconfig = volumes::write_kubeconfig(runner, pod, pod_dir).await?;
    let namespace = pod.namespace().unwrap_or_default();
    let restart_policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    let grace = Duration::from_secs(
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64,
    );

    let mut tasks = Vec::new();
    for (index, container) in containers.iter().enumerate() {
        let image = container.image.clone().unwrap_or_default();
        let binary = runner
            .binary_for(&image)
            .ok_or_else(|| RunnerError::Unsupported(format!("no binary for image {image}")))?;
        // Secret and ConfigMap keys for valueFrom, fetched up front.
        let mut keys = Vec::new();
        for var in container.env.iter().flatten() {
            let source = var.value_from.as_ref();
            if let Some(r) = source.and_then(|s| s.config_map_key_ref.as_ref()) {
                keys.push((
                    r.name.clone(),
                    r.key.clone(),
                    false,
                    volumes::key(runner, &namespace, &r.name, &r.key, false).await,
                ));
            }
            if let Some(r) = source.and_then(|s| s.secret_key_ref.as_ref()) {
                keys.push((
                    r.name.clone(),
                    r.key.clone(),
                    true,
                    volumes::key(runner, &namespace, &r.name, &r.key, true).await,
                ));
            }
        }
        let lookup = |name: &str, key: &str, secret: bool| {
            keys.iter()
                .find(|(n, k, s, _)| n == name && k == key && *s == secret)
                .and_then(|(_, _, _, v)| v.clone())
        };
        let fields = PodFields {
            pod,
            ip,
            node: &runner.node_name,
        };
        let mut environment: Vec<(String, String)> =
            env::container_env(container, &fields, &lookup)
                .into_iter()
                .map(|(k, v)| (k, env::narrow_wildcard(&v, ip)))
                .collect();
        environment.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        environment.push(("RINGKV_E2E_IMAGE".into(), image.clone()));
        let defined: std::collections::BTreeMap<String, String> =
            environment.iter().cloned().collect();
        let args: Vec<String> = container
            .args
            .iter()
            .flatten()
            .map(|a| env::narrow_wildcard(&env::expand(a, &defined), ip))
            .collect();
        let mounts: Vec<Mount> = container
            .volume_mounts
            .iter()
            .flatten()
            .filter_map(|m| {
                Some(Mount {
                    source: volumes.get(&m.name)?.clone(),
                    target: m.mount_path.clone(),
                    read_only: m.read_only.unwrap_or(false),
                })
            })
            .collect();
        shared.update(index, |s| s.binary = binary.display().to_string());
        let run = ContainerRun {
            runner: runner.clone(),
            pod_name: format!("{namespace}/{}", pod.name_any()),
            container: container.clone(),
            index,
            ip: ip.to_string(),
            binary,
            args,
            env: environment,
            mounts,
            log: pod_dir.join(format!("{}.log", container.name)),
            restart_policy: restart_policy.clone(),
            grace,
            shared: shared.clone(),
        };
        tasks.push(tokio::spawn(run.run(terminate.clone())));
    }
    Ok(tasks)
}

struct ContainerRun {
    runner: Arc<Runner>,
    pod_name: String,
    container: Container,
    index: usize,
    ip: String,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
    log: PathBuf,
    restart_policy: String,
    grace: Duration,
    shared: Arc<Shared>,
}

impl ContainerRun {
    async fn run(self, mut terminate: watch::Receiver<Option<Duration>>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            if terminate.borrow().is_some() {
                return;
            }
            let spawned = process::spawn(&process::Spawn {
                binary: &self.binary,
                args: &self.args,
                env: &self.env,
                mounts: &self.mounts,
                log: &self.log,
            });
            let mut child = match spawned {
                Ok(child) => child,
                Err(error) => {
                    let message = error.to_string();
                    self.shared.update(self.index, |s| {
                        s.waiting = Some(("RunContainerError".into(), message))
                    });
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            if let Some(pid) = child.id() {
                let _ = std::fs::write(self.log.with_extension("pid"), pid.to_string());
            }
            let started_at = now();
            let started = Instant::now();
            self.record_start();
            let has_readiness = self.container.readiness_probe.is_some();
            self.shared.update(self.index, |s| {
                s.running_since = Some(started_at.clone());
                s.waiting = None;
                s.ready = !has_readiness;
            });
            let readiness = self.container.readiness_probe.clone().map(|probe| {
                tokio::spawn(readiness_loop(
                    probe,
                    self.container.clone(),
                    self.ip.clone(),
                    self.shared.clone(),
                    self.index,
                ))
            });
            let (unhealthy_tx, mut unhealthy_rx) = tokio::sync::mpsc::channel::<String>(1);
            let liveness = self.container.liveness_probe.clone().map(|probe| {
                tokio::spawn(liveness_loop(
                    probe,
                    self.container.clone(),
                    self.ip.clone(),
                    unhealthy_tx,
                ))
            });

            let mut stopping = false;
            let (code, reason) = tokio::select! {
                status = child.wait() => {
                    let code = status.ok().and_then(|s| s.code()).unwrap_or(137);
                    (code, if code == 0 { "Completed" } else { "Error" })
                }
                Some(why) = unhealthy_rx.recv() => {
                    tracing::info!(pod = %self.pod_name, container = %self.container.name, %why, "liveness probe failed: restarting");
                    (stop(&mut child, self.grace).await, "Error")
                }
                requested = requested_grace(&mut terminate) => {
                    stopping = true;
                    let grace = requested.unwrap_or(self.grace);
                    (stop(&mut child, grace).await, "Completed")
                }
            };
            for task in readiness.into_iter().chain(liveness) {
                task.abort();
            }
            let finished_at = now();
            self.shared.update(self.index, |s| {
                s.ready = false;
                s.running_since = None;
                s.last_exit = Some(json!({ "terminated": {
                    "exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at,
                }}));
                if !stopping {
                    s.restart_count += 1;
                    s.waiting = Some(("CrashLoopBackOff".into(), format!("exited with {code}")));
                }
            });
            let again = match self.restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            if stopping || !again {
                return;
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_secs(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = terminate.wait_for(|t| t.is_some()) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// The marker a test can see: which image each start ran.
    fn record_start(&self) {
        let line = format!(
            "{} {} {} {}\n",
            now(),
            self.pod_name,
            self.container.name,
            self.container.image.clone().unwrap_or_default()
        );
        let path = self.runner.state_dir.join("starts.log");
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            use std::io::Write;
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// Waits for the pod's deletion; its grace period.
async fn requested_grace(terminate: &mut watch::Receiver<Option<Duration>>) -> Option<Duration> {
    match terminate.wait_for(|t| t.is_some()).await {
        Ok(grace) => *grace,
        Err(_) => Some(Duration::ZERO),
    }
}

/// SIGTERM, then SIGKILL after `grace`; the exit code.
async fn stop(child: &mut tokio::process::Child, grace: Duration) -> i32 {
    process::signal(child, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            process::signal(child, Signal::SIGKILL);
            child.wait().await
        }
    };
    status.ok().and_then(|s| s.code()).unwrap_or(137)
}

async fn readiness_loop(
    probe: k8s_openapi::api::core::v1::Probe,
    container: Container,
    ip: String,
    shared: Arc<Shared>,
    index: usize,
) {
    let timing = probe::timing(&probe);
    tokio::time::sleep(timing.initial_delay).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut ready = false;
    loop {
        match probe::check(&probe, &container, &ip).await {
            Ok(()) => {
                successes += 1;
                failures = 0;
            }
            Err(_) => {
                failures += 1;
                successes = 0;
            }
        }
        let now_ready = if successes >= timing.success_threshold {
            true
        } else if failures >= timing.failure_threshold {
            false
        } else {
            ready
        };
        if now_ready != ready {
            ready = now_ready;
            shared.update(index, |s| s.ready = ready);
        }
        // Probe quickly until first ready, as a startup would.
        let pause = if ready {
            timing.period
        } else {
            timing.period.min(Duration::from_secs(1))
        };
        tokio::time::sleep(pause).await;
    }
}

async fn liveness_loop(
    probe: k8s_openapi::api::core::v1::Probe,
    container: Container,
    ip: String,
    unhealthy: tokio::sync::mpsc::Sender<String>,
) {
    let timing = probe::timing(&probe);
    tokio::time::sleep(timing.initial_delay).await;
    let mut failures = 0;
    loop {
        tokio::time::sleep(timing.period).await;
        match probe::check(&probe, &container, &ip).await {
            Ok(()) => failures = 0,
            Err(why) => {
                failures += 1;
                if failures >= timing.failure_threshold {
                    let _ = unhealthy.send(why).await;
                    return;
                }
            }
        }
    }
}

/// Keeps the pod's status current.
async fn report_status(runner: Arc<Runner>, pod: Pod, ip: String, shared: Arc<Shared>) {
    let pods: Api<Pod> =
        Api::namespaced(runner.client.clone(), &pod.namespace().unwrap_or_default());
    let start_time = now();
    let mut last: Option<Value> = None;
    let mut transitions: std::collections::BTreeMap<&'static str, (bool, String)> =
        Default::default();
    loop {
        let containers = shared
            .containers
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
        let mut condition = |type_: &'static str, status: bool| {
            let entry = transitions.entry(type_).or_insert((status, now()));
            if entry.0 != status {
                *entry = (status, now());
            }
            json!({ "type": type_, "status": if status { "True" } else { "False" }, "lastTransitionTime": entry.1 })
        };
        let conditions = vec![
            condition("PodReadyToStartContainers", true),
            condition("Initialized", true),
            condition("ContainersReady", all_ready),
            condition("Ready", all_ready),
            condition("PodScheduled", true),
        ];
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| {
                let state = match (&c.running_since, &c.waiting) {
                    (Some(since), _) => json!({ "running": { "startedAt": since } }),
                    (None, Some((reason, message))) => json!({ "waiting": { "reason": reason, "message": message } }),
                    (None, None) => json!({ "waiting": { "reason": "ContainerCreating" } }),
                };
                json!({
                    "name": c.name,
                    "image": c.image,
                    "imageID": format!("runner://{}", c.binary),
                    "containerID": format!("runner://{}/{}/{}", pod.uid().unwrap_or_default(), c.name, c.restart_count),
                    "ready": c.ready,
                    "started": c.running_since.is_some(),
                    "restartCount": c.restart_count,
                    "state": state,
                    "lastState": c.last_exit.clone().unwrap_or(json!({})),
                })
            })
            .collect();
        let status = json!({
            "phase": "Running",
            "podIP": ip, "podIPs": [{ "ip": ip }],
            "hostIP": "127.0.0.1", "hostIPs": [{ "ip": "127.0.0.1" }],
            "startTime": start_time,
            "conditions": conditions,
            "containerStatuses": statuses,
        });
        if last.as_ref() != Some(&status) {
            match pods
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await
            {
                Ok(_) => last = Some(status),
                Err(error) => tracing::debug!(pod = %pod.name_any(), %error, "status update"),
            }
        }
        tokio::select! {
            _ = shared.changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
