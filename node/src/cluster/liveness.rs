//! Which peers count as alive: phi accrual's verdict, except that a peer
//! whose heartbeat advanced lately is alive whatever phi says.
//!
//! Chitchat's phi is the time since a peer's last heartbeat over the mean
//! interval between its heartbeats. Under load, gossip messages are
//! processed in bursts: many heartbeats land milliseconds apart, the mean
//! collapses, and the next ordinary gap crosses the threshold. On a
//! saturated 2-core machine a node saw both of its peers dead most of the
//! time and failed reads at R=2 that every replica would have answered.
//! A heartbeat that advanced within a grace period is proof of life that
//! no mean can argue with; a peer that really stopped is still declared
//! dead once the grace has passed and phi agrees.

use std::{collections::HashMap, hash::Hash, time::Duration, time::Instant};

/// When each peer's heartbeat last advanced.
#[derive(Debug)]
pub(crate) struct HeartbeatClock<K> {
    last: HashMap<K, (u64, Instant)>,
    grace: Duration,
}

impl<K: Hash + Eq + Clone> HeartbeatClock<K> {
    pub fn new(grace: Duration) -> Self {
        Self {
            last: HashMap::new(),
            grace,
        }
    }

    /// Records `peer`'s heartbeat as gossip shows it at `now`; returns
    /// whether it is news: a peer first seen, or a heartbeat that advanced.
    pub fn observe(&mut self, peer: &K, beat: u64, now: Instant) -> bool {
        match self.last.get_mut(peer) {
            Some((seen, _)) if *seen >= beat => false,
            Some(entry) => {
                *entry = (beat, now);
                true
            }
            None => {
                self.last.insert(peer.clone(), (beat, now));
                true
            }
        }
    }

    /// Whether `peer`'s heartbeat advanced within the grace before `now`.
    pub fn beat_lately(&self, peer: &K, now: Instant) -> bool {
        self.last
            .get(peer)
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) < self.grace)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Against a model: a peer beat lately exactly when its heartbeat
        /// last rose above every earlier one within the grace.
        #[test]
        fn a_peer_beat_lately_when_its_heartbeat_last_rose_within_the_grace(
            steps in prop::collection::vec((0u8..3, 0u64..6, 0u64..400), 1..60),
            grace_ms in 1u64..1000,
        ) {
            let start = Instant::now();
            let grace = Duration::from_millis(grace_ms);
            let mut clock = HeartbeatClock::new(grace);
            let mut model: HashMap<u8, (u64, u64)> = HashMap::new();
            let mut now_ms = 0;
            for (peer, beat, wait) in steps {
                now_ms += wait;
                let now = start + Duration::from_millis(now_ms);
                let news = clock.observe(&peer, beat, now);
                let expected = model.get(&peer).is_none_or(|(seen, _)| beat > *seen);
                prop_assert_eq!(news, expected);
                if expected {
                    model.insert(peer, (beat, now_ms));
                }
                for other in 0u8..3 {
                    let lately = model
                        .get(&other)
                        .is_some_and(|(_, at)| now_ms - at < grace_ms);
                    prop_assert_eq!(clock.beat_lately(&other, now), lately);
                }
            }
        }
    }
}
