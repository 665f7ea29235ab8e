//! The findings store: the live set in memory, bounded, made durable by an append-only NDJSON
//! journal, with a sequence number per change for cursors and the live stream.
//!
//! Every new or updated finding and every status change is one journal line, written before
//! the change is visible; on start the journal is replayed (the last state of each finding wins),
//! so findings and their status history survive a restart. The in-memory set keeps the newest
//! `capacity` findings by creation; older ones stay in the journal (and, with the archive, in
//! Parquet). Listing is newest-created first, and a cursor is the creation sequence of the last
//! item seen, so pages stay stable while findings are inserted or updated.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::ocsf::Activity;
use super::{Change, DetectorId, Finding, Severity, Status};
use crate::sink::outbox::Outbox;

/// A recorded status change: who, when, why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// The new status.
    pub status: Status,
    /// Who changed it (the API token's name).
    pub by: String,
    /// When (wall clock).
    pub at: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// For `suppressed`: until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A finding as stored: the finding, its status history, and its sequence numbers.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stored {
    /// Sequence of its creation: its place in listings and the cursor.
    pub created_seq: u64,
    /// Sequence of its latest change: the live stream's event id.
    pub seq: u64,
    /// The finding, with its current status.
    #[serde(flatten)]
    pub finding: Finding,
    /// Status changes, oldest first.
    pub status_history: Vec<StatusChange>,
}

impl Stored {
    /// The status as of `now`: a suppression whose `expires_at` has passed has lapsed, and the
    /// finding is `new` again.
    pub fn status_at(&self, now: DateTime<Utc>) -> Status {
        let lapsed = self.finding.status == Status::Suppressed
            && self
                .status_history
                .last()
                .and_then(|c| c.expires_at)
                .is_some_and(|t| t <= now);
        if lapsed { Status::New } else { self.finding.status }
    }

    fn settled(mut self, now: DateTime<Utc>) -> Stored {
        self.finding.status = self.status_at(now);
        self
    }
}

/// A change as the live stream sends it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamItem {
    /// `new`, `updated` or `status`.
    pub change: &'static str,
    /// The finding after the change.
    pub stored: Stored,
}

/// Which findings to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Event time at or after.
    pub since: Option<DateTime<Utc>>,
    /// Event time before.
    pub until: Option<DateTime<Utc>>,
    /// Only this detector.
    pub detector: Option<DetectorId>,
    /// Only this identity.
    pub identity: Option<String>,
    /// At least this severity.
    pub severity: Option<Severity>,
    /// Only this status.
    pub status: Option<Status>,
}

impl Query {
    /// True when `s` passes every filter.
    pub fn matches(&self, s: &Stored) -> bool {
        let f = &s.finding;
        self.since.is_none_or(|t| f.last_event_time >= t)
            && self.until.is_none_or(|t| f.event_time < t)
            && self.detector.is_none_or(|d| f.detector == d)
            && self.identity.as_ref().is_none_or(|i| &f.identity.id == i)
            && self.severity.is_none_or(|sev| f.severity >= sev)
            && self.status.is_none_or(|st| s.status_at(Utc::now()) == st)
    }
}

/// A journal line.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Entry {
    Finding { finding: Finding },
    Status { id: String, change: StatusChange },
}

struct Inner {
    /// By creation sequence.
    by_created: BTreeMap<u64, Stored>,
    /// Finding id → creation sequence.
    index: HashMap<String, u64>,
    next_seq: u64,
    evicted: u64,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The journal cannot be read or written (the outside world: disk).
    #[error("findings journal {}: {source}", path.display())]
    Journal {
        /// The journal.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No such finding (the caller's).
    #[error("no finding with id {0}")]
    NotFound(String),
}

/// The store.
pub struct FindingStore {
    inner: RwLock<Inner>,
    journal: Option<(PathBuf, Mutex<BufWriter<File>>)>,
    capacity: usize,
    tx: broadcast::Sender<StreamItem>,
    outbox: Option<Arc<Outbox>>,
}

impl FindingStore {
    /// An in-memory store (tests, `detect`).
    pub fn in_memory(capacity: usize) -> FindingStore {
        FindingStore {
            inner: RwLock::new(Inner {
                by_created: BTreeMap::new(),
                index: HashMap::new(),
                next_seq: 1,
                evicted: 0,
            }),
            journal: None,
            capacity: capacity.max(1),
            tx: broadcast::channel(1024).0,
            outbox: None,
        }
    }

