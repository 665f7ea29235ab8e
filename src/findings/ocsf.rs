//! A [`Finding`] as an OCSF Detection Finding (class 2004, category Findings): the form SIEMs
//! ingest. Built from the same object as the native JSON, so the two never disagree.
//!
//! Times follow the class's own definitions: `time` is when the finding was created (not when
//! the activity happened), `start_time`/`end_time` span the events that contributed. Each
//! delivery of a finding is one OCSF event: `metadata.uid` is `<finding id>:<sequence>` so a
//! receiver never mistakes an update for a duplicate, while `finding_info.uid` (the finding id)
//! is the key that ties a finding's create, updates and close together.

use serde_json::{Value, json};

use super::{Change, Finding, Status};

/// OCSF schema version the encoding is validated against (the schema source in the tests'
/// fixtures; a test keeps the two equal).
pub const OCSF_VERSION: &str = "1.9.0-dev";
/// `class_uid` of Detection Finding.
pub const CLASS_UID: u32 = 2004;
/// `category_uid` of Findings.
pub const CATEGORY_UID: u32 = 2;

/// OCSF `activity_id` of a Detection Finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// 1: the finding was created.
    Create,
    /// 2: the finding changed (new activity, higher severity, a status change).
    Update,
    /// 3: the finding was closed (resolved).
    Close,
}

impl Activity {
    /// The activity of a change the engine made to a finding now in `status`.
    pub fn of(change: Change, status: Status) -> Activity {
        match (change, status) {
            (_, Status::Resolved) => Activity::Close,
            (Change::New, _) => Activity::Create,
            (Change::Folded | Change::Escalated, _) => Activity::Update,
        }
    }

    /// The activity of a status change to `status`.
    pub fn of_status(status: Status) -> Activity {
        if status == Status::Resolved {
            Activity::Close
        } else {
            Activity::Update
        }
    }

    /// OCSF `activity_id`.
    pub fn id(self) -> u32 {
        match self {
            Activity::Create => 1,
            Activity::Update => 2,
            Activity::Close => 3,
        }
    }

    /// OCSF `activity_name`.
    pub fn name(self) -> &'static str {
        match self {
            Activity::Create => "Create",
            Activity::Update => "Update",
            Activity::Close => "Close",
        }
    }
}

/// OCSF `status_id` and its caption (which `status` carries): 1 New, 2 In Progress,
/// 3 Suppressed, 4 Resolved.
fn status(status: Status) -> (u32, &'static str) {
    match status {
        Status::New => (1, "New"),
        Status::Acknowledged => (2, "In Progress"),
        Status::Suppressed => (3, "Suppressed"),
        Status::Resolved => (4, "Resolved"),
    }
}

/// Encodes `finding` after `change` as an OCSF Detection Finding.
pub fn encode(finding: &Finding, change: Change) -> Value {
    encode_delivery(finding, Activity::of(change, finding.status), None)
}

/// Encodes `finding` as the OCSF event of `activity`; `sequence` is the delivery's place in the
/// outbox, when it is one.
pub fn encode_delivery(finding: &Finding, activity: Activity, sequence: Option<u64>) -> Value {
    let millis = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis();
    // OCSF `anomaly` and `baseline` objects have the same shape: a parameter and its values.
    let observation = |metric: &str, value: &Value| json!({"observation_parameter": metric, "observations": [{"value": value.to_string()}]});
    let anomalies: Vec<Value> = finding
        .analysis
        .iter()
        .map(|a| observation(&a.metric, &a.observed))
        .collect();
    let baselines: Vec<Value> = finding
        .analysis
        .iter()
        .filter(|a| !a.baseline.is_null())
        .map(|a| observation(&a.metric, &a.baseline))
        .collect();
    let evidences: Vec<Value> = finding
        .evidence
        .iter()
        .map(|e| {
            let mut v = json!({
                "data": {"event_id": e.event_id, "time": e.time, "format": e.format},
            });
            if let Some(src) = &e.source {
                v["data"]["source"] = json!(src.to_string());
            }
            v
        })
        .collect();
    let mut resource = json!({"uid": finding.identity.id, "type": "non_human_identity"});
    if let Some(name) = &finding.identity.name {
        resource["name"] = json!(name);
    }
    if let Some(owner) = &finding.identity.owner {
        // OCSF `user` needs a name, uid or account; the registry's owner is a team or an address.
        resource["owner"] = if owner.contains('@') {
            json!({"name": owner, "email_addr": owner})
        } else {
            json!({"name": owner})
        };
    }
    let mut event = json!({
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": activity.id(),
        "activity_name": activity.name(),
        "type_uid": CLASS_UID * 100 + activity.id(),
        "type_name": format!("Detection Finding: {}", activity.name()),
        "time": millis(finding.detected_at),
        "start_time": millis(finding.event_time),
        "end_time": millis(finding.last_event_time),
        "severity_id": finding.severity.ocsf_id(),
        "severity": capitalise(finding.severity.as_str()),
        "confidence_id": finding.confidence.ocsf_id(),
        "confidence": capitalise(finding.confidence.as_str()),
        "status_id": status(finding.status).0,
        "status": status(finding.status).1,
        "is_alert": true,
        "count": finding.count,
        "message": finding.title,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "nhiwatch", "vendor_name": "nhiwatch", "version": env!("CARGO_PKG_VERSION")},
            "uid": match sequence {
                Some(seq) => format!("{}:{seq}", finding.id),
                None => finding.id.clone(),
            },
        },
        "finding_info": {
            "uid": finding.id,
            "title": finding.title,
            "desc": finding.explanation,
            "types": [finding.detector.as_str()],
            "analytic": {"uid": finding.detector.as_str(), "name": finding.detector.as_str(), "type_id": 2, "type": "Behavioral"},
            "created_time": millis(finding.detected_at),
            "first_seen_time": millis(finding.event_time),
            "last_seen_time": millis(finding.last_event_time),
        },
        "resources": [resource],
        "anomaly_analyses": [{
            "analysis_targets": [{"name": finding.identity.id, "type": "non_human_identity"}],
            "anomalies": anomalies,
            "baselines": baselines,
        }],
        "evidences": evidences,
    });
    if !finding.controls.is_empty() {
        // OCSF puts `compliance` on the Compliance Finding class (2003); Detection Finding has
        // no such attribute, so the same object rides in `unmapped`, where receivers can map it.
        let mut standards: Vec<&str> = Vec::new();
        for c in &finding.controls {
            if !standards.contains(&c.framework.as_str()) {
                standards.push(&c.framework);
            }
        }
        event["unmapped"] = json!({"compliance": {
            "standards": standards,
            "requirements": finding.controls.iter().map(|c| format!("{} {}", c.framework, c.id)).collect::<Vec<_>>(),
            "controls": finding.controls,
        }});
    }
    if let Some(seq) = sequence {
        event["metadata"]["sequence"] = json!(seq);
    }
    event
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
