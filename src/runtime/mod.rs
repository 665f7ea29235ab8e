//! The one topology every command assembles:
//!
//! ```text
//! source ──records──▶ normalize ──events──▶ judge ──findings──▶ outputs
//! (Kafka, files,      (per record,          (one detection,     (archive, store → journal,
//!  stdin; the          stateless; dead       a group's           API, outbox → sinks;
//!  archive for         letter, counts)       partitions, or      metrics, announcement,
//!  replay)                                   the rekey)          NDJSON streams)
//! ```
//!
//! A source is pure: it yields records with their coordinates and takes acknowledgements
//! ([`crate::kafka::consume`] commits an offset only after [`Runtime`] made what it took in
//! durable; [`Runtime::files`] and [`Runtime::merged`] read files and stdin). `replay`'s source,
//! the archive, yields events normalized already: they go to the judge directly. [`Normalize`] is
//! per record and keeps no state but counts and the dead letter, so it can run on several
//! threads ahead of the judge; the judge ([`Judge`]) keeps the state, in event-time order;
//! [`Outputs`] is the one path after the engine. `run` (all three roles), `detect`, `replay`,
//! `demo` and `bench` differ only in the parts they give.

pub mod normalize;
pub mod outputs;
pub mod single;

use std::collections::VecDeque;
use std::io::BufRead;

use anyhow::Context as _;

use crate::event::{Event, Origin};
use crate::ingest::file::{self, LineSource};
use crate::ingest::{Offsets, Record};
pub use normalize::{Normalize, Stats};
pub use outputs::{Announce, ArchiveFindings, Outputs};
pub use single::Single;

/// Where normalized events are judged: one detection ([`Single`]), a group member's per
/// partition ([`crate::group::Member`]), or the rekey role's publisher ([`crate::group::Rekey`]).
/// What it raises goes to the outputs it is given.
pub trait Judge {
    /// Takes one event, read from Kafka `partition` if it came from Kafka.
    fn event(&mut self, partition: Option<i32>, event: Event, out: &mut Outputs);

    /// The Kafka partitions read from now on (told before the first record of a new one).
    fn assigned(&mut self, partitions: &[(String, i32)], out: &mut Outputs) {
        let _ = (partitions, out);
    }

    /// `topic`/`partition` went idle (`true`) or gives records again (`false`).
    fn idle(&mut self, topic: &str, partition: i32, idle: bool, out: &mut Outputs) {
        let _ = (topic, partition, idle, out);
    }

    /// Makes everything taken in up to `offsets` durable (the outputs first); on `Err` nothing
    /// is acknowledged.
    fn durable(&mut self, offsets: &Offsets, out: &mut Outputs) -> anyhow::Result<()> {
        let _ = offsets;
        out.durable()
    }

    /// The input ended (a batch) or the service stops.
    fn finish(&mut self, out: &mut Outputs) {
        let _ = out;
    }
}

/// A topology: records normalized, events judged, findings to the outputs.
pub struct Runtime<J> {
    /// Records → events.
    pub normalize: Normalize,
    /// Events → findings.
    pub judge: J,
    /// Where events and findings go.
    pub outputs: Outputs,
}

impl<J: Judge> Runtime<J> {
    /// The topology of these parts.
    pub fn new(normalize: Normalize, judge: J, outputs: Outputs) -> Runtime<J> {
        Runtime {
            normalize,
            judge,
            outputs,
        }
    }

    /// Takes one record in: its events judged one by one, in the order the record gives them;
    /// returns the newest event time among them.
    pub fn take(&mut self, record: Record<'_>) -> std::io::Result<Option<chrono::DateTime<chrono::Utc>>> {
        let normalized = self.normalize.normalize(&record);
        self.judged(&record, normalized)
    }

