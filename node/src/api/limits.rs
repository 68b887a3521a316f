//! Request validation: every limit a request can break, with a message that
//! names the limit and the flag that sets it.

use ringkv_proto::MAX_KEY_BYTES;
use tonic::Status;

/// `--max-scan-bytes`' default: a page moves on quickly and a few in flight
/// cost little memory.
pub const DEFAULT_MAX_SCAN_BYTES: usize = 4 << 20;

/// Request limits of one node.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_value_bytes: usize,
    pub max_batch_keys: usize,
    pub max_scan_limit: usize,
    /// Bytes of keys and values one scan response, or one replica's page of
    /// a scan, holds at most (plus the pair that crosses it).
    pub max_scan_bytes: usize,
    pub max_request_bytes: usize,
    /// The Replica service's decoding limit: a record may hold up to
    /// `--max-record-bytes` of siblings, more than a client request.
    pub max_peer_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_value_bytes: 8 << 20,
            max_batch_keys: 1024,
            max_scan_limit: 10_000,
            max_scan_bytes: DEFAULT_MAX_SCAN_BYTES,
            max_request_bytes: 16 << 20,
            max_peer_message_bytes: (32 << 20) + (1 << 20),
        }
    }
}

impl Limits {
    pub fn key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key is empty"));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes, over the limit of {MAX_KEY_BYTES} bytes",
                key.len()
            )));
        }
        Ok(())
    }

    pub fn value(&self, value: &[u8]) -> Result<(), Status> {
        if value.len() > self.max_value_bytes {
            return Err(Status::invalid_argument(format!(
                "value is {} bytes, over the limit of {} bytes (--max-value-bytes)",
                value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    pub fn batch(&self, len: usize) -> Result<(), Status> {
        if len == 0 {
            return Err(Status::invalid_argument("batch is empty"));
        }
        if len > self.max_batch_keys {
            return Err(Status::invalid_argument(format!(
                "batch has {len} keys, over the limit of {} keys (--max-batch-keys)",
                self.max_batch_keys
            )));
        }
        Ok(())
    }

    /// A batch that writes names each key once: which of two writes of one
    /// key should win is the client's to say, not the order of the list
    /// (etcd refuses a transaction that puts a key twice for the same
    /// reason).
    pub fn distinct<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) -> Result<(), Status> {
        let mut seen = std::collections::HashSet::new();
        for key in keys {
            if !seen.insert(key) {
                return Err(Status::invalid_argument(format!(
                    "key {:?} appears more than once in the batch; a batch names each key once",
                    bytes::Bytes::copy_from_slice(key)
                )));
            }
        }
        Ok(())
    }

    /// Checks a scan range and returns the effective limit.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: u32) -> Result<usize, Status> {
        for bound in [start, end] {
            if bound.len() > MAX_KEY_BYTES {
                return Err(Status::invalid_argument(format!(
                    "scan bound is {} bytes, over the key limit of {MAX_KEY_BYTES} bytes",
                    bound.len()
                )));
            }
        }
        if !end.is_empty() && start > end {
            return Err(Status::invalid_argument(
                "scan start key sorts after its end key",
            ));
        }
        let limit = limit as usize;
        Ok(if limit == 0 {
            self.max_scan_limit
        } else {
            limit.min(self.max_scan_limit)
        })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn messages_name_the_limits() {
        let limits = Limits::default();
        assert_eq!(limits.key(b"").unwrap_err().code(), Code::InvalidArgument);
        let long = vec![0u8; MAX_KEY_BYTES + 1];
        assert!(limits.key(&long).unwrap_err().message().contains("4096"));
        let value = vec![0u8; limits.max_value_bytes + 1];
        assert!(limits
            .value(&value)
            .unwrap_err()
            .message()
            .contains("--max-value-bytes"));
        assert!(limits
            .batch(1025)
            .unwrap_err()
            .message()
            .contains("--max-batch-keys"));
        assert_eq!(
            limits.scan(b"b", b"a", 0).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(limits.scan(b"a", b"", 0).expect("open end"), 10_000);
        assert_eq!(limits.scan(b"a", b"b", 20_000).expect("capped"), 10_000);
    }
}
