//! Microsoft Entra ID sign-in and audit logs, in the Azure Monitor diagnostic-settings shape
//! (`time`, `category`, `operationName`, `properties`).
//!
//! Service-principal and managed-identity sign-ins are token issuances to a machine identity
//! (`errorCode` 0) or auth failures (anything else, e.g. `7000222`, an expired secret). The
//! identity is the service principal's object id (`servicePrincipalId`), the id audit logs use
//! for the same principal, so a credential added in the audit log and the next sign-in meet on one
//! identity; the app id is an alias for the registry. The token audience is recorded as the
//! scope `<resourceId>/.default`, the form Entra's client-credentials flow requests it in.
//!
//! Audit-log operations on a service principal or application are about that target: credential
//! operations are `credential_change` (the added key id is the difference of the `KeyDescription`
//! lists), add/update/delete/disable are `app_lifecycle`; the initiator is kept.

use serde_json::Value;

use super::json::{items, str_at, string_at};
use super::{Ctx, ParseError, network_address, parse_time};
use crate::event::{Event, EventKind, IdentityType, Outcome, SourceFormat};
use crate::scope::Scope;

/// Normalizes a sign-in log record.
pub fn normalize_signin(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    const FORMAT: SourceFormat = SourceFormat::EntraSignIn;
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::MalformedJson)?;
    let p = v
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or(ParseError::missing(FORMAT, "properties"))?;
    let category = str_at(&v, &["category"]).unwrap_or("");
    let ts = str_at(p, &["createdDateTime"])
        .or_else(|| str_at(&v, &["time"]))
        .ok_or(ParseError::missing(FORMAT, "time"))?;
    let time = parse_time(ts).ok_or(ParseError::bad_time(FORMAT, "time"))?;
    let user_flow = matches!(category, "SignInLogs" | "NonInteractiveUserSignInLogs");
    let identity = if user_flow {
        str_at(p, &["appId"])
    } else {
        str_at(p, &["servicePrincipalId"]).or_else(|| str_at(p, &["appId"]))
    }
    .ok_or(ParseError::missing(FORMAT, "properties.servicePrincipalId"))?;

    let error_code = match p.get("status").and_then(|s| s.get("errorCode")) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => str_at(&v, &["resultType"]).and_then(|r| r.parse().ok()),
    };
    let outcome = match error_code {
        Some(0) => Outcome::Success,
        Some(_) => Outcome::Failure,
        None => Outcome::Unknown,
    };
    let kind = match (outcome, user_flow) {
        (Outcome::Failure, _) => EventKind::AuthFailure,
        (_, true) => EventKind::SignIn,
        (_, false) => EventKind::TokenIssued,
    };
    let event_id = string_at(p, &["id"]).unwrap_or_else(|| ctx.fallback_id(FORMAT));
    let mut event = Event::new(event_id, time, FORMAT, kind, identity.to_owned());
    event.identity_name = string_at(p, &["servicePrincipalName"]).or_else(|| string_at(p, &["appDisplayName"]));
    event.identity_type = match category {
        "ManagedIdentitySignInLogs" => IdentityType::ManagedIdentity,
        _ => IdentityType::Application,
    };
    if user_flow {
        event.on_behalf_of = string_at(p, &["userPrincipalName"]).or_else(|| string_at(p, &["userId"]));
    }
    event.tenant = string_at(&v, &["tenantId"]);
    event.outcome = outcome;
    if outcome == Outcome::Failure {
        event.error = error_code.map(|c| c.to_string());
    }
    event.action = string_at(&v, &["operationName"]);
    event.src_ip = str_at(p, &["ipAddress"])
        .or_else(|| str_at(&v, &["callerIpAddress"]))
        .and_then(network_address);
    event.user_agent = string_at(p, &["userAgent"]);
    event.credential_id = string_at(p, &["servicePrincipalCredentialKeyId"])
        .or_else(|| string_at(p, &["servicePrincipalCredentialThumbprint"]))
        .or_else(|| string_at(p, &["federatedCredentialId"]));
    if let Some(resource) = str_at(p, &["resourceId"]) {
        event.scopes = vec![Scope::parse(&format!("{resource}/.default"))];
    }
    Ok(event)
}

