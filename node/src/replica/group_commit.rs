//! Local writes committed in groups, each group by one writer thread in
//! one RocksDB write batch and one sync.
//!
//! Every put a node coordinates writes its own replica, and every record
//! a peer sends is merged into it. Each of those used to take a thread of
//! tokio's blocking pool, and the threads met again in RocksDB's group
//! commit, which parks all but one of them for each sync: per write, a
//! wake-up to start it, a park and a wake-up in RocksDB, and a wake-up to
//! answer. Here a caller queues its write and waits; the node's writer
//! thread takes everything queued meanwhile and writes it as one group, as
//! Cassandra's and etcd's write paths batch into their one commit log. In
//! the profile, a put on three nodes cost a third less CPU
//! (docs/benchmarks/profile.md).
//!
//! Updates and peers' records share the one thread and the one sync: with
//! a thread each, a node on three synced twice as often for the same puts
//! (profile.md, "Three nodes against one").
//!
//! Each write still gets its own answer. A group is written as
//! [`LocalReplica::change_many`] writes it: in queue order, a key written
//! twice seeing its first write. If the group fails as a whole (a storage
//! error, a record from the future, a corrupt record), nothing of it was
//! written, and each of its writes runs again alone, so that each caller
//! gets the error that is its own, and a good write is not refused for a
//! bad neighbour.

use std::{
    sync::{mpsc, Arc},
    thread::JoinHandle,
};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{BoundError, Change, LocalReplica, ReplicaError, Update};
use crate::versions::Siblings;

/// Records a group takes at most, so that one group's write batch and the
/// wait of its first caller stay bounded.
const MAX_GROUP: usize = 256;

const THREAD_NAME: &str = "ringkv-writer";

type Answer<T> = oneshot::Sender<Result<T, ReplicaError>>;

/// A write waiting for the writer thread, with where its answer goes.
enum Queued {
    /// Writes this node coordinates: one put's or delete's, or a batch's
    /// share, which lands whole. Each gets its record, or why the bound
    /// refused it.
    Updates(Vec<Update>, Answer<Vec<Result<Siblings, BoundError>>>),
    /// Records from peers, encoded, to be merged: one `Replica.Apply`'s or
    /// one `Replica.ApplyBatch`'s share.
    Merge(Vec<(Bytes, Bytes)>, Answer<()>),
}

impl Queued {
    fn records(&self) -> usize {
        match self {
            Queued::Updates(updates, _) => updates.len(),
            Queued::Merge(records, _) => records.len(),
        }
    }

    /// Writes this alone and answers its caller.
    fn commit_alone(self, local: &LocalReplica) {
        // A caller that gave up no longer listens.
        match self {
            Queued::Updates(updates, answer) => {
                let _ = answer.send(local.update_many(&updates));
            }
            Queued::Merge(records, answer) => {
                let _ = answer.send(local.apply_encoded_many(records));
            }
        }
    }
}

/// Every write of `group` in one write batch: each update's outcome, in
/// queue order. An error fails the whole group and writes nothing.
fn commit_group(
    local: &LocalReplica,
    group: &[Queued],
) -> Result<Vec<Result<Siblings, BoundError>>, ReplicaError> {
    let mut decoded = Vec::new();
    for queued in group {
        if let Queued::Merge(records, _) = queued {
            for (key, encoded) in records {
                let record = Siblings::decode(encoded).map_err(ReplicaError::BadRecord)?;
                decoded.push((key, record));
            }
        }
    }
    let mut merges = decoded.iter();
    let mut changes = Vec::with_capacity(group.len());
    for queued in group {
        match queued {
            Queued::Updates(updates, _) => changes.extend(updates.iter().map(Change::Update)),
            Queued::Merge(records, _) => changes.extend(
                merges
                    .by_ref()
                    .take(records.len())
                    .map(|(key, record)| Change::Merge(key, record)),
            ),
        }
    }
    local.change_many(&changes)
}

/// The writer thread: until every sender is gone, takes what is queued and
/// commits it as one group.
fn write_groups(local: &LocalReplica, queued: &mpsc::Receiver<Queued>) {
    while let Ok(first) = queued.recv() {
        let mut records = first.records();
        let mut group = vec![first];
        while records < MAX_GROUP {
            let Ok(next) = queued.try_recv() else { break };
            records += next.records();
            group.push(next);
        }
        match commit_group(local, &group) {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for queued in group {
                    match queued {
                        Queued::Updates(updates, answer) => {
                            let theirs: Vec<_> = outcomes.by_ref().take(updates.len()).collect();
                            let _ = answer.send(if theirs.len() == updates.len() {
                                Ok(theirs)
                            } else {
                                Err(ReplicaError::WriterLostAnswer)
                            });
                        }
                        Queued::Merge(_, answer) => {
                            let _ = answer.send(Ok(()));
                        }
                    }
                }
            }
            Err(_) => {
                for queued in group {
                    queued.commit_alone(local);
                }
            }
        }
    }
}

