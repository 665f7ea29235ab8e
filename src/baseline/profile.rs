//! The hour-of-week profile of an identity's PHI volume: what `phi_volume` judges an hour against.
//!
//! An identity's usual volume depends on the time: a lab feed touches a hundred patients an hour
//! at noon and fifteen at 03:00; an export runs on Sunday nights; a report on the 7th of each
//! month. Judged against its all-time typical hour or its all-time peak, four times its night-time
//! level goes unseen. So each identity keeps, per hour of the week (168 slots, Monday 00:00 UTC
//! first), an exponentially weighted mean of `ln(1 + patients)` over the hours it was active in
//! that slot, and the expectation for an hour is
//!
//! - the slot's level, shrunk toward the mean of the same hour of the day on the other days (and,
//!   without those, toward the identity's overall level) while the slot has fewer than three
//!   observations: weight ½ after one, ¾ after two, 1 after three;
//! - or a recurring peak's level, when the hour is where one recurs: an hour 3× or more above
//!   its slot's expectation is remembered by its hour of the week and its day of the month, and
//!   expected there again on a later day (± 1 hour: batches run late; not the same day, so the
//!   hours of a run are not taken for a peak); when the same position comes round with no such
//!   peak, the period it did not keep is struck off. So a weekly export or a monthly job is normal at its
//!   time, not all week.
//!
//! Growth is followed by the per-slot weight (0.3 once a slot has three observations: behind a
//! level growing 2.5× in 60 days, the expectation lags by a factor of about 1.4); an hour far above its slot's
//! expectation (3×) after the learning period moves the slot only as far as 3× (the rest is an
//! anomaly, or a peak the anchors learn), so a run of anomalous hours does not become the norm.
//! The profile also keeps the spread of hours around it (an exponentially weighted variance of the
//! log residual) and the last seven closed hours with their expectations, which `phi_volume`
//! needs to recognise a sustained run.
//!
//! Compact: levels are `u8` at 1/16 of a natural-log unit (6% steps, up to 8 million patients an
//! hour), observation counts 2 bits per slot; 256 bytes in all, on the heap, for identities with
//! PHI access only. In a checkpoint only the observed slots are written.

use chrono::{DateTime, Datelike};

/// Hours of the week.
pub const SLOTS: usize = 168;
/// Closed hours remembered for runs.
pub const RECENT: usize = 7;
/// Recurring peaks remembered.
pub const ANCHORS: usize = 4;
/// Steps per natural-log unit in the quantized levels.
const STEPS: f64 = 16.0;
/// An hour this far above its slot's expectation (×3) is an excursion: a peak to remember, and
/// after the learning period learned only up to this far.
const EXCURSION: f64 = 1.098_612_288_668_109_8; // ln 3
/// Fewest patients in an hour for it to be remembered as a peak.
const MIN_PEAK_PATIENTS: u64 = 20;
/// Weight of a new hour in a slot with three or more observations (about three weeks' memory).
const SLOT_ALPHA: f64 = 0.3;
/// Weight of a new residual in the spread (about two days of active hours).
const SPREAD_ALPHA: f64 = 1.0 / 50.0;
/// A peak not seen again for this many days is forgotten.
const ANCHOR_DAYS: i64 = 45;
/// The floor of the spread (a factor of e^0.25 ≈ 1.3): a perfectly regular identity still has
/// room.
pub const MIN_SD: f64 = 0.25;
/// Bytes of the encoded layout's version.
const LAYOUT: u8 = 1;

const WEEKLY: u8 = 1;
const MONTHLY: u8 = 2;

/// Hour of the week (Monday 00:00 UTC = 0) of a Unix hour.
pub fn slot_of(hour: i64) -> usize {
    let day = hour.div_euclid(24);
    // 1970-01-01 was a Thursday: day 3 counting from Monday.
    ((day + 3).rem_euclid(7) * 24 + hour.rem_euclid(24)) as usize
}

