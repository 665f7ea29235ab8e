//! Accuracy of findings against labelled anomalies: precision, recall and F1 per detector.
//!
//! A finding is a hit when its detector and identity match a label and its `event_time` lies in
//! the label's window widened by `slack` on both sides. Recall counts labels with at least one
//! hit; precision counts findings that hit some label.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

/// A labelled anomaly (`labels.json`), as `generate` writes it.
pub use crate::generate::Label;

/// The fields of a finding the score needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Scored {
    /// Detector id.
    pub detector: String,
    /// Identity.
    pub identity: ScoredIdentity,
    /// First hit.
    pub event_time: DateTime<Utc>,
}

impl From<&crate::findings::Finding> for Scored {
    fn from(f: &crate::findings::Finding) -> Scored {
        Scored {
            detector: f.detector.as_str().to_owned(),
            identity: ScoredIdentity {
                id: f.identity.id.clone(),
            },
            event_time: f.event_time,
        }
    }
}

/// `identity.id` of a finding.
#[derive(Debug, Clone, Deserialize)]
pub struct ScoredIdentity {
    /// Canonical id.
    pub id: String,
}

/// Counts for one detector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectorScore {
    /// Labels for this detector.
    pub labels: usize,
    /// Labels with at least one matching finding.
    pub labels_found: usize,
    /// Findings of this detector.
    pub findings: usize,
    /// Findings matching a label.
    pub findings_correct: usize,
}

impl DetectorScore {
    /// Correct findings / findings (1 when there are none).
    pub fn precision(&self) -> f64 {
        if self.findings == 0 {
            1.0
        } else {
            self.findings_correct as f64 / self.findings as f64
        }
    }

    /// Found labels / labels (1 when there are none).
    pub fn recall(&self) -> f64 {
        if self.labels == 0 {
            1.0
        } else {
            self.labels_found as f64 / self.labels as f64
        }
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
    }
}

/// Scores `findings` against `labels`.
pub fn score(labels: &[Label], findings: &[Scored], slack: Duration) -> BTreeMap<String, DetectorScore> {
    let mut out: BTreeMap<String, DetectorScore> = BTreeMap::new();
    let hits = |l: &Label, f: &Scored| {
        l.detector == f.detector
            && l.identity == f.identity.id
            && f.event_time >= l.start - slack
            && f.event_time <= l.end + slack
    };
    for l in labels {
        let s = out.entry(l.detector.clone()).or_default();
        s.labels += 1;
        if findings.iter().any(|f| hits(l, f)) {
            s.labels_found += 1;
        }
    }
    for f in findings {
        let s = out.entry(f.detector.clone()).or_default();
        s.findings += 1;
        if labels.iter().any(|l| hits(l, f)) {
            s.findings_correct += 1;
        }
    }
    out
}

/// The score as a table.
pub fn table(scores: &BTreeMap<String, DetectorScore>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<26} {:>6} {:>6} {:>8} {:>8} {:>9} {:>7} {:>6}",
        "detector", "labels", "found", "findings", "correct", "precision", "recall", "f1"
    );
    let mut total = DetectorScore::default();
    for (detector, d) in scores {
        let _ = writeln!(
            s,
            "{:<26} {:>6} {:>6} {:>8} {:>8} {:>9.3} {:>7.3} {:>6.3}",
            // From the labels file: printed as text, not trusted as such.
            crate::terminal::escape(detector),
            d.labels,
            d.labels_found,
            d.findings,
            d.findings_correct,
            d.precision(),
            d.recall(),
            d.f1()
        );
        total.labels += d.labels;
        total.labels_found += d.labels_found;
        total.findings += d.findings;
        total.findings_correct += d.findings_correct;
    }
    let _ = writeln!(
        s,
        "{:<26} {:>6} {:>6} {:>8} {:>8} {:>9.3} {:>7.3} {:>6.3}",
        "all",
        total.labels,
        total.labels_found,
        total.findings,
        total.findings_correct,
        total.precision(),
        total.recall(),
        total.f1()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_571_200 + h * 3600, 0).expect("valid")
    }

    #[test]
    fn counts_hits_within_the_window_and_slack() {
        let labels = vec![
            Label {
                identity: "a".into(),
                detector: "phi_volume".into(),
                start: t(10),
                end: t(11),
            },
            Label {
                identity: "b".into(),
                detector: "phi_volume".into(),
                start: t(20),
                end: t(21),
            },
        ];
        let f = |d: &str, id: &str, at: DateTime<Utc>| Scored {
            detector: d.into(),
            identity: ScoredIdentity { id: id.into() },
            event_time: at,
        };
        let findings = vec![
            f("phi_volume", "a", t(10) + Duration::minutes(20)),
            f("phi_volume", "a", t(11) + Duration::minutes(4)),
            f("phi_volume", "b", t(30)),
            f("off_hours", "a", t(10)),
        ];
        let s = score(&labels, &findings, Duration::minutes(5));
        let phi = &s["phi_volume"];
        assert_eq!(
            (phi.labels, phi.labels_found, phi.findings, phi.findings_correct),
            (2, 1, 3, 2)
        );
        assert!((phi.precision() - 2.0 / 3.0).abs() < 1e-9);
        assert!((phi.recall() - 0.5).abs() < 1e-9);
        assert_eq!(s["off_hours"].precision(), 0.0);
        assert!(table(&s).contains("phi_volume"));
    }
}