    /// Takes several records in, in order: normalized side by side (see
    /// [`Normalize::with_workers`]), then counted, dead-lettered and judged one by one in their
    /// order; the newest event time of each.
    pub fn take_all(&mut self, records: &[Record<'_>]) -> std::io::Result<Vec<Option<chrono::DateTime<chrono::Utc>>>> {
        let normalized = self.normalize.normalize_all(records);
        records
            .iter()
            .zip(normalized)
            .map(|(record, normalized)| self.judged(record, normalized))
            .collect()
    }

    /// One normalized record counted, dead-lettered and its events judged; the newest event
    /// time among them.
    fn judged(
        &mut self,
        record: &Record<'_>,
        normalized: normalize::Normalized<'_>,
    ) -> std::io::Result<Option<chrono::DateTime<chrono::Utc>>> {
        let Runtime {
            normalize,
            judge,
            outputs,
        } = self;
        let partition = record.origin.partition;
        let mut newest = None;
        normalize.apply(record, normalized, &mut |event| {
            newest = newest.max(Some(event.time));
            judge.event(partition, event, outputs);
        })?;
        Ok(newest)
    }

    /// Reads each input (NDJSON, `-` for stdin) in turn, a batch of records at a time (stdin,
    /// which may be a live stream, record by record); then makes the dead letter durable.
    pub fn files(&mut self, inputs: Vec<(String, Box<dyn BufRead>)>, max_record_bytes: usize) -> anyhow::Result<()> {
        for (name, reader) in inputs {
            if name == "-" {
                file::read_lines(reader, &name, max_record_bytes, |record| self.take(record).map(|_| ()))
                    .context("reading stdin")?;
                continue;
            }
            let mut source = LineSource::new(reader, &name, max_record_bytes);
            let mut batch = Batch::default();
            while batch.fill(&mut source).with_context(|| format!("reading {name}"))? {
                self.take_all(&batch.records())?;
            }
        }
        self.normalize.flush().context("flushing the dead letter")
    }

    /// Reads the inputs together, merged by event time: each file is (nearly) in event-time
    /// order, so taking the earliest next event of any keeps the stream in order without
    /// reading a file whole (the reorder buffer absorbs the rest). Then makes the dead letter
    /// durable.
    pub fn merged(&mut self, inputs: Vec<(String, Box<dyn BufRead>)>, max_record_bytes: usize) -> anyhow::Result<()> {
        let mut inputs: Vec<Input> = inputs
            .into_iter()
            .map(|(name, reader)| Input {
                source: LineSource::new(reader, &name, max_record_bytes),
                batch: Batch::default(),
                queue: VecDeque::new(),
                done: false,
            })
            .collect();
        for input in &mut inputs {
            input.fill(&mut self.normalize)?;
        }
        while let Some(i) = (0..inputs.len())
            .filter(|&i| !inputs[i].queue.is_empty())
            .min_by_key(|&i| inputs[i].queue.front().map(|e| e.time))
        {
            if let Some(event) = inputs[i].queue.pop_front() {
                self.judge.event(None, event, &mut self.outputs);
            }
            inputs[i].fill(&mut self.normalize)?;
        }
        self.normalize.flush().context("flushing the dead letter")
    }

    /// The input ended or the service stops: the judge finishes (see [`Judge::finish`]).
    pub fn finish(&mut self) {
        self.judge.finish(&mut self.outputs);
    }
}

/// A runtime reading Kafka: every record through [`Runtime::take`], partitions and commit
/// points to the judge.
impl<J: Judge> crate::kafka::Stage for Runtime<J> {
    fn record(&mut self, record: Record<'_>) -> std::io::Result<Option<chrono::DateTime<chrono::Utc>>> {
        self.take(record)
    }

