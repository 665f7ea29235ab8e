//! GCP Cloud Audit Logs (`protoPayload` of type `google.cloud.audit.AuditLog`).
//!
//! The identity is `authenticationInfo.principalEmail` (or `principalSubject` for workload
//! identity federation). Cloud Healthcare FHIR calls are data access with the interaction and
//! resource type read from the method and resource name; IAM service-account key operations are
//! credential changes of the account in `resourceName`; `iamcredentials` token minting is a token
//! issuance; a `PERMISSION_DENIED`/`UNAUTHENTICATED` status is an auth failure.

use serde_json::Value;

use super::json::{str_at, string_at, u64_of};
use super::{Ctx, ParseError, network_address, parse_time, resource_type_from_path};
use crate::event::{Event, EventKind, IdentityType, Interaction, Outcome, SourceFormat};

const FORMAT: SourceFormat = SourceFormat::GcpAudit;

/// Normalizes one Cloud Audit Log entry.
pub fn normalize(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::MalformedJson)?;
    let p = v
        .get("protoPayload")
        .filter(|p| p.is_object())
        .ok_or(ParseError::missing(FORMAT, "protoPayload"))?;
    let ts = str_at(&v, &["timestamp"])
        .or_else(|| str_at(&v, &["receiveTimestamp"]))
        .ok_or(ParseError::missing(FORMAT, "timestamp"))?;
    let time = parse_time(ts).ok_or(ParseError::bad_time(FORMAT, "timestamp"))?;
    let principal = str_at(p, &["authenticationInfo", "principalEmail"])
        .or_else(|| str_at(p, &["authenticationInfo", "principalSubject"]))
        .ok_or(ParseError::missing(
            FORMAT,
            "protoPayload.authenticationInfo.principalEmail",
        ))?;
    let service = str_at(p, &["serviceName"]).unwrap_or("");
    let method = str_at(p, &["methodName"]).unwrap_or("");
    let resource = str_at(p, &["resourceName"]).unwrap_or("");
    let status_code = p
        .get("status")
        .and_then(|s| s.get("code"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let log_name = str_at(&v, &["logName"]).unwrap_or("");

    let method_tail = method.rsplit('.').next().unwrap_or(method);
    let healthcare = service == "healthcare.googleapis.com";
    let interaction = healthcare.then(|| fhir_interaction(method_tail)).flatten();
    let kind = if matches!(status_code, 7 | 16) {
        EventKind::AuthFailure
    } else if healthcare {
        EventKind::DataAccess
    } else if service == "iam.googleapis.com" && method_tail.contains("ServiceAccountKey") {
        EventKind::CredentialChange
    } else if service == "iam.googleapis.com" && method_tail.contains("ServiceAccount") {
        EventKind::AppLifecycle
    } else if service == "iamcredentials.googleapis.com" && method_tail.starts_with("Generate") {
        EventKind::TokenIssued
    } else if log_name.ends_with("%2Factivity") || log_name.ends_with("/activity") {
        EventKind::Admin
    } else {
        EventKind::Other
    };
    let target_account = (matches!(kind, EventKind::CredentialChange | EventKind::AppLifecycle))
        .then(|| {
            resource
                .split("/serviceAccounts/")
                .nth(1)
                .map(|rest| rest.split('/').next().unwrap_or(rest))
        })
        .flatten();

    let event_id = string_at(&v, &["insertId"]).unwrap_or_else(|| ctx.fallback_id(FORMAT));
    let identity = target_account.unwrap_or(principal);
    let mut event = Event::new(event_id, time, FORMAT, kind, identity.to_owned());
    event.identity_type = identity_type(identity);
    event.initiator = target_account.map(|_| principal.to_owned()).filter(|p| p != identity);
    event.tenant = log_name
        .strip_prefix("projects/")
        .and_then(|rest| rest.split('/').next())
        .map(str::to_owned);
    event.action = (!method.is_empty()).then(|| method.to_owned());
    event.interaction = interaction;
    if healthcare {
        event.resource_type = resource
            .split("/fhir/")
            .nth(1)
            .and_then(resource_type_from_path)
            .map(str::to_owned);
    }
    event.records = u64_of(p.get("numResponseItems"));
    event.outcome = if status_code == 0 {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    if status_code != 0 {
        event.error = string_at(p, &["status", "message"]).or_else(|| Some(status_code.to_string()));
    }
    event.src_ip = str_at(p, &["requestMetadata", "callerIp"]).and_then(network_address);
    event.user_agent = string_at(p, &["requestMetadata", "callerSuppliedUserAgent"]);
    Ok(event)
}

fn identity_type(principal: &str) -> IdentityType {
    if principal.ends_with(".gserviceaccount.com")
        || principal.starts_with("system:serviceaccount:")
        || principal.starts_with("principal://")
    {
        IdentityType::ServiceAccount
    } else if principal.starts_with("system:") {
        IdentityType::Unknown
    } else {
        IdentityType::User
    }
}

fn fhir_interaction(method: &str) -> Option<Interaction> {
    Some(match method {
        "ReadResource" | "GetResource" => Interaction::Read,
        "VreadResource" => Interaction::Vread,
        "SearchResources" | "SearchResourcesPost" => Interaction::Search,
        "ResourceHistory" | "ListResourceHistory" => Interaction::History,
        "CreateResource" => Interaction::Create,
        "UpdateResource" | "ConditionalUpdateResource" => Interaction::Update,
        "PatchResource" | "ConditionalPatchResource" => Interaction::Patch,
        "DeleteResource" | "ConditionalDeleteResource" => Interaction::Delete,
        "ExecuteBundle" => Interaction::Transaction,
        "PatientEverything" | "ExportResources" | "Capabilities" => Interaction::Operation,
        _ => return None,
    })
}
