//! The reconciler, on kube-runtime's Controller, as a pipeline of steps in
//! files of their own (as Stackable's operators split it):
//!
//! 1. [`validate`]: refuse a spec the CRD schema let through, as a condition
//!    on the generation judged; then make sure the [`cluster_secret`]
//!    exists, which the nodes and the operator's own Admin calls need;
//! 2. [`observe`]: read the StatefulSet, the node pods and the ring;
//! 3. [`decide`]: pure, from what was observed: the scale plan and the
//!    rollout step;
//! 4. [`act`]: apply the owned objects, record intent, move members, apply
//!    the StatefulSet;
//! 5. [`report`]: write the status, with [`events`] for every decision.
//!
//! Every step reads the world afresh; the only memory between reconciles is
//! what the KVCluster's status says and what the ring reports, so a restart
//! at any point resumes instead of redoing or skipping a step. A reconcile
//! reads the status this process last wrote ([`written_status`]) when the
//! watch cache has not caught up with it yet.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Pod, Service},
    policy::v1::PodDisruptionBudget,
};
use kube::{
    runtime::{
        controller::Action,
        events::{EventType, Reporter},
        finalizer::{finalizer, Event as FinalizerEvent},
        reflector::ObjectRef,
        watcher, Controller,
    },
    Api, Client, Resource, ResourceExt,
};
use tokio::time::Instant;

use crate::{
    crd::KVCluster,
    metrics::Metrics,
    ring_admin::{RingAdmin, RingView},
};

pub mod act;
pub mod cleanup;
pub mod cluster_secret;
pub mod decide;
pub mod events;
pub mod observe;
pub mod report;
pub mod validate;
pub mod written_status;

pub use cleanup::cleanup;
pub use observe::NodePods;
pub use validate::{validate, SpecError};
pub use written_status::WrittenStatus;

pub const FIELD_MANAGER: &str = "ringkv-operator";
/// Held on every KVCluster so that deleting one applies its volume policy.
pub const FINALIZER: &str = "ringkv.io/volume-retention";
const REVISION_LABEL: &str = "controller-revision-hash";
/// How often a cluster with something in progress is looked at again: the
/// ring's progress reaches the operator by polling, not by watch events.
const BUSY_REQUEUE: Duration = Duration::from_secs(3);
const IDLE_REQUEUE: Duration = Duration::from_secs(30);
/// How soon a cluster waiting for its TLS Secret is looked at again:
/// Secrets are not watched.
const SECRET_REQUEUE: Duration = Duration::from_secs(30);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub ring_admin: Arc<dyn RingAdmin>,
    /// Who records the events.
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// A rolling upgrade restarts the next node only while the cluster keeps
    /// at most this many hints: more means a node is behind.
    pub max_pending_hints: u64,
    /// The status last written for each cluster.
    pub written: WrittenStatus,
    /// Whether, and how, to make each cluster a ServiceMonitor.
    pub service_monitors: Option<crate::build::ServiceMonitors>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        action: &'static str,
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("KVCluster {0} has no namespace")]
    NoNamespace(String),
    #[error("cluster Secret {secret} {problem}")]
    ClusterSecret {
        secret: String,
        problem: &'static str,
    },
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<ReconcileError>>),
}

impl ReconcileError {
    /// The kind of failure, as `ringkv_operator_reconcile_failures_total`
    /// counts it.
    pub fn kind(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Self::Kube { .. } => "kubernetes_api",
            Self::NoNamespace(_) => "no_namespace",
            Self::ClusterSecret { .. } => "cluster_secret",
            Self::Finalizer(error) => match error.as_ref() {
                F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner.kind(),
                F::AddFinalizer(_) | F::RemoveFinalizer(_) => "finalizer_patch",
                F::UnnamedObject => "unnamed_object",
                F::InvalidFinalizer => "invalid_finalizer",
            },
        }
    }
}