fn day_of_month(hour: i64) -> u8 {
    DateTime::from_timestamp(hour.saturating_mul(3600), 0).map_or(0, |t| t.day() as u8)
}

fn quantize(log: f64) -> u8 {
    (log * STEPS).round().clamp(0.0, 254.0) as u8
}

fn dequantize(q: u8) -> f64 {
    f64::from(q) / STEPS
}

/// Circular distance between two positions on a cycle of `n`.
fn apart(a: usize, b: usize, n: usize) -> usize {
    let d = a.abs_diff(b) % n;
    d.min(n - d)
}

/// A recurring peak: where it was (hour of the week, day of the month), how high, and which of
/// its two periods it has not broken yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Anchor {
    slot: u8,
    day_of_month: u8,
    /// Quantized `ln(1 + patients)`.
    level: u8,
    /// Bit 0: weekly still possible; bit 1: monthly still possible; bits 2–7: times seen (≤ 63).
    flags: u8,
    /// Day (Unix days) last seen.
    last: u16,
}

impl Anchor {
    fn periods(self) -> u8 {
        self.flags & (WEEKLY | MONTHLY)
    }

    fn seen(self) -> u8 {
        self.flags >> 2
    }

    fn live(self, day: i64) -> bool {
        self.periods() != 0 && day - i64::from(self.last) <= ANCHOR_DAYS
    }

    /// Whether `hour` is at (± 1 hour) a position where the peak recurs, on a later day than it
    /// was last seen (so the hours right after a peak, or during a run, are not taken for it).
    fn matches(self, hour: i64) -> bool {
        if hour.div_euclid(24) <= i64::from(self.last) {
            return false;
        }
        let slot = slot_of(hour);
        let weekly = self.flags & WEEKLY != 0 && apart(slot, usize::from(self.slot), SLOTS) <= 1;
        let monthly = self.flags & MONTHLY != 0
            && day_of_month(hour) == self.day_of_month
            && apart(slot % 24, usize::from(self.slot) % 24, 24) <= 1;
        weekly || monthly
    }
}

/// Where an hour's expectation comes from, for explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The slot itself, observed this many times (3 means three or more).
    Slot(u8),
    /// The same hour on other days (the slot was never active).
    HourOfDay,
    /// The identity's usual active hour (never active at this hour of the day).
    Overall,
    /// A recurring peak at this time: weekly, monthly, or not yet known which.
    Peak {
        /// Recurs weekly (as far as seen).
        weekly: bool,
        /// Recurs monthly (as far as seen).
        monthly: bool,
    },
}

/// What an hour is expected to hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    /// Expected `ln(1 + patients)`.
    pub log: f64,
    /// Where it comes from.
    pub basis: Basis,
}

impl Expectation {
    /// Expected patients.
    pub fn patients(&self) -> f64 {
        self.log.exp_m1()
    }
}

/// A closed hour as remembered for runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Past {
    /// `ln(1 + patients)` of the hour (0 for an hour without PHI access).
    pub log: f64,
    /// What it was expected to hold, `ln(1 + patients)` (0 when unknown).
    pub expected: f64,
}

/// See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Per slot: 0 when never observed, else 1 + quantized level.
    levels: [u8; SLOTS],
    /// Per slot, 2 bits: observations, saturating at 3.
    seen: [u8; SLOTS / 4],
    anchors: [Anchor; ANCHORS],
    /// Closed hours before the one being counted, newest first: (quantized log, quantized
    /// expectation).
    recent: [(u8, u8); RECENT],
    /// Exponentially weighted variance of the log residual against the expectation.
    spread: f32,
    /// First hour learned (Unix hours).
    since: u32,
}

impl Profile {
    /// An empty profile whose first hour is `hour`.
    pub fn new(hour: i64) -> Profile {
        Profile {
            levels: [0; SLOTS],
            seen: [0; SLOTS / 4],
            anchors: [Anchor::default(); ANCHORS],
            recent: [(0, 0); RECENT],
            spread: 0.0,
            since: u32::try_from(hour.max(0)).unwrap_or(u32::MAX),
        }
    }

