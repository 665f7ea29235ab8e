//! Rendering generated activity in the real wire formats: BALP `AuditEvent`s, gateway access
//! lines, Okta System Log events, Keycloak event JSON, Entra ID sign-in and audit records and
//! Google Cloud Audit Log entries, each in the shape the vendor documents:
//!
//! | source | shapes | documented by |
//! |---|---|---|
//! | Entra ID sign-ins | diagnostic settings (`ServicePrincipalSignInLogs`, `SignInLogs` envelope around camelCase `properties`) or, per integration, Log Analytics rows (`AADServicePrincipalSignInLogs`, `SigninLogs`: PascalCase columns, `Type`) | Azure Monitor Logs table reference; the `elastic-azure-*` and `msticpy-aad-signinlogs` samples |
//! | Entra ID audit | the same two shapes (`AuditLogs`); a row's dynamic columns (`InitiatedBy`, `TargetResources`, `AdditionalDetails`) as JSON or as strings of JSON, column by column | as above; Microsoft Entra security operations guide for applications (grant operations) |
//! | Okta | System Log `LogEvent`: client-credentials grants (`PublicClientApp` actor), consent grants (`ConsentGrant` targets), people's `user.session.start` and `user.authentication.sso` (`User` actor); `client.ipAddress` null now and then | Okta System Log API, event types catalog |
//! | Keycloak | event-listener JSON: `CLIENT_LOGIN` (client credentials), a person's `LOGIN` / `LOGIN_ERROR` (`userId`, `details.username`) to a web client | Keycloak `EventRepresentation` |
//! | Google Cloud | Cloud Audit Logs `LogEntry`: `GenerateAccessToken` on `iamcredentials.googleapis.com`, `google.iam.admin.v1.CreateServiceAccountKey`, `SetIamPolicy` with its `policyDelta`; `callerIp` `private` / `gce-internal-ip` for calls from Google's network | Cloud Audit Logs `AuditLog`, IAM audit logging; the `elastic-gcp-audit` sample |

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Value, json};

use super::{Archetype, DataKind, GCP_PROJECT, Gen, REALM, TENANT, WORKSPACE, uuid_of};

/// A resource app in Entra: the API a client gets a role on.
pub(super) struct Resource {
    /// Its app id (`appId`, the `ResourceIdentity` of a sign-in to it).
    pub app_id: &'static str,
    /// Its service principal's object id in the tenant.
    pub object_id: &'static str,
    pub name: &'static str,
}

/// Microsoft Graph: its app id is Microsoft's, the same in every tenant.
pub(super) const GRAPH: Resource = Resource {
    app_id: "00000003-0000-0000-c000-000000000000",
    object_id: "9b1e6f2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
    name: "Microsoft Graph",
};

/// The hospital's FHIR API, registered in Entra with the SMART scopes as its app roles (app role
/// values may hold `/` and `*`: Microsoft Graph `appRole.value`).
pub(super) const FHIR_API: Resource = Resource {
    app_id: "0f1e2d3c-7a4b-4f0e-9c1d-2b3a4c5d6e7f",
    object_id: "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f",
    name: "FHIR API",
};

/// The web front end of the EHR people sign in to (Entra app id, Keycloak client).
const EHR_WEB: (&str, &str) = ("4e5f6a7b-8c9d-4e0f-a1b2-c3d4e5f6a7b8", "ehr-web");

/// First-party Microsoft apps people sign in to: (app id, name), Microsoft's ids.
const MICROSOFT_APPS: [(&str, &str); 3] = [
    ("1fec8e78-bce4-4aaf-ab1b-5451cc387264", "Microsoft Teams"),
    ("d3590ed6-52b3-4102-aeff-aad2292ab01c", "Microsoft Office"),
    ("c44b4083-3bb0-49c1-b47d-974e53cbdf3c", "Azure Portal"),
];

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn patient(g: &mut Gen) -> String {
    format!("pt-{:05}", g.rng.random_range(0..20_000))
}

fn patients(g: &mut Gen, n: u32) -> Vec<String> {
    let mut set: Vec<String> = (0..n).map(|_| patient(g)).collect();
    set.sort();
    set.dedup();
    set
}

/// Entra's timestamps: seven fractional digits.
fn entra_time(t: DateTime<Utc>, zone: &str) -> String {
    format!(
        "{}.{:07}{zone}",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.timestamp_subsec_nanos() / 100
    )
}

fn to_line(v: &Value) -> String {
    serde_json::to_string(v).expect("JSON values serialize")
}

/// A FHIR resource as FHIR servers write it, `resourceType` first (a `serde_json` map would
/// sort it among the other keys), as in the IHE examples.
fn fhir_line(mut resource: Value) -> String {
    let Some(kind) = resource.as_object_mut().and_then(|o| o.remove("resourceType")) else {
        return to_line(&resource);
    };
    let rest = to_line(&resource);
    match rest.strip_prefix('{').filter(|r| *r != "}") {
        Some(members) => format!("{{\"resourceType\":{},{members}", to_line(&kind)),
        None => format!("{{\"resourceType\":{}}}", to_line(&kind)),
    }
}

/// An Okta client-credentials token grant (or its failure).
pub(super) fn okta_token(g: &mut Gen, i: usize, at: DateTime<Utc>, ip: &str, scope: &str, ok: bool) -> String {
    let id = &g.ids[i];
    let (client, name, ua) = (id.client_id.clone(), id.name.clone(), id.user_agent.clone());
    let uuid = g.uuid();
    let outcome = if ok {
        json!({"result": "SUCCESS", "reason": null})
    } else {
        json!({"result": "FAILURE", "reason": "invalid_client"})
    };
    let mut debug =
        json!({"grantType": "client_credentials", "requestedScopes": scope, "requestUri": "/oauth2/default/v1/token"});
    let mut target = vec![
        json!({"id": "aus1default", "type": "AuthorizationServer", "alternateId": "default", "displayName": "default"}),
    ];
    if ok {
        debug["grantedScopes"] = json!(scope);
        // The token granted, as Okta names it: its id (derived from the event, so the generator
        // draws nothing more from its random stream) and a one-hour lifetime.
        target.push(json!({
            "id": format!("AT.{}", uuid.replace('-', "")), "type": "access_token", "displayName": "Access Token",
            "detailEntry": {"expires": ts(at + chrono::Duration::hours(1)), "subject": client},
        }));
    }
    // Okta leaves `client.ipAddress` null when it has no address to give.
    let ip = if g.shape.random_bool(0.01) {
        Value::Null
    } else {
        json!(ip)
    };
    to_line(&json!({
        "uuid": uuid, "published": ts(at), "eventType": "app.oauth2.as.token.grant.access_token",
        "version": "0", "severity": if ok { "INFO" } else { "WARN" },
        "displayMessage": "OAuth2 access token is granted",
        "actor": {"id": client, "type": "PublicClientApp", "alternateId": client, "displayName": name},
        "client": {"ipAddress": ip, "userAgent": {"rawUserAgent": ua}},
        "outcome": outcome,
        "debugContext": {"debugData": debug},
        "target": target,
    }))
}

