//! Microsoft Entra ID sign-in and audit logs, in the three shapes SOCs export them in:
//!
//! - **diagnostic settings** (Event Hub, storage account): an Azure Monitor envelope (`time`,
//!   `category`, `operationName`, `tenantId`, `callerIpAddress`) around the record in
//!   `properties`, named as Microsoft Graph names it (camelCase);
//! - **Log Analytics / Microsoft Sentinel tables** `SigninLogs`, `AADNonInteractiveUserSignInLogs`,
//!   `AADServicePrincipalSignInLogs`, `AADManagedIdentitySignInLogs` and `AuditLogs`: one row of
//!   PascalCase columns, `Type` naming the table (Azure Monitor Logs table reference). Dynamic
//!   columns (`Status`, `InitiatedBy`, `TargetResources`, `AdditionalDetails`...) arrive either as
//!   JSON or as strings holding JSON (`"AuthenticationDetails": "[]"`): both are read. `TenantId`
//!   is the Log Analytics workspace, not the directory; the directory is `AADTenantId`, else the
//!   tenant in `ResourceId` (`/tenants/<id>/providers/Microsoft.aadiam`);
//! - **Microsoft Graph** `auditLogs/signIns` (`signIn` resource) and `auditLogs/directoryAudits`
//!   (`directoryAudit` resource): the camelCase record, alone or in the API's collection page
//!   (`{"@odata.context", "value": [...]}`, unwrapped in `normalize`); the directory is the
//!   sign-in's `resourceTenantId`.
//!
//! ## Who each event is about
//!
//! | record | identity | `identity_type` | `initiator` | kind |
//! |---|---|---|---|---|
//! | a person's sign-in: category `SignInLogs`/`NonInteractiveUserSignInLogs`, table `SigninLogs`/`AADNonInteractiveUserSignInLogs`, Graph `signInEventTypes` `interactiveUser`/`nonInteractiveUser` (or none, with a user) | `userPrincipalName`, else `userId` | `user` | — | `sign_in`; `auth_failure` when `status.errorCode` (else `ResultType`) is not 0 |
//! | a service principal's own sign-in: `ServicePrincipalSignInLogs`, `AADServicePrincipalSignInLogs`, Graph `servicePrincipal` | the app id (`appId`), else `servicePrincipalId` | `application` | — | `token_issued`; `auth_failure` when the error code is not 0 (e.g. `7000222`, an expired secret) |
//! | a managed identity's sign-in: `ManagedIdentitySignInLogs`, `AADManagedIdentitySignInLogs`, Graph `managedIdentity` | as above | `managed_identity` | — | as above |
//! | audit `Consent to application` | the consented service principal (the `ServicePrincipal` target), by app id | `application` | who consented | `permission_grant`: the scopes of `ConsentAction.Permissions` after `=>`, less those before |
//! | audit `Add delegated permission grant` (`Update ...` when it adds scopes) | the client: `ServicePrincipal.AppId`, else `ServicePrincipal.ObjectID` of the target that carries `DelegatedPermissionGrant.Scope` (that target is the resource, e.g. Microsoft Graph) | `application` | who granted | `permission_grant`: `DelegatedPermissionGrant.Scope` new less old |
//! | audit `Add app role assignment to service principal` | the client, as above, on the target carrying `AppRole.Value` (the resource) | `application` | who granted | `permission_grant`: `AppRole.Value` |
//! | audit `Add app role assignment grant to user` (a person given access to an app) | `User.UPN`, else `User.ObjectID` | `user` | who assigned | `admin` |
//! | other audit operations with a `ServicePrincipal` or `Application` target | that target, by app id | `application` | who did it | `credential_change` (credential / "Certificates and secrets management": key id from `KeyDescription`), `app_lifecycle` (add, update, delete, disable, enable, restore), else `admin` |
//! | other audit operations | the initiator: an app by app id (else `servicePrincipalId`, else name); a person by `userPrincipalName` (else `id`) | `application` / `user` | — | `admin` |
//!
//! People are never the product's subject: their events are typed `user` and counted as human.
//! The app a person signed in to is context, not the identity; the event keeps the person, the
//! outcome, the address and the user agent (the event has no field for the client app of a
//! person's sign-in).
//!
//! ## One app, one identity: the app id
//!
//! Entra names one app three ways: the **application object** (the app registration, where
//! `Update application – Certificates and secrets management` adds a secret), the **service
//! principal** object in each tenant (what signs in, where `Add service principal credentials`
//! adds a key) and the **app id** (client id) that both share. The identity is the app id
//! whenever the record carries it, so that "secret added to the application, then used by its
//! service principal" is one identity without any state: sign-ins carry `appId` always; an audit
//! target carries it as its own `AppId` / `AppPrincipalId` modified property (add operations), as
//! the first GUID of `TargetId.ServicePrincipalNames` (service principals; Microsoft Sentinel's
//! "Credential added after admin consented to Application" rule reads it there) or as the
//! `AppId` of `additionalDetails`. Only a GUID counts as an app id. A record that names the app
//! by an object id only (a delegated grant whose `ServicePrincipal.AppId` is empty) keeps that
//! object id: list it among the registry entry's `aliases`.
//!
//! Scopes are the vendor's space-separated names, split on spaces with stray commas and quotes
//! dropped. A service principal's token audience is recorded as the scope `<resourceId>/.default`,
//! the form Entra's client-credentials flow requests it in.
//!
//! ## Sources
//!
//! - Azure Monitor Logs table reference: `SigninLogs`, `AADNonInteractiveUserSignInLogs`,
//!   `AADServicePrincipalSignInLogs`, `AADManagedIdentitySignInLogs`, `AuditLogs`
//!   (learn.microsoft.com/azure/azure-monitor/reference/tables/…);
//! - Microsoft Graph `signIn` (beta: `signInEventTypes`, `servicePrincipalId`) and `directoryAudit`
//!   resource types (learn.microsoft.com/graph/api/resources/signin, …/directoryaudit);
//! - Microsoft Entra security operations guide for applications (the grant operations and their
//!   `AppRole.Value`, `DelegatedPermissionGrant.Scope` properties) and the Microsoft Sentinel
//!   analytic rules of the "Microsoft Entra ID" solution that read them (`ConsentAction.Permissions`
//!   as `ConsentType: …, Scope: …`, the client in `ServicePrincipal.ObjectID`);
//! - real records: `elastic-azure-*` (diagnostic settings: `additionalDetails` `AppId` and
//!   `TargetId.ServicePrincipalNames` name the target's app id) and `msticpy-aad-signinlogs`
//!   (a `SigninLogs` export with string and object dynamic columns).

use std::borrow::Cow;

use serde_json::Value;

use super::json::{items, str_at, string_at};
use super::{Ctx, ParseError, network_address, parse_time};
use crate::event::{Event, EventKind, IdentityType, Outcome, SourceFormat};
use crate::scope::Scope;

/// Where a record keeps its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Azure Monitor diagnostic settings: envelope, camelCase `properties`.
    Diagnostic,
    /// Log Analytics / Sentinel table row: PascalCase columns.
    Table,
    /// Microsoft Graph resource: camelCase, no envelope.
    Graph,
}

/// A parsed record and where its fields are.
struct Record<'a> {
    top: &'a Value,
    /// `properties` of a diagnostic record; the record itself otherwise.
    body: &'a Value,
    layout: Layout,
}

impl<'a> Record<'a> {
    fn read(v: &'a Value, format: SourceFormat) -> Result<Record<'a>, ParseError> {
        // The diagnostic envelope has `time`, `operationName`, `properties`; a Graph
        // `directoryAudit` has a top-level `category` too, but none of those.
        if ["properties", "operationName", "time"]
            .iter()
            .any(|k| v.get(k).is_some())
        {
            let body = v
                .get("properties")
                .filter(|p| p.is_object())
                .ok_or(ParseError::missing(format, "properties"))?;
            return Ok(Record {
                top: v,
                body,
                layout: Layout::Diagnostic,
            });
        }
        let table = ["Type", "TimeGenerated", "OperationName", "Category"]
            .iter()
            .any(|k| v.get(k).is_some());
        Ok(Record {
            top: v,
            body: v,
            layout: if table { Layout::Table } else { Layout::Graph },
        })
    }

    /// The field named `camel` in the diagnostic body and Graph records, `pascal` in table rows.
    fn get(&self, camel: &str, pascal: &str) -> Option<&'a Value> {
        match self.layout {
            Layout::Table => self.top.get(pascal),
            Layout::Diagnostic | Layout::Graph => self.body.get(camel),
        }
    }