    /// True when the profile has learned for a week by `hour`: every slot has had its chance.
    pub fn mature(&self, hour: i64) -> bool {
        hour - i64::from(self.since) >= SLOTS as i64
    }

    /// Observations of `slot`, 0 to 3 (3: three or more).
    pub fn observations(&self, slot: usize) -> u8 {
        (self.seen[slot / 4] >> ((slot % 4) * 2)) & 3
    }

    fn set_observations(&mut self, slot: usize, n: u8) {
        let shift = (slot % 4) * 2;
        self.seen[slot / 4] = (self.seen[slot / 4] & !(3 << shift)) | (n.min(3) << shift);
    }

    fn level(&self, slot: usize) -> Option<f64> {
        (self.levels[slot] != 0).then(|| dequantize(self.levels[slot] - 1))
    }

    /// Mean level of the slots of `slot`'s hour of the day that were observed, any day.
    fn hour_of_day(&self, slot: usize) -> Option<f64> {
        let hour = slot % 24;
        let (sum, n) = (0..7)
            .filter_map(|day| self.level(day * 24 + hour))
            .fold((0.0, 0u32), |(s, n), l| (s + l, n + 1));
        (n > 0).then(|| sum / f64::from(n))
    }

    /// The expectation from the slots alone (no peaks), given the identity's overall level.
    fn slot_expectation(&self, slot: usize, overall: Option<f64>) -> Option<Expectation> {
        let (prior, prior_basis) = match self.hour_of_day(slot) {
            Some(l) => (Some(l), Basis::HourOfDay),
            None => (overall, Basis::Overall),
        };
        match (self.observations(slot), self.level(slot)) {
            (n @ 1..=3, Some(level)) => {
                let w = [0.0, 0.5, 0.75, 1.0][usize::from(n)];
                Some(Expectation {
                    log: w * level + (1.0 - w) * prior.unwrap_or(level),
                    basis: Basis::Slot(n),
                })
            }
            _ => prior.map(|log| Expectation {
                log,
                basis: prior_basis,
            }),
        }
    }

    /// The recurring peak at `hour`, if one is remembered there.
    fn anchor_at(&self, hour: i64) -> Option<usize> {
        let day = hour.div_euclid(24);
        (0..ANCHORS)
            .filter(|&i| self.anchors[i].live(day) && self.anchors[i].matches(hour))
            .max_by_key(|&i| self.anchors[i].level)
    }

    /// What `hour` (Unix hours) is expected to hold, given the identity's overall level (the EWMA
    /// of `ln(1 + patients)` over its active hours), or `None` with nothing learned.
    pub fn expect(&self, hour: i64, overall: Option<f64>) -> Option<Expectation> {
        let slots = self.slot_expectation(slot_of(hour), overall);
        let peak = self.anchor_at(hour).map(|i| {
            let a = self.anchors[i];
            Expectation {
                log: dequantize(a.level),
                basis: Basis::Peak {
                    weekly: a.flags & WEEKLY != 0,
                    monthly: a.flags & MONTHLY != 0,
                },
            }
        });
        match (slots, peak) {
            (Some(s), Some(p)) if s.log >= p.log => Some(s),
            (_, Some(p)) => Some(p),
            (s, None) => s,
        }
    }

    /// Standard deviation of hours around their expectation, log scale, floored at [`MIN_SD`].
    pub fn sd(&self) -> f64 {
        f64::from(self.spread).sqrt().max(MIN_SD)
    }

    /// The closed hour `k + 1` hours before the one being counted (`k` < [`RECENT`]).
    pub fn recent(&self, k: usize) -> Option<Past> {
        self.recent.get(k).map(|&(log, expected)| Past {
            log: dequantize(log),
            expected: dequantize(expected),
        })
    }

    fn remember(&mut self, entry: (u8, u8)) {
        self.recent.copy_within(0..RECENT - 1, 1);
        self.recent[0] = entry;
    }

