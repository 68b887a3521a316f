//! Wall-clock time as the replica logic sees it.
//!
//! TTLs, tombstone grace periods, hint ages and the hybrid logical clock all
//! read the time through one handle, so that the model-based tests can move
//! time by hand across a whole simulated cluster and run a grace period of
//! hours in microseconds, with the very code that runs in production.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

/// Where "now" comes from: the system clock, or a clock moved by hand.
#[derive(Debug, Clone, Default)]
pub struct WallClock {
    manual: Option<Arc<AtomicU64>>,
}

impl WallClock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands at `start_ms` until [`WallClock::advance`] moves
    /// it; every clone shares it.
    pub fn manual(start_ms: u64) -> Self {
        Self {
            manual: Some(Arc::new(AtomicU64::new(start_ms))),
        }
    }

    /// Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::Acquire),
            None => crate::storage::now_millis(),
        }
    }

    /// Moves a manual clock forward; the system clock cannot be moved, so
    /// this does nothing to it.
    pub fn advance(&self, ms: u64) {
        if let Some(now) = &self.manual {
            now.fetch_add(ms, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_by_hand_and_clones_share_it() {
        let clock = WallClock::manual(1_000);
        let twin = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        twin.advance(500);
        assert_eq!(clock.now_ms(), 1_500);
        let system = WallClock::system();
        assert!(system.now_ms() > 1_600_000_000_000);
    }
}
