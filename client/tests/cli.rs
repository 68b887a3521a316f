//! The `ringkv` command line against a real local cluster started with
//! `ringkv local`.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};

const RINGKV: &str = env!("CARGO_BIN_EXE_ringkv");

fn ringkv(endpoint: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(RINGKV)
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringkv");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("ringkv output")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "ringkv failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// `ringkv local`, stopped (Ctrl-C, then SIGKILL) if a test fails midway,
/// so that its nodes never outlive the test and hold its addresses.
struct Local(Child);

impl std::ops::Deref for Local {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Local {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = signal::kill(Pid::from_raw(self.0.id() as i32), signal::Signal::SIGINT);
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `ringkv local` and reads its banner up to the Ctrl-C hint. The
/// returned lines must stay alive while the cluster runs: it writes to them.
fn start_local(data: &std::path::Path, nodes: u8, first: &str) -> (Local, Lines, String) {
    let mut local = Command::new(RINGKV)
        .args([
            "local",
            "--nodes",
            &nodes.to_string(),
            "--first-address",
            first,
        ])
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ringkv local");
    let mut lines = BufReader::new(local.stdout.take().expect("stdout")).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("read banner");
        let done = line.starts_with("Press Ctrl-C");
        banner.push(line);
        if done {
            break;
        }
    }
    (Local(local), lines, banner.join("\n"))
}

#[tokio::test]
async fn local_cluster_serves_the_cli_and_stops_on_ctrl_c() {
    let data = tempfile::tempdir().expect("tempdir");
    let (mut local, lines, banner) = start_local(data.path(), 2, "127.0.6.1");
    println!("{banner}");
    assert!(banner.contains("node-1  grpc 127.0.6.1:7379"), "{banner}");
    assert!(banner.contains("node-2  grpc 127.0.6.2:7379"), "{banner}");

    let node1 = "127.0.6.1:7379";
    stdout(&ringkv(node1, &["put", "greeting", "hello"], None));
    assert_eq!(stdout(&ringkv(node1, &["get", "greeting"], None)), "hello");
    // `ringkv put` replaces what it read: no sibling is left behind.
    stdout(&ringkv(node1, &["put", "greeting", "hi"], None));
    assert_eq!(stdout(&ringkv(node1, &["get", "greeting"], None)), "hi");
    stdout(&ringkv(node1, &["put", "greeting", "hello"], None));
    assert_eq!(stdout(&ringkv(node1, &["get", "greeting"], None)), "hello");

    // A member reports itself normal through gossip, a round or two after
    // the layout that holds it is adopted: polled against a deadline.
    let settled = |ring: &str| {
        ring.contains(": stable")
            && ["node-1", "node-2"].iter().all(|node| {
                ring.lines()
                    .any(|l| l.starts_with(node) && l.contains("normal") && l.contains("yes"))
            })
    };
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let ring = stdout(&ringkv(node1, &["ring"], None));
        if settled(&ring) {
            println!("{ring}");
            break;
        }
        assert!(
            Instant::now() < until,
            "ring not stable with node-1 and node-2 normal and alive: {ring}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused = ringkv(node1, &["decommission", "node-2"], None);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a decommission below N exits non-zero"
    );
    assert!(
        message.contains("fewer than the replication factor"),
        "the server's reason printed: {message}"
    );

    stdout(&ringkv(node1, &["put", "note", "-"], Some(b"from\nstdin")));
    assert_eq!(
        stdout(&ringkv(node1, &["get", "note"], None)),
        "from\nstdin"
    );

    for i in 1..=3 {
        stdout(&ringkv(
            node1,
            &["put", &format!("user:{i}"), &format!("n{i}")],
            None,
        ));
    }
    let scan = stdout(&ringkv(
        node1,
        &["scan", "--start", "user:", "--end", "user;", "--limit", "2"],
        None,
    ));
    assert_eq!(scan, "user:1\tn1\nuser:2\tn2\n");
    let reversed = stdout(&ringkv(
        node1,
        &["scan", "--reverse", "--keys-only", "--limit", "1"],
        None,
    ));
    assert_eq!(reversed, "user:3\n");

    stdout(&ringkv(node1, &["delete", "greeting"], None));
    let missing = ringkv(node1, &["get", "greeting"], None);
    assert!(
        !missing.status.success(),
        "get of a deleted key exits non-zero"
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    // An administrator's compaction answers with what it did.
    let compacted = stdout(&ringkv(node1, &["compact"], None));
    assert!(
        compacted.starts_with("compacted: ") && compacted.contains("live SST bytes"),
        "{compacted}"
    );

    let invalid = ringkv(node1, &["put", "", "v"], None);
    assert!(!invalid.status.success());
    let message = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        message.contains("key is empty"),
        "server's message printed: {message}"
    );

    let node2 = "127.0.6.2:7379";
    stdout(&ringkv(node2, &["put", "other", "node"], None));
    assert_eq!(stdout(&ringkv(node2, &["get", "other"], None)), "node");

    signal::kill(Pid::from_raw(local.id() as i32), signal::Signal::SIGINT).expect("SIGINT");
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = local.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < until, "ringkv local did not stop");
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(status.success(), "clean stop, got {status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(
        rest.iter()
            .filter(|l| l.contains("stopped (exit status: 0)"))
            .count(),
        2,
        "both nodes stopped cleanly: {rest:?}"
    );
    for endpoint in [node1, node2] {
        assert!(
            !matches!(
                ringkv_client::Connector::plaintext()
                    .is_serving(endpoint)
                    .await,
                Ok(true)
            ),
            "{endpoint} is down"
        );
    }
}

#[tokio::test]
async fn bench_prints_figures_against_a_baseline() {
    let data = tempfile::tempdir().expect("tempdir");
    let (mut local, lines, _) = start_local(data.path(), 1, "127.0.6.10");
    let output = ringkv(
        "127.0.6.10:7379",
        &[
            "bench",
            "--requests",
            "2000",
            "--concurrency",
            "8",
            "--json",
        ],
        None,
    );
    let text = stdout(&output);
    println!("{text}");
    let phases: Vec<&str> = text.lines().collect();
    assert_eq!(phases.len(), 3, "baseline, put and get");
    for (line, phase) in phases.iter().zip(["baseline", "put", "get"]) {
        assert!(line.contains(&format!("\"phase\":\"{phase}\"")), "{line}");
        assert!(line.contains("\"errors\":0"), "{line}");
        assert!(line.contains("\"p999_us\":"), "{line}");
    }
    signal::kill(Pid::from_raw(local.id() as i32), signal::Signal::SIGTERM).expect("SIGTERM");
    assert!(local.wait().expect("wait").success());
    drop(lines);
}

#[tokio::test]
async fn three_node_local_cluster_survives_a_killed_node() {
    let data = tempfile::tempdir().expect("tempdir");
    let (mut local, lines, banner) = start_local(data.path(), 3, "127.0.6.20");
    println!("{banner}");
    let node1 = "127.0.6.20:7379";
    let node3 = "127.0.6.22:7379";
    for i in 0..50 {
        stdout(&ringkv(
            node1,
            &["put", &format!("tour:{i:02}"), &format!("v{i}")],
            None,
        ));
    }
    // Serving means in the ring; the members' gossiped statuses follow
    // within a few gossip rounds, so agreement is polled against a deadline.
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = stdout(&ringkv(node1, &["status"], None));
        if status.contains("views agree") {
            break status;
        }
        assert!(Instant::now() < until, "views never agreed: {status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("{status}");
    for node in ["node-1", "node-2", "node-3"] {
        assert!(status.contains(node), "{node} listed: {status}");
    }
    assert_eq!(
        status.lines().filter(|l| l.contains(" normal ")).count(),
        3,
        "every member normal: {status}"
    );

    // Kill node-2 outright, as the README's tour does.
    let pid: i32 = banner
        .lines()
        .find(|l| l.trim_start().starts_with("node-2"))
        .and_then(|l| l.rsplit("pid ").next())
        .and_then(|p| p.trim().parse().ok())
        .expect("node-2 pid in the banner");
    signal::kill(Pid::from_raw(pid), signal::Signal::SIGKILL).expect("SIGKILL node-2");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let status = stdout(&ringkv(node1, &["status"], None));
        if status
            .lines()
            .any(|l| l.starts_with("node-2") && l.contains(" no "))
        {
            break;
        }
        assert!(Instant::now() < until, "node-2 not seen down: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..50 {
        let value = stdout(&ringkv(node3, &["get", &format!("tour:{i:02}")], None));
        assert_eq!(
            value,
            format!("v{i}"),
            "tour:{i:02} survives through node-3"
        );
    }
    println!("checked 50 acknowledged writes after killing node-2");
    signal::kill(Pid::from_raw(local.id() as i32), signal::Signal::SIGINT).expect("SIGINT");
    assert!(local.wait().expect("wait").success());
    drop(lines);
}
