//! Metrics in Prometheus text form, named `nhiwatch_<noun>_<unit>` with labels from small fixed
//! sets only (format, reason, detector) — never an identity or a patient.
//!
//! Counters are atomics written by the consumer thread and read by `/metrics`; processing
//! latency (Kafka append → processed by the pipeline) is an HdrHistogram behind a mutex taken
//! once per record.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::event::SourceFormat;
use crate::findings::DetectorId;
use crate::normalize::ParseError;

/// The process's metrics.
pub struct Metrics {
    records: AtomicU64,
    events: Vec<AtomicU64>,
    dead_letters: Vec<AtomicU64>,
    skipped: Vec<AtomicU64>,
    findings: Vec<AtomicU64>,
    lag: AtomicI64,
    checkpoints: AtomicU64,
    checkpoint_micros: AtomicU64,
    checkpoint_at: AtomicI64,
    late: AtomicU64,
    early: AtomicU64,
    duplicates: Vec<AtomicU64>,
    dedupe_forgotten: AtomicU64,
    paused: AtomicU64,
    paused_ahead: AtomicU64,
    idle_partitions: AtomicU64,
    held: AtomicU64,
    released: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    parts: Mutex<Vec<Arc<dyn Exposition>>>,
    http_open: AtomicI64,
    http_refused: Vec<AtomicU64>,
    http_evicted: AtomicU64,
}

/// Why the HTTP server closed a connection at once: `per_ip` (the client's address holds
/// `http.max_unauthenticated_per_ip`), `capacity` (`http.max_connections` open and none idle, or
/// the idle ones closed for new ones not yet gone).
pub const HTTP_REFUSALS: [&str; 2] = ["per_ip", "capacity"];

