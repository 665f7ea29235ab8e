//! The detection engine: events in, findings out, deterministic in event time.
//!
//! For each event of a non-human identity the engine resolves the identity through the registry
//! (aliases map to one canonical id), advances that identity's counting windows, runs every
//! detector on (state, registry entry, event), learns from the event, and folds the hits into
//! findings. [`Reorder`] puts events that arrive slightly out of order back in event-time order
//! before they reach the engine, and the engine drops a repeat of a record it already judged
//! ([`Dedupe`]) before anything counts it. The engine does no I/O: callers hand results on.
//!
//! What it keeps is made durable beside it: [`state`] is a checkpoint's payload (baselines,
//! open findings, events waiting for order, clocks) and its store, [`checkpoint`] the container
//! format that seals it.

pub mod checkpoint;
mod dedupe;
pub mod state;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::baseline::{self, Baseline, secs};
use crate::detect::{Cx, Detectors};
use crate::event::{Event, EventKind, SourceFormat};
use crate::findings::{Change, DetectorId, Finding, Folder, Hit, IdentityRef, Update};
use crate::registry::Registry;

pub use dedupe::{Dedupe, DedupeState};

/// `[engine]`
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Identity registry file; empty for none.
    pub registry: std::path::PathBuf,
    /// Directory of `<detector>.toml` files; empty for the built-in defaults.
    pub detectors: std::path::PathBuf,
    /// Days of event time an identity is observed before baseline detectors judge it.
    pub learning_days: u32,
    /// Events an identity must have shown before baseline detectors judge it.
    pub learning_events: u32,
    /// Identities unseen this many days are forgotten.
    pub retention_days: u32,
    /// How far out of event-time order an event may arrive and still be put in order.
    pub lateness_seconds: u32,
    /// Most events waiting for order.
    pub max_waiting_events: usize,
    /// Seconds of event time a source record id is remembered, to drop a repeat of the record;
    /// 0 keeps none.
    pub dedupe_window_seconds: u32,
    /// Most record ids remembered (the oldest is forgotten past it); 0 keeps none.
    pub dedupe_max_ids: usize,
}

impl EngineConfig {
    /// `lateness_seconds` as the reorder buffer takes it.
    pub fn lateness(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::from(self.lateness_seconds))
    }
}

/// Counts of what the engine did.
#[derive(Debug, Default, Clone)]
pub struct EngineStats {
    /// Events looked at.
    pub events: u64,
    /// Events of people (interactive sign-ins, user actors), not judged.
    pub human: u64,
    /// Events whose source names no actor ([`crate::event::UNIDENTIFIED`]: a GCP entry with an
    /// empty `authenticationInfo`, an Okta event whose only actor is an IP address), not judged:
    /// there is no identity to hold a baseline for.
    pub unattributed: u64,
    /// New findings per detector.
    pub findings: BTreeMap<DetectorId, u64>,
    /// Escalations of open findings.
    pub escalations: u64,
    /// Identities forgotten after the retention horizon.
    pub evicted: u64,
    /// Repeats of a record already judged, dropped, per source format (in the order of
    /// [`SourceFormat::ALL`]).
    pub duplicates: [u64; SourceFormat::ALL.len()],
}

impl EngineStats {
    /// Repeats dropped, all formats.
    pub fn duplicates_total(&self) -> u64 {
        self.duplicates.iter().sum()
    }

    /// Repeats dropped, per format.
    pub fn duplicates_by_format(&self) -> impl Iterator<Item = (SourceFormat, u64)> + '_ {
        SourceFormat::ALL.iter().copied().zip(self.duplicates.iter().copied())
    }
}

/// The engine.
pub struct Engine {
    detectors: Detectors,
    registry: Option<Arc<Registry>>,
    baseline: Arc<Baseline>,
    folder: Folder,
    hits: Vec<Hit>,
    watermark: i64,
    /// Event time of the last eviction sweep.
    last_sweep: Option<i64>,
    /// Event time of the last expiry of open findings.
    last_expire: Option<i64>,
    dedupe: Dedupe,
    stats: EngineStats,
}

impl Engine {
    /// Its detectors.
    pub fn detectors(&self) -> &Detectors {
        &self.detectors
    }

    /// An engine with these detectors, an optional registry and learning settings.
    pub fn new(detectors: Detectors, registry: Option<Registry>, settings: baseline::Settings) -> Engine {
        Engine {
            detectors,
            registry: registry.map(Arc::new),
            baseline: Arc::new(Baseline::new(settings)),
            folder: Folder::default(),
            hits: Vec::new(),
            watermark: i64::MIN,
            last_sweep: None,
            last_expire: None,
            dedupe: Dedupe::default(),
            stats: EngineStats::default(),
        }
    }

    /// The engine dropping repeats as `dedupe` says (`engine.dedupe_window_seconds`,
    /// `engine.dedupe_max_ids`).
    pub fn with_dedupe(mut self, dedupe: Dedupe) -> Engine {
        self.dedupe = dedupe;
        self
    }

    /// The engine with `baseline` as its per-identity state (restored from a checkpoint, before
    /// the state is shared with the inventory).
    pub fn with_baseline(mut self, baseline: Baseline) -> Engine {
        self.baseline = Arc::new(baseline);
        self
    }

    /// A new engine configured as this one (detectors, registry, learning), with no state.
    pub fn sibling(&self) -> Engine {
        Engine {
            registry: self.registry.clone(),
            dedupe: self.dedupe.emptied(),
            ..Engine::new(self.detectors.clone(), None, self.baseline.settings())
        }
    }

    /// The per-identity state (shared, for the inventory).
    pub fn baseline(&self) -> &Arc<Baseline> {
        &self.baseline
    }

