//! The client's deadline, carried from the request that arrived to every
//! call this node makes to a replica on its behalf.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// The longest part of a client's deadline kept back for the coordinator's
/// own answer.
const MAX_RESERVE: Duration = Duration::from_millis(100);

/// When the client stops waiting, fixed when its request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    reserve: Duration,
}

impl Deadline {
    /// The deadline of a request whose `grpc-timeout` is `timeout`, from now.
    pub fn after(timeout: Duration) -> Self {
        Self {
            at: Instant::now() + timeout,
            reserve: (timeout / 10).min(MAX_RESERVE),
        }
    }

    /// The deadline a request carries in the standard `grpc-timeout` header,
    /// if any.
    pub fn of(metadata: &MetadataMap) -> Option<Self> {
        grpc_timeout(metadata).map(Self::after)
    }

    /// How long a call to a replica may still take. A tenth of the whole
    /// deadline (at most 100 ms) is kept back, so that a coordinator whose
    /// replicas are slow answers in time with what it got (a quorum error
    /// naming how many replied) instead of the client seeing a bare
    /// timeout. Computed per call, so the phases of one request (a blind
    /// delete's read, then its write) share the deadline.
    pub fn for_replicas(&self) -> Duration {
        self.at
            .saturating_duration_since(Instant::now())
            .saturating_sub(self.reserve)
    }
}

/// The standard `grpc-timeout` header: digits and a unit letter.
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)
}

/// A `grpc-timeout` value: digits and a unit letter.
pub fn parse_grpc_timeout(raw: &str) -> Option<Duration> {
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().expect("ascii"));
        metadata
    }

    #[test]
    fn every_grpc_timeout_unit_is_read() {
        for (header, expected) in [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("4S", Duration::from_secs(4)),
            ("1500m", Duration::from_millis(1500)),
            ("250000u", Duration::from_millis(250)),
            ("7000000n", Duration::from_millis(7)),
        ] {
            assert_eq!(
                grpc_timeout(&with_timeout(header)),
                Some(expected),
                "{header}"
            );
        }
        for bad in ["", "S", "12", "1x", "-1S"] {
            assert_eq!(grpc_timeout(&with_timeout(bad)), None, "{bad:?}");
        }
        assert_eq!(Deadline::of(&MetadataMap::new()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_get_what_is_left_less_a_reserve_for_the_answer() {
        let deadline = Deadline::after(Duration::from_secs(2));
        assert_eq!(deadline.for_replicas(), Duration::from_millis(1900));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(deadline.for_replicas(), Duration::from_millis(400));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(deadline.for_replicas(), Duration::ZERO);

        let short = Deadline::after(Duration::from_millis(300));
        assert_eq!(short.for_replicas(), Duration::from_millis(270));
    }
}
