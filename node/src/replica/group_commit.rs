//! Local writes committed in groups, each group by one writer thread in
//! one RocksDB write batch and one sync.
//!
//! Every put a node coordinates writes its own replica, and every record
//! a peer sends is merged into it. Each of those used to take a thread of
//! tokio's blocking pool, and the threads met again in RocksDB's group
//! commit, which parks all but one of them for each sync: per write, a
//! wake-up to start it, a park and a wake-up in RocksDB, and a wake-up to
//! answer. Here a caller queues its write and waits; a writer thread takes
//! everything queued meanwhile and writes it as one group, as Cassandra's
//! and etcd's write paths batch into their commit logs. In the profile, a
//! put on three nodes cost a third less CPU (docs/benchmarks/profile.md).
//!
//! Each write still gets its own answer. A group is written as
//! [`LocalReplica::update_many`] or [`LocalReplica::apply_many`] would
//! write it: in queue order, a key written twice seeing its first write.
//! If the group fails as a whole (a storage error, a record from the
//! future, a corrupt stored record), nothing of it was written, and each
//! of its writes runs again alone, so that each caller gets the error that
//! is its own, and a good write is not refused for a bad neighbour.
//!
//! Updates and peers' records have a thread each, so that a stream of one
//! kind never waits behind the other's sync.

use std::{
    sync::{mpsc, Arc},
    thread::JoinHandle,
};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{LocalReplica, ReplicaError, Update};
use crate::versions::Siblings;

/// Writes a group takes at most, so that one group's write batch and the
/// wait of its first caller stay bounded.
const MAX_GROUP: usize = 256;

/// A kind of local write that can be committed in groups.
trait GroupWrite: Send + 'static {
    type Output: Send + 'static;
    /// Records this write holds, toward [`MAX_GROUP`].
    fn records(&self) -> usize;
    /// Every write of the group in one write batch, each with its own
    /// outcome; an error fails the whole group and writes nothing.
    fn commit_group(
        local: &LocalReplica,
        group: &[Self],
    ) -> Result<Vec<Result<Self::Output, ReplicaError>>, ReplicaError>
    where
        Self: Sized;
    /// This write alone.
    fn commit_alone(self, local: &LocalReplica) -> Result<Self::Output, ReplicaError>;
}

impl GroupWrite for Update {
    type Output = Siblings;

    fn records(&self) -> usize {
        1
    }

    fn commit_group(
        local: &LocalReplica,
        group: &[Self],
    ) -> Result<Vec<Result<Siblings, ReplicaError>>, ReplicaError> {
        Ok(local
            .update_many(group)?
            .into_iter()
            .map(|outcome| outcome.map_err(ReplicaError::from))
            .collect())
    }

    fn commit_alone(self, local: &LocalReplica) -> Result<Siblings, ReplicaError> {
        local.update(&self)
    }
}

/// Records from peers, encoded, to be merged: one `Replica.Apply`'s or one
/// `Replica.ApplyBatch`'s share.
struct Merge(Vec<(Bytes, Bytes)>);

impl GroupWrite for Merge {
    type Output = ();

    fn records(&self) -> usize {
        self.0.len()
    }

    fn commit_group(
        local: &LocalReplica,
        group: &[Self],
    ) -> Result<Vec<Result<(), ReplicaError>>, ReplicaError> {
        let records = group.iter().flat_map(|merge| merge.0.iter().cloned());
        local.apply_encoded_many(records.collect())?;
        Ok(group.iter().map(|_| Ok(())).collect())
    }

    fn commit_alone(self, local: &LocalReplica) -> Result<(), ReplicaError> {
        local.apply_encoded_many(self.0)
    }
}

type Queued<W> = (
    W,
    oneshot::Sender<Result<<W as GroupWrite>::Output, ReplicaError>>,
);

/// One writer thread and its queue.
struct Lane<W: GroupWrite> {
    name: &'static str,
    queue: Option<mpsc::Sender<Queued<W>>>,
    thread: Option<JoinHandle<()>>,
}

