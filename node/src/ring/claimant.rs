//! The loop that keeps this node's ring state current.
//!
//! Every node adopts the newest ring state any live peer reports (fetched
//! over gRPC) and announces its own status. One node at a time, the
//! claimant (the lowest id among live members of the current layout, or
//! before any layout the lowest live id once membership has settled), moves
//! the ring forward one step per tick, level-triggered from what gossip says
//! now:
//!
//! - no layout: make the first one once N nodes are alive;
//! - no transition: start one for the first leaving member (if N nodes would
//!   remain) or the first joining node, as a `next` layout derived
//!   deterministically from `current` and that one change;
//! - a transition: promote `next` once every receiving node reports that it
//!   holds all its incoming partitions, keeping the replaced layout as
//!   `previous`;
//! - a promotion: drop `previous` once every live member has adopted it.

use std::{collections::BTreeSet, future::Future, sync::Arc, time::Duration};

use ringkv_proto::v1::GetLayoutRequest;
use tokio::{sync::mpsc, time::Instant};

use super::{Layout, LayoutError, Member, Ring, RingError, RingState};
use crate::{
    cluster::membership::{Membership, NodeStatus, Peer, View},
    cluster::peers::PeerClients,
    server::lifecycle::Lifecycle,
};

/// Settings of the claimant loop.
#[derive(Debug, Clone)]
pub struct ClaimantConfig {
    pub replication: usize,
    pub settle: Duration,
    pub tick: Duration,
}

/// Runs until the process stops. A fatal condition (a cluster with a
/// different partition count) is sent on `fatal`.
pub async fn run(
    ring: Arc<Ring>,
    membership: Arc<Membership>,
    lifecycle: Arc<Lifecycle>,
    peers: Arc<PeerClients>,
    config: ClaimantConfig,
    fatal: mpsc::Sender<String>,
) {
    let me = membership.self_id().to_string();
    let mut ticker = tokio::time::interval(config.tick);
    let mut last_set: BTreeSet<String> = BTreeSet::new();
    let mut stable_since = Instant::now();
    let mut announced: Option<((u64, u64), NodeStatus)> = None;
    let mut announced_hints: Option<u64> = None;
    loop {
        ticker.tick().await;
        let view = membership.view();

        if let Some(message) = partition_conflict(&view, &me, &ring) {
            let _ = fatal.send(message).await;
            return;
        }
        adopt_newer_state(&view, &me, &ring, &peers).await;

        let eligible: BTreeSet<String> = view
            .alive()
            .filter(|p| p.partitions == ring.partitions())
            .map(|p| p.id.clone())
            .collect();
        if eligible != last_set {
            last_set = eligible.clone();
            stable_since = Instant::now();
        }
        if let Err(error) = claim(&view, &me, &ring, &config, &eligible, stable_since) {
            tracing::warn!(%error, "claimant could not make the next ring state");
        }

        let status = own_status(&ring, &me, &lifecycle);
        if status == NodeStatus::Left && !lifecycle.has_left() {
            tracing::info!("all partitions handed over and hints delivered: left the ring");
            lifecycle.mark_left();
        }
        let hints = ring.storage().pending_hints();
        if announced_hints != Some(hints) {
            membership.set_hints_pending(hints).await;
            announced_hints = Some(hints);
        }
        let rank = ring.rank();
        if announced != Some((rank, status)) {
            let floor = ring.state().map_or(0, |state| state.floor);
            membership.set_layout(rank, floor).await;
            membership.set_status(status).await;
            announced = Some((rank, status));
        }
    }
}

/// What this node is, from the ring state and its own decisions.
fn own_status(ring: &Ring, me: &str, lifecycle: &Lifecycle) -> NodeStatus {
    let Some(state) = ring.state() else {
        return NodeStatus::Joining;
    };
    let in_current = state.current.members().iter().any(|m| m.id == me);
    if lifecycle.decommissioning() {
        if state.involves(me) {
            return NodeStatus::Leaving;
        }
        // Out of every layout: gone once the hints it kept are delivered.
        return if ring_hints_pending(ring) {
            NodeStatus::Leaving
        } else {
            NodeStatus::Left
        };
    }
    if in_current {
        NodeStatus::Normal
    } else {
        NodeStatus::Joining
    }
}

fn ring_hints_pending(ring: &Ring) -> bool {
    ring.storage().has_hints().unwrap_or(true)
}

