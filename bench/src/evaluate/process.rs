//! Child processes of the evaluation: spawned with their output in a log
//! file, in their own process group, killed if the evaluation drops them.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use nix::{sys::signal, unistd::Pid};
use tokio::{
    net::TcpStream,
    process::{Child, Command},
    time::{sleep, Instant},
};

use crate::BenchError;

pub struct Process {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self, BenchError> {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| BenchError::io(format!("creating {}", parent.display()), e))?;
        }
        let file = std::fs::File::create(log)
            .map_err(|e| BenchError::io(format!("creating {}", log.display()), e))?;
        let stderr = file
            .try_clone()
            .map_err(|e| BenchError::io(format!("opening {}", log.display()), e))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::io(format!("starting {name}"), e))?;
        Ok(Self {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// An error naming the log when the process has exited.
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(BenchError::Process {
                what: self.name.clone(),
                message: format!("exited with {status}; see {}", self.log.display()),
            }),
            _ => Ok(()),
        }
    }

    pub fn signal(&self, signal: signal::Signal) {
        if let Some(pid) = self.child.id() {
            let _ = signal::kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGKILL, as a crash.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        self.signal(signal::Signal::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }
}

/// Waits until something accepts connections on `address`, or the process
/// exits, or the deadline passes.
pub async fn wait_listening(
    process: &mut Process,
    address: SocketAddr,
    deadline: Duration,
) -> Result<(), BenchError> {
    let until = Instant::now() + deadline;
    loop {
        process.check_running()?;
        if TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(BenchError::Process {
                what: process.name.clone(),
                message: format!(
                    "did not listen on {address} within {deadline:?}; see {}",
                    process.log.display()
                ),
            });
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// The address `offset` after `first`.
pub fn nth_address(first: Ipv4Addr, offset: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(first) + offset as u32)
}