    /// A non-empty string field.
    fn text(&self, camel: &str, pascal: &str) -> Option<&'a str> {
        self.get(camel, pascal)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    fn owned(&self, camel: &str, pascal: &str) -> Option<String> {
        self.text(camel, pascal).map(str::to_owned)
    }

    /// The envelope's field: `diagnostic` at the top of a diagnostic record, `table` in a row;
    /// Graph records have no envelope.
    fn envelope(&self, diagnostic: &str, table: &str) -> Option<&'a str> {
        match self.layout {
            Layout::Diagnostic => str_at(self.top, &[diagnostic]),
            Layout::Table => str_at(self.top, &[table]),
            Layout::Graph => None,
        }
    }

    /// The name of a field as this layout spells it, for errors.
    fn field(&self, diagnostic: &'static str, table: &'static str, graph: &'static str) -> &'static str {
        match self.layout {
            Layout::Diagnostic => diagnostic,
            Layout::Table => table,
            Layout::Graph => graph,
        }
    }

    /// A dynamic field, decoded; a string that is not JSON is a `wrong_type` error.
    fn dynamic(
        &self,
        camel: &'static str,
        pascal: &'static str,
        format: SourceFormat,
    ) -> Result<Option<Cow<'a, Value>>, ParseError> {
        match self.get(camel, pascal).map(decode) {
            None => Ok(None),
            Some(Ok(v)) if v.is_null() => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(())) => Err(ParseError::wrong(
                format,
                self.field(camel, pascal, camel),
                "a string that is not JSON",
            )),
        }
    }

    /// The directory the record was logged in (see the module doc).
    fn tenant(&self) -> Option<String> {
        match self.layout {
            Layout::Diagnostic => string_at(self.top, &["tenantId"]),
            Layout::Table => string_at(self.top, &["AADTenantId"]).or_else(|| {
                str_at(self.top, &["ResourceId"])
                    .and_then(tenant_of_resource)
                    .map(str::to_owned)
            }),
            Layout::Graph => string_at(self.body, &["resourceTenantId"]),
        }
    }
}

/// A Log Analytics `dynamic` column as the JSON it holds: exports write it as the value itself
/// or as a string of JSON. An empty string is `null`; `Err` for a string that is not JSON.
fn decode(v: &Value) -> Result<Cow<'_, Value>, ()> {
    match v {
        Value::String(s) if s.trim().is_empty() => Ok(Cow::Owned(Value::Null)),
        Value::String(s) => serde_json::from_str(s.trim()).map(Cow::Owned).map_err(|_| ()),
        other => Ok(Cow::Borrowed(other)),
    }
}

/// The tenant of an Azure Monitor resource id `/tenants/<id>/providers/Microsoft.aadiam`.
fn tenant_of_resource(resource_id: &str) -> Option<&str> {
    let rest = resource_id.strip_prefix("/tenants/")?;
    rest.split('/').next().filter(|t| !t.is_empty())
}

// ---- sign-ins ----

/// Whose sign-in a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// A person (interactive or not).
    User,
    /// An app's service principal (client credentials).
    ServicePrincipal,
    /// A managed identity.
    ManagedIdentity,
}

/// The flow named by a diagnostic category or a table (`Type`, else `Category`).
fn flow_named(name: &str) -> Option<Flow> {
    Some(match name {
        "SignInLogs" | "NonInteractiveUserSignInLogs" | "SigninLogs" | "AADNonInteractiveUserSignInLogs" => Flow::User,
        "ServicePrincipalSignInLogs" | "AADServicePrincipalSignInLogs" => Flow::ServicePrincipal,
        "ManagedIdentitySignInLogs" | "AADManagedIdentitySignInLogs" => Flow::ManagedIdentity,
        _ => return None,
    })
}

fn flow(r: &Record<'_>) -> Result<Flow, ParseError> {
    const FORMAT: SourceFormat = SourceFormat::EntraSignIn;
    match r.layout {
        Layout::Diagnostic | Layout::Table => {
            let (field, name) = match r.layout {
                Layout::Diagnostic => ("category", str_at(r.top, &["category"])),
                _ => match str_at(r.top, &["Type"]) {
                    Some(table) => ("Type", Some(table)),
                    None => ("Category", str_at(r.top, &["Category"])),
                },
            };
            let name = name.ok_or(ParseError::missing(FORMAT, field))?;
            flow_named(name).ok_or_else(|| ParseError::wrong(FORMAT, field, format!("not a sign-in log: {name}")))
        }
        Layout::Graph => {
            // Graph `signIn.signInEventTypes`: `interactiveUser`, `nonInteractiveUser`,
            // `servicePrincipal`, `managedIdentity`. v1.0 has no such property and lists people's
            // sign-ins only.
            let types: Vec<&str> = items(r.body.get("signInEventTypes"))
                .filter_map(Value::as_str)
                .collect();
            if types.contains(&"servicePrincipal") {
                Ok(Flow::ServicePrincipal)
            } else if types.contains(&"managedIdentity") {
                Ok(Flow::ManagedIdentity)
            } else if types
                .iter()
                .any(|t| matches!(*t, "interactiveUser" | "nonInteractiveUser"))
                || r.text("userPrincipalName", "").is_some()
                || r.text("userId", "").is_some()
            {
                Ok(Flow::User)
            } else if r.text("servicePrincipalId", "").is_some() {
                Ok(Flow::ServicePrincipal)
            } else {
                Err(ParseError::missing(FORMAT, "signInEventTypes"))
            }
        }
    }
}

/// The outcome of an error code or result: `0` is success, any other code a failure (Azure
/// Monitor `SigninLogs.ResultType`: "0 indicates success; other values are failures"); the words
/// `success` / `failure` where a table writes them instead.
fn result_of(v: &Value) -> Option<(Outcome, Option<String>)> {
    let code = |c: i64| {
        if c == 0 {
            (Outcome::Success, None)
        } else {
            (Outcome::Failure, Some(c.to_string()))
        }
    };
    match v {
        Value::Number(n) => n.as_i64().map(code),
        Value::String(s) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(c) => Some(code(c)),
                Err(_) if s.eq_ignore_ascii_case("success") => Some((Outcome::Success, None)),
                Err(_) if s.eq_ignore_ascii_case("failure") => Some((Outcome::Failure, None)),
                Err(_) => None,
            }
        }
        _ => None,
    }
}

/// `status.errorCode` (an object, or a string of JSON in a table), else the envelope's
/// `resultType` / the row's `ResultType`.
fn sign_in_result(r: &Record<'_>) -> (Outcome, Option<String>) {
    let status = r.get("status", "Status").and_then(|s| decode(s).ok());
    status
        .as_deref()
        .and_then(|s| s.get("errorCode"))
        .and_then(result_of)
        .or_else(|| {
            let envelope = match r.layout {
                Layout::Diagnostic => r.top.get("resultType"),
                Layout::Table => r.top.get("ResultType"),
                Layout::Graph => None,
            };
            envelope.and_then(result_of)
        })
        .unwrap_or((Outcome::Unknown, None))
}

