//! Raw bytes in, normalized [`Event`]s out: format sniffing, one file per input format.
//!
//! Formats are recognised by shape, not by topic: [`sniff`] reads only the top-level keys of a
//! JSON record (skipping values) or the first bytes of an XML or text record, and picks the
//! normalizer. A record that is a JSON array (Okta's API returns pages), a Microsoft Graph
//! collection page (`@odata.context` + `value`) or a FHIR `Bundle` of `AuditEvent`s yields several
//! events.
//!
//! Anything that does not become an event is a [`ParseError`] whose [`ParseError::reason`] is a
//! small fixed code, used as the dead-letter reason and as a metric label.

mod auth0;
mod cloudtrail;
mod entra;
mod fhir_audit;
pub mod fhir_rest;
mod fhir_xml;
mod gateway;
mod gcp;
mod json;
mod keycloak;
mod okta;
pub mod pseudonym;
mod sniff;

use chrono::{DateTime, Utc};

use crate::event::{Event, Origin, SourceFormat};

pub use pseudonym::Pseudonymizer;
pub use sniff::{Shape, sniff};

pub use crate::event::UNIDENTIFIED;

/// Default largest record accepted, in bytes.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Why a record did not become an event. Cheap to build: no formatted strings on the hot path.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The record is larger than the configured limit.
    #[error("record of {len} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Record length.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The record is not valid UTF-8.
    #[error("record is not valid UTF-8 (first bad byte at {valid_up_to})")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The record is empty or blank.
    #[error("record is empty")]
    Empty,
    /// JSON syntax error.
    #[error("malformed JSON: {0}")]
    MalformedJson(#[source] serde_json::Error),
    /// XML syntax error.
    #[error("malformed XML: {0}")]
    MalformedXml(String),
    /// The record parsed but matches no known format.
    #[error("unknown format")]
    UnknownFormat,
    /// The record is a log line of a known source that is not an audit event (server start-up
    /// lines interleaved with Keycloak events, for instance).
    #[error("not an audit event: {0}")]
    NotAuditEvent(&'static str),
    /// A field the format requires is missing.
    #[error("{format}: missing field `{field}`")]
    MissingField {
        /// The recognised format.
        format: SourceFormat,
        /// The field.
        field: &'static str,
    },
    /// A field has the wrong JSON type or an invalid value.
    #[error("{format}: field `{field}` has the wrong type or value ({detail})")]
    WrongType {
        /// The recognised format.
        format: SourceFormat,
        /// The field.
        field: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A timestamp could not be read.
    #[error("{format}: field `{field}` is not a valid timestamp")]
    BadTimestamp {
        /// The recognised format.
        format: SourceFormat,
        /// The field.
        field: &'static str,
    },
}

impl ParseError {
    /// Every reason code, for metrics registration and documentation.
    pub const REASONS: &'static [&'static str] = &[
        "oversized",
        "not_utf8",
        "empty",
        "malformed_json",
        "malformed_xml",
        "unknown_format",
        "not_audit_event",
        "missing_field",
        "wrong_type",
        "bad_timestamp",
    ];

    /// The stable reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Oversized { .. } => "oversized",
            ParseError::NotUtf8 { .. } => "not_utf8",
            ParseError::Empty => "empty",
            ParseError::MalformedJson(_) => "malformed_json",
            ParseError::MalformedXml(_) => "malformed_xml",
            ParseError::UnknownFormat => "unknown_format",
            ParseError::NotAuditEvent(_) => "not_audit_event",
            ParseError::MissingField { .. } => "missing_field",
            ParseError::WrongType { .. } => "wrong_type",
            ParseError::BadTimestamp { .. } => "bad_timestamp",
        }
    }

    pub(crate) fn missing(format: SourceFormat, field: &'static str) -> ParseError {
        ParseError::MissingField { format, field }
    }

    pub(crate) fn wrong(format: SourceFormat, field: &'static str, detail: impl Into<String>) -> ParseError {
        ParseError::WrongType {
            format,
            field,
            detail: detail.into(),
        }
    }

    pub(crate) fn bad_time(format: SourceFormat, field: &'static str) -> ParseError {
        ParseError::BadTimestamp { format, field }
    }
}

/// What is known about a raw record apart from its bytes.
#[derive(Debug, Clone, Default)]
pub struct RecordMeta {
    /// Where it was read.
    pub origin: Option<Origin>,
    /// The time the record reached us (Kafka message timestamp or ingest clock). Used only to
    /// date log lines that carry a time of day but no date (Keycloak's default console format).
    pub received: Option<DateTime<Utc>>,
}

