//! Whether this node is in touch with the cluster.
//!
//! A node that stopped running for a while (SIGSTOP, a frozen VM, a long
//! stall of its runtime), or that has just started, may hold a ring state
//! the cluster has moved past: its peers may have declared it dead and moved
//! its partitions away. Its own copies of those partitions are then stale,
//! and an answer from them alone (R=1) would miss acknowledged writes. Such
//! a node coordinates nothing until gossip has brought it news from a peer,
//! and with that news the ring state versions and floors its peers hold
//! (see `coordinator::stale_coordinator`).
//!
//! A stall is noticed by the gossip loop itself: a pass that comes much
//! later than its interval. A request that arrives before that pass is
//! still caught, because the last pass is then too long ago.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// What this node knows about its own contact with the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Gossip has brought news from a peer since this node started or last
    /// stalled.
    Heard,
    /// The gossip loop has not run for this long: the node is stalled, or
    /// has just resumed and not yet noticed.
    Stalled(Duration),
    /// No news from any peer since this node started or stalled, this long
    /// ago.
    Unheard(Duration),
}

/// Tracks [`Touch`] from the passes of the gossip loop.
pub struct Contact {
    stall: Duration,
    state: Mutex<State>,
}

struct State {
    last_pass: Instant,
    since: Instant,
    heard: bool,
}

impl Contact {
    /// A node that started at `now`, and counts a gap of more than `stall`
    /// between two passes of the gossip loop as a stall.
    pub fn new(stall: Duration, now: Instant) -> Self {
        Self {
            stall,
            state: Mutex::new(State {
                last_pass: now,
                since: now,
                heard: false,
            }),
        }
    }

    /// One pass of the gossip loop at `now`; `heard` says whether a peer's
    /// heartbeat advanced since the last pass. News that arrives in the
    /// pass that notices a stall may have waited in the socket through it,
    /// so it counts from the next pass on.
    pub fn pass(&self, now: Instant, heard: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(state.last_pass) > self.stall {
            state.since = now;
            state.heard = false;
        } else if heard {
            state.heard = true;
        }
        state.last_pass = now;
    }

    pub fn touch(&self, now: Instant) -> Touch {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let quiet = now.saturating_duration_since(state.last_pass);
        if quiet > self.stall {
            Touch::Stalled(quiet)
        } else if !state.heard {
            Touch::Unheard(now.saturating_duration_since(state.since))
        } else {
            Touch::Heard
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const STALL: Duration = Duration::from_millis(1000);

    proptest! {
        /// Against a model, for any sequence of gossip passes (gaps in
        /// milliseconds, news or none) and a request some time after the
        /// last: the node is stalled if the last pass is more than the stall
        /// limit ago; otherwise in touch exactly when news came in a pass
        /// after the last stall (or the start), not in the pass that
        /// noticed the stall.
        #[test]
        fn in_touch_only_after_news_since_the_last_stall(
            passes in proptest::collection::vec((0u64..2500, any::<bool>()), 0..30),
            later in 0u64..2500,
        ) {
            let start = Instant::now();
            let contact = Contact::new(STALL, start);
            let mut now = start;
            let mut heard_since_stall = false;
            let mut since = start;
            for (gap, heard) in &passes {
                now += Duration::from_millis(*gap);
                contact.pass(now, *heard);
                if Duration::from_millis(*gap) > STALL {
                    heard_since_stall = false;
                    since = now;
                } else if *heard {
                    heard_since_stall = true;
                }
            }
            let asked = now + Duration::from_millis(later);
            let expected = if Duration::from_millis(later) > STALL {
                Touch::Stalled(Duration::from_millis(later))
            } else if heard_since_stall {
                Touch::Heard
            } else {
                Touch::Unheard(asked - since)
            };
            prop_assert_eq!(contact.touch(asked), expected);
        }
    }
}
