//! The accept loop of a gRPC port, and the connections it hands to tonic.
//!
//! - Every connection has TCP_NODELAY: tonic sets it only on listeners it
//!   binds itself, and without it each small answer on a connection waits
//!   for the client's delayed ACK (40 ms on Linux).
//! - A port serves at most its share of the file descriptors
//!   ([`crate::server::fd_budget`]); past it a new connection is closed at
//!   once, counted, and logged (rate-limited).
//! - Running out of descriptors anyway (EMFILE, ENFILE) is logged and
//!   waited out for a moment, instead of retried at once in a loop that
//!   spins a core.
//! - Under TLS the loop takes each TLS handshake itself, several at once,
//!   and drops a connection whose handshake is not done within the
//!   handshake timeout.
//! - A connection must then send the first bytes of its handshake (the
//!   24-byte HTTP/2 preface) within the handshake timeout, and is closed
//!   once it has sent nothing for the idle timeout. A live idle client
//!   answers the server's keepalive pings every 30 s, so only dead or
//!   stalled connections reach that.
//! - An HTTP/2 connection is closed once a frame or a header block it
//!   began stays unfinished for the header timeout
//!   ([`crate::server::frame_clock`]): a client trickling its headers never
//!   makes a request that a request deadline could end.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{stream::FuturesUnordered, Stream, StreamExt};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use rustls_pki_types::CertificateDer;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tonic::transport::server::Connected;

use crate::server::{frame_clock::FrameClock, log_limit::LogLimit};

/// Bytes a connection must send within the handshake timeout: the HTTP/2
/// client preface.
const HANDSHAKE_BYTES: usize = 24;
/// How long the loop waits after the process ran out of descriptors.
const OUT_OF_DESCRIPTORS_PAUSE: Duration = Duration::from_millis(100);

static CONNECTIONS_REFUSED: LogLimit = LogLimit::new(Duration::from_secs(10));
static ACCEPT_FAILED: LogLimit = LogLimit::new(Duration::from_secs(10));

/// How a port's connections are bounded.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// The port's name, for the log.
    pub port: &'static str,
    /// Connections open at once.
    pub max_connections: usize,
    /// `--handshake-timeout-secs`.
    pub handshake_timeout: Duration,
    /// `--idle-timeout-secs`.
    pub idle_timeout: Duration,
    /// `--header-timeout-secs`.
    pub header_timeout: Duration,
}

/// What the accept loop reports.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    /// Connections closed at once past the limit, or lost to EMFILE.
    pub refused: Counter,
    /// Connections open now.
    pub open: Gauge,
}

/// The connections of `listener`, within `limits`; under TLS, once their
/// TLS handshake is done.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    tls: Option<TlsAcceptor>,
) -> impl Stream<Item = io::Result<Connection>> {
    let port = Port {
        listener,
        limits,
        metrics,
        open: Arc::new(AtomicUsize::new(0)),
        tls,
        handshakes: FuturesUnordered::new(),
    };
    futures::stream::unfold(port, |mut port| async move {
        let connection = port.next().await;
        Some((Ok(connection), port))
    })
}

type Handshake =
    Pin<Box<dyn Future<Output = Option<(TlsStream<TcpStream>, OpenConnection)>> + Send>>;

struct Port {
    listener: TcpListener,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    open: Arc<AtomicUsize>,
    tls: Option<TlsAcceptor>,
    /// TLS handshakes under way; their connections count as open.
    handshakes: FuturesUnordered<Handshake>,
}

impl Port {
    async fn next(&mut self) -> Connection {
        loop {
            tokio::select! {
                (stream, open) = accept(&self.listener, &self.limits, &self.metrics, &self.open) => {
                    let Some(acceptor) = &self.tls else {
                        return Connection::new(Transport::Plain(stream), open, &self.limits);
                    };
                    self.handshakes.push(Box::pin(handshake(
                        acceptor.clone(),
                        stream,
                        open,
                        self.limits.handshake_timeout,
                        self.limits.port,
                    )));
                }
                Some(done) = self.handshakes.next(), if !self.handshakes.is_empty() => {
                    if let Some((stream, open)) = done {
                        return Connection::new(Transport::Tls(Box::new(stream)), open, &self.limits);
                    }
                }
            }
        }
    }
}

