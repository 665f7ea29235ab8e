//! Raw bytes in, normalized [`Event`]s out: format sniffing, one file per input format.
//!
//! Formats are recognised by shape, not by topic: [`sniff`] reads only the top-level keys of a
//! JSON record (skipping values) or the first bytes of an XML or text record, and picks the
//! normalizer. A record that is a JSON array (Okta's API returns pages), a Microsoft Graph
//! collection page (`@odata.context` + `value`) or a FHIR `Bundle` of `AuditEvent`s yields several
//! events.
//!
//! Every record ends as [`Entries`], each of which becomes events, is refused with a
//! [`ParseError`] (for the dead letter) or is skipped: a record is one entry, except a page or a
//! `Bundle`, whose elements are entries of their own, so that one bad element costs only itself.
//! [`ParseError::reason`] is a small fixed code, used as the dead-letter or skip reason and as a
//! metric label.
//!
//! Structure is bounded before a tree is built, because a deep tree overflows the stack when it is
//! walked or dropped: JSON and XML nesting to [`MAX_DEPTH`], XML to [`MAX_XML_ELEMENTS`] elements
//! of at most [`MAX_XML_ATTRIBUTES`] attributes, pages and Bundles to [`MAX_PAGE_ELEMENTS`].

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
#[cfg(test)]
mod proptests;
pub mod pseudonym;
mod sniff;

use chrono::{DateTime, Utc};

use crate::event::{Event, Origin, SourceFormat};

pub use pseudonym::Pseudonymizer;
pub use sniff::{Shape, sniff};

pub use crate::event::UNIDENTIFIED;

/// Default largest record accepted, in bytes.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Deepest nesting accepted, of JSON arrays and objects or of XML elements. For JSON it is
/// serde_json's own recursion limit, which every JSON parse of a record goes through (none
/// disables it); XML is held to the same. The deepest real audit record nests about 12 levels.
pub const MAX_DEPTH: usize = 128;

/// Most XML elements in one record: a 1 MiB `Bundle` of `AuditEvent`s has about 20,000.
pub const MAX_XML_ELEMENTS: usize = 100_000;

/// Most attributes on one XML element (FHIR uses `value`, `url`, `id` and namespaces). Bounds
/// the parser's duplicate-attribute check, which is quadratic in their number.
pub const MAX_XML_ATTRIBUTES: usize = 32;

/// Most elements in one page (JSON array, Graph collection page) or `Bundle`: Okta and Graph
/// pages hold at most 1,000. Bounds the dead letters one record can cause.
pub const MAX_PAGE_ELEMENTS: usize = 10_000;

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
    /// The record is empty or blank, or a page or `Bundle` without elements.
    #[error("record is empty")]
    Empty,
    /// JSON syntax error.
    #[error("malformed JSON: {0}")]
    MalformedJson(#[source] serde_json::Error),
    /// XML syntax error.
    #[error("malformed XML: {0}")]
    MalformedXml(String),
    /// Arrays, objects or elements nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// More parts than any audit record has: XML elements or attributes, page elements.
    #[error("more than {limit} {what}")]
    TooComplex {
        /// What there are too many of.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
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
        "too_deep",
        "too_complex",
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
            ParseError::TooDeep { .. } => "too_deep",
            ParseError::TooComplex { .. } => "too_complex",
            ParseError::UnknownFormat => "unknown_format",
            ParseError::NotAuditEvent(_) => "not_audit_event",
            ParseError::MissingField { .. } => "missing_field",
            ParseError::WrongType { .. } => "wrong_type",
            ParseError::BadTimestamp { .. } => "bad_timestamp",
        }
    }

    /// A JSON parse error: [`ParseError::TooDeep`] for serde_json's recursion limit, which has no
    /// error code of its own (only its message tells it apart), else malformed JSON.
    pub(crate) fn json(e: serde_json::Error) -> ParseError {
        if e.is_syntax() && e.to_string().starts_with("recursion limit exceeded") {
            ParseError::TooDeep { limit: MAX_DEPTH }
        } else {
            ParseError::MalformedJson(e)
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

/// One element of a page or `Bundle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'r> {
    /// Its index: in the JSON array or the page's `value`, or in the `Bundle`'s `entry`.
    pub index: usize,
    /// Its own text (a `Bundle` entry's `resource`), which the dead letter keeps instead of the
    /// whole record; the whole record when it cannot be told apart.
    pub raw: &'r str,
}

/// An entry refused: for the dead letter.
#[derive(Debug)]
pub struct Rejected<'r> {
    /// The element, or `None` for the whole record.
    pub element: Option<Element<'r>>,
    /// Why.
    pub error: ParseError,
}