    /// The registry, if configured.
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.registry.as_ref()
    }

    /// Findings open for folding.
    pub fn open_findings(&self) -> usize {
        self.folder.len()
    }

    /// Counts so far.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Record ids remembered to drop repeats, and how many were forgotten early to stay within
    /// `engine.dedupe_max_ids`.
    pub fn dedupe(&self) -> &Dedupe {
        &self.dedupe
    }

    /// Puts the registry's canonical id in `event.identity` when the registry resolves the
    /// source's id (by id or alias) to a different one, keeping the source's in
    /// `source_identity`; done before an event is archived, so the archive and every query over
    /// it see one identity under one id, and a replay judges it exactly as the live run did.
    pub fn canonicalize(&self, event: &mut Event) {
        if event.source_identity.is_some() {
            return;
        }
        if let Some(entry) = self.registry.as_deref().and_then(|r| r.resolve(&event.identity))
            && entry.id != event.identity
        {
            event.source_identity = Some(std::mem::replace(&mut event.identity, entry.id.clone()));
        }
    }

    /// Judges one event; new and updated findings are appended to `out`. `detected_at` is the
    /// wall clock in a live run and the event time offline, so offline output is reproducible.
    /// A repeat of a record judged within the dedupe window is counted and dropped here, before
    /// the baseline or any detector sees it.
    pub fn process(&mut self, event: &Event, detected_at: DateTime<Utc>, out: &mut Vec<Update>) {
        self.stats.events += 1;
        if !event.identity_type.is_non_human() || event.kind == EventKind::SignIn {
            self.stats.human += 1;
            return;
        }
        if event.identity == crate::event::UNIDENTIFIED {
            self.stats.unattributed += 1;
            return;
        }
        if self.dedupe.repeat(event) {
            if let Some(i) = SourceFormat::ALL.iter().position(|f| *f == event.format) {
                self.stats.duplicates[i] += 1;
            }
            return;
        }
        let t = secs(event.time);
        let entry = self.registry.as_deref().and_then(|r| r.resolve(&event.identity));
        let id = entry.map_or(event.identity.as_str(), |e| e.id.as_str());
        let settings = self.baseline.settings();
        let mut state = self.baseline.get_mut_or_new(id, t);
        let established = state.established(&settings, t);
        state.observe(event, established);
        let cx = Cx {
            event,
            now: t,
            established,
            state: &state,
            has_registry: self.registry.is_some(),
            entry,
            learning: &settings,
            id,
            open: &self.folder,
        };
        self.detectors.check(&cx, &mut self.hits);
        state.learn(event, &self.baseline);
        let name = state.name.clone();
        drop(state);
        if !self.hits.is_empty() {
            let who = IdentityRef {
                id: id.to_owned(),
                name: entry.and_then(|e| e.name.clone()).or(name.map(String::from)),
                owner: entry.and_then(|e| e.owner.clone()),
                registered: entry.is_some(),
            };
            for hit in self.hits.drain(..) {
                let update = self.folder.fold(hit, &who, event, detected_at);
                match update.change {
                    Change::New => *self.stats.findings.entry(update.finding.detector).or_default() += 1,
                    Change::Escalated => self.stats.escalations += 1,
                    Change::Folded => {}
                }
                out.push(update);
            }
        }
        self.watermark = self.watermark.max(t);
        let since = |last: Option<i64>| last.map_or(i64::MAX, |last| self.watermark - last);
        if since(self.last_expire) >= 3600 {
            if let Some(now) = DateTime::from_timestamp(self.watermark, 0) {
                self.folder.expire(now, Duration::days(7));
            }
            self.last_expire = Some(self.watermark);
        }
        if since(self.last_sweep) >= 86_400 {
            self.stats.evicted += self.baseline.evict(self.watermark) as u64;
            self.last_sweep = Some(self.watermark);
        }
    }
}

/// Puts events back in event-time order within a bounded lateness.
///
/// Events wait in a min-heap until the watermark is `lateness` past them, then are released in
/// time order (ties in event-id order, then arrival). An event older than what was already
/// released is released at once, flagged late and counted: never dropped. At most `limit`
/// events wait: past it the oldest is released before its lateness has passed (counted as
/// `early`), so a high rate under a long lateness bounds memory instead of growing it.
///
/// # Watermark: per source, the slowest decides
///
/// Without sources ([`Reorder::assign`]) the watermark is the newest event time seen, as for a
/// file read in order. A Kafka consumer tracks every partition it is assigned, and then the
/// watermark is the *oldest* of the newest times of the partitions still being read (Flink's
/// per-split watermarks, Kafka Streams' timestamp synchronisation): a partition fetched ahead
/// of the others makes nothing late, it waits for them; a partition assigned but not yet read
/// holds everything back until its first record. A partition at its end, or silent while the
/// others deliver, is marked idle by the consumer ([`Reorder::set_idle`]) and stops holding the
/// others back; when every partition is idle the newest time seen decides, as without sources.
/// So the order events are judged in, and which of them are late, no longer depends on how the
/// partitions' fetches interleave: a late event is one that arrived late in its own partition.
/// The newest time of each partition is kept in a checkpoint, so a restart releases exactly as
/// the run it continues would have.
#[derive(Debug)]
pub struct Reorder {
    heap: BinaryHeap<Reverse<Pending>>,
    lateness: Duration,
    max_seen: Option<DateTime<Utc>>,
    released: Option<DateTime<Utc>>,
    seq: u64,
    late: u64,
    limit: usize,
    early: u64,
    sources: Sources,
}

/// The partitions an event comes from, each with the newest event time read from it.
#[derive(Debug, Default)]
struct Sources {
    by_topic: HashMap<String, HashMap<i32, Clock>>,
    /// The watermark before lateness, while it is known not to have changed.
    frontier: Option<Frontier>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    newest: Option<DateTime<Utc>>,
    idle: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Frontier {
    /// A partition being read has not given an event yet: nothing is due.
    Unknown,
    /// The oldest newest time of the partitions being read.
    At(DateTime<Utc>),
    /// Every partition is idle: the newest time seen decides.
    AllIdle,
}

impl Sources {
    fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }

