//! `phi_volume`: distinct patients touched in a clock hour far above what the identity usually
//! touches at that hour of the week, or moderately above it for several hours in a row, with
//! absolute floors; or above the registry's `max_patients_per_hour`.
//!
//! The expectation for an hour comes from the identity's hour-of-week profile
//! ([`crate::baseline::Profile`]): its level for that slot (shrunk toward the same hour on other
//! days while the slot has few observations), or a recurring peak remembered at that time of the
//! week or month (a weekly export, a monthly job). Two rules judge the hour being counted:
//!
//! - **sharp**: above max(`min_patients`, `ratio` × expected, expected + `z` sd);
//! - **run**: above max(`run_min_patients`, `run_ratio` × expected, expected + `run_z` sd) when
//!   the `run_hours − 1` clock hours before it were each above the same bounds for their own
//!   slot, so a sustained excess too small for one hour to stand out is seen.
//!
//! One hit per clock hour at most, when the count crosses the lower bound that applies; hits of
//! consecutive hours fold into one finding (within `suppress_minutes`), whose count is the hours
//! reported: each sharp hour, and each hour of a run from its `run_hours`-th on. Until the
//! profile covers a week (an identity whose PHI access began after its learning period, or one
//! restored from a checkpoint written before profiles) an hour is judged as before them: against
//! the typical active hour and `peak_factor` × the highest hour learned.

use super::{Cx, Detector, detector_config};
use crate::baseline::profile::{Basis, Expectation, Profile, RECENT, slot_of};
use crate::event::EventKind;
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};

