//! The archive: every normalized event and every finding, as Parquet, for compliance queries
//! and replays.
//!
//! Layout under the archive root (a local directory or an object-store URL such as
//! `s3://bucket/prefix`): `events/date=YYYY-MM-DD/part-<writer>-<n>.parquet` and
//! `findings/date=YYYY-MM-DD/…`, the date being the event day (UTC). Within a file rows are
//! sorted by identity, then time, and Parquet statistics are kept per page, so a query for one
//! identity and one day reads one partition and skips most pages. Each file is written whole by
//! the object store's `put`, which is atomic (the local store writes a temporary file and
//! renames it): a crash never leaves a torn file visible. Buffers are flushed when they hold
//! `max_rows` rows or are `max_age` old, and on [`Archive::flush`].
//!
//! A finding is archived each time it changes (its state then); its latest row is the one with
//! the highest `count`, then `last_event_time`.

pub mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use datafusion::arrow::array::RecordBatch;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::metadata::SortingColumn;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::event::Event;
use crate::findings::Finding;

/// What went wrong writing the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The location is not a directory or a URL an object store understands.
    #[error("archive location {location}: {message}")]
    Location {
        /// As configured.
        location: String,
        /// Why.
        message: String,
    },
    /// Encoding a batch failed.
    #[error("encoding {path}: {message}")]
    Encode {
        /// The file being written.
        path: String,
        /// Why.
        message: String,
    },
    /// The store refused a file.
    #[error("writing {path}: {message}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// When buffers are written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows buffered (events and findings together) before a flush.
    pub max_rows: usize,
    /// Age of the oldest buffered row before a flush.
    pub max_age: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_rows: 500_000,
            max_age: Duration::from_secs(60),
        }
    }
}

/// What a flush wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Files written.
    pub files: usize,
    /// Event rows written.
    pub events: usize,
    /// Finding rows written.
    pub findings: usize,
    /// Bytes written.
    pub bytes: u64,
}

type Put = (ObjectPath, Vec<u8>, mpsc::Sender<Result<(), String>>);

/// An archive being written.
pub struct Archive {
    location: String,
    prefix: ObjectPath,
    writer_id: String,
    seq: u64,
    events: BTreeMap<NaiveDate, Vec<Event>>,
    findings: BTreeMap<NaiveDate, Vec<Finding>>,
    buffered: usize,
    oldest: Option<Instant>,
    limits: Limits,
    puts: mpsc::Sender<Put>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("location", &self.location)
            .field("buffered", &self.buffered)
            .finish_non_exhaustive()
    }
}

/// The object store and root path of a location: a URL (`s3://…`, `file:///…`) or a
/// local directory (created if missing).
pub fn store(location: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath), ArchiveError> {
    let bad = |message: String| ArchiveError::Location {
        location: location.to_owned(),
        message,
    };
    if location.contains("://") {
        let url = url::Url::parse(location).map_err(|e| bad(e.to_string()))?;
        let (store, path) = datafusion::object_store::parse_url(&url).map_err(|e| bad(e.to_string()))?;
        Ok((Arc::from(store), path))
    } else {
        std::fs::create_dir_all(location).map_err(|e| bad(e.to_string()))?;
        let fs = LocalFileSystem::new_with_prefix(location).map_err(|e| bad(e.to_string()))?;
        Ok((Arc::new(fs), ObjectPath::default()))
    }
}