    fn clock(&mut self, topic: &str, partition: i32) -> Option<&mut Clock> {
        self.by_topic.get_mut(topic)?.get_mut(&partition)
    }

    fn frontier(&mut self) -> Frontier {
        if let Some(f) = self.frontier {
            return f;
        }
        let mut oldest: Option<DateTime<Utc>> = None;
        let mut reading = false;
        let mut frontier = None;
        for clock in self.by_topic.values().flat_map(HashMap::values).filter(|c| !c.idle) {
            reading = true;
            match clock.newest {
                None => {
                    frontier = Some(Frontier::Unknown);
                    break;
                }
                Some(t) => oldest = Some(oldest.map_or(t, |o| o.min(t))),
            }
        }
        let frontier = frontier.unwrap_or(match oldest {
            Some(t) if reading => Frontier::At(t),
            _ => Frontier::AllIdle,
        });
        self.frontier = Some(frontier);
        frontier
    }

    /// `event`'s partition, if tracked, has seen its time.
    fn saw(&mut self, origin: Option<&crate::event::Origin>, time: DateTime<Utc>) {
        let Some(origin) = origin else { return };
        let Some(partition) = origin.partition else { return };
        let cached = self.frontier;
        let Some(clock) = self.clock(&origin.name, partition) else {
            return;
        };
        let before = clock.newest;
        if before.is_some_and(|b| b >= time) {
            return;
        }
        clock.newest = Some(time);
        // The frontier moves only if this partition was (one of) the oldest, or unknown.
        let moved = match (cached, before) {
            (Some(Frontier::At(f)), Some(b)) => b <= f,
            // Every partition idle: the newest time seen decides, whoever gave it.
            (Some(Frontier::AllIdle), _) => false,
            _ => true,
        };
        if moved {
            self.frontier = None;
        }
    }
}

#[derive(Debug)]
struct Pending {
    time: DateTime<Utc>,
    seq: u64,
    event: Event,
}

// Events of the same instant are taken in event-id order, then arrival: the order no longer
// depends on how partitions interleave, so a replay of the archive (sorted by time, event id)
// sees exactly the order the live run saw.
impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, &self.event.event_id, self.seq).cmp(&(other.time, &other.event.event_id, other.seq))
    }
}

impl Reorder {
    /// A buffer tolerating `lateness`.
    pub fn new(lateness: Duration) -> Reorder {
        Reorder {
            heap: BinaryHeap::new(),
            lateness,
            max_seen: None,
            released: None,
            seq: 0,
            late: 0,
            limit: usize::MAX,
            early: 0,
            sources: Sources::default(),
        }
    }

    /// The same buffer holding at most `limit` events (at least one).
    pub fn with_limit(mut self, limit: usize) -> Reorder {
        self.limit = limit.max(1);
        self
    }

    /// Adds an event; calls `emit` with each event now due, in order, and whether it was late.
    pub fn push(&mut self, event: Event, emit: &mut impl FnMut(Event, bool)) {
        self.sources.saw(event.source.as_ref(), event.time);
        if self.released.is_some_and(|r| event.time < r) {
            self.late += 1;
            emit(event, true);
            return;
        }
        self.max_seen = Some(self.max_seen.map_or(event.time, |m| m.max(event.time)));
        self.seq += 1;
        self.heap.push(Reverse(Pending {
            time: event.time,
            seq: self.seq,
            event,
        }));
        self.release(emit);
        while self.heap.len() > self.limit {
            if let Some(Reverse(p)) = self.heap.pop() {
                self.early += 1;
                self.released = Some(p.time);
                emit(p.event, false);
            }
        }
    }

    /// Releases every event the watermark has passed.
    fn release(&mut self, emit: &mut impl FnMut(Event, bool)) {
        let watermark = if self.sources.is_empty() {
            self.max_seen
        } else {
            match self.sources.frontier() {
                Frontier::Unknown => None,
                Frontier::At(t) => Some(t),
                Frontier::AllIdle => self.max_seen,
            }
        };
        let Some(watermark) = watermark else { return };
        let due = watermark - self.lateness;
        while self.heap.peek().is_some_and(|Reverse(p)| p.time <= due) {
            if let Some(Reverse(p)) = self.heap.pop() {
                self.released = Some(p.time);
                emit(p.event, false);
            }
        }
    }

    /// The Kafka partitions read from now on are `partitions`: one newly among them holds
    /// everything back until it gives an event or is idle (nothing newer than its position can
    /// be known before); one no longer among them stops holding the others back. Every
    /// partition listed is taken as being read (the consumer then says again which are idle);
    /// one kept, or restored from a checkpoint, keeps its newest time.
    pub fn assign(&mut self, partitions: &[(String, i32)], emit: &mut impl FnMut(Event, bool)) {
        for (topic, partition) in partitions {
            let clock = self
                .sources
                .by_topic
                .entry(topic.clone())
                .or_default()
                .entry(*partition)
                .or_default();
            // Read until told idle again (the consumer tells the ones it knows idle).
            clock.idle = false;
        }
        for (topic, clocks) in &mut self.sources.by_topic {
            clocks.retain(|p, _| partitions.iter().any(|(t, q)| t == topic && q == p));
        }
        self.sources.by_topic.retain(|_, c| !c.is_empty());
        self.sources.frontier = None;
        self.release(emit);
    }

    /// `topic`/`partition` is idle (at its end, or silent while others deliver) or reading
    /// again; an idle partition does not hold the others back.
    pub fn set_idle(&mut self, topic: &str, partition: i32, idle: bool, emit: &mut impl FnMut(Event, bool)) {
        let Some(clock) = self.sources.clock(topic, partition) else {
            return;
        };
        if clock.idle == idle {
            return;
        }
        clock.idle = idle;
        self.sources.frontier = None;
        self.release(emit);
    }