detector_config! {
    /// `detectors/phi_volume.toml`
    pub struct PhiVolumeConfig {
        severity: Severity::High,
        suppress_minutes: 180,
        /// Patients per hour below which no single hour is reported (the absolute floor).
        pub min_patients: u64 = 200,
        /// A single hour must exceed this many times what its hour of the week usually holds...
        pub ratio: f64 = 5.0,
        /// ...and that level by this many standard deviations of the identity's hours around its
        /// profile (log scale).
        pub z: f64 = 4.0,
        /// Hours in a row that make a sustained run (2 to 8).
        pub run_hours: u32 = 3,
        /// Patients per hour below which an hour does not count toward a run.
        pub run_min_patients: u64 = 50,
        /// Each hour of a run must exceed this many times what its hour of the week usually
        /// holds...
        pub run_ratio: f64 = 3.0,
        /// ...and that level by this many standard deviations.
        pub run_z: f64 = 2.0,
        /// Until the identity's hour-of-week profile covers a week, an hour must also exceed this
        /// many times the highest hour learned.
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

    fn validate(c: &PhiVolumeConfig) -> Result<(), String> {
        let most = RECENT as u32 + 1;
        if !(2..=most).contains(&c.run_hours) {
            return Err(format!("run_hours is {}; it must be 2 to {most}", c.run_hours));
        }
        for (name, value, least) in [
            ("ratio", c.ratio, 1.0),
            ("run_ratio", c.run_ratio, 1.0),
            ("z", c.z, 0.0),
            ("run_z", c.run_z, 0.0),
            ("peak_factor", c.peak_factor, 0.0),
        ] {
            if !value.is_finite() || value < least {
                return Err(format!("{name} is {value}; it must be at least {least}"));
            }
        }
        Ok(())
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
        match v.profile().filter(|p| p.mature(v.hour)) {
            Some(profile) => self.seasonal(cx, profile, &hour, crossed, hits),
            None => self.before_profiles(cx, &hour, crossed, hits),
        }
    }
}

/// "Tuesdays 01:00–02:00 UTC".
fn slot_name(slot: usize) -> String {
    const DAYS: [&str; 7] = [
        "Mondays",
        "Tuesdays",
        "Wednesdays",
        "Thursdays",
        "Fridays",
        "Saturdays",
        "Sundays",
    ];
    let hour = slot % 24;
    format!("{} {}", DAYS[slot / 24], hours_of_day(hour))
}

fn hours_of_day(hour: usize) -> String {
    format!("{hour:02}:00–{:02}:00 UTC", (hour + 1) % 24)
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// What the identity usually does at the hour's time, as a sentence.
fn usual(who: &str, slot: usize, expected: &Expectation) -> String {
    let patients = expected.patients();
    match expected.basis {
        Basis::Slot(n) => {
            let learned = if n >= 3 {
                "learned over three weeks or more".to_owned()
            } else {
                format!(
                    "seen there {}, weighed with its other days at that hour",
                    if n == 1 { "once" } else { "twice" }
                )
            };
            format!(
                "On {} {who} usually touches {patients:.0} patients an hour ({learned})",
                slot_name(slot)
            )
        }
        Basis::HourOfDay => format!(
            "{who} was never active on {} before; at {} on other days it usually touches {patients:.0} \
             patients an hour",
            slot_name(slot),
            hours_of_day(slot % 24)
        ),
        Basis::Overall => format!(
            "{who} was never active at {} before; its typical active hour touches {patients:.0} patients",
            hours_of_day(slot % 24)
        ),
        Basis::Peak { weekly, monthly } => format!(
            "{} is the time of a {} peak of {who}, usually about {patients:.0} patients an hour",
            slot_name(slot),
            match (weekly, monthly) {
                (true, false) => "weekly",
                (false, true) => "monthly",
                _ => "recurring",
            }
        ),
    }
}

impl PhiVolume {
    /// Bound of an hour of a run whose expectation is `expected` (log), with spread `sd`.
    fn run_bound(&self, expected: f64, sd: f64) -> f64 {
        (self.0.run_min_patients as f64)
            .max(self.0.run_ratio * expected.exp_m1())
            .max((expected + self.0.run_z * sd).exp_m1())
    }

    fn seasonal(&self, cx: &Cx<'_>, profile: &Profile, hour: &str, crossed: impl Fn(u64) -> bool, hits: &mut Vec<Hit>) {
        let v = &cx.state.volume;
        let Some(expected) = profile.expect(v.hour, v.overall()) else {
            return;
        };
        let sd = profile.sd();
        let usual_patients = expected.patients();
        let sharp = (self.0.min_patients as f64)
            .max(self.0.ratio * usual_patients)
            .max((expected.log + self.0.z * sd).exp_m1())
            .ceil() as u64;
        // Clock hours just before this one, each above the run's bound for its own slot.
        let streak = (0..RECENT)
            .map_while(|k| profile.recent(k))
            .take_while(|past| past.log >= self.run_bound(past.expected, sd).ln_1p())
            .count();
        let in_run = streak + 1 >= self.0.run_hours as usize;
        let run = in_run.then(|| self.run_bound(expected.log, sd).ceil() as u64);
        let (threshold, is_run) = match run {
            Some(r) if r < sharp => (r, true),
            _ => (sharp, false),
        };
        if !crossed(threshold) {
            return;
        }
        let who = cx.who();
        let slot = slot_of(v.hour);
        let usual = usual(&who, slot, &expected);
        let (title, explanation) = if is_run {
            let since = crate::detect::rfc3339((v.hour - streak as i64) * 3600);
            (
                format!(
                    "Unusual PHI volume by {who}: {} patients in an hour, {} hours in a row",
                    v.patients,
                    streak + 1
                ),
                format!(
                    "{usual}; in the hour from {hour} it touched {} ({} records), the {} hour in a row above \
                     {}× its usual level for the hour (since {since}). The bound for an hour of a run, {threshold}, \
                     is the highest of: the floor of {}, {}× the usual level, and the usual level + {} standard \
                     deviations of its hours around its hour-of-week profile (log scale, sd {sd:.2}).",
                    v.patients,
                    v.records,
                    ordinal(streak + 1),
                    self.0.run_ratio,
                    self.0.run_min_patients,
                    self.0.run_ratio,
                    self.0.run_z,
                ),
            )
        } else {
            (
                format!("Unusual PHI volume by {who}: {} patients in an hour", v.patients),
                format!(
                    "{usual}; in the hour from {hour} it touched {} ({} records). The threshold, {threshold}, is the \
                     highest of: the floor of {}, {}× the usual level, and the usual level + {} standard deviations \
                     of its hours around its hour-of-week profile (log scale, sd {sd:.2}).",
                    v.patients, v.records, self.0.min_patients, self.0.ratio, self.0.z,
                ),
            )
        };
        let mut hit = self.hit(Confidence::High, title, explanation);
        hit.analysis = vec![Analysis::new(
            "patients_per_hour",
            v.patients,
            usual_patients.round(),
            threshold,
        )];
        if is_run {
            hit.analysis.push(Analysis::new(
                "hours_in_a_row",
                streak as u64 + 1,
                serde_json::Value::Null,
                self.0.run_hours,
            ));
        }
        hits.push(hit);
    }

    /// The rule before hour-of-week profiles: the typical active hour and the highest hour.
    fn before_profiles(&self, cx: &Cx<'_>, hour: &str, crossed: impl Fn(u64) -> bool, hits: &mut Vec<Hit>) {
        let v = &cx.state.volume;
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
            format!("Unusual PHI volume by {}: {} patients in an hour", cx.who(), v.patients),
            format!(
                "{} touched {} distinct patients ({} records) in the hour from {}. Over its {} active hours \
                 it typically touches {:.0} per hour, and at most {} in one hour (its hour-of-week profile \
                 covers less than a week). The threshold, {}, is the highest of: the floor of {}, {}× typical, \
                 the mean + {} standard deviations of the log volume, and {}× the highest hour.",
                cx.who(),
                v.patients,
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
        hit.analysis = vec![Analysis::new(
            "patients_per_hour",
            v.patients,
            v.typical().round(),
            threshold,
        )];
        hits.push(hit);
    }
}