/// A node that is in no layout yet refuses to join a cluster that runs with
/// a different partition count.
fn partition_conflict(view: &View, me: &str, ring: &Ring) -> Option<String> {
    if ring.state().is_some_and(|s| s.involves(me)) {
        return None;
    }
    let other = view
        .alive()
        .find(|p| p.id != me && p.layout_version > 0 && p.partitions != ring.partitions())?;
    Some(format!(
        "refusing to join: node {} belongs to a cluster with {} partitions, this node has {}; \
         the partition count is fixed when a cluster is created",
        other.id,
        other.partitions,
        ring.partitions()
    ))
}

/// Fetches the newest ring state a live peer announces.
async fn adopt_newer_state(view: &View, me: &str, ring: &Ring, peers: &PeerClients) {
    adopt_newest(view, me, ring, |peer| fetch_state(peer, peers)).await;
}

/// Tries the peers that announce a state above this node's in rank order,
/// and installs the first state fetched that ranks above it: a transition
/// waits for every live member to adopt its states, so one unreachable
/// peer must not keep this node behind. Returns the peers tried.
async fn adopt_newest<'a, F, Fut>(view: &'a View, me: &str, ring: &Ring, fetch: F) -> Vec<&'a str>
where
    F: Fn(&'a Peer) -> Fut,
    Fut: Future<Output = Result<RingState, ClaimError>>,
{
    let mut sources: Vec<&Peer> = view
        .alive()
        .filter(|p| p.id != me && p.partitions == ring.partitions())
        .filter(|p| (p.layout_version, p.layout_digest) > ring.rank())
        .collect();
    sources.sort_by_key(|p| std::cmp::Reverse((p.layout_version, p.layout_digest)));
    let mut tried = Vec::new();
    for source in sources {
        tried.push(source.id.as_str());
        match fetch(source).await {
            Ok(state) => match ring.install(state) {
                Ok(true) => break,
                // Not above this node's state after all: ask the next.
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, peer = %source.id, "rejected a peer's ring state")
                }
            },
            Err(error) => tracing::debug!(%error, peer = %source.id, "fetching ring state"),
        }
    }
    tried
}

/// Why the claimant could not move the ring, or adopt a peer's state.
/// It tries again at its next tick, so these are logged, never fatal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("fetching the ring state of {peer}: {status}")]
    Fetch { peer: String, status: tonic::Status },
    #[error("the ring state of {peer} is unreadable: {error}")]
    Decode {
        peer: String,
        error: serde_json::Error,
    },
}

async fn fetch_state(peer: &Peer, peers: &PeerClients) -> Result<RingState, ClaimError> {
    let fetch_failed = |status| ClaimError::Fetch {
        peer: peer.id.clone(),
        status,
    };
    let mut client = peers.replica(&peer.grpc).map_err(fetch_failed)?;
    let mut request = tonic::Request::new(GetLayoutRequest {});
    request.set_timeout(Duration::from_secs(2));
    let response = client
        .get_layout(request)
        .await
        .map_err(fetch_failed)?
        .into_inner();
    serde_json::from_str(&response.layout_json).map_err(|error| ClaimError::Decode {
        peer: peer.id.clone(),
        error,
    })
}

fn member_of(peer: &Peer) -> Member {
    match &peer.zone {
        Some(zone) => Member::in_zone(peer.id.clone(), zone.clone()),
        None => Member::new(peer.id.clone()),
    }
}

