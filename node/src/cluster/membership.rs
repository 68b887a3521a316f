//! Cluster membership by gossip (Quickwit's chitchat: Scuttlebutt
//! reconciliation with a phi-accrual failure detector, over UDP).
//!
//! Each node gossips a few small keys about itself: its gRPC address, zone,
//! ring status, partition count and the newest layout version it holds.
//! Data and layouts never travel by gossip; peers fetch a newer layout over
//! gRPC (`Replica.GetLayout`).

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::{
    cluster::contact::{Contact, Touch},
    cluster::discovery::SeedProvider,
    cluster::gossip_thread::GossipThread,
    cluster::gossip_transport::{GossipKey, RefusedDatagrams, SealedUdpTransport},
    cluster::identity::{Bindings, Claim, Conflict},
    cluster::liveness::Listening,
    server::log_limit::LogLimit,
};

const KEY_GRPC: &str = "grpc";
const KEY_ZONE: &str = "zone";
const KEY_STATUS: &str = "status";
const KEY_PARTITIONS: &str = "partitions";
const KEY_LAYOUT: &str = "layout_version";
const KEY_LAYOUT_DIGEST: &str = "layout_digest";
const KEY_LAYOUT_FLOOR: &str = "layout_floor";
const KEY_SYNCED: &str = "synced";
const KEY_HINTS: &str = "hints_pending";
const KEY_REFILLING: &str = "refilling";

/// A node's place in the ring's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeStatus {
    /// Up, but not yet in the layout (or not yet holding its partitions).
    Joining,
    /// In the layout and serving its partitions.
    Normal,
    /// Handing its partitions over before it leaves.
    Leaving,
    /// Holds nothing any more; safe to stop.
    Left,
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeStatus::Joining => "joining",
            NodeStatus::Normal => "normal",
            NodeStatus::Leaving => "leaving",
            NodeStatus::Left => "left",
        })
    }
}

impl FromStr for NodeStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "joining" => Ok(NodeStatus::Joining),
            "normal" => Ok(NodeStatus::Normal),
            "leaving" => Ok(NodeStatus::Leaving),
            "left" => Ok(NodeStatus::Left),
            other => Err(format!("unknown node status {other:?}")),
        }
    }
}

/// What gossip says about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub grpc: String,
    pub gossip: SocketAddr,
    pub zone: Option<String>,
    pub status: NodeStatus,
    pub generation: u64,
    pub alive: bool,
    pub partitions: u32,
    pub layout_version: u64,
    /// Tells apart two ring states of the same version; see
    /// [`crate::ring::RingState::digest`].
    pub layout_digest: u64,
    /// The floor of that ring state: the oldest ring state version a
    /// coordinator may hold (see [`crate::ring::RingState::refuses`]).
    pub layout_floor: u64,
    /// The ring state version whose incoming partitions this node has
    /// completely received.
    pub synced: u64,
    /// Hints the node keeps for others, as it last announced.
    pub hints_pending: u64,
    /// Partitions the node refills after losing its data.
    pub refilling: u32,
}

#[cfg(test)]
impl Peer {
    /// A peer as gossip would show it, for tests of what reads views.
    pub fn for_test(id: &str, alive: bool, layout_version: u64) -> Self {
        Self {
            id: id.to_string(),
            grpc: String::new(),
            gossip: std::net::SocketAddr::from(([127, 0, 0, 1], 7946)),
            zone: None,
            status: NodeStatus::Normal,
            generation: 1,
            alive,
            partitions: 0,
            layout_version,
            layout_digest: 0,
            layout_floor: 0,
            synced: 0,
            hints_pending: 0,
            refilling: 0,
        }
    }
}

/// A consistent snapshot of every known node, this one included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub peers: BTreeMap<String, Peer>,
}

impl View {
    pub fn is_alive(&self, id: &str) -> bool {
        self.peers.get(id).is_some_and(|p| p.alive)
    }

    /// The gRPC address of `id` while gossip sees it alive.
    pub fn live_address(&self, id: &str) -> Option<String> {
        self.peers
            .get(id)
            .filter(|p| p.alive)
            .map(|p| p.grpc.clone())
    }