/// A Keycloak `CLIENT_LOGIN` (client credentials) event, or `CLIENT_LOGIN_ERROR`.
pub(super) fn keycloak_token(g: &mut Gen, i: usize, at: DateTime<Utc>, ip: &str, scope: &str, ok: bool) -> String {
    let client = g.ids[i].client_id.clone();
    let uuid = g.uuid();
    let service_user = g.uuid();
    let mut v = json!({
        "id": uuid, "time": at.timestamp_millis(), "type": if ok { "CLIENT_LOGIN" } else { "CLIENT_LOGIN_ERROR" },
        "realmId": REALM, "clientId": client, "userId": if ok { Value::from(service_user) } else { Value::Null },
        "ipAddress": ip,
        "details": {"grant_type": "client_credentials", "scope": scope, "client_auth_method": "client-secret"},
    });
    if !ok {
        v["error"] = json!("invalid_client_credentials");
    }
    to_line(&v)
}

/// An Entra service-principal sign-in (client credentials to the FHIR API), in the integration's
/// shape: a diagnostic-settings record or an `AADServicePrincipalSignInLogs` row (Azure Monitor
/// table reference: no `CreatedDateTime`, no `Status`, no `AADTenantId`; `ResourceIdentity` is the
/// resource signed in to, `TenantId` the workspace).
pub(super) fn entra_signin(g: &mut Gen, i: usize, at: DateTime<Utc>, ip: &str, ok: bool) -> String {
    let (app, principal, name, table) = g.ids[i].entra();
    let key = g.ids[i].key_id.clone();
    let uuid = g.uuid();
    let correlation = g.uuid();
    // AADSTS7000215: invalid client secret.
    let code = if ok { 0 } else { 7_000_215 };
    let description = if ok {
        String::new()
    } else {
        format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, \
             not the client secret ID, for a secret added to app '{app}'."
        )
    };
    if !table {
        return to_line(&json!({
            "time": entra_time(at, "Z"), "resourceId": format!("/tenants/{TENANT}/providers/Microsoft.aadiam"),
            "operationName": "Sign-in activity", "operationVersion": "1.0", "category": "ServicePrincipalSignInLogs",
            "tenantId": TENANT, "resultType": code.to_string(), "resultSignature": "None", "durationMs": 0,
            "callerIpAddress": ip, "correlationId": correlation, "Level": 4,
            "properties": {
                "id": uuid, "createdDateTime": entra_time(at, "+00:00"),
                "appId": app, "servicePrincipalId": principal, "servicePrincipalName": name,
                "ipAddress": ip, "status": {"errorCode": code},
                "resourceDisplayName": FHIR_API.name, "resourceId": FHIR_API.app_id,
                "servicePrincipalCredentialKeyId": key, "isInteractive": false, "tokenIssuerType": "AzureAD",
            },
        }));
    }
    // A workload inside Azure signs in now and then without an address the row can give.
    let ip = if g.shape.random_bool(0.01) { "" } else { ip };
    let location = json!({"city": "", "state": "", "countryOrRegion": "", "geoCoordinates": {}});
    to_line(&json!({
        "TenantId": WORKSPACE, "SourceSystem": "Azure AD", "TimeGenerated": entra_time(at, "Z"),
        "OperationName": "Sign-in activity", "OperationVersion": "1.0", "Category": "ServicePrincipalSignInLogs",
        "ResultType": code.to_string(), "ResultSignature": if ok { "SUCCESS" } else { "FAILURE" },
        "ResultDescription": description, "DurationMs": 0, "CorrelationId": correlation, "Level": "4",
        "Location": "", "AppId": app, "AuthenticationProcessingDetails": "[]",
        "ConditionalAccessPolicies": "[]", "ConditionalAccessStatus": "notApplied", "FederatedCredentialId": "",
        "Id": uuid, "IPAddress": ip, "LocationDetails": dynamic(g, location),
        "ResourceDisplayName": FHIR_API.name, "ResourceIdentity": FHIR_API.app_id,
        "ResourceServicePrincipalId": FHIR_API.object_id, "ServicePrincipalCredentialKeyId": key,
        "ServicePrincipalCredentialThumbprint": "", "ServicePrincipalId": principal, "ServicePrincipalName": name,
        "Type": "AADServicePrincipalSignInLogs",
    }))
}

/// A Log Analytics `dynamic` column as exports write it: the JSON itself, or a string holding it.
fn dynamic(g: &mut Gen, v: Value) -> Value {
    if g.shape.random_bool(0.5) {
        Value::String(to_line(&v))
    } else {
        v
    }
}

/// An Entra audit record, named as Microsoft Graph's `directoryAudit` names it.
struct Audit {
    id: String,
    correlation: String,
    operation: &'static str,
    /// The audit category (`ApplicationManagement`, ...).
    category: &'static str,
    operation_type: &'static str,
    initiated_by: Value,
    /// Name of who initiated it (the `identity` of the envelope or row).
    initiator_name: String,
    caller_ip: String,
    targets: Value,
    details: Value,
}