/// A TLS handshake bounded by the handshake timeout. A failed one is the
/// client's problem, logged at debug only: anyone can open a connection.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    open: OpenConnection,
    timeout: Duration,
    port: &'static str,
) -> Option<(TlsStream<TcpStream>, OpenConnection)> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some((stream, open)),
        Ok(Err(error)) => {
            tracing::debug!(port, ?peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(
                port,
                ?peer,
                "TLS handshake not done within --handshake-timeout-secs"
            );
            None
        }
    }
}

/// The next connection within the port's share, counted as open.
async fn accept(
    listener: &TcpListener,
    limits: &ConnectionLimits,
    metrics: &ConnectionMetrics,
    open: &Arc<AtomicUsize>,
) -> (TcpStream, OpenConnection) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if open.load(Ordering::Relaxed) >= limits.max_connections {
                    metrics.refused.inc();
                    if let Some(held_back) = CONNECTIONS_REFUSED.admit() {
                        tracing::warn!(
                            port = limits.port,
                            %peer,
                            limit = limits.max_connections,
                            held_back,
                            "refusing a connection: the port holds as many as this node's file descriptors allow"
                        );
                    }
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                return (
                    stream,
                    OpenConnection::new(open.clone(), metrics.open.clone()),
                );
            }
            Err(error) => {
                let out_of_descriptors = error
                    .raw_os_error()
                    .is_some_and(|code| code == EMFILE || code == ENFILE);
                if out_of_descriptors {
                    metrics.refused.inc();
                }
                if let Some(held_back) = ACCEPT_FAILED.admit() {
                    tracing::warn!(port = limits.port, %error, held_back, "accepting a connection failed");
                }
                // A failed accept leaves the connection queued; retrying at
                // once would spin until a descriptor frees up.
                tokio::time::sleep(OUT_OF_DESCRIPTORS_PAUSE).await;
            }
        }
    }
}

const EMFILE: i32 = nix::errno::Errno::EMFILE as i32;
const ENFILE: i32 = nix::errno::Errno::ENFILE as i32;

