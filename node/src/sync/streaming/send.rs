//! The source side of `Replica.StreamPartitions`: an ordered scan of local
//! data, filtered by partition, sent in batches of about 1 MiB with at most
//! two batches in flight, so that the memory of a stream stays bounded and
//! a slow receiver (through HTTP/2 flow control) holds the scan back.
//!
//! Each batch is scanned on a blocking thread with an iterator of its own,
//! from where the previous batch ended, and handed over from async code: a
//! receiver that does not read holds no thread and no RocksDB iterator,
//! only the batches in flight, and is dropped after
//! `--stream-stall-timeout-secs`.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use ringkv_proto::v1::{ReplicaRecord, StreamBatch};
use tokio::sync::mpsc;
use tonic::Status;

use crate::{
    ring::partition_of, storage::StorageError, sync::anti_entropy::pair_hash,
    sync::throttle::Throttle,
};

/// Size of one streamed batch: large enough to stream fast, small enough to
/// keep the memory of a stream bounded.
pub const STREAM_BATCH_BYTES: usize = 1 << 20;
/// A batch is sent after this many scanned keys even if few matched, so the
/// receiver's resume point keeps moving.
pub const STREAM_BATCH_SCANNED: usize = 4096;
/// Batches sent but not yet taken by the receiver.
pub const STREAM_BATCHES_IN_FLIGHT: usize = 2;

/// An ordered scan of local records after a key (all of them after the
/// empty key), calling a visitor that returns whether to go on.
pub type Scan = Arc<ScanFn>;

/// What a [`Scan`] runs.
pub type ScanFn =
    dyn Fn(&[u8], &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StorageError> + Send + Sync;

/// What a stream sends, and how fast.
pub struct StreamSource {
    pub partition_count: u32,
    pub wanted: Arc<BTreeSet<u32>>,
    /// Sent with every batch, for the receiver's progress report.
    pub estimated_keys: u64,
    /// Sent with the first batch: the keys in each wanted partition.
    pub partition_keys: HashMap<u32, u64>,
    /// Send each record's hash instead of the record.
    pub digests: bool,
    pub throttle: Throttle,
    /// How long the receiver may leave a batch untaken. A live receiver
    /// takes a batch in the time it writes one (about 1 MiB); one that
    /// stopped reading resumes from its cursor later.
    pub stall_timeout: Duration,
}

/// What a stream's scan sends: a batch, or why the scan failed.
pub type Sent = Result<StreamBatch, Status>;

/// The channel a stream's batches go through; its bound is what keeps at
/// most [`STREAM_BATCHES_IN_FLIGHT`] batches in memory.
pub fn channel() -> (mpsc::Sender<Sent>, mpsc::Receiver<Sent>) {
    mpsc::channel(STREAM_BATCHES_IN_FLIGHT)
}

/// Which records a stream sends, and in what form.
struct Filter {
    wanted: Arc<BTreeSet<u32>>,
    partition_count: u32,
    digests: bool,
}

/// One batch cut from the scan, and whether the scan reached its end.
struct Cut {
    batch: StreamBatch,
    bytes: usize,
    end: bool,
}

impl StreamSource {
    /// Sends the wanted partitions' records after `start_after` to `tx`,
    /// one batch at a time. Every batch but the last carries the last key
    /// scanned, the receiver's resume point. Stops once the receiver is
    /// gone or has left a batch untaken for the stall timeout.
    pub async fn run(mut self, scan: Scan, mut start_after: Bytes, tx: mpsc::Sender<Sent>) {
        loop {
            let filter = Filter {
                wanted: self.wanted.clone(),
                partition_count: self.partition_count,
                digests: self.digests,
            };
            let header = StreamBatch {
                estimated_keys: self.estimated_keys,
                // The counts go with the first batch only.
                partition_keys: std::mem::take(&mut self.partition_keys),
                ..Default::default()
            };
            let (scan, after) = (scan.clone(), start_after.clone());
            let cut =
                tokio::task::spawn_blocking(move || cut_batch(&*scan, &after, &filter, header))
                    .await;
            let cut = match cut {
                Ok(Ok(cut)) => cut,
                Ok(Err(error)) => {
                    let _ = tx.send(Err(Status::from(error))).await;
                    return;
                }
                Err(join) => {
                    let _ = tx
                        .send(Err(Status::internal(format!(
                            "partition scan task: {join}"
                        ))))
                        .await;
                    return;
                }
            };
            start_after = cut.batch.last_key.clone();
            match tokio::time::timeout(self.stall_timeout, tx.send(Ok(cut.batch))).await {
                Ok(Ok(())) => {}
                // The receiver hung up: it resumes from its cursor.
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!(
                        stall_timeout = ?self.stall_timeout,
                        "a partition stream's receiver took no batch within the stall timeout; dropping the stream"
                    );
                    return;
                }
            }
            if cut.end {
                return;
            }
            if let Some(ahead) = self.throttle.wait_for(cut.bytes) {
                tokio::time::sleep(ahead).await;
            }
        }
    }
}