/// An Entra audit record in the shape `table` says: the diagnostic-settings envelope around the
/// camelCase record, or an `AuditLogs` row (Azure Monitor table reference: `AADTenantId` is the
/// directory, `TenantId` the workspace, `ActivityDateTime` when the activity was performed and
/// `TimeGenerated` when the row was made, a moment later; dynamic columns as JSON or as strings).
fn entra_audit(g: &mut Gen, table: bool, at: DateTime<Utc>, a: Audit) -> String {
    if !table {
        return to_line(&json!({
            "time": entra_time(at, "Z"), "resourceId": format!("/tenants/{TENANT}/providers/Microsoft.aadiam"),
            "operationName": a.operation, "operationVersion": "1.0", "category": "AuditLogs", "tenantId": TENANT,
            "resultSignature": "None", "durationMs": 0, "callerIpAddress": a.caller_ip, "correlationId": a.correlation,
            "identity": a.initiator_name, "Level": 4,
            "properties": {
                "id": a.id, "category": a.category, "correlationId": a.correlation, "result": "success",
                "resultReason": "", "activityDisplayName": a.operation, "activityDateTime": entra_time(at, "+00:00"),
                "loggedByService": "Core Directory", "operationType": a.operation_type, "userAgent": null,
                "initiatedBy": a.initiated_by, "targetResources": a.targets, "additionalDetails": a.details,
            },
        }));
    }
    let generated = at + chrono::Duration::milliseconds(g.shape.random_range(300..4000));
    to_line(&json!({
        "TenantId": WORKSPACE, "SourceSystem": "Azure AD", "TimeGenerated": entra_time(generated, "Z"),
        "ResourceId": format!("/tenants/{TENANT}/providers/Microsoft.aadiam"), "OperationName": a.operation,
        "OperationVersion": "1.0", "Category": a.category, "ResultType": "", "ResultSignature": "None",
        "ResultDescription": "", "DurationMs": 0, "CorrelationId": a.correlation, "Resource": "Microsoft.aadiam",
        "ResourceGroup": "Microsoft.aadiam", "ResourceProvider": "", "Identity": a.initiator_name, "Level": "4",
        "Location": "", "AdditionalDetails": dynamic(g, a.details), "Id": a.id,
        "InitiatedBy": dynamic(g, a.initiated_by), "LoggedByService": "Core Directory", "Result": "success",
        "ResultReason": "", "TargetResources": dynamic(g, a.targets), "AADTenantId": TENANT,
        "ActivityDisplayName": a.operation, "ActivityDateTime": entra_time(at, "Z"),
        "AADOperationType": a.operation_type, "Type": "AuditLogs",
    }))
}

/// The admin who changes the directory in the generated tenant.
fn entra_admin(admin: &str) -> Value {
    json!({"user": {"id": admin, "displayName": null, "userPrincipalName": "it-admin@example.org",
        "ipAddress": "192.0.2.45", "roles": []}})
}

