//! GCP Cloud Audit Logs (`protoPayload` of type `google.cloud.audit.AuditLog`).
//!
//! The caller is `authenticationInfo.principalEmail` (or `principalSubject` for workload
//! identity federation); an entry whose `authenticationInfo` names nobody (VPC Service Controls
//! denials, some system events) is kept with the caller `unidentified`. Whose event it is:
//!
//! | entry | identity (`identity_type`) | `on_behalf_of` | `initiator` | kind |
//! |---|---|---|---|---|
//! | `SetIamPolicy` whose `serviceData.policyDelta.bindingDeltas` ADD roles to identities | each member that receives a role, one event per member (ids `<insertId>#<n>` when several): `serviceAccount:` (service_account), a workload `principal://` (service_account), `user:` or a workforce `principal://` (user) | — | the caller | `permission_grant`; `scopes` the roles added to that member |
//! | `SetIamPolicy` adding only to groups, domains, `allUsers`, or removing | the caller | — | — | `admin` |
//! | IAM key changes (`Create`, `Upload`, `Delete`, `Disable`, `EnableServiceAccountKey`) | the service account whose key it is (service_account): its e-mail from `request.name`, the response or `resource.labels.email_id`, else the unique id in `resourceName` | — | the caller | `credential_change`; `credential_id` the key id |
//! | IAM service-account lifecycle (`Create`, `Delete`, `Disable`, `Enable`, `Undelete`, `Update`, `PatchServiceAccount`) | the service account (service_account) | — | the caller | `app_lifecycle` |
//! | `iamcredentials.googleapis.com` (`GenerateAccessToken`, `GenerateIdToken`, `SignJwt`, `SignBlob`): the caller impersonates | the target service account, as for keys (service_account) | the caller | — | `token_issued` (`SignBlob` `other`); failed: `auth_failure` |
//! | Cloud Healthcare FHIR calls | the caller | the first party that impersonated it (`serviceAccountDelegationInfo`) | — | `data_access`, interaction and resource type from the method and resource name |
//! | anything else | the caller | as above | — | denied (`PERMISSION_DENIED` 7, `UNAUTHENTICATED` 16): `auth_failure`; activity log: `admin`; else `other` |
//!
//! A caller is a service account when it ends in `.gserviceaccount.com`, is a Kubernetes
//! `system:serviceaccount:` or a workload identity pool principal; a workforce pool principal
//! and any other e-mail is a person; other `system:` callers are unknown.

use serde_json::Value;

use super::UNIDENTIFIED;
use super::json::{items, str_at, string_at, u64_of};
use super::{Ctx, ParseError, network_address, parse_time, resource_type_from_path};
use crate::event::{Event, EventKind, IdentityType, Interaction, Outcome, SourceFormat};
use crate::scope::Scope;

const FORMAT: SourceFormat = SourceFormat::GcpAudit;

/// IAM methods that add, remove, enable or disable a service-account key.
const KEY_CHANGES: &[&str] = &[
    "CreateServiceAccountKey",
    "UploadServiceAccountKey",
    "DeleteServiceAccountKey",
    "DisableServiceAccountKey",
    "EnableServiceAccountKey",
];
/// IAM methods that change a service account itself.
const ACCOUNT_CHANGES: &[&str] = &[
    "CreateServiceAccount",
    "DeleteServiceAccount",
    "DisableServiceAccount",
    "EnableServiceAccount",
    "UndeleteServiceAccount",
    "UpdateServiceAccount",
    "PatchServiceAccount",
];
/// `iamcredentials` methods that mint a token for the target service account.
const TOKEN_MINTING: &[&str] = &["GenerateAccessToken", "GenerateIdToken", "SignJwt"];