/// An entry passed over because there is nothing in it to judge: a blank record, an empty page
/// (`empty`), a `Bundle` entry that is not an `AuditEvent` (`not_audit_event`).
#[derive(Debug)]
pub struct Skipped {
    /// The element's index, or `None` for the whole record.
    pub element: Option<usize>,
    /// Why; its [`ParseError::reason`] is what the skip is counted under.
    pub error: ParseError,
}

/// The entries of one record and what became of each. Every entry — the record itself, or each
/// element of a page or `Bundle` — is exactly one of accepted (one or more events), rejected or
/// skipped: `total == accepted + rejected.len() + skipped.len()`.
#[derive(Debug, Default)]
pub struct Entries<'r> {
    /// Entries judged: 1 for a record, the number of elements for a page or `Bundle` (1 when it
    /// has none).
    pub total: usize,
    /// Entries that became events.
    pub accepted: usize,
    /// Events appended (an entry may give several: a GCP policy change granting roles to
    /// several members).
    pub events: usize,
    /// Entries refused, in order.
    pub rejected: Vec<Rejected<'r>>,
    /// Entries skipped, in order.
    pub skipped: Vec<Skipped>,
}

impl Entries<'_> {
    /// All or nothing, for callers that want one record to be one result: the events, or the
    /// first refusal, or (no event at all) the first reason for skipping.
    pub fn into_result(self) -> Result<usize, ParseError> {
        if let Some(first) = self.rejected.into_iter().next() {
            return Err(first.error);
        }
        if self.events == 0 {
            return Err(self.skipped.into_iter().next().map_or(ParseError::Empty, |s| s.error));
        }
        Ok(self.events)
    }
}

/// Collects the fate of each entry of a record into its [`Entries`] as the normalizers judge
/// them.
pub(crate) struct Judge<'r, 'a> {
    out: &'a mut Vec<Event>,
    entries: &'a mut Entries<'r>,
}

impl<'r, 'a> Judge<'r, 'a> {
    /// A judge appending events to `out` and the fate of each entry to `entries`.
    pub fn new(out: &'a mut Vec<Event>, entries: &'a mut Entries<'r>) -> Judge<'r, 'a> {
        Judge { out, entries }
    }

    /// Judges one entry: `normalize` appends its events or fails, and then appends nothing.
    /// `raw` gives the element's text for the dead letter, asked only on failure.
    pub fn entry(
        &mut self,
        index: Option<usize>,
        raw: impl FnOnce() -> &'r str,
        normalize: impl FnOnce(&mut Vec<Event>) -> Result<(), ParseError>,
    ) {
        self.entries.total += 1;
        let start = self.out.len();
        match normalize(self.out) {
            Ok(()) => {
                self.entries.accepted += 1;
                self.entries.events += self.out.len() - start;
            }
            Err(error) => {
                self.out.truncate(start);
                let element = index.map(|index| Element { index, raw: raw() });
                self.entries.rejected.push(Rejected { element, error });
            }
        }
    }

    /// Refuses one entry without trying it.
    pub fn reject(&mut self, element: Option<Element<'r>>, error: ParseError) {
        self.entries.total += 1;
        self.entries.rejected.push(Rejected { element, error });
    }

    /// Skips one entry.
    pub fn skip(&mut self, element: Option<usize>, error: ParseError) {
        self.entries.total += 1;
        self.entries.skipped.push(Skipped { element, error });
    }
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