/// `[{"key": "User-Agent", ...}, {"key": "AppId", "value": <the target's app id>}]`, as Entra
/// writes `additionalDetails` for an operation on an app.
fn app_details(app_id: &str) -> Value {
    json!([{"key": "User-Agent", "value": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"},
        {"key": "AppId", "value": app_id}])
}

/// An Entra audit record: a client secret added to the identity's service principal ("Add
/// service principal credentials"), the app id in `additionalDetails` and, now and then, in
/// `TargetId.ServicePrincipalNames` too, as Entra writes them (the `elastic-azure-auditlogs`
/// sample).
pub(super) fn entra_credential_added(g: &mut Gen, i: usize, at: DateTime<Utc>, new_key: &str) -> String {
    let (app, principal, name, table) = g.ids[i].entra();
    let old_key = g.ids[i].key_id.clone();
    let uuid = g.uuid();
    let admin = g.uuid();
    let describe = |k: &str| format!("[KeyIdentifier={k},KeyType=Password,KeyUsage=Verify,DisplayName=rotation]");
    let mut properties = vec![
        json!({"displayName": "KeyDescription",
            "oldValue": to_line(&json!([describe(&old_key)])),
            "newValue": to_line(&json!([describe(&old_key), describe(new_key)]))}),
        json!({"displayName": "Included Updated Properties", "oldValue": null, "newValue": "\"KeyDescription\""}),
    ];
    if g.shape.random_bool(0.5) {
        properties.push(
            json!({"displayName": "TargetId.ServicePrincipalNames", "oldValue": null,
            "newValue": to_line(&json!(app))}),
        );
    }
    let correlation = uuid_of(&mut g.shape);
    let audit = Audit {
        id: format!("Directory_{uuid}"),
        correlation,
        operation: "Add service principal credentials",
        category: "ApplicationManagement",
        operation_type: "Update",
        initiated_by: entra_admin(&admin),
        initiator_name: "it-admin@example.org".into(),
        caller_ip: "192.0.2.45".into(),
        targets: json!([{"id": principal, "displayName": name, "type": "ServicePrincipal",
            "modifiedProperties": properties, "administrativeUnits": []}]),
        details: app_details(&app),
    };
    entra_audit(g, table, at, audit)
}

/// "Add app role assignment to service principal": the identity's service principal is given
/// `role` on `resource` (Microsoft Entra security operations guide for applications: the target
/// is the resource, `AppRole.Value` the role, `ServicePrincipal.*` the client).
pub(super) fn entra_app_role_granted(
    g: &mut Gen,
    i: usize,
    at: DateTime<Utc>,
    resource: &Resource,
    role: &str,
) -> String {
    let (app, principal, name, table) = g.ids[i].entra();
    let r = &mut g.shape;
    let (uuid, correlation, admin, role_id, assignment) = (uuid_of(r), uuid_of(r), uuid_of(r), uuid_of(r), uuid_of(r));
    let quoted = |v: &str| to_line(&json!(v));
    let property = |name: &str, value: String| json!({"displayName": name, "oldValue": null, "newValue": value});
    let audit = Audit {
        id: format!("Directory_{uuid}_{}", &assignment[..5]),
        correlation,
        operation: "Add app role assignment to service principal",
        category: "ApplicationManagement",
        operation_type: "Assign",
        initiated_by: entra_admin(&admin),
        initiator_name: "it-admin@example.org".into(),
        caller_ip: "192.0.2.45".into(),
        targets: json!([{"id": resource.object_id, "displayName": resource.name, "type": "ServicePrincipal",
            "administrativeUnits": [], "modifiedProperties": [
            property("AppRole.Id", quoted(&role_id)),
            property("AppRole.Value", quoted(role)),
            property("AppRoleAssignment.CreatedDateTime", quoted(&ts(at))),
            property("AppRoleAssignment.LastModifiedDateTime", quoted(&ts(at))),
            property("ServicePrincipal.ObjectID", quoted(&principal)),
            property("ServicePrincipal.DisplayName", quoted(&name)),
            property("ServicePrincipal.AppId", quoted(&app)),
            property("ServicePrincipal.Name", quoted(&app)),
            property("TargetId.ServicePrincipalNames", quoted(resource.app_id)),
        ]}]),
        details: json!([{"key": "User-Agent", "value": "Microsoft Azure Graph Client Library 1.0"}]),
    };
    entra_audit(g, table, at, audit)
}

/// "Consent to application": an admin's consent for the whole tenant to the identity's app, as
/// the portal's "Grant admin consent" records it for an app with application permissions only
/// (`ConsentAction.Permissions` lists no delegated scope; the app roles follow as their own
/// records).
pub(super) fn entra_admin_consent(g: &mut Gen, i: usize, at: DateTime<Utc>) -> String {
    let (app, principal, name, table) = g.ids[i].entra();
    let r = &mut g.shape;
    let (uuid, correlation, admin) = (uuid_of(r), uuid_of(r), uuid_of(r));
    let permissions = format!(
        "[] => [[Id: {}, ClientId: {principal}, PrincipalId: , ResourceId: {}, ConsentType: AllPrincipals, \
         Scope: , CreatedDateTime: , LastModifiedDateTime ]]; ",
        &uuid[..12],
        FHIR_API.object_id
    );
    let property = |name: &str, value: String| json!({"displayName": name, "oldValue": null, "newValue": value});
    let audit = Audit {
        id: format!("Directory_{uuid}"),
        correlation,
        operation: "Consent to application",
        category: "ApplicationManagement",
        operation_type: "Assign",
        initiated_by: entra_admin(&admin),
        initiator_name: "it-admin@example.org".into(),
        caller_ip: "192.0.2.45".into(),
        targets: json!([{"id": principal, "displayName": name, "type": "ServicePrincipal", "administrativeUnits": [],
            "modifiedProperties": [
            property("ConsentContext.IsAdminConsent", "\"True\"".into()),
            property("ConsentContext.IsAppOnly", "\"False\"".into()),
            property("ConsentContext.OnBehalfOfAll", "\"True\"".into()),
            property("ConsentContext.Tags", "\"WindowsAzureActiveDirectoryIntegratedApp\"".into()),
            property("ConsentAction.Permissions", to_line(&json!(permissions))),
            property("TargetId.ServicePrincipalNames", to_line(&json!(app))),
        ]}]),
        details: app_details(&app),
    };
    entra_audit(g, table, at, audit)
}

/// A person's sign-in to an app: a Microsoft app, the EHR's web front end or an integration's
/// app (`app`), as a `SigninLogs` row (the `msticpy-aad-signinlogs` shape) or a diagnostic
/// `SignInLogs` record, either now and then. AADSTS50126: invalid username or password.
pub(super) fn entra_user_signin(g: &mut Gen, p: usize, at: DateTime<Utc>, ok: bool, app: Option<usize>) -> String {
    let person = g.people[p].clone();
    let (app_id, app_name) = match app {
        Some(i) => (g.ids[i].client_id.clone(), g.ids[i].name.clone()),
        None => {
            let (id, name) = match g.people_rng.random_range(0..5) {
                0..=1 => EHR_WEB,
                n => MICROSOFT_APPS[n - 2],
            };
            (id.to_owned(), name.to_owned())
        }
    };
    let (resource_id, resource) = if app.is_some() || app_id == EHR_WEB.0 {
        (FHIR_API.app_id, FHIR_API.name)
    } else {
        (GRAPH.app_id, GRAPH.name)
    };
    let r = &mut g.people_rng;
    let (uuid, correlation) = (uuid_of(r), uuid_of(r));
    let table = r.random_bool(0.5);
    let code = if ok { 0 } else { 50_126 };
    let reason = if ok {
        ""
    } else {
        "Error validating credentials due to invalid username or password."
    };
    let status = if ok {
        json!({"errorCode": 0})
    } else {
        json!({"errorCode": code, "failureReason": reason})
    };
    let device = json!({"deviceId": "", "operatingSystem": "Windows 10", "browser": "Edge 124.0.0"});
    if !table {
        return to_line(&json!({
            "time": entra_time(at, "Z"), "resourceId": format!("/tenants/{TENANT}/providers/Microsoft.aadiam"),
            "operationName": "Sign-in activity", "operationVersion": "1.0", "category": "SignInLogs", "tenantId": TENANT,
            "resultType": code.to_string(), "resultSignature": "None", "resultDescription": reason, "durationMs": 0,
            "callerIpAddress": person.ip, "correlationId": correlation, "identity": person.display, "Level": 4,
            "location": "US",
            "properties": {
                "id": uuid, "createdDateTime": entra_time(at, "+00:00"), "userDisplayName": person.display,
                "userPrincipalName": person.upn, "userId": person.entra_id, "appId": app_id,
                "appDisplayName": app_name, "ipAddress": person.ip, "status": status, "clientAppUsed": "Browser",
                "userAgent": person.user_agent, "deviceDetail": device, "correlationId": correlation,
                "conditionalAccessStatus": "notApplied", "isInteractive": true, "tokenIssuerType": "AzureAD",
                "authenticationRequirement": "singleFactorAuthentication",
                "resourceDisplayName": resource, "resourceId": resource_id,
            },
        }));
    }
    // Two `json!` halves: one would exceed the macro's recursion limit.
    let mut row = json!({
        "TenantId": WORKSPACE, "SourceSystem": "Azure AD", "TimeGenerated": entra_time(at, "Z"),
        "ResourceId": format!("/tenants/{TENANT}/providers/Microsoft.aadiam"), "OperationName": "Sign-in activity",
        "OperationVersion": "1.0", "Category": "SignInLogs", "ResultType": code.to_string(), "ResultSignature": "None",
        "ResultDescription": reason, "DurationMs": 0, "CorrelationId": correlation, "Resource": "Microsoft.aadiam",
        "ResourceGroup": "Microsoft.aadiam", "ResourceProvider": "", "Identity": person.display, "Level": "4",
        "Location": "US", "AlternateSignInName": "", "AppDisplayName": app_name, "AppId": app_id,
    });
    let rest = json!({
        "AuthenticationDetails": "[]", "AuthenticationRequirement": "singleFactorAuthentication",
        "ClientAppUsed": "Browser", "ConditionalAccessStatus": "notApplied",
        "CreatedDateTime": entra_time(at, "Z"), "DeviceDetail": device, "IsInteractive": true, "Id": uuid,
        "IPAddress": person.ip, "ResourceDisplayName": resource, "ResourceIdentity": resource_id,
        "ServicePrincipalId": "", "ServicePrincipalName": "", "Status": status, "TokenIssuerType": "AzureAD",
        "UserAgent": person.user_agent, "UserDisplayName": person.display, "UserId": person.entra_id,
        "UserPrincipalName": person.upn, "AADTenantId": TENANT, "Type": "SigninLogs",
    });
    if let (Some(row), Value::Object(rest)) = (row.as_object_mut(), rest) {
        row.extend(rest);
    }
    for column in ["Status", "DeviceDetail"] {
        let v = row[column].take();
        row[column] = if g.people_rng.random_bool(0.5) {
            Value::String(to_line(&v))
        } else {
            v
        };
    }
    to_line(&row)
}

/// The Okta admin who grants consents in the generated org (a `User` actor).
fn okta_admin() -> Value {
    json!({"id": "00u1adm1n5ecur1ty0p7", "type": "User", "alternateId": "it-admin@example.org",
        "displayName": "IT Admin", "detailEntry": null})
}

/// `app.oauth2.as.consent.grant`: an admin grants `scopes` to the identity's client on the
/// default authorization server: one `ConsentGrant` target per scope, the scope its
/// `displayName`, the client in `detailEntry.publicclientapp` (Okta event types catalog; the
/// System Log records of it in the wild).
pub(super) fn okta_consent_granted(g: &mut Gen, i: usize, at: DateTime<Utc>, scopes: &[&str]) -> String {
    let client = g.ids[i].client_id.clone();
    let r = &mut g.shape;
    let uuid = uuid_of(r);
    let targets: Vec<Value> = scopes
        .iter()
        .map(|scope| {
            let grant: String = (0..17)
                .map(|_| {
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[r.random_range(0..62)] as char
                })
                .collect();
            json!({"id": format!("oag{grant}"), "type": "ConsentGrant", "alternateId": null, "displayName": scope,
                "detailEntry": {"publicclientapp": client, "authorizationserver": "aus1default", "user": null}})
        })
        .collect();
    to_line(&json!({
        "uuid": uuid, "published": ts(at), "eventType": "app.oauth2.as.consent.grant", "version": "0",
        "severity": "INFO", "displayMessage": "Consent granted",
        "legacyEventType": "app.oauth2.as.consent.grant_success",
        "actor": okta_admin(),
        "client": {"ipAddress": "192.0.2.45", "device": "Computer", "zone": "null",
            "userAgent": {"rawUserAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
                "os": "Windows 10", "browser": "FIREFOX"}},
        "outcome": {"result": "SUCCESS", "reason": null},
        "transaction": {"type": "WEB", "id": uuid.replace('-', "")[..24].to_owned(), "detail": {}},
        "target": targets,
    }))
}

/// A person's sign-in at Okta, as the System Log records it (the `elastic-okta` sample): to Okta
/// itself (`user.session.start`) or, single sign-on to an integration's app, `user.authentication.sso`
/// with the app as an `AppInstance` target (in Okta an OIDC app's id is its client id). A failed
/// password is outcome `FAILURE`, reason `INVALID_CREDENTIALS`; `client.ipAddress` is null now
/// and then.
pub(super) fn okta_user_signin(g: &mut Gen, p: usize, at: DateTime<Utc>, ok: bool, app: Option<usize>) -> String {
    let person = g.people[p].clone();
    let app = app.map(|i| (g.ids[i].client_id.clone(), g.ids[i].name.clone()));
    let r = &mut g.people_rng;
    let uuid = uuid_of(r);
    let ip = if r.random_bool(0.02) {
        Value::Null
    } else {
        json!(person.ip)
    };
    let (event_type, legacy, message, target) = match &app {
        Some((id, name)) => (
            "user.authentication.sso",
            if ok { "app.auth.sso" } else { "app.auth.sso_failure" },
            "User single sign on to app",
            json!([{"id": id, "type": "AppInstance", "alternateId": name, "displayName": name, "detailEntry": null}]),
        ),
        None => (
            "user.session.start",
            if ok {
                "core.user_auth.login_success"
            } else {
                "core.user_auth.login_failed"
            },
            "User login to Okta",
            Value::Null,
        ),
    };
    let session: String = uuid.replace('-', "")[..25].to_owned();
    to_line(&json!({
        "actor": {"alternateId": person.upn, "detailEntry": null, "displayName": person.display,
            "id": person.okta_id, "type": "User"},
        "authenticationContext": {"authenticationProvider": null, "authenticationStep": 0, "credentialProvider": null,
            "credentialType": null, "externalSessionId": format!("102{session}"), "interface": null, "issuer": null},
        "client": {"device": "Computer", "id": null, "ipAddress": ip,
            "userAgent": {"browser": "UNKNOWN", "os": "Windows 10", "rawUserAgent": person.user_agent}, "zone": "null"},
        "debugContext": {"debugData": {"requestUri": "/api/v1/authn", "threatSuspected": "false", "url": "/api/v1/authn?"}},
        "displayMessage": message, "eventType": event_type, "legacyEventType": legacy,
        "outcome": {"reason": if ok { Value::Null } else { json!("INVALID_CREDENTIALS") },
            "result": if ok { "SUCCESS" } else { "FAILURE" }},
        "published": ts(at), "severity": if ok { "INFO" } else { "WARN" }, "target": target,
        "transaction": {"detail": {}, "id": session, "type": "WEB"}, "uuid": uuid, "version": "0",
    }))
}

/// A person's browser login at Keycloak (authorization-code flow) to the EHR's web client or an
/// integration's client, as the event listener records it (Keycloak `EventRepresentation`):
/// `LOGIN` with the user's id and `details.username`; a wrong password is `LOGIN_ERROR`, error
/// `invalid_user_credentials`, the user's id kept (Keycloak found the user).
pub(super) fn keycloak_user_login(g: &mut Gen, p: usize, at: DateTime<Utc>, ok: bool, app: Option<usize>) -> String {
    let person = g.people[p].clone();
    let client = match app {
        Some(i) => g.ids[i].client_id.clone(),
        None => EHR_WEB.1.to_owned(),
    };
    let r = &mut g.people_rng;
    let (uuid, code_id) = (uuid_of(r), uuid_of(r));
    let mut details = json!({"auth_method": "openid-connect", "auth_type": "code", "response_type": "code",
        "redirect_uri": format!("https://{client}.example.org/callback"), "code_id": code_id,
        "username": person.username, "response_mode": "query"});
    let mut v = json!({"id": uuid, "time": at.timestamp_millis(), "type": if ok { "LOGIN" } else { "LOGIN_ERROR" },
        "realmId": REALM, "clientId": client, "userId": person.keycloak_id, "ipAddress": person.ip});
    if ok {
        details["consent"] = json!("no_consent_required");
        v["sessionId"] = json!(code_id);
    } else {
        v["error"] = json!("invalid_user_credentials");
    }
    v["details"] = details;
    to_line(&v)
}

/// `projects/-/serviceAccounts/<account>`, the name IAM's requests give a service account by.
fn account_name(email: &str) -> String {
    format!("projects/-/serviceAccounts/{email}")
}

/// The `service_account` monitored resource a GCP IAM entry is logged against.
fn gcp_account_resource(email: &str, unique_id: &str) -> Value {
    json!({"type": "service_account", "labels": {"email_id": email, "project_id": GCP_PROJECT, "unique_id": unique_id}})
}

/// `callerIp` as Cloud Audit Logs gives it: the address, or `private` / `gce-internal-ip` for a
/// call from inside Google's network (AuditLog `RequestMetadata.caller_ip`).
fn gcp_caller_ip(g: &mut Gen, ip: &str) -> String {
    match g.shape.random_range(0..100) {
        0 => "private".to_owned(),
        1 => "gce-internal-ip".to_owned(),
        _ => ip.to_owned(),
    }
}

/// An integration's token from Google Cloud IAM: its workload (a CI runner's or a cluster's
/// service account) impersonates it with `GenerateAccessToken` on `iamcredentials.googleapis.com`,
/// a Data Access entry (the `elastic-gcp-audit` sample). Refused: status 7, `PERMISSION_DENIED`.
pub(super) fn gcp_token(g: &mut Gen, i: usize, at: DateTime<Utc>, ip: &str, ok: bool) -> String {
    let id = &g.ids[i];
    let (email, unique_id, ua) = (id.client_id.clone(), id.unique_id.clone(), id.user_agent.clone());
    // The one draw an Okta grant makes from the main stream, so the stream stays as it was.
    let uuid = g.uuid();
    let insert_id = uuid.replace('-', "")[..12].to_owned();
    let caller = if i.is_multiple_of(2) {
        json!({"principalEmail": format!("integration-runner@{GCP_PROJECT}.iam.gserviceaccount.com")})
    } else {
        json!({"principalSubject": format!(
            "principal://iam.googleapis.com/projects/301234567890/locations/global/workloadIdentityPools/{GCP_PROJECT}.svc.id.goog/subject/ns/integrations/sa/runner"),
            "serviceAccountDelegationInfo": [{}]})
    };
    let caller_ip = gcp_caller_ip(g, ip);
    let status = if ok {
        json!({})
    } else {
        json!({"code": 7, "message": "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."})
    };
    let time = at.to_rfc3339_opts(SecondsFormat::Nanos, true);
    to_line(&json!({
        "insertId": insert_id,
        "logName": format!("projects/{GCP_PROJECT}/logs/cloudaudit.googleapis.com%2Fdata_access"),
        "operation": {"first": true, "id": uuid, "last": true, "producer": "iamcredentials.googleapis.com"},
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": caller,
            "authorizationInfo": [{"granted": ok, "permission": "iam.serviceAccounts.getAccessToken",
                "permissionType": "ADMIN_READ", "resource": account_name(&unique_id), "resourceAttributes": {}}],
            "metadata": {"identityDelegationChain": [account_name(&email)]},
            "methodName": "GenerateAccessToken",
            "request": {"@type": "type.googleapis.com/google.iam.credentials.v1.GenerateAccessTokenRequest",
                "name": account_name(&email)},
            "requestMetadata": {"callerIp": caller_ip, "callerSuppliedUserAgent": format!("{ua},gzip(gfe)"),
                "destinationAttributes": {}, "requestAttributes": {"auth": {}, "time": time}},
            "resourceName": account_name(&unique_id),
            "serviceName": "iamcredentials.googleapis.com",
            "status": status,
        },
        "receiveTimestamp": (at + chrono::Duration::milliseconds(1200)).to_rfc3339_opts(SecondsFormat::Nanos, true),
        "resource": gcp_account_resource(&email, &unique_id),
        "severity": if ok { "INFO" } else { "ERROR" },
        "timestamp": time,
    }))
}