/// Moves the ring one step if this node is the claimant.
fn claim(
    view: &View,
    me: &str,
    ring: &Ring,
    config: &ClaimantConfig,
    eligible: &BTreeSet<String>,
    stable_since: Instant,
) -> Result<(), ClaimError> {
    let Some(state) = ring.state() else {
        // A cluster that already has a layout is joined, never re-founded.
        if view.alive().any(|p| p.layout_version > 0) {
            return Ok(());
        }
        let first = eligible.iter().next();
        let members: Vec<Member> = eligible
            .iter()
            .filter_map(|id| view.peers.get(id))
            .filter(|p| p.status != NodeStatus::Leaving)
            .map(member_of)
            .collect();
        if members.len() < config.replication
            || first.map(String::as_str) != Some(me)
            || stable_since.elapsed() < config.settle
        {
            return Ok(());
        }
        let layout = Layout::initial(ring.partitions(), config.replication, members)?;
        return install(ring, RingState::settled(1, Arc::new(layout)));
    };
    let claimant = state
        .current
        .members()
        .iter()
        .map(|m| m.id.as_str())
        .find(|id| view.is_alive(id));
    if claimant != Some(me) {
        return Ok(());
    }
    let current = &state.current;
    match &state.next {
        Some(next) => {
            let waiting: Vec<String> = state
                .receiving_nodes()
                .into_iter()
                .filter(|id| view.peers.get(id).is_none_or(|p| p.synced < state.version))
                .collect();
            // A member that has not adopted the transition would keep
            // writing past the receivers after the promotion.
            if waiting.is_empty() && behind(view, ring, state.version).is_empty() {
                tracing::info!(
                    version = state.version + 1,
                    "every partition handed over: promoting the next layout"
                );
                return install(
                    ring,
                    RingState {
                        version: state.version + 1,
                        current: next.clone(),
                        next: None,
                        previous: Some(current.clone()),
                        floor: state.version,
                    },
                );
            }
            Ok(())
        }
        None if state.previous.is_some() => {
            // Until every live member has adopted the promotion, some may
            // still read from the former owners, so writes keep reaching a
            // quorum of them.
            if behind(view, ring, state.version).is_empty() {
                tracing::info!(
                    version = state.version + 1,
                    "every live member adopted the promotion: the transition is over"
                );
                return install(
                    ring,
                    RingState {
                        floor: state.version,
                        ..RingState::settled(state.version + 1, current.clone())
                    },
                );
            }
            Ok(())
        }
        None => {
            let in_current = |id: &str| current.members().iter().any(|m| m.id == id);
            // Departures first, so that a scale-down is never starved by joins.
            let leaving = view
                .peers
                .values()
                .find(|p| p.status == NodeStatus::Leaving && in_current(&p.id));
            if let Some(peer) = leaving {
                if current.members().len() > config.replication {
                    let next = current.with_member_removed(&peer.id)?;
                    return install(ring, transition(&state, next));
                }
                // A join is what lets this departure go ahead, so it must
                // not wait for it.
                tracing::warn!(node = %peer.id, "cannot remove a node yet: N nodes must remain");
            }
            let newcomer = eligible
                .iter()
                .filter_map(|id| view.peers.get(id))
                .find(|p| p.status == NodeStatus::Joining && !in_current(&p.id));
            if let Some(peer) = newcomer {
                let next = current.with_member_added(member_of(peer))?;
                return install(ring, transition(&state, next));
            }
            Ok(())
        }
    }
}

/// The state that starts moving partitions from `state`'s layout to `next`.
fn transition(state: &RingState, next: Layout) -> RingState {
    RingState {
        version: state.version + 1,
        current: state.current.clone(),
        next: Some(Arc::new(next)),
        previous: None,
        floor: state.floor,
    }
}

/// Live members of this cluster that have not adopted ring state `version`.
/// A peer whose partition count gossip has not brought yet (0) counts: it
/// may be a member that just restarted on an old ring state.
fn behind(view: &View, ring: &Ring, version: u64) -> Vec<String> {
    view.alive()
        .filter(|p| p.partitions == ring.partitions() || p.partitions == 0)
        .filter(|p| p.layout_version < version)
        .map(|p| p.id.clone())
        .collect()
}