    /// `hours` hours passed without PHI access.
    pub(super) fn skip(&mut self, hours: i64) {
        for _ in 0..hours.clamp(0, RECENT as i64) {
            self.remember((0, 0));
        }
    }

    /// Folds a closed hour in: `patients` in Unix hour `hour`, `learning` when the identity was
    /// still in its learning period, `overall` its overall level before this hour.
    pub(super) fn close(&mut self, hour: i64, patients: u64, learning: bool, overall: Option<f64>) {
        let x = (patients as f64).ln_1p();
        let slot = slot_of(hour);
        let day = hour.div_euclid(24);
        let slots = self.slot_expectation(slot, overall);
        let anchor = self.anchor_at(hour);
        let expected = self.expect(hour, overall);

        if let Some(e) = expected
            && matches!(e.basis, Basis::Slot(_) | Basis::Peak { .. })
        {
            let sd = self.sd();
            let r = (x - e.log).clamp(-3.0 * sd, 3.0 * sd);
            let var = f64::from(self.spread);
            self.spread = ((1.0 - SPREAD_ALPHA) * (var + SPREAD_ALPHA * r * r)) as f32;
        }

        // Against the slots alone, with something better than the overall level to go by.
        let excursion =
            slots.is_some_and(|s| s.basis != Basis::Overall && x - s.log > EXCURSION) && patients >= MIN_PEAK_PATIENTS;
        match anchor {
            Some(i) if x >= dequantize(self.anchors[i].level) - EXCURSION => {
                let a = &mut self.anchors[i];
                let level = dequantize(a.level);
                a.level = quantize(level + 0.5 * (x - level));
                a.flags = (a.flags & (WEEKLY | MONTHLY)) | (a.seen().saturating_add(1).min(63) << 2);
                a.last = u16::try_from(day).unwrap_or(u16::MAX);
            }
            _ if excursion => self.add_anchor(hour, x),
            _ => {}
        }
        self.strike_off(hour, x);

        // The slot, winsorized after learning unless a known peak explains the hour.
        let target = match slots {
            Some(s) if !learning && anchor.is_none() => x.min(s.log + EXCURSION),
            _ => x,
        };
        let n = self.observations(slot);
        let level = match self.level(slot) {
            Some(l) if n > 0 => l + (1.0 / f64::from(n + 1)).max(SLOT_ALPHA) * (target - l),
            _ => target,
        };
        self.levels[slot] = quantize(level) + 1;
        self.set_observations(slot, n + 1);
        self.remember((quantize(x), expected.map_or(0, |e| quantize(e.log))));
    }

    fn add_anchor(&mut self, hour: i64, x: f64) {
        let day = hour.div_euclid(24);
        // A dead or forgotten one first, else the one seen least (then longest ago).
        let i = (0..ANCHORS)
            .min_by_key(|&i| {
                let a = self.anchors[i];
                (a.live(day), a.seen(), a.last)
            })
            .unwrap_or(0);
        self.anchors[i] = Anchor {
            slot: slot_of(hour) as u8,
            day_of_month: day_of_month(hour),
            level: quantize(x),
            flags: WEEKLY | MONTHLY | (1 << 2),
            last: u16::try_from(day).unwrap_or(u16::MAX),
        };
    }

    /// When `hour` closes the window (± 1 hour) of a peak's weekly or monthly position and none
    /// of the window's hours came near the peak, that period is struck off.
    fn strike_off(&mut self, hour: i64, x: f64) {
        let slot = slot_of(hour);
        let dom = day_of_month(hour);
        let window = [Some(x), self.recent(0).map(|p| p.log), self.recent(1).map(|p| p.log)];
        for a in &mut self.anchors {
            if a.periods() == 0 {
                continue;
            }
            let low = dequantize(a.level) - EXCURSION;
            if window.iter().flatten().any(|&l| l >= low) {
                continue;
            }
            let at = usize::from(a.slot);
            if slot == (at + 1) % SLOTS {
                a.flags &= !WEEKLY;
            }
            if dom == a.day_of_month && slot % 24 == (at + 1) % 24 {
                a.flags &= !MONTHLY;
            }
        }
    }

