//! Connections from outside, as a careless or hostile client opens them:
//! idle connections past the node's share of file descriptors, HTTP/1.1
//! requests, handshakes that never finish, requests that stall half-way
//! or trickle their bodies. Each is bounded, answered or closed, and the
//! node keeps serving every write it acknowledged.

mod common;

use std::{net::Ipv4Addr, time::Duration};

use bytes::Bytes;
use common::{eventually, TestNode};
use ringkv_client::proto::{RawGetRequest, RawPutRequest};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: with the preface, a complete client handshake.
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

async fn put(client: &mut ringkv_client::Client, key: &str) {
    client
        .raw()
        .raw_put(RawPutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(format!("{key}=value")),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("put {key}: {status}"));
}

async fn read_back(client: &mut ringkv_client::Client, keys: &[String]) {
    for key in keys {
        let value = client
            .raw()
            .raw_get(RawGetRequest {
                key: Bytes::from(key.clone()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("get {key}: {status}"))
            .into_inner()
            .value;
        assert_eq!(value, Bytes::from(format!("{key}=value")), "{key}");
    }
}

/// The test process opens more sockets than a default soft limit allows.
fn raise_own_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
}

/// Row 6 of the hardening issue: `ulimit -n 1024` and 1,100 idle
/// connections. The node keeps its share of descriptors for clients
/// (256 of 1024), closes the rest at once and counts them, does not spin,
/// keeps serving the connections it holds and the peer port, and takes
/// new clients again once the crowd leaves.
#[tokio::test]
async fn idle_connections_past_the_descriptor_share_are_refused_and_the_node_recovers() {
    const IDLE: usize = 1_100;
    raise_own_fd_limit();
    let ip = Ipv4Addr::new(127, 0, 89, 1);
    let mut node = TestNode::start(ip, &[]).await;
    node.stop().await;
    node.set_fd_limit(1024);
    node.restart().await;

    let mut held = node.client().await;
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let key = format!("before-{i:02}");
        put(&mut held, &key).await;
        acknowledged.push(key);
    }
    let mut crowd = Vec::new();
    for _ in 0..IDLE {
        let mut stream = TcpStream::connect(node.grpc).await.expect("connect");
        // A finished handshake: an idle HTTP/2 client, not a silent socket.
        let _ = stream.write_all(PREFACE).await;
        let _ = stream.write_all(&EMPTY_SETTINGS).await;
        crowd.push(stream);
    }
    let open = r#"ringkv_connections_open{port="client"}"#;
    let refused = r#"ringkv_connections_refused_total{port="client"}"#;
    let counted = eventually(
        "the node counts the connections it refused",
        Duration::from_secs(30),
        || async {
            let refused = node.metric(refused).await?;
            (refused >= (IDLE - 256) as f64).then_some(refused)
        },
    )
    .await;
    let open_now = node.metric(open).await.expect("open connections gauge");
    assert!(open_now <= 256.0, "{open_now} client connections open");

    // No spinning: accepting and closing is cheap, and nothing retries in a loop.
    let cpu_before = node.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cores = (node.cpu_seconds() - cpu_before) / 3.0;
    assert!(
        cores < 0.25,
        "the node used {cores:.2} of a core while full"
    );

    // What it holds keeps working, and so does the peer port.
    for i in 0..50 {
        let key = format!("while-full-{i:02}");
        put(&mut held, &key).await;
        acknowledged.push(key);
    }
    let status = common::admin()
        .cluster_status(&node.peer.to_string())
        .await
        .expect("the peer port answers while the client port is full");
    assert!(!status.members.is_empty());

    drop(crowd);
    let mut fresh = eventually(
        "a new client is served once the crowd left",
        Duration::from_secs(30),
        || async {
            let mut client = node.connector.client(&node.grpc.to_string()).await.ok()?;
            client
                .raw()
                .raw_get(RawGetRequest {
                    key: Bytes::from("before-00"),
                    ..Default::default()
                })
                .await
                .ok()?;
            Some(client)
        },
    )
    .await;
    read_back(&mut fresh, &acknowledged).await;
    println!(
        "{IDLE} idle connections under ulimit -n 1024: {counted} refused, {open_now} held; {:.2} of a core while full; {} acknowledged writes read back",
        cores,
        acknowledged.len()
    );
}

