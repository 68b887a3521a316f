//! Background work that brings replicas together: hint delivery, partition
//! streaming, refill after a lost disk, anti-entropy, garbage collection of
//! given-up partitions, and the throttle they share.

pub(crate) mod anti_entropy;
pub(crate) mod gc;
pub(crate) mod hints;
pub(crate) mod refill;
pub(crate) mod streaming;
pub(crate) mod throttle;
