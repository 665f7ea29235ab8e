//! Okta System Log events.
//!
//! Only apps and OAuth clients are non-human identities here. An event lands on the identity it
//! is about, decided in this order:
//!
//! | event | identity (`identity_type`) | `initiator` | kind |
//! |---|---|---|---|
//! | consent grant: `app.oauth2.as.consent.grant`, `app.oauth2.consent.grant`, `app.oauth2.admin.consent.grant` | the client that receives the scopes: `detailEntry.publicclientapp` of the `ConsentGrant` targets, else an app target (application) | the actor | `permission_grant`; `scopes` the `ConsentGrant` targets' `displayName` (a failed grant is `admin`) |
//! | consent revoke (`*.consent.revoke*`) | the client, as for a grant (application) | the actor | `admin` (a permission removed) |
//! | refresh-token reuse: `app.oauth2.token.detect_reuse`, `app.oauth2.as.token.detect_reuse` | the client: the actor if it is an app, else an app target (application) | — | `auth_failure`, outcome failure, `action` kept: Okta refuses the reused token and revokes the tokens issued since |
//! | lifecycle and credential events of an app (`application.lifecycle.*`, `app.oauth2.client.lifecycle.*`, secret, key and `system.api_token.*` events) | the app target (application) | the actor | `app_lifecycle` / `credential_change` |
//! | actor `PublicClientApp`, `AppInstance`, `Client` | the actor (application) | — | token grants `token_issued` (`auth_failure` when failed), else by event type |
//! | actor `User` | the person (user): `user.session.start` and `user.authentication.*` are `sign_in`, or `auth_failure` when failed, and never an app's | — | by event type |
//! | actor `SystemPrincipal` (Okta itself) | the app it acted on (application), else the person it acted on (user), else Okta's principal (`alternateId`, `system@okta.com`) typed `device` | Okta's principal, when the event is about an app or person | by event type |
//! | actor `IP address` | the app or person the event is about, else `unidentified` (unknown); the IP is the `src_ip`, never an identity | — | by event type |
//!
//! Scopes come from `debugContext.debugData.grantedScopes` (else `requestedScopes`), a
//! space-separated list (RFC 6749 §3.3); a comma left at the edge of a token is dropped.
//!
//! An access-token grant names the token it issued as a target of type `access_token`: its id
//! (the token's `jti`, which a FHIR server's audit repeats) and `detailEntry.expires`. Those make
//! the token's lifetime and, when the token is seen again, its age at use.

use serde_json::Value;

use super::UNIDENTIFIED;
use super::json::{items, str_at, string_at};
use super::{Ctx, ParseError, network_address, parse_time};
use crate::event::{Event, EventKind, IdentityType, Outcome, SourceFormat};
use crate::scope::Scope;

const FORMAT: SourceFormat = SourceFormat::Okta;

/// Actor and target types that are apps or OAuth clients (Okta's `Token` target is an API token,
/// an integration's credential).
const APP_TYPES: &[&str] = &["AppInstance", "PublicClientApp", "Client", "Token"];

/// Who the System Log says acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    App,
    User,
    /// Okta itself (`SystemPrincipal`).
    Okta,
    /// An `IP address`: a source, never an identity.
    Ip,
    Other,
}

impl Actor {
    fn of(kind: Option<&str>) -> Actor {
        match kind {
            Some(t) if APP_TYPES.contains(&t) => Actor::App,
            Some("User") => Actor::User,
            Some("SystemPrincipal") => Actor::Okta,
            Some(t) if t.eq_ignore_ascii_case("IP address") || t.eq_ignore_ascii_case("IpAddress") => Actor::Ip,
            _ => Actor::Other,
        }
    }
}

