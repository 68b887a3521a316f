//! TLS: a three-node cluster whose clients and peers all speak mutual TLS,
//! with a plaintext listener that serves health alone for probes.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::{get_at, put_at, TestCluster, STANDALONE};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use ringkv_client::Connector;

const SERVER_NAME: &str = "demo-peers.default.svc";

/// A CA and the PEM files it signed, written into `dir`.
struct Pki {
    ca: String,
}

/// The node flags of TLS with the `ringkv` PKI in `dir`.
fn tls_flags(dir: &Path) -> Vec<String> {
    let path = |file: &str| dir.join(file).display().to_string();
    vec![
        "--tls-cert-file".into(),
        path("ringkv-node.crt"),
        "--tls-key-file".into(),
        path("ringkv-node.key"),
        "--tls-ca-file".into(),
        path("ringkv-ca.crt"),
        "--tls-server-name".into(),
        SERVER_NAME.into(),
    ]
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let pem = ca.pem();
        std::fs::write(dir.join(format!("{name}-ca.crt")), &pem).expect("write CA");
        for (leaf, names) in [
            ("node", vec![SERVER_NAME.to_string()]),
            ("client", Vec::new()),
        ] {
            let mut params = CertificateParams::new(names).expect("leaf params");
            params
                .distinguished_name
                .push(DnType::CommonName, format!("{name} {leaf}"));
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &ca).expect("leaf certificate");
            std::fs::write(dir.join(format!("{name}-{leaf}.crt")), cert.pem()).expect("write");
            std::fs::write(dir.join(format!("{name}-{leaf}.key")), key.serialize_pem())
                .expect("write");
        }
        Self { ca: pem }
    }
}

#[tokio::test]
async fn mutual_tls_between_clients_and_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |file: &str| dir.path().join(file).display().to_string();
    let pki = Pki::new(dir.path(), "ringkv");
    let rogue = Pki::new(dir.path(), "rogue");
    let mut flags = tls_flags(dir.path());
    flags.extend(["--tls-client-auth".into(), "true".into()]);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let client_identity = (
        std::fs::read(path("ringkv-client.crt")).expect("client cert"),
        std::fs::read(path("ringkv-client.key")).expect("client key"),
    );
    let node_identity = (
        std::fs::read(path("ringkv-node.crt")).expect("node cert"),
        std::fs::read(path("ringkv-node.key")).expect("node key"),
    );
    // The harness calls the peer port as the operator does: with the
    // nodes' certificate.
    let operator = Connector::tls(
        pki.ca.as_bytes(),
        Some(SERVER_NAME),
        Some((&node_identity.0, &node_identity.1)),
    );
    let trusted = Connector::tls(
        pki.ca.as_bytes(),
        Some(SERVER_NAME),
        Some((&client_identity.0, &client_identity.1)),
    );
    // Forming the cluster and reaching SERVING already takes gossip, the
    // claimant and the health check over TLS.
    let cluster = TestCluster::start_with(36, 3, &args, operator).await;
    let endpoint = cluster.nodes[0].grpc.to_string();
    let peer_endpoint = cluster.nodes[0].peer.to_string();

    // W=3 and R=3: the coordinator reaches both peers over mutual TLS. The
    // client presents a certificate the cluster's CA signed for a client.
    let mut client = trusted.client(&endpoint).await.expect("client over TLS");
    client
        .raw()
        .raw_put(put_at("secret", "kept", 3))
        .await
        .expect("W=3 over TLS");
    let got = client
        .raw()
        .raw_get(get_at("secret", 3))
        .await
        .expect("R=3 over TLS")
        .into_inner();
    assert_eq!(got.value, Bytes::from_static(b"kept"));

    // Whoever does not hold the keys gets nothing.
    let plaintext = async {
        ringkv_client::Client::connect(&endpoint)
            .await?
            .get(b"secret")
            .await
    };
    let refused = plaintext.await.expect_err("plaintext to a TLS port");
    println!("plaintext client: {refused}");
    let anonymous = Connector::tls(pki.ca.as_bytes(), Some(SERVER_NAME), None);
    let refused = async { anonymous.client(&endpoint).await?.get(b"secret").await }
        .await
        .expect_err("no client certificate");
    println!("client without a certificate: {refused}");
    let rogue_client = Connector::tls(
        rogue.ca.as_bytes(),
        Some(SERVER_NAME),
        Some((&client_identity.0, &client_identity.1)),
    );
    let refused = async { rogue_client.client(&endpoint).await?.get(b"secret").await }
        .await
        .expect_err("a client trusting another CA");
    println!("client trusting another CA: {refused}");
    // The right CA, but the node's certificate names another server.
    let misnamed = Connector::tls(
        pki.ca.as_bytes(),
        Some("not-a-ringkv-node"),
        Some((&client_identity.0, &client_identity.1)),
    );
    let refused = async { misnamed.client(&endpoint).await?.get(b"secret").await }
        .await
        .expect_err("a client expecting another server name");
    println!("client expecting another server name: {refused}");

    // A client's certificate from the cluster's own CA, with a valid admin
    // token: the peer port still refuses it, since it names no node.
    let signed = trusted
        .clone()
        .with_cluster_secret(common::TEST_SECRET.as_bytes(), "test");
    let refused = signed
        .ring_status(&peer_endpoint)
        .await
        .expect_err("a client certificate on the peer port");
    let ringkv_client::ClientError::Status(status) = &refused else {
        panic!("an answer from the peer port: {refused}");
    };
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains(SERVER_NAME) && status.message().contains("--tls-server-name"),
        "{}",
        status.message()
    );
    assert!(
        signed
            .decommission(&peer_endpoint, &cluster.nodes[2].node_id())
            .await
            .is_err(),
        "no ring change from a client certificate"
    );
    let ring = common::ring_status(&cluster.nodes[0])
        .await
        .expect("the nodes' certificate is let in");
    assert!(
        ring.members.iter().all(|m| m.status == "normal"),
        "{:?}",
        ring.members
    );
}