impl Archive {
    /// Opens `location` for writing. Files go through a writer thread with its own runtime,
    /// so the caller may be inside or outside an async runtime.
    pub fn open(location: &str, limits: Limits) -> Result<Archive, ArchiveError> {
        let (store, prefix) = store(location)?;
        let (puts, rx) = mpsc::channel::<Put>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ArchiveError::Location {
                location: location.to_owned(),
                message: e.to_string(),
            })?;
        std::thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || {
                for (path, bytes, reply) in rx {
                    let result = runtime
                        .block_on(store.put(&path, PutPayload::from(bytes)))
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    let _ = reply.send(result);
                }
            })
            .map_err(|e| ArchiveError::Location {
                location: location.to_owned(),
                message: e.to_string(),
            })?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        Ok(Archive {
            location: location.to_owned(),
            prefix,
            writer_id: format!("{started}-{}", std::process::id()),
            seq: 0,
            events: BTreeMap::new(),
            findings: BTreeMap::new(),
            buffered: 0,
            oldest: None,
            limits,
            puts,
        })
    }

    /// Buffers an event; flushes when the buffers are full or old.
    pub fn append_event(&mut self, event: &Event) -> Result<Option<Flushed>, ArchiveError> {
        self.events
            .entry(event.time.date_naive())
            .or_default()
            .push(event.clone());
        self.appended()
    }

    /// Buffers a finding's current state; flushes when the buffers are full or old.
    pub fn append_finding(&mut self, finding: &Finding) -> Result<Option<Flushed>, ArchiveError> {
        self.findings
            .entry(finding.event_time.date_naive())
            .or_default()
            .push(finding.clone());
        self.appended()
    }

    fn appended(&mut self) -> Result<Option<Flushed>, ArchiveError> {
        self.buffered += 1;
        let oldest = *self.oldest.get_or_insert_with(Instant::now);
        if self.buffered >= self.limits.max_rows || oldest.elapsed() >= self.limits.max_age {
            return self.flush().map(Some);
        }
        Ok(None)
    }

    fn path(&mut self, table: &str, day: NaiveDate) -> ObjectPath {
        self.seq += 1;
        let name = format!(
            "{table}/date={}/part-{}-{:06}.parquet",
            day.format("%Y-%m-%d"),
            self.writer_id,
            self.seq
        );
        ObjectPath::from_iter(self.prefix.parts().chain(ObjectPath::from(name.as_str()).parts()))
    }

    /// Writes everything buffered; returns when the store has every file. What a failed write
    /// held stays buffered and is tried again at the next flush (under a new file name).
    pub fn flush(&mut self) -> Result<Flushed, ArchiveError> {
        let mut files = Vec::new();
        let days: Vec<NaiveDate> = self.events.keys().copied().collect();
        for day in days {
            let path = self.path("events", day);
            let events = self.events.get_mut(&day).expect("listed above");
            events.sort_by(|a, b| (&a.identity, a.time).cmp(&(&b.identity, b.time)));
            let batch = schema::events_batch(events).map_err(|e| encode_error(&path, e))?;
            files.push((Table::Events, day, encode(&path, &batch, &[4, 1])?, path));
        }
        let days: Vec<NaiveDate> = self.findings.keys().copied().collect();
        for day in days {
            let path = self.path("findings", day);
            let findings = self.findings.get_mut(&day).expect("listed above");
            findings.sort_by(|a, b| (&a.identity.id, a.event_time).cmp(&(&b.identity.id, b.event_time)));
            let batch = schema::findings_batch(findings).map_err(|e| encode_error(&path, e))?;
            files.push((Table::Findings, day, encode(&path, &batch, &[5, 9])?, path));
        }
        let mut replies = Vec::new();
        for (table, day, bytes, path) in files {
            let (tx, rx) = mpsc::channel();
            let size = bytes.len() as u64;
            if self.puts.send((path.clone(), bytes, tx)).is_err() {
                return Err(ArchiveError::Write {
                    path: path.to_string(),
                    message: "the archive writer stopped".into(),
                });
            }
            replies.push((table, day, size, path, rx));
        }
        let mut flushed = Flushed::default();
        let mut failure = None;
        for (table, day, size, path, rx) in replies {
            match rx.recv().unwrap_or_else(|_| Err("the archive writer stopped".into())) {
                Ok(()) => {
                    flushed.files += 1;
                    flushed.bytes += size;
                    match table {
                        Table::Events => flushed.events += self.events.remove(&day).map_or(0, |v| v.len()),
                        Table::Findings => flushed.findings += self.findings.remove(&day).map_or(0, |v| v.len()),
                    }
                }
                Err(message) => {
                    failure.get_or_insert(ArchiveError::Write {
                        path: path.to_string(),
                        message,
                    });
                }
            }
        }
        self.buffered =
            self.events.values().map(Vec::len).sum::<usize>() + self.findings.values().map(Vec::len).sum::<usize>();
        self.oldest = (self.buffered > 0).then(Instant::now);
        match failure {
            Some(e) => Err(e),
            None => Ok(flushed),
        }
    }
}

#[derive(Clone, Copy)]
enum Table {
    Events,
    Findings,
}

fn encode_error(path: &ObjectPath, e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Encode {
        path: path.to_string(),
        message: e.to_string(),
    }
}

