//! FHIR gateway access log: one JSON object per request (`schemas/gateway-access.schema.json`).
//!
//! This is the volume format, so it is read with borrowed, typed deserialization: strings that
//! need no unescaping are not copied until they land in the event. `resource_type` and
//! `interaction` are derived from `method` + `path` when the gateway does not state them.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{Ctx, ParseError, network_address, parse_time};
use crate::event::{Event, EventKind, IdentityType, Interaction, Outcome, SourceFormat};
use crate::scope::Scope;

const FORMAT: SourceFormat = SourceFormat::GatewayAccess;

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    ts: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    client_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sub: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tenant: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    scopes: Words<'a>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    path: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resource_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    interaction: Option<Cow<'a, str>>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    records: Option<u64>,
    #[serde(borrow, default)]
    patients: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    patient_count: Option<u64>,
    #[serde(default)]
    bytes: Option<u64>,
    #[serde(borrow, default)]
    src_ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    purpose_of_use: Words<'a>,
    #[serde(borrow, default)]
    token_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    token_issued_at: Option<Instant<'a>>,
    #[serde(borrow, default)]
    token_expires_at: Option<Instant<'a>>,
}

/// A JWT NumericDate (Unix seconds) or an RFC 3339 string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Instant<'a> {
    Seconds(i64),
    Text(#[serde(borrow)] Cow<'a, str>),
}

impl Instant<'_> {
    fn at(&self, field: &'static str) -> Result<DateTime<Utc>, ParseError> {
        match self {
            Instant::Seconds(s) => DateTime::from_timestamp(*s, 0),
            Instant::Text(t) => parse_time(t),
        }
        .ok_or(ParseError::bad_time(FORMAT, field))
    }
}

/// A space-separated string or an array of strings.
#[derive(Default)]
struct Words<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Words<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Words<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a space-separated string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Words(v.split_ascii_whitespace().map(Cow::Borrowed).collect()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Words(
                    v.split_ascii_whitespace().map(|w| Cow::Owned(w.to_owned())).collect(),
                ))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Words(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut words = Vec::new();
                while let Some(w) = seq.next_element::<Cow<'a, str>>()? {
                    words.push(w);
                }
                Ok(Words(words))
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Names the field a type error is about. Runs only on the error path: the record is parsed
/// again with path tracking, so the hot path pays nothing for it.
fn type_error(raw: &str, err: serde_json::Error) -> ParseError {
    if err.is_syntax() || err.is_eof() {
        return ParseError::MalformedJson(err);
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    let field = match serde_path_to_error::deserialize::<_, Line<'_>>(&mut de) {
        Err(e) => e.path().to_string(),
        Ok(_) => String::new(),
    };
    let field = FIELDS
        .iter()
        .copied()
        .find(|f| field == *f || field.starts_with(&format!("{f}[")))
        .unwrap_or("(record)");
    ParseError::wrong(FORMAT, field, err.to_string())
}

/// The schema's fields, as static names for the error.
const FIELDS: &[&str] = &[
    "ts",
    "request_id",
    "client_id",
    "sub",
    "tenant",
    "scopes",
    "method",
    "path",
    "resource_type",
    "interaction",
    "status",
    "records",
    "patients",
    "patient_count",
    "bytes",
    "src_ip",
    "user_agent",
    "purpose_of_use",
];

/// Normalizes one access-log line.
pub fn normalize(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    let line: Line<'_> = serde_json::from_str(ctx.raw).map_err(|e| type_error(ctx.raw, e))?;
    let ts = line.ts.as_deref().ok_or(ParseError::missing(FORMAT, "ts"))?;
    let time = parse_time(ts).ok_or(ParseError::bad_time(FORMAT, "ts"))?;
    let client_id = line.client_id.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let client_id = client_id.ok_or(ParseError::missing(FORMAT, "client_id"))?;

    let route = line.path.as_deref().map(Route::parse).unwrap_or_default();
    let method = line.method.as_deref().unwrap_or("GET");
    let interaction = match line.interaction.as_deref() {
        Some(code) => Some(
            Interaction::from_code(code)
                .ok_or_else(|| ParseError::wrong(FORMAT, "interaction", format!("unknown interaction `{code}`")))?,
        ),
        None => route.interaction(method),
    };
    let status = line.status;
    let denied = matches!(status, Some(401 | 403));

    let event_id = match line.request_id.as_deref() {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => ctx.fallback_id(FORMAT),
    };
    let kind = if denied {
        EventKind::AuthFailure
    } else {
        EventKind::DataAccess
    };
    let mut event = Event::new(event_id, time, FORMAT, kind, client_id.to_owned());
    event.identity_type = IdentityType::Application;
    event.tenant = line.tenant.map(Cow::into_owned);
    event.on_behalf_of = line
        .sub
        .filter(|s| s.as_ref() != client_id && !s.is_empty())
        .map(Cow::into_owned);
    event.scopes = Scope::collect(line.scopes.0.iter().map(AsRef::as_ref));
    event.interaction = interaction;
    event.operation = route.operation.map(str::to_owned);
    event.resource_type = line
        .resource_type
        .map(Cow::into_owned)
        .or_else(|| route.resource_type.map(str::to_owned));
    if let Some(patients) = line.patients {
        let mut pseudonyms: Vec<String> = patients.iter().map(|p| ctx.pseudonymizer.patient(p)).collect();
        pseudonyms.sort_unstable();
        pseudonyms.dedup();
        event.patients = pseudonyms;
    }
    event.patient_count = line.patient_count;
    event.records = line.records;
    event.bytes = line.bytes;
    event.purpose_of_use = line.purpose_of_use.0.into_iter().map(Cow::into_owned).collect();
    event.src_ip = line.src_ip.as_deref().and_then(network_address);
    event.user_agent = line.user_agent.map(Cow::into_owned);
    event.status = status;
    event.outcome = match status {
        Some(s) if s < 400 => Outcome::Success,
        Some(_) => Outcome::Failure,
        None => Outcome::Unknown,
    };
    event.action = Some(method.to_ascii_uppercase());
    event.token_id = line.token_id.filter(|t| !t.is_empty()).map(Cow::into_owned);
    event.token_issued_at = line.token_issued_at.map(|t| t.at("token_issued_at")).transpose()?;
    event.token_expires_at = line.token_expires_at.map(|t| t.at("token_expires_at")).transpose()?;
    Ok(event)
}