/// One accepted connection, counted while it is open.
pub struct Connection {
    stream: Transport,
    _open: OpenConnection,
    /// Fires at the handshake deadline, then at idle or header deadlines.
    timer: Pin<Box<Sleep>>,
    /// Bytes still expected within the handshake timeout.
    handshake_left: usize,
    idle_timeout: Duration,
    last_read: Instant,
    header_timeout: Duration,
    frames: FrameClock,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What a request learns about its connection: tonic puts it in every
/// request's extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate chain, under TLS when it presented one.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl Connection {
    fn new(stream: Transport, open: OpenConnection, limits: &ConnectionLimits) -> Self {
        let now = Instant::now();
        Self {
            stream,
            _open: open,
            timer: Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout)),
            handshake_left: HANDSHAKE_BYTES,
            idle_timeout: limits.idle_timeout,
            last_read: now,
            header_timeout: limits.header_timeout,
            frames: FrameClock::default(),
        }
    }

    /// When the connection will have sent nothing for the idle timeout,
    /// or left a frame unfinished for the header timeout, whichever is
    /// first.
    fn next_deadline(&self) -> Instant {
        let idle_until = self.last_read + self.idle_timeout;
        match self.frames.unfinished_since() {
            Some(begun) => idle_until.min(begun + self.header_timeout),
            None => idle_until,
        }
    }

    /// Whether the connection is past its handshake, header or idle
    /// deadline. A read that pushes a deadline back only notes its time:
    /// the timer then fires early once and is moved here.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            if self.handshake_left > 0 {
                return Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not open its handshake within --handshake-timeout-secs",
                ));
            }
            let now = Instant::now();
            if let Some(begun) = self.frames.unfinished_since() {
                if now >= begun + self.header_timeout {
                    return Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client left an HTTP/2 frame or header block unfinished for --header-timeout-secs",
                    ));
                }
            }
            if now >= self.last_read + self.idle_timeout {
                return Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing for --idle-timeout-secs",
                ));
            }
            let next = self.next_deadline();
            self.timer.as_mut().reset(next);
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    let now = Instant::now();
                    self.last_read = now;
                    let this = &mut *self;
                    this.frames.observe(&buf.filled()[before..], now);
                    this.handshake_left = this.handshake_left.saturating_sub(read);
                    // A frame begun brings a deadline forward, which must
                    // fire on time.
                    if this.handshake_left == 0 {
                        let next = this.next_deadline();
                        if next < this.timer.deadline() {
                            this.timer.as_mut().reset(next);
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match self.poll_expired(cx) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        match &self.stream {
            Transport::Plain(stream) => ConnectionInfo {
                remote_addr: stream.peer_addr().ok(),
                certificates: None,
            },
            Transport::Tls(stream) => {
                let (tcp, session) = stream.get_ref();
                ConnectionInfo {
                    remote_addr: tcp.peer_addr().ok(),
                    certificates: session
                        .peer_certificates()
                        .map(|chain| Arc::new(chain.to_vec())),
                }
            }
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Counts a connection as open until it is dropped.
struct OpenConnection {
    open: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl OpenConnection {
    fn new(open: Arc<AtomicUsize>, gauge: Gauge) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        Self { open, gauge }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn listener() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        (listener, addr)
    }

    fn limits(max_connections: usize, handshake_ms: u64, idle_ms: u64) -> ConnectionLimits {
        ConnectionLimits {
            port: "test",
            max_connections,
            handshake_timeout: Duration::from_millis(handshake_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            header_timeout: Duration::from_secs(60),
        }
    }

    /// Whether the server closed `client` within a second.
    async fn closed(client: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), client.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn past_the_limit_connections_are_closed_at_once_and_counted() {
        let (listener, addr) = listener().await;
        let metrics = ConnectionMetrics::default();
        let mut incoming = Box::pin(incoming(
            listener,
            limits(2, 5_000, 5_000),
            metrics.clone(),
            None,
        ));
        let mut clients = Vec::new();
        let mut held = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.expect("connect"));
            held.push(incoming.next().await.expect("a connection").expect("ok"));
        }
        // Small answers go out at once: with Nagle's algorithm a response
        // written in two parts waits for the client's delayed ACK (40 ms).
        assert!(held
            .iter()
            .all(|c| matches!(&c.stream, Transport::Plain(s) if s.nodelay().unwrap_or(false))));
        assert_eq!(metrics.open.get(), 2);
        let mut third = TcpStream::connect(addr).await.expect("connect");
        // The loop accepts and closes the third while waiting for a fourth.
        let waiting = tokio::time::timeout(Duration::from_millis(300), incoming.next()).await;
        assert!(waiting.is_err(), "no connection handed over past the limit");
        assert!(closed(&mut third).await, "the third connection is closed");
        assert_eq!(metrics.refused.get(), 1);
        drop(held.pop());
        assert_eq!(metrics.open.get(), 1);
        let _fourth = TcpStream::connect(addr).await.expect("connect");
        let accepted = tokio::time::timeout(Duration::from_secs(1), incoming.next()).await;
        assert!(
            matches!(accepted, Ok(Some(Ok(_)))),
            "room again once one closed"
        );
    }

    /// Reads from the server's side until it fails; returns how long that
    /// took and the error.
    async fn serve(mut connection: Connection) -> (Duration, io::Error) {
        let started = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match connection.read(&mut buf).await {
                Ok(0) => {
                    return (
                        started.elapsed(),
                        io::Error::new(io::ErrorKind::UnexpectedEof, "eof"),
                    )
                }
                Ok(_) => {}
                Err(error) => return (started.elapsed(), error),
            }
        }
    }

    #[tokio::test]
    async fn silent_and_stalled_connections_are_closed_and_live_ones_kept() {
        let (listener, addr) = listener().await;
        let mut incoming = Box::pin(incoming(
            listener,
            limits(8, 300, 800),
            ConnectionMetrics::default(),
            None,
        ));
        // Sends nothing at all.
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let silent = tokio::spawn(serve(incoming.next().await.expect("one").expect("ok")));
        // Sends half a preface, then stalls.
        let mut truncated = TcpStream::connect(addr).await.expect("connect");
        truncated.write_all(b"PRI * HTTP/2.0").await.expect("write");
        let truncated_side = tokio::spawn(serve(incoming.next().await.expect("one").expect("ok")));
        // Sends a preface, then stalls.
        let mut stalled = TcpStream::connect(addr).await.expect("connect");
        stalled
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("write");
        let stalled_side = tokio::spawn(serve(incoming.next().await.expect("one").expect("ok")));
        // Sends a preface, then a byte every 200 ms for 2 s.
        let mut live = TcpStream::connect(addr).await.expect("connect");
        live.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("write");
        let live_side = tokio::spawn(serve(incoming.next().await.expect("one").expect("ok")));
        let sender = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                live.write_all(b"x")
                    .await
                    .expect("the live connection stays open");
            }
            live
        });
        for (name, side, least, most) in [
            ("silent", silent, 250, 700),
            ("truncated", truncated_side, 250, 700),
            ("stalled", stalled_side, 750, 1_500),
        ] {
            let (took, error) = side.await.expect("task");
            assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{name}: {error}");
            assert!(
                took >= Duration::from_millis(least) && took <= Duration::from_millis(most),
                "{name} closed after {took:?}"
            );
        }
        let live = sender.await.expect("the sender");
        assert!(
            !live_side.is_finished(),
            "a connection that keeps sending stays open"
        );
        drop(live);
        let (_, error) = live_side.await.expect("task");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A client that trickles a header block, a byte at a time or frame by
    /// frame, is closed at the header timeout though it never goes idle;
    /// one that sends whole frames as slowly stays open.
    #[tokio::test]
    async fn a_trickled_header_block_is_closed_and_whole_frames_are_not() {
        const HANDSHAKE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
        /// A HEADERS frame of 16 bytes on stream 1, without END_HEADERS.
        const HEADERS: &[u8] = b"\0\0\x10\x01\0\0\0\0\x01";
        const CONTINUATION: &[u8] = b"\0\0\x01\x09\0\0\0\0\x01x";
        const PING: &[u8] = b"\0\0\x08\x06\0\0\0\0\0pingpong";
        let (listener, addr) = listener().await;
        let limits = ConnectionLimits {
            header_timeout: Duration::from_millis(600),
            ..limits(8, 5_000, 5_000)
        };
        let mut incoming = Box::pin(incoming(
            listener,
            limits,
            ConnectionMetrics::default(),
            None,
        ));
        let mut clients = Vec::new();
        let mut sides = Vec::new();
        for _ in 0..3 {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            client.write_all(HANDSHAKE).await.expect("handshake");
            sides.push(tokio::spawn(serve(
                incoming.next().await.expect("one").expect("ok"),
            )));
            clients.push(client);
        }
        let [byte_by_byte, frame_by_frame, pinging] =
            <[TcpStream; 3]>::try_from(clients).expect("three clients");
        let trickle = |mut client: TcpStream, chunks: Vec<Vec<u8>>| {
            tokio::spawn(async move {
                for chunk in chunks {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    if client.write_all(&chunk).await.is_err() {
                        return None;
                    }
                }
                Some(client)
            })
        };
        let bytes = HEADERS.iter().chain(b"16 header bytes!").map(|b| vec![*b]);
        let byte_by_byte = trickle(byte_by_byte, bytes.collect());
        let continuations = std::iter::once(HEADERS.to_vec())
            .chain(std::iter::once(b"16 header bytes!".to_vec()))
            .chain(std::iter::repeat_n(CONTINUATION.to_vec(), 12));
        let frame_by_frame = trickle(frame_by_frame, continuations.collect());
        let pinging = trickle(pinging, vec![PING.to_vec(); 14]);
        let mut sides = sides.into_iter();
        for name in ["byte by byte", "frame by frame"] {
            let (took, error) = sides.next().expect("side").await.expect("task");
            assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{name}: {error}");
            assert!(
                error.to_string().contains("--header-timeout-secs"),
                "{name}: {error}"
            );
            assert!(
                took >= Duration::from_millis(600) && took <= Duration::from_millis(1_500),
                "{name} closed after {took:?}"
            );
        }
        let pinging_side = sides.next().expect("side");
        let pinger = pinging.await.expect("the pinger");
        assert!(pinger.is_some(), "whole frames were all written");
        assert!(
            !pinging_side.is_finished(),
            "a connection that sends whole frames stays open"
        );
        drop((pinger, byte_by_byte, frame_by_frame));
    }
}