    /// The findings and status history a journal holds, read only (for reports): the journal
    /// must exist, and nothing is written to it.
    pub fn read(path: &Path, capacity: usize) -> Result<FindingStore, StoreError> {
        if let Err(source) = std::fs::metadata(path) {
            return Err(StoreError::Journal {
                path: path.to_owned(),
                source,
            });
        }
        FindingStore::replay(path, capacity)
    }

    /// A store journaled to `path`, replaying what is there.
    pub fn open(path: &Path, capacity: usize) -> Result<FindingStore, StoreError> {
        let err = |source| StoreError::Journal {
            path: path.to_owned(),
            source,
        };
        let mut store = FindingStore::replay(path, capacity)?;
        let mut file = crate::private::append(path).map_err(err)?;
        // After a torn last line, start the next entry on a line of its own.
        let len = file.metadata().map_err(err)?.len();
        if len > 0 && std::fs::read(path).map_err(err)?.last() != Some(&b'\n') {
            file.write_all(b"\n").map_err(err)?;
        }
        store.journal = Some((path.to_owned(), Mutex::new(BufWriter::new(file))));
        Ok(store)
    }

    /// An in-memory store with what the journal at `path` holds (nothing when it is absent).
    fn replay(path: &Path, capacity: usize) -> Result<FindingStore, StoreError> {
        let err = |source| StoreError::Journal {
            path: path.to_owned(),
            source,
        };
        let store = FindingStore::in_memory(capacity);
        match File::open(path) {
            Ok(file) => {
                for (n, line) in BufReader::new(file).lines().enumerate() {
                    let line = line.map_err(err)?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Entry>(&line) {
                        Ok(Entry::Finding { mut finding }) => {
                            // Journals written before findings carried controls.
                            if finding.controls.is_empty() {
                                finding.controls = super::controls::of(finding.detector).to_vec();
                            }
                            store.apply_finding(finding);
                        }
                        Ok(Entry::Status { id, change }) => {
                            let _ = store.apply_status(&id, change);
                        }
                        // A torn last line after a crash: what came before it is intact.
                        Err(e) => {
                            tracing::warn!(line = n + 1, %e, path = %path.display(), "Skipped an unreadable findings journal line.")
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        Ok(store)
    }

    /// Hands every change that the delivery policy ([`crate::sink::delivers`]) selects to
    /// `outbox`, after it is journaled. Replaying the journal on open delivers nothing again.
    pub fn with_outbox(mut self, outbox: Arc<Outbox>) -> FindingStore {
        self.outbox = Some(outbox);
        self
    }

    fn deliver(&self, activity: Option<Activity>, stored: &Stored) {
        if let (Some(outbox), Some(activity)) = (&self.outbox, activity)
            && let Err(error) = outbox.append(activity, stored.finding.clone())
        {
            tracing::error!(%error, id = %stored.finding.id, "Could not queue a finding for delivery to the SIEM sinks.");
        }
    }

    fn write(&self, entry: &Entry) -> Result<(), StoreError> {
        let Some((path, journal)) = &self.journal else {
            return Ok(());
        };
        let err = |source| StoreError::Journal {
            path: path.clone(),
            source,
        };
        let mut w = journal.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_writer(&mut *w, entry).map_err(|e| err(e.into()))?;
        w.write_all(b"\n").map_err(err)?;
        w.flush().map_err(err)
    }

    /// Records a new or updated finding from the engine; returns its stored form.
    pub fn upsert(&self, finding: Finding, change: Change) -> Result<Stored, StoreError> {
        let entry = Entry::Finding { finding };
        self.write(&entry)?;
        let Entry::Finding { finding } = entry else {
            unreachable!("built above")
        };
        let (stored, reopened) = self.apply_finding(finding);
        let f = &stored.finding;
        self.deliver(crate::sink::delivers(change, f.count, reopened, f.status), &stored);
        let kind = if change == Change::New { "new" } else { "updated" };
        let _ = self.tx.send(StreamItem {
            change: kind,
            stored: stored.clone(),
        });
        Ok(stored)
    }

    /// Applies an engine change; true in the second place when it reopened a resolved finding.
    fn apply_finding(&self, mut finding: Finding) -> (Stored, bool) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some(&created) = inner.index.get(&finding.id)
            && let Some(existing) = inner.by_created.get_mut(&created)
        {
            // The engine does not know statuses: a fold keeps the analyst's status, except that
            // new activity on a resolved finding reopens it (recorded like any status change).
            if existing.finding.status == Status::Resolved && finding.count > existing.finding.count {
                existing.status_history.push(StatusChange {
                    status: Status::New,
                    by: "nhiwatch".into(),
                    at: finding.detected_at,
                    reason: format!(
                        "reopened: new activity at {} after it was resolved",
                        finding
                            .last_event_time
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    expires_at: None,
                });
                finding.status = Status::New;
                existing.finding = finding;
                existing.seq = seq;
                return (existing.clone(), true);
            }
            finding.status = existing.finding.status;
            existing.finding = finding;
            existing.seq = seq;
            return (existing.clone(), false);
        }
        let stored = Stored {
            created_seq: seq,
            seq,
            finding,
            status_history: Vec::new(),
        };
        inner.index.insert(stored.finding.id.clone(), seq);
        inner.by_created.insert(seq, stored.clone());
        while inner.by_created.len() > self.capacity {
            if let Some((_, old)) = inner.by_created.pop_first() {
                inner.index.remove(&old.finding.id);
                inner.evicted += 1;
            }
        }
        (stored, false)
    }

    /// Changes a finding's status, recording who, when and why.
    pub fn set_status(&self, id: &str, change: StatusChange) -> Result<Stored, StoreError> {
        if self.get(id).is_none() {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        let entry = Entry::Status {
            id: id.to_owned(),
            change,
        };
        self.write(&entry)?;
        let Entry::Status { change, .. } = entry else {
            unreachable!("built above")
        };
        let stored = self.apply_status(id, change)?;
        self.deliver(Some(Activity::of_status(stored.finding.status)), &stored);
        let _ = self.tx.send(StreamItem {
            change: "status",
            stored: stored.clone(),
        });
        Ok(stored)
    }

    fn apply_status(&self, id: &str, change: StatusChange) -> Result<Stored, StoreError> {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let seq = inner.next_seq;
        let created = *inner.index.get(id).ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        inner.next_seq += 1;
        let stored = inner
            .by_created
            .get_mut(&created)
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        stored.finding.status = change.status;
        stored.status_history.push(change);
        stored.seq = seq;
        Ok(stored.clone())
    }

    /// One finding.
    pub fn get(&self, id: &str) -> Option<Stored> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .index
            .get(id)
            .and_then(|c| inner.by_created.get(c))
            .cloned()
            .map(|s| s.settled(Utc::now()))
    }

    /// Up to `limit` findings matching `query`, newest created first, strictly older than the
    /// `before` cursor; and the cursor for the next page, when there may be one.
    pub fn list(&self, query: &Query, before: Option<u64>, limit: usize) -> (Vec<Stored>, Option<u64>) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let upper = before.unwrap_or(u64::MAX);
        let mut page: Vec<Stored> = inner
            .by_created
            .range(..upper)
            .rev()
            .map(|(_, s)| s)
            .filter(|s| query.matches(s))
            .take(limit + 1)
            .map(|s| s.clone().settled(Utc::now()))
            .collect();
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|s| s.created_seq)
        } else {
            None
        };
        (page, next)
    }

    /// Changes after sequence `after` (for a stream resumed with `Last-Event-ID`), oldest first.
    pub fn changes_since(&self, after: u64, query: &Query) -> Vec<Stored> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Stored> = inner
            .by_created
            .values()
            .filter(|s| s.seq > after && query.matches(s))
            .map(|s| s.clone().settled(Utc::now()))
            .collect();
        v.sort_by_key(|s| s.seq);
        v
    }

    /// Subscribes to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StreamItem> {
        self.tx.subscribe()
    }

