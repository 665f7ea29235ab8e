//! Keycloak events: the event-listener JSON (login and admin events), the `org.keycloak.events`
//! console line (`type=LOGIN_ERROR, realmId=..., clientId=...`) and the same line inside
//! Keycloak's JSON (ECS) console log.
//!
//! Who acted, by the event types of the Keycloak Server Administration Guide ("Auditing and
//! events", user events):
//!
//! | event types | identity | `identity_type` | on behalf of |
//! |---|---|---|---|
//! | the client's own: `CLIENT_LOGIN` (client credentials), `CODE_TO_TOKEN`, `REFRESH_TOKEN`, `TOKEN_EXCHANGE`, `INTROSPECT_TOKEN`, `PERMISSION_TOKEN`, `USER_INFO_REQUEST`, device and CIBA token requests, `CLIENT_REGISTER`/`_UPDATE`/`_DELETE`, `CLIENT_INFO`, `PUSHED_AUTHORIZATION_REQUEST` (and their `_ERROR`s) | `clientId` | `application` | the user, except for a client-credentials login (its service account) |
//! | everything else — `LOGIN`, `LOGIN_ERROR`, `LOGOUT`, `REGISTER`, `UPDATE_PASSWORD`… — is a person's browser or account flow, whatever client it went through | `userId`, else `username`, else `unidentified` | `user` (a human event) | — |
//!
//! Admin
//! events that create, update or delete a client are the lifecycle of that client (from
//! `resourcePath`), its secret regeneration a credential change; the admin is the initiator.
//! Console lines carry local time without a zone and are read as UTC; lines with only a time of
//! day are dated by the record's arrival time.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::Value;

use super::json::{str_at, string_at};
use super::{Ctx, ParseError, network_address, parse_time};
use crate::event::{Event, EventKind, IdentityType, Outcome, SourceFormat};
use crate::scope::Scope;

const FORMAT: SourceFormat = SourceFormat::Keycloak;

/// Normalizes an event-listener JSON event.
pub fn normalize_json(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::json)?;
    let time = match v.get("time") {
        Some(Value::Number(n)) => n.as_i64().and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        Some(Value::String(s)) => parse_time(s).or_else(|| {
            s.parse::<i64>()
                .ok()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        }),
        Some(_) => return Err(ParseError::wrong(FORMAT, "time", "expected epoch milliseconds")),
        None => return Err(ParseError::missing(FORMAT, "time")),
    }
    .ok_or(ParseError::bad_time(FORMAT, "time"))?;
    let fields = Fields {
        get: &|key: &str| -> Option<String> {
            match key {
                "authClientId" => string_at(&v, &["authDetails", "clientId"]),
                "authUserId" => string_at(&v, &["authDetails", "userId"]),
                "authIpAddress" => string_at(&v, &["authDetails", "ipAddress"]),
                _ => string_at(&v, &[key]).or_else(|| string_at(&v, &["details", key])),
            }
        },
    };
    let id = string_at(&v, &["id"]).unwrap_or_else(|| ctx.fallback_id(FORMAT));
    build(fields, id, time)
}

/// Normalizes an `org.keycloak.events` console line.
pub fn normalize_line(ctx: &Ctx<'_>, line: &str) -> Result<Event, ParseError> {
    let (prefix, message) = line
        .split_once("[org.keycloak.events]")
        .ok_or(ParseError::UnknownFormat)?;
    let time = line_time(prefix, ctx)?;
    let message = message.trim_start();
    // Skip the `(thread name)` that precedes the message.
    let message = match message.strip_prefix('(') {
        Some(rest) => rest.split_once(") ").map_or(rest, |(_, m)| m),
        None => message,
    };
    message_event(ctx, message, time)
}

