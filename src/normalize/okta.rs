//! Okta System Log events.
//!
//! OAuth token grants (`app.oauth2.*token.grant*`) are what machine clients do; the client is the
//! actor (`PublicClientApp`), scopes come from `debugContext.debugData.grantedScopes` (else
//! `requestedScopes`). Application lifecycle and credential events (`application.lifecycle.*`,
//! client secret and key changes, `system.api_token.*`) are about the target app, so the target is
//! the identity and the actor is the initiator. Person sign-ins are kept as `sign_in`.
//!
//! An access-token grant names the token it issued as a target of type `access_token`: its id
//! (the token's `jti`, which a FHIR server's audit repeats) and `detailEntry.expires`. Those make
//! the token's lifetime and, when the token is seen again, its age at use.

use serde_json::Value;

use super::json::{items, str_at, string_at};
use super::{Ctx, ParseError, network_address, parse_time};
use crate::event::{Event, EventKind, IdentityType, Outcome, SourceFormat};
use crate::scope::Scope;

const FORMAT: SourceFormat = SourceFormat::Okta;

/// Normalizes one System Log event.
pub fn normalize(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::MalformedJson)?;
    let published = str_at(&v, &["published"]).ok_or(ParseError::missing(FORMAT, "published"))?;
    let time = parse_time(published).ok_or(ParseError::bad_time(FORMAT, "published"))?;
    let event_type = str_at(&v, &["eventType"]).ok_or(ParseError::missing(FORMAT, "eventType"))?;
    let actor = v
        .get("actor")
        .filter(|a| a.is_object())
        .ok_or(ParseError::missing(FORMAT, "actor"))?;
    let actor_id = str_at(actor, &["id"]).ok_or(ParseError::missing(FORMAT, "actor.id"))?;

    let outcome = match str_at(&v, &["outcome", "result"]) {
        Some("SUCCESS" | "ALLOW") => Outcome::Success,
        Some("FAILURE" | "DENY" | "CHALLENGE") => Outcome::Failure,
        _ => Outcome::Unknown,
    };
    let kind = kind(event_type, outcome);
    let about_app = matches!(kind, EventKind::AppLifecycle | EventKind::CredentialChange);
    let target_app = items(v.get("target")).find(|&t| {
        matches!(
            str_at(t, &["type"]),
            Some("AppInstance" | "PublicClientApp" | "Client" | "Token")
        )
    });

    let event_id = string_at(&v, &["uuid"]).unwrap_or_else(|| ctx.fallback_id(FORMAT));
    let (subject, initiator) = match target_app {
        Some(app) if about_app => (app, Some(actor_id.to_owned())),
        _ => (actor, None),
    };
    let identity = str_at(subject, &["id"]).unwrap_or(actor_id).to_owned();
    let mut event = Event::new(event_id, time, FORMAT, kind, identity);
    event.initiator = initiator;
    event.identity_name = string_at(subject, &["displayName"]).or_else(|| string_at(subject, &["alternateId"]));
    event.identity_type = match str_at(subject, &["type"]) {
        Some("User") => IdentityType::User,
        Some("PublicClientApp" | "AppInstance" | "Client" | "Token") => IdentityType::Application,
        _ => IdentityType::Unknown,
    };
    event.outcome = outcome;
    if outcome == Outcome::Failure {
        event.error = string_at(&v, &["outcome", "reason"]);
    }
    event.action = Some(event_type.to_owned());
    event.src_ip = str_at(&v, &["client", "ipAddress"]).and_then(network_address);
    event.user_agent = string_at(&v, &["client", "userAgent", "rawUserAgent"]);
    let debug = v.get("debugContext").and_then(|d| d.get("debugData"));
    if let Some(debug) = debug {
        let scopes = str_at(debug, &["grantedScopes"]).or_else(|| str_at(debug, &["requestedScopes"]));
        event.scopes = scopes.map(Scope::parse_list).unwrap_or_default();
    }
    if kind == EventKind::TokenIssued
        && let Some(token) = items(v.get("target")).find(|&t| str_at(t, &["type"]) == Some("access_token"))
    {
        event.token_id = string_at(token, &["id"]);
        event.token_issued_at = Some(time);
        event.token_expires_at = match str_at(token, &["detailEntry", "expires"]) {
            Some(expires) => {
                Some(parse_time(expires).ok_or(ParseError::bad_time(FORMAT, "target.detailEntry.expires"))?)
            }
            None => None,
        };
    }
    Ok(event)
}

fn kind(event_type: &str, outcome: Outcome) -> EventKind {
    let failed = outcome == Outcome::Failure;
    let credential = ["secret", "credential", "privatekey", "jwk", "key.", "api_token"];
    if event_type.starts_with("app.oauth2") && event_type.contains("token.grant") {
        if failed {
            EventKind::AuthFailure
        } else {
            EventKind::TokenIssued
        }
    } else if event_type.starts_with("system.api_token")
        || (event_type.starts_with("app.") && credential.iter().any(|c| event_type.contains(c)))
        || event_type.ends_with("token.revoke")
    {
        EventKind::CredentialChange
    } else if event_type.starts_with("application.lifecycle") || event_type.starts_with("app.oauth2.client.lifecycle") {
        EventKind::AppLifecycle
    } else if event_type == "user.session.start" || event_type.starts_with("user.authentication") {
        if failed {
            EventKind::AuthFailure
        } else {
            EventKind::SignIn
        }
    } else if event_type.starts_with("application.") || event_type.starts_with("system.") {
        EventKind::Admin
    } else {
        EventKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_event_types_to_kinds() {
        assert_eq!(
            kind("app.oauth2.as.token.grant.access_token", Outcome::Success),
            EventKind::TokenIssued
        );
        assert_eq!(
            kind("app.oauth2.as.token.grant", Outcome::Failure),
            EventKind::AuthFailure
        );
        assert_eq!(
            kind("application.lifecycle.deactivate", Outcome::Success),
            EventKind::AppLifecycle
        );
        assert_eq!(
            kind("app.oauth2.client_secret.rotate", Outcome::Success),
            EventKind::CredentialChange
        );
        assert_eq!(
            kind("system.api_token.create", Outcome::Success),
            EventKind::CredentialChange
        );
        assert_eq!(kind("user.session.start", Outcome::Success), EventKind::SignIn);
        assert_eq!(kind("user.session.end", Outcome::Success), EventKind::Other);
    }
}
