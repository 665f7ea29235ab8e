//! Findings: what a detector concluded about an identity, explained, with its evidence.
//!
//! A [`Finding`] has a stable id (a hash of detector, identity and the first triggering event),
//! so re-processing the same input yields the same ids. Repeated hits of one detector on one
//! identity fold into the open finding ([`Folder`]) until the suppression window passes without
//! a hit. `schemas/finding.schema.json` mirrors the JSON form; [`ocsf`] encodes the same object
//! as an OCSF Detection Finding for SIEMs.

pub mod controls;
pub mod ocsf;
pub mod store;

pub use controls::Control;

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::{Event, Origin, SourceFormat, wire_enum};

wire_enum! {
    /// Detector ids, as in `detectors/<id>.toml` and in every finding.
    DetectorId {
        /// An established identity acts after a silence far longer than its cadence.
        DormantWakeup => "dormant_wakeup",
        /// A scope broader than used or approved, or a first-seen kind of access.
        ScopeDrift => "scope_drift",
        /// Distinct patients far above the identity's baseline or a registry ceiling.
        PhiVolume => "phi_volume",
        /// An identity the registry does not know touches PHI.
        UnregisteredIdentity => "unregistered_identity",
        /// Activity after offboarding, expiry, deactivation or credential revocation.
        AccessAfterOffboarding => "access_after_offboarding",
        /// Activity from a network the identity never used.
        NewNetwork => "new_network",
        /// Concurrent use of one identity from several networks.
        CredentialSharing => "credential_sharing",
        /// Failed token requests or denied calls far above baseline.
        AuthFailureBurst => "auth_failure_burst",
        /// A non-human identity invokes emergency access.
        BreakGlass => "break_glass",
        /// A secret or certificate was added to an application.
        CredentialAdded => "credential_added",
        /// Activity at hours of the week the identity has never been active.
        OffHours => "off_hours",
        /// A credential older than its rotation policy in use, or tokens living past policy.
        StaleCredential => "stale_credential",
        /// A permission outside the registry's approval, or a high-privilege one, granted to an
        /// identity.
        PermissionGranted => "permission_granted",
    }
}

wire_enum! {
    /// How bad it is if true (OCSF `severity_id` 1–5).
    Severity {
        /// Informational.
        Info => "info",
        /// Low.
        Low => "low",
        /// Medium.
        Medium => "medium",
        /// High.
        High => "high",
        /// Critical.
        Critical => "critical",
    }
}

impl Severity {
    /// OCSF `severity_id`.
    pub fn ocsf_id(self) -> u8 {
        self as u8 + 1
    }
}

wire_enum! {
    /// How sure the detector is (OCSF `confidence_id` 1–3).
    Confidence {
        /// Low.
        Low => "low",
        /// Medium.
        Medium => "medium",
        /// High.
        High => "high",
    }
}

impl Confidence {
    /// OCSF `confidence_id`.
    pub fn ocsf_id(self) -> u8 {
        self as u8 + 1
    }
}

wire_enum! {
    /// Where the finding is in its lifecycle.
    Status {
        /// Not looked at yet.
        New => "new",
        /// Someone is on it.
        Acknowledged => "acknowledged",
        /// Closed.
        Resolved => "resolved",
        /// Muted, with a reason.
        Suppressed => "suppressed",
    }
}

/// The identity a finding is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityRef {
    /// Canonical id: the registry id when registered, else the id seen in the events.
    pub id: String,
    /// Display name (registry, else source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Owner, from the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Whether the registry lists it.
    pub registered: bool,
}

/// One measured quantity: what was observed, what the baseline was, the threshold crossed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// What is measured, e.g. `distinct_patients_per_hour`.
    pub metric: String,
    /// The observed value.
    pub observed: Value,
    /// The identity's baseline (or the policy value).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub baseline: Value,
    /// The threshold that was crossed.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub threshold: Value,
}

