//! How long this node has listened to each peer without hearing it.
//!
//! chitchat's phi accrual declares a peer dead once the wall-clock time
//! since its last heartbeat passes eight mean gaps between heartbeat
//! sightings. Wall-clock time also runs while this node itself is not
//! running: a node starved of CPU, or paused, hears nothing meanwhile and,
//! when it runs again, judged peers dead for its own silence
//! (`cluster::a_pause_shorter_than_a_stall_is_never_seen_as_death`). A peer
//! declared dead after a silence shorter than a stall (`cluster::contact`)
//! breaks the stall check: the peer moves on without a node that does not
//! know it was left behind.
//!
//! So a peer also needs [`SILENCE_INTERVALS`] gossip intervals of
//! *listening* without a heartbeat before it counts as dead. Listening time
//! runs with the passes of the gossip loop: a pass adds the time since the
//! previous one, but never more than one interval, so time this node spent
//! stalled is not counted against its peers. Cassandra's failure detector
//! refuses to convict after a local pause for the same reason.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// Gossip intervals of listening without a heartbeat before a peer may
/// count as dead: more than a stall (`membership::STALL_INTERVALS`), and
/// about when phi accrual declares a silent peer dead on an idle cluster,
/// so that detection is not slower there.
pub(crate) const SILENCE_INTERVALS: u32 = 8;

/// Each peer's last heartbeat and the listening time at which it rose.
#[derive(Debug)]
pub(crate) struct Listening<K> {
    interval: Duration,
    silence: Duration,
    listened: Duration,
    last_pass: Option<Instant>,
    peers: HashMap<K, Heard>,
}

#[derive(Debug, Clone, Copy)]
struct Heard {
    beat: u64,
    /// The listening time at which `beat` was seen rise; `None` until it
    /// has risen once, so that a state first seen (maybe a dead process's
    /// leftover) proves nothing.
    rose_at: Option<Duration>,
}

