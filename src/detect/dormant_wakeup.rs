//! `dormant_wakeup`: an established identity acts after a silence far longer than its own
//! cadence and at least `dormant_after_days`. A monthly job that runs after 30 days is not
//! dormant: its longest silence so far is already about 30 days.

use super::{Cx, Detector, detector_config, human_duration, rfc3339};
use crate::baseline::is_activity;
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};

detector_config! {
    /// `detectors/dormant_wakeup.toml`
    pub struct DormantWakeupConfig {
        severity: Severity::High,
        suppress_minutes: 1440,
        /// Silence, in days, after which an identity counts as dormant.
        pub dormant_after_days: u32 = 30,
        /// The silence must also be this many times the identity's longest silence so far.
        pub cadence_factor: f64 = 3.0,
        /// Days with activity needed before the cadence is trusted: a job seen on one day only
        /// has shown no cadence yet (a monthly job's second run is not a wake-up).
        pub min_active_days: u32 = 3,
    }
}

/// See the module docs.
pub struct DormantWakeup(DormantWakeupConfig);

impl Detector for DormantWakeup {
    const ID: DetectorId = DetectorId::DormantWakeup;
    type Config = DormantWakeupConfig;

    fn new(config: DormantWakeupConfig) -> Self {
        DormantWakeup(config)
    }

    fn config(&self) -> &DormantWakeupConfig {
        &self.0
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let Some(last) = cx.state.last_seen else { return };
        if !is_activity(cx.event) || !cx.established || cx.state.active_days < self.0.min_active_days {
            return;
        }
        let silence = cx.now - last;
        let floor = i64::from(self.0.dormant_after_days) * 86_400;
        let cadence = (cx.state.max_gap as f64 * self.0.cadence_factor) as i64;
        let threshold = floor.max(cadence);
        if silence < threshold {
            return;
        }
        let days = |s: i64| (s as f64 / 86_400.0 * 10.0).round() / 10.0;
        let mut hit = self.hit(
            Confidence::High,
            format!(
                "Dormant identity {} active again after {}",
                cx.who(),
                human_duration(silence)
            ),
            format!(
                "{} acted ({}) after {} of silence; its last activity was {}. Its longest silence in {} \
                 of history before this was {}, so a silence of at least {} ({} days, or {}× its own cadence) \
                 means the integration was dormant. A dormant credential that wakes up should be confirmed \
                 with its owner{}.",
                cx.who(),
                cx.event.kind,
                human_duration(silence),
                rfc3339(last),
                human_duration(last - cx.state.first_seen),
                human_duration(cx.state.max_gap),
                human_duration(threshold),
                self.0.dormant_after_days,
                self.0.cadence_factor,
                cx.entry
                    .and_then(|e| e.owner.as_deref())
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default(),
            ),
        );
        hit.analysis = vec![Analysis::new(
            "silence_days",
            days(silence),
            days(cx.state.max_gap),
            days(threshold),
        )];
        hits.push(hit);
    }
}