fn kube_error<'a, K: Resource<DynamicType = ()>>(
    action: &'static str,
    name: &'a str,
) -> impl FnOnce(kube::Error) -> ReconcileError + 'a {
    move |source| ReconcileError::Kube {
        action,
        kind: K::kind(&()).to_string(),
        name: name.to_string(),
        source,
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let clusters: Api<KVCluster> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=ringkv-operator");
    Controller::new(clusters, watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<PodDisruptionBudget>::all(client), owned)
        // Node pods belong to the StatefulSet, not to the KVCluster: map
        // them back through their instance label.
        .watches(
            pods,
            watcher::Config::default().labels("app.kubernetes.io/name=ringkv"),
            |pod| {
                let namespace = pod.namespace();
                pod.labels().get("app.kubernetes.io/instance").map(|name| {
                    let reference = ObjectRef::<KVCluster>::new(name);
                    match namespace {
                        Some(ns) => reference.within(&ns),
                        None => reference,
                    }
                })
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object, "reconciled"),
                Err(error) => tracing::warn!(%error, "reconcile failed"),
            }
        })
        .await;
}

fn error_policy(kvc: Arc<KVCluster>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %kvc.name_any(), %error, kind = error.kind(), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// One reconcile of one KVCluster, behind the finalizer.
#[tracing::instrument(skip_all, fields(cluster = %kvc.name_any(), namespace = kvc.namespace().unwrap_or_default(), generation = kvc.metadata.generation))]
pub async fn reconcile(kvc: Arc<KVCluster>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let namespace = kvc
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(kvc.name_any()))?;
    let api: Api<KVCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, kvc, |event| async {
        match event {
            FinalizerEvent::Apply(kvc) => apply(&kvc, &ctx).await,
            FinalizerEvent::Cleanup(kvc) => {
                ctx.written.forget(&kvc);
                cleanup(&kvc, &ctx).await
            }
        }
    })
    .await
    .map_err(|error| ReconcileError::Finalizer(Box::new(error)));
    ctx.metrics.observe_reconcile(
        started.elapsed(),
        result.as_ref().err().map(ReconcileError::kind),
    );
    result
}

/// Validate, observe, decide, act, report.
#[tracing::instrument(skip_all, fields(cluster = %kvc.name_any()))]
pub async fn apply(kvc: &KVCluster, ctx: &Context) -> Result<Action, ReconcileError> {
    let kvc = &ctx.written.freshen(kvc);
    let namespace = kvc
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(kvc.name_any()))?;
    if let Err(error) = validate(&kvc.spec) {
        return report::invalid_spec(ctx, kvc, &namespace, &error).await;
    }
    // Without its TLS Secret no pod could start: nothing is created, the
    // cluster Secret included, until it exists.
    let connector = match observe::admin_connector(ctx, kvc, &namespace).await {
        Ok(connector) => connector,
        Err(missing) => {
            events::publish(
                ctx,
                kvc,
                EventType::Warning,
                "TLSSecretUnavailable",
                "Validate",
                missing.to_string(),
            )
            .await;
            return Ok(Action::requeue(SECRET_REQUEUE));
        }
    };
    let secret = cluster_secret::ensure(ctx, kvc, &namespace).await?;
    let world = observe::observe(ctx, kvc, &namespace, connector, &secret).await?;
    act::annotate_zones(ctx, kvc, &namespace, &world.nodes).await?;
    act::apply_owned_objects(ctx, kvc, &namespace).await?;
    let decision = decide::decide(kvc, &world, ctx.max_pending_hints);
    tracing::debug!(?decision, "decided");
    act::record_intent(ctx, kvc, &namespace, &decision).await?;
    act::move_members(ctx, kvc, &namespace, &world, &decision).await?;
    act::apply_stateful_set(ctx, kvc, &namespace, &decision).await?;
    report::report(ctx, kvc, &namespace, &world, &decision).await
}

/// Every node the StatefulSet keeps is alive and `normal`, no partition is
/// moving, and the hints waiting for delivery are few.
pub fn ring_is_healthy(
    ring: Option<&RingView>,
    ids: impl Iterator<Item = String>,
    max_pending_hints: u64,
) -> bool {
    let Some(ring) = ring else { return false };
    let hints: u64 = ring.members.values().map(|m| m.hints_pending).sum();
    !ring.transition
        && hints <= max_pending_hints
        && ids.into_iter().all(|id| {
            ring.member(&id)
                .is_some_and(|m| m.alive && m.status == "normal")
        })
}
