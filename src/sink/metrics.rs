//! The sinks' metric families, rendered from their counters and the outbox at each scrape.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::SinkStats;
use super::outbox::Outbox;
use crate::telemetry::metrics::Exposition;

/// The outbox and the sinks reading it, as `/metrics` shows them.
pub struct SinkMetrics {
    /// The outbox.
    pub outbox: Arc<Outbox>,
    /// One per sink, in configuration order.
    pub stats: Vec<Arc<SinkStats>>,
}

impl Exposition for SinkMetrics {
    fn render(&self, s: &mut String) {
        let (outbox, stats) = (&self.outbox, &self.stats);
        let head = outbox.head();
        let now = chrono::Utc::now();
        type Read = fn(&SinkStats, u64, Option<f64>) -> String;
        let families: [(&str, &str, &str, Read); 7] = [
            (
                "nhiwatch_sink_delivered_total",
                "counter",
                "Finding deliveries the receiver accepted, per sink.",
                |st, _, _| st.delivered.load(Ordering::Relaxed).to_string(),
            ),
            (
                "nhiwatch_sink_retried_total",
                "counter",
                "Delivery attempts retried after a failure, per sink.",
                |st, _, _| st.retried.load(Ordering::Relaxed).to_string(),
            ),
            (
                "nhiwatch_sink_failed_total",
                "counter",
                "Failed delivery attempts, per sink.",
                |st, _, _| st.failed.load(Ordering::Relaxed).to_string(),
            ),
            (
                "nhiwatch_sink_dropped_total",
                "counter",
                "Deliveries dropped unsent because the outbox was full, per sink.",
                |st, _, _| st.dropped.load(Ordering::Relaxed).to_string(),
            ),
            (
                "nhiwatch_sink_filtered_total",
                "counter",
                "Deliveries skipped by the sink's min_severity.",
                |st, _, _| st.filtered.load(Ordering::Relaxed).to_string(),
            ),
            (
                "nhiwatch_sink_queue_depth",
                "gauge",
                "Deliveries waiting in the outbox, per sink.",
                |st, head, _| head.saturating_sub(st.cursor.load(Ordering::Relaxed)).to_string(),
            ),
            (
                "nhiwatch_sink_oldest_pending_seconds",
                "gauge",
                "Age of the oldest delivery waiting, per sink (0 when none).",
                |_, _, age| age.unwrap_or(0.0).to_string(),
            ),
        ];
        for (name, kind, help, read) in families {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for st in stats {
                let age = outbox
                    .queued_at(st.cursor.load(Ordering::Relaxed))
                    .map(|t| ((now - t).num_milliseconds().max(0) as f64) / 1000.0);
                let _ = writeln!(s, "{name}{{sink=\"{}\"}} {}", st.name, read(st, head, age));
            }
        }
        let _ = writeln!(
            s,
            "# HELP nhiwatch_outbox_bytes Bytes retained in the delivery outbox.\n# TYPE nhiwatch_outbox_bytes gauge\nnhiwatch_outbox_bytes {}",
            outbox.retained_bytes()
        );
    }
}
