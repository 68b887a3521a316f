//! Causal contexts travel through clients as opaque tokens, and the cluster
//! signs them.
//!
//! A context decides which values a write replaces, so a forged one can do
//! damage no ordinary client history can: a counter of `u64::MAX` for a
//! coordinator's actor makes every later write of that actor look already
//! seen, and a context read from one key and sent with a write to another
//! replaces values its client never saw. Every node therefore seals the
//! contexts it hands out with an HMAC-SHA256 over the key and the context,
//! under a key derived from the cluster secret, and refuses a token whose
//! seal does not match (INVALID_ARGUMENT): a context is only ever accepted
//! for the key it was read from, in the cluster that issued it.
//!
//! Without `--cluster-secret` the sealing key derives from the cluster id:
//! tokens are still bound to their key and cluster, which catches a context
//! pasted from elsewhere or corrupted, but a client that knows the cluster
//! id could forge one. Set a secret to refuse forgeries.

use ::ring::hmac;
use bytes::{BufMut, Bytes, BytesMut};

use crate::versions::{CausalContext, VersionError};

/// Bytes of the seal appended to a context token: a whole HMAC-SHA256.
const TAG_LEN: usize = 32;

/// The largest context token accepted, seal included. A context grows by
/// one entry (about 40 bytes) per actor that wrote the key; 64 KiB is
/// well over a thousand actors.
pub const MAX_CONTEXT_BYTES: usize = 64 << 10;

/// Why a context token was refused.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("causal context is {len} bytes, over the limit of {MAX_CONTEXT_BYTES} bytes")]
    TooLarge { len: usize },
    #[error("causal context is not one ringkv issued for this key: its seal does not match")]
    BadSeal,
    #[error("causal context is not one ringkv issued: {0}")]
    Unreadable(VersionError),
}

/// Seals and opens context tokens with the cluster's key.
#[derive(Clone)]
pub struct ContextSeal {
    key: hmac::Key,
}

impl std::fmt::Debug for ContextSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContextSeal")
    }
}

impl ContextSeal {
    /// A seal keyed by `secret` (the cluster secret, or the cluster id).
    pub fn new(secret: &[u8]) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"ringkv causal context seal v1"),
            secret,
        );
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// What the seal covers: the key, length-prefixed so that no (key,
    /// context) pair reads as another, then the context.
    fn sealed_bytes(key: &[u8], body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + key.len() + body.len());
        bytes.extend_from_slice(&(key.len() as u64).to_be_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(body);
        bytes
    }

    /// The token a client gets for `context`, read from `key`.
    pub fn seal(&self, key: &[u8], context: &CausalContext) -> Bytes {
        let body = context.to_bytes();
        let tag = hmac::sign(&self.key, &Self::sealed_bytes(key, &body));
        let mut out = BytesMut::with_capacity(body.len() + TAG_LEN);
        out.put_slice(&body);
        out.put_slice(tag.as_ref());
        out.freeze()
    }

    /// The context in a token a client sent with a write to `key`.
    pub fn open(&self, key: &[u8], token: &[u8]) -> Result<CausalContext, ContextError> {
        if token.len() > MAX_CONTEXT_BYTES {
            return Err(ContextError::TooLarge { len: token.len() });
        }
        let Some(split) = token.len().checked_sub(TAG_LEN) else {
            return Err(ContextError::BadSeal);
        };
        let (body, tag) = token.split_at(split);
        // hmac::verify compares in constant time.
        hmac::verify(&self.key, &Self::sealed_bytes(key, body), tag)
            .map_err(|_| ContextError::BadSeal)?;
        CausalContext::from_bytes(body).map_err(ContextError::Unreadable)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::versions::{Actor, Hlc, Siblings};

    fn context(counter: u8) -> CausalContext {
        let mut s = Siblings::new();
        for i in 0..counter {
            s = s.update(
                &s.context(),
                None,
                &Actor::new("n1", 7),
                Hlc::new(u64::from(i), 0),
            );
        }
        s.context()
    }

    proptest! {
        /// A token opens only for the key it was sealed for, under the key
        /// it was sealed with, and any change to it is refused.
        #[test]
        fn tokens_open_only_unchanged_for_their_key_and_cluster(
            counter in 1u8..20,
            key in prop::collection::vec(any::<u8>(), 1..32),
            other in prop::collection::vec(any::<u8>(), 1..32),
            flip in any::<prop::sample::Index>(),
        ) {
            let seal = ContextSeal::new(b"secret");
            let ctx = context(counter);
            let token = seal.seal(&key, &ctx);
            prop_assert_eq!(seal.open(&key, &token).expect("opens"), ctx);
            if other != key {
                prop_assert!(matches!(seal.open(&other, &token), Err(ContextError::BadSeal)));
            }
            prop_assert!(matches!(
                ContextSeal::new(b"another cluster").open(&key, &token),
                Err(ContextError::BadSeal)
            ));
            let mut changed = token.to_vec();
            changed[flip.index(token.len())] ^= 1;
            prop_assert!(seal.open(&key, &changed).is_err());
        }
    }

    #[test]
    fn oversized_and_truncated_tokens_are_refused_with_the_limit() {
        let seal = ContextSeal::new(b"secret");
        let huge = vec![0u8; MAX_CONTEXT_BYTES + 1];
        let error = seal.open(b"k", &huge).expect_err("too large");
        assert!(error.to_string().contains("65536"), "{error}");
        assert!(matches!(
            seal.open(b"k", b"short"),
            Err(ContextError::BadSeal)
        ));
    }
}