/// Normalizes a Keycloak JSON (ECS) log line whose logger is `org.keycloak.events`.
pub fn normalize_ecs(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::json)?;
    let ts = str_at(&v, &["@timestamp"]).ok_or(ParseError::missing(FORMAT, "@timestamp"))?;
    let time = parse_time(ts).ok_or(ParseError::bad_time(FORMAT, "@timestamp"))?;
    let message = str_at(&v, &["message"]).ok_or(ParseError::missing(FORMAT, "message"))?;
    message_event(ctx, message, time)
}

fn message_event(ctx: &Ctx<'_>, message: &str, time: DateTime<Utc>) -> Result<Event, ParseError> {
    let pairs = key_values(message);
    if pairs.is_empty() {
        return Err(ParseError::NotAuditEvent(
            "Keycloak events line without key=value fields",
        ));
    }
    let fields = Fields {
        get: &|key: &str| -> Option<String> {
            let key = match key {
                "authClientId" => "clientId",
                "authUserId" => "userId",
                "authIpAddress" => "ipAddress",
                k => k,
            };
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .filter(|v| !v.is_empty() && v != "null")
        },
    };
    build(fields, ctx.fallback_id(FORMAT), time)
}

/// Splits `a=1, b=x, y, c="q"` into pairs; a segment without `key=` continues the previous value.
fn key_values(message: &str) -> Vec<(&str, String)> {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for segment in message.split(", ") {
        let key_value = segment
            .split_once('=')
            .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        match (key_value, pairs.last_mut()) {
            (Some((k, v)), _) => pairs.push((k, v.trim().trim_matches('"').to_owned())),
            (None, Some((_, prev))) => {
                prev.push_str(", ");
                prev.push_str(segment);
            }
            (None, None) => {}
        }
    }
    pairs
}

fn line_time(prefix: &str, ctx: &Ctx<'_>) -> Result<DateTime<Utc>, ParseError> {
    let words: Vec<&str> = prefix.split_ascii_whitespace().collect();
    let time_of_day = |s: &str| NaiveTime::parse_from_str(s, "%H:%M:%S,%3f").ok();
    let parsed = match words.as_slice() {
        [date, time, ..] if date.contains('-') => NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()
            .zip(time_of_day(time))
            .map(|(d, t)| NaiveDateTime::new(d, t).and_utc()),
        [time, ..] => match (time_of_day(time), ctx.meta.received) {
            (Some(t), Some(received)) => Some(NaiveDateTime::new(received.date_naive(), t).and_utc()),
            _ => None,
        },
        [] => None,
    };
    parsed.ok_or(ParseError::bad_time(FORMAT, "timestamp"))
}

struct Fields<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

fn build(f: Fields<'_>, event_id: String, time: DateTime<Utc>) -> Result<Event, ParseError> {
    let get = f.get;
    if let Some(operation) = get("operationType") {
        return admin_event(get, event_id, time, &operation);
    }
    let event_type = get("type").ok_or(ParseError::missing(FORMAT, "type"))?;
    let failed = event_type.ends_with("_ERROR") || get("error").is_some();
    let base = event_type.trim_end_matches("_ERROR");
    let kind = match base {
        _ if failed
            && matches!(
                base,
                "LOGIN" | "CLIENT_LOGIN" | "CODE_TO_TOKEN" | "REFRESH_TOKEN" | "TOKEN_EXCHANGE" | "INTROSPECT_TOKEN"
            ) =>
        {
            EventKind::AuthFailure
        }
        "CLIENT_LOGIN" | "CODE_TO_TOKEN" | "REFRESH_TOKEN" | "TOKEN_EXCHANGE" => EventKind::TokenIssued,
        "LOGIN" => EventKind::SignIn,
        "CLIENT_REGISTER" | "CLIENT_UPDATE" | "CLIENT_DELETE" => EventKind::AppLifecycle,
        _ => EventKind::Other,
    };
    let client = get("clientId");
    let user = get("userId").or_else(|| get("username"));
    let (identity, identity_type, on_behalf_of) = match (client, user) {
        (Some(c), user) if CLIENT_EVENTS.contains(&base) => {
            // A client-credentials login acts as the client's own service account.
            let service = base == "CLIENT_LOGIN" || get("grant_type").as_deref() == Some("client_credentials");
            (c, IdentityType::Application, if service { None } else { user })
        }
        (None, None) if CLIENT_EVENTS.contains(&base) => return Err(ParseError::missing(FORMAT, "clientId")),
        (_, user) => (
            user.unwrap_or_else(|| super::UNIDENTIFIED.to_owned()),
            IdentityType::User,
            None,
        ),
    };
    let mut event = Event::new(event_id, time, FORMAT, kind, identity);
    event.identity_type = identity_type;
    event.on_behalf_of = on_behalf_of;
    event.tenant = get("realmId");
    event.action = Some(event_type.clone());
    event.outcome = if failed { Outcome::Failure } else { Outcome::Success };
    event.error = get("error");
    event.src_ip = get("ipAddress").as_deref().and_then(network_address);
    event.scopes = get("scope").map(|s| Scope::parse_list(&s)).unwrap_or_default();
    Ok(event)
}

