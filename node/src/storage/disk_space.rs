//! Keeps a full data volume from stopping the node.
//!
//! RocksDB recovers by itself from a write that failed for lack of space once
//! space returns, but a volume filled to the last byte still hurts: the
//! memtables cannot be flushed at a stop, and a restart cannot replay the WAL
//! into table files. So the node refuses writes while the volume has less
//! than a margin free ([`DiskGuard`]), and keeps a reserve file that it gives
//! back to RocksDB at every start and, when needed, at a stop
//! ([`Reserve`]). Reads, and batches that only delete, go on meanwhile.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use super::StorageError;

/// File name of the reserve, inside the data dir.
pub const RESERVE_FILE: &str = "ringkv.reserve";

/// Refuses writes while the data volume has less than `min_free` bytes free.
#[derive(Debug)]
pub struct DiskGuard {
    path: PathBuf,
    min_free: u64,
}

impl DiskGuard {
    /// A guard of the volume holding `path`; `min_free` 0 turns it off.
    pub fn new(path: &Path, min_free: u64) -> Self {
        Self {
            path: path.to_path_buf(),
            min_free,
        }
    }

    /// Ok while the volume has at least the margin free.
    pub fn check(&self) -> Result<(), StorageError> {
        if self.min_free == 0 {
            return Ok(());
        }
        // Read at every write: a statvfs costs about a microsecond, and a
        // cached reading would let a burst of writes run past the margin.
        // A volume that cannot be read is not taken as full: the write
        // itself then reports what is wrong.
        let free = free_bytes(&self.path).unwrap_or(u64::MAX);
        if free < self.min_free {
            return Err(StorageError::DiskFull {
                free,
                min_free: self.min_free,
            });
        }
        Ok(())
    }
}

/// Bytes an unprivileged writer may still use on the volume holding `path`.
// The block counts are narrower than u64 on 32-bit targets.
#[allow(clippy::useless_conversion)]
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())))
}

/// A file of allocated blocks that the node deletes when RocksDB needs the
/// space to open or to close.
#[derive(Debug, Clone)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    /// The reserve of `bytes` in the data dir `dir`; 0 keeps none.
    pub fn new(dir: &Path, bytes: u64) -> Self {
        Self {
            path: dir.join(RESERVE_FILE),
            bytes,
        }
    }

    /// Whether the reserve is in place (always, when it is to be empty).
    pub fn is_allocated(&self) -> bool {
        self.bytes == 0 || std::fs::metadata(&self.path).is_ok_and(|m| m.len() == self.bytes)
    }

    /// Deletes the reserve; returns whether there was one.
    pub fn release(&self) -> io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Allocates the reserve unless that would leave less than `min_free`
    /// bytes free; returns whether the reserve is in place.
    pub fn restore(&self, min_free: u64) -> io::Result<bool> {
        if self.bytes == 0 {
            return Ok(false);
        }
        if self.is_allocated() {
            return Ok(true);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if free_bytes(dir)? < self.bytes.saturating_add(min_free) {
            return Ok(false);
        }
        let file = File::create(&self.path)?;
        // Blocks allocated for real: a sparse file would reserve nothing.
        let length = i64::try_from(self.bytes).unwrap_or(i64::MAX);
        if let Err(errno) = nix::fcntl::posix_fallocate(&file, 0, length) {
            drop(file);
            let _ = std::fs::remove_file(&self.path);
            return Err(io::Error::from(errno));
        }
        file.sync_all()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_margin_above_the_free_space_refuses_naming_the_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = free_bytes(dir.path()).expect("statvfs");
        assert!(DiskGuard::new(dir.path(), 0).check().is_ok());
        assert!(DiskGuard::new(dir.path(), 1).check().is_ok());
        let error = DiskGuard::new(dir.path(), free.saturating_mul(2))
            .check()
            .expect_err("more than the volume holds");
        let message = error.to_string();
        assert!(message.contains("--min-free-disk-bytes"), "{message}");
        assert!(error.is_transient(), "space may come back: {message}");
    }

    #[test]
    fn the_reserve_allocates_its_blocks_and_gives_them_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let reserve = Reserve::new(dir.path(), 4 << 20);
        assert!(!reserve.release().expect("nothing to release"));
        assert!(!reserve.is_allocated());
        assert!(reserve.restore(0).expect("restore"));
        assert!(reserve.is_allocated());
        let meta = std::fs::metadata(dir.path().join(RESERVE_FILE)).expect("reserve file");
        assert_eq!(meta.len(), 4 << 20);
        assert!(
            meta.blocks() * 512 >= 4 << 20,
            "blocks allocated, not sparse"
        );
        assert!(reserve.restore(0).expect("already there"));
        assert!(reserve.release().expect("release"));
        assert!(!dir.path().join(RESERVE_FILE).exists());
        // Never allocated when it would eat into the margin.
        let free = free_bytes(dir.path()).expect("statvfs");
        assert!(!reserve.restore(free).expect("restore"));
        assert!(!dir.path().join(RESERVE_FILE).exists());
        assert!(!Reserve::new(dir.path(), 0).restore(0).expect("none"));
    }
}
