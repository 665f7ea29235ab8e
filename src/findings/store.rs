//! The findings store: the live set in memory, bounded, made durable by an append-only NDJSON
//! journal, with a sequence number per change for cursors and the live stream.
//!
//! Every new or updated finding and every status change is one journal line, written before
//! the change is visible; on start the journal is replayed (the last state of each finding wins),
//! so findings and their status history survive a restart. The in-memory set keeps at most
//! `capacity` findings: past it, resolved findings go first, then the oldest by creation; what
//! goes stays in the journal (and, with the archive, in Parquet). Listing is newest-created first, and a cursor is the creation sequence of the last
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

/// Where the changes the delivery policy selects go on to the SIEMs: the durable outbox
/// ([`crate::sink::outbox::Outbox`]) implements it, so the store depends on no sink.
pub trait Deliver: Send + Sync {
    /// Queues `finding` as `activity`; an error is logged by the store (the finding stays in the
    /// journal and the API).
    fn deliver(&self, activity: Activity, finding: Finding) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Whether a change the engine made is delivered, and as which activity. `reopened` is true
/// when the change reopened a resolved finding.
pub fn delivers(change: Change, count: u64, reopened: bool, status: Status) -> Option<Activity> {
    match change {
        Change::New | Change::Escalated => Some(Activity::of(change, status)),
        Change::Folded if reopened || count.is_power_of_two() => Some(Activity::Update),
        Change::Folded => None,
    }
}

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
    /// The ids of the occurrences the engine raised that this finding aggregates (its own id
    /// first), each with the hits already counted from it.
    #[serde(skip)]
    occurrences: Vec<(String, u64)>,
    /// The count and last event time of the latest change handed to the sinks.
    #[serde(skip)]
    delivered: Option<(u64, DateTime<Utc>)>,
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
    /// Finding id, and the id of every occurrence a finding aggregates → creation sequence.
    index: HashMap<String, u64>,
    /// The finding not resolved of each detector × identity × cause → creation sequence.
    open: HashMap<Key, u64>,
    next_seq: u64,
    evicted: u64,
}

type Key = (DetectorId, String, Option<String>);

fn key_of(f: &Finding) -> Key {
    (f.detector, f.identity.id.clone(), f.cause.clone())
}

/// How a finding changed with an occurrence, and whether the sinks get it.
struct Applied {
    stored: Stored,
    change: Change,
    activity: Option<Activity>,
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
    delivery: Option<Arc<dyn Deliver>>,
    /// Per detector, the least event time between two deliveries of updates (its
    /// `suppress_minutes`).
    quiet: HashMap<DetectorId, chrono::Duration>,
    /// Held from journaling a change to applying and delivering it, so that the journal's order
    /// is the order of the changes (the engine's thread and the API's status changes both write):
    /// a restart replays the same state.
    serial: Mutex<()>,
}

