//! Records to events: each record normalized on its own (no state but the counts and the dead
//! letter), its refused entries dead-lettered with their reasons, its events handed on.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

use crate::event::{Event, SourceFormat};
use crate::ingest::Record;
use crate::ingest::dead_letter::{DeadLetter, Letter};
use crate::normalize::{Entries, Normalizer, ParseError, RecordMeta, Rejected, Skipped};
use crate::telemetry::metrics::Metrics;

/// Counts of what went through. Every entry (a record, or each element of a page or `Bundle`)
/// is counted once: `entries == accepted + dead_lettered() + skipped_total()`.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Raw records read, blank lines included.
    pub records: u64,
    /// Entries judged: a record, or each element of a page or `Bundle` (see
    /// [`crate::normalize::Entries`]).
    pub entries: u64,
    /// Entries that became events.
    pub accepted: u64,
    /// Events produced.
    pub events: u64,
    /// Events per input format.
    pub by_format: BTreeMap<SourceFormat, u64>,
    /// Dead letters per reason.
    pub dead_letters: BTreeMap<&'static str, u64>,
    /// Entries skipped per reason: blank records and empty pages (`empty`), `Bundle` entries
    /// that are not `AuditEvent`s (`not_audit_event`).
    pub skipped: BTreeMap<&'static str, u64>,
    /// Events per identity.
    pub by_identity: HashMap<String, u64>,
}

impl Stats {
    /// Total dead letters.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_letters.values().sum()
    }

    /// Total entries skipped.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

// The normalizer reads no state of its own (`normalize_record` takes `&self`): workers may share
// one and normalize records side by side, the counts and the dead letter kept in record order
// behind them. This fails to compile if it stops being shareable.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Normalizer>();
};

/// One record normalized, not yet counted or dead-lettered ([`Normalize::apply`] does that, in
/// record order).
#[derive(Debug)]
pub struct Normalized<'r> {
    entries: Entries<'r>,
    events: Vec<Event>,
}

/// The part of [`Normalize`] that normalizing reads.
#[derive(Clone, Copy)]
struct Pure<'a> {
    normalizer: &'a Normalizer,
    limit: usize,
    normalized: bool,
}

impl Pure<'_> {
    fn normalize<'r>(self, record: &Record<'r>) -> Normalized<'r> {
        let mut events = Vec::new();
        let entries = if let Some(len) = record.oversized_len {
            let mut entries = Entries::default();
            let error = ParseError::Oversized { len, limit: self.limit };
            entries.total = 1;
            entries.rejected.push(Rejected { element: None, error });
            entries
        } else if self.normalized {
            normalized_event(record.bytes, &mut events)
        } else {
            let meta = RecordMeta {
                origin: Some(record.origin.clone()),
                received: record.received,
            };
            self.normalizer.normalize_record(record.bytes, &meta, &mut events)
        };
        Normalized { entries, events }
    }
}

/// Normalizes records, dead-letters failures, counts both.
pub struct Normalize {
    normalizer: Normalizer,
    dead_letter: Box<dyn DeadLetter>,
    stats: Stats,
    workers: usize,
    limit: usize,
    metrics: Option<Arc<Metrics>>,
    /// Records are nhiwatch's own normalized events (the rekeyed topic), not source formats.
    normalized: bool,
}

impl Normalize {
    /// A pipeline writing rejections to `dead_letter`.
    pub fn new(normalizer: Normalizer, dead_letter: Box<dyn DeadLetter>, max_record_bytes: usize) -> Normalize {
        Normalize {
            normalizer,
            dead_letter,
            stats: Stats::default(),
            workers: 1,
            limit: max_record_bytes,
            metrics: None,
            normalized: false,
        }
    }

    /// A pipeline whose records are events nhiwatch already normalized (JSON of
    /// [`Event`], as `run --role rekey` publishes them); one that is not goes to the dead letter.
    pub fn normalized(mut self) -> Normalize {
        self.normalized = true;
        self
    }

