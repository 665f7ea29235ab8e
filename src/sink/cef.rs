//! ArcSight Common Event Format (CEF:0) lines for syslog:
//! `CEF:0|nhiwatch|nhiwatch|<version>|<detector>|<title>|<severity 0-10>|<extension>`.
//!
//! Escaping follows the CEF specification: in header fields `\` and `|` are escaped and line
//! breaks (not allowed there) become spaces; in extension values `\`, `=` and line breaks are
//! escaped (`\n`, `\r`). Extension keys are CEF's own where one fits.

use std::fmt::Write as _;

use crate::findings::ocsf::Activity;
use crate::findings::{Finding, Severity};

/// CEF severity (0–10) of a finding severity.
pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// Escapes a header field.
pub fn header(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes an extension value.
pub fn value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// The CEF line of a finding after `activity` (`act=create|update|close`).
pub fn encode(finding: &Finding, activity: Activity) -> String {
    let mut line = format!(
        "CEF:0|nhiwatch|nhiwatch|{}|{}|{}|{}|",
        header(env!("CARGO_PKG_VERSION")),
        header(finding.detector.as_str()),
        header(&finding.title),
        severity(finding.severity)
    );
    let mut ext: Vec<(&str, String)> = vec![
        ("externalId", finding.id.clone()),
        ("rt", finding.detected_at.timestamp_millis().to_string()),
        ("start", finding.event_time.timestamp_millis().to_string()),
        ("end", finding.last_event_time.timestamp_millis().to_string()),
        ("cnt", finding.count.to_string()),
        ("cat", finding.detector.as_str().to_owned()),
        ("suser", finding.identity.id.clone()),
    ];
    if let Some(name) = &finding.identity.name {
        ext.push(("suid", name.clone()));
    }
    ext.push(("cs1Label", "owner".into()));
    ext.push(("cs1", finding.identity.owner.clone().unwrap_or_default()));
    ext.push(("cs2Label", "status".into()));
    ext.push(("cs2", finding.status.as_str().into()));
    ext.push(("cs3Label", "confidence".into()));
    ext.push(("cs3", finding.confidence.as_str().into()));
    if !finding.controls.is_empty() {
        let ids: Vec<&str> = finding.controls.iter().map(|c| c.id.as_str()).collect();
        ext.push(("cs4Label", "controls".into()));
        ext.push(("cs4", ids.join(",")));
    }
    ext.push(("act", activity.name().to_ascii_lowercase()));
    ext.push(("msg", finding.explanation.clone()));
    for (i, (key, v)) in ext.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        let _ = write!(line, "{key}={}", value(v));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{Confidence, DetectorId, IdentityRef, Status};
    use chrono::DateTime;

    fn finding() -> Finding {
        let t = DateTime::from_timestamp(1_767_571_200, 0).expect("valid");
        Finding {
            id: "0123456789abcdef0123456789abcdef".into(),
            detector: DetectorId::ScopeDrift,
            severity: Severity::High,
            confidence: Confidence::High,
            status: Status::New,
            identity: IdentityRef {
                id: "lab|feed".into(),
                name: Some("Lab feed".into()),
                owner: Some("lab@example.org".into()),
                registered: true,
            },
            event_time: t,
            last_event_time: t,
            detected_at: t,
            title: "Scope drift by lab|feed \\ v2".into(),
            explanation: "scope a=b is new\nsecond line".into(),
            analysis: Vec::new(),
            count: 2,
            evidence: Vec::new(),
            controls: crate::findings::controls::of(DetectorId::ScopeDrift).to_vec(),
            cause: None,
        }
    }

    #[test]
    fn escapes_header_and_extension_as_cef_requires() {
        assert_eq!(header("a|b\\c\nd"), "a\\|b\\\\c d");
        assert_eq!(value("a=b\\c\nd\re|f"), "a\\=b\\\\c\\nd\\re|f");
        let line = encode(&finding(), Activity::Create);
        assert_eq!(
            line,
            format!(
                "CEF:0|nhiwatch|nhiwatch|{}|scope_drift|Scope drift by lab\\|feed \\\\ v2|8|\
                 externalId=0123456789abcdef0123456789abcdef rt=1767571200000 start=1767571200000 \
                 end=1767571200000 cnt=2 cat=scope_drift suser=lab|feed suid=Lab feed cs1Label=owner \
                 cs1=lab@example.org cs2Label=status cs2=new cs3Label=confidence cs3=high \
                 cs4Label=controls cs4=NHI5:2025,PR.AA-05 act=create msg=scope a\\=b is new\\nsecond line",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(!line.contains('\n'), "one line per finding");
        // The header has exactly seven unescaped separators; `|` in extension values needs none.
        let header_part = &line[..line.find("externalId=").expect("extension")];
        assert_eq!(header_part.matches('|').count() - header_part.matches("\\|").count(), 7);
    }
}