    /// Partitions tracked, and of them idle.
    pub fn sources(&self) -> (usize, usize) {
        let clocks = || self.sources.by_topic.values().flat_map(HashMap::values);
        (clocks().count(), clocks().filter(|c| c.idle).count())
    }

    /// Events released before their lateness had passed, to stay within the limit.
    pub fn early(&self) -> u64 {
        self.early
    }

    /// Releases everything still waiting (end of input).
    pub fn flush(&mut self, emit: &mut impl FnMut(Event, bool)) {
        while let Some(Reverse(p)) = self.heap.pop() {
            self.released = Some(p.time);
            emit(p.event, false);
        }
    }

    /// Events that arrived later than the lateness bound.
    pub fn late(&self) -> u64 {
        self.late
    }

    fn state(&self) -> ReorderState {
        let mut pending: Vec<(u64, Event)> = self.heap.iter().map(|Reverse(p)| (p.seq, p.event.clone())).collect();
        pending.sort_by_key(|(seq, _)| *seq);
        let mut sources: Vec<SourceClock> = self
            .sources
            .by_topic
            .iter()
            .flat_map(|(topic, clocks)| {
                clocks.iter().map(|(&partition, clock)| SourceClock {
                    topic: topic.clone(),
                    partition,
                    newest: clock.newest,
                })
            })
            .collect();
        sources.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        ReorderState {
            pending,
            max_seen: self.max_seen,
            released: self.released,
            seq: self.seq,
            late: self.late,
            sources,
        }
    }

    fn restore(lateness: Duration, state: ReorderState) -> Reorder {
        let heap = state
            .pending
            .into_iter()
            .map(|(seq, event)| {
                Reverse(Pending {
                    time: event.time,
                    seq,
                    event,
                })
            })
            .collect();
        let mut sources = Sources::default();
        for s in state.sources {
            sources.by_topic.entry(s.topic).or_default().insert(
                s.partition,
                Clock {
                    newest: s.newest,
                    idle: false,
                },
            );
        }
        Reorder {
            heap,
            lateness,
            max_seen: state.max_seen,
            released: state.released,
            seq: state.seq,
            late: state.late,
            limit: usize::MAX,
            early: 0,
            sources,
        }
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Reorder, engine and the findings so far: what every detecting command runs.
pub struct Detection {
    reorder: Reorder,
    engine: Engine,
    updates: Vec<Update>,
    findings: Vec<Finding>,
    index: HashMap<String, usize>,
    /// Most findings kept in `findings` (the oldest raised are forgotten past it).
    history: usize,
    live: bool,
    /// Events the reorder buffer released, kept to reuse its allocation.
    due: Vec<Event>,
    /// Whether findings wait for [`Detection::release`] instead of going out as raised.
    hold: bool,
    /// Findings raised and not yet released, in the order raised.
    held: Vec<Update>,
}

impl Detection {
    /// Detection with `engine`, events reordered within `lateness`. `live` stamps findings with
    /// the wall clock; otherwise with event time, so offline runs are reproducible.
    pub fn new(engine: Engine, lateness: Duration, live: bool) -> Detection {
        Detection {
            reorder: Reorder::new(lateness),
            engine,
            updates: Vec::new(),
            findings: Vec::new(),
            index: HashMap::new(),
            history: usize::MAX,
            live,
            due: Vec::new(),
            hold: false,
            held: Vec::new(),
        }
    }

    /// Findings are held until [`Detection::release`], which the service calls once the state
    /// that raised them is durable (a checkpoint, a changelog record); what is held is part of
    /// that state ([`Detection::state`]). So no finding leaves the process from processing that
    /// a crash would roll back: after a restart the checkpoint's held findings are released,
    /// and the records after it are judged again. The callbacks of `push`, `finish` and the
    /// partition changes then see nothing.
    pub fn holding(mut self) -> Detection {
        self.hold = true;
        self
    }

    /// Hands every held finding to `on_update`, in the order raised.
    pub fn release(&mut self, on_update: &mut impl FnMut(&Update)) {
        for update in std::mem::take(&mut self.held) {
            on_update(&update);
        }
    }

    /// Findings held, waiting for [`Detection::release`].
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The Kafka partitions read from now on; see [`Reorder::assign`].
    pub fn assign(&mut self, partitions: &[(String, i32)], on_update: &mut impl FnMut(&Update)) {
        let mut due = std::mem::take(&mut self.due);
        self.reorder.assign(partitions, &mut |e, _| due.push(e));
        self.judge_due(&mut due, on_update);
        self.due = due;
    }

    /// A Kafka partition is idle, or reading again; see [`Reorder::set_idle`].
    pub fn set_idle(&mut self, topic: &str, partition: i32, idle: bool, on_update: &mut impl FnMut(&Update)) {
        let mut due = std::mem::take(&mut self.due);
        self.reorder.set_idle(topic, partition, idle, &mut |e, _| due.push(e));
        self.judge_due(&mut due, on_update);
        self.due = due;
    }

    /// Partitions tracked, and of them idle.
    pub fn sources(&self) -> (usize, usize) {
        self.reorder.sources()
    }

    fn judge_due(&mut self, due: &mut Vec<Event>, on_update: &mut impl FnMut(&Update)) {
        for event in due.drain(..) {
            self.judge(&event, on_update);
        }
    }

    /// Takes one event; `on_update` sees each new or changed finding.
    pub fn push(&mut self, event: Event, on_update: &mut impl FnMut(&Update)) {
        let mut due = std::mem::take(&mut self.due);
        self.reorder.push(event, &mut |e, _late| due.push(e));
        for event in due.drain(..) {
            self.judge(&event, on_update);
        }
        self.due = due;
    }

    /// Processes what still waits in the reorder buffer (end of input).
    pub fn finish(&mut self, on_update: &mut impl FnMut(&Update)) {
        let mut due = Vec::new();
        self.reorder.flush(&mut |e, _| due.push(e));
        for event in due {
            self.judge(&event, on_update);
        }
    }

    fn judge(&mut self, event: &Event, on_update: &mut impl FnMut(&Update)) {
        let detected_at = if self.live { Utc::now() } else { event.time };
        self.engine.process(event, detected_at, &mut self.updates);
        let mut updates = std::mem::take(&mut self.updates);
        for update in updates.drain(..) {
            if self.hold {
                self.keep(update.finding.clone());
                self.held.push(update);
            } else {
                on_update(&update);
                self.keep(update.finding);
            }
        }
        self.updates = updates;
    }

    /// Holds `finding` in its latest state.
    fn keep(&mut self, finding: Finding) {
        match self.index.get(&finding.id) {
            Some(&i) => self.findings[i] = finding,
            None => {
                self.index.insert(finding.id.clone(), self.findings.len());
                self.findings.push(finding);
                if self.findings.len() >= self.history.saturating_mul(2) {
                    self.forget_oldest();
                }
            }
        }
    }

    /// Keeps the newest `history` findings (amortised: done when twice as many are held).
    fn forget_oldest(&mut self) {
        let excess = self.findings.len().saturating_sub(self.history);
        self.findings.drain(..excess);
        self.index = self
            .findings
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id.clone(), i))
            .collect();
    }

