//! What `run` does with each event, and what it makes durable at a commit point.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use crate::archive::{Archive, ArchiveError};
use crate::engine::Detection;
use crate::event::Event;
use crate::findings::store::FindingStore;
use crate::findings::{Change, Update};
use crate::ingest::Offsets;
use crate::kafka::Stage;
use crate::state::StateStore;
use crate::telemetry::metrics::Metrics;

/// Where findings go: the archive, the findings store (journal, API, SIEM outbox), the metrics
/// and an optional NDJSON stream.
pub struct Outputs {
    /// The archive, if configured.
    pub archive: Option<Archive>,
    /// The findings store.
    pub store: Arc<FindingStore>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Each new or updated finding as an NDJSON line.
    pub findings_out: Box<dyn Write>,
    /// Normalized events as NDJSON lines, if asked for.
    pub events_out: Option<Box<dyn Write>>,
    /// The first write error of either stream (reported at the end).
    pub write_error: Option<std::io::Error>,
    archive_failed: bool,
}

impl Outputs {
    /// Outputs writing to these.
    pub fn new(
        archive: Option<Archive>,
        store: Arc<FindingStore>,
        metrics: Arc<Metrics>,
        findings_out: Box<dyn Write>,
        events_out: Option<Box<dyn Write>>,
    ) -> Outputs {
        Outputs {
            archive,
            store,
            metrics,
            findings_out,
            events_out,
            write_error: None,
            archive_failed: false,
        }
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
        if let Some(a) = &mut self.archive {
            let result = a.append_finding(occurrence);
            self.archived(result);
        }
        let (finding, change) = match self.store.upsert(occurrence.clone()) {
            Ok((stored, change)) => (stored.finding, change),
            Err(error) => {
                tracing::error!(%error, id = %occurrence.id, "Failed to journal a finding.");
                (occurrence.clone(), update.change)
            }
        };
        if change == Change::New {
            self.metrics.finding(finding.detector);
        }
        if change != Change::Folded {
            tracing::warn!(
                id = %finding.id, detector = %finding.detector, severity = %finding.severity,
                identity = %finding.identity.id, count = finding.count, "{}.", finding.title
            );
        }
        write_line(&mut self.findings_out, &finding, &mut self.write_error);
    }

    /// Makes the findings and events streams and the archive durable.
    pub fn durable(&mut self) -> anyhow::Result<()> {
        self.findings_out.flush().context("flushing the findings stream")?;
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
            self.metrics.late_event();
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
            self.metrics.released(held);
        }
    }

    /// Runs `step` on `detection`, reporting each finding it raises, and counts the events it
    /// released early and the repeats it dropped.
    fn counted(&mut self, detection: &mut Detection, step: impl FnOnce(&mut Detection, &mut dyn FnMut(&Update))) {
        let early = detection.released_early();
        let duplicates = detection.engine().stats().duplicates;
        let forgotten = detection.engine().dedupe().forgotten();
        step(detection, &mut |update| self.report(update));
        for _ in early..detection.released_early() {
            self.metrics.released_early();
        }
        let engine = detection.engine();
        if engine.stats().duplicates != duplicates {
            for ((format, now), before) in engine.stats().duplicates_by_format().zip(duplicates) {
                if now > before {
                    self.metrics.duplicate_events(format, now - before);
                }
            }
        }
        self.metrics
            .dedupe_forgotten(engine.dedupe().forgotten().saturating_sub(forgotten));
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

/// The running service's stage: events to the outputs and detection; at a commit point the
/// streams, the archive and a checkpoint of the detection made durable, in that order, and then
/// the findings held since the last one released (when the detection holds them, see
/// [`Detection::holding`]: with checkpoints, no finding leaves before the state that raised it
/// is in one).
pub struct Service {
    /// Detection over everything taken in.
    pub detection: Detection,
    /// Where events and findings go.
    pub outputs: Outputs,
    /// The checkpoint directory, if configured.
    pub state: Option<StateStore>,
    /// The offsets of the last checkpoint written: nothing was taken in since when they are
    /// the same, and the checkpoint on disk still holds the state.
    pub saved: Option<Offsets>,
}

impl Stage for Service {
    fn event(&mut self, event: Event) {
        self.outputs.detect(&mut self.detection, event);
        self.outputs.metrics.set_held(self.detection.held());
    }

    fn assigned(&mut self, partitions: &[(String, i32)]) {
        self.outputs.assign(&mut self.detection, partitions);
        self.outputs.metrics.set_held(self.detection.held());
    }

    fn idle(&mut self, topic: &str, partition: i32, idle: bool) {
        self.outputs.idle(&mut self.detection, topic, partition, idle);
        self.outputs.metrics.set_held(self.detection.held());
    }

    fn durable(&mut self, offsets: &Offsets) -> anyhow::Result<()> {
        self.outputs.durable()?;
        // Held findings go into the checkpoint even when no record was read since the last
        // one (an idle partition released the events behind them).
        if self.saved.as_ref() != Some(offsets) || self.detection.held() > 0 {
            self.checkpoint(offsets)?;
        }
        if self.detection.held() > 0 {
            self.outputs.release(&mut self.detection);
            self.outputs.metrics.set_held(0);
            // Released: written out, and a checkpoint without them, so that a restart does not
            // release them again (only a crash in between does; the store and the sinks take
            // a finding they have once, the journal and the live stream show it twice).
            self.outputs.durable()?;
            self.saved = None;
            self.checkpoint(offsets)?;
        }
        Ok(())
    }
}

impl Service {
    /// Writes a checkpoint of the detection at `offsets` (nothing without `state.dir`).
    fn checkpoint(&mut self, offsets: &Offsets) -> anyhow::Result<()> {
        let out = &self.outputs;
        if let Some(state) = &mut self.state {
            let started = Instant::now();
            let path = state.save(&self.detection, offsets)?;
            let took = started.elapsed();
            out.metrics.checkpoint(took);
            tracing::debug!(
                file = %path.display(),
                identities = self.detection.engine().baseline().len(),
                waiting = self.detection.waiting(),
                seconds = took.as_secs_f64(),
                "Checkpoint written."
            );
            self.saved = Some(offsets.clone());
        }
        Ok(())
    }
}
