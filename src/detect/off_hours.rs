//! `off_hours`: an established identity acts at an hour of the week where it has never been
//! active, nor within `tolerance_hours` of it (so a batch that runs a little late, or a
//! daylight-saving shift, is not off hours).

use super::{Cx, Detector, detector_config};
use crate::baseline::is_activity;
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};

detector_config! {
    /// `detectors/off_hours.toml`
    pub struct OffHoursConfig {
        severity: Severity::Low,
        suppress_minutes: 360,
        /// Hours before and after an active hour of the week that still count as usual.
        pub tolerance_hours: u32 = 1,
    }
}

/// See the module docs.
pub struct OffHours(OffHoursConfig);

impl Detector for OffHours {
    const ID: DetectorId = DetectorId::OffHours;
    type Config = OffHoursConfig;

    fn new(config: OffHoursConfig) -> Self {
        OffHours(config)
    }

    fn config(&self) -> &OffHoursConfig {
        &self.0
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        if !is_activity(cx.event) || !cx.established || cx.state.active_near(cx.event.time, self.0.tolerance_hours) {
            return;
        }
        let when = cx.event.time.format("%A %H:%M UTC").to_string();
        let active = cx.state.active_hours();
        let mut hit = self.hit(
            Confidence::Medium,
            format!("{} active off hours ({})", cx.who(), when),
            format!(
                "{} acted on {} ({}). In {} of history it was active in {} of the 168 hours of the week, \
                 never within {} hour(s) of this one.",
                cx.who(),
                when,
                cx.event.kind,
                cx.ago(cx.state.first_seen),
                active,
                self.0.tolerance_hours,
            ),
        );
        hit.analysis = vec![Analysis::new(
            "hour_of_week",
            when,
            format!("{active} active hours of 168"),
            format!("unseen within {} hour(s)", self.0.tolerance_hours),
        )];
        hits.push(hit);
    }
}