    /// A service runs for years: keep at most about `limit` of the findings raised (between
    /// `limit` and twice it), newest first kept; the findings store and the journal have them
    /// all. Open findings are the engine's and are never forgotten here.
    pub fn with_history(mut self, limit: usize) -> Detection {
        self.history = limit.max(1);
        if self.findings.len() > self.history {
            self.forget_oldest();
        }
        self
    }

    /// Every finding in its latest state, in the order they were first raised (the newest of
    /// them with [`Detection::with_history`]).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Events that arrived later than the lateness bound (processed, flagged, counted).
    pub fn late(&self) -> u64 {
        self.reorder.late()
    }

    /// At most `limit` events wait for order (`engine.max_waiting_events`); see [`Reorder`].
    pub fn with_max_waiting(mut self, limit: usize) -> Detection {
        self.reorder = std::mem::replace(&mut self.reorder, Reorder::new(Duration::zero())).with_limit(limit);
        self
    }

    /// Events released before their lateness had passed, to stay within the limit.
    pub fn released_early(&self) -> u64 {
        self.reorder.early()
    }

    /// Events waiting in the reorder buffer.
    pub fn waiting(&self) -> usize {
        self.reorder.len()
    }

    /// Everything but the baselines that a restart needs to go on as if it had not stopped:
    /// the events waiting for order, the open findings and the engine's clocks.
    pub fn state(&self) -> DetectionState {
        let e = &self.engine;
        DetectionState {
            watermark: e.watermark,
            last_sweep: e.last_sweep,
            last_expire: e.last_expire,
            open: e
                .folder
                .all_open()
                .map(|(f, window)| (f.clone(), window.num_milliseconds()))
                .collect(),
            findings: self.findings.clone(),
            reorder: self.reorder.state(),
            dedupe: e.dedupe.state(),
            held: self.held.clone(),
        }
    }

    /// Detection resumed from `state`, with `engine` (whose baseline was restored beside it).
    /// The dedupe memory is restored within the engine's configured window and maximum.
    pub fn restore(mut engine: Engine, lateness: Duration, live: bool, state: DetectionState) -> Detection {
        engine.dedupe = engine.dedupe.restore(state.dedupe);
        engine.watermark = state.watermark;
        engine.last_sweep = state.last_sweep;
        engine.last_expire = state.last_expire;
        engine.folder = Folder::reopen(state.open.into_iter().map(|(f, ms)| (f, Duration::milliseconds(ms))));
        let index = state
            .findings
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id.clone(), i))
            .collect();
        Detection {
            reorder: Reorder::restore(lateness, state.reorder),
            engine,
            updates: Vec::new(),
            findings: state.findings,
            index,
            history: usize::MAX,
            live,
            due: Vec::new(),
            hold: false,
            held: state.held,
        }
    }
}

