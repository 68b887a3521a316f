//! Warnings an outsider can trigger at will (refused credentials, garbage
//! datagrams) are logged at most once per interval, with the count of those
//! held back, so that they cannot flood the log.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

/// One kind of outsider-triggered warning.
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

impl LogLimit {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this occurrence may be logged, `n` being how many were
    /// held back since the last one logged; `None` to stay quiet.
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let Ok(mut last) = self.last.lock() else {
            return None;
        };
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_with_the_count_held_back() {
        let limit = LogLimit::new(Duration::from_millis(200));
        assert_eq!(limit.admit(), Some(0));
        for _ in 0..1000 {
            assert_eq!(limit.admit(), None);
        }
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(limit.admit(), Some(1000));
    }
}