/// Scans after `start_after` until a batch is full (about 1 MiB of wanted
/// records, or [`STREAM_BATCH_SCANNED`] keys scanned) or the data ends.
/// The batch starts as `header`.
fn cut_batch(
    scan: &ScanFn,
    start_after: &[u8],
    filter: &Filter,
    header: StreamBatch,
) -> Result<Cut, StorageError> {
    let mut batch = header;
    let (mut bytes, mut scanned, mut end) = (0usize, 0usize, true);
    scan(start_after, &mut |key, value| {
        if filter
            .wanted
            .contains(&partition_of(key, filter.partition_count))
        {
            let record = if filter.digests {
                Bytes::copy_from_slice(&pair_hash(key, value).to_le_bytes())
            } else {
                Bytes::copy_from_slice(value)
            };
            bytes += key.len() + record.len();
            batch.records.push(ReplicaRecord {
                key: Bytes::copy_from_slice(key),
                record,
            });
        }
        scanned += 1;
        if bytes >= STREAM_BATCH_BYTES || scanned >= STREAM_BATCH_SCANNED {
            batch.last_key = Bytes::copy_from_slice(key);
            end = false;
            return false;
        }
        true
    })?;
    Ok(Cut { batch, bytes, end })
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        time::{Duration, Instant},
    };

    use proptest::prelude::*;

    use super::*;

    const PARTITIONS: u32 = 8;

    /// Sorted, distinct keys with values of the given sizes.
    fn records(sizes: &[usize]) -> Vec<(Vec<u8>, Vec<u8>)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, size)| (format!("key-{i:08}").into_bytes(), vec![b'v'; *size]))
            .collect()
    }

    /// Streams `records` to a receiver that takes each batch only after
    /// `pause`; returns the batches, and the most bytes the scan had
    /// visited beyond what the receiver had taken, over the whole stream.
    fn stream(
        records: Vec<(Vec<u8>, Vec<u8>)>,
        wanted: BTreeSet<u32>,
        bytes_per_sec: u64,
        pause: Duration,
    ) -> (Vec<StreamBatch>, usize) {
        stream_as(records, wanted, bytes_per_sec, pause, false)
    }

    /// [`stream`], sending digests if asked.
    fn stream_as(
        records: Vec<(Vec<u8>, Vec<u8>)>,
        wanted: BTreeSet<u32>,
        bytes_per_sec: u64,
        pause: Duration,
        digests: bool,
    ) -> (Vec<StreamBatch>, usize) {
        let visited = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = channel();
        let source = StreamSource {
            partition_count: PARTITIONS,
            wanted: Arc::new(wanted),
            estimated_keys: 42,
            partition_keys: HashMap::from([(0, 7)]),
            digests,
            throttle: Throttle::new(bytes_per_sec),
            stall_timeout: Duration::from_secs(60),
        };
        let scan_visited = visited.clone();
        let scan: Scan = Arc::new(move |after, visit| {
            for (key, value) in records.iter().filter(|(k, _)| k.as_slice() > after) {
                scan_visited.fetch_add(key.len() + value.len(), Ordering::SeqCst);
                if !visit(key, value) {
                    break;
                }
            }
            Ok(())
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("runtime");
        let producer = runtime.spawn(source.run(scan, Bytes::new(), tx));
        let (mut batches, mut taken, mut most_ahead) = (Vec::new(), 0usize, 0usize);
        while let Some(batch) = rx.blocking_recv() {
            std::thread::sleep(pause);
            let batch = batch.expect("no scan error");
            taken += batch_span(&batch);
            most_ahead = most_ahead.max(visited.load(Ordering::SeqCst).saturating_sub(taken));
            batches.push(batch);
        }
        runtime.block_on(producer).expect("the stream task");
        (batches, most_ahead)
    }

    /// Bytes of a batch's records.
    fn batch_span(batch: &StreamBatch) -> usize {
        batch
            .records
            .iter()
            .map(|r| r.key.len() + r.record.len())
            .sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Whatever the record sizes and the partitions asked for: the
        /// stream sends every wanted record once, in key order, and nothing
        /// else; each batch holds at most 1 MiB plus one record, and every
        /// batch but the last is cut at 1 MiB or after 4096 scanned keys;
        /// each batch's resume point is the last key it covers.
        #[test]
        fn batches_are_bounded_and_cover_every_wanted_record_once(
            sizes in proptest::collection::vec(prop_oneof![0usize..64, 60_000usize..200_000], 1..160),
            wanted in proptest::collection::btree_set(0..PARTITIONS, 0..=PARTITIONS as usize),
        ) {
            let records = records(&sizes);
            let largest = records.iter().map(|(k, v)| k.len() + v.len()).max().unwrap_or(0);
            let expected: Vec<&[u8]> = records
                .iter()
                .filter(|(k, _)| wanted.contains(&partition_of(k, PARTITIONS)))
                .map(|(k, _)| k.as_slice())
                .collect();
            let (batches, _) = stream(records.clone(), wanted, 0, Duration::ZERO);
            let sent: Vec<&[u8]> = batches.iter().flat_map(|b| b.records.iter().map(|r| r.key.as_ref())).collect();
            prop_assert_eq!(sent, expected);
            for (i, batch) in batches.iter().enumerate() {
                let bytes = batch_span(batch);
                prop_assert!(bytes < STREAM_BATCH_BYTES + largest, "batch {} holds {} bytes", i, bytes);
                prop_assert_eq!(batch.estimated_keys, 42);
                prop_assert_eq!(batch.partition_keys.len(), usize::from(i == 0), "counts come first, once");
                if i + 1 < batches.len() {
                    prop_assert!(!batch.last_key.is_empty());
                    prop_assert!(
                        batch.records.last().is_none_or(|r| r.key <= batch.last_key),
                        "resume point before the batch's own records"
                    );
                    // Fewer keys than STREAM_BATCH_SCANNED: only size cuts.
                    prop_assert!(bytes >= STREAM_BATCH_BYTES, "batch {} cut at {} bytes", i, bytes);
                }
            }
        }
    }

    /// A digest stream sends every wanted key once, in order, each with the
    /// hash of its record in place of the record.
    #[test]
    fn a_digest_stream_sends_each_wanted_records_hash() {
        let records = records(&[300_000; 12]);
        let wanted: BTreeSet<u32> = (0..PARTITIONS / 2).collect();
        let expected: Vec<(Vec<u8>, Vec<u8>)> = records
            .iter()
            .filter(|(k, _)| wanted.contains(&partition_of(k, PARTITIONS)))
            .map(|(k, v)| (k.clone(), pair_hash(k, v).to_le_bytes().to_vec()))
            .collect();
        assert!(!expected.is_empty());
        let (batches, _) = stream_as(records, wanted, 0, Duration::ZERO, true);
        let sent: Vec<(Vec<u8>, Vec<u8>)> = batches
            .iter()
            .flat_map(|b| b.records.iter())
            .map(|r| (r.key.to_vec(), r.record.to_vec()))
            .collect();
        assert_eq!(sent, expected);
        assert_eq!(
            batches.len(),
            1,
            "hashes of 3.6 MB of records fit one batch"
        );
    }

    /// Where few scanned keys are wanted, a batch still goes out every
    /// 4096 scanned keys, so the receiver's resume point keeps moving.
    #[test]
    fn the_resume_point_moves_when_nothing_matches() {
        let records = records(&[8; 10_000]);
        let last = records.last().map(|(k, _)| k.clone()).expect("records");
        let (batches, _) = stream(records, BTreeSet::new(), 0, Duration::ZERO);
        assert_eq!(batches.len(), 3, "two cut after 4096 keys, then the rest");
        assert!(batches.iter().all(|b| b.records.is_empty()));
        assert_eq!(batches[0].last_key.as_ref(), b"key-00004095");
        assert_eq!(batches[1].last_key.as_ref(), b"key-00008191");
        assert!(last.as_slice() > batches[1].last_key.as_ref());
    }

    /// A receiver that takes its batches slowly holds the scan back: the
    /// scan never gets more than the two batches in the channel and the one
    /// it is filling ahead of what the receiver has taken.
    #[test]
    fn a_slow_receiver_holds_the_scan_back() {
        // 24 MiB in 200 KiB values, every partition wanted.
        let records = records(&[200 << 10; 120]);
        let record = records[0].0.len() + records[0].1.len();
        let (batches, most_ahead) = stream(
            records,
            (0..PARTITIONS).collect(),
            0,
            Duration::from_millis(20),
        );
        assert!(batches.len() >= 20, "{} batches", batches.len());
        let bound = (STREAM_BATCHES_IN_FLIGHT + 1) * (STREAM_BATCH_BYTES + record);
        println!(
            "{} batches; the scan was at most {} KiB ahead of the receiver (bound {} KiB)",
            batches.len(),
            most_ahead >> 10,
            bound >> 10
        );
        assert!(
            most_ahead <= bound,
            "the scan ran {most_ahead} bytes ahead of a slow receiver"
        );
        // And it did run ahead, as far as the channel lets it: the bound
        // is not met only because the receiver was fast.
        assert!(most_ahead > STREAM_BATCHES_IN_FLIGHT * STREAM_BATCH_BYTES);
    }

    /// `--handoff-bytes-per-sec` bounds a stream's rate.
    #[test]
    fn the_byte_rate_bounds_a_stream() {
        // 6 MiB at 12 MiB/s: half a second at least.
        let records = records(&[64 << 10; 96]);
        let started = Instant::now();
        let (batches, _) = stream(records, (0..PARTITIONS).collect(), 12 << 20, Duration::ZERO);
        let took = started.elapsed();
        let sent: usize = batches.iter().map(batch_span).sum();
        assert!(sent >= 6 << 20);
        assert!(
            took >= Duration::from_millis(450),
            "6 MiB at 12 MiB/s took {took:?}"
        );
    }
}
