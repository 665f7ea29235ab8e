//! The durable outbox between the findings store and the SIEM sinks.
//!
//! Every finding change that is to be delivered is appended here (one NDJSON line, flushed and
//! synced) before any sink sees it; each sink then reads at its own pace from its own cursor, so
//! a sink that is down never holds back detection or the other sinks, and after a restart each
//! resumes after the last record it confirmed. Delivery is at-least-once: a record is confirmed
//! only after the receiver accepted it, so a crash between the two sends it again. Receivers
//! deduplicate by `metadata.uid` (`<finding id>:<sequence>`).
//!
//! On disk: `<dir>/<first sequence, 20 digits>.ndjson` segments, rolled at `segment_bytes`, and
//! `<dir>/<sink>.cursor` (the last sequence the sink confirmed, written atomically). A segment
//! is deleted once every sink has confirmed all of it. The newest segment is always kept, so the
//! sequence survives a restart even when everything was delivered. A torn last line (a crash
//! mid-append) is cut off on open.
//!
//! Bounded: when the retained records exceed `max_bytes` the oldest segment is dropped even if
//! a sink has not delivered it. New findings are never refused (detection must not stop for a
//! SIEM outage); the loss is logged with the sequence range and counted per sink
//! (`nhiwatch_sink_dropped_total`), and the findings stay in the findings journal and API.
//! Retained records are also held in memory (at most `max_bytes` of them), so readers never
//! parse files after start.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::findings::Finding;
use crate::findings::ocsf::Activity;
use crate::findings::store::Deliver;

/// `[outbox]`
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Directory of the outbox segments and sink cursors.
    pub dir: PathBuf,
    /// Retained bytes before the oldest undelivered segment is dropped (and counted).
    pub max_bytes: u64,
    /// Segment size.
    pub segment_bytes: u64,
    /// First retry delay after a failed delivery.
    pub retry_initial_ms: u64,
    /// Longest retry delay.
    pub retry_max_seconds: u64,
}

/// One finding change to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Place in the outbox: 1, 2, 3… without gaps.
    pub seq: u64,
    /// When it was appended (wall clock): the age of pending deliveries.
    pub queued_at: DateTime<Utc>,
    /// The OCSF activity: create, update or close.
    pub activity: Activity,
    /// The finding after the change.
    pub finding: Finding,
}

/// What went wrong with the outbox's files.
#[derive(Debug, thiserror::Error)]
#[error("outbox {path}: {source}")]
pub struct OutboxError {
    path: PathBuf,
    source: io::Error,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> OutboxError + '_ {
    move |source| OutboxError {
        path: path.to_owned(),
        source,
    }
}

/// Sizes of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Retained bytes (of NDJSON) before the oldest segment is dropped.
    pub max_bytes: u64,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
}

struct Segment {
    base: u64,
    last: u64,
    bytes: u64,
    path: PathBuf,
}

struct State {
    /// Retained records, `seq` ascending and contiguous.
    records: VecDeque<Arc<Delivery>>,
    segments: VecDeque<Segment>,
    writer: File,
    head: u64,
    /// Confirmed sequence per registered sink.
    cursors: BTreeMap<String, u64>,
    /// Records dropped unsent because the outbox was full (all time, this process).
    dropped: u64,
}

impl State {
    fn retained_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn first_seq(&self) -> u64 {
        self.records.front().map_or(self.head + 1, |r| r.seq)
    }

    /// Removes the oldest segment and its records; returns the sequence range removed.
    fn drop_oldest(&mut self) -> Option<(u64, u64)> {
        if self.segments.len() < 2 {
            return None;
        }
        let seg = self.segments.pop_front()?;
        while self.records.front().is_some_and(|r| r.seq <= seg.last) {
            self.records.pop_front();
        }
        if let Err(error) = fs::remove_file(&seg.path) {
            tracing::warn!(path = %seg.path.display(), %error, "Could not delete an outbox segment.");
        }
        (seg.last >= seg.base).then_some((seg.base, seg.last))
    }
}