/// Normalizes one System Log event.
pub fn normalize(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::json)?;
    let published = str_at(&v, &["published"]).ok_or(ParseError::missing(FORMAT, "published"))?;
    let time = parse_time(published).ok_or(ParseError::bad_time(FORMAT, "published"))?;
    let event_type = str_at(&v, &["eventType"]).ok_or(ParseError::missing(FORMAT, "eventType"))?;
    let actor = v
        .get("actor")
        .filter(|a| a.is_object())
        .ok_or(ParseError::missing(FORMAT, "actor"))?;
    let actor_id = str_at(actor, &["id"]).ok_or(ParseError::missing(FORMAT, "actor.id"))?;
    let actor_kind = Actor::of(str_at(actor, &["type"]));

    let outcome = match str_at(&v, &["outcome", "result"]) {
        Some("SUCCESS" | "ALLOW") => Outcome::Success,
        Some("FAILURE" | "DENY" | "CHALLENGE") => Outcome::Failure,
        _ => Outcome::Unknown,
    };
    let mut kind = kind(event_type, outcome);
    let targets: Vec<&Value> = items(v.get("target")).collect();
    let app_target = targets
        .iter()
        .copied()
        .find(|t| str_at(*t, &["type"]).is_some_and(|t| APP_TYPES.contains(&t)));
    let user_target = targets.iter().copied().find(|t| str_at(*t, &["type"]) == Some("User"));
    let consent = is_consent(event_type);
    // A consent target names the scope; the client it was granted to is in its detailEntry.
    let consent_client = targets
        .iter()
        .filter(|t| str_at(**t, &["type"]) == Some("ConsentGrant"))
        .find_map(|t| str_at(*t, &["detailEntry", "publicclientapp"]));
    let initiator = match actor_kind {
        Actor::Ip => None,
        Actor::Okta => string_at(actor, &["alternateId"]).or_else(|| Some(actor_id.to_owned())),
        _ => Some(actor_id.to_owned()),
    };

    let reuse = event_type.ends_with("token.detect_reuse");
    let about_app = matches!(kind, EventKind::AppLifecycle | EventKind::CredentialChange);
    let subject = if consent {
        match (consent_client, app_target) {
            (Some(client), _) => {
                let listed = app_target.filter(|t| str_at(*t, &["id"]) == Some(client));
                Subject::app(client, listed).by(initiator)
            }
            (None, Some(app)) => Subject::of_target(app, IdentityType::Application).by(initiator),
            // A grant that names no client cannot say who received it: the actor's admin event.
            (None, None) => {
                if kind == EventKind::PermissionGrant {
                    kind = EventKind::Admin;
                }
                Subject::of_actor(actor, actor_kind)
            }
        }
    } else if let Some(app) = app_target.filter(|_| reuse && actor_kind != Actor::App) {
        Subject::of_target(app, IdentityType::Application)
    } else if let Some(app) = app_target.filter(|_| about_app || matches!(actor_kind, Actor::Okta | Actor::Ip)) {
        Subject::of_target(app, IdentityType::Application).by(initiator)
    } else if let Some(user) = user_target.filter(|_| matches!(actor_kind, Actor::Okta | Actor::Ip)) {
        Subject::of_target(user, IdentityType::User).by(initiator)
    } else {
        Subject::of_actor(actor, actor_kind)
    };

    let event_id = string_at(&v, &["uuid"]).unwrap_or_else(|| ctx.fallback_id(FORMAT));
    let mut event = Event::new(event_id, time, FORMAT, kind, subject.id);
    event.identity_name = subject.name;
    event.identity_type = subject.kind;
    event.initiator = subject.initiator.filter(|i| *i != event.identity);
    // Reuse detection: the reused refresh token is refused whatever `outcome` says.
    event.outcome = if reuse { Outcome::Failure } else { outcome };
    if event.outcome == Outcome::Failure {
        event.error = string_at(&v, &["outcome", "reason"]).or_else(|| reuse.then(|| event_type.to_owned()));
    }
    event.action = Some(event_type.to_owned());
    event.src_ip = str_at(&v, &["client", "ipAddress"])
        .and_then(network_address)
        .or_else(|| (actor_kind == Actor::Ip).then(|| network_address(actor_id)).flatten());
    event.user_agent = string_at(&v, &["client", "userAgent", "rawUserAgent"]);
    if kind == EventKind::PermissionGrant {
        event.scopes = Scope::collect(
            targets
                .iter()
                .filter(|t| str_at(**t, &["type"]) == Some("ConsentGrant"))
                .filter_map(|t| str_at(*t, &["displayName"]))
                .flat_map(scope_tokens),
        );
    } else if let Some(debug) = v.get("debugContext").and_then(|d| d.get("debugData")) {
        let scopes = str_at(debug, &["grantedScopes"]).or_else(|| str_at(debug, &["requestedScopes"]));
        event.scopes = scopes.map(|s| Scope::collect(scope_tokens(s))).unwrap_or_default();
    }
    if kind == EventKind::TokenIssued
        && let Some(token) = targets.iter().find(|t| str_at(**t, &["type"]) == Some("access_token"))
    {
        event.token_id = string_at(*token, &["id"]);
        event.token_issued_at = Some(time);
        event.token_expires_at = match str_at(*token, &["detailEntry", "expires"]) {
            Some(expires) => {
                Some(parse_time(expires).ok_or(ParseError::bad_time(FORMAT, "target.detailEntry.expires"))?)
            }
            None => None,
        };
    }
    Ok(event)
}

/// The identity an event is charged to.
struct Subject {
    id: String,
    name: Option<String>,
    kind: IdentityType,
    initiator: Option<String>,
}

impl Subject {
    fn of_target(t: &Value, kind: IdentityType) -> Subject {
        match str_at(t, &["id"]) {
            Some(id) => Subject {
                id: id.to_owned(),
                name: string_at(t, &["displayName"]).or_else(|| string_at(t, &["alternateId"])),
                kind,
                initiator: None,
            },
            None => Subject::unidentified(),
        }
    }

