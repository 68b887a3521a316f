//! Routing decisions, pure: who owns a key, this node's place among its
//! owners, and which nodes a write must reach in a ring state.
//!
//! Every function here takes the ring state (and the membership view) as
//! values, so the table tests below cover each transition state without a
//! cluster; the coordinator and the relay only act on what they decide.

use crate::{
    cluster::membership::View,
    ring::{Layout, LayoutError, RingState},
};

use super::place::Place;

/// A key's partition and its owners (its preference list) in `layout`.
pub(crate) fn owners(layout: &Layout, key: &[u8]) -> Result<(u32, Vec<String>), LayoutError> {
    let partition = layout.partition_for_key(key);
    let owners = layout
        .preference_list(partition)?
        .into_iter()
        .map(String::from)
        .collect();
    Ok((partition, owners))
}

/// A node's place among the owners of one key in one ring state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Roles {
    pub partition: u32,
    /// The key's owners in the current layout.
    pub now: Vec<String>,
    pub place: Place,
}

/// `me`'s place, in `state`, among the owners of `key`.
pub(crate) fn roles(state: &RingState, key: &[u8], me: &str) -> Result<Roles, LayoutError> {
    let (partition, now) = owners(&state.current, key)?;
    let in_next = match &state.next {
        Some(next) => owners(next, key)?.1.iter().any(|id| id == me),
        None => false,
    };
    let in_now = now.iter().any(|id| id == me);
    Ok(Roles {
        partition,
        place: Place {
            in_now,
            in_next,
            former: !in_now
                && !in_next
                && state.previous_owners(partition).iter().any(|id| id == me),
            in_transition: state.next.is_some(),
        },
        now,
    })
}

/// Where a write this node coordinates must go, decided from the ring state
/// read after the local write (see `Coordinator::replicate_stamped`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WriteTargets {
    pub partition: u32,
    /// The key's owners now: W of them must hold the write.
    pub owners: Vec<String>,
    /// The owners before the last promotion, while the state keeps them:
    /// members that have not adopted the promotion still read them, so W of
    /// them must hold the write too.
    pub previous: Vec<String>,
    /// Previous owners that own the key no longer: they get the write as
    /// replicas, besides `owners`.
    pub former: Vec<String>,
    /// Nodes receiving the partition: they get every write, so that nothing
    /// written during their stream is missed.
    pub receivers: Vec<String>,
    /// Whether the coordinator hands the partition off: then its own copy
    /// counts only once the receivers hold the write, as the stream may be
    /// past the key already; and it sends them the write as part of that
    /// acknowledgement rather than besides it.
    pub handing_off: bool,
    /// Whether the coordinator's own copy counts at once.
    pub counts_self: bool,
}

/// Where a write that `me` coordinates in `state` must go.
pub(crate) fn write_targets(
    state: &RingState,
    key: &[u8],
    me: &str,
) -> Result<WriteTargets, LayoutError> {
    let roles = roles(state, key, me)?;
    let partition = roles.partition;
    let handing_off = roles.place.hands_off();
    let previous = state.previous_owners(partition);
    let former = previous
        .iter()
        .filter(|id| !roles.now.contains(id) && *id != me)
        .cloned()
        .collect();
    Ok(WriteTargets {
        partition,
        counts_self: roles.place.in_now && !handing_off,
        receivers: state
            .receivers(partition)
            .into_iter()
            .filter(|id| id != me)
            .collect(),
        owners: roles.now,
        previous,
        former,
        handing_off,
    })
}

/// The live fallbacks of `partition` other than `me`, in reverse: they are
/// popped from the end, so the first fallback goes first.
pub(crate) fn live_fallbacks(
    layout: &Layout,
    partition: u32,
    view: &View,
    me: &str,
) -> Vec<String> {
    let mut fallbacks: Vec<String> = layout
        .fallbacks(partition)
        .unwrap_or_default()
        .into_iter()
        .filter(|id| *id != me && view.is_alive(id))
        .map(String::from)
        .collect();
    fallbacks.reverse();
    fallbacks
}