impl<W: GroupWrite> Lane<W> {
    fn start(name: &'static str, local: Arc<LocalReplica>) -> Result<Self, ReplicaError> {
        let (queue, queued) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || write_groups(&local, &queued))
            .map_err(|source| ReplicaError::WriterThread { name, source })?;
        Ok(Self {
            name,
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    async fn commit(&self, write: W) -> Result<W::Output, ReplicaError> {
        let stopped = || ReplicaError::WriterStopped { name: self.name };
        let (answer, answered) = oneshot::channel();
        self.queue
            .as_ref()
            .ok_or_else(stopped)?
            .send((write, answer))
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

impl<W: GroupWrite> Drop for Lane<W> {
    /// Waits for the writes queued so far, so that the storage is released
    /// when the node's parts are.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(lane = self.name, "a writer thread panicked");
            }
        }
    }
}

/// The writer thread: until every sender is gone, takes what is queued and
/// commits it as one group.
fn write_groups<W: GroupWrite>(local: &LocalReplica, queued: &mpsc::Receiver<Queued<W>>) {
    while let Ok(first) = queued.recv() {
        let mut records = first.0.records();
        let mut group = vec![first];
        while records < MAX_GROUP {
            let Ok(next) = queued.try_recv() else { break };
            records += next.0.records();
            group.push(next);
        }
        let (writes, answers): (Vec<W>, Vec<_>) = group.into_iter().unzip();
        match W::commit_group(local, &writes) {
            Ok(outcomes) => {
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    // A caller that gave up no longer listens.
                    let _ = answer.send(outcome);
                }
            }
            Err(_) => {
                for (write, answer) in writes.into_iter().zip(answers) {
                    let _ = answer.send(write.commit_alone(local));
                }
            }
        }
    }
}

/// This node's local writes, committed in groups.
pub struct GroupCommit {
    updates: Lane<Update>,
    merges: Lane<Merge>,
}

impl GroupCommit {
    /// Starts the writer threads.
    pub fn start(local: Arc<LocalReplica>) -> Result<Self, ReplicaError> {
        Ok(Self {
            updates: Lane::start("ringkv-updates", local.clone())?,
            merges: Lane::start("ringkv-merges", local)?,
        })
    }

    /// [`LocalReplica::update`], in a group.
    pub async fn update(&self, update: Update) -> Result<Siblings, ReplicaError> {
        self.updates.commit(update).await
    }