fn install(ring: &Ring, state: RingState) -> Result<(), ClaimError> {
    ring.install(state)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::storage::{Durability, RocksStorage, RocksStorageOptions};

    const NODES: usize = 6;
    const N: usize = 3;

    fn id(i: usize) -> String {
        format!("n{i}")
    }

    fn ring(dir: &std::path::Path, state: Option<&RingState>) -> Ring {
        let options = RocksStorageOptions {
            durability: Durability::Periodic(Duration::from_secs(60)),
            ..Default::default()
        };
        let storage = Arc::new(RocksStorage::open(dir, "n", &options).expect("storage"));
        let ring = Ring::load(storage, 8).expect("ring");
        if let Some(state) = state {
            ring.install(state.clone()).expect("install");
        }
        ring
    }

    fn config(settle: Duration) -> ClaimantConfig {
        ClaimantConfig {
            replication: N,
            settle,
            tick: Duration::from_millis(100),
        }
    }

    /// Every alive node runs one claimant tick on its own copy of `state`
    /// with the same view; returns the ids of the nodes that moved the ring.
    fn tick_everywhere(
        view: &View,
        state: Option<&RingState>,
        settle: Duration,
        stable_since: Instant,
    ) -> Vec<String> {
        moves(view, state, settle, stable_since)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// The nodes that moved the ring in one tick, with the state each made.
    fn moves(
        view: &View,
        state: Option<&RingState>,
        settle: Duration,
        stable_since: Instant,
    ) -> Vec<(String, Arc<RingState>)> {
        let eligible: BTreeSet<String> = view.alive().map(|p| p.id.clone()).collect();
        let mut moved = Vec::new();
        for me in &eligible {
            let dir = tempfile::tempdir().expect("dir");
            let ring = ring(dir.path(), state);
            let before = ring.rank();
            claim(view, me, &ring, &config(settle), &eligible, stable_since).expect("claim");
            if ring.rank() != before {
                moved.push((me.clone(), ring.state().expect("a state")));
            }
        }
        moved
    }

    fn ids(layout: &Layout) -> BTreeSet<String> {
        layout.members().iter().map(|m| m.id.clone()).collect()
    }

    fn view(alive: u8, members: u8, version: u64, joining: u8, leaving: u8) -> View {
        let peers: BTreeMap<String, Peer> = (0..NODES)
            .map(|i| {
                let member = members & (1 << i) != 0;
                let mut peer = Peer::for_test(&id(i), alive & (1 << i) != 0, 0);
                peer.layout_version = if member { version } else { 0 };
                peer.status = if leaving & (1 << i) != 0 {
                    NodeStatus::Leaving
                } else if joining & (1 << i) != 0 || !member {
                    NodeStatus::Joining
                } else {
                    NodeStatus::Normal
                };
                (id(i), peer)
            })
            .collect();
        View { peers }
    }

    /// A settled state of `version`, as a peer would serve it.
    fn settled(version: u64) -> RingState {
        let members = (0..N).map(|i| Member::new(id(i))).collect();
        RingState::settled(
            version,
            Arc::new(Layout::initial(8, N, members).expect("layout")),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// A node adopts the newest state that any live, reachable peer
        /// serves: it asks the peers that announce a state above its own,
        /// from the highest rank down, and stops at the first that serves
        /// one. Peers that cannot be reached, however high they rank, never
        /// keep it behind.
        #[test]
        fn a_node_adopts_the_newest_state_a_reachable_peer_serves(
            own in 1u64..4,
            // For each other node: alive in gossip, announced version,
            // reachable over gRPC.
            others in proptest::collection::vec((any::<bool>(), 0u64..6, any::<bool>()), NODES - 1),
        ) {
            let dir = tempfile::tempdir().expect("dir");
            let ring = ring(dir.path(), Some(&settled(own)));
            let rank = |version: u64| (version, settled(version).digest());
            let mut view = View { peers: BTreeMap::new() };
            let mut reachable = BTreeMap::new();
            for (i, (alive, version, reaches)) in others.iter().enumerate() {
                let mut peer = Peer::for_test(&id(i + 1), *alive, *version);
                peer.layout_digest = rank(*version).1;
                peer.partitions = 8;
                view.peers.insert(id(i + 1), peer);
                reachable.insert(id(i + 1), *reaches);
            }
            let tried = futures::executor::block_on(adopt_newest(&view, &id(0), &ring, |peer| {
                let (reaches, version) = (reachable[&peer.id], peer.layout_version);
                async move {
                    if reaches {
                        Ok(settled(version))
                    } else {
                        Err(ClaimError::Fetch {
                            peer: peer.id.clone(),
                            status: tonic::Status::unavailable("unreachable"),
                        })
                    }
                }
            }));

            let candidates: Vec<(u64, bool)> = others
                .iter()
                .filter(|(alive, version, _)| *alive && rank(*version) > rank(own))
                .map(|(_, version, reaches)| (*version, *reaches))
                .collect();
            let newest = candidates
                .iter()
                .filter(|(_, reaches)| *reaches)
                .map(|(version, _)| rank(*version))
                .max()
                .unwrap_or(rank(own));
            prop_assert_eq!(ring.rank(), newest);
            // In rank order, and no further than the first that served one.
            let ranks: Vec<(u64, u64)> = tried.iter().map(|p| rank(view.peers[*p].layout_version)).collect();
            prop_assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{:?}", ranks);
            let first_served = tried.iter().position(|p| reachable[*p]);
            match first_served {
                Some(i) => prop_assert_eq!(i + 1, tried.len()),
                None => prop_assert_eq!(tried.len(), candidates.len()),
            }
        }
    }

    #[test]
    fn the_first_layout_waits_for_n_live_nodes_and_a_settled_membership() {
        let settle = Duration::from_secs(60);
        let long_ago = Instant::now() - Duration::from_secs(120);
        // Two of three: no layout, however long membership has been stable.
        assert!(tick_everywhere(&view(0b011, 0, 0, 0, 0), None, settle, long_ago).is_empty());
        // Three, but membership just changed: not yet.
        assert!(tick_everywhere(&view(0b111, 0, 0, 0, 0), None, settle, Instant::now()).is_empty());
        // Three, settled: the lowest id makes it, and only it.
        assert_eq!(
            tick_everywhere(&view(0b1110, 0, 0, 0, 0), None, settle, long_ago),
            vec![id(1)]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the membership, one node at a time moves the ring: the
        /// lowest live member of the current layout (before any layout, the
        /// lowest live node), and it does make the step that is due.
        #[test]
        fn exactly_one_live_node_moves_the_ring(
            alive in 0u8..64,
            members in 0u8..64,
            joining in 0u8..64,
            leaving in 0u8..64,
        ) {
            let long_ago = Instant::now() - Duration::from_secs(120);
            let member_ids: Vec<usize> = (0..NODES).filter(|i| members & (1 << i) != 0).collect();
            let state = (member_ids.len() >= N).then(|| {
                let layout = Layout::initial(8, N, member_ids.iter().map(|&i| Member::new(id(i))).collect())
                    .expect("layout");
                RingState::settled(1, Arc::new(layout))
            });
            let leaving = leaving & members;
            let view = view(alive, if state.is_some() { members } else { 0 }, 1, joining & !members, leaving);
            let moved = tick_everywhere(&view, state.as_ref(), Duration::ZERO, long_ago);
            prop_assert!(moved.len() <= 1, "{moved:?} all moved the ring");

            let alive_ids: Vec<usize> = (0..NODES).filter(|i| alive & (1 << i) != 0).collect();
            let (claimant, due) = match &state {
                None => {
                    let founders = alive_ids.iter().filter(|i| leaving & (1 << *i) == 0).count();
                    (alive_ids.first().copied(), founders >= N)
                }
                Some(_) => {
                    let claimant = member_ids.iter().copied().find(|i| alive & (1 << i) != 0);
                    let departure = leaving != 0 && member_ids.len() > N;
                    let arrival = alive_ids.iter().any(|i| members & (1 << i) == 0);
                    (claimant, departure || arrival)
                }
            };
            let expected: Vec<String> = claimant.filter(|_| due).map(id).into_iter().collect();
            prop_assert_eq!(&moved, &expected);

            // And the step it makes: the first layout of the live nodes not
            // leaving; else the first departure that leaves N members; else
            // the first live newcomer.
            let Some((_, made)) = moves(&view, state.as_ref(), Duration::ZERO, long_ago).pop() else {
                return Ok(());
            };
            let alive_not_leaving: BTreeSet<String> = alive_ids
                .iter()
                .filter(|i| leaving & (1 << **i) == 0)
                .map(|&i| id(i))
                .collect();
            match &state {
                None => prop_assert_eq!(ids(&made.current), alive_not_leaving),
                Some(before) => {
                    let next = made.next.as_ref().expect("a transition starts");
                    let mut expected = ids(&before.current);
                    let first_leaving = member_ids.iter().copied().find(|i| leaving & (1 << i) != 0);
                    match first_leaving.filter(|_| member_ids.len() > N) {
                        Some(gone) => {
                            expected.remove(&id(gone));
                        }
                        None => {
                            let newcomer = alive_ids
                                .iter()
                                .copied()
                                .find(|i| members & (1 << i) == 0)
                                .expect("a newcomer");
                            expected.insert(id(newcomer));
                        }
                    }
                    prop_assert_eq!(ids(next), expected);
                    prop_assert_eq!(made.version, before.version + 1);
                }
            }
        }

        /// One transition at a time: while partitions move, no other join or
        /// departure starts, and the claimant promotes `next` only once every
        /// receiver has synced and every live member has adopted the state.
        #[test]
        fn a_transition_under_way_starts_no_other_and_promotes_when_synced(
            alive in 0u8..64,
            joining in 0u8..64,
            leaving in 0u8..64,
            synced in any::<bool>(),
            adopted in any::<bool>(),
        ) {
            let long_ago = Instant::now() - Duration::from_secs(120);
            let members = 0b000111u8;
            let layout = Layout::initial(8, N, (0..3).map(|i| Member::new(id(i))).collect())
                .expect("layout");
            let settled = RingState::settled(1, Arc::new(layout.clone()));
            let next = layout.with_member_added(Member::new(id(3))).expect("next");
            let moving = transition(&settled, next.clone());
            let mut view = view(alive, members, moving.version, joining & !members, leaving & members);
            for peer in view.peers.values_mut() {
                if peer.id == id(3) {
                    peer.status = NodeStatus::Joining;
                    peer.synced = if synced { moving.version } else { 0 };
                }
                peer.layout_version = if adopted || members & 1 == 0 { moving.version } else { 0 };
                if members & (1 << peer.id[1..].parse::<u8>().expect("index")) != 0 {
                    peer.layout_version = if adopted { moving.version } else { 1 };
                }
            }
            let made = moves(&view, Some(&moving), Duration::ZERO, long_ago);
            let claimant = (0..3).find(|i| alive & (1 << i) != 0);
            let alive_members_adopted = adopted || (0..3).all(|i| alive & (1 << i) == 0);
            let newcomer_adopted = view.peers.get(&id(3)).is_some_and(|p| !p.alive || p.layout_version >= moving.version);
            let others_adopted = view.alive().all(|p| p.layout_version >= moving.version);
            let due = claimant.is_some()
                && synced
                && alive_members_adopted
                && newcomer_adopted
                && others_adopted;
            prop_assert_eq!(made.len(), usize::from(due), "{:?}", made.iter().map(|(id, _)| id).collect::<Vec<_>>());
            if let Some((who, promoted)) = made.first() {
                prop_assert_eq!(who, &id(claimant.expect("a claimant")));
                prop_assert_eq!(ids(&promoted.current), ids(&next));
                prop_assert!(promoted.next.is_none());
                prop_assert_eq!(promoted.previous.as_ref().map(|p| ids(p)), Some(ids(&layout)));
                // Coordinators that missed the transition are refused from now on.
                prop_assert_eq!(promoted.floor, moving.version);
            }
        }

        /// After a promotion, while the former layout is kept: no join or
        /// departure starts, and the claimant ends the transition (dropping
        /// the former layout and raising the floor to the promotion) only
        /// once every live node has adopted the promotion.
        #[test]
        fn a_promotion_ends_only_once_every_live_node_adopted_it(
            alive in 0u8..64,
            adopted in 0u8..64,
            joining in 0u8..64,
            leaving in 0u8..64,
        ) {
            let long_ago = Instant::now() - Duration::from_secs(120);
            let members = 0b001111u8;
            let layout = Layout::initial(8, N, (0..3).map(|i| Member::new(id(i))).collect())
                .expect("layout");
            let next = layout.with_member_added(Member::new(id(3))).expect("next");
            let moving = transition(&RingState::settled(1, Arc::new(layout.clone())), next.clone());
            let promoted = RingState {
                version: moving.version + 1,
                current: Arc::new(next.clone()),
                next: None,
                previous: Some(Arc::new(layout)),
                floor: moving.version,
            };
            let mut view = view(alive, members, promoted.version, joining & !members, leaving & members);
            for (i, peer) in view.peers.values_mut().enumerate() {
                peer.layout_version = if adopted & (1 << i) != 0 { promoted.version } else { moving.version };
            }
            let made = moves(&view, Some(&promoted), Duration::ZERO, long_ago);
            let claimant = (0..4).find(|i| alive & (1 << i) != 0);
            let everyone_adopted = view.alive().all(|p| p.layout_version >= promoted.version);
            let due = claimant.is_some() && everyone_adopted;
            prop_assert_eq!(made.len(), usize::from(due), "{:?}", made.iter().map(|(id, _)| id).collect::<Vec<_>>());
            if let Some((who, ended)) = made.first() {
                prop_assert_eq!(who, &id(claimant.expect("a claimant")));
                prop_assert_eq!(ended.version, promoted.version + 1);
                prop_assert_eq!(ids(&ended.current), ids(&next));
                prop_assert!(ended.next.is_none() && ended.previous.is_none());
                prop_assert_eq!(ended.floor, promoted.version);
            }
        }
    }
}
