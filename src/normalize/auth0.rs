//! Auth0 tenant logs, bare or in the log-stream envelope `{"log_id": ..., "data": {...}}`.
//!
//! The log type code (`type`, Auth0's "Log Event Type Codes") decides whose event it is. Only the
//! client's own credential exchanges and Management API calls made by a client are an app's;
//! a person's logins, failed logins and account blocks are the person's:
//!
//! | code | identity (`identity_type`) | `on_behalf_of` | `initiator` | kind |
//! |---|---|---|---|---|
//! | `seccft` / `feccft`: client credentials exchange (machine to machine) | `client_id` (application) | — | — | `token_issued` / `auth_failure` |
//! | other successful exchanges `se*ft` (`seacft` authorization code, `sertft` refresh token, `sepft` password...) | `client_id` (application): the token is issued to the client | `user_id` | — | `token_issued` |
//! | other failed exchanges `fe*ft` | `user_id`, when the record names the user (user): the person's failure, never the app's; else `client_id` (application) | — | — | `auth_failure` |
//! | logins `s`, `ssa`, `scoa`, `sens` | `user_id`, else `user_name`, else `unidentified` (user) | — | — | `sign_in` |
//! | failed logins and blocks `f`, `fp`, `fu`, `fc`, `fco`, `fcoa`, `fens`, `fsa`, `limit_wc`, `limit_mu`, `limit_sul`, `pwd_leak` | `user_id`, else `user_name`, else `unidentified` (user): whoever typed at the login page | — | — | `auth_failure` |
//! | `sapi`/`fapi` on `/api/v2/clients*` | the client in the path, or created (application) | — | the caller | `app_lifecycle`; `rotate-secret` `credential_change` |
//! | `sapi` POST or PATCH `/api/v2/client-grants` ("Create client grant") | the body's `client_id` (application): the client that receives the scopes | — | the caller | `permission_grant`; `scopes` the grant's `scope` (after an update: the grant's scopes as updated) |
//! | other `sapi`/`fapi` (and a failed or deleted client grant) | the caller: `user_id` (user; an admin in the dashboard) else `client_id` (application) | — | — | `admin` |
//! | anything else | `user_id` (user), else `client_id` (application) | — | — | `other` |
//!
//! The caller of a Management API operation is the person when `user_id` is set (Auth0: the
//! `ip` of `sapi` is "the IP of the admin using the manage dashboard"), else the client whose
//! token called it. Scopes are space-separated strings (RFC 6749 §3.3) or arrays; a comma left
//! at the edge of a token is dropped.

use serde_json::Value;

use super::UNIDENTIFIED;
use super::json::{items, str_at, string_at};
use super::{Ctx, ParseError, network_address, parse_time};
use crate::event::{Event, EventKind, IdentityType, Outcome, SourceFormat};
use crate::scope::Scope;

const FORMAT: SourceFormat = SourceFormat::Auth0;

/// Successful logins (Auth0 "Login - Success" codes).
const LOGINS: &[&str] = &["s", "ssa", "scoa", "sens"];
/// Failed logins and account or IP blocks (Auth0 "Login - Failure" codes, `limit_*`, `pwd_leak`).
const FAILED_LOGINS: &[&str] = &[
    "f",
    "fp",
    "fu",
    "fc",
    "fco",
    "fcoa",
    "fens",
    "fsa",
    "limit_wc",
    "limit_mu",
    "limit_sul",
    "pwd_leak",
];

/// Who an event is charged to, with the name the record gives.
enum Who {
    Client(Option<String>, Option<String>),
    User(String, Option<String>),
}

impl Who {
    fn id(self) -> Option<String> {
        match self {
            Who::Client(id, _) => id,
            Who::User(id, _) => Some(id),
        }
    }
}