/// Normalizes one Cloud Audit Log entry: one event, or one per identity a `SetIamPolicy` grants
/// a role to.
pub fn normalize(ctx: &Ctx<'_>, out: &mut Vec<Event>) -> Result<(), ParseError> {
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::json)?;
    let p = v
        .get("protoPayload")
        .filter(|p| p.is_object())
        .ok_or(ParseError::missing(FORMAT, "protoPayload"))?;
    let ts = str_at(&v, &["timestamp"])
        .or_else(|| str_at(&v, &["receiveTimestamp"]))
        .ok_or(ParseError::missing(FORMAT, "timestamp"))?;
    let time = parse_time(ts).ok_or(ParseError::bad_time(FORMAT, "timestamp"))?;
    let principal = str_at(p, &["authenticationInfo", "principalEmail"])
        .or_else(|| str_at(p, &["authenticationInfo", "principalSubject"]));
    let caller = principal.unwrap_or(UNIDENTIFIED);
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
    let impersonation = service == "iamcredentials.googleapis.com";
    let iam = service == "iam.googleapis.com";
    let denied = matches!(status_code, 7 | 16);
    let interaction = healthcare.then(|| fhir_interaction(method_tail)).flatten();
    let kind = if impersonation {
        if status_code != 0 {
            EventKind::AuthFailure
        } else if TOKEN_MINTING.contains(&method_tail) {
            EventKind::TokenIssued
        } else {
            EventKind::Other
        }
    } else if denied {
        EventKind::AuthFailure
    } else if healthcare {
        EventKind::DataAccess
    } else if iam && KEY_CHANGES.contains(&method_tail) {
        EventKind::CredentialChange
    } else if iam && ACCOUNT_CHANGES.contains(&method_tail) {
        EventKind::AppLifecycle
    } else if log_name.ends_with("%2Factivity") || log_name.ends_with("/activity") {
        EventKind::Admin
    } else {
        EventKind::Other
    };
    // The service account an IAM change or a token minting is about.
    let account = (impersonation || matches!(kind, EventKind::CredentialChange | EventKind::AppLifecycle))
        .then(|| target_account(&v, p, resource))
        .flatten();

    let event_id = string_at(&v, &["insertId"]).unwrap_or_else(|| ctx.fallback_id(FORMAT));
    let identity = account.as_deref().unwrap_or(caller);
    let mut event = Event::new(event_id, time, FORMAT, kind, identity.to_owned());
    event.identity_type = match (&account, principal) {
        (Some(_), _) => IdentityType::ServiceAccount,
        (None, Some(principal)) => identity_type(principal),
        (None, None) => IdentityType::Unknown,
    };
    match &account {
        Some(_) if impersonation => event.on_behalf_of = principal.map(str::to_owned),
        Some(_) => event.initiator = principal.map(str::to_owned),
        None => event.on_behalf_of = delegating_party(p),
    }
    event.initiator = event.initiator.take().filter(|i| *i != event.identity);
    event.on_behalf_of = event.on_behalf_of.take().filter(|i| *i != event.identity);
    if kind == EventKind::CredentialChange {
        event.credential_id = key_id(&v, p, resource);
    }
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

    let grants = if method_tail.eq_ignore_ascii_case("SetIamPolicy") && status_code == 0 {
        granted(p)
    } else {
        Vec::new()
    };
    if grants.is_empty() {
        out.push(event);
        return Ok(());
    }
    let several = grants.len() > 1;
    for (n, grant) in grants.into_iter().enumerate() {
        let mut e = event.clone();
        if several {
            e.event_id = format!("{}#{n}", event.event_id);
        }
        e.kind = EventKind::PermissionGrant;
        e.identity = grant.member;
        e.identity_type = grant.kind;
        e.scopes = Scope::collect(grant.roles.iter().map(String::as_str));
        e.on_behalf_of = None;
        e.initiator = principal.map(str::to_owned).filter(|p| *p != e.identity);
        out.push(e);
    }
    Ok(())
}

/// Roles one identity received in a `SetIamPolicy`.
struct Grant {
    member: String,
    kind: IdentityType,
    roles: Vec<String>,
}

/// The identities a policy change adds roles to, in the order of the deltas (Cloud IAM
/// `AuditData.policyDelta`: one `BindingDelta` per member and role, action `ADD` or `REMOVE`).
/// Groups, domains and `allUsers`/`allAuthenticatedUsers` are not one identity and get none.
fn granted(p: &Value) -> Vec<Grant> {
    let deltas = p
        .get("serviceData")
        .and_then(|d| d.get("policyDelta"))
        .and_then(|d| d.get("bindingDeltas"));
    let mut grants: Vec<Grant> = Vec::new();
    for delta in items(deltas) {
        if str_at(delta, &["action"]) != Some("ADD") {
            continue;
        }
        let (Some(member), Some(role)) = (str_at(delta, &["member"]), str_at(delta, &["role"])) else {
            continue;
        };
        let Some((id, kind)) = member_identity(member) else {
            continue;
        };
        match grants.iter_mut().find(|g| g.member == id) {
            Some(g) => g.roles.push(role.to_owned()),
            None => grants.push(Grant {
                member: id.to_owned(),
                kind,
                roles: vec![role.to_owned()],
            }),
        }
    }
    grants
}

/// The identity an IAM policy member names (IAM principal identifiers), if it is one identity.
fn member_identity(member: &str) -> Option<(&str, IdentityType)> {
    if let Some(email) = member.strip_prefix("serviceAccount:") {
        Some((email, IdentityType::ServiceAccount))
    } else if let Some(email) = member.strip_prefix("user:") {
        Some((email, IdentityType::User))
    } else if member.starts_with("principal://") {
        Some((member, identity_type(member)))
    } else {
        None
    }
}

