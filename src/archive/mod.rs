//! The archive: every normalized event and every finding, as Parquet, for compliance queries
//! and replays.
//!
//! Layout under the archive root (a local directory or an object-store URL such as
//! `s3://bucket/prefix`): `events/date=YYYY-MM-DD/part-<writer>-<n>.parquet` and
//! `findings/date=YYYY-MM-DD/…`, the date being the event day (UTC). Within a file rows are
//! sorted by identity, then time, and Parquet statistics are kept per page, so a query for one
//! identity and one day reads one partition and skips most pages. Each file is written whole by
//! the object store's `put`, which is atomic (the local store writes a temporary file and
//! renames it): a crash never leaves a torn file visible. Rows are copied into per-day column
//! builders as they arrive and handed to a writer thread when they reach `max_rows` or are
//! `max_age` old, and on [`Archive::flush`]; that thread sorts, encodes and writes, so the
//! detection thread never waits for Parquet or the store unless the writer is
//! [`QUEUED_BATCHES`] batches behind.
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
use schema::EventRows;

/// `[archive]`
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Directory or object-store URL; empty for no archive.
    pub location: String,
    /// Rows buffered before a flush.
    pub max_rows: usize,
    /// Seconds the oldest buffered row may wait before a flush.
    pub max_age_seconds: u64,
    /// Longest time a query may run.
    pub query_timeout_seconds: u64,
    /// Memory a query may use, in bytes: the whole query process's (see `replay::sandbox`).
    pub query_memory_bytes: usize,
    /// Most rows a query returns.
    pub max_result_rows: usize,
    /// Queries that may run at once; the API answers 429 beyond.
    pub query_concurrency: usize,
}

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

/// A batch for the writer thread, or a request to report.
enum Job {
    Write {
        table: Table,
        day: NaiveDate,
        batch: RecordBatch,
    },
    Sync(mpsc::Sender<Result<Flushed, ArchiveError>>),
}

/// How many full batches may wait for the writer before appends block: the archive's
/// backpressure (a slow store slows intake instead of growing memory).
const QUEUED_BATCHES: usize = 2;

/// An archive being written.
///
/// Appends copy each row into per-day column builders on the caller's thread; everything else —
/// sorting, Parquet encoding, the store's `put` — happens on a writer thread, so a flush costs
/// the caller only the hand-over.
pub struct Archive {
    location: String,
    events: BTreeMap<NaiveDate, EventRows>,
    findings: BTreeMap<NaiveDate, Vec<Finding>>,
    buffered: usize,
    oldest: Option<Instant>,
    limits: Limits,
    jobs: mpsc::SyncSender<Job>,
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
        // Only its owner may enter: the store creates the files as the umask allows.
        crate::private::dir(std::path::Path::new(location)).map_err(|e| bad(e.to_string()))?;
        let fs = LocalFileSystem::new_with_prefix(location).map_err(|e| bad(e.to_string()))?;
        Ok((Arc::new(fs), ObjectPath::default()))
    }
}

/// The object store of an archive that exists at `location`, for reading: `None` when it has
/// neither an `events/` nor a `findings/` table (a mistyped path, or nothing archived yet).
/// Creates nothing.
pub async fn existing(location: &str) -> Result<Option<Arc<dyn ObjectStore>>, ArchiveError> {
    use futures_util::StreamExt as _;
    if !location.contains("://") {
        let root = std::path::Path::new(location);
        let found = [Table::Events, Table::Findings]
            .iter()
            .any(|t| root.join(t.name()).is_dir());
        if !found {
            return Ok(None);
        }
        return store(location).map(|(store, _)| Some(store));
    }
    let (store, prefix) = store(location)?;
    for table in [Table::Events, Table::Findings] {
        let under = ObjectPath::from_iter(prefix.parts().chain(ObjectPath::from(table.name()).parts()));
        match store.list(Some(&under)).next().await {
            Some(Ok(_)) => return Ok(Some(store)),
            Some(Err(e)) => {
                return Err(ArchiveError::Location {
                    location: location.to_owned(),
                    message: e.to_string(),
                });
            }
            None => {}
        }
    }
    Ok(None)
}