/// Turns raw records into events. One per pipeline; cheap to share by reference.
#[derive(Debug, Clone)]
pub struct Normalizer {
    pseudonymizer: Pseudonymizer,
    max_record_bytes: usize,
}

impl Normalizer {
    /// A normalizer with the given patient pseudonymisation key and size limit.
    pub fn new(pseudonymizer: Pseudonymizer, max_record_bytes: usize) -> Normalizer {
        Normalizer {
            pseudonymizer,
            max_record_bytes,
        }
    }

    /// The pseudonymizer in use.
    pub fn pseudonymizer(&self) -> &Pseudonymizer {
        &self.pseudonymizer
    }

    /// Normalizes one raw record into `out`, returning how many events were appended.
    /// On error nothing is appended.
    pub fn normalize_into(&self, raw: &[u8], meta: &RecordMeta, out: &mut Vec<Event>) -> Result<usize, ParseError> {
        if raw.len() > self.max_record_bytes {
            return Err(ParseError::Oversized {
                len: raw.len(),
                limit: self.max_record_bytes,
            });
        }
        let text = std::str::from_utf8(raw).map_err(|e| ParseError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        let text = text.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            return Err(ParseError::Empty);
        }
        let start = out.len();
        let result = self.dispatch(text, meta, out);
        match result {
            Ok(()) => {
                for event in &mut out[start..] {
                    if event.source.is_none() {
                        event.source.clone_from(&meta.origin);
                    }
                }
                Ok(out.len() - start)
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Normalizes one raw record.
    pub fn normalize(&self, raw: &[u8], meta: &RecordMeta) -> Result<Vec<Event>, ParseError> {
        let mut out = Vec::with_capacity(1);
        self.normalize_into(raw, meta, &mut out)?;
        Ok(out)
    }

    fn dispatch(&self, text: &str, meta: &RecordMeta, out: &mut Vec<Event>) -> Result<(), ParseError> {
        let ctx = Ctx {
            pseudonymizer: &self.pseudonymizer,
            raw: text,
            meta,
        };
        let shape = match sniff(text) {
            // A Microsoft Graph collection page (`auditLogs/signIns`, `auditLogs/directoryAudits`
            // as the API returns them): its `value` holds the records.
            Err(ParseError::UnknownFormat) => {
                let page: GraphPage<'_> = serde_json::from_str(text).map_err(|_| ParseError::UnknownFormat)?;
                return self.each(page.value, ctx, out);
            }
            shape => shape?,
        };
        match shape {
            Shape::JsonArray => {
                let items: Vec<&serde_json::value::RawValue> =
                    serde_json::from_str(text).map_err(ParseError::MalformedJson)?;
                self.each(items, ctx, out)
            }
            shape => self.one(shape, &ctx, out),
        }
    }

    /// The records of an array or a collection page, each by its own shape.
    fn each(
        &self,
        items: Vec<&serde_json::value::RawValue>,
        ctx: Ctx<'_>,
        out: &mut Vec<Event>,
    ) -> Result<(), ParseError> {
        if items.is_empty() {
            return Err(ParseError::Empty);
        }
        for item in items {
            let item = item.get();
            let ctx = Ctx { raw: item, ..ctx };
            match sniff(item)? {
                Shape::JsonArray => return Err(ParseError::UnknownFormat),
                shape => self.one(shape, &ctx, out)?,
            }
        }
        Ok(())
    }

    fn one(&self, shape: Shape, ctx: &Ctx<'_>, out: &mut Vec<Event>) -> Result<(), ParseError> {
        match shape {
            Shape::JsonArray => return Err(ParseError::UnknownFormat),
            Shape::Gateway => out.push(gateway::normalize(ctx)?),
            Shape::FhirJson => fhir_audit::normalize_json(ctx, out)?,
            Shape::FhirXml => fhir_audit::normalize_value(ctx, &fhir_xml::to_json(ctx.raw)?, out)?,
            Shape::Okta => out.push(okta::normalize(ctx)?),
            Shape::KeycloakJson => out.push(keycloak::normalize_json(ctx)?),
            Shape::KeycloakLine => out.push(keycloak::normalize_line(ctx, ctx.raw)?),
            Shape::KeycloakEcs => out.push(keycloak::normalize_ecs(ctx)?),
            Shape::EntraSignIn => out.push(entra::normalize_signin(ctx)?),
            Shape::EntraAudit => out.push(entra::normalize_audit(ctx)?),
            Shape::Auth0 => out.push(auth0::normalize(ctx)?),
            Shape::GcpAudit => gcp::normalize(ctx, out)?,
            Shape::CloudTrail => out.push(cloudtrail::normalize(ctx)?),
            Shape::NotAudit(what) => return Err(ParseError::NotAuditEvent(what)),
        }
        Ok(())
    }
}

/// A Microsoft Graph collection response (OData: `@odata.context`, the records in `value`, and
/// `@odata.nextLink` while more pages follow).
#[derive(serde::Deserialize)]
struct GraphPage<'a> {
    #[serde(rename = "@odata.context")]
    _context: serde::de::IgnoredAny,
    #[serde(borrow)]
    value: Vec<&'a serde_json::value::RawValue>,
}

/// What every format normalizer gets: the record text and the shared services.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub pseudonymizer: &'a Pseudonymizer,
    pub raw: &'a str,
    pub meta: &'a RecordMeta,
}

impl Ctx<'_> {
    /// The event id when the source gives none: a stable hash of the raw record.
    pub fn fallback_id(&self, format: SourceFormat) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.raw.as_bytes());
        format!("{}:{}", format.as_str(), hex::encode(&digest[..16]))
    }
}