/// What [`Detection::state`] keeps (a checkpoint's JSON part; see [`crate::engine::state`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionState {
    watermark: i64,
    last_sweep: Option<i64>,
    last_expire: Option<i64>,
    /// Open findings with their folding windows in milliseconds.
    open: Vec<(Finding, i64)>,
    findings: Vec<Finding>,
    reorder: ReorderState,
    /// Record ids remembered to drop repeats; absent in checkpoints written before they were
    /// kept (restored empty).
    #[serde(default)]
    dedupe: DedupeState,
    /// Findings raised from the events this state reflects and not yet released (see
    /// [`Detection::holding`]); absent in checkpoints written before findings were held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    held: Vec<Update>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReorderState {
    /// Waiting events with their arrival numbers (ties in time are taken in that order).
    pending: Vec<(u64, Event)>,
    max_seen: Option<DateTime<Utc>>,
    released: Option<DateTime<Utc>>,
    seq: u64,
    late: u64,
    /// Each tracked partition's newest event time; absent in checkpoints written before
    /// partitions were tracked (restored empty: the first assignment tracks them anew).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sources: Vec<SourceClock>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceClock {
    topic: String,
    partition: i32,
    newest: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SourceFormat;

    fn ev(id: &str, secs: i64) -> Event {
        let t = DateTime::from_timestamp(1_767_571_200 + secs, 0).expect("valid");
        Event::new(
            id.into(),
            t,
            SourceFormat::GatewayAccess,
            EventKind::DataAccess,
            "a".into(),
        )
    }

    /// Pushes `(id, seconds)` events through `r`, flushes, and returns each released id with
    /// whether it was late.
    fn released(r: &mut Reorder, input: &[(&str, i64)]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut emit = |e: Event, late: bool| out.push((e.event_id, late));
        for (id, s) in input {
            r.push(ev(id, *s), &mut emit);
        }
        r.flush(&mut emit);
        out
    }

    #[test]
    fn an_alias_is_canonicalized_and_the_source_id_kept() {
        let registry = Registry::parse(
            "[[integration]]\nid = \"lab-feed\"\naliases = [\"0oa-lab\"]\n",
            std::path::Path::new("registry.toml"),
        )
        .expect("registry");
        let engine = Engine::new(Detectors::default(), Some(registry), baseline::Settings::default());
        let at = DateTime::from_timestamp(1_767_225_600, 0).expect("time");
        let new = |who: &str| Event::new("e".into(), at, SourceFormat::Okta, EventKind::TokenIssued, who.into());
        let ids = |who: &str| {
            let mut e = new(who);
            engine.canonicalize(&mut e);
            engine.canonicalize(&mut e);
            (e.identity, e.source_identity)
        };
        assert_eq!(ids("0oa-lab"), ("lab-feed".into(), Some("0oa-lab".into())));
        assert_eq!(ids("lab-feed"), ("lab-feed".into(), None));
        assert_eq!(ids("stranger"), ("stranger".into(), None));
    }

    #[test]
    fn events_of_no_one_and_of_people_are_counted_not_judged() {
        let mut engine = Engine::new(Detectors::default(), None, crate::baseline::Settings::default());
        let mut out = Vec::new();
        let mut nobody = ev("n1", 0);
        nobody.identity = crate::event::UNIDENTIFIED.into();
        nobody.kind = EventKind::AuthFailure;
        let mut person = ev("p1", 1);
        person.identity_type = crate::event::IdentityType::User;
        engine.process(&nobody, nobody.time, &mut out);
        engine.process(&person, person.time, &mut out);
        engine.process(&ev("a1", 2), ev("a1", 2).time, &mut out);
        assert_eq!((engine.stats().unattributed, engine.stats().human), (1, 1));
        assert_eq!(engine.baseline().len(), 1, "only the integration `a` has a baseline");
        assert!(engine.baseline().get(crate::event::UNIDENTIFIED).is_none());
    }

    fn ids(expected: &[(&str, bool)]) -> Vec<(String, bool)> {
        expected.iter().map(|(i, l)| ((*i).to_owned(), *l)).collect()
    }

    #[test]
    fn reorder_sorts_within_lateness_and_flags_the_rest() {
        let mut r = Reorder::new(Duration::seconds(60));
        let got = released(
            &mut r,
            &[("b", 30), ("a", 0), ("c", 50), ("d", 100), ("e", 200), ("x", 10)],
        );
        let want = [
            ("a", false),
            ("b", false),
            ("c", false),
            ("d", false),
            ("x", true),
            ("e", false),
        ];
        assert_eq!(got, ids(&want));
        assert_eq!(r.late(), 1);
    }

    #[test]
    fn a_bounded_history_keeps_the_newest_findings_in_their_latest_state() {
        let mut d = Detection::new(
            Engine::new(Detectors::default(), None, baseline::Settings::default()),
            Duration::zero(),
            false,
        )
        .with_history(2);
        let finding = |id: &str, count: u64| {
            let hit = crate::findings::Hit {
                detector: DetectorId::BreakGlass,
                severity: crate::findings::Severity::High,
                confidence: crate::findings::Confidence::High,
                title: "t".into(),
                explanation: String::new(),
                analysis: Vec::new(),
                suppress_for: Duration::minutes(30),
                cite: None,
                cause: None,
            };
            let who = IdentityRef {
                id: "a".into(),
                name: None,
                owner: None,
                registered: false,
            };
            let event = ev("e", 0);
            let mut f = Folder::default().fold(hit, &who, &event, event.time).finding;
            f.id = id.into();
            f.count = count;
            f
        };
        for (id, count) in [("f1", 1), ("f2", 1), ("f1", 2), ("f3", 1), ("f4", 1), ("f3", 5)] {
            d.keep(finding(id, count));
        }
        let held: Vec<(&str, u64)> = d.findings().iter().map(|f| (f.id.as_str(), f.count)).collect();
        assert_eq!(held, [("f3", 5), ("f4", 1)]);
    }

    /// Every identity's state, by id (two baselines hold their identities in different orders).
    fn states(engine: &Engine) -> BTreeMap<String, crate::baseline::IdentityState> {
        let mut out = BTreeMap::new();
        engine.baseline().for_each(|id, s| {
            out.insert(id.to_owned(), s.clone());
        });
        out
    }

    /// Issue 18, item 9: a record delivered twice counts once, in the baselines and in the
    /// findings (their counts and evidence), and each repeat is counted under its format.
    #[test]
    fn a_record_delivered_twice_counts_once_and_the_repeat_is_counted_per_format() {
        let (events, registry) = crate::generate::test_events(30, 10, 9);
        let run = |twice: bool| {
            let engine = Engine::new(
                Detectors::default(),
                Some(registry.clone()),
                baseline::Settings::default(),
            );
            let mut d = Detection::new(engine, Duration::minutes(5), false);
            for e in &events {
                d.push(e.clone(), &mut |_| {});
                if twice {
                    d.push(e.clone(), &mut |_| {});
                }
            }
            d.finish(&mut |_| {});
            d
        };
        let (once, twice) = (run(false), run(true));
        assert!(once.findings().len() >= 5, "the scenario raises findings");
        assert_eq!(
            once.engine().stats().duplicates_total(),
            0,
            "no record repeats in the input"
        );
        assert!(twice.findings() == once.findings(), "the findings differ");
        assert!(states(twice.engine()) == states(once.engine()), "the baselines differ");
        // People's events are not judged, so not held: only the judged ones are repeats.
        let mut expected = BTreeMap::new();
        for e in events
            .iter()
            .filter(|e| e.identity_type.is_non_human() && e.kind != EventKind::SignIn)
        {
            *expected.entry(e.format).or_insert(0u64) += 1;
        }
        let got: BTreeMap<SourceFormat, u64> = twice
            .engine()
            .stats()
            .duplicates_by_format()
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(got, expected);
        assert_eq!(twice.engine().stats().events, 2 * events.len() as u64);
    }

    fn from(topic: &str, partition: i32, id: &str, hours: i64) -> Event {
        let mut e = ev(id, hours * 3600);
        e.source = Some(crate::event::Origin {
            name: topic.into(),
            partition: Some(partition),
            offset: 0,
        });
        e
    }

    fn parts(list: &[(&str, i32)]) -> Vec<(String, i32)> {
        list.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()
    }

    /// Issue 24: grants read days ahead of the data accesses made nothing late; the order
    /// judged is event-time order whatever the interleaving of the two partitions' fetches.
    #[test]
    fn a_partition_fetched_ahead_waits_for_the_slowest_and_makes_no_other_late() {
        let grants: Vec<Event> = (0..10).map(|h| from("idp", 0, &format!("g{h:02}"), h * 10)).collect();
        let reads: Vec<Event> = (0..10)
            .map(|h| from("fhir", 3, &format!("r{h:02}"), h * 10 + 5))
            .collect();
        let sorted = |mut v: Vec<String>| {
            v.sort_by_key(|id| id[1..].parse::<i64>().expect("n") * 10 + i64::from(id.starts_with('r')) * 5);
            v
        };
        let all: Vec<String> = grants.iter().chain(&reads).map(|e| e.event_id.clone()).collect();
        // Every grant first, then every read; and alternating.
        let orders: [Vec<&Event>; 2] = [
            grants.iter().chain(&reads).collect(),
            grants.iter().zip(&reads).flat_map(|(g, r)| [g, r]).collect(),
        ];
        for (n, order) in orders.iter().enumerate() {
            let mut r = Reorder::new(Duration::hours(1));
            let mut out = Vec::new();
            r.assign(&parts(&[("idp", 0), ("fhir", 3)]), &mut |e, _| out.push(e.event_id));
            for e in order {
                r.push((*e).clone(), &mut |e, late| {
                    assert!(!late, "order {n}: {} late", e.event_id);
                    out.push(e.event_id);
                });
            }
            r.flush(&mut |e, _| out.push(e.event_id));
            assert_eq!(out, sorted(all.clone()), "order {n}");
            assert_eq!(r.late(), 0);
        }
        // Without partitions (a file read in order) the newest time seen decides: after the
        // grants up to 90 h, everything up to 89 h is released, so the reads of 5 to 75 h are
        // late (8 of them).
        let mut r = Reorder::new(Duration::hours(1));
        for e in grants.iter().chain(&reads) {
            r.push(e.clone(), &mut |_, _| {});
        }
        assert_eq!(r.late(), 8);
    }

    #[test]
    fn a_partition_not_yet_read_holds_everything_until_it_gives_an_event_or_is_idle() {
        let mut r = Reorder::new(Duration::zero());
        let mut out: Vec<String> = Vec::new();
        r.assign(&parts(&[("a", 0), ("b", 0)]), &mut |e, _| out.push(e.event_id));
        for h in 0..5 {
            r.push(from("a", 0, &format!("a{h}"), h), &mut |e, _| out.push(e.event_id));
        }
        assert!(out.is_empty(), "b was not read yet: {out:?}");
        assert_eq!(r.len(), 5);
        // b at its end: a alone decides.
        r.set_idle("b", 0, true, &mut |e, _| out.push(e.event_id));
        assert_eq!(out, ["a0", "a1", "a2", "a3", "a4"]);
        // b reads again from hour 2: a's later events wait for it.
        r.set_idle("b", 0, false, &mut |e, _| out.push(e.event_id));
        r.push(from("a", 0, "a9", 9), &mut |e, _| out.push(e.event_id));
        r.push(from("b", 0, "b6", 6), &mut |e, _| out.push(e.event_id));
        assert_eq!(out[5..], ["b6"], "a9 waits for b, at 6 h");
        // b revoked: it holds no one back.
        r.assign(&parts(&[("a", 0)]), &mut |e, _| out.push(e.event_id));
        assert_eq!(out[5..], ["b6", "a9"]);
        assert_eq!(r.sources(), (1, 0));
        // Assigned again (a rejoin): taken as read until the consumer says it is idle again.
        r.set_idle("a", 0, true, &mut |e, _| out.push(e.event_id));
        assert_eq!(r.sources(), (1, 1));
        r.assign(&parts(&[("a", 0)]), &mut |e, _| out.push(e.event_id));
        assert_eq!(r.sources(), (1, 0));
    }

    #[test]
    fn each_partitions_newest_time_survives_a_checkpoint() {
        let mut r = Reorder::new(Duration::hours(1));
        r.assign(&parts(&[("a", 0), ("b", 1)]), &mut |_, _| {});
        r.push(from("a", 0, "a", 10), &mut |_, _| {});
        r.push(from("b", 1, "b", 3), &mut |_, _| {});
        let state = r.state();
        let json = serde_json::to_string(&state).expect("json");
        let back: ReorderState = serde_json::from_str(&json).expect("back");
        assert_eq!(back, state);
        let mut restored = Reorder::restore(Duration::hours(1), back);
        // The restart is assigned the same partitions and goes on where the run left off: b's
        // newest (3 h) holds everything after 2 h back; b at 12 h lets up to 9 h through.
        let mut out = Vec::new();
        restored.assign(&parts(&[("a", 0), ("b", 1)]), &mut |e, _| out.push(e.event_id));
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(restored.state(), state);
        restored.push(from("b", 1, "b2", 12), &mut |e, _| out.push(e.event_id));
        assert_eq!(out, ["b"]);
        // A checkpoint from before partitions were tracked restores without them.
        let mut old = serde_json::to_value(&state).expect("value");
        old.as_object_mut().expect("object").remove("sources");
        let old: ReorderState = serde_json::from_value(old).expect("old checkpoint");
        assert!(old.sources.is_empty());
    }

    /// Issue 24, on generated traffic: every identity-provider partition read to its end
    /// before any data partition (a backlog where one topic is fetched far ahead), each
    /// partition told idle at its end, raises exactly the findings of the same events read in
    /// time order.
    #[test]
    fn a_topic_fetched_far_ahead_raises_the_findings_of_the_events_in_time_order() {
        let (events, registry) = crate::generate::test_events(40, 30, 5);
        let placed: Vec<Event> = events
            .iter()
            .map(|e| {
                let topic = match e.format {
                    SourceFormat::FhirAuditEvent => "fhir",
                    SourceFormat::GatewayAccess => "gateway",
                    _ => "idp",
                };
                let partition = e.identity.bytes().map(i32::from).sum::<i32>() % 4;
                let mut e = e.clone();
                e.source = Some(crate::event::Origin {
                    name: topic.into(),
                    partition: Some(partition),
                    offset: 0,
                });
                e
            })
            .collect();
        let engine = || {
            Engine::new(
                Detectors::default(),
                Some(registry.clone()),
                baseline::Settings::default(),
            )
        };
        let run = |order: &[&Event], partitions: bool| {
            let mut d = Detection::new(engine(), Duration::hours(1), false);
            let all: Vec<(String, i32)> = ["idp", "fhir", "gateway"]
                .iter()
                .flat_map(|t| (0..4).map(move |p| ((*t).to_owned(), p)))
                .collect();
            if partitions {
                d.assign(&all, &mut |_| {});
            }
            let mut left: HashMap<(String, i32), usize> = HashMap::new();
            for e in order {
                let o = e.source.as_ref().expect("placed");
                *left
                    .entry((o.name.clone(), o.partition.expect("partition")))
                    .or_default() += 1;
            }
            if partitions {
                for (t, p) in &all {
                    if !left.contains_key(&(t.clone(), *p)) {
                        d.set_idle(t, *p, true, &mut |_| {});
                    }
                }
            }
            for e in order {
                d.push((*e).clone(), &mut |_| {});
                let o = e.source.as_ref().expect("placed");
                let key = (o.name.clone(), o.partition.expect("partition"));
                let n = left.get_mut(&key).expect("counted");
                *n -= 1;
                if *n == 0 && partitions {
                    d.set_idle(&key.0, key.1, true, &mut |_| {});
                }
            }
            d.finish(&mut |_| {});
            let mut found: Vec<(String, u64)> = d.findings().iter().map(|f| (f.id.clone(), f.count)).collect();
            found.sort();
            (found, d.late())
        };
        let in_order: Vec<&Event> = placed.iter().collect();
        let idp_first: Vec<&Event> = placed
            .iter()
            .filter(|e| e.source.as_ref().is_some_and(|o| o.name == "idp"))
            .chain(
                placed
                    .iter()
                    .filter(|e| e.source.as_ref().is_some_and(|o| o.name != "idp")),
            )
            .collect();
        let (want, _) = run(&in_order, false);
        assert!(want.len() >= 5, "the scenario raises findings: {want:?}");
        let (got, late) = run(&idp_first, true);
        assert_eq!(late, 0);
        assert_eq!(got, want);
        // Without partitions, the same fetch order makes the data late and finds otherwise.
        let (skewed, late) = run(&idp_first, false);
        assert!(late > 1000, "{late}");
        assert_ne!(skewed, want);
    }

    /// Issue 24: with [`Detection::holding`] nothing is reported until `release`, and what is
    /// held is part of the state a checkpoint keeps.
    #[test]
    fn held_findings_go_out_only_when_released_and_are_kept_in_the_state() {
        let (events, registry) = crate::generate::test_events(30, 10, 9);
        let engine = || {
            Engine::new(
                Detectors::default(),
                Some(registry.clone()),
                baseline::Settings::default(),
            )
        };
        let mut d = Detection::new(engine(), Duration::minutes(5), false).holding();
        let mut seen = 0;
        for e in &events {
            d.push(e.clone(), &mut |_| seen += 1);
        }
        d.finish(&mut |_| seen += 1);
        assert_eq!(seen, 0, "nothing goes out before release");
        assert!(d.held() >= 5, "the scenario raises findings: {}", d.held());
        let state = d.state();
        let json = serde_json::to_string(&state).expect("json");
        let back: DetectionState = serde_json::from_str(&json).expect("back");
        let mut restored = Detection::restore(engine(), Duration::minutes(5), false, back);
        assert_eq!(restored.held(), d.held());
        let mut released = Vec::new();
        restored.release(&mut |u| released.push(u.clone()));
        let mut direct = Vec::new();
        let mut plain = Detection::new(engine(), Duration::minutes(5), false);
        for e in &events {
            plain.push(e.clone(), &mut |u| direct.push(u.clone()));
        }
        plain.finish(&mut |u| direct.push(u.clone()));
        assert!(
            released == direct,
            "the same updates, in the same order, as without holding"
        );
        assert_eq!(restored.held(), 0);
    }

    #[test]
    fn past_its_limit_the_buffer_releases_the_oldest_early_and_later_ones_count_as_late() {
        let mut r = Reorder::new(Duration::hours(1)).with_limit(2);
        let got = released(
            &mut r,
            &[("c", 30), ("a", 10), ("b", 20), ("d", 40), ("x", 15), ("e", 50)],
        );
        // Never more than two wait: a, then b go early; x is older than b was, so late.
        let want = [
            ("a", false),
            ("b", false),
            ("x", true),
            ("c", false),
            ("d", false),
            ("e", false),
        ];
        assert_eq!(got, ids(&want));
        assert_eq!((r.early(), r.late()), (3, 1));
    }
}