/// The service account an IAM or `iamcredentials` call is about: the e-mail in a
/// `.../serviceAccounts/<e-mail or unique id>` name, else the log's `resource.labels.email_id`,
/// else the unique id.
fn target_account(v: &Value, p: &Value, resource: &str) -> Option<String> {
    let names = [
        str_at(p, &["request", "name"]),
        str_at(p, &["response", "name"]),
        str_at(p, &["response", "email"]),
        Some(resource),
    ];
    let accounts: Vec<&str> = names.iter().flatten().filter_map(|n| account_in(n)).collect();
    accounts
        .iter()
        .find(|a| a.contains('@'))
        .copied()
        .or_else(|| str_at(v, &["resource", "labels", "email_id"]))
        .or_else(|| accounts.first().copied())
        .map(str::to_owned)
}

/// The account in `projects/<p>/serviceAccounts/<account>[/keys/<key>]`, or a bare e-mail.
fn account_in(name: &str) -> Option<&str> {
    match name.split_once("/serviceAccounts/") {
        Some((_, rest)) => rest.split('/').next().filter(|a| !a.is_empty()),
        None => name.ends_with(".gserviceaccount.com").then_some(name),
    }
}

/// The key id in `.../serviceAccounts/<account>/keys/<key>`.
fn key_id(v: &Value, p: &Value, resource: &str) -> Option<String> {
    [
        str_at(p, &["response", "name"]),
        str_at(p, &["request", "name"]),
        Some(resource),
        str_at(v, &["resource", "labels", "key_id"]),
    ]
    .into_iter()
    .flatten()
    .find_map(|n| match n.split_once("/keys/") {
        Some((_, key)) => key.split('/').next().filter(|k| !k.is_empty()),
        None => None,
    })
    .map(str::to_owned)
}

/// The first party that impersonated the calling service account, if the entry says.
fn delegating_party(p: &Value) -> Option<String> {
    items(
        p.get("authenticationInfo")
            .and_then(|a| a.get("serviceAccountDelegationInfo")),
    )
    .find_map(|d| string_at(d, &["firstPartyPrincipal", "principalEmail"]))
}

fn identity_type(principal: &str) -> IdentityType {
    if principal.contains("/workforcePools/") {
        IdentityType::User
    } else if principal.ends_with(".gserviceaccount.com")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_accounts_and_keys_from_resource_names() {
        // IAM REST reference, projects.serviceAccounts.keys.create: `name` is
        // projects/{PROJECT_ID|-}/serviceAccounts/{EMAIL_ADDRESS|UNIQUE_ID}; a key's name adds
        // /keys/{KEY_ID}.
        assert_eq!(
            account_in("projects/-/serviceAccounts/etl@p.iam.gserviceaccount.com"),
            Some("etl@p.iam.gserviceaccount.com")
        );
        assert_eq!(
            account_in("projects/p/serviceAccounts/123456789012345678901/keys/abc"),
            Some("123456789012345678901")
        );
        assert_eq!(account_in("projects/p/serviceAccounts/"), None);
        assert_eq!(account_in("projects/p"), None);
        let p =
            serde_json::json!({"response": {"name": "projects/p/serviceAccounts/a@p.iam.gserviceaccount.com/keys/k1"}});
        assert_eq!(key_id(&Value::Null, &p, "").as_deref(), Some("k1"));
    }

    #[test]
    fn members_that_are_one_identity() {
        // IAM principal identifiers: serviceAccount:, user:, principal:// are one principal;
        // group:, domain:, allUsers, principalSet:// are sets.
        assert_eq!(
            member_identity("serviceAccount:a@p.iam.gserviceaccount.com"),
            Some(("a@p.iam.gserviceaccount.com", IdentityType::ServiceAccount))
        );
        assert_eq!(
            member_identity("user:ana@example.com"),
            Some(("ana@example.com", IdentityType::User))
        );
        let workload = "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/ci/subject/x";
        assert_eq!(
            member_identity(workload),
            Some((workload, IdentityType::ServiceAccount))
        );
        let workforce = "principal://iam.googleapis.com/locations/global/workforcePools/staff/subject/ana";
        assert_eq!(member_identity(workforce), Some((workforce, IdentityType::User)));
        assert_eq!(member_identity("group:ops@example.com"), None);
        assert_eq!(member_identity("domain:example.com"), None);
        assert_eq!(member_identity("allUsers"), None);
        assert_eq!(member_identity("principalSet://iam.googleapis.com/x"), None);
    }
}