impl Analysis {
    /// An analysis line.
    pub fn new(
        metric: &str,
        observed: impl Into<Value>,
        baseline: impl Into<Value>,
        threshold: impl Into<Value>,
    ) -> Self {
        Analysis {
            metric: metric.to_owned(),
            observed: observed.into(),
            baseline: baseline.into(),
            threshold: threshold.into(),
        }
    }
}

/// An event that supports a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The event's id.
    pub event_id: String,
    /// Its event time.
    pub time: DateTime<Utc>,
    /// Its format.
    pub format: SourceFormat,
    /// Where it was read (Kafka coordinates or file line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Origin>,
}

impl Evidence {
    /// Evidence pointing at `event`.
    pub fn of(event: &Event) -> Evidence {
        Evidence {
            event_id: event.event_id.clone(),
            time: event.time,
            format: event.format,
            source: event.source.clone(),
        }
    }
}

/// What a detector reports for one event; the [`Folder`] turns hits into findings.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The detector the finding is filed under.
    pub detector: DetectorId,
    /// Severity.
    pub severity: Severity,
    /// Confidence.
    pub confidence: Confidence,
    /// One line for a list view.
    pub title: String,
    /// Observed vs baseline and why it crossed the threshold, in sentences.
    pub explanation: String,
    /// The numbers behind the explanation.
    pub analysis: Vec<Analysis>,
    /// Hits this close to the previous one fold into the same finding.
    pub suppress_for: Duration,
    /// A correlation: the identity's open finding of this detector, whose latest evidence the
    /// finding also cites, so that both events of the pair are in its evidence.
    pub cite: Option<DetectorId>,
    /// What the problem is about, when a detector can find several on one identity: the
    /// permission for `scope_drift`, the network for `new_network`. One finding per detector ×
    /// identity × cause.
    pub cause: Option<String>,
}

/// A finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// Stable id: the same input gives the same id.
    pub id: String,
    /// The detector that raised it.
    pub detector: DetectorId,
    /// Severity (the highest of its hits).
    pub severity: Severity,
    /// Confidence.
    pub confidence: Confidence,
    /// Lifecycle status.
    pub status: Status,
    /// The identity.
    pub identity: IdentityRef,
    /// Event time of the first hit.
    pub event_time: DateTime<Utc>,
    /// Event time of the latest hit.
    pub last_event_time: DateTime<Utc>,
    /// When nhiwatch raised it (event time in offline runs, so that they are reproducible).
    pub detected_at: DateTime<Utc>,
    /// One line for a list view.
    pub title: String,
    /// Observed vs baseline and the threshold crossed, in sentences.
    pub explanation: String,
    /// The numbers behind the explanation.
    pub analysis: Vec<Analysis>,
    /// Hits folded into this finding.
    pub count: u64,
    /// Supporting events: the first ones and the latest (at most [`Folder::MAX_EVIDENCE`]).
    pub evidence: Vec<Evidence>,
    /// The controls it bears on (OWASP NHI Top 10, NIST CSF 2.0), from `controls.toml`.
    #[serde(default)]
    pub controls: Vec<Control>,
    /// What the problem is about, when a detector can find several on one identity (the
    /// permission of a `scope_drift`, the network of a `new_network`): one finding per detector ×
    /// identity × cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl Finding {
    /// The stable id of a finding first triggered by `first_event_id` at `time` (and, when it
    /// has one, about `cause`: one event can raise findings about two permissions).
    pub fn stable_id(
        detector: DetectorId,
        identity: &str,
        cause: Option<&str>,
        time: DateTime<Utc>,
        first_event_id: &str,
    ) -> String {
        let mut h = Sha256::new();
        for part in [
            detector.as_str().as_bytes(),
            identity.as_bytes(),
            time.timestamp_micros().to_string().as_bytes(),
            first_event_id.as_bytes(),
        ] {
            h.update(part);
            h.update([0]);
        }
        // Findings without a cause keep the ids they always had.
        if let Some(cause) = cause {
            h.update(cause.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..16])
    }

    /// What findings aggregate under: detector, identity and cause.
    pub fn key(&self) -> (DetectorId, &str, Option<&str>) {
        (self.detector, &self.identity.id, self.cause.as_deref())
    }

    /// Evidence an aggregated finding keeps: the first half from its first occurrences, the
    /// rest from its latest.
    pub const MAX_AGGREGATED_EVIDENCE: usize = 10;

    /// Takes in `other`, an occurrence of the same problem: `added` more hits, its later last
    /// event, its evidence (keeping the first and the latest), and its severity and wording when
    /// it is more severe. True when the severity rose.
    pub fn absorb(&mut self, other: &Finding, added: u64) -> bool {
        self.count += added;
        self.last_event_time = self.last_event_time.max(other.last_event_time);
        self.event_time = self.event_time.min(other.event_time);
        for e in &other.evidence {
            if !self.evidence.contains(e) {
                self.evidence.push(e.clone());
            }
        }
        let max = Finding::MAX_AGGREGATED_EVIDENCE;
        if self.evidence.len() > max {
            self.evidence.drain(max / 2..self.evidence.len() - (max - max / 2));
        }
        if other.severity > self.severity {
            self.severity = other.severity;
            self.confidence = self.confidence.max(other.confidence);
            self.title.clone_from(&other.title);
            self.explanation.clone_from(&other.explanation);
            self.analysis.clone_from(&other.analysis);
            return true;
        }
        false
    }
}