    /// The compact encoding of a checkpoint: layout version, the bitmap of observed slots, their
    /// levels and observation counts, then peaks, recent hours, spread and first hour.
    pub fn encode(&self) -> Vec<u8> {
        let observed: Vec<usize> = (0..SLOTS).filter(|&s| self.levels[s] != 0).collect();
        let mut out = Vec::with_capacity(64 + observed.len() * 2);
        out.push(LAYOUT);
        let mut bitmap = [0u8; SLOTS / 8];
        for &s in &observed {
            bitmap[s / 8] |= 1 << (s % 8);
        }
        out.extend_from_slice(&bitmap);
        out.extend(observed.iter().map(|&s| self.levels[s]));
        out.extend(observed.iter().map(|&s| self.observations(s)));
        for a in &self.anchors {
            out.extend_from_slice(&[a.slot, a.day_of_month, a.level, a.flags]);
            out.extend_from_slice(&a.last.to_le_bytes());
        }
        for (log, expected) in self.recent {
            out.extend_from_slice(&[log, expected]);
        }
        out.extend_from_slice(&self.spread.to_le_bytes());
        out.extend_from_slice(&self.since.to_le_bytes());
        out
    }

    /// A profile from [`Profile::encode`], or why it is not one.
    pub fn decode(bytes: &[u8]) -> Result<Profile, String> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Result<&[u8], String> {
            if rest.len() < n {
                return Err(format!("a profile of {} bytes is cut short", bytes.len()));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let layout = take(1)?[0];
        if layout != LAYOUT {
            return Err(format!("profile layout {layout}, not {LAYOUT}"));
        }
        let bitmap = take(SLOTS / 8)?.to_vec();
        let observed: Vec<usize> = (0..SLOTS).filter(|&s| bitmap[s / 8] & (1 << (s % 8)) != 0).collect();
        let mut p = Profile::new(0);
        let levels = take(observed.len())?.to_vec();
        let counts = take(observed.len())?.to_vec();
        for ((&s, &level), &n) in observed.iter().zip(&levels).zip(&counts) {
            if level == 0 || n > 3 {
                return Err(format!("slot {s} holds level {level} and count {n}"));
            }
            p.levels[s] = level;
            p.set_observations(s, n);
        }
        for a in &mut p.anchors {
            let b = take(6)?;
            *a = Anchor {
                slot: b[0],
                day_of_month: b[1],
                level: b[2],
                flags: b[3],
                last: u16::from_le_bytes([b[4], b[5]]),
            };
        }
        for r in &mut p.recent {
            let b = take(2)?;
            *r = (b[0], b[1]);
        }
        p.spread = f32::from_le_bytes(take(4)?.try_into().map_err(|_| "spread")?);
        p.since = u32::from_le_bytes(take(4)?.try_into().map_err(|_| "since")?);
        if !rest.is_empty() {
            return Err(format!("{} bytes after a profile", rest.len()));
        }
        Ok(p)
    }
}

impl serde::Serialize for Profile {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.encode())
    }
}

