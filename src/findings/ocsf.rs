//! A [`Finding`] as an OCSF Detection Finding (class 2004, category Findings): the form SIEMs
//! ingest. Built from the same object as the native JSON, so the two never disagree.

use serde_json::{Value, json};

use super::{Change, Finding, Status};

/// OCSF schema version the encoding follows.
pub const OCSF_VERSION: &str = "1.5.0";
/// `class_uid` of Detection Finding.
pub const CLASS_UID: u32 = 2004;
/// `category_uid` of Findings.
pub const CATEGORY_UID: u32 = 2;

/// OCSF `activity_id`: 1 create, 2 update, 3 close.
pub fn activity_id(change: Change, status: Status) -> u32 {
    match (change, status) {
        (_, Status::Resolved) => 3,
        (Change::New, _) => 1,
        (Change::Folded | Change::Escalated, _) => 2,
    }
}

/// OCSF `status_id`: 1 new, 2 in progress, 3 suppressed, 4 resolved.
fn status_id(status: Status) -> u32 {
    match status {
        Status::New => 1,
        Status::Acknowledged => 2,
        Status::Suppressed => 3,
        Status::Resolved => 4,
    }
}

/// Encodes `finding` after `change` as an OCSF Detection Finding.
pub fn encode(finding: &Finding, change: Change) -> Value {
    let activity = activity_id(change, finding.status);
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
        resource["owner"] = json!({"email_addr": owner});
    }
    json!({
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": activity,
        "type_uid": CLASS_UID * 100 + activity,
        "time": millis(finding.last_event_time),
        "severity_id": finding.severity.ocsf_id(),
        "severity": capitalise(finding.severity.as_str()),
        "confidence_id": finding.confidence.ocsf_id(),
        "confidence": capitalise(finding.confidence.as_str()),
        "status_id": status_id(finding.status),
        "status": capitalise(finding.status.as_str()),
        "is_alert": true,
        "count": finding.count,
        "message": finding.title,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "nhiwatch", "vendor_name": "nhiwatch", "version": env!("CARGO_PKG_VERSION")},
            "uid": finding.id,
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
    })
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