/// Normalizes one Auth0 log event.
pub fn normalize(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::json)?;
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
    let management = matches!(code, "sapi" | "fapi");
    let failed = code.starts_with('f') || code.starts_with("limit_") || code == "pwd_leak";
    let request_path = str_at(d, &["details", "request", "path"]).unwrap_or("");
    let method = str_at(d, &["details", "request", "method"])
        .unwrap_or("")
        .to_ascii_lowercase();
    let request = d
        .get("details")
        .and_then(|x| x.get("request"))
        .and_then(|x| x.get("body"));
    let body = d
        .get("details")
        .and_then(|x| x.get("response"))
        .and_then(|x| x.get("body"));

    let mut scopes = scope_list(d.get("scope"));
    let mut initiator = None;
    let client_name = || string_at(d, &["client_name"]);
    let user_name = || string_at(d, &["user_name"]);
    let caller = || match &user_id {
        Some(user) => Who::User(user.clone(), user_name()),
        None => Who::Client(client_id.clone(), client_name()),
    };
    let (kind, who) = if is_exchange {
        match (failed, code == "feccft", &user_id) {
            (false, _, _) => (EventKind::TokenIssued, Who::Client(client_id.clone(), client_name())),
            (true, false, Some(user)) => (EventKind::AuthFailure, Who::User(user.clone(), user_name())),
            (true, _, _) => (EventKind::AuthFailure, Who::Client(client_id.clone(), client_name())),
        }
    } else if management {
        let clients = request_path.strip_prefix("/api/v2/clients");
        let target_in_path = clients
            .and_then(|rest| rest.trim_start_matches('/').split('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let created = body.and_then(|b| string_at(b, &["client_id"]));
        let grants = request_path.starts_with("/api/v2/client-grants");
        match clients {
            Some(rest) if rest.ends_with("/rotate-secret") => {
                initiator = caller().id();
                (EventKind::CredentialChange, Who::Client(target_in_path, None))
            }
            Some(_) => {
                initiator = caller().id();
                let target = if method == "post" && target_in_path.is_none() {
                    created
                } else {
                    target_in_path
                };
                let name = body.and_then(|b| string_at(b, &["name"]));
                (EventKind::AppLifecycle, Who::Client(target, name))
            }
            None if grants && !failed && matches!(method.as_str(), "post" | "patch") => {
                match created.or_else(|| request.and_then(|b| string_at(b, &["client_id"]))) {
                    Some(grantee) => {
                        initiator = caller().id();
                        let granted = body.filter(|b| b.get("scope").is_some()).or(request);
                        scopes = granted.map(|b| scope_list(b.get("scope"))).unwrap_or_default();
                        (EventKind::PermissionGrant, Who::Client(Some(grantee), None))
                    }
                    None => (EventKind::Admin, caller()),
                }
            }
            None => (EventKind::Admin, caller()),
        }
    } else if LOGINS.contains(&code) || FAILED_LOGINS.contains(&code) {
        // Whoever typed at the login page: the account, else the name typed, else unnamed.
        let person = user_id
            .clone()
            .or_else(user_name)
            .unwrap_or_else(|| UNIDENTIFIED.to_owned());
        let kind = if failed {
            EventKind::AuthFailure
        } else {
            EventKind::SignIn
        };
        (kind, Who::User(person, user_name()))
    } else {
        (EventKind::Other, caller())
    };
    let (identity, identity_type, identity_name) = match who {
        Who::Client(Some(client), name) => (client, IdentityType::Application, name),
        Who::User(user, name) => (user, IdentityType::User, name),
        // The client the code is about is not in the record: charge whoever is.
        Who::Client(None, _) => match caller() {
            Who::User(user, name) => (user, IdentityType::User, name),
            Who::Client(Some(client), name) => (client, IdentityType::Application, name),
            Who::Client(None, _) => return Err(ParseError::missing(FORMAT, "client_id")),
        },
    };

    let event_id = string_at(d, &["log_id"])
        .or_else(|| string_at(&v, &["log_id"]))
        .or_else(|| string_at(d, &["_id"]))
        .unwrap_or_else(|| ctx.fallback_id(FORMAT));
    let mut event = Event::new(event_id, time, FORMAT, kind, identity);
    event.identity_name = identity_name;
    event.identity_type = identity_type;
    event.initiator = initiator.filter(|i| *i != event.identity);
    if is_exchange && !failed && code != "seccft" {
        event.on_behalf_of = user_id.filter(|u| *u != event.identity);
    }
    event.tenant = string_at(d, &["hostname"]);
    event.scopes = scopes;
    event.outcome = if failed { Outcome::Failure } else { Outcome::Success };
    if failed {
        event.error = string_at(d, &["description"]).or_else(|| Some(code.to_owned()));
    }
    event.action = Some(match str_at(d, &["description"]) {
        Some(desc) if management => desc.to_owned(),
        _ => code.to_owned(),
    });
    event.src_ip = str_at(d, &["ip"]).and_then(network_address);
    event.user_agent = string_at(d, &["user_agent"]);
    Ok(event)
}

/// Scopes given as a space-separated string (RFC 6749 §3.3) or an array of them; a comma left at
/// the edge of a token is dropped.
fn scope_list(v: Option<&Value>) -> Vec<Scope> {
    let tokens = items(v)
        .filter_map(Value::as_str)
        .flat_map(str::split_ascii_whitespace)
        .map(|t| t.trim_matches(','));
    Scope::collect(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_on_spaces_in_strings_and_arrays() {
        let s = |v: Value| -> Vec<String> { scope_list(Some(&v)).iter().map(ToString::to_string).collect() };
        assert_eq!(
            s(Value::from("read:users, update:users")),
            ["read:users", "update:users"]
        );
        assert_eq!(
            s(serde_json::json!(["read:clients", "create:client_grants ,"])),
            ["create:client_grants", "read:clients"]
        );
        assert!(s(Value::from(" , ")).is_empty());
        assert!(scope_list(None).is_empty());
    }
}
