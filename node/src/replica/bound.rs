//! How large one key's record may grow.
//!
//! Every replica write, hint, repair and stream carries a key's whole
//! record in one peer message, and a read returns all of it. Blind puts
//! each add a sibling, so without a bound three 7 MiB puts made a record
//! no peer would take: the write stayed on its coordinator, with a hint
//! that could never be delivered. A coordinator therefore refuses a put
//! that would grow the record past the bound, before the put is applied
//! anywhere.
//!
//! Only a put that grows the record is refused. A delete, or a put whose
//! context replaces what it read, always goes through: puts through
//! different coordinators at once can each pass the check and together
//! exceed the bound, and such a key must still be brought back under it.

use bytes::Bytes;

use crate::versions::Siblings;

/// The default of `--max-siblings`: Riak's `max_siblings`.
pub const DEFAULT_MAX_SIBLINGS: usize = 100;
/// The default of `--max-record-bytes`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;

/// The largest record a put may leave a key with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBound {
    /// Most concurrent values, tombstones included.
    pub max_siblings: usize,
    /// Most bytes of the values' data, all siblings together.
    pub max_bytes: usize,
}

impl Default for RecordBound {
    fn default() -> Self {
        Self {
            max_siblings: DEFAULT_MAX_SIBLINGS,
            max_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// A record's size, as the bound counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSize {
    pub siblings: usize,
    pub bytes: usize,
}

impl RecordSize {
    pub fn of(record: &Siblings) -> Self {
        let values = record.values();
        Self {
            siblings: values.len(),
            bytes: values
                .iter()
                .map(|v| v.data.as_ref().map_or(0, Bytes::len))
                .sum(),
        }
    }
}

/// Why a put was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundError {
    #[error(
        "this put would leave the key with {siblings} concurrent values, over the limit of {max} (--max-siblings); \
         read the key and put with its context to replace them"
    )]
    TooManySiblings { siblings: usize, max: usize },
    #[error(
        "this put would leave the key with {bytes} bytes of concurrent values, over the limit of {max} bytes (--max-record-bytes); \
         read the key and put with its context to replace them"
    )]
    TooManyBytes { bytes: usize, max: usize },
}

impl RecordBound {
    /// Whether a put that turns a record of size `before` into one of size
    /// `after` may be applied.
    pub fn admit(&self, before: RecordSize, after: RecordSize) -> Result<(), BoundError> {
        if after.siblings > self.max_siblings && after.siblings > before.siblings {
            return Err(BoundError::TooManySiblings {
                siblings: after.siblings,
                max: self.max_siblings,
            });
        }
        if after.bytes > self.max_bytes && after.bytes > before.bytes {
            return Err(BoundError::TooManyBytes {
                bytes: after.bytes,
                max: self.max_bytes,
            });
        }
        Ok(())
    }
}