impl<'de> serde::Deserialize<'de> for Profile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Profile, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Profile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an encoded hour-of-week profile")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Profile, E> {
                Profile::decode(v).map_err(E::custom)
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Profile, E> {
                self.visit_bytes(v)
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Profile, E> {
                self.visit_bytes(&v)
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix hour of 2026-01-05 (a Monday) 00:00 UTC, plus `hours`.
    fn h(hours: i64) -> i64 {
        1_767_571_200 / 3600 + hours
    }

    /// A profile after `days` of `level(hour)` patients every hour (learning the first week).
    fn learned(days: i64, level: impl Fn(i64) -> u64) -> (Profile, f64) {
        let mut p = Profile::new(h(0));
        let mut overall: Option<f64> = None;
        for t in 0..days * 24 {
            let patients = level(t);
            p.close(h(t), patients, t < 7 * 24, overall);
            let x = (patients as f64).ln_1p();
            overall = Some(overall.map_or(x, |m| m + (x - m) / 30.0));
        }
        (p, overall.unwrap_or_default())
    }

    fn night_and_day(t: i64) -> u64 {
        if (8..20).contains(&(t % 24)) { 100 } else { 20 }
    }

    #[test]
    fn hours_of_the_week_start_on_monday_midnight_utc() {
        assert_eq!(slot_of(h(0)), 0);
        assert_eq!(slot_of(h(24 + 1)), 25, "Tuesday 01:00");
        assert_eq!(slot_of(h(6 * 24 + 23)), 167, "Sunday 23:00");
        assert_eq!(slot_of(h(7 * 24)), 0);
        assert_eq!(day_of_month(h(2 * 24 + 4)), 7);
    }

    #[test]
    fn each_hour_of_the_week_has_its_own_level_shrunk_while_new() {
        let (p, overall) = learned(21, night_and_day);
        let at = |t: i64| p.expect(h(t), Some(overall)).expect("learned");
        let night = at(21 * 24 + 3);
        assert_eq!(night.basis, Basis::Slot(3));
        assert!((night.patients() - 20.0).abs() < 1.0, "{night:?}");
        assert!((at(21 * 24 + 12).patients() - 100.0).abs() < 4.0);
        assert!(p.mature(h(7 * 24)) && !p.mature(h(7 * 24 - 1)));

        // After one Tuesday (250 at noon, not far enough above the 100 of Monday's noon to be a
        // peak), Tuesday's 12:00 is half its own level, half the mean of the days' noons.
        let (p, overall) = learned(8, |t| if t == 24 + 12 { 250 } else { night_and_day(t) });
        let tuesday = p.expect(h(8 * 24 + 12), Some(overall)).expect("learned");
        assert_eq!(tuesday.basis, Basis::Slot(1));
        let mixed = 0.5 * 250f64.ln_1p() + 0.5 * ((250f64.ln_1p() + 6.0 * 100f64.ln_1p()) / 7.0);
        assert!((tuesday.patients() - mixed.exp_m1()).abs() < 0.1 * mixed.exp_m1());
        assert!((tuesday.log - mixed).abs() < 0.1, "{} against {mixed}", tuesday.log);

        // A slot never active: the same hour on the other days, else the overall level.
        let mut p = Profile::new(h(0));
        p.close(h(10), 100, true, None);
        let other_day = p.expect(h(24 + 10), Some(2.0)).expect("learned");
        assert_eq!(other_day.basis, Basis::HourOfDay);
        assert!((other_day.patients() - 100.0).abs() < 4.0);
        assert_eq!(p.expect(h(11), Some(2.0)).map(|e| e.basis), Some(Basis::Overall));
        assert_eq!(Profile::new(h(0)).expect(h(1), None), None);
    }

    #[test]
    fn a_weekly_peak_is_expected_at_its_time_only_and_a_monthly_one_a_month_later() {
        // 2,000 patients on Sundays at 02:00, and on Wednesday the 7th at 04:00 900.
        let level = |t: i64| match (t / 24, t % 168, t % 24) {
            (_, 146, _) => 2000,
            (2 | 33, _, 4) => 900,
            _ => night_and_day(t),
        };
        let (p, overall) = learned(32, level);
        let sunday = p.expect(h(4 * 168 + 146), Some(overall)).expect("learned");
        assert!(
            matches!(sunday.basis, Basis::Peak { weekly: true, .. } | Basis::Slot(_)) && sunday.patients() > 1000.0,
            "{sunday:?}"
        );
        // The Wednesday job was not weekly: on Wednesday the 28th at 04:00 its slot, which still
        // remembers the 900 of the learning week (as a level it forgets at 0.3 a week).
        let wednesday = p.expect(h(23 * 24 + 4), Some(overall)).expect("learned");
        assert_eq!(wednesday.basis, Basis::Slot(3));
        assert!(wednesday.patients() < 60.0, "{wednesday:?}");
        // On the 7th of February at 04:00 it is expected again.
        let seventh = p.expect(h(33 * 24 + 4), Some(overall)).expect("learned");
        assert_eq!(
            seventh.basis,
            Basis::Peak {
                weekly: false,
                monthly: true
            }
        );
        assert!((seventh.patients() - 900.0).abs() < 60.0, "{seventh:?}");
    }

    #[test]
    fn an_anomalous_hour_after_learning_moves_its_slot_at_most_threefold() {
        let (mut p, overall) = learned(21, night_and_day);
        let slot = slot_of(h(21 * 24 + 3));
        let before = p.level(slot).expect("observed");
        p.close(h(21 * 24 + 3), 5000, false, Some(overall));
        let moved = p.level(slot).expect("observed") - before;
        assert!(moved > 0.0 && moved <= SLOT_ALPHA * EXCURSION + 0.07, "{moved}");
        // During learning the same hour is learned as it is.
        let (mut p, overall) = learned(3, night_and_day);
        let slot = slot_of(h(3 * 24 + 3));
        p.close(h(3 * 24 + 3), 5000, true, Some(overall));
        assert!((p.level(slot).expect("observed") - 5000f64.ln_1p()).abs() < 0.04);
    }

    #[test]
    fn growth_of_two_and_a_half_times_in_sixty_days_lags_by_less_than_half() {
        // Growth of ln(2.5) × 7 / 60 = 0.107 a week; a mean weighted 0.3 lags it by 0.107 × 0.7 /
        // 0.3 = 0.25 at its update, and a week more by the next: e^0.36 ≈ 1.43.
        let grown = |t: i64| (night_and_day(t) as f64 * 2.5f64.powf(t as f64 / (60.0 * 24.0))).round() as u64;
        let (p, overall) = learned(60, grown);
        for t in [60 * 24 + 3, 60 * 24 + 12] {
            let e = p.expect(h(t), Some(overall)).expect("learned");
            let ratio = grown(t) as f64 / e.patients();
            assert!((1.2..1.5).contains(&ratio), "hour {t}: {ratio}");
        }
    }

    #[test]
    fn recent_hours_keep_their_counts_and_expectations_with_gaps_as_empty_hours() {
        let (mut p, overall) = learned(8, night_and_day);
        p.close(h(8 * 24 + 1), 80, false, Some(overall));
        p.skip(2);
        let first = p.recent(2).expect("kept");
        assert!((first.log - 81f64.ln()).abs() < 0.04, "{first:?}");
        assert!((first.expected.exp_m1() - 20.0).abs() < 1.5, "{first:?}");
        assert_eq!(p.recent(0).map(|r| r.log), Some(0.0));
        assert_eq!(p.recent(RECENT), None);
    }

    #[test]
    fn the_encoding_keeps_observed_slots_only_and_reads_back_exactly() {
        let mut small = Profile::new(h(0));
        for t in 0..6 {
            small.close(h(t), 6, true, None);
        }
        let bytes = small.encode();
        assert_eq!(bytes.len(), 1 + 21 + 2 * 6 + 6 * ANCHORS + 2 * RECENT + 8);
        assert_eq!(Profile::decode(&bytes), Ok(small));

        let (full, _) = learned(21, |t| if t % 168 == 146 { 2000 } else { night_and_day(t) });
        let bytes = full.encode();
        assert_eq!(Profile::decode(&bytes), Ok(full.clone()));
        let cut = Profile::decode(&bytes[..bytes.len() - 1]).expect_err("cut");
        assert!(cut.contains("cut short"), "{cut}");
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(Profile::decode(&other), Err("profile layout 9, not 1".into()));
        let postcard = postcard::to_allocvec(&full).expect("encode");
        assert_eq!(postcard::from_bytes::<Profile>(&postcard).expect("decode"), full);
        assert_eq!(std::mem::size_of::<Profile>(), 256);
    }
}