    /// Normalizes one raw record into `out`, entry by entry: the events of the entries that
    /// make them are appended, the others are in the answer with their reasons.
    pub fn normalize_record<'r>(&self, raw: &'r [u8], meta: &RecordMeta, out: &mut Vec<Event>) -> Entries<'r> {
        let mut entries = Entries::default();
        let start = out.len();
        let mut judge = Judge::new(out, &mut entries);
        if raw.len() > self.max_record_bytes {
            let error = ParseError::Oversized {
                len: raw.len(),
                limit: self.max_record_bytes,
            };
            judge.reject(None, error);
            return entries;
        }
        match std::str::from_utf8(raw) {
            Err(e) => judge.reject(
                None,
                ParseError::NotUtf8 {
                    valid_up_to: e.valid_up_to(),
                },
            ),
            Ok(text) => match text.trim_start_matches('\u{feff}').trim() {
                "" => judge.skip(None, ParseError::Empty),
                text => self.dispatch(text, meta, &mut judge),
            },
        }
        for event in &mut out[start..] {
            if event.source.is_none() {
                event.source.clone_from(&meta.origin);
            }
        }
        entries
    }

    /// Normalizes one raw record into `out`, all or nothing (see [`Entries::into_result`]),
    /// returning how many events were appended. On error nothing is appended.
    pub fn normalize_into(&self, raw: &[u8], meta: &RecordMeta, out: &mut Vec<Event>) -> Result<usize, ParseError> {
        let start = out.len();
        let result = self.normalize_record(raw, meta, out).into_result();
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Normalizes one raw record, all or nothing.
    pub fn normalize(&self, raw: &[u8], meta: &RecordMeta) -> Result<Vec<Event>, ParseError> {
        let mut out = Vec::with_capacity(1);
        self.normalize_into(raw, meta, &mut out)?;
        Ok(out)
    }

    fn dispatch<'r>(&self, text: &'r str, meta: &RecordMeta, judge: &mut Judge<'r, '_>) {
        let ctx = Ctx {
            pseudonymizer: &self.pseudonymizer,
            raw: text,
            meta,
        };
        let shape = match sniff(text) {
            Ok(shape) => shape,
            // A Microsoft Graph collection page (`auditLogs/signIns`, `auditLogs/directoryAudits`
            // as the API returns them): its `value` holds the records.
            Err(ParseError::UnknownFormat) => match serde_json::from_str::<GraphPage<'_>>(text) {
                Ok(page) => return self.each(page.value, ctx, judge),
                Err(_) => return judge.reject(None, ParseError::UnknownFormat),
            },
            Err(error) => return judge.reject(None, error),
        };
        match shape {
            Shape::JsonArray => match serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text) {
                Ok(items) => self.each(items, ctx, judge),
                Err(error) => judge.reject(None, ParseError::json(error)),
            },
            // A Bundle's entries are entries of their own.
            Shape::FhirJson => fhir_audit::judge_json(&ctx, text, judge),
            Shape::FhirXml => fhir_audit::judge_xml(&ctx, text, judge),
            shape => judge.entry(None, || text, |out| self.one(shape, &ctx, out)),
        }
    }

    /// The records of an array or a collection page, each an entry by its own shape.
    fn each<'r>(&self, items: Vec<&'r serde_json::value::RawValue>, ctx: Ctx<'_>, judge: &mut Judge<'r, '_>) {
        if items.is_empty() {
            return judge.skip(None, ParseError::Empty);
        }
        if items.len() > MAX_PAGE_ELEMENTS {
            let error = ParseError::TooComplex {
                what: "elements in a page",
                limit: MAX_PAGE_ELEMENTS,
            };
            return judge.reject(None, error);
        }
        for (index, item) in items.into_iter().enumerate() {
            let raw = item.get();
            let ctx = Ctx { raw, ..ctx };
            judge.entry(
                Some(index),
                || raw,
                |out| match sniff(raw)? {
                    // Pages hold records, not pages.
                    Shape::JsonArray => Err(ParseError::UnknownFormat),
                    shape => self.one(shape, &ctx, out),
                },
            );
        }
    }

    /// One record of a known shape, all or nothing (a `Bundle` inside a page is one entry).
    fn one(&self, shape: Shape, ctx: &Ctx<'_>, out: &mut Vec<Event>) -> Result<(), ParseError> {
        match shape {
            Shape::JsonArray => return Err(ParseError::UnknownFormat),
            Shape::Gateway => out.push(gateway::normalize(ctx)?),
            Shape::FhirJson => fhir_audit::normalize_json(ctx, out)?,
            Shape::FhirXml => fhir_audit::normalize_xml(ctx, out)?,
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

    fn audit_event(id: &str, recorded: &str) -> String {
        format!(
            r#"{{"resourceType": "AuditEvent", "id": "{id}", "recorded": "{recorded}",
            "agent": [{{"type": {{"coding": [{{"code": "110153"}}]}}, "who": {{"display": "lab-feed"}}}}]}}"#
        )
    }

    fn judged(raw: &str) -> (Vec<Event>, Entries<'_>) {
        let n = Normalizer::new(Pseudonymizer::random(), 1 << 20);
        let mut out = Vec::new();
        let entries = n.normalize_record(raw.as_bytes(), &RecordMeta::default(), &mut out);
        assert_eq!(
            entries.total,
            entries.accepted + entries.rejected.len() + entries.skipped.len(),
            "every entry is counted once"
        );
        assert_eq!(entries.events, out.len());
        (out, entries)
    }

    fn rejected<'r>(entries: &Entries<'r>) -> Vec<(Option<usize>, Option<&'r str>, &'static str)> {
        entries
            .rejected
            .iter()
            .map(|r| (r.element.map(|e| e.index), r.element.map(|e| e.raw), r.error.reason()))
            .collect()
    }

    fn skipped(entries: &Entries<'_>) -> Vec<(Option<usize>, &'static str)> {
        entries.skipped.iter().map(|s| (s.element, s.error.reason())).collect()
    }

    /// Issue 19: one bad element of a page cost the whole page. Each element is an entry: the
    /// good ones become events, each bad one is refused with its index and its own text.
    #[test]
    fn a_page_with_bad_elements_keeps_its_good_ones() {
        let bad_time = audit_event("b", "yesterday");
        let page = format!(
            "[{}, {bad_time}, {{\"hello\": 1}}, [1], {}]",
            audit_event("a", "2026-01-05T09:00:00Z"),
            audit_event("c", "2026-01-05T09:01:00Z")
        );
        let (events, entries) = judged(&page);
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!((entries.total, entries.accepted), (5, 2));
        assert_eq!(
            rejected(&entries),
            [
                (Some(1), Some(bad_time.as_str()), "bad_timestamp"),
                (Some(2), Some(r#"{"hello": 1}"#), "unknown_format"),
                (Some(3), Some("[1]"), "unknown_format"),
            ]
        );
        // All or nothing for the callers that ask for it.
        let n = Normalizer::new(Pseudonymizer::random(), 1 << 20);
        let error = n
            .normalize(page.as_bytes(), &RecordMeta::default())
            .expect_err("one is bad");
        assert_eq!(error.reason(), "bad_timestamp");
    }

    /// Blank records and empty pages hold nothing to judge: skipped as `empty`, not refused.
    #[test]
    fn blank_records_and_empty_pages_are_skipped() {
        for raw in [
            "",
            "  \t",
            "\u{feff}",
            "[]",
            " [ ] ",
            r#"{"resourceType": "Bundle", "type": "searchset", "total": 0}"#,
        ] {
            let (events, entries) = judged(raw);
            assert!(events.is_empty());
            assert_eq!(skipped(&entries), [(None, "empty")], "{raw:?}");
        }
    }

    /// A `Bundle`'s entries are entries of their own, in JSON and in XML: an `AuditEvent` that
    /// fails is refused with its index and its own text, one that is not an `AuditEvent` (or no
    /// resource at all) is skipped, the rest become events.
    #[test]
    fn bundle_entries_are_judged_one_by_one() {
        let bad = audit_event("b", "not a time");
        let json = format!(
            r#"{{"resourceType": "Bundle", "type": "collection", "entry": [
                {{"resource": {}}}, {{"resource": {bad}}}, {{"resource": {{"resourceType": "Patient", "id": "p"}}}},
                {{"fullUrl": "urn:uuid:x"}}, {{"resource": {}}}]}}"#,
            audit_event("a", "2026-01-05T09:00:00Z"),
            audit_event("c", "2026-01-05T09:02:00Z")
        );
        let (events, entries) = judged(&json);
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(rejected(&entries), [(Some(1), Some(bad.as_str()), "bad_timestamp")]);
        assert_eq!(
            skipped(&entries),
            [(Some(2), "not_audit_event"), (Some(3), "not_audit_event")]
        );

        let ae = |id: &str, recorded: &str| {
            format!(
                r#"<AuditEvent><id value="{id}"/><recorded value="{recorded}"/><agent><type><coding><code value="110153"/></coding></type><who><display value="lab-feed"/></who></agent></AuditEvent>"#
            )
        };
        let bad = ae("b", "not a time");
        let xml = format!(
            r#"<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/><entry><resource>{}</resource></entry>
            <entry><resource>{bad}</resource></entry><entry><resource><Patient><id value="p"/></Patient></resource></entry>
            <entry><fullUrl value="urn:uuid:x"/></entry><entry><resource>{}</resource></entry></Bundle>"#,
            ae("a", "2026-01-05T09:00:00Z"),
            ae("c", "2026-01-05T09:02:00Z")
        );
        let (events, entries) = judged(&xml);
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(rejected(&entries), [(Some(1), Some(bad.as_str()), "bad_timestamp")]);
        assert_eq!(
            skipped(&entries),
            [(Some(2), "not_audit_event"), (Some(3), "not_audit_event")]
        );

        // A Bundle with no AuditEvent at all, all or nothing, is still no audit event.
        let n = Normalizer::new(Pseudonymizer::random(), 1 << 20);
        let patients = r#"{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient"}}]}"#;
        let error = n
            .normalize(patients.as_bytes(), &RecordMeta::default())
            .expect_err("no AuditEvent");
        assert_eq!(error.reason(), "not_audit_event");
    }

    /// Issue 19: nesting is refused as `too_deep` before a tree is built (building and dropping
    /// a tree 100,000 deep overflows the stack), in every format; nesting within the limit, as a
    /// FHIR extension may, is read.
    #[test]
    fn deep_records_are_refused_in_every_format() {
        let nested_json = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let extension = |depth: usize| {
            let mut ae = audit_event("deep", "2026-01-05T09:00:00Z");
            ae.truncate(ae.len() - 1);
            format!("{ae}, \"extension\": {}}}", nested_json(depth))
        };
        let (events, _) = judged(&extension(MAX_DEPTH - 2));
        assert_eq!(events.len(), 1, "within the limit");
        let deep_xml = format!(
            "<AuditEvent xmlns=\"http://hl7.org/fhir\">{}{}</AuditEvent>",
            "<a>".repeat(100_000),
            "</a>".repeat(100_000)
        );
        let deep = [
            extension(100_000),
            format!(
                r#"{{"eventType": "x", "actor": {{}}, "published": "x", "debugContext": {}}}"#,
                nested_json(100_000)
            ),
            format!(r#"{{"protoPayload": {}, "logName": "x"}}"#, nested_json(100_000)),
            format!(r#"{{"category": {}, "operationName": "x"}}"#, nested_json(100_000)),
            format!("[{}]", extension(100_000)),
            deep_xml,
        ];
        for record in &deep {
            let (events, entries) = judged(record);
            assert!(events.is_empty());
            let reasons: Vec<&str> = entries.rejected.iter().map(|r| r.error.reason()).collect();
            assert_eq!(reasons, ["too_deep"], "{}", &record[..80]);
        }
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
            ParseError::TooDeep { limit: 1 },
            ParseError::TooComplex { what: "x", limit: 1 },
            ParseError::missing(SourceFormat::Okta, "published"),
            ParseError::wrong(SourceFormat::Okta, "published", "number"),
            ParseError::bad_time(SourceFormat::Okta, "published"),
        ];
        for e in errors {
            assert!(ParseError::REASONS.contains(&e.reason()), "{}", e.reason());
        }
    }
}