/// `google.iam.admin.v1.CreateServiceAccountKey`: an admin creates a key for the identity's
/// service account, an Admin Activity entry; the key's name in the response
/// (`projects/<p>/serviceAccounts/<e-mail>/keys/<key id>`, IAM REST reference).
pub(super) fn gcp_key_created(g: &mut Gen, i: usize, at: DateTime<Utc>, key_id: &str) -> String {
    let id = &g.ids[i];
    let (email, unique_id) = (id.client_id.clone(), id.unique_id.clone());
    let insert_id = uuid_of(&mut g.shape).replace('-', "")[..12].to_owned();
    let time = at.to_rfc3339_opts(SecondsFormat::Nanos, true);
    to_line(&json!({
        "insertId": insert_id,
        "logName": format!("projects/{GCP_PROJECT}/logs/cloudaudit.googleapis.com%2Factivity"),
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": "it-admin@example.org"},
            "authorizationInfo": [{"granted": true, "permission": "iam.serviceAccountKeys.create",
                "resource": account_name(&unique_id), "resourceAttributes": {}}],
            "methodName": "google.iam.admin.v1.CreateServiceAccountKey",
            "request": {"@type": "type.googleapis.com/google.iam.admin.v1.CreateServiceAccountKeyRequest",
                "name": account_name(&email), "private_key_type": 2},
            "requestMetadata": {"callerIp": "192.0.2.45",
                "callerSuppliedUserAgent": "google-cloud-sdk gcloud/470.0.0 command/gcloud.iam.service-accounts.keys.create,gzip(gfe)",
                "destinationAttributes": {}, "requestAttributes": {"auth": {}, "time": time}},
            "resourceName": account_name(&unique_id),
            "response": {"@type": "type.googleapis.com/google.iam.admin.v1.ServiceAccountKey",
                "name": format!("projects/{GCP_PROJECT}/serviceAccounts/{email}/keys/{key_id}"),
                "key_algorithm": 2, "key_origin": 2, "key_type": 1,
                "valid_after_time": {"seconds": at.timestamp()},
                "valid_before_time": {"seconds": 253_402_300_799_i64}},
            "serviceName": "iam.googleapis.com",
            "status": {},
        },
        "receiveTimestamp": (at + chrono::Duration::milliseconds(900)).to_rfc3339_opts(SecondsFormat::Nanos, true),
        "resource": gcp_account_resource(&email, &unique_id),
        "severity": "NOTICE",
        "timestamp": time,
    }))
}