impl<K: Hash + Eq + Clone> Listening<K> {
    /// Listening at passes `interval` apart; a peer is silent after
    /// [`SILENCE_INTERVALS`] of them without a heartbeat.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            silence: interval * SILENCE_INTERVALS,
            listened: Duration::ZERO,
            last_pass: None,
            peers: HashMap::new(),
        }
    }

    /// A pass of the gossip loop at `now`: listening time runs on by the
    /// time since the previous pass, at most one interval.
    pub fn pass(&mut self, now: Instant) {
        if let Some(last) = self.last_pass {
            self.listened += now.saturating_duration_since(last).min(self.interval);
        }
        self.last_pass = Some(now);
    }

    /// Records `peer`'s heartbeat as gossip shows it in this pass; returns
    /// whether it is news: a peer first seen, or a heartbeat that rose.
    pub fn observe(&mut self, peer: &K, beat: u64) -> bool {
        let listened = self.listened;
        match self.peers.get_mut(peer) {
            Some(heard) if heard.beat >= beat => false,
            Some(heard) => {
                *heard = Heard {
                    beat,
                    rose_at: Some(listened),
                };
                true
            }
            None => {
                self.peers.insert(
                    peer.clone(),
                    Heard {
                        beat,
                        rose_at: None,
                    },
                );
                true
            }
        }
    }

    /// Whether `peer`'s heartbeat rose within the last [`SILENCE_INTERVALS`]
    /// of listening.
    pub fn heard_lately(&self, peer: &K) -> bool {
        self.peers
            .get(peer)
            .and_then(|heard| heard.rose_at)
            .is_some_and(|at| self.listened - at < self.silence)
    }

    /// Forgets the peers for which `keep` is false (states gossip dropped).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.peers.retain(|peer, _| keep(peer));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const INTERVAL_MS: u64 = 100;

    /// One step of a history: a pass `wait_ms` after the previous one, in
    /// which gossip shows `peer` at heartbeat `beat`.
    fn steps() -> impl Strategy<Value = Vec<(u8, u64, u64)>> {
        prop::collection::vec((0u8..3, 0u64..8, 0u64..2_000), 1..80)
    }

    proptest! {
        /// Against a model that keeps the listening clock by hand: news is
        /// a first sighting or a rise, and a peer was heard lately exactly
        /// when its heartbeat last rose within the silence, counted in
        /// listening time.
        #[test]
        fn a_peer_is_heard_lately_when_its_heartbeat_rose_within_the_silence(steps in steps()) {
            let start = Instant::now();
            let mut listening = Listening::new(Duration::from_millis(INTERVAL_MS));
            let silence_ms = INTERVAL_MS * u64::from(SILENCE_INTERVALS);
            let (mut now_ms, mut listened_ms) = (0, 0);
            let mut model: HashMap<u8, (u64, Option<u64>)> = HashMap::new();
            for (i, (peer, beat, wait)) in steps.into_iter().enumerate() {
                now_ms += wait;
                if i > 0 {
                    listened_ms += wait.min(INTERVAL_MS);
                }
                listening.pass(start + Duration::from_millis(now_ms));
                let news = listening.observe(&peer, beat);
                let expected = match model.get(&peer) {
                    None => {
                        model.insert(peer, (beat, None));
                        true
                    }
                    Some((seen, _)) if beat > *seen => {
                        model.insert(peer, (beat, Some(listened_ms)));
                        true
                    }
                    Some(_) => false,
                };
                prop_assert_eq!(news, expected);
                for other in 0u8..3 {
                    let lately = model
                        .get(&other)
                        .and_then(|(_, at)| *at)
                        .is_some_and(|at| listened_ms - at < silence_ms);
                    prop_assert_eq!(listening.heard_lately(&other), lately);
                }
            }
        }

        /// What the stall check needs: a pass adds at most one interval,
        /// so a peer is never silent within fewer than
        /// [`SILENCE_INTERVALS`] passes of its last rise, however late
        /// those passes come because this node itself stopped.
        #[test]
        fn a_peer_is_not_silent_within_fewer_passes_than_the_silence(
            passes in prop::collection::vec((0u64..30_000, any::<bool>()), 1..80),
        ) {
            let start = Instant::now();
            let mut listening = Listening::new(Duration::from_millis(INTERVAL_MS));
            let (mut now_ms, mut beat) = (0, 0);
            listening.pass(start);
            listening.observe(&"peer", beat);
            let mut since_rise = None;
            for (wait, rises) in passes {
                now_ms += wait;
                listening.pass(start + Duration::from_millis(now_ms));
                since_rise = since_rise.map(|n| n + 1);
                if rises {
                    beat += 1;
                    since_rise = Some(0);
                }
                listening.observe(&"peer", beat);
                if since_rise.is_some_and(|n| n < SILENCE_INTERVALS) {
                    prop_assert!(listening.heard_lately(&"peer"), "{since_rise:?} passes after a rise");
                }
            }
        }

        /// And the other side: a peer heard once and then silent through
        /// passes on time is silent once the silence has passed.
        #[test]
        fn a_peer_silent_while_this_node_runs_is_silent_after_the_silence(
            passes in 1u32..40,
        ) {
            let start = Instant::now();
            let interval = Duration::from_millis(INTERVAL_MS);
            let mut listening = Listening::new(interval);
            listening.pass(start);
            listening.observe(&"peer", 1);
            listening.pass(start + interval);
            listening.observe(&"peer", 2);
            for pass in 1..=passes {
                listening.pass(start + interval * (pass + 1));
                listening.observe(&"peer", 2);
                prop_assert_eq!(listening.heard_lately(&"peer"), pass < SILENCE_INTERVALS);
            }
        }
    }

    #[test]
    fn a_state_first_seen_proves_nothing_until_its_heartbeat_rises() {
        let start = Instant::now();
        let mut listening = Listening::new(Duration::from_millis(INTERVAL_MS));
        listening.pass(start);
        assert!(
            listening.observe(&"leftover", 7),
            "a first sighting is news"
        );
        assert!(!listening.heard_lately(&"leftover"));
        listening.pass(start + Duration::from_millis(INTERVAL_MS));
        assert!(listening.observe(&"leftover", 8));
        assert!(listening.heard_lately(&"leftover"));
    }

    #[test]
    fn a_forgotten_peer_is_news_again() {
        let mut listening = Listening::new(Duration::from_millis(INTERVAL_MS));
        listening.pass(Instant::now());
        listening.observe(&"gone", 3);
        listening.retain(|peer| *peer != "gone");
        assert!(listening.observe(&"gone", 3));
    }
}
