//! The dead letter: every record that did not become an event, with the reason, the parser's
//! message and its coordinates, so nothing is lost and every rejection can be replayed.
//!
//! File form: one JSON object per line, `{"time","reason","error","source","raw"}` (`raw_base64`
//! instead of `raw` when the bytes are not UTF-8; `raw_truncated` and `length` for oversized
//! records; `element` and the element's own text as `raw` for one refused element of a page or
//! `Bundle`). Kafka form ([`crate::kafka::dead_letter`]): the raw bytes as the message value,
//! the rest as headers.
//!
//! The file holds raw records, patient data among them: it is created readable by its owner only
//! ([`crate::private`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use base64::Engine;
use serde::Serialize;

use crate::event::Origin;

/// `[dead_letter]`
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// NDJSON file.
    pub path: std::path::PathBuf,
    /// Kafka topic, or empty.
    pub topic: String,
}

/// Where dead letters go.
pub trait DeadLetter: Send {
    /// Records one rejected record. An error here must stop ingest: the record would be lost.
    fn send(&mut self, letter: &Letter<'_>) -> std::io::Result<()>;
    /// Makes everything sent durable.
    fn flush(&mut self) -> std::io::Result<()>;
}

/// A rejected record.
#[derive(Debug, Serialize)]
pub struct Letter<'a> {
    /// When it was rejected.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Stable reason code.
    pub reason: &'static str,
    /// The parser's message.
    pub error: String,
    /// Where the record was read.
    pub source: &'a Origin,
    /// For one element of a page or `Bundle`: its index (`raw` is then the element).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element: Option<usize>,
    /// The raw bytes, when UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<&'a str>,
    /// The raw bytes, base64, when not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_base64: Option<String>,
    /// Full length when only a prefix is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<usize>,
    /// True when `raw` holds only a prefix.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub raw_truncated: bool,
    #[serde(skip)]
    bytes: &'a [u8],
}

impl<'a> Letter<'a> {
    /// The bytes as received (a prefix of an oversized record).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl<'a> Letter<'a> {
    /// A letter for `bytes` read at `source`.
    pub fn new(
        reason: &'static str,
        error: String,
        source: &'a Origin,
        bytes: &'a [u8],
        full_len: Option<usize>,
    ) -> Self {
        let (raw, raw_base64) = match std::str::from_utf8(bytes) {
            Ok(s) => (Some(s), None),
            Err(e) if full_len.is_some() && e.error_len().is_none() => {
                // A truncated prefix may end inside a character; keep the valid part as text.
                (std::str::from_utf8(&bytes[..e.valid_up_to()]).ok(), None)
            }
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(bytes))),
        };
        Letter {
            time: chrono::Utc::now(),
            reason,
            error,
            source,
            element: None,
            raw,
            raw_base64,
            length: full_len,
            raw_truncated: full_len.is_some(),
            bytes,
        }
    }

    /// The letter of one element of a page or `Bundle`, `bytes` being the element.
    pub fn element(mut self, index: usize) -> Self {
        self.element = Some(index);
        self
    }
}

/// Dead letters to an NDJSON file (appended).
pub struct FileDeadLetter {
    out: BufWriter<File>,
}

impl FileDeadLetter {
    /// Opens (creates `0600`, or appends to) `path`.
    pub fn open(path: &Path) -> std::io::Result<FileDeadLetter> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = crate::private::append(path)?;
        Ok(FileDeadLetter {
            out: BufWriter::new(file),
        })
    }
}

impl DeadLetter for FileDeadLetter {
    fn send(&mut self, letter: &Letter<'_>) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, letter)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}
