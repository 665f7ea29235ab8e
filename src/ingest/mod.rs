//! Raw records in: NDJSON files and stdin ([`file`](mod@file)), Kafka ([`crate::kafka::consumer`]);
//! and out, for what cannot be used, the [`dead_letter`].
//!
//! A source yields each record with its coordinates ([`Record`]) and takes acknowledgements
//! ([`Offsets`]); it does not know what happens next. The Kafka source stores an offset only
//! after the record was taken in, and commits it only once that is durable.

pub mod dead_letter;
pub mod file;

use std::collections::BTreeMap;

use crate::event::Origin;

/// `[ingest]`
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest record accepted, in bytes.
    pub max_record_bytes: usize,
    /// Threads normalizing records side by side; 0 for one per core.
    pub workers: usize,
}

impl IngestConfig {
    /// The normalizing threads to use: `workers`, or one per core.
    pub fn workers(&self) -> usize {
        match self.workers {
            0 => one_per_core(),
            n => n,
        }
    }
}

/// One thread per core this process may use.
pub fn one_per_core() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// One raw record and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The bytes as received (possibly truncated when `oversized_len` is set).
    pub bytes: &'a [u8],
    /// Where it was read.
    pub origin: &'a Origin,
    /// For a record longer than the limit: its full length (only a prefix is in `bytes`).
    pub oversized_len: Option<usize>,
    /// Arrival time (Kafka timestamp), if known.
    pub received: Option<chrono::DateTime<chrono::Utc>>,
}

/// The next offset to read per topic and partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offsets(BTreeMap<(String, i32), i64>);

impl Offsets {
    /// Records that everything before `next` in `topic`/`partition` was taken in.
    pub fn advance(&mut self, topic: &str, partition: i32, next: i64) {
        match self.0.get_mut(&(topic.to_owned(), partition)) {
            Some(at) => *at = (*at).max(next),
            None => {
                self.0.insert((topic.to_owned(), partition), next);
            }
        }
    }

    /// Forgets `topic`/`partition` (revoked from a group member, or about to be restarted).
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.0.remove(&(topic.to_owned(), partition));
    }

    /// The next offset of `topic`/`partition`, if it was ever read.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(&(topic.to_owned(), partition)).copied()
    }

    /// Every (topic, partition, next offset).
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.0.iter().map(|((t, p), o)| (t.as_str(), *p, *o))
    }

    /// True when nothing was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
