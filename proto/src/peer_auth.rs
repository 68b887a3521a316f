//! How a caller of a node's peer port proves it holds the cluster secret.
//!
//! Replica and Admin calls can overwrite any record, stream the whole store
//! out or take a node out of the ring, so a node serves them on a port of
//! their own, and, once the cluster has a secret, only to callers that
//! present a token in the `ringkv-auth` metadata entry:
//!
//! ```text
//! v1 ROLE MILLIS MAC ISSUER
//! ```
//!
//! `MAC` is the hex HMAC-SHA256 of `ROLE MILLIS ISSUER` under a key derived
//! from the secret and the role, so a token for one role is no token for the
//! other. A node accepts it while `MILLIS` (the signer's wall clock) lies
//! within [`MAX_TOKEN_SKEW`] of its own clock.
//!
//! Roles: nodes call each other as [`Role::Peer`]; ring changes
//! (Decommission) need [`Role::Admin`], which the operator and `ringkv`
//! sign. A peer token seen on the wire therefore cannot take a node out.
//!
//! What it does not do: a token is not bound to one call, so whoever can
//! read plaintext peer traffic may replay a token for [`MAX_TOKEN_SKEW`];
//! such an attacker already reads every value. Run TLS where the network
//! is not trusted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use tonic::metadata::MetadataValue;

/// The peer port's default, next to the client port (7379) and the
/// probes' plaintext health port (7380).
pub const DEFAULT_PEER_PORT: u16 = 7381;

/// The metadata entry that carries the token.
pub const METADATA_KEY: &str = "ringkv-auth";

/// How far a token's time may lie from the verifier's clock, either way.
pub const MAX_TOKEN_SKEW: Duration = Duration::from_secs(300);

const VERSION: &str = "v1";

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Another node: replica reads and writes, streams, forwarded requests.
    Peer,
    /// The operator or an administrator: everything a peer may, and ring
    /// changes.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Admin => "admin",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "peer" => Some(Role::Peer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who a verified token says called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The signer's name: a node id, `operator`, or `ringkv`.
    pub issuer: String,
}

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no {METADATA_KEY} credential: the peer port serves only the cluster's nodes and administrators")]
    Missing,
    #[error("malformed {METADATA_KEY} credential: {0}")]
    Malformed(&'static str),
    #[error("{METADATA_KEY} credential was not signed with this cluster's secret")]
    BadSignature,
    #[error("{METADATA_KEY} credential is {skew_ms} ms away from this node's clock, past the limit of {limit_ms} ms")]
    Stale { skew_ms: u64, limit_ms: u64 },
}

/// The keys a cluster secret gives, one per role.
#[derive(Clone)]
pub struct ClusterKey {
    peer: hmac::Key,
    admin: hmac::Key,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey")
    }
}

impl ClusterKey {
    pub fn new(secret: &[u8]) -> Self {
        let derive = |role: Role| {
            let label = format!("ringkv peer auth {VERSION} {}", role.name());
            let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, label.as_bytes()), secret);
            hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
        };
        Self {
            peer: derive(Role::Peer),
            admin: derive(Role::Admin),
        }
    }

    fn key(&self, role: Role) -> &hmac::Key {
        match role {
            Role::Peer => &self.peer,
            Role::Admin => &self.admin,
        }
    }

    /// A token for `role`, signed at `now_ms`. Characters of `issuer` that
    /// metadata cannot carry are replaced by `_`.
    pub fn token(&self, role: Role, issuer: &str, now_ms: u64) -> String {
        let issuer: String = issuer
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect();
        let signed = format!("{} {now_ms} {issuer}", role.name());
        let mac = hmac::sign(self.key(role), signed.as_bytes());
        format!(
            "{VERSION} {} {now_ms} {} {issuer}",
            role.name(),
            hex(mac.as_ref())
        )
    }

    /// Checks a token against the cluster's keys and the clock.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Caller, AuthError> {
        let mut fields = token.splitn(5, ' ');
        let mut next = |what| fields.next().ok_or(AuthError::Malformed(what));
        if next("no version")? != VERSION {
            return Err(AuthError::Malformed("unknown version"));
        }
        let role = Role::parse(next("no role")?).ok_or(AuthError::Malformed("unknown role"))?;
        let millis = next("no time")?;
        let signed_at: u64 = millis
            .parse()
            .map_err(|_| AuthError::Malformed("time is not a number"))?;
        let mac =
            unhex(next("no signature")?).ok_or(AuthError::Malformed("signature is not hex"))?;
        let issuer = next("no issuer")?;
        let signed = format!("{} {millis} {issuer}", role.name());
        hmac::verify(self.key(role), signed.as_bytes(), &mac)
            .map_err(|_| AuthError::BadSignature)?;
        let skew_ms = now_ms.abs_diff(signed_at);
        let limit_ms = MAX_TOKEN_SKEW.as_millis() as u64;
        if skew_ms > limit_ms {
            return Err(AuthError::Stale { skew_ms, limit_ms });
        }
        Ok(Caller {
            role,
            issuer: issuer.to_string(),
        })
    }
}

