//! Gossip over UDP, each datagram sealed with the cluster secret.
//!
//! chitchat's own UDP transport takes any datagram that decodes, so anyone
//! who can reach the gossip port could announce node states: move a node
//! id to another address, or mark members as leaving. With a cluster
//! secret every datagram carries an HMAC-SHA256 tag over its payload under
//! a key derived from the secret, and a datagram without a valid tag is
//! dropped before chitchat sees it. A replayed datagram carries only states
//! chitchat already holds, or older ones, which it ignores: versions only
//! grow.
//!
//! Datagrams that are refused (a bad tag, or a payload that does not
//! decode) are counted and logged at most once per interval, so a flood of
//! garbage costs a counter increment each and cannot flood the log.

use std::{collections::VecDeque, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use chitchat::{
    transport::{RecvOutcome, SendOutcome, Socket, Transport},
    ChitchatEnvelope,
};
use prometheus_client::metrics::{counter::Counter, family::Family};
use ring::hmac;

use crate::server::log_limit::LogLimit;

/// The largest payload of one UDP datagram over IPv4.
const MAX_DATAGRAM: usize = 65_507;
const TAG_LEN: usize = 32;
/// How often a refused datagram is logged, at most.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The key gossip datagrams are sealed with.
#[derive(Clone)]
pub struct GossipKey(hmac::Key);

impl GossipKey {
    /// Derived from the cluster secret under a label of its own, so it is
    /// none of the peer port's keys.
    pub fn new(secret: &[u8]) -> Self {
        let label = hmac::Key::new(hmac::HMAC_SHA256, b"ringkv gossip seal v1");
        let derived = hmac::sign(&label, secret);
        Self(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// The tag, then the payload.
    fn seal(&self, payload: &[u8], out: &mut Vec<u8>) {
        let tag = hmac::sign(&self.0, payload);
        out.extend_from_slice(tag.as_ref());
        out.extend_from_slice(payload);
    }

    /// The payload of a datagram whose tag is valid.
    fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        if datagram.len() < TAG_LEN {
            return None;
        }
        let (tag, payload) = datagram.split_at(TAG_LEN);
        hmac::verify(&self.0, payload, tag).ok().map(|()| payload)
    }
}

/// Why a datagram was dropped, as `ringkv_gossip_datagrams_refused_total`
/// labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// No valid tag: sent without the cluster secret, or altered.
    BadTag,
    /// A valid tag (or no secret) but not a chitchat message.
    Undecodable,
    /// Too large to send once sealed.
    Oversized,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::BadTag => "bad_tag",
            Refusal::Undecodable => "undecodable",
            Refusal::Oversized => "oversized",
        }
    }
}

/// Refused datagrams by reason.
pub type RefusedDatagrams = Family<Vec<(&'static str, &'static str)>, Counter>;

/// chitchat's transport: UDP, sealed when the cluster has a secret.
///
/// chitchat 0.13 keeps its wire encoding to itself (`ChitchatEnvelope`'s
/// serialization is crate-private), so each socket runs chitchat's own UDP
/// socket as a codec on a private loopback port: an envelope to send is
/// sent by the codec to this socket's tap, which seals the bytes and sends
/// them on from the gossip address; a datagram received there is opened
/// and handed through the tap to the codec, which decodes it. The extra
/// hops stay on loopback, within this process.
pub struct SealedUdpTransport {
    key: Option<GossipKey>,
    refused: RefusedDatagrams,
    log: Arc<LogLimit>,
}

impl SealedUdpTransport {
    pub fn new(key: Option<GossipKey>, refused: RefusedDatagrams) -> Self {
        Self {
            key,
            refused,
            log: Arc::new(LogLimit::new(LOG_INTERVAL)),
        }
    }
}

/// How long a datagram may take across the loopback hop to the codec and
/// back; only a payload the codec refuses to decode waits this long.
const CODEC_WAIT: Duration = Duration::from_secs(1);
/// A second, short wait after [`CODEC_WAIT`]: when the process was stopped
/// (SIGSTOP, a long pause), the timer and the datagram are both due when it
/// runs again, and the timer may be seen first. Counting that datagram as
/// lost would pair every later one with the wrong origin.
const CODEC_SECOND_CHANCE: Duration = Duration::from_millis(200);

