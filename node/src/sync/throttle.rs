//! A byte-rate limit for background scans and streams, so that anti-entropy
//! and handoff take a bounded share of I/O and bandwidth.

use std::time::{Duration, Instant};

/// Holds a scan back whenever it runs ahead of `bytes_per_sec`. Checked once per MiB, so its cost is negligible.
pub struct Throttle {
    bytes_per_sec: u64,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    /// A limit of 0 means unlimited.
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec,
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Accounts `bytes` and sleeps the calling blocking thread if the rate
    /// is ahead.
    pub fn account(&mut self, bytes: usize) {
        if let Some(ahead) = self.wait_for(bytes) {
            std::thread::sleep(ahead);
        }
    }

    /// Accounts `bytes` and says how long to wait before going on, for a
    /// caller that waits without a thread of its own.
    pub fn wait_for(&mut self, bytes: usize) -> Option<Duration> {
        if self.bytes_per_sec == 0 {
            return None;
        }
        let before = self.bytes;
        self.bytes += bytes as u64;
        if before >> 20 == self.bytes >> 20 {
            return None;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        due.checked_sub(self.started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate() {
        let mut throttle = Throttle::new(20 << 20);
        let started = Instant::now();
        for _ in 0..(4 << 10) {
            throttle.account(1 << 10); // 4 MiB in 1 KiB steps
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(180),
            "4 MiB at 20 MiB/s took {took:?}"
        );
    }

    #[test]
    fn zero_is_unlimited() {
        let mut throttle = Throttle::new(0);
        let started = Instant::now();
        for _ in 0..(64 << 10) {
            throttle.account(1 << 10);
        }
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