/// A component that renders its own metric families at each scrape (the SIEM sinks: their
/// counters and the outbox's depth, read when asked). Metrics import no component; components
/// register here ([`Metrics::register`]).
pub trait Exposition: Send + Sync {
    /// Appends its families in the Prometheus text format.
    fn render(&self, out: &mut String);
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        let counters = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Metrics {
            records: AtomicU64::new(0),
            events: counters(SourceFormat::ALL.len()),
            dead_letters: counters(ParseError::REASONS.len()),
            skipped: counters(ParseError::REASONS.len()),
            findings: counters(DetectorId::ALL.len()),
            lag: AtomicI64::new(-1),
            checkpoints: AtomicU64::new(0),
            checkpoint_micros: AtomicU64::new(0),
            checkpoint_at: AtomicI64::new(0),
            late: AtomicU64::new(0),
            early: AtomicU64::new(0),
            duplicates: counters(SourceFormat::ALL.len()),
            dedupe_forgotten: AtomicU64::new(0),
            paused: AtomicU64::new(0),
            paused_ahead: AtomicU64::new(0),
            idle_partitions: AtomicU64::new(0),
            held: AtomicU64::new(0),
            released: AtomicU64::new(0),
            // 1 µs to 1 hour, three significant digits.
            latency: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")),
            parts: Mutex::new(Vec::new()),
            http_open: AtomicI64::new(0),
            http_refused: counters(HTTP_REFUSALS.len()),
            http_evicted: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// A raw record was read.
    pub fn record(&self) {
        self.records.fetch_add(1, Ordering::Relaxed);
    }

    /// An event of `format` came out of the normalizer.
    pub fn event(&self, format: SourceFormat) {
        if let Some(i) = SourceFormat::ALL.iter().position(|f| *f == format) {
            self.events[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A record went to the dead letter for `reason`.
    pub fn dead_letter(&self, reason: &str) {
        if let Some(i) = ParseError::REASONS.iter().position(|r| *r == reason) {
            self.dead_letters[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An entry (a blank record, an empty page, a `Bundle` entry that is not an `AuditEvent`)
    /// was skipped for `reason`.
    pub fn skipped(&self, reason: &str) {
        if let Some(i) = ParseError::REASONS.iter().position(|r| *r == reason) {
            self.skipped[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The HTTP server admitted a connection (`1`) or one closed (`-1`).
    pub fn http_connections(&self, change: i64) {
        self.http_open.fetch_add(change, Ordering::Relaxed);
    }

    /// The HTTP server closed a new connection at once, for `reason` (one of [`HTTP_REFUSALS`]).
    pub fn http_refused(&self, reason: &str) {
        if let Some(i) = HTTP_REFUSALS.iter().position(|r| *r == reason) {
            self.http_refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The HTTP server closed an idle connection to admit a new one past `http.max_connections`.
    pub fn http_evicted(&self) {
        self.http_evicted.fetch_add(1, Ordering::Relaxed);
    }

    /// HTTP connections open now.
    pub fn http_open(&self) -> i64 {
        self.http_open.load(Ordering::Relaxed)
    }

    /// A new finding of `detector`.
    pub fn finding(&self, detector: DetectorId) {
        if let Some(i) = DetectorId::ALL.iter().position(|d| *d == detector) {
            self.findings[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records behind the end of the assigned partitions, summed; -1 when not consuming.
    pub fn set_lag(&self, records: i64) {
        self.lag.store(records, Ordering::Relaxed);
    }

    /// Consumer lag, when known.
    pub fn lag(&self) -> Option<i64> {
        let lag = self.lag.load(Ordering::Relaxed);
        (lag >= 0).then_some(lag)
    }

    /// A checkpoint was written, taking `took`.
    pub fn checkpoint(&self, took: std::time::Duration) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.checkpoint_micros
            .store(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.checkpoint_at
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    }

    /// An event arrived later than the lateness bound (judged at once, out of order).
    pub fn late_event(&self) {
        self.late.fetch_add(1, Ordering::Relaxed);
    }

    /// An event was judged before its lateness had passed (`engine.max_waiting_events` reached).
    pub fn released_early(&self) {
        self.early.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` repeats of records of `format` already judged were dropped.
    pub fn duplicate_events(&self, format: SourceFormat, n: u64) {
        if let Some(i) = SourceFormat::ALL.iter().position(|f| *f == format) {
            self.duplicates[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// `n` record ids were forgotten before their window passed (`engine.dedupe_max_ids`).
    pub fn dedupe_forgotten(&self, n: u64) {
        self.dedupe_forgotten.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether consumption is paused for backpressure.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(u64::from(paused), Ordering::Relaxed);
    }

    /// Partitions paused for running ahead of the slowest in event time, and partitions idle.
    pub fn set_alignment(&self, paused_ahead: usize, idle: usize) {
        self.paused_ahead.store(paused_ahead as u64, Ordering::Relaxed);
        self.idle_partitions.store(idle as u64, Ordering::Relaxed);
    }

    /// Findings raised and waiting for the commit point that makes their state durable.
    pub fn set_held(&self, findings: usize) {
        self.held.store(findings as u64, Ordering::Relaxed);
    }

    /// Held findings released after a commit point.
    pub fn released(&self, findings: usize) {
        self.released.fetch_add(findings as u64, Ordering::Relaxed);
    }

    /// Time from Kafka append to processed, in microseconds.
    pub fn latency_micros(&self, micros: u64) {
        let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        h.saturating_record(micros.max(1));
    }

    /// Forgets the latencies recorded so far (a benchmark's warm-up).
    pub fn reset_latency(&self) {
        self.latency.lock().unwrap_or_else(|p| p.into_inner()).reset();
    }

    /// The latency at quantiles `qs` (0..1), in milliseconds.
    pub fn latency_quantiles(&self, qs: &[f64]) -> Vec<f64> {
        let h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        qs.iter().map(|&q| h.value_at_quantile(q) as f64 / 1000.0).collect()
    }

    /// Renders `part`'s own families at every scrape, after the counters here.
    pub fn register(&self, part: Arc<dyn Exposition>) {
        self.parts.lock().unwrap_or_else(|p| p.into_inner()).push(part);
    }

    /// Findings counted for `detector`.
    pub fn findings_of(&self, detector: DetectorId) -> u64 {
        DetectorId::ALL
            .iter()
            .position(|d| *d == detector)
            .map_or(0, |i| self.findings[i].load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP nhiwatch_records_total Raw records read.\n# TYPE nhiwatch_records_total counter\n\
             nhiwatch_records_total {}",
            self.records.load(Ordering::Relaxed)
        );
        let labelled = |s: &mut String, name: &str, kind: &str, help: &str, label: &str, rows: Vec<(&str, u64)>| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (value, n) in rows {
                let _ = writeln!(s, "{name}{{{label}=\"{value}\"}} {n}");
            }
        };
        let load = |v: &[AtomicU64], i: usize| v[i].load(Ordering::Relaxed);
        labelled(
            &mut s,
            "nhiwatch_events_total",
            "counter",
            "Events normalized, per source format.",
            "format",
            SourceFormat::ALL
                .iter()
                .enumerate()
                .map(|(i, f)| (f.as_str(), load(&self.events, i)))
                .collect(),
        );
        labelled(
            &mut s,
            "nhiwatch_dead_letters_total",
            "counter",
            "Records, or elements of a page or Bundle, sent to the dead letter, per reason.",
            "reason",
            ParseError::REASONS
                .iter()
                .enumerate()
                .map(|(i, r)| (*r, load(&self.dead_letters, i)))
                .collect(),
        );
        // Only the reasons an entry is skipped for: the others never count here.
        labelled(
            &mut s,
            "nhiwatch_skipped_total",
            "counter",
            "Records and page or Bundle elements passed over without an event or a dead letter, per reason.",
            "reason",
            ParseError::REASONS
                .iter()
                .enumerate()
                .filter(|(_, r)| matches!(**r, "empty" | "not_audit_event"))
                .map(|(i, r)| (*r, load(&self.skipped, i)))
                .collect(),
        );
        labelled(
            &mut s,
            "nhiwatch_duplicate_events_total",
            "counter",
            "Repeats of a source record already judged within engine.dedupe_window_seconds, dropped, per source format.",
            "format",
            SourceFormat::ALL
                .iter()
                .enumerate()
                .map(|(i, f)| (f.as_str(), load(&self.duplicates, i)))
                .collect(),
        );
        labelled(
            &mut s,
            "nhiwatch_findings_total",
            "counter",
            "New findings, per detector.",
            "detector",
            DetectorId::ALL
                .iter()
                .enumerate()
                .map(|(i, d)| (d.as_str(), load(&self.findings, i)))
                .collect(),
        );
        let _ = writeln!(
            s,
            "# HELP nhiwatch_consumer_lag_records Records between the consumer's position and the end of its partitions (-1: unknown).\n\
             # TYPE nhiwatch_consumer_lag_records gauge\nnhiwatch_consumer_lag_records {}",
            self.lag.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP nhiwatch_checkpoints_total Checkpoints of the detection state written.\n\
             # TYPE nhiwatch_checkpoints_total counter\nnhiwatch_checkpoints_total {}\n\
             # HELP nhiwatch_checkpoint_duration_seconds How long the last checkpoint took to write.\n\
             # TYPE nhiwatch_checkpoint_duration_seconds gauge\nnhiwatch_checkpoint_duration_seconds {}\n\
             # HELP nhiwatch_checkpoint_timestamp_seconds When the last checkpoint was written (0: none yet).\n\
             # TYPE nhiwatch_checkpoint_timestamp_seconds gauge\nnhiwatch_checkpoint_timestamp_seconds {}\n\
             # HELP nhiwatch_late_events_total Events later than engine.lateness_seconds: judged at once, out of event-time order.\n\
             # TYPE nhiwatch_late_events_total counter\nnhiwatch_late_events_total {}\n\
             # HELP nhiwatch_released_early_total Events judged before their lateness had passed, engine.max_waiting_events being reached.\n\
             # TYPE nhiwatch_released_early_total counter\nnhiwatch_released_early_total {}\n\
             # HELP nhiwatch_dedupe_forgotten_total Record ids forgotten before engine.dedupe_window_seconds had passed, engine.dedupe_max_ids being reached.\n\
             # TYPE nhiwatch_dedupe_forgotten_total counter\nnhiwatch_dedupe_forgotten_total {}\n\
             # HELP nhiwatch_consumption_paused 1 while consumption is paused until what was taken in is durable.\n\
             # TYPE nhiwatch_consumption_paused gauge\nnhiwatch_consumption_paused {}\n\
             # HELP nhiwatch_partitions_paused_ahead Partitions paused for running ahead of the slowest one in event time by more than engine.lateness_seconds.\n\
             # TYPE nhiwatch_partitions_paused_ahead gauge\nnhiwatch_partitions_paused_ahead {}\n\
             # HELP nhiwatch_partitions_idle Partitions at their end or silent for kafka.idle_partition_seconds, not holding the watermark back.\n\
             # TYPE nhiwatch_partitions_idle gauge\nnhiwatch_partitions_idle {}\n\
             # HELP nhiwatch_findings_held Findings raised and waiting for the commit point that makes the state behind them durable.\n\
             # TYPE nhiwatch_findings_held gauge\nnhiwatch_findings_held {}\n\
             # HELP nhiwatch_findings_released_total Findings released to the journal, API and sinks after a commit point.\n\
             # TYPE nhiwatch_findings_released_total counter\nnhiwatch_findings_released_total {}\n\
             # HELP nhiwatch_resident_memory_bytes Resident memory of the process.\n\
             # TYPE nhiwatch_resident_memory_bytes gauge\nnhiwatch_resident_memory_bytes {}",
            self.checkpoints.load(Ordering::Relaxed),
            self.checkpoint_micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.checkpoint_at.load(Ordering::Relaxed),
            self.late.load(Ordering::Relaxed),
            self.early.load(Ordering::Relaxed),
            self.dedupe_forgotten.load(Ordering::Relaxed),
            self.paused.load(Ordering::Relaxed),
            self.paused_ahead.load(Ordering::Relaxed),
            self.idle_partitions.load(Ordering::Relaxed),
            self.held.load(Ordering::Relaxed),
            self.released.load(Ordering::Relaxed),
            resident_bytes()
        );
        let _ = writeln!(
            s,
            "# HELP nhiwatch_http_connections HTTP connections open.\n\
             # TYPE nhiwatch_http_connections gauge\nnhiwatch_http_connections {}\n\
             # HELP nhiwatch_http_connections_evicted_total Idle HTTP connections closed to admit new ones past http.max_connections.\n\
             # TYPE nhiwatch_http_connections_evicted_total counter\nnhiwatch_http_connections_evicted_total {}",
            self.http_open.load(Ordering::Relaxed),
            self.http_evicted.load(Ordering::Relaxed)
        );
        labelled(
            &mut s,
            "nhiwatch_http_connections_refused_total",
            "counter",
            "New HTTP connections answered at once and closed, per reason.",
            "reason",
            HTTP_REFUSALS
                .iter()
                .enumerate()
                .map(|(i, r)| (*r, load(&self.http_refused, i)))
                .collect(),
        );
        let h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            s,
            "# HELP nhiwatch_processing_latency_seconds From Kafka append to processed by the pipeline.\n\
             # TYPE nhiwatch_processing_latency_seconds summary"
        );
        for q in [0.5, 0.9, 0.99, 0.999] {
            let _ = writeln!(
                s,
                "nhiwatch_processing_latency_seconds{{quantile=\"{q}\"}} {}",
                h.value_at_quantile(q) as f64 / 1e6
            );
        }
        let sum: f64 = h
            .iter_recorded()
            .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
            .sum::<f64>()
            / 1e6;
        let _ = writeln!(s, "nhiwatch_processing_latency_seconds_sum {sum}");
        let _ = writeln!(s, "nhiwatch_processing_latency_seconds_count {}", h.len());
        drop(h);
        for part in self.parts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            part.render(&mut s);
        }
        s
    }
}

/// Resident memory of this process in bytes (`VmRSS` of Linux's `/proc/self/status`; 0 where
/// unknown).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_fixed_labels_and_latency_quantiles() {
        let m = Metrics::default();
        m.record();
        m.record();
        m.event(SourceFormat::Okta);
        m.dead_letter("malformed_json");
        m.skipped("empty");
        m.finding(DetectorId::BreakGlass);
        m.set_lag(42);
        m.checkpoint(std::time::Duration::from_millis(1500));
        m.late_event();
        m.late_event();
        m.duplicate_events(SourceFormat::GcpAudit, 3);
        m.dedupe_forgotten(4);
        m.set_paused(true);
        m.set_alignment(3, 2);
        m.set_held(5);
        m.released(4);
        m.http_connections(1);
        m.http_connections(1);
        m.http_connections(-1);
        m.http_refused("per_ip");
        m.http_evicted();
        for micros in [1_000, 2_000, 3_000, 100_000] {
            m.latency_micros(micros);
        }
        let text = m.render();
        for line in [
            "nhiwatch_records_total 2",
            "nhiwatch_events_total{format=\"okta\"} 1",
            "nhiwatch_events_total{format=\"keycloak\"} 0",
            "nhiwatch_dead_letters_total{reason=\"malformed_json\"} 1",
            "nhiwatch_skipped_total{reason=\"empty\"} 1",
            "nhiwatch_skipped_total{reason=\"not_audit_event\"} 0",
            "nhiwatch_findings_total{detector=\"break_glass\"} 1",
            "nhiwatch_consumer_lag_records 42",
            "nhiwatch_checkpoints_total 1",
            "nhiwatch_late_events_total 2",
            "nhiwatch_released_early_total 0",
            "nhiwatch_duplicate_events_total{format=\"gcp_audit\"} 3",
            "nhiwatch_duplicate_events_total{format=\"okta\"} 0",
            "nhiwatch_dedupe_forgotten_total 4",
            "nhiwatch_consumption_paused 1",
            "nhiwatch_partitions_paused_ahead 3",
            "nhiwatch_partitions_idle 2",
            "nhiwatch_findings_held 5",
            "nhiwatch_findings_released_total 4",
            "nhiwatch_http_connections 1",
            "nhiwatch_http_connections_refused_total{reason=\"per_ip\"} 1",
            "nhiwatch_http_connections_refused_total{reason=\"capacity\"} 0",
            "nhiwatch_http_connections_evicted_total 1",
            "nhiwatch_checkpoint_duration_seconds 1.5",
            "nhiwatch_processing_latency_seconds{quantile=\"0.5\"} 0.002",
            "nhiwatch_processing_latency_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert_eq!(m.lag(), Some(42));
        let resident: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("nhiwatch_resident_memory_bytes "))
            .and_then(|n| n.parse().ok())
            .expect("resident memory");
        assert!(resident > 1 << 20, "a running test holds more than 1 MiB: {resident}");
    }
}