/// Normalizes a sign-in log record.
pub fn normalize_signin(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    const FORMAT: SourceFormat = SourceFormat::EntraSignIn;
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::json)?;
    let r = Record::read(&v, FORMAT)?;
    let flow = flow(&r)?;
    // `createdDateTime` is when the sign-in was initiated; the service-principal and
    // managed-identity tables have only `TimeGenerated`.
    let time_field = r.field("time", "TimeGenerated", "createdDateTime");
    let ts = r
        .text("createdDateTime", "CreatedDateTime")
        .or_else(|| r.envelope("time", "TimeGenerated"))
        .ok_or(ParseError::missing(FORMAT, time_field))?;
    let time = parse_time(ts).ok_or(ParseError::bad_time(FORMAT, time_field))?;
    let (outcome, error) = sign_in_result(&r);
    let event_id = r.owned("id", "Id").unwrap_or_else(|| ctx.fallback_id(FORMAT));

    let mut event = match flow {
        Flow::User => {
            let identity = r
                .text("userPrincipalName", "UserPrincipalName")
                .or_else(|| r.text("userId", "UserId"))
                .ok_or(ParseError::missing(
                    FORMAT,
                    r.field("properties.userPrincipalName", "UserPrincipalName", "userPrincipalName"),
                ))?;
            let kind = match outcome {
                Outcome::Failure => EventKind::AuthFailure,
                _ => EventKind::SignIn,
            };
            let mut event = Event::new(event_id, time, FORMAT, kind, identity.to_owned());
            event.identity_name = r.owned("userDisplayName", "UserDisplayName");
            event.identity_type = IdentityType::User;
            event
        }
        Flow::ServicePrincipal | Flow::ManagedIdentity => {
            let app_id = r.text("appId", "AppId");
            let identity = app_id
                .filter(|a| is_guid(a))
                .or_else(|| r.text("servicePrincipalId", "ServicePrincipalId"))
                .or(app_id)
                .ok_or(ParseError::missing(
                    FORMAT,
                    r.field("properties.appId", "AppId", "appId"),
                ))?;
            let kind = match outcome {
                Outcome::Failure => EventKind::AuthFailure,
                _ => EventKind::TokenIssued,
            };
            let mut event = Event::new(event_id, time, FORMAT, kind, identity.to_owned());
            event.identity_name = r
                .owned("servicePrincipalName", "ServicePrincipalName")
                .or_else(|| r.owned("appDisplayName", "AppDisplayName"));
            event.identity_type = match flow {
                Flow::ManagedIdentity => IdentityType::ManagedIdentity,
                _ => IdentityType::Application,
            };
            event.credential_id = r
                .owned("servicePrincipalCredentialKeyId", "ServicePrincipalCredentialKeyId")
                .or_else(|| {
                    r.owned(
                        "servicePrincipalCredentialThumbprint",
                        "ServicePrincipalCredentialThumbprint",
                    )
                })
                .or_else(|| r.owned("federatedCredentialId", "FederatedCredentialId"));
            // The table's `ResourceId` is the Azure resource of the log; the resource signed
            // in to is `ResourceIdentity`.
            if let Some(resource) = r.text("resourceId", "ResourceIdentity") {
                event.scopes = vec![Scope::parse(&format!("{resource}/.default"))];
            }
            event
        }
    };
    event.tenant = r.tenant();
    event.outcome = outcome;
    event.error = error;
    event.action = r.envelope("operationName", "OperationName").map(str::to_owned);
    event.src_ip = r
        .text("ipAddress", "IPAddress")
        .or_else(|| r.envelope("callerIpAddress", "CallerIpAddress"))
        .and_then(network_address);
    event.user_agent = r.owned("userAgent", "UserAgent");
    Ok(event)
}

// ---- audit logs ----

/// The permission-grant operations (Microsoft Entra audit log activities, category
/// `ApplicationManagement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// `Consent to application`: the target service principal is the client.
    Consent,
    /// `Add delegated permission grant`.
    Delegated,
    /// `Update delegated permission grant`: a grant when it adds scopes.
    DelegatedUpdate,
    /// `Add app role assignment to service principal` (an application permission).
    AppRole,
}

fn grant_of(operation: &str) -> Option<Grant> {
    let op = operation.trim();
    let is = |name: &str| op.eq_ignore_ascii_case(name);
    if is("Consent to application") {
        Some(Grant::Consent)
    } else if is("Add delegated permission grant") {
        Some(Grant::Delegated)
    } else if is("Update delegated permission grant") {
        Some(Grant::DelegatedUpdate)
    } else if is("Add app role assignment to service principal") {
        Some(Grant::AppRole)
    } else {
        None
    }
}

/// Who initiated an audited activity (`initiatedBy.app` or `initiatedBy.user`).
struct Actor {
    id: String,
    name: Option<String>,
    person: bool,
    ip: Option<String>,
}

fn actor(initiated: Option<&Value>) -> Option<Actor> {
    let initiated = initiated?;
    let app = initiated.get("app").filter(|a| a.is_object()).and_then(|a| {
        let id = str_at(a, &["appId"])
            .filter(|id| is_guid(id))
            .or_else(|| str_at(a, &["servicePrincipalId"]))
            .or_else(|| str_at(a, &["displayName"]))?;
        Some(Actor {
            id: id.to_owned(),
            name: string_at(a, &["displayName"]),
            person: false,
            ip: string_at(a, &["ipAddress"]),
        })
    });
    app.or_else(|| {
        let u = initiated.get("user").filter(|u| u.is_object())?;
        let id = str_at(u, &["userPrincipalName"]).or_else(|| str_at(u, &["id"]))?;
        Some(Actor {
            id: id.to_owned(),
            name: string_at(u, &["displayName"]),
            person: true,
            ip: string_at(u, &["ipAddress"]),
        })
    })
}

/// The subject of an audit event.
struct Subject {
    identity: String,
    name: Option<String>,
    identity_type: IdentityType,
    kind: EventKind,
    scopes: Vec<Scope>,
    /// The subject is the initiator itself (no one else to name as `initiator`).
    by_itself: bool,
}

/// Normalizes an audit log record.
pub fn normalize_audit(ctx: &Ctx<'_>) -> Result<Event, ParseError> {
    const FORMAT: SourceFormat = SourceFormat::EntraAudit;
    let v: Value = serde_json::from_str(ctx.raw).map_err(ParseError::json)?;
    let r = Record::read(&v, FORMAT)?;
    // `activityDateTime` is when the activity was performed (Graph `directoryAudit`; the
    // table's `TimeGenerated` is when the row was created).
    let time_field = r.field("time", "TimeGenerated", "activityDateTime");
    let ts = r
        .text("activityDateTime", "ActivityDateTime")
        .or_else(|| r.envelope("time", "TimeGenerated"))
        .ok_or(ParseError::missing(FORMAT, time_field))?;
    let time = parse_time(ts).ok_or(ParseError::bad_time(FORMAT, time_field))?;
    let operation = r
        .envelope("operationName", "OperationName")
        .or_else(|| r.text("activityDisplayName", "ActivityDisplayName"))
        .ok_or(ParseError::missing(
            FORMAT,
            r.field("operationName", "OperationName", "activityDisplayName"),
        ))?;
    let initiated = r.dynamic("initiatedBy", "InitiatedBy", FORMAT)?;
    let targets = r.dynamic("targetResources", "TargetResources", FORMAT)?;
    // Extra context only: a malformed value is read as absent.
    let details = r
        .get("additionalDetails", "AdditionalDetails")
        .and_then(|d| decode(d).ok())
        .filter(|d| !d.is_null());
    let targets: Vec<&Value> = items(targets.as_deref()).collect();
    let actor = actor(initiated.as_deref());

    let subject = match grant_of(operation) {
        Some(grant) => granted(grant, &targets, details.as_deref())?,
        None => assigned_person(operation, &targets)
            .or_else(|| about_app(operation, &targets, details.as_deref()))
            .transpose()?
            .map_or_else(|| by_initiator(&actor), Ok)?,
    };

    let event_id = r.owned("id", "Id").unwrap_or_else(|| ctx.fallback_id(FORMAT));
    let mut event = Event::new(event_id, time, FORMAT, subject.kind, subject.identity);
    event.identity_name = subject.name;
    event.identity_type = subject.identity_type;
    event.scopes = subject.scopes;
    if !subject.by_itself {
        event.initiator = actor.as_ref().map(|a| a.id.clone());
    }
    event.tenant = r.tenant();
    event.action = Some(operation.to_owned());
    // Graph `directoryAudit.result`: success, failure, timeout.
    event.outcome = match r.text("result", "Result") {
        Some(s) if s.eq_ignore_ascii_case("success") => Outcome::Success,
        Some(s) if s.eq_ignore_ascii_case("failure") || s.eq_ignore_ascii_case("timeout") => Outcome::Failure,
        _ => Outcome::Unknown,
    };
    if event.outcome == Outcome::Failure {
        event.error = r.owned("resultReason", "ResultReason");
    }
    event.src_ip = r
        .envelope("callerIpAddress", "CallerIpAddress")
        .map(str::to_owned)
        .or_else(|| actor.as_ref().and_then(|a| a.ip.clone()))
        .as_deref()
        .and_then(network_address);
    if event.kind == EventKind::CredentialChange {
        event.credential_id = targets
            .iter()
            .find(|t| is_app_target(t))
            .and_then(|t| changed_key_id(t));
    }
    Ok(event)
}