    /// A client known by id, with its target when the event also lists it (for its name).
    fn app(id: &str, target: Option<&Value>) -> Subject {
        Subject {
            id: id.to_owned(),
            name: target.and_then(|t| string_at(t, &["displayName"])),
            kind: IdentityType::Application,
            initiator: None,
        }
    }

    fn of_actor(actor: &Value, kind: Actor) -> Subject {
        let id = str_at(actor, &["id"]).unwrap_or(UNIDENTIFIED);
        let name = string_at(actor, &["displayName"]).or_else(|| string_at(actor, &["alternateId"]));
        match kind {
            Actor::App => Subject {
                id: id.to_owned(),
                name,
                kind: IdentityType::Application,
                initiator: None,
            },
            Actor::User => Subject {
                id: id.to_owned(),
                name,
                kind: IdentityType::User,
                initiator: None,
            },
            // Okta's own principal: its `id` may be the literal `unknown`, its alternateId is stable.
            Actor::Okta => Subject {
                id: str_at(actor, &["alternateId"]).unwrap_or(id).to_owned(),
                name: string_at(actor, &["displayName"]),
                kind: IdentityType::Device,
                initiator: None,
            },
            Actor::Ip => Subject::unidentified(),
            Actor::Other => Subject {
                id: id.to_owned(),
                name,
                kind: IdentityType::Unknown,
                initiator: None,
            },
        }
    }

    fn unidentified() -> Subject {
        Subject {
            id: UNIDENTIFIED.to_owned(),
            name: None,
            kind: IdentityType::Unknown,
            initiator: None,
        }
    }

    fn by(mut self, initiator: Option<String>) -> Subject {
        self.initiator = initiator;
        self
    }
}

/// Consent grant and revoke events (Okta's custom and org authorization servers, admin consent).
fn is_consent(event_type: &str) -> bool {
    event_type.starts_with("app.oauth2.") && event_type.contains(".consent.")
}

/// The tokens of a space-separated scope list (RFC 6749 §3.3), a stray comma at a token's edge
/// dropped (`"openid, profile"`).
fn scope_tokens(list: &str) -> impl Iterator<Item = &str> {
    list.split_ascii_whitespace()
        .map(|t| t.trim_matches(','))
        .filter(|t| !t.is_empty())
}

fn kind(event_type: &str, outcome: Outcome) -> EventKind {
    let failed = outcome == Outcome::Failure;
    let credential = ["secret", "credential", "privatekey", "jwk", "key.", "api_token"];
    if is_consent(event_type) {
        if event_type.contains(".consent.grant") && !failed {
            EventKind::PermissionGrant
        } else {
            EventKind::Admin
        }
    } else if event_type.ends_with("token.detect_reuse") {
        EventKind::AuthFailure
    } else if event_type.starts_with("app.oauth2") && event_type.contains("token.grant") {
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
        // Okta event types: consent grants give scopes to a client; a revoke takes them away.
        assert_eq!(
            kind("app.oauth2.as.consent.grant", Outcome::Success),
            EventKind::PermissionGrant
        );
        assert_eq!(
            kind("app.oauth2.admin.consent.grant", Outcome::Success),
            EventKind::PermissionGrant
        );
        assert_eq!(kind("app.oauth2.as.consent.grant", Outcome::Failure), EventKind::Admin);
        assert_eq!(
            kind("app.oauth2.as.consent.revoke.user.client", Outcome::Success),
            EventKind::Admin
        );
        // Okta refresh token guide: reuse detection fires `*.token.detect_reuse`.
        assert_eq!(
            kind("app.oauth2.as.token.detect_reuse", Outcome::Success),
            EventKind::AuthFailure
        );
    }

    #[test]
    fn splits_scopes_on_spaces_and_drops_stray_commas() {
        let tokens: Vec<&str> = scope_tokens(" openid, profile  ,offline_access patient/*.read").collect();
        assert_eq!(tokens, ["openid", "profile", "offline_access", "patient/*.read"]);
        assert_eq!(scope_tokens(" , ").count(), 0);
    }

    #[test]
    fn actor_types() {
        assert_eq!(Actor::of(Some("PublicClientApp")), Actor::App);
        assert_eq!(Actor::of(Some("AppInstance")), Actor::App);
        assert_eq!(Actor::of(Some("Client")), Actor::App);
        assert_eq!(Actor::of(Some("User")), Actor::User);
        assert_eq!(Actor::of(Some("SystemPrincipal")), Actor::Okta);
        assert_eq!(Actor::of(Some("IP address")), Actor::Ip);
        assert_eq!(Actor::of(None), Actor::Other);
    }
}
