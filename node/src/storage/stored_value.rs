//! The on-disk encoding of a stored value.
//!
//! Layout: one format byte, then the expiry as big-endian Unix milliseconds
//! (0 = never), then the value. The header lets the compaction filter purge
//! expired values without knowing anything else about them.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::StorageError;

const FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 8;

/// A decoded stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// Unix milliseconds after which the value is gone, if it expires.
    pub expires_at_ms: Option<u64>,
    pub value: Bytes,
}

impl StoredValue {
    pub fn encode(value: &[u8], expires_at_ms: Option<u64>) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + value.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&expires_at_ms.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    pub fn decode(key: &[u8], raw: &[u8]) -> Result<Self, StorageError> {
        let expires_at_ms = header_expiry(raw).ok_or_else(|| StorageError::Corrupt {
            key_len: key.len(),
            reason: format!("stored value of {} bytes has no valid header", raw.len()),
        })?;
        Ok(StoredValue {
            expires_at_ms,
            value: Bytes::copy_from_slice(&raw[HEADER_LEN..]),
        })
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// The expiry in a raw stored value's header: `None` when the header is invalid,
/// `Some(None)` when the value never expires.
fn header_expiry(raw: &[u8]) -> Option<Option<u64>> {
    if raw.len() < HEADER_LEN || raw[0] != FORMAT_V1 {
        return None;
    }
    let mut expiry = [0u8; 8];
    expiry.copy_from_slice(&raw[1..HEADER_LEN]);
    let at = u64::from_be_bytes(expiry);
    Some((at != 0).then_some(at))
}

/// Whether a raw stored value has expired; corrupt values are kept so that a
/// compaction never silently destroys what it cannot read.
pub(super) fn raw_is_expired(raw: &[u8], now_ms: u64) -> bool {
    matches!(header_expiry(raw), Some(Some(at)) if at <= now_ms)
}

/// The stored value inside a raw stored value, if its header is valid.
pub(super) fn payload(raw: &[u8]) -> Option<&[u8]> {
    header_expiry(raw).map(|_| &raw[HEADER_LEN..])
}

/// Wall-clock Unix milliseconds.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_expiry() {
        for expiry in [None, Some(1_700_000_000_000)] {
            let raw = StoredValue::encode(b"value", expiry);
            let stored = StoredValue::decode(b"k", &raw).expect("decodes");
            assert_eq!(stored.expires_at_ms, expiry);
            assert_eq!(&stored.value[..], b"value");
        }
    }

    #[test]
    fn expiry_is_inclusive_and_corrupt_values_never_expire() {
        let raw = StoredValue::encode(b"v", Some(100));
        assert!(!raw_is_expired(&raw, 99));
        assert!(raw_is_expired(&raw, 100));
        assert!(!raw_is_expired(b"\x07garbage", u64::MAX));
        assert!(StoredValue::decode(b"k", b"\x01short").is_err());
    }
}
