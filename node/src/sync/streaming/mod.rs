//! Partition streaming: a new owner receives a partition from the owners
//! that hold it. The receiver drives; the sender scans and throttles.

pub(crate) mod receive;
pub(crate) mod send;
