//! A tmpfs the test mounts, as a volume of its own for a node's data.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Volume {
    pub mount: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Volume {
    /// A tmpfs of `megabytes` in a directory of its own.
    pub fn mount(megabytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mount = dir.path().join("volume");
        std::fs::create_dir(&mount).expect("mount point");
        let mut volume = Self::mount_at(&mount, megabytes);
        volume._dir = Some(dir);
        volume
    }

    /// A tmpfs of `megabytes` mounted on the directory `mount`, which
    /// exists, as a volume is mounted on a pod's data directory.
    pub fn mount_at(mount: &Path, megabytes: u64) -> Self {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}M"), "tmpfs"])
            .arg(mount)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root): {status}"
        );
        Self {
            mount: mount.to_path_buf(),
            _dir: None,
        }
    }

    pub fn resize(&self, megabytes: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={megabytes}M")])
            .arg(&self.mount)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount: {status}");
    }

    /// Fills the volume to its last byte from outside the node.
    pub fn fill(&self) -> PathBuf {
        let path = self.mount.join("other-writer");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("filler file");
        let chunk = vec![0xa5u8; 64 << 10];
        loop {
            if file.write_all(&chunk).is_err() {
                break;
            }
        }
        // What a 64 KiB chunk could not fill.
        loop {
            if file.write_all(&[0xa5]).is_err() {
                break;
            }
        }
        path
    }

    pub fn free(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.mount).expect("statvfs");
        stat.blocks_available() * stat.fragment_size()
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        // Lazily: a node killed as the test unwinds may still hold files.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}
