//! The one path after the engine: what happens to each event and to each finding the
//! detection raises, in this order — the archive (events, and the engine's occurrences), the
//! findings store (aggregated into the finding the analyst sees; journal, API, live stream and
//! the SIEM outbox behind it), the metrics, the announcement (a log line in `run`, a printed
//! line in `demo`), the NDJSON streams. Every command fills the parts it has.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context as _;

use crate::archive::{Archive, ArchiveError};
use crate::engine::Detection;
use crate::event::Event;
use crate::findings::store::FindingStore;
use crate::findings::{Change, Update};
use crate::telemetry::metrics::Metrics;

/// How a new or changed finding is announced (a folded repeat is not).
#[derive(Debug, Clone, Copy)]
pub enum Announce {
    /// Not at all (`detect`, `replay`, `bench`: they report at the end).
    Quiet,
    /// A warning in the service's log (`run`).
    Log,
    /// A line on stdout, as this renders it (`demo`: [`crate::report::finding_line`]).
    Print(fn(&Update) -> String),
}

/// When the archive takes findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFindings {
    /// Each occurrence as the engine raises or updates it (a service: nothing waits in memory).
    EachChange,
    /// Each occurrence in its final state, once, when the detection finishes (a batch).
    Final,
}

/// Where events and findings go; each part is optional ([`Outputs::none`] has none).
pub struct Outputs {
    /// The archive, if configured.
    pub archive: Option<Archive>,
    archive_findings: ArchiveFindings,
    /// The findings store.
    pub store: Option<Arc<FindingStore>>,
    /// Counters.
    pub metrics: Option<Arc<Metrics>>,
    announce: Announce,
    /// Each new or updated finding as an NDJSON line, if asked for.
    pub findings_out: Option<Box<dyn Write>>,
    /// Normalized events as NDJSON lines, if asked for.
    pub events_out: Option<Box<dyn Write>>,
    /// The first write error of either stream (reported at the end).
    pub write_error: Option<std::io::Error>,
    archive_failed: bool,
}

impl Outputs {
    /// Nowhere: what the detection raises stays in it (`replay`, the tests).
    pub fn none() -> Outputs {
        Outputs {
            archive: None,
            archive_findings: ArchiveFindings::EachChange,
            store: None,
            metrics: None,
            announce: Announce::Quiet,
            findings_out: None,
            events_out: None,
            write_error: None,
            archive_failed: false,
        }
    }

    /// Also into `archive`, findings as `findings` says.
    pub fn archive(mut self, archive: Option<Archive>, findings: ArchiveFindings) -> Outputs {
        self.archive = archive;
        self.archive_findings = findings;
        self
    }

    /// Also into the findings `store`.
    pub fn store(mut self, store: Arc<FindingStore>) -> Outputs {
        self.store = Some(store);
        self
    }