    /// Findings held in memory.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).by_created.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Identity and severity of every open (new or acknowledged) finding.
    pub fn open_severities(&self) -> Vec<(String, Severity)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .by_created
            .values()
            .filter(|s| matches!(s.status_at(Utc::now()), Status::New | Status::Acknowledged))
            .map(|s| (s.finding.identity.id.clone(), s.finding.severity))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{IdentityRef, test_finding};

    fn finding(id: &str, minute: i64, severity: Severity) -> Finding {
        let t = DateTime::from_timestamp(1_767_571_200 + minute * 60, 0).expect("valid");
        let base = test_finding(id);
        Finding {
            detector: DetectorId::NewNetwork,
            severity,
            identity: IdentityRef {
                id: format!("app-{}", minute % 2),
                registered: true,
                ..base.identity.clone()
            },
            event_time: t,
            last_event_time: t,
            detected_at: t,
            ..base
        }
    }

    fn change(status: Status) -> StatusChange {
        StatusChange {
            status,
            by: "soc-admin".into(),
            at: DateTime::from_timestamp(1_800_000_000, 0).expect("valid"),
            reason: "triaged".into(),
            expires_at: None,
        }
    }

    #[test]
    fn pages_stay_stable_while_findings_arrive_and_change() {
        let store = FindingStore::in_memory(100);
        for i in 0..5 {
            store
                .upsert(finding(&format!("f{i}"), i, Severity::Medium), Change::New)
                .expect("stored");
        }
        let (page, next) = store.list(&Query::default(), None, 2);
        let ids: Vec<&str> = page.iter().map(|s| s.finding.id.as_str()).collect();
        assert_eq!(ids, ["f4", "f3"]);
        // A new finding and an update of f2 arrive between pages.
        store
            .upsert(finding("f5", 5, Severity::High), Change::New)
            .expect("stored");
        store
            .upsert(finding("f2", 2, Severity::High), Change::Escalated)
            .expect("stored");
        let (page, next) = store.list(&Query::default(), next, 2);
        let ids: Vec<&str> = page.iter().map(|s| s.finding.id.as_str()).collect();
        assert_eq!(ids, ["f2", "f1"]);
        assert_eq!(page[0].finding.severity, Severity::High);
        let (page, next) = store.list(&Query::default(), next, 2);
        assert_eq!(page.iter().map(|s| s.finding.id.as_str()).collect::<Vec<_>>(), ["f0"]);
        assert_eq!(next, None);
        let high = Query {
            severity: Some(Severity::High),
            ..Query::default()
        };
        let (page, _) = store.list(&high, None, 10);
        assert_eq!(
            page.iter().map(|s| s.finding.id.as_str()).collect::<Vec<_>>(),
            ["f5", "f2"]
        );
    }