/// This node's local writes, committed in groups by one writer thread.
pub struct GroupCommit {
    queue: Option<mpsc::Sender<Queued>>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the writer thread.
    pub fn start(local: Arc<LocalReplica>) -> Result<Self, ReplicaError> {
        let (queue, queued) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || write_groups(&local, &queued))
            .map_err(ReplicaError::WriterThread)?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// [`LocalReplica::update`], in a group.
    pub async fn update(&self, update: Update) -> Result<Siblings, ReplicaError> {
        let mut records = self.update_many(vec![update]).await?;
        match records.pop() {
            Some(record) => Ok(record?),
            None => Err(ReplicaError::WriterLostAnswer),
        }
    }

    /// [`LocalReplica::update_many`], in a group: the writes land whole or
    /// not at all.
    pub async fn update_many(
        &self,
        updates: Vec<Update>,
    ) -> Result<Vec<Result<Siblings, BoundError>>, ReplicaError> {
        let (answer, answered) = oneshot::channel();
        self.enqueue(Queued::Updates(updates, answer))?;
        answered.await.map_err(|_| ReplicaError::WriterStopped)?
    }

    /// [`LocalReplica::apply_encoded_many`], in a group.
    pub async fn merge(&self, records: Vec<(Bytes, Bytes)>) -> Result<(), ReplicaError> {
        let (answer, answered) = oneshot::channel();
        self.enqueue(Queued::Merge(records, answer))?;
        answered.await.map_err(|_| ReplicaError::WriterStopped)?
    }

    fn enqueue(&self, queued: Queued) -> Result<(), ReplicaError> {
        self.queue
            .as_ref()
            .ok_or(ReplicaError::WriterStopped)?
            .send(queued)
            .map_err(|_| ReplicaError::WriterStopped)
    }
}

