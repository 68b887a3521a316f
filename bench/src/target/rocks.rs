//! ringkv's storage engine (RocksDB with the node's options) called in this
//! process: the limit of a request with no network, no RPC and no
//! replication, measured beside the networked figures.

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use ringkv_node::{Durability, Modify, RocksStorage, RocksStorageOptions, Storage};

use super::{single, Reply};
use crate::{workload::Op, BenchError};

#[derive(Debug, Clone, Default)]
pub struct RocksOptions {
    /// Data directory; a temporary one when unset.
    pub dir: Option<PathBuf>,
    /// Sync the WAL before each write returns, as a node's default
    /// `--durability sync` does; otherwise every 100 ms.
    pub sync: bool,
}

pub struct Rocks {
    storage: RocksStorage,
    // Removed when the target is dropped.
    _temporary: Option<tempfile::TempDir>,
}

impl Rocks {
    pub fn open(options: &RocksOptions) -> Result<Self, BenchError> {
        let (dir, temporary) = match &options.dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temporary = tempfile::tempdir().map_err(|e| BenchError::Io {
                    what: "creating a temporary RocksDB dir".into(),
                    source: e,
                })?;
                (temporary.path().to_path_buf(), Some(temporary))
            }
        };
        let durability = if options.sync {
            Durability::Sync
        } else {
            Durability::Periodic(Duration::from_millis(100))
        };
        let storage = RocksStorage::open(
            &dir,
            "bench",
            &RocksStorageOptions {
                durability,
                ..Default::default()
            },
        )
        .map_err(|e| BenchError::target("rocksdb", e))?;
        Ok(Self {
            storage,
            _temporary: temporary,
        })
    }

    /// Blocking calls on the runtime's thread: in-process there is nothing
    /// to wait on but RocksDB itself.
    pub fn execute(&self, op: Op, keys: &[Bytes], value: &Bytes) -> Result<Reply, BenchError> {
        let failed = |e| BenchError::target("rocksdb", e);
        match op {
            Op::Get => {
                let found = self.storage.get(single(keys)?).map_err(failed)?;
                return Ok(Reply::Value(found));
            }
            Op::BatchGet => {
                for key in keys {
                    self.storage.get(key).map_err(failed)?;
                }
            }
            Op::Put | Op::BatchPut => {
                let batch = keys
                    .iter()
                    .map(|key| Modify::Put {
                        key: key.clone(),
                        value: value.clone(),
                        expires_at_ms: None,
                    })
                    .collect();
                self.storage.write(batch).map_err(failed)?;
            }
            Op::Delete | Op::BatchDelete => {
                let batch = keys
                    .iter()
                    .map(|key| Modify::Delete { key: key.clone() })
                    .collect();
                self.storage.write(batch).map_err(failed)?;
            }
            Op::Noop => {}
        }
        Ok(Reply::Done)
    }
}
