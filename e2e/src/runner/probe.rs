//! Readiness and liveness probes: gRPC health, HTTP GET and TCP, against
//! the pod's own address.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Container, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// The timing of a probe, with Kubernetes' defaults.
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

pub fn timing(probe: &Probe) -> Timing {
    let secs =
        |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
    Timing {
        initial_delay: secs(probe.initial_delay_seconds, 0),
        period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
    }
}

fn port(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Runs one probe once; `Err` says why it failed.
pub async fn check(probe: &Probe, container: &Container, ip: &str) -> Result<(), String> {
    let timeout = timing(probe).timeout;
    let attempt = async {
        if let Some(grpc) = &probe.grpc {
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://{ip}:{}", grpc.port))
                    .map_err(|e| e.to_string())?
                    .connect_timeout(timeout);
            let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: grpc.service.clone().unwrap_or_default(),
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner()
                .status;
            return if status == ServingStatus::Serving as i32 {
                Ok(())
            } else {
                Err(format!("gRPC health status {status}"))
            };
        }
        if let Some(http) = &probe.http_get {
            let port = port(container, &http.port).ok_or("unknown port")?;
            let mut stream = TcpStream::connect((ip, port))
                .await
                .map_err(|e| e.to_string())?;
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            let request = format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.37\r\nConnection: close\r\n\r\n");
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut head = [0u8; 12];
            stream
                .read_exact(&mut head)
                .await
                .map_err(|e| e.to_string())?;
            let code: u16 = std::str::from_utf8(&head[9..12])
                .ok()
                .and_then(|c| c.parse().ok())
                .ok_or("no HTTP status")?;
            return if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            };
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = port(container, &tcp.port).ok_or("unknown port")?;
            TcpStream::connect((ip, port))
                .await
                .map_err(|e| e.to_string())?;
            return Ok(());
        }
        Err("exec probes are not supported by the pod runner".to_string())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {timeout:?}")),
    }
}