    #[test]
    fn status_and_findings_survive_a_restart_and_a_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("findings.ndjson");
        {
            let store = FindingStore::open(&path, 10).expect("opens");
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("created").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "the journal is its owner's only");
            store
                .upsert(finding("a", 1, Severity::Low), Change::New)
                .expect("stored");
            store
                .upsert(finding("b", 2, Severity::Low), Change::New)
                .expect("stored");
            store.set_status("a", change(Status::Acknowledged)).expect("changed");
            assert!(matches!(
                store.set_status("zz", change(Status::Resolved)),
                Err(StoreError::NotFound(_))
            ));
            // A fold after the analyst acknowledged it keeps the status.
            let folded = store
                .upsert(finding("a", 1, Severity::High), Change::Escalated)
                .expect("stored");
            assert_eq!(folded.finding.status, Status::Acknowledged);
            // New activity on a resolved finding reopens it.
            store.set_status("b", change(Status::Resolved)).expect("resolved");
            let mut again = finding("b", 2, Severity::Low);
            again.count = 2;
            let reopened = store.upsert(again, Change::Folded).expect("stored");
            assert_eq!(reopened.finding.status, Status::New);
            assert_eq!(reopened.status_history.last().map(|c| c.by.as_str()), Some("nhiwatch"));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"type\":\"finding\",\"find"))
            .expect("append");
        let store = FindingStore::open(&path, 10).expect("reopens");
        store
            .upsert(finding("c", 3, Severity::Low), Change::New)
            .expect("stored after the torn line");
        let store = FindingStore::open(&path, 10).expect("reopens again");
        assert!(store.get("c").is_some());
        let a = store.get("a").expect("a survives");
        assert_eq!(
            (a.finding.status, a.finding.severity),
            (Status::Acknowledged, Severity::High)
        );
        assert_eq!(a.status_history, vec![change(Status::Acknowledged)]);
        assert_eq!(store.len(), 3);
        assert_eq!(store.changes_since(0, &Query::default()).len(), 3);
    }

    #[test]
    fn a_suppression_lapses_at_its_expiry() {
        let store = FindingStore::in_memory(10);
        store
            .upsert(finding("a", 1, Severity::Low), Change::New)
            .expect("stored");
        let until = |secs: i64| StatusChange {
            expires_at: Some(Utc::now() + chrono::Duration::seconds(secs)),
            ..change(Status::Suppressed)
        };
        store.set_status("a", until(3600)).expect("suppressed");
        assert_eq!(store.get("a").expect("a").finding.status, Status::Suppressed);
        assert!(store.open_severities().is_empty());
        store
            .set_status("a", until(-1))
            .expect("suppressed until a past instant");
        assert_eq!(store.get("a").expect("a").finding.status, Status::New);
        let open = Query {
            status: Some(Status::New),
            ..Query::default()
        };
        assert_eq!(store.list(&open, None, 10).0.len(), 1);
        assert_eq!(store.open_severities().len(), 1);
    }

    #[test]
    fn the_live_set_is_bounded() {
        let store = FindingStore::in_memory(3);
        for i in 0..5 {
            store
                .upsert(finding(&format!("f{i}"), i, Severity::Low), Change::New)
                .expect("stored");
        }
        assert_eq!(store.len(), 3);
        assert!(store.get("f0").is_none());
        assert!(store.get("f4").is_some());
    }
}