    fn records(&mut self, records: &[Record<'_>]) -> std::io::Result<Vec<Option<chrono::DateTime<chrono::Utc>>>> {
        self.take_all(records)
    }

    fn assigned(&mut self, partitions: &[(String, i32)]) {
        self.judge.assigned(partitions, &mut self.outputs);
    }

    fn idle(&mut self, topic: &str, partition: i32, idle: bool) {
        self.judge.idle(topic, partition, idle, &mut self.outputs);
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.normalize.flush()
    }

    fn durable(&mut self, offsets: &Offsets) -> anyhow::Result<()> {
        self.judge.durable(offsets, &mut self.outputs)
    }
}

/// Records read from a file, owned, to be normalized together.
#[derive(Default)]
struct Batch {
    records: Vec<(Vec<u8>, Origin, Option<usize>)>,
}

impl Batch {
    /// Records taken together from a file: enough to keep every worker busy.
    const SIZE: usize = 1024;
    /// Bytes taken together at most (past it the batch ends early): records of up to
    /// `ingest.max_record_bytes` each must not make a batch of a gigabyte.
    const BYTES: usize = 8 << 20;

    /// Reads up to [`Batch::SIZE`] records, or [`Batch::BYTES`] (at least one record), from
    /// `source`, the buffers of the last batch reused; false when it had none left.
    fn fill<R: BufRead>(&mut self, source: &mut LineSource<R>) -> std::io::Result<bool> {
        let mut n = 0;
        let mut bytes = 0;
        while n < Batch::SIZE && bytes < Batch::BYTES {
            let Some(record) = source.next_record()? else {
                break;
            };
            match self.records.get_mut(n) {
                Some((bytes, origin, oversized)) => {
                    bytes.clear();
                    bytes.extend_from_slice(record.bytes);
                    origin.clone_from(record.origin);
                    *oversized = record.oversized_len;
                }
                None => self
                    .records
                    .push((record.bytes.to_vec(), record.origin.clone(), record.oversized_len)),
            }
            bytes += record.bytes.len();
            n += 1;
        }
        self.records.truncate(n);
        Ok(n > 0)
    }

    /// The records, as the normalizer takes them.
    fn records(&self) -> Vec<Record<'_>> {
        self.records
            .iter()
            .map(|(bytes, origin, oversized_len)| Record {
                bytes,
                origin,
                oversized_len: *oversized_len,
                received: None,
            })
            .collect()
    }
}

/// One input of [`Runtime::merged`] with the events of its records read and not yet judged.
struct Input {
    source: LineSource<Box<dyn BufRead>>,
    batch: Batch,
    queue: VecDeque<Event>,
    done: bool,
}

impl Input {
    /// Reads batches until an event is queued or the input ends.
    fn fill(&mut self, normalize: &mut Normalize) -> anyhow::Result<()> {
        let Input {
            source,
            batch,
            queue,
            done,
        } = self;
        while queue.is_empty() && !*done {
            if !batch.fill(source)? {
                *done = true;
                break;
            }
            let records = batch.records();
            for (record, normalized) in records.iter().zip(normalize.normalize_all(&records)) {
                normalize.apply(record, normalized, &mut |e| queue.push_back(e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_file_records_stops_at_its_count_or_its_bytes() {
        let small = "x\n".repeat(Batch::SIZE + 10);
        let mut source = LineSource::new(small.as_bytes(), "small", 1 << 20);
        let mut batch = Batch::default();
        assert!(batch.fill(&mut source).expect("reads"));
        assert_eq!(batch.records().len(), Batch::SIZE);
        assert!(batch.fill(&mut source).expect("reads"));
        assert_eq!(batch.records().len(), 10);
        assert!(!batch.fill(&mut source).expect("reads"));

        // Records of 1 MiB: a batch ends once it holds 8 MiB, not after 1,024 of them.
        let line = format!("{}\n", "y".repeat(1 << 20));
        let big = line.repeat(20);
        let mut source = LineSource::new(big.as_bytes(), "big", 2 << 20);
        assert!(batch.fill(&mut source).expect("reads"));
        assert_eq!(batch.records().len(), Batch::BYTES / (1 << 20));
    }
}