impl Drop for GroupCommit {
    /// Waits for the writes queued so far, so that the storage is released
    /// when the node's parts are.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(thread = THREAD_NAME, "the writer thread panicked");
            }
        }
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

    /// A replica in memory, its files, and a runtime to await its writer.
    fn replica_with_runtime() -> (tokio::runtime::Runtime, MemoryFiles, Arc<LocalReplica>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let files = MemoryFiles::new().expect("files");
        let replica = open(&files, &WallClock::manual(START_MS));
        (runtime, files, replica)
    }

    /// A write the node coordinates, or a record a peer sends, as generated.
    #[derive(Debug, Clone)]
    enum Op {
        Write(Write),
        /// A batch's share on its coordinator.
        Batch(Vec<Write>),
        Merge(PeerRecord),
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

    /// A record a peer coordinated and sends: a value of its own, one
    /// `Replica.Apply` call.
    #[derive(Debug, Clone)]
    struct PeerRecord {
        key: usize,
        value: u8,
        sent: Sent,
    }

    #[derive(Debug, Clone, Copy)]
    enum Sent {
        Record,
        /// Stamped ten minutes ahead of the clock: refused.
        FromTheFuture,
        /// Bytes that do not decode: refused.
        Garbage,
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

    fn op() -> impl Strategy<Value = Op> {
        let sent = prop_oneof![
            8 => Just(Sent::Record),
            1 => Just(Sent::FromTheFuture),
            1 => Just(Sent::Garbage),
        ];
        let merge = (0..KEYS.len(), any::<u8>(), sent)
            .prop_map(|(key, value, sent)| Op::Merge(PeerRecord { key, value, sent }));
        let batch = proptest::collection::vec(write(), 1..5).prop_map(Op::Batch);
        prop_oneof![4 => write().prop_map(Op::Write), 1 => batch, 4 => merge]
    }

    /// `record`, the `nth` of the history, encoded as its peer sends it.
    /// Each comes from a peer actor of its own, so that no two share a dot.
    fn sent(record: &PeerRecord, nth: usize) -> Vec<(Bytes, Bytes)> {
        let at_ms = match record.sent {
            Sent::FromTheFuture => START_MS + 600_000,
            _ => START_MS + nth as u64,
        };
        let encoded = match record.sent {
            Sent::Garbage => Bytes::from_static(b"not a record"),
            _ => Siblings::new()
                .update(
                    &CausalContext::new(),
                    Some(Bytes::from(vec![record.value])),
                    &Actor::new(format!("peer{nth}"), 1),
                    Hlc::new(at_ms, 0),
                )
                .encode(),
        };
        vec![(Bytes::from_static(KEYS[record.key]), encoded)]
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
            Err(error) => Err(seen_error(error)),
        }
    }

    /// An error as a client tells it apart: a clock refusal by what it
    /// refused, the others by their message.
    fn seen_error(error: &ReplicaError) -> String {
        match error {
            ReplicaError::ClockAhead { what, .. } => format!("clock ahead: {what}"),
            other => other.to_string(),
        }
    }

    fn seen_batch(
        outcome: Result<Vec<Result<Siblings, BoundError>>, ReplicaError>,
    ) -> Vec<Result<Vec<Bytes>, String>> {
        match outcome {
            Ok(records) => records
                .into_iter()
                .map(|record| seen(&record.map_err(ReplicaError::from)))
                .collect(),
            Err(error) => vec![seen(&Err(error))],
        }
    }

    fn seen_merge(outcome: &Result<(), ReplicaError>) -> Result<Vec<Bytes>, String> {
        match outcome {
            Ok(()) => Ok(Vec::new()),
            Err(error) => Err(seen_error(error)),
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
        /// clock, some in a batch's share, mixed with peers' records, some
        /// from the future and some corrupt: writes queued together and committed in groups give
        /// each caller, and leave stored, what the same writes give one at
        /// a time in queue order. A group that fails as a whole fails only
        /// the write that caused it.
        #[test]
        fn writes_committed_in_groups_give_what_they_give_one_at_a_time(
            seeded in proptest::collection::vec(write(), 0..6),
            history in proptest::collection::vec(op(), 1..60),
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
                .enumerate()
                .map(|(nth, op)| match op {
                    Op::Write(write) => vec![seen(&alone.update(&update_of(write, &alone_before)))],
                    Op::Batch(writes) => {
                        let updates: Vec<_> =
                            writes.iter().map(|w| update_of(w, &alone_before)).collect();
                        seen_batch(alone.update_many(&updates))
                    }
                    Op::Merge(record) => {
                        vec![seen_merge(&alone.apply_encoded_many(sent(record, nth)))]
                    }
                })
                .collect();
            let commit = GroupCommit::start(grouped.clone()).expect("writer thread");
            // Every write is queued, in order, before any answer is awaited.
            let got: Vec<_> = runtime.block_on(futures::future::join_all(
                history.iter().enumerate().map(|(nth, op)| {
                    let (commit, before) = (&commit, &grouped_before);
                    async move {
                        match op {
                            Op::Write(write) => {
                                vec![seen(&commit.update(update_of(write, before)).await)]
                            }
                            Op::Batch(writes) => {
                                let updates = writes.iter().map(|w| update_of(w, before)).collect();
                                seen_batch(commit.update_many(updates).await)
                            }
                            Op::Merge(record) => {
                                vec![seen_merge(&commit.merge(sent(record, nth)).await)]
                            }
                        }
                    }
                }),
            ));
            drop(commit);

            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(stored(&grouped), stored(&alone));
            println!("checked {} acknowledged or refused writes", got.iter().map(Vec::len).sum::<usize>());
        }
    }

    /// More writes queued at once than a group takes: every one lands and
    /// gets its own answer.
    #[test]
    fn writes_past_a_groups_bound_all_land() {
        let (runtime, _files, replica) = replica_with_runtime();
        let commit = GroupCommit::start(replica.clone()).expect("writer thread");
        let count = 3 * MAX_GROUP + 1;
        let key = |i: usize| Bytes::from(format!("k{i:04}"));
        let value = |i: usize| Bytes::from(format!("v{i}"));
        let outcomes = runtime.block_on(futures::future::join_all((0..count).map(|i| {
            let commit = &commit;
            async move {
                if i % 2 == 0 {
                    let update = Update {
                        key: key(i),
                        context: CausalContext::new(),
                        value: Some(value(i)),
                        expires_at_ms: 0,
                        blind: true,
                    };
                    commit.update(update).await.map(|_| ())
                } else {
                    let record = Siblings::new().update(
                        &CausalContext::new(),
                        Some(value(i)),
                        &Actor::new("n2", 1),
                        Hlc::new(START_MS, 0),
                    );
                    commit.merge(vec![(key(i), record.encode())]).await
                }
            }
        })));
        drop(commit);
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        for i in 0..count {
            let stored = replica.read(&key(i)).expect("read").unwrap_or_default();
            assert_eq!(
                stored.visible_data(ConflictMode::Siblings, START_MS),
                vec![value(i)],
                "key {i}"
            );
        }
        println!("checked {count} acknowledged writes");
    }

    /// Peers' records merged in groups land as if merged one call at a
    /// time, a key sent twice keeping both.
    #[test]
    fn peers_records_merged_in_groups_all_land() {
        let (runtime, _files, replica) = replica_with_runtime();
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
        let commit = GroupCommit::start(replica.clone()).expect("writer thread");
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