/// Event types a client makes on its own behalf or for a user's token (see the module doc).
const CLIENT_EVENTS: &[&str] = &[
    "CLIENT_LOGIN",
    "CODE_TO_TOKEN",
    "REFRESH_TOKEN",
    "TOKEN_EXCHANGE",
    "INTROSPECT_TOKEN",
    "PERMISSION_TOKEN",
    "USER_INFO_REQUEST",
    "OAUTH2_DEVICE_AUTH",
    "OAUTH2_DEVICE_CODE_TO_TOKEN",
    "AUTHREQID_TO_TOKEN",
    "CLIENT_REGISTER",
    "CLIENT_UPDATE",
    "CLIENT_DELETE",
    "CLIENT_INFO",
    "PUSHED_AUTHORIZATION_REQUEST",
];

fn admin_event(
    get: &dyn Fn(&str) -> Option<String>,
    event_id: String,
    time: DateTime<Utc>,
    operation: &str,
) -> Result<Event, ParseError> {
    let resource_type = get("resourceType").unwrap_or_default();
    let path = get("resourcePath").unwrap_or_default();
    let target_client = path
        .strip_prefix("clients/")
        .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned());
    let secret =
        path.ends_with("/client-secret") || path.contains("/client-secret/") || path.contains("/certificates/");
    let admin = get("authClientId");
    let (kind, identity, initiator) = match target_client {
        Some(client) if secret => (EventKind::CredentialChange, client, get("authUserId").or(admin)),
        Some(client) if resource_type == "CLIENT" => (EventKind::AppLifecycle, client, get("authUserId").or(admin)),
        _ => (
            EventKind::Admin,
            admin
                .clone()
                .or_else(|| get("authUserId"))
                .ok_or(ParseError::missing(FORMAT, "authDetails.clientId"))?,
            get("authUserId").filter(|_| admin.is_some()),
        ),
    };
    let mut event = Event::new(event_id, time, FORMAT, kind, identity);
    event.identity_type = IdentityType::Application;
    event.initiator = initiator;
    event.tenant = get("realmId");
    event.action = Some(if resource_type.is_empty() {
        operation.to_owned()
    } else {
        format!("{operation} {resource_type}")
    });
    event.outcome = if get("error").is_some() {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    event.error = get("error");
    event.src_ip = get("authIpAddress").as_deref().and_then(network_address);
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_key_values_with_commas_in_values() {
        let pairs = key_values(r#"type="CLIENT_LOGIN", realmId=r, redirect_uri=http://a/b, c, scope=x y"#);
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["type", "realmId", "redirect_uri", "scope"]);
        assert_eq!(pairs[0].1, "CLIENT_LOGIN");
        assert_eq!(pairs[2].1, "http://a/b, c");
    }
}