    /// Also counted in `metrics`.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Outputs {
        self.metrics = Some(metrics);
        self
    }

    /// New and changed findings announced so.
    pub fn announce(mut self, announce: Announce) -> Outputs {
        self.announce = announce;
        self
    }

    /// Each finding change as an NDJSON line to `out`.
    pub fn findings_out(mut self, out: Box<dyn Write>) -> Outputs {
        self.findings_out = Some(out);
        self
    }

    /// Each event as an NDJSON line to `out`, if given.
    pub fn events_out(mut self, out: Option<Box<dyn Write>>) -> Outputs {
        self.events_out = out;
        self
    }

    /// The archive stopped taking rows (logged once when it happened).
    pub fn archive_failed(&self) -> bool {
        self.archive_failed
    }

    // The writer thread logs a refused write and keeps the file; what arrives here is a writer
    // that stopped, reported once (detection goes on).
    fn archived(&mut self, result: Result<(), ArchiveError>) {
        if let Err(error) = result
            && !std::mem::replace(&mut self.archive_failed, true)
        {
            tracing::error!(%error, "The archive stopped taking rows.");
        }
    }

    /// Archives the engine's occurrence (the archive keeps what the engine raised, which a
    /// replay reproduces), then stores it — aggregated into the finding of its detector ×
    /// identity × cause while that is open — and counts, logs and writes the finding as the
    /// analyst sees it.
    pub fn report(&mut self, update: &Update) {
        let occurrence = &update.finding;
        if let Some(a) = &mut self.archive
            && self.archive_findings == ArchiveFindings::EachChange
        {
            let result = a.append_finding(occurrence);
            self.archived(result);
        }
        let stored = match &self.store {
            Some(store) => match store.upsert(occurrence.clone()) {
                Ok((stored, change)) => Some(Update {
                    change,
                    finding: stored.finding,
                }),
                Err(error) => {
                    tracing::error!(%error, id = %occurrence.id, "Failed to journal a finding.");
                    None
                }
            },
            None => None,
        };
        let update = stored.as_ref().unwrap_or(update);
        let finding = &update.finding;
        if update.change == Change::New
            && let Some(m) = &self.metrics
        {
            m.finding(finding.detector);
        }
        if update.change != Change::Folded {
            match self.announce {
                Announce::Quiet => {}
                Announce::Log => tracing::warn!(
                    id = %finding.id, detector = %finding.detector, severity = %finding.severity,
                    identity = %finding.identity.id, count = finding.count, "{}.", finding.title
                ),
                // The demo's reader watches findings arrive on stdout.
                #[allow(clippy::print_stdout)]
                Announce::Print(line) => println!("{}", line(update)),
            }
        }
        if let Some(out) = &mut self.findings_out {
            write_line(out, finding, &mut self.write_error);
        }
    }

    /// Archives each finding of a finished batch in its final state (with
    /// [`ArchiveFindings::Final`]; nothing otherwise).
    pub fn finished(&mut self, detection: &Detection) {
        if let Some(a) = &mut self.archive
            && self.archive_findings == ArchiveFindings::Final
        {
            let result = detection.findings().iter().try_for_each(|f| a.append_finding(f));
            self.archived(result);
        }
    }

    /// Makes the findings and events streams and the archive durable.
    pub fn durable(&mut self) -> anyhow::Result<()> {
        if let Some(findings) = &mut self.findings_out {
            findings.flush().context("flushing the findings stream")?;
        }
        if let Some(events) = &mut self.events_out {
            events.flush().context("flushing the events stream")?;
        }
        if let Some(archive) = &mut self.archive {
            archive.flush()?;
        }
        Ok(())
    }

    /// Archives and writes one event under its canonical identity
    /// ([`crate::engine::Engine::canonicalize`]), then hands it to `detection`, reporting what it raises
    /// and counting it when it came later than the lateness bound (judged at once, flagged in the
    /// log and `nhiwatch_late_events_total`, never dropped). The events it releases that repeat
    /// a record already judged are counted in `nhiwatch_duplicate_events_total` (the archive
    /// keeps every delivery; a replay drops the same repeats).
    pub fn detect(&mut self, detection: &mut Detection, mut event: Event) {
        detection.engine().canonicalize(&mut event);
        self.event(&event);
        let late = detection.late();
        let id = (tracing::enabled!(tracing::Level::DEBUG)).then(|| event.event_id.clone());
        self.counted(detection, |d, mut report| d.push(event, &mut report));
        if detection.late() > late {
            if let Some(m) = &self.metrics {
                m.late_event();
            }
            tracing::debug!(
                event_id = id.as_deref().unwrap_or_default(),
                "An event arrived later than engine.lateness_seconds: judged at once."
            );
        }
    }

    /// Tells `detection` which Kafka partitions are read, reporting what that releases.
    pub fn assign(&mut self, detection: &mut Detection, partitions: &[(String, i32)]) {
        self.counted(detection, |d, mut report| d.assign(partitions, &mut report));
    }

    /// Tells `detection` that a Kafka partition went idle or is read again, reporting what that
    /// releases.
    pub fn idle(&mut self, detection: &mut Detection, topic: &str, partition: i32, idle: bool) {
        self.counted(detection, |d, mut report| {
            d.set_idle(topic, partition, idle, &mut report)
        });
    }

    /// Reports the findings `detection` held (see [`Detection::holding`]): called once the
    /// state that raised them is durable.
    pub fn release(&mut self, detection: &mut Detection) {
        let held = detection.held();
        if held > 0 {
            detection.release(&mut |update| self.report(update));
            if let Some(m) = &self.metrics {
                m.released(held);
            }
        }
    }

    /// Runs `step` on `detection`, reporting each finding it raises, and counts the events it
    /// released early and the repeats it dropped.
    fn counted(&mut self, detection: &mut Detection, step: impl FnOnce(&mut Detection, &mut dyn FnMut(&Update))) {
        let early = detection.released_early();
        let duplicates = detection.engine().stats().duplicates;
        let forgotten = detection.engine().dedupe().forgotten();
        step(detection, &mut |update| self.report(update));
        let Some(metrics) = &self.metrics else {
            return;
        };
        for _ in early..detection.released_early() {
            metrics.released_early();
        }
        let engine = detection.engine();
        if engine.stats().duplicates != duplicates {
            for ((format, now), before) in engine.stats().duplicates_by_format().zip(duplicates) {
                if now > before {
                    metrics.duplicate_events(format, now - before);
                }
            }
        }
        metrics.dedupe_forgotten(engine.dedupe().forgotten().saturating_sub(forgotten));
    }

    /// Archives and writes one event before it goes to detection.
    pub fn event(&mut self, event: &Event) {
        if let Some(out) = &mut self.events_out {
            write_line(out, event, &mut self.write_error);
        }
        if let Some(a) = &mut self.archive {
            let result = a.append_event(event);
            self.archived(result);
        }
    }
}

/// One value as an NDJSON line; the first error is kept and later lines are not written.
pub fn write_line(out: &mut dyn Write, value: &impl serde::Serialize, error: &mut Option<std::io::Error>) {
    if error.is_none()
        && let Err(e) = serde_json::to_writer(&mut *out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    {
        *error = Some(e);
    }
}