/// The findings an analyst sees for `occurrences` (what the engine raised, each in its final
/// state) when none was resolved: one per detector × identity × cause, each absorbing every
/// later occurrence ([`Finding::absorb`]), in order of first event. The offline form of
/// [`store::FindingStore`]'s aggregation.
pub fn aggregate(occurrences: &[Finding]) -> Vec<Finding> {
    let mut sorted: Vec<&Finding> = occurrences.iter().collect();
    sorted.sort_by(|a, b| (a.event_time, &a.id).cmp(&(b.event_time, &b.id)));
    let mut out: Vec<Finding> = Vec::new();
    let mut by_key: HashMap<(DetectorId, String, Option<String>), usize> = HashMap::new();
    for f in sorted {
        let key = (f.detector, f.identity.id.clone(), f.cause.clone());
        match by_key.get(&key) {
            Some(&i) => {
                out[i].absorb(f, f.count);
            }
            None => {
                by_key.insert(key, out.len());
                out.push(f.clone());
            }
        }
    }
    out
}

/// A plain finding for unit tests: `id`, break-glass, high, on identity `ehr`.
#[cfg(test)]
pub(crate) fn test_finding(id: &str) -> Finding {
    let t = DateTime::from_timestamp(1_767_571_200, 0).expect("valid");
    Finding {
        id: id.to_owned(),
        detector: DetectorId::BreakGlass,
        severity: Severity::High,
        confidence: Confidence::High,
        status: Status::New,
        identity: IdentityRef {
            id: "ehr".into(),
            name: None,
            owner: None,
            registered: false,
        },
        event_time: t,
        last_event_time: t,
        detected_at: t,
        title: "t".into(),
        explanation: "e".into(),
        analysis: Vec::new(),
        count: 1,
        evidence: Vec::new(),
        controls: controls::of(DetectorId::BreakGlass).to_vec(),
        cause: None,
    }
}

/// Whether an emitted finding is new or an update of one emitted before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// First emission.
    New,
    /// A hit folded in, severity unchanged.
    Folded,
    /// A hit folded in and raised the severity.
    Escalated,
}

/// A finding as it stands after a hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// What changed.
    pub change: Change,
    /// The finding now.
    pub finding: Finding,
}

/// Folds hits into open findings, one open finding per detector, identity and cause.
#[derive(Debug, Default)]
pub struct Folder {
    /// Per detector and identity, the open findings of each cause (usually one).
    open: HashMap<(DetectorId, String), Vec<(Finding, Duration)>>,
}

impl Folder {
    /// Evidence kept per finding: the first `MAX_EVIDENCE - 1` and the latest.
    pub const MAX_EVIDENCE: usize = 10;