/// Normalizes an audit log record.
pub fn normalize_audit(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    const FORMAT: SourceFormat = SourceFormat::EntraAudit;
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::MalformedJson)?;
    let p = v
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or(ParseError::missing(FORMAT, "properties"))?;
    let ts = str_at(&v, &["time"])
        .or_else(|| str_at(p, &["activityDateTime"]))
        .ok_or(ParseError::missing(FORMAT, "time"))?;
    let time = parse_time(ts).ok_or(ParseError::bad_time(FORMAT, "time"))?;
    let operation = str_at(&v, &["operationName"])
        .or_else(|| str_at(p, &["activityDisplayName"]))
        .ok_or(ParseError::missing(FORMAT, "operationName"))?;

    let initiated = p.get("initiatedBy");
    let app = initiated.and_then(|i| i.get("app")).filter(|a| a.is_object());
    let user = initiated.and_then(|i| i.get("user")).filter(|u| u.is_object());
    let initiator = app
        .and_then(|a| {
            string_at(a, &["servicePrincipalId"])
                .or_else(|| string_at(a, &["appId"]))
                .or_else(|| string_at(a, &["displayName"]))
        })
        .or_else(|| user.and_then(|u| string_at(u, &["userPrincipalName"]).or_else(|| string_at(u, &["id"]))));

    let target = items(p.get("targetResources"))
        .find(|&t| matches!(str_at(t, &["type"]), Some("ServicePrincipal" | "Application")));
    let lower = operation.to_ascii_lowercase();
    let about_app = lower.contains("service principal") || lower.contains("application");
    let kind = if lower.contains("credential") || lower.contains("certificates and secrets") {
        EventKind::CredentialChange
    } else if about_app
        && [
            "add ",
            "update ",
            "delete ",
            "remove ",
            "disable ",
            "enable ",
            "restore ",
            "hard delete ",
        ]
        .iter()
        .any(|verb| lower.starts_with(verb))
        && !lower.contains("role assignment")
        && !lower.contains("permission grant")
        && !lower.contains("owner")
    {
        EventKind::AppLifecycle
    } else {
        EventKind::Admin
    };

    let event_id = string_at(p, &["id"]).unwrap_or_else(|| ctx.fallback_id(FORMAT));
    let (identity, identity_name, identity_type, initiator) = match target {
        Some(t) => (
            str_at(t, &["id"])
                .ok_or(ParseError::missing(FORMAT, "targetResources.id"))?
                .to_owned(),
            string_at(t, &["displayName"]),
            IdentityType::Application,
            initiator,
        ),
        None => match (app, user) {
            (Some(a), _) => (
                initiator
                    .clone()
                    .ok_or(ParseError::missing(FORMAT, "initiatedBy.app.servicePrincipalId"))?,
                string_at(a, &["displayName"]),
                IdentityType::Application,
                None,
            ),
            (None, Some(u)) => (
                initiator
                    .clone()
                    .ok_or(ParseError::missing(FORMAT, "initiatedBy.user.id"))?,
                string_at(u, &["displayName"]),
                IdentityType::User,
                None,
            ),
            (None, None) => return Err(ParseError::missing(FORMAT, "initiatedBy")),
        },
    };
    let mut event = Event::new(event_id, time, FORMAT, kind, identity);
    event.identity_name = identity_name;
    event.identity_type = identity_type;
    event.initiator = initiator;
    event.tenant = string_at(&v, &["tenantId"]);
    event.action = Some(operation.to_owned());
    event.outcome = match str_at(p, &["result"]) {
        Some(r) if r.eq_ignore_ascii_case("success") => Outcome::Success,
        Some(r) if r.eq_ignore_ascii_case("failure") => Outcome::Failure,
        _ => Outcome::Unknown,
    };
    if event.outcome == Outcome::Failure {
        event.error = string_at(p, &["resultReason"]);
    }
    event.src_ip = str_at(&v, &["callerIpAddress"])
        .or_else(|| user.and_then(|u| str_at(u, &["ipAddress"])))
        .and_then(network_address);
    if kind == EventKind::CredentialChange {
        event.credential_id = target.and_then(changed_key_id);
    }
    Ok(event)
}

/// The key id present in `KeyDescription.newValue` and absent from `oldValue` (added), else the
/// one present in `oldValue` and absent from `newValue` (removed).
fn changed_key_id(target: &Value) -> Option<String> {
    let change =
        items(target.get("modifiedProperties")).find(|&m| str_at(m, &["displayName"]) == Some("KeyDescription"))?;
    let ids = |field: &str| -> Vec<String> {
        let text = str_at(change, &[field]).unwrap_or("");
        text.split("KeyIdentifier=")
            .skip(1)
            .filter_map(|rest| rest.split([',', ']', '"']).next())
            .map(str::to_owned)
            .collect()
    };
    let (old, new) = (ids("oldValue"), ids("newValue"));
    let added = new.iter().find(|id| !old.contains(id));
    added.or_else(|| old.iter().find(|id| !new.contains(id))).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(old: &[&str], new: &[&str]) -> Value {
        let describe = |ids: &[&str]| {
            let keys: Vec<String> = ids
                .iter()
                .map(|id| format!("[KeyIdentifier={id},KeyType=Password,KeyUsage=Verify,DisplayName=secret]"))
                .collect();
            serde_json::to_string(&keys).expect("strings serialize")
        };
        serde_json::json!({"modifiedProperties": [
            {"displayName": "KeyDescription", "oldValue": describe(old), "newValue": describe(new)}
        ]})
    }

    #[test]
    fn the_changed_key_is_the_one_added_else_the_one_removed() {
        assert_eq!(changed_key_id(&change(&["k1"], &["k1", "k2"])).as_deref(), Some("k2"));
        assert_eq!(changed_key_id(&change(&["k1", "k2"], &["k2"])).as_deref(), Some("k1"));
        assert_eq!(changed_key_id(&change(&["k1"], &["k1"])), None);
    }
}
