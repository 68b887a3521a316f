//! Replica and Admin are the cluster's own surface: served on the peer port
//! only, and there only to callers that hold the cluster secret.

mod common;

use std::net::Ipv4Addr;

use common::{TestNode, TEST_SECRET};
use ringkv_client::{
    peer_auth::{now_ms, ClusterKey, Role, MAX_TOKEN_SKEW, METADATA_KEY},
    proto::{
        admin_client::AdminClient, replica_client::ReplicaClient, BucketDigestsRequest,
        ClusterStatusRequest, CompactRequest, DecommissionRequest, GetLayoutRequest,
        HandoffProgressRequest, PartitionTreesRequest, ReplicaApplyBatchRequest,
        ReplicaApplyRequest, ReplicaReadBatchRequest, ReplicaReadRequest, ReplicaScanRequest,
        RingStatusRequest, StreamPartitionsRequest,
    },
};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::Channel,
    Code, Request, Status,
};

/// Puts one fixed token (or none) on every call.
#[derive(Clone)]
struct Stamp(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Stamp {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert(METADATA_KEY, token.clone());
        }
        Ok(request)
    }
}

type Stamped = InterceptedService<Channel, Stamp>;

fn code<T>(result: Result<T, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The code of every Replica and Admin method, called with `token` on
/// `address`. The requests would do harm if served: an overwrite, a dump
/// of the store, a decommission.
async fn every_method(address: &str, token: Option<String>) -> Vec<(&'static str, Code)> {
    let channel = ringkv_client::Connector::plaintext()
        .channel(address)
        .await
        .expect("connect");
    let stamp = Stamp(token.map(|t| t.parse().expect("ASCII token")));
    let stamped: Stamped = InterceptedService::new(channel, stamp);
    let mut replica = ReplicaClient::new(stamped.clone());
    let mut admin = AdminClient::new(stamped);
    let record = ringkv_node::Siblings::default();
    vec![
        (
            "Replica.Read",
            code(replica.read(ReplicaReadRequest { key: "k".into() }).await),
        ),
        (
            "Replica.ReadBatch",
            code(
                replica
                    .read_batch(ReplicaReadBatchRequest {
                        keys: vec!["k".into()],
                    })
                    .await,
            ),
        ),
        (
            "Replica.Apply",
            code(
                replica
                    .apply(ReplicaApplyRequest {
                        key: "k".into(),
                        record: record.encode(),
                        hint_for: String::new(),
                    })
                    .await,
            ),
        ),
        (
            "Replica.ApplyBatch",
            code(
                replica
                    .apply_batch(ReplicaApplyBatchRequest::default())
                    .await,
            ),
        ),
        (
            "Replica.ScanLocal",
            code(replica.scan_local(ReplicaScanRequest::default()).await),
        ),
        (
            "Replica.GetLayout",
            code(replica.get_layout(GetLayoutRequest {}).await),
        ),
        (
            "Replica.StreamPartitions",
            code(
                replica
                    .stream_partitions(StreamPartitionsRequest {
                        partitions: (0..256).collect(),
                        start_after: Default::default(),
                        digests: false,
                    })
                    .await,
            ),
        ),
        (
            "Replica.HandoffProgress",
            code(replica.handoff_progress(HandoffProgressRequest {}).await),
        ),
        (
            "Replica.PartitionTrees",
            code(
                replica
                    .partition_trees(PartitionTreesRequest {
                        partitions: vec![0],
                    })
                    .await,
            ),
        ),
        (
            "Replica.BucketDigests",
            code(
                replica
                    .bucket_digests(BucketDigestsRequest::default())
                    .await,
            ),
        ),
        (
            "Admin.ClusterStatus",
            code(admin.cluster_status(ClusterStatusRequest {}).await),
        ),
        (
            "Admin.RingStatus",
            code(admin.ring_status(RingStatusRequest {}).await),
        ),
        (
            "Admin.Decommission",
            code(
                admin
                    .decommission(DecommissionRequest {
                        node_id: "test-127.0.85.1".into(),
                    })
                    .await,
            ),
        ),
        (
            "Admin.Compact",
            code(admin.compact(CompactRequest {}).await),
        ),
    ]
}

fn assert_all(what: &str, codes: &[(&'static str, Code)], expected: Code) {
    for (method, code) in codes {
        assert_eq!(*code, expected, "{method} {what}");
    }
    println!("{what}: {} methods answered {expected:?}", codes.len());
}

/// Without the cluster's secret nothing on the peer surface is served:
/// not on the client port (not there at all), not on the peer port
/// without a token, with a token of another secret, or with one signed
/// outside the clock skew; a peer's token cannot decommission. RawKV keeps
/// working throughout, and the value written before is untouched.
#[tokio::test]
async fn the_peer_surface_needs_the_cluster_secret() {
    let node = TestNode::start(Ipv4Addr::new(127, 0, 85, 1), &[]).await;
    let mut client = node.client().await;
    client.put(b"k", b"kept").await.expect("put");
    let (grpc, peer) = (node.grpc.to_string(), node.peer.to_string());

    assert_all(
        "on the client port",
        &every_method(&grpc, None).await,
        Code::Unimplemented,
    );
    assert_all(
        "without a token",
        &every_method(&peer, None).await,
        Code::Unauthenticated,
    );
    let wrong = ClusterKey::new(b"not the cluster's secret");
    assert_all(
        "with another secret's admin token",
        &every_method(&peer, Some(wrong.token(Role::Admin, "intruder", now_ms()))).await,
        Code::Unauthenticated,
    );
    let key = ClusterKey::new(TEST_SECRET.as_bytes());
    let stale = now_ms() - MAX_TOKEN_SKEW.as_millis() as u64 - 60_000;
    assert_all(
        "with a stale admin token",
        &every_method(&peer, Some(key.token(Role::Admin, "replayer", stale))).await,
        Code::Unauthenticated,
    );
    let refused = node
        .metric("ringkv_peer_calls_refused_total")
        .await
        .expect("the refusal counter");
    assert!(refused >= 36.0, "every refusal counted: {refused}");

    let with_peer_token = every_method(&peer, Some(key.token(Role::Peer, "n9", now_ms()))).await;
    let decommission = with_peer_token
        .iter()
        .find(|(method, _)| *method == "Admin.Decommission")
        .map(|(_, code)| *code);
    assert_eq!(decommission, Some(Code::PermissionDenied));
    let compact = with_peer_token
        .iter()
        .find(|(method, _)| *method == "Admin.Compact")
        .map(|(_, code)| *code);
    assert_eq!(compact, Some(Code::PermissionDenied));
    for (method, code) in &with_peer_token {
        assert_ne!(*code, Code::Unauthenticated, "{method} with a peer token");
    }
    // An administrator's token passes the door; a one-node cluster still
    // refuses to lose its only node.
    let with_admin_token =
        every_method(&peer, Some(key.token(Role::Admin, "operator", now_ms()))).await;
    let decommission = with_admin_token
        .iter()
        .find(|(method, _)| *method == "Admin.Decommission")
        .map(|(_, code)| *code);
    assert_eq!(decommission, Some(Code::FailedPrecondition));
    let compact = with_admin_token
        .iter()
        .find(|(method, _)| *method == "Admin.Compact")
        .map(|(_, code)| *code);
    assert_eq!(compact, Some(Code::Ok));

    assert_eq!(
        common::value_of(&mut client, b"k").await.as_deref(),
        Some(&b"kept"[..]),
        "the refused Apply changed nothing"
    );
    client.put(b"k2", b"v").await.expect("RawKV still serves");
    println!(
        "checked 2 acknowledged writes after {refused} refused calls; peak RSS {} MiB",
        node.peak_rss_bytes() >> 20
    );
}