/// `SetIamPolicy` on the project: an admin binds `role` to the identity's service account; the
/// change is in `serviceData.policyDelta.bindingDeltas` (Cloud IAM audit logging, `AuditData`).
pub(super) fn gcp_role_granted(g: &mut Gen, i: usize, at: DateTime<Utc>, role: &str) -> String {
    let email = g.ids[i].client_id.clone();
    let insert_id = uuid_of(&mut g.shape).replace('-', "")[..12].to_owned();
    let member = format!("serviceAccount:{email}");
    let time = at.to_rfc3339_opts(SecondsFormat::Nanos, true);
    to_line(&json!({
        "insertId": insert_id,
        "logName": format!("projects/{GCP_PROJECT}/logs/cloudaudit.googleapis.com%2Factivity"),
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": "it-admin@example.org"},
            "authorizationInfo": [{"granted": true, "permission": "resourcemanager.projects.setIamPolicy",
                "resource": format!("projects/{GCP_PROJECT}"), "resourceAttributes": {}}],
            "methodName": "SetIamPolicy",
            "request": {"@type": "type.googleapis.com/google.iam.v1.SetIamPolicyRequest", "resource": GCP_PROJECT,
                "policy": {"bindings": [{"role": role, "members": [member]}], "etag": "BwYH3Xq2mEo="}},
            "requestMetadata": {"callerIp": "192.0.2.45",
                "callerSuppliedUserAgent": "google-cloud-sdk gcloud/470.0.0 command/gcloud.projects.add-iam-policy-binding,gzip(gfe)",
                "destinationAttributes": {}, "requestAttributes": {"auth": {}, "time": time}},
            "resourceName": format!("projects/{GCP_PROJECT}"),
            "response": {"@type": "type.googleapis.com/google.iam.v1.Policy",
                "bindings": [{"role": role, "members": [member]}], "etag": "BwYH3Xq9kLs="},
            "serviceData": {"@type": "type.googleapis.com/google.iam.v1.logging.AuditData",
                "policyDelta": {"bindingDeltas": [{"action": "ADD", "role": role, "member": member}]}},
            "serviceName": "cloudresourcemanager.googleapis.com",
            "status": {},
        },
        "receiveTimestamp": (at + chrono::Duration::milliseconds(700)).to_rfc3339_opts(SecondsFormat::Nanos, true),
        "resource": {"type": "project", "labels": {"project_id": GCP_PROJECT}},
        "severity": "NOTICE",
        "timestamp": time,
    }))
}