    pub fn alive(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values().filter(|p| p.alive)
    }
}

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("starting gossip on {addr}: {message}")]
    Start { addr: SocketAddr, message: String },
}

/// What this node announces about itself at start.
#[derive(Debug, Clone)]
pub struct SelfInfo {
    pub id: String,
    pub grpc: SocketAddr,
    pub gossip_listen: SocketAddr,
    pub gossip_advertise: SocketAddr,
    pub zone: Option<String>,
    pub partitions: u32,
    pub layout_version: u64,
    pub layout_digest: u64,
    pub cluster_id: String,
    pub gossip_interval: Duration,
}

/// How gossip is guarded, and where it reports what it refused.
#[derive(Clone, Default)]
pub struct GossipGuard {
    /// Seals every datagram; `None` without a cluster secret.
    pub key: Option<GossipKey>,
    pub refused_datagrams: RefusedDatagrams,
    /// Node ids that live processes at more than one address claim now.
    pub identity_conflicts: Gauge,
}

/// This node's membership: its gossip server and the live view of peers.
pub struct Membership {
    handle: Arc<ChitchatHandle>,
    view: watch::Receiver<Arc<View>>,
    self_id: String,
    contact: Arc<Contact>,
    refresher: tokio::task::JoinHandle<()>,
    gossip: GossipThread,
}

/// Gossip intervals between two passes of the gossip loop after which this
/// node counts itself stalled. A peer declares a silent node dead only
/// after `liveness::SILENCE_INTERVALS` intervals of its own listening without a
/// heartbeat (and once phi accrual agrees), so a node that stalls long
/// enough for its peers to move on without it notices.
const STALL_INTERVALS: u32 = 5;

// Checked when the node is built: were the silence ever the stall or
// shorter, peers could declare a stalled node dead before it noticed.
const _: () = assert!(STALL_INTERVALS < crate::cluster::liveness::SILENCE_INTERVALS);

/// Phi accrual, with a prior of five intervals for the first heartbeats and
/// gaps longer than ten intervals (a stall, a restart) left out of the mean.
fn failure_detector(interval: Duration) -> FailureDetectorConfig {
    FailureDetectorConfig {
        initial_interval: interval * 5,
        max_interval: interval * 10,
        ..Default::default()
    }
}

fn generation_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

