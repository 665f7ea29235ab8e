//! `phi_volume`: distinct patients touched in a clock hour far above the identity's own
//! baseline, with an absolute floor; or above the registry's `max_patients_per_hour`.
//!
//! The baseline is robust: an exponentially weighted mean and variance of `ln(1 + patients)` over
//! the identity's active hours, clamped so that one spike does not become the new normal, and the
//! highest hour learned, so a weekly export peak already seen is not news. Reported once, when the
//! hour's count crosses the threshold.

use super::{Cx, Detector, detector_config};
use crate::event::EventKind;
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};

detector_config! {
    /// `detectors/phi_volume.toml`
    pub struct PhiVolumeConfig {
        severity: Severity::High,
        suppress_minutes: 180,
        /// Patients per hour below which nothing is reported.
        pub min_patients: u64 = 200,
        /// The hour must exceed this many times the typical active hour.
        pub ratio: f64 = 5.0,
        /// ... and the mean of the log estimate by this many standard deviations.
        pub z: f64 = 4.0,
        /// ... and this many times the highest hour learned.
        pub peak_factor: f64 = 1.5,
        /// Active hours learned before the baseline is trusted.
        pub min_hours: u32 = 24,
        /// Also report hours above the registry's `max_patients_per_hour`.
        pub registry_ceiling: bool = true,
    }
}

/// See the module docs.
pub struct PhiVolume(PhiVolumeConfig);

impl Detector for PhiVolume {
    const ID: DetectorId = DetectorId::PhiVolume;
    type Config = PhiVolumeConfig;

    fn new(config: PhiVolumeConfig) -> Self {
        PhiVolume(config)
    }

    fn config(&self) -> &PhiVolumeConfig {
        &self.0
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let e = cx.event;
        if e.kind != EventKind::DataAccess || !crate::baseline::is_activity(e) {
            return;
        }
        let v = &cx.state.volume;
        let now = v.patients;
        let before = now.saturating_sub(e.distinct_patients());
        if now == before {
            return;
        }
        let crossed = |threshold: u64| before <= threshold && now > threshold;
        let hour = crate::detect::rfc3339(v.hour * 3600);
        if self.0.registry_ceiling
            && let Some(ceiling) = cx.entry.and_then(|en| en.max_patients_per_hour)
            && crossed(ceiling)
        {
            let mut hit = self.hit(
                Confidence::High,
                format!("{} exceeded its approved patient volume", cx.who()),
                format!(
                    "{} touched {} distinct patients in the hour from {}, above the registry's ceiling of \
                     {} per hour. Its typical active hour is {:.0} patients.",
                    cx.who(),
                    now,
                    hour,
                    ceiling,
                    v.typical()
                ),
            );
            hit.analysis = vec![Analysis::new("patients_per_hour", now, v.typical().round(), ceiling)];
            hits.push(hit);
            return;
        }
        if !cx.established || v.hours < self.0.min_hours {
            return;
        }
        let statistical = (v.mean + self.0.z * v.sd()).exp_m1();
        let threshold = (self.0.min_patients as f64)
            .max(self.0.ratio * v.typical())
            .max(statistical)
            .max(self.0.peak_factor * v.peak as f64)
            .ceil() as u64;
        if !crossed(threshold) {
            return;
        }
        let mut hit = self.hit(
            Confidence::High,
            format!("Unusual PHI volume by {}: {} patients in an hour", cx.who(), now),
            format!(
                "{} touched {} distinct patients ({} records) in the hour from {}. Over its {} active hours \
                 it typically touches {:.0} per hour, and at most {} in one hour. The threshold, {}, is the \
                 highest of: the floor of {}, {}× typical, the mean + {} standard deviations of the log \
                 volume, and {}× the highest hour.",
                cx.who(),
                now,
                v.records,
                hour,
                v.hours,
                v.typical(),
                v.peak,
                threshold,
                self.0.min_patients,
                self.0.ratio,
                self.0.z,
                self.0.peak_factor,
            ),
        );
        hit.analysis = vec![Analysis::new("patients_per_hour", now, v.typical().round(), threshold)];
        hits.push(hit);
    }
}
