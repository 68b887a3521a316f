//! Test harness: real `ringkv-node` processes, each on its own loopback
//! address, with helpers to poll conditions against a deadline.

#![allow(dead_code)]

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::{sys::signal, unistd::Pid};
use ringkv_client::Client;
use tokio::time::{sleep, Instant};

pub const GRPC_PORT: u16 = 7379;
pub const METRICS_PORT: u16 = 9379;

/// Polls `check` until it returns `Some`, failing the test at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < until,
            "{what}: not true within {deadline:?}"
        );
        sleep(Duration::from_millis(25)).await;
    }
}

/// One `ringkv-node` process and its data dir.
pub struct TestNode {
    pub ip: Ipv4Addr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub data_dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    _tempdir: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts a node on `ip` with a fresh data dir and waits until it serves.
    pub async fn start(ip: Ipv4Addr, args: &[&str]) -> Self {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let data_dir = tempdir.path().join("db");
        let mut node = Self::start_in(ip, &data_dir, args).await;
        node._tempdir = Some(tempdir);
        node
    }

    /// Starts a node on `ip` over an existing data dir.
    pub async fn start_in(ip: Ipv4Addr, data_dir: &Path, args: &[&str]) -> Self {
        let mut node = Self {
            ip,
            grpc: SocketAddr::from((ip, GRPC_PORT)),
            metrics: SocketAddr::from((ip, METRICS_PORT)),
            data_dir: data_dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            _tempdir: None,
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_ringkv-node"))
            .arg("--listen")
            .arg(self.grpc.to_string())
            .arg("--metrics-listen")
            .arg(self.metrics.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--node-id")
            .arg(format!("test-{}", self.ip))
            .args(&self.args)
            .env("RINGKV_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ringkv-node");
        self.child = Some(child);
        let grpc = self.grpc.to_string();
        eventually(
            &format!("node {grpc} serving"),
            Duration::from_secs(30),
            || {
                let grpc = grpc.clone();
                async move { matches!(ringkv_client::is_serving(&grpc).await, Ok(true)).then_some(()) }
            },
        )
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.grpc.to_string())
            .await
            .expect("connect to node")
    }

    /// Kills the process with SIGKILL: no flush, no clean close.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node running");
        signal::kill(Pid::from_raw(child.id() as i32), signal::Signal::SIGTERM).expect("SIGTERM");
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < until,
                "node did not stop within 30 s of SIGTERM"
            );
            sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts the process again over the same data dir.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the node first");
        self.spawn().await;
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Resident memory of the process, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
            .expect("VmRSS in /proc status")
    }

    /// The node's /metrics page.
    pub async fn metrics_text(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics)
            .await
            .expect("connect to metrics");
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut body = String::new();
        stream.read_to_string(&mut body).await.expect("read");
        body
    }

    /// The value of one unlabelled metric on the /metrics page.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        text.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