#[tokio::test]
async fn probes_reach_health_in_plaintext_beside_a_tls_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "ringkv");
    let health = "127.0.37.1:7380";
    let mut flags = tls_flags(dir.path());
    flags.extend(["--health-listen".into(), health.into()]);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(STANDALONE);
    let trusted = Connector::tls(pki.ca.as_bytes(), Some(SERVER_NAME), None);
    let cluster = TestCluster::start_with(37, 1, &args, trusted).await;
    assert!(
        ringkv_client::Connector::plaintext()
            .is_serving(health)
            .await
            .expect("plaintext health"),
        "the health listener reports what the TLS listener does"
    );
    let refused = ringkv_client::Client::connect(health)
        .await
        .expect("connect")
        .get(b"k")
        .await
        .expect_err("RawKV is not on the health listener");
    assert_eq!(refused.code(), Some(tonic::Code::Unimplemented));
    drop(cluster);
}

/// Row 5's slow clients under TLS. The node takes the TLS handshake itself
/// and reads the HTTP/2 frames inside it, so a handshake that stalls is
/// dropped at the handshake timeout and a header block trickled through
/// TLS at the header timeout, as in cleartext.
#[tokio::test]
async fn slow_tls_handshakes_and_trickled_headers_are_closed() {
    use std::{sync::Arc, time::Duration};

    use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio::{
        io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
        time::Instant,
    };
    use tokio_rustls::{
        rustls::{crypto::ring::default_provider, ClientConfig, RootCertStore},
        TlsConnector,
    };

    /// How long until the node closes `stream`, reading what it sends.
    async fn closed_after(mut stream: impl AsyncRead + Unpin, started: Instant) -> Duration {
        let mut sink = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut sink))
            .await
            .expect("closed within 20 s")
            .ok();
        started.elapsed()
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "ringkv");
    let mut flags = tls_flags(dir.path());
    flags.extend([
        "--handshake-timeout-secs".into(),
        "1".into(),
        "--header-timeout-secs".into(),
        "2".into(),
    ]);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(STANDALONE);
    let trusted = Connector::tls(pki.ca.as_bytes(), Some(SERVER_NAME), None);
    let cluster = TestCluster::start_with(94, 1, &args, trusted.clone()).await;
    let node = &cluster.nodes[0];

    // A client that opens TCP and sends half a ClientHello.
    let mut stalled = TcpStream::connect(node.grpc).await.expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("send");
    let took = closed_after(stalled, Instant::now()).await;
    println!("a stalled TLS handshake was closed after {took:?}");
    assert!(took < Duration::from_secs(4), "closed after {took:?}");

    // A client that finishes TLS and HTTP/2's preface, then trickles a
    // HEADERS frame a byte every 300 ms inside TLS.
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).expect("CA"))
        .expect("root");
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(node.grpc).await.expect("connect");
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVER_NAME).expect("name"), tcp)
        .await
        .expect("a TLS handshake");
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    tls.flush().await.expect("flush");
    let started = Instant::now();
    let (reader, mut writer) = tokio::io::split(tls);
    let trickler = tokio::spawn(async move {
        for byte in b"\0\0\x10\x01\x04\0\0\0\x01".iter().chain(&[0x82; 16]) {
            if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let took = closed_after(reader, started).await;
    trickler.abort();
    println!("a header block trickled through TLS was closed after {took:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "closed after {took:?} with --header-timeout-secs 2"
    );

    // Whole requests over TLS go on.
    let mut client = trusted
        .client(&node.grpc.to_string())
        .await
        .expect("client");
    client
        .raw()
        .raw_put(put_at("after", "kept", 1))
        .await
        .expect("a put over TLS");
    let got = client
        .raw()
        .raw_get(get_at("after", 1))
        .await
        .expect("a get over TLS")
        .into_inner();
    assert_eq!(got.value, Bytes::from_static(b"kept"));
    println!("1 acknowledged write read back");
}