    /// Files `hit` for `identity`, caused by `event`, raised at `detected_at`.
    pub fn fold(&mut self, hit: Hit, identity: &IdentityRef, event: &Event, detected_at: DateTime<Utc>) -> Update {
        let key = (hit.detector, identity.id.clone());
        let cited = hit
            .cite
            .and_then(|d| self.open(d, &identity.id))
            .and_then(|f| f.evidence.last().cloned());
        let causes = self.open.entry(key).or_default();
        let same = causes.iter().position(|(f, _)| f.cause == hit.cause);
        if let Some(i) = same
            && let (finding, window) = &mut causes[i]
            && event.time - finding.last_event_time <= *window
        {
            finding.count += 1;
            finding.last_event_time = finding.last_event_time.max(event.time);
            for evidence in cited.into_iter().chain([Evidence::of(event)]) {
                if finding.evidence.contains(&evidence) {
                    continue;
                }
                if finding.evidence.len() < Folder::MAX_EVIDENCE {
                    finding.evidence.push(evidence);
                } else if let Some(last) = finding.evidence.last_mut() {
                    *last = evidence;
                }
            }
            let change = if hit.severity > finding.severity {
                finding.severity = hit.severity;
                finding.confidence = finding.confidence.max(hit.confidence);
                finding.title = hit.title;
                finding.explanation = hit.explanation;
                finding.analysis = hit.analysis;
                Change::Escalated
            } else {
                Change::Folded
            };
            *window = (*window).max(hit.suppress_for);
            return Update {
                change,
                finding: finding.clone(),
            };
        }
        let finding = Finding {
            id: Finding::stable_id(
                hit.detector,
                &identity.id,
                hit.cause.as_deref(),
                event.time,
                &event.event_id,
            ),
            detector: hit.detector,
            severity: hit.severity,
            confidence: hit.confidence,
            status: Status::New,
            identity: identity.clone(),
            event_time: event.time,
            last_event_time: event.time,
            detected_at,
            title: hit.title,
            explanation: hit.explanation,
            analysis: hit.analysis,
            count: 1,
            evidence: cited.into_iter().chain([Evidence::of(event)]).collect(),
            controls: controls::of(hit.detector).to_vec(),
            cause: hit.cause,
        };
        match same {
            Some(i) => causes[i] = (finding.clone(), hit.suppress_for),
            None => causes.push((finding.clone(), hit.suppress_for)),
        }
        Update {
            change: Change::New,
            finding,
        }
    }

    /// The latest open finding of `detector` on `identity` (of any cause), if any.
    pub fn open(&self, detector: DetectorId, identity: &str) -> Option<&Finding> {
        self.open
            .get(&(detector, identity.to_owned()))?
            .iter()
            .map(|(f, _)| f)
            .max_by_key(|f| f.last_event_time)
    }

    /// Forgets findings whose suppression window ended more than `grace` before `now`. The
    /// grace keeps a finding open for events that arrive late (a lagging partition), which may
    /// still fold into it; it only bounds memory, never changes what folds.
    pub fn expire(&mut self, now: DateTime<Utc>, grace: Duration) {
        self.open.retain(|_, causes| {
            causes.retain(|(f, window)| now - f.last_event_time <= *window + grace);
            !causes.is_empty()
        });
    }

    /// The open findings with their folding windows (for a checkpoint).
    pub fn all_open(&self) -> impl Iterator<Item = (&Finding, Duration)> {
        self.open.values().flatten().map(|(f, window)| (f, *window))
    }

    /// A folder holding these open findings again (from a checkpoint).
    pub fn reopen(open: impl IntoIterator<Item = (Finding, Duration)>) -> Folder {
        let mut folder = Folder::default();
        for (f, window) in open {
            folder
                .open
                .entry((f.detector, f.identity.id.clone()))
                .or_default()
                .push((f, window));
        }
        folder
    }