/// The outbox. Shared by the store (appending) and the sink workers (reading, confirming).
pub struct Outbox {
    dir: PathBuf,
    limits: Limits,
    state: Mutex<State>,
    head_tx: watch::Sender<u64>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.ndjson")
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, recovering what a previous run left.
    pub fn open(dir: &Path, limits: Limits) -> Result<Outbox, OutboxError> {
        fs::create_dir_all(dir).map_err(err(dir))?;
        let mut bases: Vec<u64> = fs::read_dir(dir)
            .map_err(err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".ndjson")?.parse::<u64>().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut records = VecDeque::new();
        let mut segments = VecDeque::new();
        let mut head = 0;
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let path = dir.join(segment_name(base));
            let (recs, good_len) = read_segment(&path)?;
            let is_last = i + 1 == count;
            let len = fs::metadata(&path).map_err(err(&path))?.len();
            if good_len < len {
                if !is_last {
                    tracing::warn!(path = %path.display(), "An outbox segment has an unreadable tail; the rest of it is skipped.");
                } else {
                    tracing::warn!(path = %path.display(), bytes = len - good_len, "Cutting a torn line off the outbox (a crash mid-append).");
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(good_len))
                        .map_err(err(&path))?;
                }
            }
            head = head.max(base.saturating_sub(1));
            let mut last = base.saturating_sub(1);
            for r in recs {
                // Sequences are contiguous by construction; anything else is skipped.
                if r.seq == head + 1 {
                    head = r.seq;
                    last = r.seq;
                    records.push_back(Arc::new(r));
                }
            }
            segments.push_back(Segment {
                base,
                last,
                bytes: good_len,
                path,
            });
        }
        if segments.is_empty() {
            let path = dir.join(segment_name(1));
            crate::private::create(&path).map_err(err(&path))?;
            segments.push_back(Segment {
                base: 1,
                last: 0,
                bytes: 0,
                path,
            });
        }
        let current = segments.back().map(|s| s.path.clone()).unwrap_or_default();
        let writer = crate::private::append(&current).map_err(err(&current))?;
        let (head_tx, _) = watch::channel(head);
        Ok(Outbox {
            dir: dir.to_owned(),
            limits,
            state: Mutex::new(State {
                records,
                segments,
                writer,
                head,
                cursors: BTreeMap::new(),
                dropped: 0,
            }),
            head_tx,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cursor_path(&self, sink: &str) -> PathBuf {
        self.dir.join(format!("{sink}.cursor"))
    }

    /// Registers a sink and returns its confirmed sequence. A sink seen for the first time
    /// starts at the current head: it receives findings from now on, not the backlog.
    pub fn register(&self, sink: &str) -> Result<u64, OutboxError> {
        let path = self.cursor_path(sink);
        let mut state = self.lock();
        let cursor = match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|e| OutboxError {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, format!("not a sequence number: {e}")),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_atomically(&path, state.head)?;
                state.head
            }
            Err(e) => return Err(err(&path)(e)),
        };
        let cursor = cursor.min(state.head);
        state.cursors.insert(sink.to_owned(), cursor);
        Ok(cursor)
    }

    /// Appends a change; returns its sequence. The line is on disk (synced) when this returns.
    pub fn append(&self, activity: Activity, finding: Finding) -> Result<u64, OutboxError> {
        let mut state = self.lock();
        let delivery = Delivery {
            seq: state.head + 1,
            queued_at: Utc::now(),
            activity,
            finding,
        };
        let mut line = serde_json::to_vec(&delivery).map_err(|e| OutboxError {
            path: self.dir.clone(),
            source: io::Error::other(e),
        })?;
        line.push(b'\n');
        let current = state.segments.back().map(|s| s.path.clone()).unwrap_or_default();
        state.writer.write_all(&line).map_err(err(&current))?;
        state.writer.sync_data().map_err(err(&current))?;
        state.head = delivery.seq;
        if let Some(seg) = state.segments.back_mut() {
            seg.last = delivery.seq;
            seg.bytes += line.len() as u64;
        }
        state.records.push_back(Arc::new(delivery));
        let seq = state.head;
        if state
            .segments
            .back()
            .is_some_and(|s| s.bytes >= self.limits.segment_bytes)
        {
            let path = self.dir.join(segment_name(seq + 1));
            state.writer = crate::private::append(&path).map_err(err(&path))?;
            state.segments.push_back(Segment {
                base: seq + 1,
                last: seq,
                bytes: 0,
                path,
            });
            self.collect(&mut state);
        }
        while state.retained_bytes() > self.limits.max_bytes {
            let Some((from, to)) = state.drop_oldest() else {
                break;
            };
            let lost = to - from + 1;
            state.dropped += lost;
            tracing::error!(
                from,
                to,
                "The outbox is full: dropped {lost} undelivered finding changes (they remain in the findings journal and API)."
            );
        }
        drop(state);
        self.head_tx.send_replace(seq);
        Ok(seq)
    }

    /// Up to `max` records after `after`, and how many records after `after` were dropped
    /// (outbox full) before the first one returned.
    pub fn read(&self, after: u64, max: usize) -> (Vec<Arc<Delivery>>, u64) {
        let state = self.lock();
        let first = state.first_seq();
        let skipped = first.saturating_sub(after + 1);
        let start = (after + 1).max(first);
        let offset = (start - first) as usize;
        let batch = state.records.iter().skip(offset).take(max).cloned().collect();
        (batch, skipped)
    }

    /// Records that `sink` delivered everything up to `seq`, durably, and deletes segments
    /// every sink has delivered.
    pub fn confirm(&self, sink: &str, seq: u64) -> Result<(), OutboxError> {
        write_atomically(&self.cursor_path(sink), seq)?;
        let mut state = self.lock();
        state.cursors.insert(sink.to_owned(), seq);
        self.collect(&mut state);
        Ok(())
    }

    fn collect(&self, state: &mut State) {
        let Some(&min) = state.cursors.values().min() else {
            return;
        };
        while state.segments.len() > 1 && state.segments.front().is_some_and(|s| s.last <= min) {
            state.drop_oldest();
        }
    }

    /// The newest sequence appended.
    pub fn head(&self) -> u64 {
        *self.head_tx.borrow()
    }

    /// A receiver that changes whenever a record is appended.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    /// When the record after `after` was queued, if it is retained.
    pub fn queued_at(&self, after: u64) -> Option<DateTime<Utc>> {
        let state = self.lock();
        let first = state.first_seq();
        let i = (after + 1).checked_sub(first)?;
        state.records.get(i as usize).map(|r| r.queued_at)
    }

    /// Records dropped because the outbox was full, since start.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Bytes retained on disk.
    pub fn retained_bytes(&self) -> u64 {
        self.lock().retained_bytes()
    }
}