/// Milliseconds since the epoch on this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Signs every outgoing call with a fresh token: a tonic interceptor for
/// clients of the peer port.
#[derive(Clone, Debug)]
pub struct Authenticate {
    key: Option<ClusterKey>,
    role: Role,
    issuer: String,
}

impl Authenticate {
    /// Signs as `issuer` in `role`; without a key, calls go out unsigned (a
    /// cluster without a secret).
    pub fn new(key: Option<ClusterKey>, role: Role, issuer: &str) -> Self {
        Self {
            key,
            role,
            issuer: issuer.to_string(),
        }
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        // An admin call a node passes on keeps its caller's token.
        if request.metadata().contains_key(METADATA_KEY) {
            return Ok(request);
        }
        if let Some(key) = &self.key {
            let token = key.token(self.role, &self.issuer, now_ms());
            let value = MetadataValue::try_from(token)
                .map_err(|e| tonic::Status::internal(format!("signing a peer call: {e}")))?;
            request.metadata_mut().insert(METADATA_KEY, value);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_token_verifies_under_its_own_secret_only() {
        let key = ClusterKey::new(b"secret");
        let token = key.token(Role::Peer, "127.0.0.1:7379", NOW);
        assert_eq!(
            key.verify(&token, NOW),
            Ok(Caller {
                role: Role::Peer,
                issuer: "127.0.0.1:7379".to_string()
            })
        );
        assert_eq!(
            ClusterKey::new(b"other").verify(&token, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_peer_token_cannot_be_relabelled_admin() {
        let key = ClusterKey::new(b"secret");
        let token = key.token(Role::Peer, "n1", NOW);
        let forged = token.replacen("peer", "admin", 1);
        assert_eq!(key.verify(&forged, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn a_token_outside_the_skew_is_stale() {
        let key = ClusterKey::new(b"secret");
        let limit = MAX_TOKEN_SKEW.as_millis() as u64;
        let token = key.token(Role::Admin, "operator", NOW);
        assert!(key.verify(&token, NOW + limit).is_ok());
        assert!(key.verify(&token, NOW - limit).is_ok());
        assert!(matches!(
            key.verify(&token, NOW + limit + 1),
            Err(AuthError::Stale { .. })
        ));
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let key = ClusterKey::new(b"secret");
        let token = key.token(Role::Peer, "n1", NOW);
        for at in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
            let changed = String::from_utf8_lossy(&bytes).to_string();
            assert!(
                key.verify(&changed, NOW).is_err(),
                "changing byte {at} gave {changed:?}, which verified"
            );
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let key = ClusterKey::new(b"secret");
        for garbage in [
            "",
            "v1",
            "v2 peer 1 00 n1",
            "v1 root 1 00 n1",
            "v1 peer x 00 n1",
            "v1 peer 1 0 n1",
            "v1 peer 1 zz n1",
            "v1 peer 1 00",
        ] {
            assert!(
                matches!(key.verify(garbage, NOW), Err(AuthError::Malformed(_))),
                "{garbage:?}"
            );
        }
    }
}