    /// Also counts into `metrics` (for `/metrics`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Normalize {
        self.metrics = Some(metrics);
        self
    }

    /// Counts so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Normalizes records on this many threads at once (the calling one included) in
    /// [`Normalize::normalize_all`]; 1 keeps it on the calling thread.
    pub fn with_workers(mut self, workers: usize) -> Normalize {
        self.workers = workers.max(1);
        self
    }

    /// Processes one record: the events of its entries go to `sink`, each refused entry to the
    /// dead letter (before any event goes on). An error means the dead letter could not be
    /// written, and the record must not be acknowledged.
    pub fn process(&mut self, record: Record<'_>, sink: &mut dyn FnMut(Event)) -> io::Result<()> {
        let normalized = self.normalize(&record);
        self.apply(&record, normalized, sink)
    }

    /// Normalizes one record, counting nothing and writing no dead letter: what
    /// [`Normalize::apply`] then takes, in record order. Any thread may run it.
    pub fn normalize<'r>(&self, record: &Record<'r>) -> Normalized<'r> {
        self.pure().normalize(record)
    }

    /// What normalizing reads: the normalizer and two settings, shareable by threads (the dead
    /// letter and the counts are not).
    fn pure(&self) -> Pure<'_> {
        Pure {
            normalizer: &self.normalizer,
            limit: self.limit,
            normalized: self.normalized,
        }
    }

    /// Normalizes `records` on up to [`Normalize::with_workers`] threads, each taking a run of
    /// them; the answers are in the records' order.
    pub fn normalize_all<'r>(&self, records: &[Record<'r>]) -> Vec<Normalized<'r>> {
        // Below this many records a thread costs more than it saves.
        const MIN_PER_WORKER: usize = 64;
        let workers = self.workers.min(records.len() / MIN_PER_WORKER).max(1);
        if workers == 1 {
            return records.iter().map(|r| self.normalize(r)).collect();
        }
        let chunk = records.len().div_ceil(workers);
        let pure = self.pure();
        std::thread::scope(|scope| {
            let mut runs = records.chunks(chunk);
            let first = runs.next().unwrap_or_default();
            let others: Vec<_> = runs
                .map(|run| scope.spawn(move || run.iter().map(|r| pure.normalize(r)).collect::<Vec<_>>()))
                .collect();
            let mut out: Vec<Normalized<'r>> = first.iter().map(|r| pure.normalize(r)).collect();
            for other in others {
                // A worker's panic surfaces on this thread, as it would have without workers.
                match other.join() {
                    Ok(run) => out.extend(run),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            out
        })
    }

    /// Takes in one normalized record, in record order: counts it, dead-letters each refused
    /// entry (before any event goes on), hands its events to `sink`. An error means the dead
    /// letter could not be written, and the record must not be acknowledged.
    pub fn apply(
        &mut self,
        record: &Record<'_>,
        normalized: Normalized<'_>,
        sink: &mut dyn FnMut(Event),
    ) -> io::Result<()> {
        let Normalized { entries, events } = normalized;
        self.stats.records += 1;
        if let Some(m) = &self.metrics {
            m.record();
        }
        self.stats.entries += entries.total as u64;
        self.stats.accepted += entries.accepted as u64;
        for skipped in &entries.skipped {
            let reason = skipped.error.reason();
            *self.stats.skipped.entry(reason).or_default() += 1;
            if let Some(m) = &self.metrics {
                m.skipped(reason);
            }
        }
        for rejected in &entries.rejected {
            self.reject(record, rejected)?;
        }
        for event in events {
            self.stats.events += 1;
            *self.stats.by_format.entry(event.format).or_default() += 1;
            if let Some(m) = &self.metrics {
                m.event(event.format);
            }
            match self.stats.by_identity.get_mut(&event.identity) {
                Some(n) => *n += 1,
                None => {
                    self.stats.by_identity.insert(event.identity.clone(), 1);
                }
            }
            sink(event);
        }
        Ok(())
    }

    fn reject(&mut self, record: &Record<'_>, rejected: &Rejected<'_>) -> io::Result<()> {
        let error = &rejected.error;
        *self.stats.dead_letters.entry(error.reason()).or_default() += 1;
        if let Some(m) = &self.metrics {
            m.dead_letter(error.reason());
        }
        tracing::debug!(
            reason = error.reason(),
            source = %record.origin,
            element = rejected.element.map(|e| e.index),
            "Record sent to the dead letter."
        );
        let letter = match rejected.element {
            Some(element) => Letter::new(
                error.reason(),
                error.to_string(),
                record.origin,
                element.raw.as_bytes(),
                None,
            )
            .element(element.index),
            None => Letter::new(
                error.reason(),
                error.to_string(),
                record.origin,
                record.bytes,
                record.oversized_len,
            ),
        };
        self.dead_letter.send(&letter)
    }

    /// Makes the dead letter durable.
    pub fn flush(&mut self) -> io::Result<()> {
        self.dead_letter.flush()
    }
}

/// One event nhiwatch already normalized (the rekeyed topic): one entry, skipped when blank.
fn normalized_event<'r>(bytes: &[u8], out: &mut Vec<Event>) -> Entries<'r> {
    let mut entries = Entries {
        total: 1,
        ..Entries::default()
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        entries.skipped.push(Skipped {
            element: None,
            error: ParseError::Empty,
        });
        return entries;
    }
    match serde_json::from_slice::<Event>(bytes) {
        Ok(event) => {
            out.push(event);
            entries.accepted = 1;
            entries.events = 1;
        }
        Err(e) => entries.rejected.push(Rejected {
            element: None,
            error: ParseError::json(e),
        }),
    }
    entries
}
