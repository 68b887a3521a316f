//! A container as a local process: its own mount namespace with the pod's
//! volumes bind-mounted at the container's mount paths, its own process
//! group, and its output appended to a log file.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use tokio::process::{Child, Command};

pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

pub struct Spawn<'a> {
    pub binary: &'a Path,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub mounts: &'a [Mount],
    pub log: &'a Path,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell run inside the new mount namespace before `exec`.
fn mount_script(mounts: &[Mount]) -> String {
    let mut script = String::from("set -e\n");
    for mount in mounts {
        let (source, target) = (
            quote(&mount.source.display().to_string()),
            quote(&mount.target),
        );
        script.push_str(&format!(
            "mkdir -p -- {target}\nmount --bind -- {source} {target}\n"
        ));
        if mount.read_only {
            script.push_str(&format!("mount -o remount,bind,ro -- {target}\n"));
        }
    }
    script.push_str("exec \"$@\"\n");
    script
}

pub fn spawn(spec: &Spawn<'_>) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.log)?;
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(mount_script(spec.mounts))
        .arg("sh")
        .arg(spec.binary)
        .args(spec.args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true);
    command.spawn()
}

/// Sends `signal` to the container's process group.
pub fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_script_quotes_and_binds_each_volume() {
        let script = mount_script(&[Mount {
            source: PathBuf::from("/state/vol's"),
            target: "/data".into(),
            read_only: true,
        }]);
        assert!(
            script.contains("mount --bind -- '/state/vol'\\''s' '/data'"),
            "{script}"
        );
        assert!(script.contains("remount,bind,ro"));
        assert!(script.ends_with("exec \"$@\"\n"));
    }
}