/// Row 10: an HTTP/1.1 request gets an HTTP error that says what to use.
/// And row 5's slow clients: a handshake that stops half-way is closed
/// within the handshake timeout, and header blocks trickled a byte a
/// second within the header timeout, instead of being held forever.
#[tokio::test]
async fn http1_gets_an_http_error_and_truncated_or_trickled_headers_are_closed() {
    const TRICKLERS: usize = 100;
    let node = TestNode::start(
        Ipv4Addr::new(127, 0, 90, 1),
        &[
            "--handshake-timeout-secs",
            "1",
            "--header-timeout-secs",
            "2",
        ],
    )
    .await;
    let mut stream = TcpStream::connect(node.grpc).await.expect("connect");
    stream
        .write_all(
            b"POST /ringkv.v1.RawKV/RawGet HTTP/1.1\r\nHost: ringkv\r\nContent-Type: application/grpc\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("send");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    assert!(
        answer.starts_with("HTTP/1.1 505"),
        "HTTP/1.1 gets 505: {answer}"
    );
    assert!(answer.contains("HTTP/2"), "{answer}");

    let mut truncated = TcpStream::connect(node.grpc).await.expect("connect");
    truncated.write_all(&PREFACE[..10]).await.expect("send");
    let started = Instant::now();
    let mut byte = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match truncated.read(&mut byte).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a truncated preface is closed");
    println!(
        "HTTP/1.1 answered with {:?}; a truncated preface closed after {:?}",
        answer.lines().next().unwrap_or_default(),
        started.elapsed()
    );

    // A HEADERS frame (16 bytes, stream 1, END_HEADERS) trickled at one
    // byte a second: the idle timeout never fires, and no request exists
    // for a deadline to end.
    let mut headers = b"\0\0\x10\x01\x04\0\0\0\x01".to_vec();
    headers.extend_from_slice(&[0x82; 16]);
    let mut tricklers = Vec::new();
    for _ in 0..TRICKLERS {
        let mut stream = TcpStream::connect(node.grpc).await.expect("connect");
        stream.write_all(PREFACE).await.expect("preface");
        stream.write_all(&EMPTY_SETTINGS).await.expect("settings");
        let headers = headers.clone();
        tricklers.push(tokio::spawn(async move {
            let started = Instant::now();
            for byte in headers {
                if stream.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Whatever the node sent (its SETTINGS, a GOAWAY) until it closed.
            let mut sink = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut sink))
                    .await
                    .is_ok();
            (closed, started.elapsed())
        }));
    }
    // Meanwhile the node serves others.
    let mut client = node.client().await;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let key = format!("while-trickled-{i:02}");
        put(&mut client, &key).await;
        acknowledged.push(key);
    }
    let mut slowest = Duration::ZERO;
    for trickler in tricklers {
        let (closed, took) = trickler.await.expect("trickler");
        assert!(closed, "a trickled header block is closed");
        assert!(
            took < Duration::from_secs(8),
            "closed after {took:?} with --header-timeout-secs 2"
        );
        slowest = slowest.max(took);
    }
    println!("{TRICKLERS} header blocks trickled at 1 B/s: all closed, the last after {slowest:?}");
    // The node still serves.
    put(&mut client, "after").await;
    acknowledged.push("after".to_string());
    read_back(&mut client, &acknowledged).await;
    println!("{} acknowledged writes read back", acknowledged.len());
}

/// Starts a RawPut on `client` whose body says 1 MiB follows and then
/// sends `sent` of it; returns the answer's gRPC status and how long it took.
async fn stalled_put(
    client: h2::client::SendRequest<Bytes>,
    node: &TestNode,
    trickle: bool,
) -> (String, Duration) {
    let mut client = client.ready().await.expect("room for a stream");
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/ringkv.v1.RawKV/RawPut", node.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let started = Instant::now();
    let (response, mut body) = client.send_request(request, false).expect("send");
    // The gRPC frame header: not compressed, 1 MiB to follow.
    body.send_data(Bytes::from_static(&[0, 0, 16, 0, 0]), false)
        .expect("send the length prefix");
    let trickling = trickle.then(|| {
        tokio::spawn(async move {
            // One byte every 100 ms, for as long as the stream lasts.
            while body.send_data(Bytes::from_static(b"x"), false).is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let response = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .expect("an answer within 30 s")
        .expect("a response");
    let took = started.elapsed();
    if let Some(task) = trickling {
        task.abort();
    }
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, took)
}

async fn h2_connection(node: &TestNode) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(node.grpc).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(connection);
    client
}

/// Row 5: 200 requests that send their headers and stall half-way through
/// the body, and one that trickles its body a byte at a time. The first
/// 128 are admitted and answered DEADLINE_EXCEEDED at the request deadline
/// (the default, as they set none); the rest are shed at once with
/// RESOURCE_EXHAUSTED; the trickler ends at its deadline too; and the node
/// then serves writes, which read back.
#[tokio::test]
async fn stalled_and_trickling_requests_end_at_their_deadline() {
    const STALLED: usize = 200;
    const LIMIT: usize = 128;
    let node = TestNode::start(
        Ipv4Addr::new(127, 0, 91, 1),
        &[
            "--request-timeout-ms",
            "2000",
            "--max-concurrent-requests",
            &LIMIT.to_string(),
        ],
    )
    .await;
    let before = node.rss_bytes();
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(h2_connection(&node).await);
    }
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let client = connections[i % connections.len()].clone();
        let node = &node;
        stalled.push(async move { stalled_put(client, node, false).await });
    }
    let answers = futures::future::join_all(stalled).await;
    let (mut cut, mut shed) = (0, 0);
    for (status, took) in &answers {
        match status.as_str() {
            "4" => {
                assert!(
                    *took >= Duration::from_millis(1_500),
                    "cut at its deadline, not before: {took:?}"
                );
                cut += 1;
            }
            "8" => shed += 1,
            other => panic!("a stalled request answered with grpc-status {other:?} after {took:?}"),
        }
    }
    assert_eq!(cut, LIMIT, "every admitted request ends at its deadline");
    assert_eq!(shed, STALLED - LIMIT, "the rest are shed");
    let peak = node.peak_rss_bytes();

    let (status, took) = stalled_put(h2_connection(&node).await, &node, true).await;
    assert_eq!(status, "4", "a trickling body ends at the deadline");
    assert!(took < Duration::from_secs(10), "{took:?}");

    let mut client = node.client().await;
    let keys: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    for key in &keys {
        put(&mut client, key).await;
    }
    read_back(&mut client, &keys).await;
    println!(
        "{STALLED} stalled requests: {cut} ended at the 2 s deadline, {shed} shed; a trickling body ended after {took:?}; RSS {} MiB before, peak {} MiB; {} acknowledged writes read back",
        before >> 20,
        peak >> 20,
        keys.len()
    );
}