/// Which of a key's owners a read asks: the live ones, and this node
/// whatever gossip says of it.
pub(crate) fn read_targets(owners: &[String], view: &View, me: &str) -> Vec<String> {
    owners
        .iter()
        .filter(|id| view.is_alive(id) || *id == me)
        .cloned()
        .collect()
}

/// The owner a node that does not replicate a key passes a client's write
/// to: the first live one, which coordinates it.
pub(crate) fn write_coordinator<'a>(owners: &'a [String], view: &View) -> Option<&'a String> {
    owners.iter().find(|id| view.is_alive(id))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{cluster::membership::Peer, ring::Member};

    const PARTITIONS: u32 = 8;

    fn layout(ids: &[&str]) -> Arc<Layout> {
        let members = ids.iter().map(|id| Member::new(*id)).collect();
        Arc::new(Layout::initial(PARTITIONS, 2, members).expect("layout"))
    }

    fn view(alive: &[&str], dead: &[&str]) -> View {
        let mut view = View::default();
        for (id, up) in alive
            .iter()
            .map(|id| (id, true))
            .chain(dead.iter().map(|id| (id, false)))
        {
            view.peers.insert(id.to_string(), Peer::for_test(id, up, 1));
        }
        view
    }

    /// A key of `partition` in layouts of [`PARTITIONS`] partitions.
    fn key_in(partition: u32) -> Vec<u8> {
        (0u32..)
            .map(|i| format!("key-{i}").into_bytes())
            .find(|k| crate::ring::partition_of(k, PARTITIONS) == partition)
            .expect("some key falls in every partition")
    }

    /// The three states of one transition: `before` moving to `after`, then
    /// promoted, keeping `before` as the previous layout.
    fn transition(before: &[&str], after: &[&str]) -> [RingState; 3] {
        let (from, to) = (layout(before), layout(after));
        let settled = RingState::settled(1, from.clone());
        let moving = RingState {
            version: 2,
            next: Some(to.clone()),
            ..settled.clone()
        };
        let promoted = RingState {
            version: 3,
            current: to,
            next: None,
            previous: Some(from),
            floor: 0,
        };
        [settled, moving, promoted]
    }

    /// A partition whose owners change between `before` and `after`, with a
    /// node giving it up and a node gaining it.
    fn moving_partition(before: &Layout, after: &Layout) -> (u32, String, String) {
        (0..PARTITIONS)
            .find_map(|p| {
                let (from, to) = (
                    before.preference_list(p).ok()?,
                    after.preference_list(p).ok()?,
                );
                let leaver = from.iter().find(|id| !to.contains(id))?;
                let gainer = to.iter().find(|id| !from.contains(id))?;
                Some((p, leaver.to_string(), gainer.to_string()))
            })
            .expect("a partition changes owners")
    }

    #[test]
    fn write_targets_follow_each_state_of_a_transition() {
        let [settled, moving, promoted] = transition(&["a", "b", "c"], &["a", "b", "c", "d"]);
        let next = moving.next.clone().expect("next");
        let (partition, leaver, gainer) = moving_partition(&settled.current, &next);
        let key = key_in(partition);
        let stays = settled
            .current
            .preference_list(partition)
            .expect("owners")
            .into_iter()
            .find(|id| *id != leaver)
            .expect("an owner stays")
            .to_string();

        struct Row<'a> {
            state: &'a RingState,
            me: &'a str,
            counts_self: bool,
            handing_off: bool,
            receivers: Vec<String>,
            former: Vec<String>,
        }
        let row =
            |state, me, counts_self, handing_off, receivers: &[&String], former: &[&String]| Row {
                state,
                me,
                counts_self,
                handing_off,
                receivers: receivers.iter().map(|id| id.to_string()).collect(),
                former: former.iter().map(|id| id.to_string()).collect(),
            };
        let table = [
            row(&settled, &leaver, true, false, &[], &[]),
            row(&moving, &stays, true, false, &[&gainer], &[]),
            row(&moving, &leaver, false, true, &[&gainer], &[]),
            row(&promoted, &gainer, true, false, &[], &[&leaver]),
            row(&promoted, &stays, true, false, &[], &[&leaver]),
        ];
        for Row {
            state,
            me,
            counts_self,
            handing_off,
            receivers,
            former,
        } in table
        {
            let targets = write_targets(state, &key, me).expect("targets");
            let case = format!("version {} coordinated by {me}", state.version);
            assert_eq!(targets.partition, partition, "{case}");
            assert_eq!(targets.counts_self, counts_self, "{case}: counts itself");
            assert_eq!(targets.handing_off, handing_off, "{case}: hands off");
            assert_eq!(targets.receivers, receivers, "{case}: receivers");
            assert_eq!(targets.former, former, "{case}: former owners");
            let previous_kept = state.previous.is_some();
            assert_eq!(
                !targets.previous.is_empty(),
                previous_kept,
                "{case}: previous owners"
            );
        }
    }

    #[test]
    fn a_node_outside_every_layout_has_no_place() {
        let [settled, moving, promoted] = transition(&["a", "b", "c"], &["a", "b", "c", "d"]);
        for state in [&settled, &moving, &promoted] {
            let roles = roles(state, b"k", "stranger").expect("roles");
            assert!(roles.place.outsider(), "version {}", state.version);
            let targets = write_targets(state, b"k", "stranger").expect("targets");
            assert!(!targets.counts_self, "version {}", state.version);
        }
    }

    #[test]
    fn reads_ask_live_owners_and_this_node_whatever_gossip_says() {
        let owners: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let table = [
            (view(&["a", "b", "c"], &[]), "a", vec!["a", "b", "c"]),
            (view(&["a", "c"], &["b"]), "a", vec!["a", "c"]),
            // This node is absent from its own view while gossip starts.
            (view(&["b"], &[]), "a", vec!["a", "b"]),
            (view(&[], &["a", "b", "c"]), "z", vec![]),
        ];
        for (view, me, expected) in table {
            assert_eq!(read_targets(&owners, &view, me), expected, "me {me}");
        }
    }

    #[test]
    fn a_write_from_outside_goes_to_the_first_live_owner() {
        let owners: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let table = [
            (view(&["a", "b", "c"], &[]), Some("a")),
            (view(&["b", "c"], &["a"]), Some("b")),
            (view(&[], &["a", "b", "c"]), None),
        ];
        for (view, expected) in table {
            assert_eq!(
                write_coordinator(&owners, &view).map(String::as_str),
                expected
            );
        }
    }

    #[test]
    fn fallbacks_skip_this_node_and_the_dead_and_pop_in_order() {
        let layout = layout(&["a", "b", "c", "d", "e"]);
        let partition = 0;
        let all: Vec<String> = layout
            .fallbacks(partition)
            .expect("fallbacks")
            .into_iter()
            .map(String::from)
            .collect();
        assert!(all.len() >= 2, "five nodes at N=2 leave fallbacks");
        let (first, second) = (all[0].clone(), all[1].clone());
        let everyone: Vec<&str> = ["a", "b", "c", "d", "e"].to_vec();
        let mut popped = live_fallbacks(&layout, partition, &view(&everyone, &[]), "none");
        assert_eq!(popped.pop(), Some(first.clone()));
        assert_eq!(popped.pop(), Some(second.clone()));

        let without_first: Vec<&str> = everyone.iter().copied().filter(|id| *id != first).collect();
        let mut popped =
            live_fallbacks(&layout, partition, &view(&without_first, &[&first]), "none");
        assert_eq!(
            popped.pop(),
            Some(second.clone()),
            "a dead fallback is skipped"
        );

        let popped = live_fallbacks(&layout, partition, &view(&everyone, &[]), &first);
        assert!(
            !popped.contains(&first),
            "the coordinator is no fallback of itself"
        );
    }
}