fn is_app_target(t: &Value) -> bool {
    str_at(t, &["type"])
        .is_some_and(|ty| ty.eq_ignore_ascii_case("ServicePrincipal") || ty.eq_ignore_ascii_case("Application"))
}

fn is_service_principal(t: &Value) -> bool {
    str_at(t, &["type"]).is_some_and(|ty| ty.eq_ignore_ascii_case("ServicePrincipal"))
}

/// A permission grant: the client that receives it, and what it receives.
fn granted(grant: Grant, targets: &[&Value], details: Option<&Value>) -> Result<Subject, ParseError> {
    const FORMAT: SourceFormat = SourceFormat::EntraAudit;
    let subject = |identity: String, name: Option<String>, scopes: Vec<Scope>, kind: EventKind| Subject {
        identity,
        name,
        identity_type: IdentityType::Application,
        kind,
        scopes,
        by_itself: false,
    };
    match grant {
        Grant::Consent => {
            let client = targets
                .iter()
                .copied()
                .find(|t| is_service_principal(t))
                .ok_or(ParseError::missing(FORMAT, "targetResources.ServicePrincipal"))?;
            let identity = app_id_of(client, details)
                .or_else(|| string_at(client, &["id"]))
                .ok_or(ParseError::missing(FORMAT, "targetResources.id"))?;
            let permissions = modified(client, "ConsentAction.Permissions", "newValue");
            let scopes = permissions.as_deref().map(consent_scopes).unwrap_or_default();
            Ok(subject(
                identity,
                string_at(client, &["displayName"]),
                scopes,
                EventKind::PermissionGrant,
            ))
        }
        Grant::Delegated | Grant::DelegatedUpdate | Grant::AppRole => {
            let granted_property = match grant {
                Grant::AppRole => "AppRole.Value",
                _ => "DelegatedPermissionGrant.Scope",
            };
            // The target carrying the grant is the resource (e.g. Microsoft Graph); the client
            // is named in its `ServicePrincipal.*` properties, or is the other service principal.
            let resource = targets
                .iter()
                .copied()
                .find(|t| has_modified(t, granted_property))
                .ok_or(ParseError::missing(
                    FORMAT,
                    match grant {
                        Grant::AppRole => "targetResources.modifiedProperties.AppRole.Value",
                        _ => "targetResources.modifiedProperties.DelegatedPermissionGrant.Scope",
                    },
                ))?;
            let other = targets
                .iter()
                .copied()
                .find(|t| is_service_principal(t) && !std::ptr::eq(*t, resource));
            let identity = modified(resource, "ServicePrincipal.AppId", "newValue")
                .and_then(|a| first_guid(&a).map(str::to_owned))
                .or_else(|| modified(resource, "ServicePrincipal.ObjectID", "newValue").map(Cow::into_owned))
                .or_else(|| other.and_then(|o| string_at(o, &["id"])))
                .ok_or(ParseError::missing(
                    FORMAT,
                    "targetResources.modifiedProperties.ServicePrincipal.ObjectID",
                ))?;
            let name = modified(resource, "ServicePrincipal.DisplayName", "newValue")
                .map(Cow::into_owned)
                .or_else(|| other.and_then(|o| string_at(o, &["displayName"])));
            let new = modified(resource, granted_property, "newValue");
            let old = modified(resource, granted_property, "oldValue");
            let old: Vec<&str> = old.as_deref().map(|o| scope_tokens(o).collect()).unwrap_or_default();
            let added = Scope::collect(
                new.as_deref()
                    .into_iter()
                    .flat_map(scope_tokens)
                    .filter(|s| !old.contains(s)),
            );
            // An update that adds nothing (it removes scopes) grants nothing.
            let kind = if grant == Grant::DelegatedUpdate && added.is_empty() {
                EventKind::Admin
            } else {
                EventKind::PermissionGrant
            };
            Ok(subject(identity, name, added, kind))
        }
    }
}

/// `Add app role assignment grant to user` and its removal: a person given (or denied) access to
/// an app. The person is the subject.
fn assigned_person(operation: &str, targets: &[&Value]) -> Option<Result<Subject, ParseError>> {
    let lower = operation.to_ascii_lowercase();
    if !(lower.contains("app role assignment") && lower.contains("user")) {
        return None;
    }
    let person = targets.iter().find_map(|t| {
        modified(t, "User.UPN", "newValue")
            .or_else(|| modified(t, "User.UPN", "oldValue"))
            .or_else(|| modified(t, "User.ObjectID", "newValue"))
            .or_else(|| modified(t, "User.ObjectID", "oldValue"))
    })?;
    Some(Ok(Subject {
        identity: person.into_owned(),
        name: None,
        identity_type: IdentityType::User,
        kind: EventKind::Admin,
        scopes: Vec::new(),
        by_itself: false,
    }))
}

/// Any other operation on an application or service principal target: the app (by app id).
fn about_app(operation: &str, targets: &[&Value], details: Option<&Value>) -> Option<Result<Subject, ParseError>> {
    let target = targets.iter().copied().find(|t| is_app_target(t))?;
    let identity = match app_id_of(target, details).or_else(|| string_at(target, &["id"])) {
        Some(id) => id,
        None => return Some(Err(ParseError::missing(SourceFormat::EntraAudit, "targetResources.id"))),
    };
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
    Some(Ok(Subject {
        identity,
        name: string_at(target, &["displayName"]),
        identity_type: IdentityType::Application,
        kind,
        scopes: Vec::new(),
        by_itself: false,
    }))
}

/// An operation on something else (a device, a user, a group): the initiator did it.
fn by_initiator(actor: &Option<Actor>) -> Result<Subject, ParseError> {
    let a = actor
        .as_ref()
        .ok_or(ParseError::missing(SourceFormat::EntraAudit, "initiatedBy"))?;
    Ok(Subject {
        identity: a.id.clone(),
        name: a.name.clone(),
        identity_type: if a.person {
            IdentityType::User
        } else {
            IdentityType::Application
        },
        kind: EventKind::Admin,
        scopes: Vec::new(),
        by_itself: true,
    })
}

/// The app id of an application or service principal target, from the record alone (module doc).
fn app_id_of(target: &Value, details: Option<&Value>) -> Option<String> {
    let own = ["AppId", "AppPrincipalId"].iter().find_map(|name| {
        modified(target, name, "newValue")
            .or_else(|| modified(target, name, "oldValue"))
            .and_then(|v| first_guid(&v).map(str::to_owned))
    });
    own.or_else(|| {
        is_service_principal(target)
            .then(|| modified(target, "TargetId.ServicePrincipalNames", "newValue"))
            .flatten()
            .and_then(|names| first_guid(&names).map(str::to_owned))
    })
    .or_else(|| {
        items(details)
            .find(|&d| str_at(d, &["key"]).is_some_and(|k| k.eq_ignore_ascii_case("AppId")))
            .and_then(|d| str_at(d, &["value"]))
            .filter(|v| is_guid(v))
            .map(str::to_owned)
    })
}

/// True when a target lists the modified property `name` (whatever its value).
fn has_modified(target: &Value, name: &str) -> bool {
    items(target.get("modifiedProperties"))
        .any(|m| str_at(m, &["displayName"]).is_some_and(|d| d.eq_ignore_ascii_case(name)))
}

/// The `newValue` or `oldValue` (`side`) of a target's modified property, as text. Entra writes
/// each as a JSON document in a string (`"\"Principal\""`, `"[\"<id>\"]"`): a JSON string is
/// unwrapped and an array's strings joined with spaces; other text is kept as written.
fn modified<'v>(target: &'v Value, name: &str, side: &str) -> Option<Cow<'v, str>> {
    let property = items(target.get("modifiedProperties"))
        .find(|&m| str_at(m, &["displayName"]).is_some_and(|d| d.eq_ignore_ascii_case(name)))?;
    let joined = |a: &[Value]| {
        let parts: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
        parts.join(" ")
    };
    let text: Cow<'v, str> = match property.get(side)? {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::String(inner)) => Cow::Owned(inner),
            Ok(Value::Array(a)) => Cow::Owned(joined(&a)),
            Ok(Value::Null) => return None,
            _ => Cow::Borrowed(s.as_str()),
        },
        Value::Array(a) => Cow::Owned(joined(a)),
        _ => return None,
    };
    match text.trim() {
        "" => None,
        t if t.len() == text.len() => Some(text),
        t => Some(Cow::Owned(t.to_owned())),
    }
}