#[tonic::async_trait]
impl Transport for SealedUdpTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("binding {listen_addr}/UDP for gossip"))?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let codec = chitchat::transport::UdpSocket::open(loopback).await?;
        let tap = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("binding the gossip codec's tap")?;
        Ok(Box::new(SealedSocket {
            codec_addr: codec.local_addr()?,
            tap_addr: tap.local_addr().context("the tap's address")?,
            public,
            codec,
            tap,
            pending: VecDeque::new(),
            key: self.key.clone(),
            refused: self.refused.clone(),
            log: self.log.clone(),
            send_buf: Vec::with_capacity(MAX_DATAGRAM),
            payload_buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            recv_buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

struct SealedSocket {
    /// The gossip address peers send to.
    public: tokio::net::UdpSocket,
    /// chitchat's own socket, encoding and decoding envelopes.
    codec: chitchat::transport::UdpSocket,
    codec_addr: SocketAddr,
    /// Receives what the codec encodes; sends it what peers sent.
    tap: tokio::net::UdpSocket,
    tap_addr: SocketAddr,
    /// Senders (and sizes) of datagrams handed to the codec, not yet
    /// returned: kept across cancelled `recv` calls.
    pending: VecDeque<(SocketAddr, usize)>,
    key: Option<GossipKey>,
    refused: RefusedDatagrams,
    log: Arc<LogLimit>,
    send_buf: Vec<u8>,
    payload_buf: Box<[u8]>,
    recv_buf: Box<[u8]>,
}

impl SealedSocket {
    fn refuse(&self, reason: Refusal, peer: SocketAddr, bytes: usize) {
        self.refused
            .get_or_create(&vec![("reason", reason.label())])
            .inc();
        if let Some(held_back) = self.log.admit() {
            tracing::warn!(
                reason = reason.label(),
                %peer,
                bytes,
                held_back,
                "gossip datagram dropped (logged at most once per 10 s; see ringkv_gossip_datagrams_refused_total)"
            );
        }
    }

    /// The payload of a received datagram, if its seal (when the cluster
    /// has a secret) and its header hold.
    fn open<'a>(&self, datagram: &'a [u8], from: SocketAddr) -> Option<&'a [u8]> {
        let payload = match &self.key {
            Some(key) => match key.open(datagram) {
                Some(payload) => payload,
                None => {
                    self.refuse(Refusal::BadTag, from, datagram.len());
                    return None;
                }
            },
            None => datagram,
        };
        if !has_chitchat_header(payload) {
            self.refuse(Refusal::Undecodable, from, datagram.len());
            return None;
        }
        Some(payload)
    }
}

/// chitchat's magic number, a protocol version and a message type: what
/// its decoder checks first. Garbage that fails this never reaches it (it
/// would log a warning for each).
fn has_chitchat_header(payload: &[u8]) -> bool {
    const MAGIC: [u8; 2] = 45_139u16.to_le_bytes();
    payload.len() >= 4 && payload[..2] == MAGIC && payload[2] <= 1 && payload[3] <= 3
}

#[tonic::async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.public
            .local_addr()
            .context("the gossip socket's address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        // Whatever waits at the tap now belongs to an earlier send that gave
        // up on it; taking it for this one would send every later envelope
        // one round late.
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::ZERO, self.tap.recv_from(&mut self.payload_buf)).await
        {
        }
        self.codec.send(self.tap_addr, envelope).await?;
        let len = loop {
            let mut received =
                tokio::time::timeout(CODEC_WAIT, self.tap.recv_from(&mut self.payload_buf)).await;
            if received.is_err() {
                received = tokio::time::timeout(
                    CODEC_SECOND_CHANCE,
                    self.tap.recv_from(&mut self.payload_buf),
                )
                .await;
            }
            match received {
                Ok(Ok((len, from))) if from == self.codec_addr => break len,
                // Someone else on this host wrote to the tap: not ours.
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => return Err(error).context("reading the gossip codec"),
                Err(_) => {
                    tracing::debug!(%to, "the gossip codec's datagram did not arrive");
                    return Ok(SendOutcome { num_bytes_sent: 0 });
                }
            }
        };
        self.send_buf.clear();
        match &self.key {
            Some(key) => key.seal(&self.payload_buf[..len], &mut self.send_buf),
            None => self.send_buf.extend_from_slice(&self.payload_buf[..len]),
        }
        // chitchat fills a datagram up to the UDP limit; the tag may push
        // one past it. Gossip tolerates a lost datagram (the next round
        // sends a smaller delta), so this drops one rather than failing the
        // transport, which would stop gossip.
        if self.send_buf.len() > MAX_DATAGRAM {
            self.refuse(Refusal::Oversized, to, self.send_buf.len());
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let num_bytes_sent = match self.public.send_to(&self.send_buf, to).await {
            Ok(sent) => sent,
            // A peer's port closed (ICMP) or a full buffer: gossip retries.
            Err(error) => {
                tracing::debug!(%error, %to, "gossip send failed");
                0
            }
        };
        Ok(SendOutcome { num_bytes_sent })
    }

    // chitchat cancels `recv` whenever it has something else to do, so
    // what was handed to the codec is remembered in `pending`.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(&(origin, len)) = self.pending.front() {
                let mut decoded = tokio::time::timeout(CODEC_WAIT, self.codec.recv()).await;
                if decoded.is_err() {
                    decoded = tokio::time::timeout(CODEC_SECOND_CHANCE, self.codec.recv()).await;
                }
                match decoded {
                    Ok(Ok(decoded)) if decoded.from_addr == self.tap_addr => {
                        self.pending.pop_front();
                        return Ok(RecvOutcome {
                            from_addr: origin,
                            envelope: decoded.envelope,
                            num_bytes_received: len,
                        });
                    }
                    // Someone else on this host wrote to the codec.
                    Ok(Ok(_)) => continue,
                    Ok(Err(error)) => return Err(error),
                    Err(_) => {
                        self.pending.pop_front();
                        self.refuse(Refusal::Undecodable, origin, len);
                        continue;
                    }
                }
            }
            let (len, from) = match self.public.recv_from(&mut self.recv_buf).await {
                Ok(received) => received,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::OutOfMemory
                    ) =>
                {
                    continue
                }
                Err(error) => return Err(error).context("receiving gossip"),
            };
            let Some(payload) = self.open(&self.recv_buf[..len], from) else {
                continue;
            };
            // With nothing pending, whatever the codec holds is the late
            // decoding of a datagram already given up on: drop it, so that
            // it is not taken for this one's.
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, self.codec.recv()).await {}
            self.pending.push_back((from, len));
            if let Err(error) = self.tap.send_to(payload, self.codec_addr).await {
                self.pending.pop_back();
                tracing::debug!(%error, "handing a gossip datagram to the codec");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn envelope() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: chitchat::ProtocolVersion::V0,
            message: chitchat::ChitchatMessage::BadCluster,
        }
    }

    /// [`envelope`] as chitchat encodes it: magic number, version, type.
    fn plain() -> Vec<u8> {
        let mut payload = 45_139u16.to_le_bytes().to_vec();
        payload.extend([0, 3]);
        payload
    }

    fn sealed(key: &GossipKey) -> Vec<u8> {
        let mut out = Vec::new();
        key.seal(&plain(), &mut out);
        out
    }

    #[test]
    fn only_the_same_secret_opens_a_datagram() {
        let key = GossipKey::new(b"s1");
        let datagram = sealed(&key);
        assert!(key.open(&datagram).is_some());
        assert!(GossipKey::new(b"s2").open(&datagram).is_none());
        assert!(key.open(&datagram[..TAG_LEN - 1]).is_none());
    }

    proptest! {
        #[test]
        fn any_altered_byte_is_refused(at in 0usize..64, flip in 1u8..=255) {
            let key = GossipKey::new(b"secret");
            let mut datagram = sealed(&key);
            let at = at % datagram.len();
            datagram[at] ^= flip;
            prop_assert!(key.open(&datagram).is_none());
        }

        #[test]
        fn garbage_is_refused_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let key = GossipKey::new(b"secret");
            prop_assert!(key.open(&bytes).is_none());
        }
    }

    /// Over real sockets: a sealed datagram from a node with the secret is
    /// delivered; plain chitchat datagrams and garbage are counted and
    /// dropped, and the socket keeps receiving.
    #[tokio::test]
    async fn refused_datagrams_are_counted_and_the_socket_keeps_working() {
        let refused = RefusedDatagrams::default();
        let key = GossipKey::new(b"secret");
        let receiver = SealedUdpTransport::new(Some(key.clone()), refused.clone());
        let mut socket = receiver
            .open("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let to = socket.local_addr().expect("addr");
        let outsider = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let plain = plain();
        outsider.send_to(&plain, to).await.expect("send");
        outsider.send_to(b"garbage", to).await.expect("send");
        let mut wrong = Vec::new();
        GossipKey::new(b"other").seal(&plain, &mut wrong);
        outsider.send_to(&wrong, to).await.expect("send");
        let sender = SealedUdpTransport::new(Some(key), RefusedDatagrams::default());
        let mut sending = sender
            .open("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        sending.send(to, envelope()).await.expect("send");
        let received = tokio::time::timeout(Duration::from_secs(5), socket.recv())
            .await
            .expect("in time")
            .expect("received");
        assert_eq!(received.envelope, envelope());
        let bad_tag = refused
            .get_or_create(&vec![("reason", Refusal::BadTag.label())])
            .get();
        assert_eq!(bad_tag, 3, "the plain, garbage and wrong-secret datagrams");
    }
}