impl FindingStore {
    /// An in-memory store (tests, `detect`).
    pub fn in_memory(capacity: usize) -> FindingStore {
        FindingStore {
            inner: RwLock::new(Inner {
                by_created: BTreeMap::new(),
                index: HashMap::new(),
                open: HashMap::new(),
                next_seq: 1,
                evicted: 0,
            }),
            journal: None,
            capacity: capacity.max(1),
            tx: broadcast::channel(1024).0,
            delivery: None,
            quiet: HashMap::new(),
            serial: Mutex::new(()),
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
        FindingStore::replay(path, capacity, HashMap::new())
    }

    /// A store journaled to `path`, replaying what is there.
    pub fn open(path: &Path, capacity: usize) -> Result<FindingStore, StoreError> {
        FindingStore::open_quiet(path, capacity, HashMap::new())
    }

    /// As [`FindingStore::open`], with each detector's quiet period between deliveries of
    /// updates ([`FindingStore::with_quiet`]).
    pub fn open_quiet(
        path: &Path,
        capacity: usize,
        quiet: HashMap<DetectorId, chrono::Duration>,
    ) -> Result<FindingStore, StoreError> {
        let err = |source| StoreError::Journal {
            path: path.to_owned(),
            source,
        };
        let mut store = FindingStore::replay(path, capacity, quiet)?;
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
    fn replay(
        path: &Path,
        capacity: usize,
        quiet: HashMap<DetectorId, chrono::Duration>,
    ) -> Result<FindingStore, StoreError> {
        let err = |source| StoreError::Journal {
            path: path.to_owned(),
            source,
        };
        let store = FindingStore::in_memory(capacity).with_quiet(quiet);
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
                            let _ = store.apply_finding(finding);
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
    pub fn with_outbox(mut self, outbox: Arc<impl Deliver + 'static>) -> FindingStore {
        self.delivery = Some(outbox);
        self
    }

    /// Sets each detector's quiet period: an update of an open finding is delivered only when
    /// this much event time has passed since the previous delivery (new findings, escalations
    /// and reopenings are delivered at once). For a journaled store, give them to
    /// [`FindingStore::open_quiet`] instead, so that the journal is replayed under them.
    pub fn with_quiet(mut self, quiet: HashMap<DetectorId, chrono::Duration>) -> FindingStore {
        self.quiet = quiet;
        self
    }

    fn deliver(&self, activity: Option<Activity>, stored: &Stored) {
        if let (Some(delivery), Some(activity)) = (&self.delivery, activity)
            && let Err(error) = delivery.deliver(activity, stored.finding.clone())
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

    /// Records an occurrence the engine raised or updated; returns the finding it is part of.
    ///
    /// Aggregation (one finding per standing problem, as GuardDuty aggregates repeats into the
    /// open finding): an occurrence of a detector × identity × cause whose finding is not
    /// resolved is absorbed into it — count, last event, evidence, severity when higher —
    /// however long ago that finding was opened. A resolved finding's own occurrence reopens it;
    /// another occurrence of its key opens a new finding. What the sinks get follows the
    /// finding's change ([`delivers`] and the quiet period). Returns the finding and
    /// how it changed.
    pub fn upsert(&self, finding: Finding) -> Result<(Stored, Change), StoreError> {
        let _serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let entry = Entry::Finding { finding };
        self.write(&entry)?;
        let Entry::Finding { finding } = entry else {
            unreachable!("built above")
        };
        let applied = self.apply_finding(finding);
        self.deliver(applied.activity, &applied.stored);
        let kind = if applied.change == Change::New {
            "new"
        } else {
            "updated"
        };
        let _ = self.tx.send(StreamItem {
            change: kind,
            stored: applied.stored.clone(),
        });
        Ok((applied.stored, applied.change))
    }

    /// Applies an occurrence (see [`FindingStore::upsert`]).
    fn apply_finding(&self, mut finding: Finding) -> Applied {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let known = inner.index.get(&finding.id).copied();
        let open = inner.open.get(&key_of(&finding)).copied();
        let target = known.or(open.filter(|c| {
            inner
                .by_created
                .get(c)
                .is_some_and(|s| s.finding.status != Status::Resolved)
        }));
        if let Some(created) = target
            && known.is_none()
        {
            // Absorbed: its id finds the finding it is part of.
            inner.index.insert(finding.id.clone(), created);
        }
        if let Some(created) = target
            && let Some(existing) = inner.by_created.get_mut(&created)
        {
            let before = existing.finding.severity;
            let counted = match existing.occurrences.iter_mut().find(|(id, _)| *id == finding.id) {
                Some((_, counted)) => counted,
                None => {
                    existing.occurrences.push((finding.id.clone(), 0));
                    &mut existing.occurrences.last_mut().expect("pushed").1
                }
            };
            let added = finding.count.saturating_sub(*counted);
            *counted = (*counted).max(finding.count);
            // New activity on a resolved finding reopens it (recorded like any status change).
            let reopened = existing.finding.status == Status::Resolved && added > 0;
            if reopened {
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
                existing.finding.status = Status::New;
            }
            if existing.occurrences.len() == 1 {
                // Its own occurrence: the engine's latest state, with the analyst's status; an
                // older state of it (re-sent after a restart from an older checkpoint) changes
                // nothing.
                if added > 0 || finding.count >= existing.finding.count {
                    finding.status = existing.finding.status;
                    existing.finding = finding;
                }
            } else {
                let occurrence = finding;
                existing.finding.absorb(&occurrence, added);
            }
            existing.seq = seq;
            let change = if existing.finding.severity > before {
                Change::Escalated
            } else {
                Change::Folded
            };
            let activity = self.delivery(existing, change, reopened);
            let stored = existing.clone();
            if reopened {
                inner.open.entry(key_of(&stored.finding)).or_insert(created);
            }
            return Applied {
                stored,
                change,
                activity,
            };
        }
        let mut stored = Stored {
            created_seq: seq,
            seq,
            occurrences: vec![(finding.id.clone(), finding.count)],
            finding,
            status_history: Vec::new(),
            delivered: None,
        };
        let activity = self.delivery(&mut stored, Change::New, false);
        inner.index.insert(stored.finding.id.clone(), seq);
        inner.open.insert(key_of(&stored.finding), seq);
        inner.by_created.insert(seq, stored.clone());
        // Past capacity the oldest resolved finding goes first: a standing problem's finding is
        // old by creation but alive, and evicting it would lose the analyst's status (its next
        // occurrence would open a new finding). New findings are rare next to events, so the
        // scan for a resolved one is cheap enough.
        while inner.by_created.len() > self.capacity {
            let victim = inner
                .by_created
                .iter()
                .find(|(_, s)| s.finding.status == Status::Resolved)
                .map(|(c, _)| *c)
                .or_else(|| inner.by_created.keys().next().copied());
            let Some(old) = victim.and_then(|c| inner.by_created.remove(&c)) else {
                break;
            };
            for (id, _) in &old.occurrences {
                inner.index.remove(id);
            }
            let key = key_of(&old.finding);
            if inner.open.get(&key) == Some(&old.created_seq) {
                inner.open.remove(&key);
            }
            inner.evicted += 1;
        }
        Applied {
            stored,
            change: Change::New,
            activity,
        }
    }

    /// Whether the sinks get this change of `stored` ([`delivers`]), held back by
    /// the detector's quiet period for updates; records what was delivered.
    fn delivery(&self, stored: &mut Stored, change: Change, reopened: bool) -> Option<Activity> {
        let f = &stored.finding;
        let quiet = self
            .quiet
            .get(&f.detector)
            .copied()
            .unwrap_or_else(chrono::Duration::zero);
        let activity = match (change, stored.delivered) {
            (Change::Folded, Some((count, at))) if !reopened => {
                // A power of two reached since the last delivery, as `delivers` has it for
                // single steps, and the quiet period over.
                let power = 1u64 << (63 - f.count.leading_zeros().min(63));
                (power > count && f.last_event_time - at >= quiet).then_some(Activity::Update)
            }
            _ => delivers(change, f.count, reopened, f.status),
        };
        if activity.is_some() {
            stored.delivered = Some((f.count, f.last_event_time));
        }
        activity
    }

    /// Changes a finding's status, recording who, when and why.
    pub fn set_status(&self, id: &str, change: StatusChange) -> Result<Stored, StoreError> {
        let _serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
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
        let stored = stored.clone();
        let key = key_of(&stored.finding);
        if stored.finding.status == Status::Resolved {
            // The next occurrence of its key opens a new finding.
            if inner.open.get(&key) == Some(&created) {
                inner.open.remove(&key);
            }
        } else {
            inner.open.entry(key).or_insert(created);
        }
        Ok(stored)
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

    /// Findings matching `query`, most severe first, newest created first within a severity:
    /// those after `after` (the last `(severity, created_seq)` of the previous page) and the
    /// key to continue from. Findings arriving between pages do not shift the later ones; one
    /// whose severity rises between pages may be seen twice.
    pub fn list_by_severity(
        &self,
        query: &Query,
        after: Option<(Severity, u64)>,
        limit: usize,
    ) -> (Vec<Stored>, Option<(Severity, u64)>) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let key = |s: &Stored| (s.finding.severity, s.created_seq);
        let mut all: Vec<&Stored> = inner
            .by_created
            .values()
            .filter(|s| query.matches(s) && after.is_none_or(|a| key(s) < a))
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse(key(s)));
        let next = (limit > 0 && all.len() > limit).then(|| key(all[limit - 1]));
        let page = all
            .into_iter()
            .take(limit)
            .map(|s| s.clone().settled(Utc::now()))
            .collect();
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
            // A problem of its own (the network), unless a test says otherwise.
            cause: Some(format!("10.{minute}.0.0/16")),
            ..base
        }
    }

    /// An occurrence of the offboarded integration `svc` still acting, as the engine raises one
    /// each time its `suppress_minutes` lapse: first seen in `week`, `count` hits so far.
    fn occurrence(week: i64, count: u64, severity: Severity) -> Finding {
        let t = DateTime::from_timestamp(1_767_571_200 + week * 7 * 86_400, 0).expect("valid");
        let base = test_finding(&format!("occurrence-{week}"));
        Finding {
            detector: DetectorId::AccessAfterOffboarding,
            severity,
            identity: IdentityRef {
                id: "svc".into(),
                registered: true,
                ..base.identity.clone()
            },
            event_time: t,
            last_event_time: t + chrono::Duration::hours(count as i64),
            detected_at: t,
            count,
            evidence: (0..count.min(10))
                .map(|i| crate::findings::Evidence {
                    event_id: format!("w{week}-e{i}"),
                    time: t,
                    format: crate::event::SourceFormat::GatewayAccess,
                    source: None,
                })
                .collect(),
            cause: None,
            ..base
        }
    }

    #[test]
    fn a_standing_problem_is_one_finding_with_its_count_until_it_is_resolved() {
        let store = FindingStore::in_memory(100);
        // Four weekly occurrences (the engine's window of a day lapses between them), each
        // growing as the engine folds hits into it.
        let (first, change) = store.upsert(occurrence(0, 1, Severity::High)).expect("stored");
        assert_eq!(change, Change::New);
        for (week, counts) in [(0, vec![2, 3]), (1, vec![1, 2]), (2, vec![1]), (3, vec![1, 2, 3, 4])] {
            for c in counts {
                let (s, change) = store.upsert(occurrence(week, c, Severity::High)).expect("stored");
                assert_eq!(
                    (change, s.finding.id.as_str()),
                    (Change::Folded, first.finding.id.as_str())
                );
            }
        }
        let all = store.list(&Query::default(), None, 10).0;
        assert_eq!(all.len(), 1, "one finding for the standing problem");
        let f = &all[0].finding;
        // 3 + 2 + 1 + 4 hits over four weeks.
        assert_eq!(f.count, 10);
        assert_eq!(f.event_time, occurrence(0, 1, Severity::High).event_time);
        assert_eq!(f.last_event_time, occurrence(3, 4, Severity::High).last_event_time);
        // Evidence: the first five and the latest five.
        let ids: Vec<&str> = f.evidence.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "w0-e0", "w0-e1", "w0-e2", "w1-e0", "w1-e1", "w2-e0", "w3-e0", "w3-e1", "w3-e2", "w3-e3"
            ]
        );
        // Any occurrence's id finds it.
        assert_eq!(
            store.get("occurrence-2").map(|s| s.finding.id),
            Some(first.finding.id.clone())
        );

        // Escalation: the same finding, more severe, with the new wording; past ten pieces of
        // evidence the oldest of the latest half gives way.
        let mut worse = occurrence(4, 1, Severity::Critical);
        worse.title = "worse".into();
        let (s, change) = store.upsert(worse).expect("stored");
        assert_eq!(
            (change, s.finding.severity, s.finding.title.as_str()),
            (Change::Escalated, Severity::Critical, "worse")
        );
        let ids: Vec<&str> = s.finding.evidence.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "w0-e0", "w0-e1", "w0-e2", "w1-e0", "w1-e1", "w3-e0", "w3-e1", "w3-e2", "w3-e3", "w4-e0"
            ]
        );

        // Resolved: the next occurrence of the problem is a new finding...
        store
            .set_status(&first.finding.id, change_to(Status::Resolved))
            .expect("resolved");
        let (again, change) = store.upsert(occurrence(6, 1, Severity::High)).expect("stored");
        assert_eq!(change, Change::New);
        assert_ne!(again.finding.id, first.finding.id);
        // ... while new activity of an occurrence it holds reopens it, as before.
        let (reopened, change) = store.upsert(occurrence(4, 2, Severity::Critical)).expect("stored");
        assert_eq!(
            (reopened.finding.id.as_str(), change, reopened.finding.status),
            (first.finding.id.as_str(), Change::Folded, Status::New)
        );
        assert_eq!(reopened.finding.count, 12);
        assert_eq!(store.list(&Query::default(), None, 10).0.len(), 2);
    }

    #[test]
    fn different_causes_are_different_findings() {
        let store = FindingStore::in_memory(100);
        let mut a = finding("a", 0, Severity::Medium);
        a.identity.id = "svc".into();
        let mut b = finding("b", 2, Severity::Medium);
        b.identity.id = "svc".into();
        let mut c = finding("c", 4, Severity::Medium);
        c.identity.id = "svc".into();
        c.cause.clone_from(&a.cause);
        assert_eq!(store.upsert(a).expect("a").1, Change::New);
        assert_eq!(store.upsert(b).expect("b").1, Change::New);
        let (s, change) = store.upsert(c).expect("c");
        assert_eq!((s.finding.id.as_str(), change), ("a", Change::Folded));
    }

    #[test]
    fn updates_of_an_open_finding_reach_the_sinks_at_powers_of_two_after_the_quiet_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = crate::sink::outbox::Limits {
            max_bytes: 1 << 20,
            segment_bytes: 1 << 16,
        };
        let outbox = Arc::new(crate::sink::outbox::Outbox::open(dir.path(), limits).expect("outbox"));
        let quiet = HashMap::from([(DetectorId::AccessAfterOffboarding, chrono::Duration::days(3))]);
        let store = FindingStore::in_memory(100)
            .with_quiet(quiet)
            .with_outbox(Arc::clone(&outbox));
        let delivered = || outbox.head();
        store.upsert(occurrence(0, 1, Severity::High)).expect("new");
        assert_eq!(delivered(), 1, "a new finding at once");
        // Count 2 within the quiet period (an hour later): held back.
        store.upsert(occurrence(0, 2, Severity::High)).expect("2");
        assert_eq!(delivered(), 1);
        // A week later (count 3, then 4): the power of two passed since the last delivery and
        // the quiet period is over.
        store.upsert(occurrence(1, 1, Severity::High)).expect("3");
        assert_eq!(delivered(), 2);
        store.upsert(occurrence(1, 2, Severity::High)).expect("4");
        assert_eq!(delivered(), 2, "4 is a power of two, but within the quiet period");
        // An escalation at once.
        store.upsert(occurrence(1, 3, Severity::Critical)).expect("escalated");
        assert_eq!(delivered(), 3);
    }

    #[test]
    fn the_journal_rebuilds_the_same_aggregation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("findings.ndjson");
        let before = {
            let store = FindingStore::open(&path, 100).expect("open");
            store.upsert(occurrence(0, 2, Severity::High)).expect("0");
            store.upsert(occurrence(1, 3, Severity::High)).expect("1");
            let (s, _) = store.upsert(occurrence(2, 1, Severity::High)).expect("2");
            store
                .set_status(&s.finding.id, change_to(Status::Resolved))
                .expect("resolved");
            store.upsert(occurrence(3, 1, Severity::High)).expect("3");
            store.list(&Query::default(), None, 10).0
        };
        let after = FindingStore::open(&path, 100)
            .expect("reopen")
            .list(&Query::default(), None, 10)
            .0;
        assert_eq!(after.len(), 2);
        let counts = |v: &[Stored]| {
            v.iter()
                .map(|s| (s.finding.id.clone(), s.finding.count, s.finding.status))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&after), counts(&before));
        assert_eq!(counts(&after)[1].1, 6);
    }

    fn change_to(status: Status) -> StatusChange {
        change(status)
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
                .upsert(finding(&format!("f{i}"), i, Severity::Medium))
                .expect("stored");
        }
        let (page, next) = store.list(&Query::default(), None, 2);
        let ids: Vec<&str> = page.iter().map(|s| s.finding.id.as_str()).collect();
        assert_eq!(ids, ["f4", "f3"]);
        // A new finding and an update of f2 arrive between pages.
        store.upsert(finding("f5", 5, Severity::High)).expect("stored");
        store.upsert(finding("f2", 2, Severity::High)).expect("stored");
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
            store.upsert(finding("a", 1, Severity::Low)).expect("stored");
            store.upsert(finding("b", 2, Severity::Low)).expect("stored");
            store.set_status("a", change(Status::Acknowledged)).expect("changed");
            assert!(matches!(
                store.set_status("zz", change(Status::Resolved)),
                Err(StoreError::NotFound(_))
            ));
            // A fold after the analyst acknowledged it keeps the status.
            let folded = store.upsert(finding("a", 1, Severity::High)).expect("stored");
            assert_eq!(folded.0.finding.status, Status::Acknowledged);
            // New activity on a resolved finding reopens it.
            store.set_status("b", change(Status::Resolved)).expect("resolved");
            let mut again = finding("b", 2, Severity::Low);
            again.count = 2;
            let reopened = store.upsert(again).expect("stored");
            assert_eq!(reopened.0.finding.status, Status::New);
            assert_eq!(
                reopened.0.status_history.last().map(|c| c.by.as_str()),
                Some("nhiwatch")
            );
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"type\":\"finding\",\"find"))
            .expect("append");
        let store = FindingStore::open(&path, 10).expect("reopens");
        store
            .upsert(finding("c", 3, Severity::Low))
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
        store.upsert(finding("a", 1, Severity::Low)).expect("stored");
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
                .upsert(finding(&format!("f{i}"), i, Severity::Low))
                .expect("stored");
        }
        assert_eq!(store.len(), 3);
        assert!(store.get("f0").is_none());
        assert!(store.get("f4").is_some());
    }

    #[test]
    fn past_capacity_resolved_findings_go_before_open_ones() {
        let store = FindingStore::in_memory(3);
        for i in 0..3 {
            store
                .upsert(finding(&format!("f{i}"), i, Severity::Low))
                .expect("stored");
        }
        // f0 is the oldest but open (acknowledged); f1 is resolved.
        store.set_status("f0", change(Status::Acknowledged)).expect("ack");
        store.set_status("f1", change(Status::Resolved)).expect("resolved");
        store.upsert(finding("f3", 3, Severity::Low)).expect("stored");
        assert_eq!(store.len(), 3);
        assert!(store.get("f1").is_none(), "the resolved one went");
        assert_eq!(store.get("f0").map(|s| s.finding.status), Some(Status::Acknowledged));
        // With none resolved, the oldest goes.
        store.upsert(finding("f4", 4, Severity::Low)).expect("stored");
        assert!(store.get("f0").is_none());
        assert!(store.get("f2").is_some() && store.get("f4").is_some());
    }
}
