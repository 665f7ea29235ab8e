//! Raw records in: NDJSON files and stdin ([`file`](mod@file)), Kafka ([`kafka`]); and out, for what cannot
//! be used, the [`dead_letter`].
//!
//! A source hands each record to a caller-supplied function with its coordinates; it does not
//! know what happens next. The Kafka source stores an offset only after that function returned,
//! so a record is committed only once it is fully processed.

pub mod align;
pub mod dead_letter;
pub mod file;
pub mod kafka;

use crate::event::Origin;

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