impl Archive {
    /// Opens `location` for writing. Files go through a writer thread with its own runtime,
    /// so the caller may be inside or outside an async runtime.
    pub fn open(location: &str, limits: Limits) -> Result<Archive, ArchiveError> {
        let (store, prefix) = store(location)?;
        let failed = |e: std::io::Error| ArchiveError::Location {
            location: location.to_owned(),
            message: e.to_string(),
        };
        if !location.contains("://") {
            // An archive opened for writing is one from the start: queries over it answer
            // from empty tables until the first files land, instead of "no archive".
            // Best effort: one that cannot be made now fails its first write, which is kept and
            // tried again like any refused write.
            for table in [Table::Events, Table::Findings] {
                let dir = std::path::Path::new(location).join(table.name());
                if let Err(error) = crate::private::dir(&dir) {
                    tracing::warn!(%error, dir = %dir.display(), "Archive table directory not created.");
                }
            }
        }
        let (jobs, rx) = mpsc::sync_channel::<Job>(QUEUED_BATCHES);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let mut writer = Writer {
            store,
            prefix,
            writer_id: format!("{started}-{}", std::process::id()),
            seq: 0,
            pending: Vec::new(),
            written: Flushed::default(),
            failing: false,
            lost: None,
            runtime,
        };
        std::thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Write { table, day, batch } => {
                            writer.encode(table, day, &batch);
                            writer.put_pending();
                        }
                        Job::Sync(reply) => {
                            writer.put_pending();
                            let _ = reply.send(writer.report());
                        }
                    }
                }
            })
            .map_err(failed)?;
        Ok(Archive {
            location: location.to_owned(),
            events: BTreeMap::new(),
            findings: BTreeMap::new(),
            buffered: 0,
            oldest: None,
            limits,
            jobs,
        })
    }

    /// Buffers an event; hands the buffers to the writer when they are full or old. Fails only
    /// when the writer thread is gone.
    pub fn append_event(&mut self, event: &Event) -> Result<(), ArchiveError> {
        self.events.entry(event.time.date_naive()).or_default().push(event);
        self.appended()
    }

    /// Buffers a finding's current state, as [`Archive::append_event`].
    pub fn append_finding(&mut self, finding: &Finding) -> Result<(), ArchiveError> {
        self.findings
            .entry(finding.event_time.date_naive())
            .or_default()
            .push(finding.clone());
        self.appended()
    }

    fn appended(&mut self) -> Result<(), ArchiveError> {
        self.buffered += 1;
        let oldest = *self.oldest.get_or_insert_with(Instant::now);
        if self.buffered >= self.limits.max_rows || oldest.elapsed() >= self.limits.max_age {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Gives every buffered row to the writer thread.
    fn hand_over(&mut self) -> Result<(), ArchiveError> {
        let mut jobs = Vec::new();
        for (day, mut rows) in std::mem::take(&mut self.events) {
            let batch = rows
                .finish()
                .map_err(|e| encode_error(&format!("events of {day}"), e))?;
            jobs.push(Job::Write {
                table: Table::Events,
                day,
                batch,
            });
        }
        for (day, findings) in std::mem::take(&mut self.findings) {
            let batch =
                schema::findings_batch(&findings).map_err(|e| encode_error(&format!("findings of {day}"), e))?;
            jobs.push(Job::Write {
                table: Table::Findings,
                day,
                batch,
            });
        }
        self.buffered = 0;
        self.oldest = None;
        for job in jobs {
            self.send(job)?;
        }
        Ok(())
    }

    fn send(&self, job: Job) -> Result<(), ArchiveError> {
        self.jobs.send(job).map_err(|_| ArchiveError::Write {
            path: self.location.clone(),
            message: "the archive writer stopped".into(),
        })
    }

    /// Writes everything buffered and returns what was written since the previous flush, once
    /// the store has every file. A file the store refused is kept, and tried again (under the
    /// same name, so a write that did land is not duplicated) at every later hand-over; the
    /// error names it.
    pub fn flush(&mut self) -> Result<Flushed, ArchiveError> {
        self.hand_over()?;
        let (tx, rx) = mpsc::channel();
        self.send(Job::Sync(tx))?;
        rx.recv().unwrap_or_else(|_| {
            Err(ArchiveError::Write {
                path: self.location.clone(),
                message: "the archive writer stopped".into(),
            })
        })
    }
}

/// A Parquet file waiting for the store.
struct Encoded {
    path: ObjectPath,
    payload: PutPayload,
    table: Table,
    rows: usize,
}

/// The writer thread's side: sorts and encodes batches, puts files, keeps refused ones.
struct Writer {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    writer_id: String,
    seq: u64,
    pending: Vec<Encoded>,
    written: Flushed,
    failing: bool,
    /// A batch that could not be encoded (a defect, not a store outage), reported at the next sync.
    lost: Option<ArchiveError>,
    runtime: tokio::runtime::Runtime,
}

impl Writer {
    fn path(&mut self, table: Table, day: NaiveDate) -> ObjectPath {
        self.seq += 1;
        let name = format!(
            "{}/date={}/part-{}-{:06}.parquet",
            table.name(),
            day.format("%Y-%m-%d"),
            self.writer_id,
            self.seq
        );
        ObjectPath::from_iter(self.prefix.parts().chain(ObjectPath::from(name.as_str()).parts()))
    }

    /// Sorts `batch` by identity, time and id, and encodes it as the next file.
    fn encode(&mut self, table: Table, day: NaiveDate, batch: &RecordBatch) {
        let path = self.path(table, day);
        let sorted_by = table.sorted_by();
        let encoded = sort(batch, &sorted_by)
            .map_err(|e| encode_error(path.as_ref(), e))
            .and_then(|sorted| encode(&path, &sorted, &sorted_by[..2]));
        match encoded {
            Ok(bytes) => self.pending.push(Encoded {
                path,
                payload: PutPayload::from(bytes),
                table,
                rows: batch.num_rows(),
            }),
            Err(error) => {
                tracing::error!(%error, rows = batch.num_rows(), "Archive batch could not be encoded.");
                self.lost.get_or_insert(error);
            }
        }
    }

    /// Puts every pending file, oldest first; stops at the first refusal (the store is likely
    /// down, and order of days is kept).
    fn put_pending(&mut self) {
        while let Some(file) = self.pending.first() {
            let result = self.runtime.block_on(self.store.put(&file.path, file.payload.clone()));
            match result {
                Ok(_) => {
                    let file = self.pending.remove(0);
                    self.written.files += 1;
                    self.written.bytes += file.payload.content_length() as u64;
                    match file.table {
                        Table::Events => self.written.events += file.rows,
                        Table::Findings => self.written.findings += file.rows,
                    }
                    if std::mem::replace(&mut self.failing, false) {
                        tracing::info!(waiting = self.pending.len(), "Archive writes succeed again.");
                    }
                }
                Err(error) => {
                    // Loud once per outage; the files wait and are tried at every hand-over.
                    if !std::mem::replace(&mut self.failing, true) {
                        tracing::error!(%error, path = %file.path, "Archive write failed; the file is kept and tried again.");
                    }
                    return;
                }
            }
        }
    }

    /// What was written since the last report, or why something was not.
    fn report(&mut self) -> Result<Flushed, ArchiveError> {
        if let Some(e) = self.lost.take() {
            return Err(e);
        }
        if let Some(file) = self.pending.first() {
            return Err(ArchiveError::Write {
                path: file.path.to_string(),
                message: format!(
                    "the store refused it; {} file(s) are kept and tried again at the next flush",
                    self.pending.len()
                ),
            });
        }
        Ok(std::mem::take(&mut self.written))
    }
}

#[derive(Clone, Copy)]
enum Table {
    Events,
    Findings,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Findings => "findings",
        }
    }

    /// The columns a file is sorted by: identity, time, then the id for a stable order.
    fn sorted_by(self) -> [usize; 3] {
        match self {
            Table::Events => [4, 1, 0],
            Table::Findings => [5, 9, 0],
        }
    }
}