    /// [`LocalReplica::apply_encoded_many`], in a group.
    pub async fn merge(&self, records: Vec<(Bytes, Bytes)>) -> Result<(), ReplicaError> {
        self.merges.commit(Merge(records)).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::{
        replica::RecordBound,
        storage::{MemoryFiles, RocksStorage, RocksStorageOptions},
        versions::{wall_clock::WallClock, Actor, CausalContext, ConflictMode, Hlc},
    };

    const KEYS: [&[u8]; 3] = [b"a", b"b", b"c"];
    const START_MS: u64 = 1_000_000;

    fn open(files: &MemoryFiles, wall: &WallClock) -> Arc<LocalReplica> {
        let options = RocksStorageOptions {
            in_memory: Some(files.clone()),
            ..Default::default()
        };
        let storage = Arc::new(RocksStorage::open(Path::new("/db"), "n1", &options).expect("open"));
        let replica =
            LocalReplica::open_with_clock(storage, "n1", ConflictMode::Siblings, wall.clone())
                .expect("replica")
                .with_record_bound(RecordBound {
                    max_siblings: 3,
                    max_bytes: 1 << 20,
                });
        Arc::new(replica)
    }

    /// A client's write, as generated.
    #[derive(Debug, Clone)]
    struct Write {
        key: usize,
        /// `None` for a delete.
        value: Option<u8>,
        context: Context,
    }

    #[derive(Debug, Clone, Copy)]
    enum Context {
        /// None sent.
        Blind,
        /// What the client read before the history began.
        ReadBefore,
        /// Stamped ten minutes ahead of the clock: refused.
        FromTheFuture,
    }

    fn write() -> impl Strategy<Value = Write> {
        let context = prop_oneof![
            4 => Just(Context::Blind),
            4 => Just(Context::ReadBefore),
            1 => Just(Context::FromTheFuture),
        ];
        (
            0..KEYS.len(),
            proptest::option::weighted(0.8, any::<u8>()),
            context,
        )
            .prop_map(|(key, value, context)| Write {
                key,
                value,
                context,
            })
    }

    /// `write` as an update of `replica`, whose records before the history
    /// are `before`.
    fn update_of(write: &Write, before: &[Option<Siblings>]) -> Update {
        let context = match write.context {
            Context::Blind => CausalContext::new(),
            Context::ReadBefore => before[write.key]
                .as_ref()
                .map(Siblings::context)
                .unwrap_or_default(),
            Context::FromTheFuture => Siblings::new()
                .update(
                    &CausalContext::new(),
                    Some(Bytes::from_static(b"x")),
                    &Actor::new("n2", 1),
                    Hlc::new(START_MS + 600_000, 0),
                )
                .context(),
        };
        Update {
            key: Bytes::from_static(KEYS[write.key]),
            blind: matches!(write.context, Context::Blind),
            context,
            value: write.value.map(|v| Bytes::from(vec![v])),
            expires_at_ms: 0,
        }
    }

    /// What a client can tell apart of a write's outcome: the values it
    /// left visible, or the error.
    fn seen(outcome: &Result<Siblings, ReplicaError>) -> Result<Vec<Bytes>, String> {
        match outcome {
            Ok(record) => {
                let mut values = record.visible_data(ConflictMode::Siblings, START_MS);
                values.sort();
                Ok(values)
            }
            Err(ReplicaError::ClockAhead { what, .. }) => Err(format!("clock ahead: {what}")),
            Err(other) => Err(other.to_string()),
        }
    }

    fn stored(replica: &LocalReplica) -> Vec<Result<Vec<Bytes>, String>> {
        KEYS.iter()
            .map(|key| seen(&replica.read(key).map(Option::unwrap_or_default)))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Over generated histories of puts and deletes, with and without
        /// contexts, some refused by the record bound and some by the
        /// clock: writes queued together and committed in groups give each
        /// caller, and leave stored, what the same writes give one at a
        /// time in queue order. A group that fails as a whole (here, for a
        /// context from the future) fails only the write that caused it.
        #[test]
        fn writes_committed_in_groups_give_what_they_give_one_at_a_time(
            seeded in proptest::collection::vec(write(), 0..6),
            history in proptest::collection::vec(write(), 1..60),
        ) {
            let wall = WallClock::manual(START_MS);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let alone_files = MemoryFiles::new().expect("files");
            let grouped_files = MemoryFiles::new().expect("files");
            let alone = open(&alone_files, &wall);
            let grouped = open(&grouped_files, &wall);
            for write in seeded.iter().filter(|w| !matches!(w.context, Context::FromTheFuture)) {
                let _ = alone.update(&update_of(write, &[None, None, None]));
                let _ = grouped.update(&update_of(write, &[None, None, None]));
            }
            let before = |replica: &LocalReplica| -> Vec<Option<Siblings>> {
                KEYS.iter().map(|key| replica.read(key).expect("read")).collect()
            };
            let (alone_before, grouped_before) = (before(&alone), before(&grouped));

            let expected: Vec<_> = history
                .iter()
                .map(|write| seen(&alone.update(&update_of(write, &alone_before))))
                .collect();
            let commit = GroupCommit::start(grouped.clone()).expect("writer threads");
            // Every write is queued, in order, before any answer is awaited.
            let got: Vec<_> = runtime.block_on(futures::future::join_all(
                history
                    .iter()
                    .map(|write| commit.update(update_of(write, &grouped_before))),
            ))
            .iter()
            .map(seen)
            .collect();
            drop(commit);

            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(stored(&grouped), stored(&alone));
            println!("checked {} acknowledged or refused writes", history.len());
        }
    }

    /// Peers' records merged in groups land as if merged one call at a
    /// time, a key sent twice keeping both.
    #[test]
    fn peers_records_merged_in_groups_all_land() {
        let wall = WallClock::manual(START_MS);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let files = MemoryFiles::new().expect("files");
        let replica = open(&files, &wall);
        let record = |node: &str, value: &'static [u8]| {
            Siblings::new()
                .update(
                    &CausalContext::new(),
                    Some(Bytes::from_static(value)),
                    &Actor::new(node, 1),
                    Hlc::new(START_MS, 0),
                )
                .encode()
        };
        let commit = GroupCommit::start(replica.clone()).expect("writer threads");
        let calls = [
            vec![(Bytes::from_static(b"a"), record("n2", b"one"))],
            vec![
                (Bytes::from_static(b"a"), record("n3", b"two")),
                (Bytes::from_static(b"b"), record("n2", b"three")),
            ],
            vec![(
                Bytes::from_static(b"c"),
                Bytes::from_static(b"not a record"),
            )],
        ];
        let outcomes = runtime.block_on(futures::future::join_all(
            calls.iter().map(|records| commit.merge(records.clone())),
        ));
        drop(commit);
        assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
        assert!(
            matches!(outcomes[2], Err(ReplicaError::BadRecord(_))),
            "only the bad call fails: {outcomes:?}"
        );
        let values = |key: &[u8]| {
            let mut values = replica
                .read(key)
                .expect("read")
                .unwrap_or_default()
                .visible_data(ConflictMode::Siblings, START_MS);
            values.sort();
            values
        };
        assert_eq!(
            values(b"a"),
            vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
        );
        assert_eq!(values(b"b"), vec![Bytes::from_static(b"three")]);
        assert!(replica.read(b"c").expect("read").is_none());
    }
}