/// What a FHIR REST path says: `[base/]Type[/id[/_history[/vid]]]`, compartments, `$operations`.
#[derive(Debug, Default, PartialEq)]
struct Route<'a> {
    resource_type: Option<&'a str>,
    id: bool,
    history: bool,
    version: bool,
    search: bool,
    operation: Option<&'a str>,
    metadata: bool,
    base: bool,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Route<'a> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut route = Route::default();
        let is_type = |s: &str| {
            let mut c = s.chars();
            c.next().is_some_and(|c| c.is_ascii_uppercase()) && c.all(|c| c.is_ascii_alphanumeric())
        };
        route.operation = segments.iter().copied().find(|s| s.starts_with('$') && s.len() > 1);
        route.metadata = segments.last() == Some(&"metadata");
        let Some(first) = segments.iter().position(|s| is_type(s)) else {
            route.base = true;
            return route;
        };
        let rest = &segments[first + 1..];
        route.resource_type = Some(segments[first]);
        match rest {
            [] => {}
            ["_search"] => route.search = true,
            ["_history"] => route.history = true,
            [op] if op.starts_with('$') => {}
            [_id] => route.id = true,
            [_id, "_history"] => route.history = true,
            [_id, "_history", _v] => route.version = true,
            [_id, op] if op.starts_with('$') => route.id = true,
            [_id, compartment, ..] if is_type(compartment) => {
                route.resource_type = Some(compartment);
                route.search = true;
            }
            _ => route.id = true,
        }
        route
    }

    fn interaction(&self, method: &str) -> Option<Interaction> {
        if self.operation.is_some() {
            return Some(Interaction::Operation);
        }
        let method = method.to_ascii_uppercase();
        Some(match method.as_str() {
            "GET" | "HEAD" if self.metadata => Interaction::Capabilities,
            "GET" | "HEAD" if self.version => Interaction::Vread,
            "GET" | "HEAD" if self.history => Interaction::History,
            "GET" | "HEAD" if self.id => Interaction::Read,
            "GET" | "HEAD" if self.resource_type.is_some() || self.search => Interaction::Search,
            "POST" if self.search => Interaction::Search,
            "POST" if self.base => Interaction::Transaction,
            "POST" => Interaction::Create,
            "PUT" => Interaction::Update,
            "PATCH" => Interaction::Patch,
            "DELETE" => Interaction::Delete,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derive(method: &str, path: &str) -> (Option<Interaction>, Option<&'static str>, Option<String>) {
        let path: &'static str = Box::leak(path.to_owned().into_boxed_str());
        let route = Route::parse(path);
        (
            route.interaction(method),
            route.resource_type,
            route.operation.map(str::to_owned),
        )
    }

    #[test]
    fn derives_interactions_from_method_and_path() {
        use Interaction::*;
        assert_eq!(
            derive("GET", "/fhir/r4/Patient/123"),
            (Some(Read), Some("Patient"), None)
        );
        assert_eq!(
            derive("GET", "/fhir/Patient/123/_history/2"),
            (Some(Vread), Some("Patient"), None)
        );
        assert_eq!(
            derive("GET", "/fhir/Patient/123/_history"),
            (Some(History), Some("Patient"), None)
        );
        assert_eq!(
            derive("GET", "/fhir/Observation?patient=1"),
            (Some(Search), Some("Observation"), None)
        );
        assert_eq!(
            derive("POST", "/fhir/Observation/_search"),
            (Some(Search), Some("Observation"), None)
        );
        assert_eq!(
            derive("GET", "/fhir/Patient/1/Observation"),
            (Some(Search), Some("Observation"), None)
        );
        assert_eq!(
            derive("POST", "/fhir/Observation"),
            (Some(Create), Some("Observation"), None)
        );
        assert_eq!(
            derive("PUT", "/fhir/Observation/9"),
            (Some(Update), Some("Observation"), None)
        );
        assert_eq!(
            derive("PATCH", "/fhir/Observation/9"),
            (Some(Patch), Some("Observation"), None)
        );
        assert_eq!(
            derive("DELETE", "/fhir/Observation/9"),
            (Some(Delete), Some("Observation"), None)
        );
        assert_eq!(derive("GET", "/fhir/metadata"), (Some(Capabilities), None, None));
        assert_eq!(derive("POST", "/fhir"), (Some(Transaction), None, None));
        assert_eq!(
            derive("GET", "/fhir/$export"),
            (Some(Operation), None, Some("$export".into()))
        );
        assert_eq!(
            derive("GET", "/fhir/Group/7/$export?_type=Patient"),
            (Some(Operation), Some("Group"), Some("$export".into()))
        );
    }
}