fn encode_error(path: &str, e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Encode {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// `batch` with its rows ordered by the columns `by`.
fn sort(batch: &RecordBatch, by: &[usize]) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
    let columns: Vec<SortColumn> = by
        .iter()
        .map(|&i| SortColumn {
            values: Arc::clone(batch.column(i)),
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&columns, None)?;
    take_record_batch(batch, &indices)
}

/// One Parquet file of `batch`, declared sorted by the columns `sorted_by` (indices).
fn encode(path: &ObjectPath, batch: &RecordBatch, sorted_by: &[usize]) -> Result<Vec<u8>, ArchiveError> {
    let path = path.as_ref();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_sorting_columns(Some(
            sorted_by
                .iter()
                .map(|&column_idx| SortingColumn {
                    column_idx: column_idx as i32,
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
        let patients = batch.column_by_name("patients").expect("patients").as_list::<i32>();
        assert_eq!(patients.value(0).as_string::<i32>().len(), 2);
        let source = batch.column_by_name("source").expect("source").as_struct();
        assert_eq!(source.null_count(), 2, "odd-numbered events have no source");
    }

    #[test]
    fn full_buffers_go_to_the_writer_and_flush_reports_all_they_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            max_rows: 4,
            max_age: Duration::from_secs(3600),
        };
        let mut archive = Archive::open(dir.path().to_str().expect("utf-8"), limits).expect("open");
        for n in 0..10 {
            archive.append_event(&event(n, "a", n)).expect("append");
        }
        let flushed = archive.flush().expect("flush");
        assert_eq!((flushed.files, flushed.events, flushed.findings), (3, 10, 0));
        let mut ids = Vec::new();
        for path in files(dir.path()) {
            let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).expect("file"))
                .expect("parquet")
                .build()
                .expect("reader");
            for batch in reader {
                let batch = batch.expect("batch");
                ids.extend(
                    schema::events_from_batch(&batch)
                        .expect("events")
                        .into_iter()
                        .map(|e| e.event_id),
                );
            }
        }
        ids.sort_by_key(|id| id[1..].parse::<u32>().expect("number"));
        assert_eq!(ids, (0..10).map(|n| format!("e{n}")).collect::<Vec<_>>());
        assert_eq!(archive.flush().expect("nothing more"), Flushed::default());
    }

    #[test]
    fn a_refused_file_is_kept_and_written_under_its_name_once_the_store_takes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A plain file where the `events` directory must go: every put under it fails.
        std::fs::write(dir.path().join("events"), b"in the way").expect("blocker");
        let mut archive = Archive::open(dir.path().to_str().expect("utf-8"), Limits::default()).expect("open");
        for n in 0..3 {
            archive.append_event(&event(n, "a", n)).expect("append");
        }
        let error = archive.flush().expect_err("the store refuses").to_string();
        assert!(
            error.starts_with("writing events/date=2026-01-05/part-") && error.contains("kept and tried again"),
            "{error}"
        );
        let path_of = |error: &str| {
            error
                .trim_start_matches("writing ")
                .split(':')
                .next()
                .expect("path")
                .to_owned()
        };
        let refused = path_of(&error);
        // Tried again, still refused: the same file under the same name.
        let again = archive.flush().expect_err("still refused").to_string();
        assert_eq!(path_of(&again), refused);
        std::fs::remove_file(dir.path().join("events")).expect("unblock");
        archive.append_event(&event(3, "b", 3)).expect("append");
        let flushed = archive.flush().expect("the store takes both files");
        assert_eq!((flushed.files, flushed.events), (2, 4));
        let written = files(dir.path());
        assert!(
            written.iter().any(|p| p.ends_with(&refused)),
            "{refused} in {written:?}"
        );
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
        events[4].source_identity = Some("0oa-b".into());
        let batch = schema::events_batch(&events).expect("batch");
        assert_eq!(schema::events_from_batch(&batch).expect("back"), events);
    }

    #[test]
    fn events_written_before_source_identity_read_without_it() {
        let mut events: Vec<Event> = (0..2).map(|n| event(n, "a", n)).collect();
        events[1].source_identity = Some("0oa-a".into());
        let batch = schema::events_batch(&events).expect("batch");
        let at = batch.schema().index_of("source_identity").expect("column");
        let keep: Vec<usize> = (0..batch.num_columns()).filter(|&i| i != at).collect();
        let old = batch.project(&keep).expect("an older file's columns");
        events[1].source_identity = None;
        assert_eq!(schema::events_from_batch(&old).expect("back"), events);
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