/// Scope names of a space-separated list, stray commas and quotes dropped (Entra writes
/// `DelegatedPermissionGrant.Scope` as `" User.Read openid profile offline_access"`).
fn scope_tokens(list: &str) -> impl Iterator<Item = &str> {
    list.split(|c: char| c.is_whitespace() || c == ',' || c == '"')
        .filter(|t| !t.is_empty())
}

/// The scopes `ConsentAction.Permissions` adds: its value reads
/// `[<before>] => [[Id: ..., ClientId: ..., ConsentType: Principal, Scope: User.Read openid, ...]]`;
/// the scopes after `=>` less those before.
fn consent_scopes(permissions: &str) -> Vec<Scope> {
    fn scopes_in(text: &str) -> Vec<&str> {
        text.split("Scope:")
            .skip(1)
            .flat_map(|rest| {
                let end = rest.find([',', ']']).unwrap_or(rest.len());
                scope_tokens(&rest[..end])
            })
            .collect()
    }
    let (before, after) = permissions.split_once("=>").unwrap_or(("", permissions));
    let before = scopes_in(before);
    Scope::collect(scopes_in(after).into_iter().filter(|s| !before.contains(s)))
}

/// True for a GUID in its 8-4-4-4-12 hexadecimal form (Entra's app and object ids).
fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The first GUID in a text (`TargetId.ServicePrincipalNames` reads `<app id>;https://...`).
fn first_guid(text: &str) -> Option<&str> {
    (0..text.len().saturating_sub(35))
        .filter_map(|i| text.get(i..i + 36))
        .find(|candidate| is_guid(candidate))
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
    use serde_json::json;

    use super::*;
    use crate::normalize::{Normalizer, Pseudonymizer, RecordMeta};

    fn one(raw: &str) -> Result<Event, ParseError> {
        let n = Normalizer::new(Pseudonymizer::random(), 1 << 20);
        n.normalize(raw.as_bytes(), &RecordMeta::default())
            .map(|mut v| v.remove(0))
    }

    /// Normalizes and compares the whole event (every field, nothing extra).
    fn check(record: &Value, expected: Value) {
        let event = one(&record.to_string()).expect("normalizes");
        let actual = serde_json::to_value(&event).expect("events serialize");
        assert_eq!(actual, expected, "\nactual:   {actual}\nexpected: {expected}");
    }

    const TENANT: &str = "4bbb79f7-5724-4c9e-95f3-de075f6ec090";
    const WORKSPACE: &str = "ab86c959-1ba3-495c-a00d-ced30d8825d3";
    const APP: &str = "6131d760-7fda-4db5-8bb1-b771898e9f15";
    const APP_OBJECT: &str = "0c3d0a4e-5b0e-4a63-9a43-0f2bb3b1c1aa";
    const SP: &str = "b029d485-a308-4311-8720-fb3192e5284e";
    const GRAPH_APP: &str = "00000003-0000-0000-c000-000000000000";
    const GRAPH_SP: &str = "9e3c7f2a-55a8-4c52-bd7e-2b2b0ecd4f10";

    // ---- sign-ins ----

    #[test]
    fn a_non_interactive_user_sign_in_row_is_a_person_with_status_given_as_a_json_string() {
        // Azure Monitor table reference, AADNonInteractiveUserSignInLogs: `Status` and
        // `DeviceDetail` are `string` columns (JSON in a string); `ResultType` the error code;
        // `UserPrincipalName` the user; `AADTenantId` is absent from that table, so the tenant is
        // read from `ResourceId` (`TenantId` is the Log Analytics workspace).
        let row = json!({
            "TenantId": WORKSPACE, "SourceSystem": "Azure AD", "TimeGenerated": "2024-03-04T08:15:02.117Z",
            "ResourceId": format!("/tenants/{TENANT}/providers/Microsoft.aadiam"),
            "OperationName": "Sign-in activity", "Category": "NonInteractiveUserSignInLogs",
            "ResultType": "700082", "ResultDescription": "The refresh token has expired due to inactivity.",
            "AppDisplayName": "Microsoft Office", "AppId": "d3590ed6-52b3-4102-aeff-aad2292ab01c",
            "AuthenticationDetails": "[]", "CreatedDateTime": "2024-03-04T08:15:01Z",
            "DeviceDetail": "{\"deviceId\":\"\",\"operatingSystem\":\"Windows 10\"}",
            "Id": "2d0c61b3-14fd-4f2e-9a0d-7fe1c3b56a00", "IPAddress": "203.0.113.24", "IsInteractive": false,
            "ResourceDisplayName": "Microsoft Graph", "ResourceIdentity": GRAPH_APP,
            "ServicePrincipalId": "", "ServicePrincipalName": "",
            "Status": "{\"errorCode\":700082,\"failureReason\":\"The refresh token has expired due to inactivity.\"}",
            "UserAgent": "Mozilla/5.0", "UserDisplayName": "Megan Bowen", "UserId": "eababd92-9dc7-40e3-9359-6c106522db19",
            "UserPrincipalName": "meganb@contoso.example", "Type": "AADNonInteractiveUserSignInLogs"
        });
        check(
            &row,
            json!({"event_id": "2d0c61b3-14fd-4f2e-9a0d-7fe1c3b56a00", "time": "2024-03-04T08:15:01Z",
                "format": "entra_signin", "kind": "auth_failure", "identity": "meganb@contoso.example",
                "identity_name": "Megan Bowen", "identity_type": "user", "tenant": TENANT,
                "src_ip": "203.0.113.24", "user_agent": "Mozilla/5.0", "outcome": "failure", "error": "700082",
                "action": "Sign-in activity"}),
        );
    }

    #[test]
    fn a_service_principal_sign_in_row_is_the_app_by_its_app_id() {
        // Azure Monitor table reference, AADServicePrincipalSignInLogs: `AppId` is the app id,
        // `ServicePrincipalId` the service principal, `ResourceIdentity` the resource signed in
        // to, `ServicePrincipalCredentialKeyId` the key used; no `CreatedDateTime` (the time is
        // `TimeGenerated`) and no `AADTenantId`.
        let mut row = json!({
            "TenantId": WORKSPACE, "TimeGenerated": "2024-03-04T02:00:03.5Z", "OperationName": "Sign-in activity",
            "Category": "ServicePrincipalSignInLogs", "ResultType": "0", "ResultSignature": "SUCCESS",
            "AppId": APP, "ServicePrincipalId": SP, "ServicePrincipalName": "Terraform-Datadog-CLI",
            "ServicePrincipalCredentialKeyId": "dbcd79c0-c3ea-46b9-9604-ff40d43b8618",
            "ResourceDisplayName": "Microsoft Graph", "ResourceIdentity": GRAPH_APP,
            "ResourceServicePrincipalId": GRAPH_SP, "IPAddress": "198.51.100.7",
            "Id": "d5935dca-86f2-4ac9-a42c-3593b00af801", "LocationDetails": "{\"city\":\"Hyderabad\"}",
            "ConditionalAccessPolicies": "[]", "Type": "AADServicePrincipalSignInLogs"
        });
        let expected = json!({"event_id": "d5935dca-86f2-4ac9-a42c-3593b00af801", "time": "2024-03-04T02:00:03.500Z",
            "format": "entra_signin", "kind": "token_issued", "identity": APP,
            "identity_name": "Terraform-Datadog-CLI", "identity_type": "application",
            "scopes": [format!("{GRAPH_APP}/.default")], "src_ip": "198.51.100.7", "outcome": "success",
            "credential_id": "dbcd79c0-c3ea-46b9-9604-ff40d43b8618", "action": "Sign-in activity"});
        check(&row, expected.clone());
        // AADSTS7000215: invalid client secret. The failure is the app's own.
        row["ResultType"] = json!("7000215");
        let mut failed = expected;
        failed["kind"] = json!("auth_failure");
        failed["outcome"] = json!("failure");
        failed["error"] = json!("7000215");
        check(&row, failed);
    }

    #[test]
    fn a_managed_identity_sign_in_row_is_a_managed_identity() {
        // Azure Monitor table reference, AADManagedIdentitySignInLogs: same columns as the
        // service-principal table.
        let row = json!({
            "TimeGenerated": "2022-01-24T04:59:49Z", "OperationName": "Sign-in activity",
            "Category": "ManagedIdentitySignInLogs", "ResultType": "0", "AppId": "b3b975ac-995b-426e-8b5d-363a165df41c",
            "ServicePrincipalId": "9d370547-cb61-4753-be23-68534909af90", "ServicePrincipalName": "testplatformlogslube",
            "ResourceIdentity": "797f4846-ba00-4fd7-ba43-dac1f8f63013", "IPAddress": "",
            "Id": "a08869a8-3b15-46e4-8de3-273849e60100", "Type": "AADManagedIdentitySignInLogs"
        });
        check(
            &row,
            json!({"event_id": "a08869a8-3b15-46e4-8de3-273849e60100", "time": "2022-01-24T04:59:49Z",
                "format": "entra_signin", "kind": "token_issued", "identity": "b3b975ac-995b-426e-8b5d-363a165df41c",
                "identity_name": "testplatformlogslube", "identity_type": "managed_identity",
                "scopes": ["797f4846-ba00-4fd7-ba43-dac1f8f63013/.default"], "outcome": "success",
                "action": "Sign-in activity"}),
        );
    }

    #[test]
    fn graph_sign_ins_are_told_apart_by_their_event_types() {
        // Microsoft Graph signIn resource (beta): `signInEventTypes` is `interactiveUser`,
        // `nonInteractiveUser`, `servicePrincipal` or `managedIdentity`; `status.errorCode` 0 is
        // success; `resourceTenantId` the tenant of the resource.
        let person = json!({
            "id": "66ea54eb-6301-4ee5-be62-ff5a759b0100", "createdDateTime": "2024-06-22T12:33:15Z",
            "userDisplayName": "Emily Cline", "userPrincipalName": "emilycline@contoso.example",
            "userId": "d7cd5a5a-1a8b-4c4c-9e1c-5a5b6a7a8b9c", "appId": "14d82eec-204b-4c2f-b7e8-296a70dab67e",
            "appDisplayName": "Microsoft Graph Command Line Tools", "ipAddress": "213.109.20.69",
            "isInteractive": true, "resourceTenantId": TENANT, "signInEventTypes": ["interactiveUser"],
            "status": {"errorCode": 0, "failureReason": "Other."}
        });
        check(
            &person,
            json!({"event_id": "66ea54eb-6301-4ee5-be62-ff5a759b0100", "time": "2024-06-22T12:33:15Z",
                "format": "entra_signin", "kind": "sign_in", "identity": "emilycline@contoso.example",
                "identity_name": "Emily Cline", "identity_type": "user", "tenant": TENANT,
                "src_ip": "213.109.20.69", "outcome": "success"}),
        );
        let app = json!({
            "id": "4d81e7dd-bc8d-4048-9a02-bccc1d945802", "createdDateTime": "2024-06-22T13:00:00Z",
            "appId": APP, "appDisplayName": "Terraform-Datadog-CLI", "servicePrincipalId": SP,
            "servicePrincipalName": "Terraform-Datadog-CLI", "ipAddress": "198.51.100.7",
            "resourceId": GRAPH_APP, "resourceTenantId": TENANT, "signInEventTypes": ["servicePrincipal"],
            "userId": "", "userPrincipalName": null, "status": {"errorCode": 7000222}
        });
        check(
            &app,
            json!({"event_id": "4d81e7dd-bc8d-4048-9a02-bccc1d945802", "time": "2024-06-22T13:00:00Z",
                "format": "entra_signin", "kind": "auth_failure", "identity": APP,
                "identity_name": "Terraform-Datadog-CLI", "identity_type": "application", "tenant": TENANT,
                "scopes": [format!("{GRAPH_APP}/.default")], "src_ip": "198.51.100.7", "outcome": "failure",
                "error": "7000222"}),
        );
    }

    #[test]
    fn a_status_that_is_not_json_falls_back_to_the_result_type() {
        let row = json!({"TimeGenerated": "2024-03-04T02:00:03Z", "Type": "SigninLogs", "Id": "x",
            "UserPrincipalName": "a@contoso.example", "Status": "{not json", "ResultType": "50126"});
        let e = one(&row.to_string()).expect("normalizes");
        assert_eq!(
            (e.kind, e.outcome, e.error.as_deref()),
            (EventKind::AuthFailure, Outcome::Failure, Some("50126"))
        );
        assert_eq!(e.identity_type, IdentityType::User);
    }

    // ---- audit logs ----

    /// "Update application – Certificates and secrets management" as an `AuditLogs` row, its
    /// dynamic columns as JSON strings: a password added to the application object, the app id in
    /// `AdditionalDetails` (Azure Monitor table reference, AuditLogs: `InitiatedBy`,
    /// `TargetResources`, `AdditionalDetails` are `dynamic`).
    fn secret_added_to_the_application() -> Value {
        let key = |id: &str| format!("[KeyIdentifier={id},KeyType=Password,KeyUsage=Verify,DisplayName=ClientSecret1]");
        let targets = json!([{
            "id": APP_OBJECT, "displayName": "Terraform-Datadog-CLI", "type": "Application", "administrativeUnits": [],
            "modifiedProperties": [
                {"displayName": "KeyDescription", "oldValue": json!([key("7dffcdc5-f2d5-43ae-86f1-682561befd4b")]).to_string(),
                 "newValue": json!([key("7dffcdc5-f2d5-43ae-86f1-682561befd4b"), key("91c6c5e1-83ec-4b80-8acd-c32ccf5c8a0c")]).to_string()},
                {"displayName": "Included Updated Properties", "oldValue": null, "newValue": "\"KeyDescription\""}
            ]
        }]);
        json!({
            "TenantId": WORKSPACE, "SourceSystem": "Azure AD", "TimeGenerated": "2024-06-22T12:42:13.1Z",
            "ResourceId": format!("/tenants/{TENANT}/providers/Microsoft.aadiam"),
            "OperationName": "Update application – Certificates and secrets management", "Category": "ApplicationManagement",
            "Result": "success", "AADTenantId": TENANT, "ActivityDisplayName": "Update application – Certificates and secrets management",
            "ActivityDateTime": "2024-06-22T12:42:12.764Z", "AADOperationType": "Update", "LoggedByService": "Core Directory",
            "Id": "Directory_0b3f8d5c-1f6b-4bbd-9a43-6f4a2c0e8d11_5TQXR_41234567",
            "InitiatedBy": json!({"user": {"id": "d7cd5a5a-1a8b-4c4c-9e1c-5a5b6a7a8b9c", "displayName": null,
                "userPrincipalName": "emilycline@contoso.example", "ipAddress": "138.199.55.183"}}).to_string(),
            "TargetResources": targets.to_string(),
            "AdditionalDetails": json!([{"key": "User-Agent", "value": "python-requests/2.31.0"}, {"key": "AppId", "value": APP}]).to_string(),
            "Type": "AuditLogs"
        })
    }

    #[test]
    fn a_secret_added_to_the_application_and_its_service_principal_sign_in_are_one_identity() {
        // Microsoft Entra security operations guide for applications: "application and service
        // principal updates are logged as two entries"; the application object and the service
        // principal share the app id, which the audit record carries in `AdditionalDetails`.
        check(
            &secret_added_to_the_application(),
            json!({"event_id": "Directory_0b3f8d5c-1f6b-4bbd-9a43-6f4a2c0e8d11_5TQXR_41234567",
                "time": "2024-06-22T12:42:12.764Z", "format": "entra_audit", "kind": "credential_change",
                "identity": APP, "identity_name": "Terraform-Datadog-CLI", "identity_type": "application",
                "tenant": TENANT, "initiator": "emilycline@contoso.example", "src_ip": "138.199.55.183",
                "outcome": "success", "credential_id": "91c6c5e1-83ec-4b80-8acd-c32ccf5c8a0c",
                "action": "Update application – Certificates and secrets management"}),
        );
        let sign_in = json!({"time": "2024-06-22T13:00:00Z", "category": "ServicePrincipalSignInLogs",
            "operationName": "Sign-in activity", "tenantId": TENANT, "resultType": "0",
            "properties": {"id": "s1", "createdDateTime": "2024-06-22T13:00:00+00:00", "appId": APP,
                "servicePrincipalId": SP, "servicePrincipalName": "Terraform-Datadog-CLI",
                "servicePrincipalCredentialKeyId": "91c6c5e1-83ec-4b80-8acd-c32ccf5c8a0c", "status": {"errorCode": 0}}});
        let used = one(&sign_in.to_string()).expect("normalizes");
        assert_eq!(used.identity, APP);
        assert_eq!(
            used.credential_id.as_deref(),
            Some("91c6c5e1-83ec-4b80-8acd-c32ccf5c8a0c")
        );
        // Without the app id the record names the application object only.
        let mut bare = secret_added_to_the_application();
        bare["AdditionalDetails"] = json!("[]");
        assert_eq!(one(&bare.to_string()).expect("normalizes").identity, APP_OBJECT);
    }

    #[test]
    fn dynamic_columns_read_the_same_as_objects_or_as_strings() {
        let mut objects = secret_added_to_the_application();
        for column in ["InitiatedBy", "TargetResources", "AdditionalDetails"] {
            let text = objects[column].as_str().expect("a string").to_owned();
            objects[column] = serde_json::from_str(&text).expect("JSON");
        }
        assert_eq!(
            one(&objects.to_string()).expect("normalizes"),
            one(&secret_added_to_the_application().to_string()).expect("normalizes")
        );
        let mut broken = secret_added_to_the_application();
        broken["InitiatedBy"] = json!("{\"user\": ");
        let error = one(&broken.to_string()).expect_err("malformed");
        assert_eq!(error.reason(), "wrong_type");
        assert!(error.to_string().contains("InitiatedBy"), "{error}");
    }

    /// "Consent to application" as Microsoft Sentinel's "End-user consent to app with mailbox and
    /// offline access delegated scopes" rule reads it: the `ServicePrincipal` target is the app,
    /// `ConsentAction.Permissions` reads `... => [[..., ConsentType: Principal, Scope: ...]]`,
    /// `TargetId.ServicePrincipalNames` starts with the app id.
    fn consent(permissions: &str) -> Value {
        json!({"time": "2024-06-22T12:51:15.0953467Z", "category": "AuditLogs", "operationName": "Consent to application",
            "tenantId": TENANT, "resultSignature": "None", "correlationId": "c0a8e6f1-7d1e-4a9b-8a53-02c4f1e0d9b2",
            "properties": {"id": "Directory_c0a8e6f1-7d1e-4a9b-8a53-02c4f1e0d9b2_ABCDE_1", "category": "ApplicationManagement",
                "result": "success", "activityDisplayName": "Consent to application",
                "activityDateTime": "2024-06-22T12:51:15Z", "loggedByService": "Core Directory", "operationType": "Assign",
                "initiatedBy": {"user": {"id": "5f0e8a7c-6d3b-4c2a-9e1f-0a1b2c3d4e5f", "userPrincipalName": "henriettam@contoso.example", "ipAddress": "40.76.97.127"}},
                "targetResources": [{"id": SP, "displayName": "Intune App", "type": "ServicePrincipal", "modifiedProperties": [
                    {"displayName": "ConsentContext.IsAdminConsent", "oldValue": null, "newValue": "\"False\""},
                    {"displayName": "ConsentContext.OnBehalfOfAll", "oldValue": null, "newValue": "\"False\""},
                    {"displayName": "ConsentAction.Permissions", "oldValue": null, "newValue": serde_json::to_string(permissions).expect("a string")},
                    {"displayName": "TargetId.ServicePrincipalNames", "oldValue": null, "newValue": format!("\"{APP}\"")}
                ]}],
                "additionalDetails": [{"key": "User-Agent", "value": "Mozilla/5.0"}]}})
    }

    #[test]
    fn a_consent_is_a_permission_grant_to_the_consented_app() {
        let permissions = format!(
            "[] => [[Id: 3mP1x, ClientId: {SP}, PrincipalId: 5f0e8a7c-6d3b-4c2a-9e1f-0a1b2c3d4e5f, \
             ResourceId: {GRAPH_SP}, ConsentType: Principal, Scope:  User.Read Mail.ReadWrite offline_access, \
             CreatedDateTime: , LastModifiedDateTime ]]; "
        );
        check(
            &consent(&permissions),
            json!({"event_id": "Directory_c0a8e6f1-7d1e-4a9b-8a53-02c4f1e0d9b2_ABCDE_1", "time": "2024-06-22T12:51:15Z",
                "format": "entra_audit", "kind": "permission_grant", "identity": APP, "identity_name": "Intune App",
                "identity_type": "application", "tenant": TENANT, "initiator": "henriettam@contoso.example",
                "scopes": ["Mail.ReadWrite", "User.Read", "offline_access"], "src_ip": "40.76.97.127",
                "outcome": "success", "action": "Consent to application"}),
        );
        // A consent that widens an earlier grant adds only what was not granted before.
        let widened = format!(
            "[[Id: 3mP1x, ClientId: {SP}, ConsentType: Principal, Scope: User.Read openid]] => \
             [[Id: 3mP1x, ClientId: {SP}, ConsentType: Principal, Scope: User.Read openid Mail.Send]]; "
        );
        let e = one(&consent(&widened).to_string()).expect("normalizes");
        assert_eq!(e.scopes, vec![Scope::parse("Mail.Send")]);
    }

    /// "Add delegated permission grant": the target carrying `DelegatedPermissionGrant.Scope` is
    /// the resource (Microsoft Graph), the client is `ServicePrincipal.ObjectID` and the second
    /// `ServicePrincipal` target, without display name or properties (Microsoft Sentinel "Mail.Read
    /// Permissions Granted to Application" skips it for that reason). The scope value starts with
    /// a space, as Entra writes it.
    fn delegated_grant(client_app_id: Option<&str>) -> Value {
        let targets = json!([
            {"id": GRAPH_SP, "displayName": "Microsoft Graph", "type": "ServicePrincipal", "modifiedProperties": [
                {"displayName": "DelegatedPermissionGrant.Scope", "oldValue": null, "newValue": "\" User.Read, Mail.Send openid\""},
                {"displayName": "DelegatedPermissionGrant.ConsentType", "oldValue": null, "newValue": "\"AllPrincipals\""},
                {"displayName": "ServicePrincipal.ObjectID", "oldValue": null, "newValue": format!("\"{SP}\"")},
                {"displayName": "ServicePrincipal.DisplayName", "oldValue": null, "newValue": null},
                {"displayName": "ServicePrincipal.AppId", "oldValue": null, "newValue": client_app_id.map(|a| format!("\"{a}\""))},
                {"displayName": "TargetId.ServicePrincipalNames", "oldValue": null,
                 "newValue": format!("\"{GRAPH_APP}/ags.windows.net;{GRAPH_APP};https://graph.microsoft.com\"")}
            ]},
            {"id": SP, "displayName": null, "type": "ServicePrincipal", "modifiedProperties": []}
        ]);
        json!({"TimeGenerated": "2024-06-22T12:51:15.2Z", "OperationName": "Add delegated permission grant",
            "Category": "ApplicationManagement", "Result": "success", "AADTenantId": TENANT,
            "ActivityDateTime": "2024-06-22T12:51:15Z", "Id": "Directory_c0a8e6f1-7d1e-4a9b-8a53-02c4f1e0d9b2_ABCDE_2",
            "InitiatedBy": json!({"user": {"userPrincipalName": "admin@contoso.example", "ipAddress": "40.76.97.127"}}).to_string(),
            "TargetResources": targets.to_string(), "AdditionalDetails": "[]", "Type": "AuditLogs"})
    }

    #[test]
    fn a_delegated_grant_is_on_the_client_not_on_microsoft_graph() {
        let expected = |identity: &str| {
            json!({"event_id": "Directory_c0a8e6f1-7d1e-4a9b-8a53-02c4f1e0d9b2_ABCDE_2", "time": "2024-06-22T12:51:15Z",
                "format": "entra_audit", "kind": "permission_grant", "identity": identity,
                "identity_type": "application", "tenant": TENANT, "initiator": "admin@contoso.example",
                "scopes": ["Mail.Send", "User.Read", "openid"], "src_ip": "40.76.97.127", "outcome": "success",
                "action": "Add delegated permission grant"})
        };
        // `ServicePrincipal.AppId` empty: the record names the client by its object id only.
        check(&delegated_grant(None), expected(SP));
        check(&delegated_grant(Some(APP)), expected(APP));
    }

    #[test]
    fn an_app_role_assignment_to_a_service_principal_grants_the_role_to_the_client() {
        // Microsoft Entra security operations guide for applications: "Add app role assignment
        // to service principal" where `AppRole.Value` is the application permission; Microsoft
        // Sentinel "Microsoft Entra ID Role Management Permission Grant" reads the client from
        // `ServicePrincipal.ObjectID` / `ServicePrincipal.DisplayName` of the same target.
        let record = json!({"time": "2024-06-22T12:51:15Z", "category": "AuditLogs", "tenantId": TENANT,
        "operationName": "Add app role assignment to service principal",
        "properties": {"id": "Directory_r1", "result": "success", "activityDateTime": "2024-06-22T12:51:15Z",
            "activityDisplayName": "Add app role assignment to service principal",
            "initiatedBy": {"user": {"userPrincipalName": "henriettam@contoso.example"}},
            "targetResources": [{"id": GRAPH_SP, "displayName": "Microsoft Graph", "type": "ServicePrincipal", "modifiedProperties": [
                {"displayName": "AppRole.Id", "oldValue": null, "newValue": "\"243333ab-4d21-40cb-a475-36241daa0842\""},
                {"displayName": "AppRole.Value", "oldValue": null, "newValue": "\"DeviceManagementManagedDevices.ReadWrite.All\""},
                {"displayName": "ServicePrincipal.ObjectID", "oldValue": null, "newValue": format!("\"{SP}\"")},
                {"displayName": "ServicePrincipal.DisplayName", "oldValue": null, "newValue": "\"Intune App\""},
                {"displayName": "ServicePrincipal.AppId", "oldValue": null, "newValue": format!("\"{APP}\"")},
                {"displayName": "TargetId.ServicePrincipalNames", "oldValue": null, "newValue": format!("\"{GRAPH_APP}\"")}
            ]}]}});
        check(
            &record,
            json!({"event_id": "Directory_r1", "time": "2024-06-22T12:51:15Z", "format": "entra_audit",
                "kind": "permission_grant", "identity": APP, "identity_name": "Intune App", "identity_type": "application",
                "tenant": TENANT, "initiator": "henriettam@contoso.example",
                "scopes": ["DeviceManagementManagedDevices.ReadWrite.All"], "outcome": "success",
                "action": "Add app role assignment to service principal"}),
        );
    }

    #[test]
    fn a_person_assigned_to_an_app_is_a_person() {
        // "Add app role assignment grant to user": the target is the app, `User.UPN` the person.
        let record = json!({"activityDateTime": "2024-12-24T10:24:24Z", "activityDisplayName": "Add app role assignment grant to user",
        "category": "UserManagement", "id": "Directory_u1", "result": "success",
        "initiatedBy": {"user": {"userPrincipalName": "admin@contoso.example"}},
        "targetResources": [{"id": SP, "displayName": "Microsoft Graph Command Line Tools", "type": "ServicePrincipal", "modifiedProperties": [
            {"displayName": "AppRole.Id", "oldValue": null, "newValue": "\"00000000-0000-0000-0000-000000000000\""},
            {"displayName": "User.ObjectID", "oldValue": null, "newValue": "\"d7cd5a5a-1a8b-4c4c-9e1c-5a5b6a7a8b9c\""},
            {"displayName": "User.UPN", "oldValue": null, "newValue": "\"emilycline@contoso.example\""},
            {"displayName": "TargetId.ServicePrincipalNames", "oldValue": null, "newValue": "\"14d82eec-204b-4c2f-b7e8-296a70dab67e\""}
        ]}]});
        check(
            &record,
            json!({"event_id": "Directory_u1", "time": "2024-12-24T10:24:24Z", "format": "entra_audit", "kind": "admin",
                "identity": "emilycline@contoso.example", "identity_type": "user", "initiator": "admin@contoso.example",
                "outcome": "success", "action": "Add app role assignment grant to user"}),
        );
    }

    #[test]
    fn graph_directory_audits_read_like_the_diagnostic_body() {
        // Microsoft Graph directoryAudit resource: camelCase, no envelope, no tenant.
        let record = json!({"id": "Directory_g1", "category": "ApplicationManagement", "activityDateTime": "2022-01-22T18:15:02Z",
            "activityDisplayName": "Add service principal credentials", "loggedByService": "Core Directory", "result": "success",
            "initiatedBy": {"app": {"appId": null, "displayName": "Managed Service Identity",
                "servicePrincipalId": "b9814691-9ca1-4e55-a1ac-8ef5dd010ec0", "servicePrincipalName": null}},
            "targetResources": [{"id": "a7d5dcbe-0627-4ddf-a2f4-86b6785bcc42", "displayName": "billing-test-wus",
                "type": "ServicePrincipal", "modifiedProperties": [
                {"displayName": "TargetId.ServicePrincipalNames", "oldValue": null,
                 "newValue": "\"a70a7931-c387-4dce-9f35-fbf95bdcc91e;https://identity.azure.net/N8CUySpCeRFU3iB=\""}]}],
            "additionalDetails": []});
        check(
            &record,
            json!({"event_id": "Directory_g1", "time": "2022-01-22T18:15:02Z", "format": "entra_audit",
                "kind": "credential_change", "identity": "a70a7931-c387-4dce-9f35-fbf95bdcc91e",
                "identity_name": "billing-test-wus", "identity_type": "application",
                "initiator": "b9814691-9ca1-4e55-a1ac-8ef5dd010ec0", "outcome": "success",
                "action": "Add service principal credentials"}),
        );
    }

    #[test]
    fn odd_records_are_refused_with_the_field_they_lack() {
        let reason = |record: Value| -> String {
            match one(&record.to_string()) {
                Ok(e) => format!("ok {}", e.identity),
                Err(e) => format!("{}: {e}", e.reason()),
            }
        };
        assert_eq!(
            reason(json!({"TimeGenerated": "yesterday", "Type": "AuditLogs", "OperationName": "x"})),
            "bad_timestamp: entra_audit: field `TimeGenerated` is not a valid timestamp"
        );
        // Dynamic columns of the wrong shape are read as absent, not trusted.
        assert_eq!(
            reason(
                json!({"TimeGenerated": "2024-01-01T00:00:00Z", "Type": "AuditLogs", "OperationName": "Update device",
                "InitiatedBy": "[]", "TargetResources": "42"})
            ),
            "missing_field: entra_audit: missing field `initiatedBy`"
        );
        assert_eq!(
            reason(json!({"TimeGenerated": "2024-01-01T00:00:00Z", "Type": "SigninLogs", "ResultType": "0"})),
            "missing_field: entra_signin: missing field `UserPrincipalName`"
        );
        assert_eq!(
            reason(json!({"TimeGenerated": "2024-01-01T00:00:00Z", "Type": "AuditLogs",
                "OperationName": "Add delegated permission grant", "TargetResources": [{"type": "ServicePrincipal", "id": SP}]})),
            "missing_field: entra_audit: missing field `targetResources.modifiedProperties.DelegatedPermissionGrant.Scope`"
        );
        // One event type given as a string rather than a list.
        assert_eq!(
            reason(
                json!({"createdDateTime": "2024-01-01T00:00:00Z", "appId": APP, "servicePrincipalId": SP,
                "signInEventTypes": "servicePrincipal", "status": {"errorCode": "0"}})
            ),
            format!("ok {APP}")
        );
    }

    // ---- helpers ----

    #[test]
    fn scopes_split_on_spaces_without_stray_commas_or_quotes() {
        let tokens: Vec<&str> = scope_tokens(" User.Read,  Mail.Send \"openid\",").collect();
        assert_eq!(tokens, ["User.Read", "Mail.Send", "openid"]);
        assert!(consent_scopes("[] => []").is_empty());
    }

    #[test]
    fn app_ids_are_guids() {
        assert!(is_guid(GRAPH_APP));
        assert!(!is_guid("id"));
        assert!(!is_guid("0f1e2d3c-fhir-api0-0000-000000000001"));
        assert_eq!(
            first_guid(&format!("{GRAPH_APP}/ags.windows.net;https://graph.microsoft.com")),
            Some(GRAPH_APP)
        );
        assert_eq!(first_guid("ünïcode;no guid here at all, really none"), None);
    }

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
