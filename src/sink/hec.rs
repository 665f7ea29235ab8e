//! The Splunk HTTP Event Collector envelope (`POST /services/collector/event`): `time` (epoch
//! seconds), `host`, `source`, `sourcetype`, optional `index`, and the OCSF finding as `event`.

use serde_json::{Value, json};

use crate::findings::ocsf::Activity;
use crate::findings::{Change, Finding, ocsf};

/// Where events go in Splunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HecTarget {
    /// `host` field (this instance).
    pub host: String,
    /// `source` field.
    pub source: String,
    /// `sourcetype` field.
    pub sourcetype: String,
    /// Index; `None` for the token's default.
    pub index: Option<String>,
}

impl Default for HecTarget {
    fn default() -> HecTarget {
        HecTarget {
            host: "nhiwatch".into(),
            source: "nhiwatch".into(),
            sourcetype: "ocsf:detection_finding".into(),
            index: None,
        }
    }
}

/// The HEC event of a finding after `change`.
pub fn encode(finding: &Finding, change: Change, target: &HecTarget) -> Value {
    envelope(finding, ocsf::encode(finding, change), target)
}

/// The HEC event of outbox delivery `seq`.
pub fn encode_delivery(finding: &Finding, activity: Activity, seq: u64, target: &HecTarget) -> Value {
    envelope(finding, ocsf::encode_delivery(finding, activity, Some(seq)), target)
}

fn envelope(finding: &Finding, event: Value, target: &HecTarget) -> Value {
    let mut v = json!({
        "time": finding.last_event_time.timestamp_millis() as f64 / 1000.0,
        "host": target.host,
        "source": target.source,
        "sourcetype": target.sourcetype,
        "event": event,
    });
    if let Some(index) = &target.index {
        v["index"] = json!(index);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::test_finding;
    use chrono::DateTime;

    #[test]
    fn wraps_the_ocsf_finding_in_the_hec_envelope() {
        let finding = Finding {
            last_event_time: DateTime::from_timestamp_millis(1_767_571_200_250).expect("valid"),
            ..test_finding(&"f".repeat(32))
        };
        let target = HecTarget {
            index: Some("security".into()),
            ..HecTarget::default()
        };
        let v = encode(&finding, Change::New, &target);
        assert_eq!(v["time"], 1_767_571_200.25);
        assert_eq!(
            (
                v["host"].as_str(),
                v["source"].as_str(),
                v["sourcetype"].as_str(),
                v["index"].as_str()
            ),
            (
                Some("nhiwatch"),
                Some("nhiwatch"),
                Some("ocsf:detection_finding"),
                Some("security")
            )
        );
        assert_eq!(v["event"]["class_uid"], 2004);
        assert_eq!(v["event"]["finding_info"]["uid"], "f".repeat(32));
        assert!(
            encode(&finding, Change::New, &HecTarget::default())
                .get("index")
                .is_none()
        );
    }
}
