//! AWS CloudTrail records, for AWS HealthLake (`healthlake.amazonaws.com`) and IAM.
//!
//! The identity is the role behind an assumed-role session (`sessionContext.sessionIssuer.arn`),
//! else the principal's `arn`. HealthLake data-plane calls are data access; its control-plane
//! calls and IAM access-key operations are admin and credential changes.

use serde_json::Value;

use super::json::{str_at, string_at};
use super::{Ctx, ParseError, network_address, parse_time};
use crate::event::{Event, EventKind, IdentityType, Interaction, Outcome, SourceFormat};

const FORMAT: SourceFormat = SourceFormat::CloudTrail;

/// Normalizes one CloudTrail record.
pub fn normalize(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::json)?;
    let ts = str_at(&v, &["eventTime"]).ok_or(ParseError::missing(FORMAT, "eventTime"))?;
    let time = parse_time(ts).ok_or(ParseError::bad_time(FORMAT, "eventTime"))?;
    let who = v
        .get("userIdentity")
        .filter(|u| u.is_object())
        .ok_or(ParseError::missing(FORMAT, "userIdentity"))?;
    let identity = str_at(who, &["sessionContext", "sessionIssuer", "arn"])
        .or_else(|| str_at(who, &["arn"]))
        .or_else(|| str_at(who, &["principalId"]))
        .ok_or(ParseError::missing(FORMAT, "userIdentity.arn"))?;
    let source = str_at(&v, &["eventSource"]).unwrap_or("");
    let name = str_at(&v, &["eventName"]).unwrap_or("");
    let failed = str_at(&v, &["errorCode"]).is_some();
    let denied = str_at(&v, &["errorCode"]).is_some_and(|c| c.contains("AccessDenied") || c.contains("Unauthorized"));

    let interaction = (source == "healthlake.amazonaws.com")
        .then(|| healthlake_interaction(name))
        .flatten();
    let kind = if denied {
        EventKind::AuthFailure
    } else if interaction.is_some() {
        EventKind::DataAccess
    } else if source == "iam.amazonaws.com" && name.contains("AccessKey") {
        EventKind::CredentialChange
    } else if str_at(&v, &["eventCategory"]) == Some("Management")
        || v.get("managementEvent") == Some(&Value::Bool(true))
    {
        EventKind::Admin
    } else {
        EventKind::Other
    };
    let event_id = string_at(&v, &["eventID"]).unwrap_or_else(|| ctx.fallback_id(FORMAT));
    let mut event = Event::new(event_id, time, FORMAT, kind, identity.to_owned());
    event.identity_name =
        string_at(who, &["sessionContext", "sessionIssuer", "userName"]).or_else(|| string_at(who, &["userName"]));
    event.identity_type = match str_at(who, &["type"]) {
        Some("AssumedRole" | "AWSService" | "Role") => IdentityType::ServiceAccount,
        Some("IAMUser" | "Root" | "IdentityCenterUser") => IdentityType::User,
        _ => IdentityType::Unknown,
    };
    event.tenant = string_at(&v, &["recipientAccountId"]);
    event.action = Some(format!("{source}:{name}"));
    event.interaction = interaction;
    event.outcome = if failed { Outcome::Failure } else { Outcome::Success };
    event.error = string_at(&v, &["errorCode"]);
    event.src_ip = str_at(&v, &["sourceIPAddress"]).and_then(network_address);
    event.user_agent = string_at(&v, &["userAgent"]);
    event.credential_id = string_at(who, &["accessKeyId"]);
    Ok(event)
}

fn healthlake_interaction(name: &str) -> Option<Interaction> {
    Some(match name {
        "ReadResource" => Interaction::Read,
        "SearchWithGet" | "SearchWithPost" => Interaction::Search,
        "CreateResource" => Interaction::Create,
        "UpdateResource" => Interaction::Update,
        "DeleteResource" => Interaction::Delete,
        "StartFHIRExportJob" | "StartFHIRImportJob" => Interaction::Operation,
        _ => return None,
    })
}
