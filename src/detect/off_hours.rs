//! `off_hours`: an established identity acts at an hour of the week where it has never been
//! active, nor within `tolerance_hours` of it (so a batch that runs a little late, or a
//! daylight-saving shift, is not off hours), and either
//!
//! - at an hour of the day it has never been active on any day, or
//! - on a day of the week it has never been active, after `min_active_days` days of activity.
//!
//! The second condition keeps a monthly job at 03:00, which lands on a different weekday each
//! month, from looking off hours, while a weekday-only integration acting on a weekend is.

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
        /// Days with activity before a never-active day of the week counts as off hours.
        pub min_active_days: u32 = 14,
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
        let (t, tolerance) = (cx.event.time, self.0.tolerance_hours);
        if !is_activity(cx.event) || !cx.established || cx.state.active_near(t, tolerance) {
            return;
        }
        let new_hour = !cx.state.active_at_hour_of_day(t, tolerance);
        let new_day = cx.state.active_days >= self.0.min_active_days && !cx.state.active_on_weekday(t);
        if !new_hour && !new_day {
            return;
        }
        let when = cx.event.time.format("%A %H:%M UTC").to_string();
        let active = cx.state.active_hours();
        let mut hit = self.hit(
            Confidence::Medium,
            format!("{} active off hours ({})", cx.who(), when),
            format!(
                "{} acted on {} ({}). In {} of history it was active in {} of the 168 hours of the week, \
                 never within {} hour(s) of this one, and never {}.",
                cx.who(),
                when,
                cx.event.kind,
                cx.ago(cx.state.first_seen),
                active,
                tolerance,
                if new_hour {
                    format!("at this hour of the day on any day (± {tolerance} h)")
                } else {
                    format!("on a {}", t.format("%A"))
                },
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
