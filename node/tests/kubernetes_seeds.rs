//! The Kubernetes seed provider against a mocked API server (tower-test):
//! it lists this cluster's pods by label selector and gossips with their pod
//! IPs, skipping itself, pods without an IP and pods being deleted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::{Request, Response};
use kube::client::Body;
use ringkv_node::{KubernetesSeeds, SeedProvider};
use serde_json::json;

fn pod(name: &str, ip: Option<&str>, deleting: bool) -> serde_json::Value {
    let mut metadata = json!({ "name": name, "namespace": "store" });
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-11-25T00:00:00Z");
    }
    let mut pod = json!({ "metadata": metadata, "status": { "phase": "Running" } });
    if let Some(ip) = ip {
        pod["status"]["podIP"] = json!(ip);
    }
    pod
}

#[tokio::test]
async fn lists_pods_by_selector_and_gossips_with_their_ips() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "store");
    let own_ip = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
    let seeds = KubernetesSeeds::new(
        client,
        "store".into(),
        "app.kubernetes.io/instance=demo".into(),
        7946,
        own_ip,
    );

    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("one request");
        let uri = request.uri().to_string();
        assert!(uri.starts_with("/api/v1/namespaces/store/pods"), "{uri}");
        assert!(
            uri.contains("labelSelector=app.kubernetes.io%2Finstance%3Ddemo"),
            "selector sent: {uri}"
        );
        let list = json!({
            "apiVersion": "v1",
            "kind": "PodList",
            "metadata": { "resourceVersion": "1" },
            "items": [
                pod("demo-0", Some("10.1.0.1"), false),
                pod("demo-1", Some("10.1.0.2"), false),
                pod("demo-2", Some("10.1.0.3"), false),
                pod("demo-3", None, false),
                pod("demo-4", Some("10.1.0.5"), true),
            ]
        });
        let body = serde_json::to_vec(&list).expect("json");
        send.send_response(
            Response::builder()
                .body(Body::from(body))
                .expect("response"),
        );
    });

    let found = seeds.discover().await.expect("discover");
    server.await.expect("mock server");
    let expected: Vec<SocketAddr> = vec![
        "10.1.0.2:7946".parse().unwrap(),
        "10.1.0.3:7946".parse().unwrap(),
    ];
    assert_eq!(found, expected);
}

#[tokio::test]
async fn an_api_error_is_reported_with_the_selector() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "store");
    let seeds = KubernetesSeeds::new(
        client,
        "store".into(),
        "app=ringkv".into(),
        7946,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    );
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("one request");
        let status = json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": "pods is forbidden", "reason": "Forbidden", "code": 403
        });
        send.send_response(
            Response::builder()
                .status(403)
                .body(Body::from(serde_json::to_vec(&status).expect("json")))
                .expect("response"),
        );
    });
    let error = seeds.discover().await.expect_err("forbidden");
    server.await.expect("mock server");
    let message = error.to_string();
    assert!(
        message.contains("app=ringkv") && message.contains("store"),
        "{message}"
    );
}

#[tokio::test]
async fn the_zone_comes_from_the_own_pods_annotation_once_set() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "store");
    let seeds = KubernetesSeeds::new(
        client,
        "store".into(),
        "app.kubernetes.io/instance=demo".into(),
        7946,
        IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
    );
    let server = tokio::spawn(async move {
        // First without the annotation (the operator has not written it
        // yet), then with it.
        for annotated in [false, true] {
            let (request, send) = handle.next_request().await.expect("a request");
            let uri = request.uri().to_string();
            assert!(
                uri.contains("fieldSelector=metadata.name%3Ddemo-0"),
                "{uri}"
            );
            let mut own = pod("demo-0", Some("10.1.0.1"), false);
            if annotated {
                own["metadata"]["annotations"] = json!({ "ringkv.io/zone": "zone-b" });
            }
            let list =
                json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [own] });
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&list).expect("json")))
                    .expect("response"),
            );
        }
    });
    let zone = seeds
        .pod_annotation(
            "demo-0",
            "ringkv.io/zone",
            std::time::Duration::from_secs(10),
        )
        .await;
    server.await.expect("mock server");
    assert_eq!(zone.as_deref(), Some("zone-b"));
}