impl Membership {
    /// Starts gossip and a task that keeps the view fresh and, while this
    /// node knows no live peer, keeps knocking on the seeds.
    pub async fn start(
        me: SelfInfo,
        seeds: Arc<dyn SeedProvider>,
        guard: GossipGuard,
    ) -> Result<Self, MembershipError> {
        let chitchat_id = ChitchatId::new(me.id.clone(), generation_now(), me.gossip_advertise);
        let interval = me.gossip_interval;
        let config = ChitchatConfig {
            chitchat_id,
            cluster_id: me.cluster_id.clone(),
            gossip_interval: interval,
            listen_addr: me.gossip_listen,
            seed_nodes: seeds.static_seeds(),
            failure_detector_config: failure_detector(interval),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let mut initial = vec![
            (KEY_GRPC.to_string(), me.grpc.to_string()),
            (KEY_STATUS.to_string(), NodeStatus::Joining.to_string()),
            (KEY_PARTITIONS.to_string(), me.partitions.to_string()),
            (KEY_LAYOUT.to_string(), me.layout_version.to_string()),
            (KEY_LAYOUT_DIGEST.to_string(), me.layout_digest.to_string()),
        ];
        if let Some(zone) = &me.zone {
            initial.push((KEY_ZONE.to_string(), zone.clone()));
        }
        let transport = SealedUdpTransport::new(guard.key.clone(), guard.refused_datagrams.clone());
        let (handle, gossip) = GossipThread::start(config, initial, transport).await?;
        let (tx, view) = watch::channel(Arc::new(View::default()));
        let handle = Arc::new(handle);
        let contact = Arc::new(Contact::new(
            interval * STALL_INTERVALS,
            std::time::Instant::now(),
        ));
        let refresher = tokio::spawn(refresh_loop(
            handle.clone(),
            tx,
            seeds,
            interval,
            Identity {
                bindings: Bindings::new(&me.id, me.gossip_advertise),
                self_id: me.id.clone(),
                conflicts: guard.identity_conflicts,
            },
            contact.clone(),
        ));
        let membership = Self {
            handle,
            view,
            self_id: me.id,
            contact,
            refresher,
            gossip,
        };
        Ok(membership)
    }

    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// The latest view.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// A receiver that changes whenever the view does.
    pub fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    pub async fn set_status(&self, status: NodeStatus) {
        self.set(KEY_STATUS, status.to_string()).await;
    }

    pub async fn set_synced(&self, version: u64) {
        self.set(KEY_SYNCED, version.to_string()).await;
    }

    /// Announces how many hints this node keeps, for an operator deciding
    /// whether the ring is healthy enough to restart the next node.
    pub async fn set_hints_pending(&self, hints: u64) {
        self.set(KEY_HINTS, hints.to_string()).await;
    }

    /// Announces how many partitions this node still refills after it
    /// started with an empty data dir.
    pub async fn set_refilling(&self, partitions: u32) {
        self.set(KEY_REFILLING, partitions.to_string()).await;
    }

    /// Announces the ring state this node holds: its version, digest and
    /// floor.
    pub async fn set_layout(&self, (version, digest): (u64, u64), floor: u64) {
        let chitchat = self.handle.chitchat();
        let mut chitchat = chitchat.lock().await;
        let state = chitchat.self_node_state();
        state.set(KEY_LAYOUT, version.to_string());
        state.set(KEY_LAYOUT_DIGEST, digest.to_string());
        state.set(KEY_LAYOUT_FLOOR, floor.to_string());
    }

    /// Whether gossip has brought this node news from a peer since it
    /// started or last stalled (see [`crate::cluster::contact`]).
    pub fn touch(&self) -> Touch {
        self.contact.touch(std::time::Instant::now())
    }

    async fn set(&self, key: &str, value: String) {
        let chitchat = self.handle.chitchat();
        chitchat.lock().await.self_node_state().set(key, value);
    }

    /// Resolves if this node's gossip server ends before
    /// [`Membership::shutdown`], with why. A node that no longer gossips
    /// soon sees every peer dead and is seen dead by them, while it still
    /// answers clients, so its caller should stop the process and let it be
    /// restarted.
    pub fn gossip_lost(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let ended = self.handle.termination_watcher();
        async move {
            match ended.await {
                Ok(()) => "the gossip server stopped".to_string(),
                Err(error) => format!("the gossip server failed: {error:#}"),
            }
        }
    }

    /// Stops gossiping.
    pub async fn shutdown(self) {
        self.refresher.abort();
        if let Err(error) = self.handle.initiate_shutdown() {
            tracing::warn!(%error, "gossip shutdown");
        }
        self.gossip.stop().await;
    }
}

/// Which process stands for each node id, and how conflicts are reported.
struct Identity {
    bindings: Bindings,
    self_id: String,
    conflicts: Gauge,
}

impl Identity {
    /// Sets the gauge and logs the conflicts, at most once per interval: an
    /// impostor of this node's own id is an error someone must fix.
    fn report(&self, conflicts: &[Conflict], log: &LogLimit) {
        self.conflicts.set(conflicts.len() as i64);
        if conflicts.is_empty() {
            return;
        }
        let Some(held_back) = log.admit() else {
            return;
        };
        for conflict in conflicts {
            if conflict.id == self.self_id {
                tracing::error!(
                    node_id = %conflict.id,
                    this_node = %conflict.kept,
                    others = ?conflict.refused,
                    held_back,
                    "another live process gossips with this node's id: this node keeps the id and every peer refuses the other, but stop it (two processes must never share a --node-id)"
                );
            } else {
                tracing::warn!(
                    node_id = %conflict.id,
                    kept = %conflict.kept,
                    refused = ?conflict.refused,
                    held_back,
                    "node id claimed by live processes at more than one address: the first stays the member until it is declared dead; the others are refused"
                );
            }
        }
    }
}

async fn refresh_loop(
    handle: Arc<ChitchatHandle>,
    tx: watch::Sender<Arc<View>>,
    seeds: Arc<dyn SeedProvider>,
    interval: Duration,
    mut identity: Identity,
    contact: Arc<Contact>,
) {
    let conflict_log = LogLimit::new(Duration::from_secs(10));
    let self_id = identity.self_id.clone();
    let chitchat = handle.chitchat();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_discovery = tokio::time::Instant::now() - Duration::from_secs(3600);
    let mut listening: Listening<ChitchatId> = Listening::new(interval);
    loop {
        ticker.tick().await;
        let (view, heard) = {
            let guard = chitchat.lock().await;
            listening.pass(std::time::Instant::now());
            listening.retain(|id| guard.node_states().contains_key(id));
            let mut heard = false;
            for (id, state) in guard.node_states() {
                if *id.node_id == *self_id {
                    continue;
                }
                heard |= listening.observe(id, u64::from(state.heartbeat()));
            }
            let (view, conflicts) = build_view(&guard, &mut identity.bindings, &listening);
            identity.report(&conflicts, &conflict_log);
            (view, heard)
        };
        contact.pass(std::time::Instant::now(), heard);
        let lonely = !view.peers.values().any(|p| p.alive && p.id != self_id);
        tx.send_if_modified(|current| {
            if **current != view {
                *current = Arc::new(view);
                true
            } else {
                false
            }
        });
        // Chitchat retries its static seeds by itself; discovered seeds (the
        // Kubernetes provider's pod IPs, which change) are knocked on here,
        // often while this node knows no live peer, rarely otherwise.
        let period = if lonely {
            interval * 5
        } else {
            Duration::from_secs(15)
        };
        if last_discovery.elapsed() >= period {
            last_discovery = tokio::time::Instant::now();
            match seeds.discover().await {
                Ok(addrs) => {
                    for addr in addrs {
                        if let Err(error) = handle.gossip(addr) {
                            tracing::warn!(%error, %addr, "gossip with a discovered peer");
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "seed discovery failed"),
            }
        }
    }
}

/// The view from chitchat's node states: one peer per node id, chosen by
/// `bindings` among the states that claim it, and the ids claimed by live
/// processes at more than one address.
fn build_view(
    chitchat: &chitchat::Chitchat,
    bindings: &mut Bindings,
    listening: &Listening<ChitchatId>,
) -> (View, Vec<Conflict>) {
    let live: std::collections::HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let mut claims: BTreeMap<String, Vec<Peer>> = BTreeMap::new();
    for (id, state) in chitchat.node_states() {
        // Dead only once phi accrual says so and this node has listened
        // long enough without a heartbeat (see `cluster::liveness`).
        let alive = live.contains(id) || listening.heard_lately(id);
        let get = |key: &str| state.get(key).map(str::to_string);
        let Some(grpc) = get(KEY_GRPC) else {
            continue;
        };
        let peer = Peer {
            id: id.node_id.to_string(),
            grpc,
            gossip: id.gossip_advertise_addr,
            zone: get(KEY_ZONE).filter(|z| !z.is_empty()),
            status: get(KEY_STATUS)
                .and_then(|s| s.parse().ok())
                .unwrap_or(NodeStatus::Joining),
            generation: id.generation_id,
            alive,
            partitions: get(KEY_PARTITIONS)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            layout_version: get(KEY_LAYOUT).and_then(|s| s.parse().ok()).unwrap_or(0),
            layout_digest: get(KEY_LAYOUT_DIGEST)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            layout_floor: get(KEY_LAYOUT_FLOOR)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            synced: get(KEY_SYNCED).and_then(|s| s.parse().ok()).unwrap_or(0),
            hints_pending: get(KEY_HINTS).and_then(|s| s.parse().ok()).unwrap_or(0),
            refilling: get(KEY_REFILLING).and_then(|s| s.parse().ok()).unwrap_or(0),
        };
        claims.entry(peer.id.clone()).or_default().push(peer);
    }
    let mut peers = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (id, mut states) in claims {
        let summary: Vec<Claim> = states
            .iter()
            .map(|p| Claim {
                generation: p.generation,
                gossip: p.gossip,
                alive: p.alive,
            })
            .collect();
        let (chosen, conflict) = bindings.choose(&id, &summary);
        conflicts.extend(conflict);
        peers.insert(id, states.swap_remove(chosen));
    }
    (View { peers }, conflicts)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };

    use super::*;
    use crate::cluster::discovery::{DiscoveryError, StaticSeeds};

    /// A seed source whose answer the test changes, as pod IPs change, and
    /// that counts how often it is listed.
    #[derive(Default)]
    struct Listing {
        calls: AtomicUsize,
        found: Mutex<Vec<SocketAddr>>,
    }

    #[tonic::async_trait]
    impl SeedProvider for Listing {
        async fn discover(&self) -> Result<Vec<SocketAddr>, DiscoveryError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(self.found.lock().expect("lock").clone())
        }
    }

    fn me(id: &str, gossip: SocketAddr) -> SelfInfo {
        SelfInfo {
            id: id.to_string(),
            grpc: SocketAddr::from((gossip.ip(), 1)),
            gossip_listen: gossip,
            gossip_advertise: gossip,
            zone: None,
            partitions: 8,
            layout_version: 0,
            layout_digest: 0,
            cluster_id: "relisting".to_string(),
            gossip_interval: Duration::from_millis(50),
        }
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn start_without_seeds(id: &str, gossip: SocketAddr) -> Membership {
        Membership::start(
            me(id, gossip),
            Arc::new(StaticSeeds { seeds: vec![] }),
            GossipGuard::default(),
        )
        .await
        .expect("membership starts")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn discovered_seeds_are_listed_again_while_alone_and_rarely_otherwise() {
        let b_addr: SocketAddr = "127.0.67.2:7946".parse().expect("addr");
        let b = start_without_seeds("b", b_addr).await;
        let listing = Arc::new(Listing::default());
        let a_addr: SocketAddr = "127.0.67.1:7946".parse().expect("addr");
        let a = Membership::start(me("a", a_addr), listing.clone(), GossipGuard::default())
            .await
            .expect("start a");

        // Alone, with no pod listed yet: listed again every five rounds.
        until("three listings while alone", || {
            listing.calls.load(Ordering::SeqCst) >= 3
        })
        .await;
        // A pod appears, as a new pod IP would: the next listing finds it.
        *listing.found.lock().expect("lock") = vec![b_addr];
        let found_at = tokio::time::Instant::now();
        until("a sees b alive", || a.view().is_alive("b")).await;

        // No longer alone: the API is not listed again within 15 s.
        let before = listing.calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = listing.calls.load(Ordering::SeqCst);
        assert!(a.view().is_alive("b"), "b stayed alive");
        assert_eq!(
            after,
            before,
            "listed {} times in 2 s (40 rounds) while not alone",
            after - before
        );
        // And listed again every 15 s, so that a pod that appears later is
        // still found.
        let deadline = found_at + Duration::from_secs(25);
        while listing.calls.load(Ordering::SeqCst) == after {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not listed again within 25 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let waited = found_at.elapsed();
        assert!(
            waited >= Duration::from_secs(14),
            "listed again after {waited:?}, not 15 s"
        );
        a.shutdown().await;
        b.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gossip_server_that_dies_is_reported() {
        let addr: SocketAddr = "127.0.110.1:7946".parse().expect("addr");
        let node = start_without_seeds("a", addr).await;
        let lost = tokio::spawn(node.gossip_lost());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!lost.is_finished(), "reported while gossip still ran");
        // As a panic in chitchat's server task would end it.
        node.handle.abort();
        let message = tokio::time::timeout(Duration::from_secs(10), lost)
            .await
            .expect("the end of gossip was not reported within 10 s")
            .expect("the reporting task");
        assert!(message.contains("gossip server failed"), "{message}");
        node.shutdown().await;
    }
}
