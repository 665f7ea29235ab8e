//! The one path from raw record to event that `run`, `demo` and the tests share: normalize,
//! count, dead-letter what fails, hand events to the caller's sink.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

use crate::event::{Event, SourceFormat};
use crate::ingest::Record;
use crate::ingest::dead_letter::{DeadLetter, Letter};
use crate::normalize::{Normalizer, ParseError, RecordMeta};
use crate::telemetry::metrics::Metrics;

/// Counts of what went through.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Raw records read.
    pub records: u64,
    /// Events produced.
    pub events: u64,
    /// Events per input format.
    pub by_format: BTreeMap<SourceFormat, u64>,
    /// Dead letters per reason.
    pub dead_letters: BTreeMap<&'static str, u64>,
    /// Events per identity.
    pub by_identity: HashMap<String, u64>,
}

impl Stats {
    /// Total dead letters.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_letters.values().sum()
    }
}

/// Normalizes records, dead-letters failures, counts both.
pub struct Pipeline {
    normalizer: Normalizer,
    dead_letter: Box<dyn DeadLetter>,
    stats: Stats,
    buffer: Vec<Event>,
    limit: usize,
    metrics: Option<Arc<Metrics>>,
    /// Records are nhiwatch's own normalized events (the rekeyed topic), not source formats.
    normalized: bool,
}

impl Pipeline {
    /// A pipeline writing rejections to `dead_letter`.
    pub fn new(normalizer: Normalizer, dead_letter: Box<dyn DeadLetter>, max_record_bytes: usize) -> Pipeline {
        Pipeline {
            normalizer,
            dead_letter,
            stats: Stats::default(),
            buffer: Vec::with_capacity(8),
            limit: max_record_bytes,
            metrics: None,
            normalized: false,
        }
    }

    /// A pipeline whose records are events nhiwatch already normalized (JSON of
    /// [`Event`], as `run --role rekey` publishes them); one that is not goes to the dead letter.
    pub fn normalized(mut self) -> Pipeline {
        self.normalized = true;
        self
    }

    /// Also counts into `metrics` (for `/metrics`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Pipeline {
        self.metrics = Some(metrics);
        self
    }

    /// Counts so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Processes one record: its events go to `sink`, a failure to the dead letter. An error
    /// means the dead letter could not be written, and the record must not be acknowledged.
    pub fn process(&mut self, record: Record<'_>, sink: &mut dyn FnMut(Event)) -> io::Result<()> {
        self.stats.records += 1;
        if let Some(m) = &self.metrics {
            m.record();
        }
        if let Some(len) = record.oversized_len {
            let error = ParseError::Oversized { len, limit: self.limit };
            return self.reject(&record, &error);
        }
        let meta = RecordMeta {
            origin: Some(record.origin.clone()),
            received: record.received,
        };
        let normalized = if self.normalized {
            serde_json::from_slice::<Event>(record.bytes)
                .map(|event| self.buffer.push(event))
                .map_err(ParseError::MalformedJson)
        } else {
            self.normalizer
                .normalize_into(record.bytes, &meta, &mut self.buffer)
                .map(drop)
        };
        match normalized {
            Ok(_) => {
                for event in self.buffer.drain(..) {
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
            Err(error) => self.reject(&record, &error),
        }
    }

    fn reject(&mut self, record: &Record<'_>, error: &ParseError) -> io::Result<()> {
        *self.stats.dead_letters.entry(error.reason()).or_default() += 1;
        if let Some(m) = &self.metrics {
            m.dead_letter(error.reason());
        }
        tracing::debug!(reason = error.reason(), source = %record.origin, "Record sent to the dead letter.");
        let letter = Letter::new(
            error.reason(),
            error.to_string(),
            record.origin,
            record.bytes,
            record.oversized_len,
        );
        self.dead_letter.send(&letter)
    }

    /// Makes the dead letter durable.
    pub fn flush(&mut self) -> io::Result<()> {
        self.dead_letter.flush()
    }
}
