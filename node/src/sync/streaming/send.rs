//! The source side of `Replica.StreamPartitions`: one ordered scan of local
//! data, filtered by partition, sent in batches of about 1 MiB with at most
//! two batches in flight, so that the memory of a stream stays bounded and
//! a slow receiver (through HTTP/2 flow control) holds the scan back.

use std::collections::BTreeSet;

use ringkv_proto::v1::{ReplicaRecord, StreamBatch};
use tokio::sync::mpsc;
use tonic::Status;

use crate::{ring::partition_of, storage::StorageError, sync::throttle::Throttle};

/// Size of one streamed batch: large enough to stream fast, small enough to
/// keep the memory of a stream bounded.
pub const STREAM_BATCH_BYTES: usize = 1 << 20;
/// A batch is sent after this many scanned keys even if few matched, so the
/// receiver's resume point keeps moving.
pub const STREAM_BATCH_SCANNED: usize = 4096;
/// Batches sent but not yet taken by the receiver.
pub const STREAM_BATCHES_IN_FLIGHT: usize = 2;

/// What a stream sends, and how fast.
pub struct StreamSource {
    pub partition_count: u32,
    pub wanted: BTreeSet<u32>,
    /// Sent with every batch, for the receiver's progress report.
    pub estimated_keys: u64,
    pub throttle: Throttle,
}

/// What a stream's scan sends: a batch, or why the scan failed.
pub type Sent = Result<StreamBatch, Status>;

/// The channel a stream's batches go through; its bound is what keeps at
/// most [`STREAM_BATCHES_IN_FLIGHT`] batches in memory.
pub fn channel() -> (mpsc::Sender<Sent>, mpsc::Receiver<Sent>) {
    mpsc::channel(STREAM_BATCHES_IN_FLIGHT)
}

impl StreamSource {
    /// Runs `scan` (an ordered scan of local records, given a visitor that
    /// returns whether to go on) on the calling blocking thread, and sends
    /// the wanted partitions' records to `tx`. Each batch carries the last
    /// key scanned, the receiver's resume point. Stops early once the
    /// receiver is gone.
    pub fn run(
        mut self,
        scan: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StorageError>,
        tx: &mpsc::Sender<Sent>,
    ) {
        let mut batch = self.empty_batch();
        let (mut bytes, mut scanned) = (0usize, 0usize);
        let mut open = true;
        let outcome = scan(&mut |key, value| {
            if self
                .wanted
                .contains(&partition_of(key, self.partition_count))
            {
                bytes += key.len() + value.len();
                self.throttle.account(key.len() + value.len());
                batch.records.push(ReplicaRecord {
                    key: bytes::Bytes::copy_from_slice(key),
                    record: bytes::Bytes::copy_from_slice(value),
                });
            }
            scanned += 1;
            if bytes >= STREAM_BATCH_BYTES || scanned >= STREAM_BATCH_SCANNED {
                batch.last_key = bytes::Bytes::copy_from_slice(key);
                let full = std::mem::replace(&mut batch, self.empty_batch());
                (bytes, scanned) = (0, 0);
                open = tx.blocking_send(Ok(full)).is_ok();
            }
            open
        });
        match outcome {
            Ok(()) if open => {
                let _ = tx.blocking_send(Ok(batch));
            }
            Ok(()) => {}
            Err(error) => {
                let _ = tx.blocking_send(Err(Status::from(error)));
            }
        }
    }

    fn empty_batch(&self) -> StreamBatch {
        StreamBatch {
            estimated_keys: self.estimated_keys,
            ..Default::default()
        }
    }
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
        let visited = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = channel();
        let source = StreamSource {
            partition_count: PARTITIONS,
            wanted,
            estimated_keys: 42,
            throttle: Throttle::new(bytes_per_sec),
        };
        let scan_visited = visited.clone();
        let producer = std::thread::spawn(move || {
            source.run(
                |visit| {
                    for (key, value) in &records {
                        scan_visited.fetch_add(key.len() + value.len(), Ordering::SeqCst);
                        if !visit(key, value) {
                            break;
                        }
                    }
                    Ok(())
                },
                &tx,
            )
        });
        let (mut batches, mut taken, mut most_ahead) = (Vec::new(), 0usize, 0usize);
        while let Some(batch) = rx.blocking_recv() {
            std::thread::sleep(pause);
            let batch = batch.expect("no scan error");
            taken += batch_span(&batch);
            most_ahead = most_ahead.max(visited.load(Ordering::SeqCst).saturating_sub(taken));
            batches.push(batch);
        }
        producer.join().expect("the scan thread");
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