/// One Parquet file of `batch`, declared sorted by the columns `sorted_by` (indices).
fn encode(path: &ObjectPath, batch: &RecordBatch, sorted_by: &[i32]) -> Result<Vec<u8>, ArchiveError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_sorting_columns(Some(
            sorted_by
                .iter()
                .map(|&column_idx| SortingColumn {
                    column_idx,
                    descending: false,
                    nulls_first: false,
                })
                .collect(),
        ))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).map_err(|e| encode_error(path, e))?;
    w.write(batch).map_err(|e| encode_error(path, e))?;
    w.close().map_err(|e| encode_error(path, e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Origin, SourceFormat};
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{DataType, TimestampMicrosecondType};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn event(n: i64, identity: &str, minutes: i64) -> Event {
        let t = chrono::DateTime::from_timestamp(1_767_571_200 + minutes * 60, 0).expect("valid");
        let mut e = Event::new(
            format!("e{n}"),
            t,
            SourceFormat::GatewayAccess,
            EventKind::DataAccess,
            identity.into(),
        );
        e.patients = vec![format!("p{n}"), "p0".into()];
        e.records = Some(n as u64);
        e.scopes = vec!["system/Observation.rs".parse().expect("scope")];
        e.source = (n % 2 == 0).then(|| Origin {
            name: "gateway-access".into(),
            partition: Some(1),
            offset: n,
        });
        e
    }

    fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("dir").flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn events_land_in_day_partitions_sorted_with_statistics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut archive = Archive::open(dir.path().to_str().expect("utf-8"), Limits::default()).expect("open");
        // Day one (minutes 0..20) and day two (minute 1500), identities interleaved.
        for (n, (who, minute)) in [("b", 10), ("a", 5), ("b", 1), ("a", 1500), ("c", 0), ("a", 2)]
            .into_iter()
            .enumerate()
        {
            archive.append_event(&event(n as i64, who, minute)).expect("append");
        }
        let flushed = archive.flush().expect("flush");
        assert_eq!((flushed.files, flushed.events), (2, 6));
        let written = files(dir.path());
        let names: Vec<String> = written
            .iter()
            .map(|p| p.strip_prefix(dir.path()).expect("inside").display().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[0].starts_with("events/date=2026-01-05/part-") && names[0].ends_with(".parquet"));
        assert!(names[1].starts_with("events/date=2026-01-06/part-"));

        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&written[0]).expect("file")).expect("parquet");
        let meta = reader.metadata().clone();
        let batch = reader.build().expect("reader").next().expect("a batch").expect("batch");
        let identities: Vec<&str> = batch.column(4).as_string::<i32>().iter().flatten().collect();
        assert_eq!(identities, ["a", "a", "b", "b", "c"]);
        let times = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        assert!(times.value(0) < times.value(1), "a's events in time order");
        assert_eq!(
            batch.schema().field(1).data_type(),
            &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()))
        );
        let stats = meta.row_group(0).column(4).statistics().expect("identity statistics");
        assert_eq!(
            (stats.min_bytes_opt(), stats.max_bytes_opt()),
            (Some(&b"a"[..]), Some(&b"c"[..]))
        );
        assert_eq!(meta.row_group(0).sorting_columns().map(|c| c.len()), Some(2));
        // Lists, optional numbers and the source struct survive.
        let patients = batch.column(14).as_list::<i32>();
        assert_eq!(patients.value(0).as_string::<i32>().len(), 2);
        let source = batch.column_by_name("source").expect("source").as_struct();
        assert_eq!(source.null_count(), 2, "odd-numbered events have no source");
    }

    #[test]
    fn events_read_back_equal_what_was_written() {
        let mut events: Vec<Event> = (0..6)
            .map(|n| event(n, if n % 2 == 0 { "a" } else { "b" }, n))
            .collect();
        events[1].identity_name = Some("Lab feed".into());
        events[1].interaction = Some(crate::event::Interaction::Search);
        events[2].status = Some(403);
        events[2].outcome = crate::event::Outcome::Failure;
        events[3].token_id = Some("AT.1".into());
        events[3].token_issued_at = Some(events[3].time - chrono::Duration::minutes(50));
        events[3].token_expires_at = Some(events[3].time + chrono::Duration::minutes(10));
        let batch = schema::events_batch(&events).expect("batch");
        assert_eq!(schema::events_from_batch(&batch).expect("back"), events);
    }

    #[test]
    fn the_event_schema_mirrors_the_json_schema() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/event.schema.json")).expect("schema");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        let properties: Vec<&str> = json["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        let required: Vec<&str> = json["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let arrow = schema::event_schema();
        let mut fields: Vec<&str> = arrow.fields().iter().map(|f| f.name().as_str()).collect();
        let mut props = properties.clone();
        fields.sort_unstable();
        props.sort_unstable();
        assert_eq!(fields, props, "the same fields");
        for f in arrow.fields() {
            assert_eq!(
                !f.is_nullable(),
                required.contains(&f.name().as_str()),
                "{}: required in JSON ⇔ non-nullable in Arrow",
                f.name()
            );
        }
    }
}