    /// Open findings held.
    pub fn len(&self) -> usize {
        self.open.values().map(Vec::len).sum()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    /// Issue 21, item 5: the lists of detectors outside the code — the finding schema's enum,
    /// the dashboard's filter, the detectors' README table — name exactly [`DetectorId::ALL`],
    /// in its order where they are ordered. (`controls.toml` is checked in `controls`, and
    /// each detector's settings file in `detect`.)
    #[test]
    fn every_list_of_detectors_outside_the_code_is_detector_id_all() {
        let all: Vec<&str> = DetectorId::ALL.iter().map(|d| d.as_str()).collect();
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/finding.schema.json")).expect("schema");
        let in_schema: Vec<&str> = schema["properties"]["detector"]["enum"]
            .as_array()
            .expect("the detector enum")
            .iter()
            .map(|v| v.as_str().expect("a name"))
            .collect();
        assert_eq!(in_schema, all, "schemas/finding.schema.json");
        let dashboard = include_str!("../http/dashboard.html");
        let list = dashboard
            .split_once("const DETECTORS = ")
            .and_then(|(_, rest)| rest.split_once(';'))
            .map(|(list, _)| list)
            .expect("the dashboard's DETECTORS list");
        let in_dashboard: Vec<String> = serde_json::from_str(list).expect("a JSON array");
        assert_eq!(in_dashboard, all, "src/http/dashboard.html");
        let readme = include_str!("../../detectors/README.md");
        let in_readme: Vec<&str> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(id, _)| id))
            .collect();
        let mut sorted_readme = in_readme.clone();
        sorted_readme.sort_unstable();
        let mut sorted_all = all.clone();
        sorted_all.sort_unstable();
        assert_eq!(
            sorted_readme, sorted_all,
            "detectors/README.md names each detector once"
        );
    }

    fn event(id: &str, minute: i64) -> Event {
        let t = DateTime::from_timestamp(1_700_000_000 + minute * 60, 0).expect("valid");
        Event::new(
            id.into(),
            t,
            SourceFormat::GatewayAccess,
            EventKind::DataAccess,
            "app".into(),
        )
    }

    fn hit(severity: Severity) -> Hit {
        Hit {
            detector: DetectorId::BreakGlass,
            severity,
            confidence: Confidence::High,
            title: format!("{severity}"),
            explanation: String::new(),
            analysis: Vec::new(),
            suppress_for: Duration::minutes(30),
            cite: None,
            cause: None,
        }
    }

    #[test]
    fn repeats_fold_within_the_window_and_open_anew_after_it() {
        let who = IdentityRef {
            id: "app".into(),
            name: None,
            owner: None,
            registered: false,
        };
        let mut folder = Folder::default();
        let first = folder.fold(hit(Severity::Medium), &who, &event("e1", 0), event("e1", 0).time);
        assert_eq!(first.change, Change::New);
        let again = folder.fold(hit(Severity::Medium), &who, &event("e2", 20), event("e2", 20).time);
        assert_eq!((again.change, again.finding.count), (Change::Folded, 2));
        assert_eq!(again.finding.id, first.finding.id);
        let worse = folder.fold(hit(Severity::High), &who, &event("e3", 45), event("e3", 45).time);
        assert_eq!(
            (worse.change, worse.finding.severity),
            (Change::Escalated, Severity::High)
        );
        assert_eq!(worse.finding.evidence.len(), 3);
        // 31 minutes after the last hit: a new finding.
        let later = folder.fold(hit(Severity::Medium), &who, &event("e4", 76), event("e4", 76).time);
        assert_eq!(later.change, Change::New);
        assert_ne!(later.finding.id, first.finding.id);
        assert_eq!(
            later.finding.id,
            Finding::stable_id(DetectorId::BreakGlass, "app", None, event("e4", 76).time, "e4")
        );
        folder.expire(event("x", 200).time, Duration::minutes(120));
        assert_eq!(folder.len(), 1, "within the grace, a late event may still fold");
        folder.expire(event("x", 200).time, Duration::zero());
        assert!(folder.is_empty());
    }
}