/// Parses an RFC 3339 timestamp (also the 7-digit fractions and `+00:00` offsets of Entra).
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// Canonical form of a client network address: an IP address as `IpAddr` prints it (also from
/// FHIR's `urn:ipv4:`/`urn:ipv6:` forms, and with a port or IPv6 brackets stripped). Anything
/// else — a host name, a URL, a redaction placeholder such as `IP` or `REDACTED`, `0.0.0.0` — is
/// no address: `src_ip` holds an address that parses, or nothing.
pub(crate) fn network_address(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix("urn:ipv6:")
        .or_else(|| s.strip_prefix("urn:ipv4:"))
        .unwrap_or(s);
    let ip = s
        .parse::<std::net::IpAddr>()
        .or_else(|_| s.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .or_else(|_| {
            s.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
        })
        .ok()?;
    (!ip.is_unspecified()).then(|| ip.to_string())
}

/// Derives the FHIR resource type from a request path or URL (`/fhir/R4/Observation?…` →
/// `Observation`): see [`fhir_rest`].
pub(crate) fn resource_type_from_path(path: &str) -> Option<&str> {
    fhir_rest::Route::parse(path).resource_type
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::event::EventKind;

    fn one(raw: &str) -> Result<Event, ParseError> {
        let n = Normalizer::new(Pseudonymizer::random(), 1 << 20);
        n.normalize(raw.as_bytes(), &RecordMeta::default())
            .map(|mut v| v.remove(0))
    }

    fn time(s: &str) -> Option<DateTime<Utc>> {
        parse_time(s)
    }

    #[test]
    fn okta_access_token_grants_name_the_token_and_its_expiry() {
        let grant = r#"{"uuid": "u-1", "published": "2026-01-05T09:00:00.000Z",
            "eventType": "app.oauth2.as.token.grant.access_token",
            "actor": {"id": "0oa-etl", "type": "PublicClientApp", "displayName": "ETL"},
            "outcome": {"result": "SUCCESS"},
            "target": [{"id": "aus1", "type": "AuthorizationServer"},
                       {"id": "AT.abc", "type": "access_token", "displayName": "Access Token",
                        "detailEntry": {"expires": "2026-01-05T10:00:00.000Z", "subject": "0oa-etl"}}]}"#;
        let e = one(grant).expect("normalizes");
        assert_eq!(e.kind, EventKind::TokenIssued);
        assert_eq!(e.token_id.as_deref(), Some("AT.abc"));
        assert_eq!(e.token_issued_at, time("2026-01-05T09:00:00Z"));
        assert_eq!(e.token_expires_at, time("2026-01-05T10:00:00Z"));
        let bad = grant.replace("2026-01-05T10:00:00.000Z", "in an hour");
        assert_eq!(
            one(&bad).expect_err("bad expiry").to_string(),
            ParseError::bad_time(SourceFormat::Okta, "target.detailEntry.expires").to_string()
        );
    }

    #[test]
    fn gateway_lines_carry_the_token_id_and_its_iat_and_exp_as_seconds_or_text() {
        let line = r#"{"ts": "2026-01-05T09:50:00Z", "client_id": "etl", "method": "GET",
            "path": "/fhir/Patient/1", "status": 200, "token_id": "AT.abc",
            "token_issued_at": 1767603600, "token_expires_at": "2026-01-05T10:00:00Z"}"#;
        let e = one(line).expect("normalizes");
        assert_eq!(e.token_id.as_deref(), Some("AT.abc"));
        assert_eq!(e.token_issued_at, time("2026-01-05T09:00:00Z"));
        assert_eq!(e.token_expires_at, time("2026-01-05T10:00:00Z"));
        let bad = line.replace("1767603600", "\"yesterday\"");
        assert_eq!(
            one(&bad).expect_err("bad iat").to_string(),
            ParseError::bad_time(SourceFormat::GatewayAccess, "token_issued_at").to_string()
        );
    }

    /// Microsoft Graph `GET /auditLogs/signIns` answers a collection page: `@odata.context`, the
    /// records in `value`, `@odata.nextLink` for the next page. Each record is an event; an object
    /// with a `value` but no OData context is no page.
    #[test]
    fn a_graph_collection_page_yields_its_records() {
        let sign_in = |id: &str| {
            format!(
                r#"{{"id": "{id}", "createdDateTime": "2026-03-02T11:10:03Z", "appId": "6131d760-00a0-4c4e-9a8e-1d2d3c4b5a69",
                "appDisplayName": "lab-feed", "servicePrincipalId": "b029d485-a308-4311-8720-fb3192e5284e",
                "servicePrincipalName": "lab-feed", "ipAddress": "10.20.1.11", "signInEventTypes": ["servicePrincipal"],
                "status": {{"errorCode": 0}}}}"#
            )
        };
        let page = format!(
            r#"{{"@odata.context": "https://graph.microsoft.com/beta/$metadata#auditLogs/signIns",
            "value": [{}, {}], "@odata.nextLink": "https://graph.microsoft.com/beta/auditLogs/signIns?$skiptoken=x"}}"#,
            sign_in("s-1"),
            sign_in("s-2")
        );
        let n = Normalizer::new(Pseudonymizer::random(), 1 << 20);
        let events = n.normalize(page.as_bytes(), &RecordMeta::default()).expect("a page");
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["s-1", "s-2"]);
        assert!(
            events
                .iter()
                .all(|e| e.identity == "6131d760-00a0-4c4e-9a8e-1d2d3c4b5a69")
        );
        let no_page = format!(r#"{{"value": [{}]}}"#, sign_in("s-3"));
        assert_eq!(
            n.normalize(no_page.as_bytes(), &RecordMeta::default())
                .expect_err("no page")
                .reason(),
            "unknown_format"
        );
    }

    #[test]
    fn derives_resource_type_from_paths() {
        assert_eq!(resource_type_from_path("/r4/Observation/_search"), Some("Observation"));
        assert_eq!(
            resource_type_from_path("test.fhir.org/r4/Observation?patient=x"),
            Some("Observation")
        );
        assert_eq!(
            resource_type_from_path("https://server.example.com/fhir/Patient?family=X"),
            Some("Patient")
        );
        assert_eq!(
            resource_type_from_path("/fhir/R4/Observation?patient=x"),
            Some("Observation")
        );
        assert_eq!(resource_type_from_path("/api/FHIR/R4/Patient/1"), Some("Patient"));
        assert_eq!(resource_type_from_path("/fhir/metadata"), None);
        assert_eq!(resource_type_from_path("/fhir/$export"), None);
    }

    #[test]
    fn canonicalises_network_addresses() {
        assert_eq!(
            network_address("2001:0db8:85a3:0000:0000:8a2e:0370:7334").as_deref(),
            Some("2001:db8:85a3::8a2e:370:7334")
        );
        assert_eq!(network_address("urn:ipv6:2001:0db8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(network_address("10.0.0.7:443").as_deref(), Some("10.0.0.7"));
        assert_eq!(network_address("[2001:db8::1]:8443").as_deref(), Some("2001:db8::1"));
        // Host names, URLs and redaction placeholders are not addresses (issue 18, item 10).
        for not_ip in [
            "myDevice.example.com",
            "http://server.example.com/fhir",
            "",
            "IP",
            "REDACTED",
            "0.0.0.0",
            "::",
        ] {
            assert_eq!(network_address(not_ip), None, "{not_ip}");
        }
    }

    #[test]
    fn reasons_are_listed() {
        let errors = [
            ParseError::Oversized { len: 2, limit: 1 },
            ParseError::NotUtf8 { valid_up_to: 0 },
            ParseError::Empty,
            ParseError::UnknownFormat,
            ParseError::NotAuditEvent("x"),
            ParseError::missing(SourceFormat::Okta, "published"),
            ParseError::wrong(SourceFormat::Okta, "published", "number"),
            ParseError::bad_time(SourceFormat::Okta, "published"),
        ];
        for e in errors {
            assert!(ParseError::REASONS.contains(&e.reason()), "{}", e.reason());
        }
    }
}