/// The records of a segment and the length of its readable prefix.
fn read_segment(path: &Path) -> Result<(Vec<Delivery>, u64), OutboxError> {
    let mut reader = BufReader::new(File::open(path).map_err(err(path))?);
    let mut records = Vec::new();
    let mut line = String::new();
    let mut good = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(err(path))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        match serde_json::from_str::<Delivery>(&line) {
            Ok(d) => records.push(d),
            Err(_) => break,
        }
        good = reader.stream_position().map_err(err(path))?;
    }
    Ok((records, good))
}

fn write_atomically(path: &Path, seq: u64) -> Result<(), OutboxError> {
    let tmp = path.with_extension("cursor.tmp");
    let mut f = File::create(&tmp).map_err(err(&tmp))?;
    writeln!(f, "{seq}").map_err(err(&tmp))?;
    f.sync_data().map_err(err(&tmp))?;
    fs::rename(&tmp, path).map_err(err(path))
}

/// The store's delivery: a change is appended (on disk when this returns).
impl Deliver for Outbox {
    fn deliver(&self, activity: Activity, finding: Finding) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.append(activity, finding).map(|_| ()).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::test_finding;

    const SMALL: Limits = Limits {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
    };

    fn append_n(outbox: &Outbox, n: usize) {
        for i in 0..n {
            outbox
                .append(Activity::Create, test_finding(&format!("f{i}")))
                .expect("append");
        }
    }

