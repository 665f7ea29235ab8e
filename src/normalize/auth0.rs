//! Auth0 tenant logs, bare or in the log-stream envelope `{"log_id": ..., "data": {...}}`.
//!
//! Token exchanges (`se*ft` success, `fe*ft` failure: `seccft` client credentials, `seacft`
//! authorization code, `sertft` refresh token...) are about the client; the user of a delegated
//! exchange is `on_behalf_of`. Management API operations (`sapi`/`fapi`) on `/api/v2/clients` are
//! the lifecycle of the client they touch (`rotate-secret` a credential change), a client grant is
//! an admin change to the granted client and carries the granted scopes; the caller is the
//! initiator.

use serde_json::Value;

use super::json::{items, str_at, string_at};
use super::{Ctx, ParseError, network_address, parse_time};
use crate::event::{Event, EventKind, IdentityType, Outcome, SourceFormat};
use crate::scope::Scope;

const FORMAT: SourceFormat = SourceFormat::Auth0;

/// Normalizes one Auth0 log event.
pub fn normalize(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::MalformedJson)?;
    let d = match v.get("data") {
        Some(d) if d.is_object() => d,
        Some(_) => return Err(ParseError::wrong(FORMAT, "data", "expected an object")),
        None => &v,
    };
    let date = str_at(d, &["date"]).ok_or(ParseError::missing(FORMAT, "date"))?;
    let time = parse_time(date).ok_or(ParseError::bad_time(FORMAT, "date"))?;
    let code = str_at(d, &["type"]).ok_or(ParseError::missing(FORMAT, "type"))?;
    let client_id = string_at(d, &["client_id"]);
    let user_id = string_at(d, &["user_id"]);

    let is_exchange = code.len() > 3 && code.ends_with("ft") && (code.starts_with("se") || code.starts_with("fe"));
    let failed = code.starts_with('f') || code == "limit_wc" || code == "limit_mu";
    let request_path = str_at(d, &["details", "request", "path"]).unwrap_or("");
    let method = str_at(d, &["details", "request", "method"])
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = d
        .get("details")
        .and_then(|x| x.get("response"))
        .and_then(|x| x.get("body"));

    let mut scopes = scope_list(d.get("scope"));
    let mut initiator = None;
    let (kind, identity, name) = if is_exchange {
        let kind = if failed {
            EventKind::AuthFailure
        } else {
            EventKind::TokenIssued
        };
        (kind, client_id.clone(), string_at(d, &["client_name"]))
    } else if matches!(code, "sapi" | "fapi") {
        let caller = user_id.clone().or_else(|| client_id.clone());
        let clients = request_path.strip_prefix("/api/v2/clients");
        let target_in_path = clients
            .and_then(|rest| rest.trim_start_matches('/').split('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let created = body.and_then(|b| string_at(b, &["client_id"]));
        match (clients, request_path.starts_with("/api/v2/client-grants")) {
            (Some(rest), _) if rest.ends_with("/rotate-secret") => {
                initiator = caller;
                (EventKind::CredentialChange, target_in_path, None)
            }
            (Some(_), _) => {
                initiator = caller;
                let name = body.and_then(|b| string_at(b, &["name"]));
                let target = if method == "post" && target_in_path.is_none() {
                    created
                } else {
                    target_in_path
                };
                (EventKind::AppLifecycle, target, name)
            }
            (None, true) => {
                initiator = caller;
                scopes = body.map(|b| scope_list(b.get("scope"))).unwrap_or_default();
                (EventKind::Admin, created, None)
            }
            (None, false) => {
                initiator = user_id.clone();
                (EventKind::Admin, client_id.clone(), string_at(d, &["client_name"]))
            }
        }
    } else if matches!(code, "s" | "ssa") {
        (EventKind::SignIn, client_id.clone(), string_at(d, &["client_name"]))
    } else if failed {
        (
            EventKind::AuthFailure,
            client_id.clone(),
            string_at(d, &["client_name"]),
        )
    } else {
        (EventKind::Other, client_id.clone(), string_at(d, &["client_name"]))
    };
    let identity = identity
        .or_else(|| user_id.clone())
        .ok_or(ParseError::missing(FORMAT, "client_id"))?;

    let event_id = string_at(d, &["log_id"])
        .or_else(|| string_at(&v, &["log_id"]))
        .or_else(|| string_at(d, &["_id"]))
        .unwrap_or_else(|| ctx.fallback_id(FORMAT));
    let mut event = Event::new(event_id, time, FORMAT, kind, identity.clone());
    event.identity_name = name;
    event.identity_type = if client_id.is_none() && user_id.as_deref() == Some(&identity) {
        IdentityType::User
    } else {
        IdentityType::Application
    };
    event.initiator = initiator.filter(|i| *i != identity);
    if is_exchange || code == "s" {
        event.on_behalf_of = user_id.filter(|u| *u != identity);
    }
    event.tenant = string_at(d, &["hostname"]);
    event.scopes = scopes;
    event.outcome = if failed { Outcome::Failure } else { Outcome::Success };
    if failed {
        event.error = string_at(d, &["description"]).or_else(|| Some(code.to_owned()));
    }
    event.action = Some(match str_at(d, &["description"]) {
        Some(desc) if !is_exchange => desc.to_owned(),
        _ => code.to_owned(),
    });
    event.src_ip = str_at(d, &["ip"]).and_then(network_address);
    event.user_agent = string_at(d, &["user_agent"]);
    Ok(event)
}

fn scope_list(v: Option<&Value>) -> Vec<Scope> {
    match v {
        Some(Value::String(s)) => Scope::parse_list(s),
        Some(Value::Array(_)) => Scope::collect(items(v).filter_map(Value::as_str)),
        _ => Vec::new(),
    }
}
