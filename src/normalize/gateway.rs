//! FHIR gateway access log: one JSON object per request (`schemas/gateway-access.schema.json`).
//!
//! This is the volume format, so it is read with borrowed, typed deserialization: strings that
//! need no unescaping are not copied until they land in the event. `resource_type` and
//! `interaction` are derived from `method` + `path` by the FHIR REST grammar
//! ([`super::fhir_rest`]) when the gateway does not state them.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::fhir_rest::Route;
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
        return ParseError::json(err);
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