    #[test]
    fn each_sink_resumes_after_what_it_confirmed_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = Outbox::open(dir.path(), SMALL).expect("open");
            assert_eq!(outbox.register("a").expect("a"), 0);
            assert_eq!(outbox.register("b").expect("b"), 0);
            append_n(&outbox, 30);
            let (batch, skipped) = outbox.read(0, 10);
            assert_eq!((batch.len(), batch[0].seq, batch[9].seq, skipped), (10, 1, 10, 0));
            outbox.confirm("a", 10).expect("confirm");
            outbox.confirm("b", 25).expect("confirm");
        }
        let outbox = Outbox::open(dir.path(), SMALL).expect("reopen");
        assert_eq!(outbox.head(), 30);
        assert_eq!(outbox.register("a").expect("a"), 10);
        assert_eq!(outbox.register("b").expect("b"), 25);
        let (batch, _) = outbox.read(10, 100);
        assert_eq!(
            batch.iter().map(|d| d.seq).collect::<Vec<_>>(),
            (11..=30).collect::<Vec<_>>()
        );
        assert_eq!(batch[0].finding.id, "f10");
        // A sink configured later starts at the head.
        assert_eq!(outbox.register("c").expect("c"), 30);
        assert_eq!(outbox.append(Activity::Update, test_finding("x")).expect("append"), 31);
        // Segments hold findings: their owner's only.
        use std::os::unix::fs::PermissionsExt as _;
        for entry in fs::read_dir(dir.path()).expect("dir").flatten() {
            if entry.file_name().to_string_lossy().ends_with(".ndjson") {
                let mode = entry.metadata().expect("metadata").permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{:?}", entry.file_name());
            }
        }
    }

    #[test]
    fn delivered_segments_are_deleted_but_the_sequence_survives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segments = || {
            fs::read_dir(dir.path())
                .expect("dir")
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "ndjson"))
                })
                .count()
        };
        {
            let outbox = Outbox::open(dir.path(), SMALL).expect("open");
            outbox.register("a").expect("a");
            append_n(&outbox, 40);
            assert!(segments() > 3, "{} segments", segments());
            outbox.confirm("a", 40).expect("confirm");
            append_n(&outbox, 1);
            assert!(segments() <= 2, "{} segments", segments());
        }
        let outbox = Outbox::open(dir.path(), SMALL).expect("reopen");
        assert_eq!(outbox.head(), 41);
        assert_eq!(outbox.register("a").expect("a"), 40);
        assert_eq!(outbox.read(40, 10).0.len(), 1);
    }

    #[test]
    fn a_torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = Outbox::open(dir.path(), SMALL).expect("open");
            append_n(&outbox, 2);
        }
        let path = dir.path().join(segment_name(1));
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"seq\":3,\"queued").expect("write");
        drop(f);
        let outbox = Outbox::open(dir.path(), SMALL).expect("reopen");
        assert_eq!(outbox.head(), 2);
        assert_eq!(outbox.append(Activity::Create, test_finding("c")).expect("append"), 3);
        drop(outbox);
        let outbox = Outbox::open(dir.path(), SMALL).expect("reopen");
        let (batch, _) = outbox.read(0, 10);
        assert_eq!(batch.iter().map(|d| d.seq).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_says_how_many() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            max_bytes: 8192,
            segment_bytes: 2048,
        };
        let outbox = Outbox::open(dir.path(), limits).expect("open");
        outbox.register("slow").expect("register");
        append_n(&outbox, 100);
        assert!(outbox.retained_bytes() <= limits.max_bytes);
        let dropped = outbox.dropped();
        assert!(dropped > 0);
        let (batch, skipped) = outbox.read(0, 1000);
        assert_eq!(skipped, dropped);
        assert_eq!(batch.first().map(|d| d.seq), Some(dropped + 1));
        assert_eq!(batch.last().map(|d| d.seq), Some(100));
        assert_eq!(outbox.queued_at(dropped).map(|_| ()), Some(()));
    }
}