/// BALP `AuditEvent`s recorded by the FHIR server for one request of an EHR interface: one per
/// patient, as BALP asks for a search returning several patients.
pub(super) fn balp_events(g: &mut Gen, i: usize, at: DateTime<Utc>, ip: &str, kind: DataKind) -> Vec<String> {
    let id = &g.ids[i];
    let (client, name) = (id.client_id.clone(), id.name.clone());
    let request_id = g.uuid();
    let (interaction, action, resource, found) = match kind {
        DataKind::Delete => ("delete", "D", "Patient", patients(g, 1)),
        DataKind::Bulk(n) => ("search", "E", "Observation", patients(g, n)),
        DataKind::BreakGlass => ("read", "R", "Patient", patients(g, 1)),
        DataKind::Normal if g.rng.random_bool(0.5) => ("read", "R", "Patient", patients(g, 1)),
        DataKind::Normal => {
            let n = g.rng.random_range(1..=3);
            let resource = if g.rng.random_bool(0.5) {
                "Observation"
            } else {
                "Encounter"
            };
            ("search", "E", resource, patients(g, n))
        }
    };
    let base = g.ids[i].base.clone();
    let mut out = Vec::with_capacity(found.len());
    for p in &found {
        let event_id = g.uuid();
        let mut entities = vec![json!({
            "what": {"reference": format!("Patient/{p}")},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
        })];
        if interaction == "search" {
            let query = format!("GET {base}/{resource}?patient={p}&_count=50 HTTP/1.1");
            entities.push(json!({
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24"},
                "query": base64::engine::general_purpose::STANDARD.encode(query),
            }));
        } else if resource != "Patient" {
            entities.push(
                json!({"what": {"reference": format!("{resource}/{}", g.rng.random_range(1..99_999))},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4"}}),
            );
        }
        entities.push(json!({"what": {"identifier": {"value": request_id}},
            "type": {"system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "code": "XrequestId"}}));
        let agents = balp_agents(g, &client, &name, ip, interaction);
        let (observer, source_type) = if g.vary.random_bool(0.25) {
            // Recorded by the client itself, a data interface (security-source-type 2).
            (json!({"display": name}), "2")
        } else {
            (json!({"reference": "Device/fhir-server"}), "4")
        };
        let mut event = json!({
            "resourceType": "AuditEvent", "id": event_id,
            "meta": {"profile": ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"]},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": interaction}],
            "action": action, "recorded": ts(at), "outcome": "0",
            "agent": agents,
            "source": {"observer": observer, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": source_type}]},
            "entity": entities,
        });
        if matches!(kind, DataKind::BreakGlass) {
            event["purposeOfEvent"] = json!([{"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG"},
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT"}]}]);
        }
        out.push(fhir_line(event));
    }
    out
}

/// The agents of a BALP event, by data flow (IHE BALP; DICOM PS3.15 A.5): the Source (110153)
/// sends, the Destination (110152) receives. A read is sent by the server to the client, so the
/// client is the Destination; a search, a create or a delete is sent by the client, the Source.
/// The server is at the FHIR base URL (network type 5), or now and then named without one; a
/// clinician the interface acts for is now and then among the agents, as the requestor.
fn balp_agents(g: &mut Gen, client_id: &str, name: &str, ip: &str, interaction: &str) -> Vec<Value> {
    const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
    let person = g.vary.random_bool(0.3);
    let (client_role, server_role) = if interaction == "read" {
        ("110152", "110153")
    } else {
        ("110153", "110152")
    };
    let mut client = json!({"type": {"coding": [{"system": DCM, "code": client_role}]},
        "who": {"identifier": {"system": "urn:example:oauth-client", "value": client_id}, "display": name},
        "requestor": !person, "network": {"address": ip, "type": "2"}});
    if g.vary.random_bool(0.1) {
        // A client named by a bare identifier and the R4 `agent.name`.
        client["who"] = json!({"identifier": {"value": client_id}});
        client["name"] = json!(name);
    }
    let mut server = json!({"type": {"coding": [{"system": DCM, "code": server_role}]},
        "who": {"reference": "Device/fhir-server"}, "requestor": false});
    if g.vary.random_bool(0.8) {
        server["network"] = json!({"address": "https://fhir.example.org/fhir/R4", "type": "5"});
    }
    let mut agents = vec![client, server];
    if g.vary.random_bool(0.5) {
        agents.swap(0, 1);
    }
    if person {
        let who = format!("Practitioner/pr-{:04}", g.vary.random_range(0..400));
        agents.push(json!({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "who": {"reference": who}, "requestor": true}));
    }
    agents
}

/// One gateway access-log line.
pub(super) fn gateway_line(g: &mut Gen, i: usize, at: DateTime<Utc>, ip: &str, kind: DataKind) -> String {
    let archetype = g.ids[i].archetype;
    let (client, ua) = (g.ids[i].client_id.clone(), g.ids[i].user_agent.clone());
    let scopes = archetype.scopes().join(" ");
    let request_id = g.uuid();
    let mut v = json!({"ts": ts(at), "request_id": request_id, "client_id": client, "tenant": "general-hospital",
        "scopes": scopes, "src_ip": ip, "user_agent": ua});
    let (method, path, status, found, count, records) = match (kind, archetype) {
        (DataKind::Delete, _) => (
            "DELETE",
            format!("/fhir/Patient/{}", patient(g)),
            204,
            Vec::new(),
            None,
            1,
        ),
        (DataKind::Bulk(n), _) => {
            let found = patients(g, n);
            let records = found.len() as u64 * 3;
            (
                "GET",
                "/fhir/Observation?category=laboratory&_count=1000".to_owned(),
                200,
                found,
                None,
                records,
            )
        }
        (_, Archetype::Lab) => {
            let resource = if g.rng.random_bool(0.8) {
                "Observation"
            } else {
                "DiagnosticReport"
            };
            ("POST", format!("/fhir/{resource}"), 201, patients(g, 1), None, 1)
        }
        (_, Archetype::Billing) => {
            let n = g.rng.random_range(20..=40);
            let resource = ["Claim", "Coverage", "ExplanationOfBenefit"][g.rng.random_range(0..3)];
            let found = patients(g, n);
            let records = found.len() as u64 * 2;
            (
                "GET",
                format!("/fhir/{resource}?_lastUpdated=ge{}", at.format("%Y-%m-%d")),
                200,
                found,
                None,
                records,
            )
        }
        (_, Archetype::Export) => {
            let count = g.rng.random_range(800..=1200);
            (
                "GET",
                "/fhir/Group/all-patients/$export?_type=Patient,Observation,Encounter".to_owned(),
                202,
                Vec::new(),
                Some(count),
                count * 6,
            )
        }
        (_, Archetype::Monthly) => {
            let n = g.rng.random_range(30..=60);
            let found = patients(g, n);
            let records = found.len() as u64;
            (
                "GET",
                "/fhir/Observation?code=http://loinc.org|4548-4&_count=200".to_owned(),
                200,
                found,
                None,
                records,
            )
        }
        (_, _) if g.rng.random_bool(0.5) => ("GET", format!("/fhir/Patient/{}", patient(g)), 200, Vec::new(), None, 1),
        (_, _) => {
            let p = patient(g);
            (
                "GET",
                format!("/fhir/Observation?patient={p}&_count=20"),
                200,
                vec![p],
                None,
                12,
            )
        }
    };
    let single_patient = found.is_empty() && path.starts_with("/fhir/Patient/");
    let patient_list = if single_patient {
        vec![path.trim_start_matches("/fhir/Patient/").to_owned()]
    } else {
        found
    };
    // The integration's own base URL in place of `/fhir`.
    let path = format!("{}{}", g.ids[i].base, &path["/fhir".len()..]);
    // Gateways log the peer as `ip:port` now and then, and some redact it.
    if matches!(kind, DataKind::Normal) {
        match g.vary.random_range(0..100) {
            0 => v["src_ip"] = json!(["-", "REDACTED", "IP"][g.vary.random_range(0..3)]),
            1..=5 => v["src_ip"] = json!(format!("{ip}:{}", g.vary.random_range(1024..65535))),
            _ => {}
        }
    }
    v["method"] = json!(method);
    v["path"] = json!(path);
    v["status"] = json!(status);
    v["records"] = json!(records);
    v["bytes"] = json!(records * 1800 + 400);
    match count {
        Some(c) => v["patient_count"] = json!(c),
        None => v["patients"] = json!(patient_list),
    }
    if matches!(kind, DataKind::BreakGlass) {
        v["purpose_of_use"] = json!(["ETREAT", "BTG"]);
    }
    to_line(&v)
}

/// A gateway access-log line carrying an integration's shaped volume: a lab feed's transaction
/// Bundle of results (`POST` to its base), or a backend app's population search; the gateway
/// logs the distinct patients as a count. Drawn from the volume stream only.
pub(super) fn gateway_volume(g: &mut Gen, i: usize, at: DateTime<Utc>, ip: &str, patients: u64) -> String {
    let id = &g.ids[i];
    let (client, ua, base, archetype) = (
        id.client_id.clone(),
        id.user_agent.clone(),
        id.base.clone(),
        id.archetype,
    );
    let scopes = archetype.scopes().join(" ");
    let request_id = uuid_of(&mut g.volume);
    let (method, path, status, records) = match archetype {
        Archetype::Lab => ("POST", base, 200, patients * 3),
        _ => (
            "GET",
            format!(
                "{base}/Observation?category=laboratory&date=ge{}&_count=1000",
                at.format("%Y-%m-%d")
            ),
            200,
            patients * 4,
        ),
    };
    to_line(
        &json!({"ts": ts(at), "request_id": request_id, "client_id": client, "tenant": "general-hospital",
        "scopes": scopes, "src_ip": ip, "user_agent": ua, "method": method, "path": path, "status": status,
        "records": records, "bytes": records * 1800 + 400, "patient_count": patients}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_lines_open_with_the_resource_type_and_keep_every_member() {
        let v = json!({"resourceType": "AuditEvent", "id": "a", "action": "R", "agent": [{"who": {"display": "x"}}]});
        let line = fhir_line(v.clone());
        assert!(
            line.starts_with(r#"{"resourceType":"AuditEvent","action":"R","#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<Value>(&line).expect("valid JSON"), v);
        assert_eq!(
            fhir_line(json!({"resourceType": "Bundle"})),
            r#"{"resourceType":"Bundle"}"#
        );
        assert_eq!(fhir_line(json!({"id": "b"})), r#"{"id":"b"}"#);
    }
}
