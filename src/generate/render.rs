//! Rendering generated activity in the real wire formats: BALP `AuditEvent`s, gateway access
//! lines, Okta System Log, Keycloak event JSON, Entra sign-in and audit records.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Value, json};

use super::{Archetype, DataKind, Gen, REALM, TENANT};

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

/// An Entra service-principal sign-in (client credentials to the FHIR API).
pub(super) fn entra_signin(g: &mut Gen, i: usize, at: DateTime<Utc>, ip: &str, ok: bool) -> String {
    let id = &g.ids[i];
    let (app, principal, name, key) = (
        id.client_id.clone(),
        id.principal_id.clone().unwrap_or_default(),
        id.name.clone(),
        id.key_id.clone(),
    );
    let uuid = g.uuid();
    let correlation = g.uuid();
    let code = if ok { 0 } else { 7_000_215 };
    to_line(&json!({
        "time": entra_time(at, "Z"), "resourceId": format!("/tenants/{TENANT}/providers/Microsoft.aadiam"),
        "operationName": "Sign-in activity", "operationVersion": "1.0", "category": "ServicePrincipalSignInLogs",
        "tenantId": TENANT, "resultType": code.to_string(), "resultSignature": "None", "durationMs": 0,
        "callerIpAddress": ip, "correlationId": correlation, "Level": 4,
        "properties": {
            "id": uuid, "createdDateTime": entra_time(at, "+00:00"),
            "appId": app, "servicePrincipalId": principal, "servicePrincipalName": name,
            "ipAddress": ip, "status": {"errorCode": code},
            "resourceDisplayName": "FHIR API", "resourceId": "0f1e2d3c-fhir-api0-0000-000000000001",
            "servicePrincipalCredentialKeyId": key, "isInteractive": false, "tokenIssuerType": "AzureAD",
        },
    }))
}

/// An Entra audit record: a client secret added to the identity's service principal.
pub(super) fn entra_credential_added(g: &mut Gen, i: usize, at: DateTime<Utc>, new_key: &str) -> String {
    let id = &g.ids[i];
    let (principal, name, old_key) = (
        id.principal_id.clone().unwrap_or_default(),
        id.name.clone(),
        id.key_id.clone(),
    );
    let uuid = g.uuid();
    let admin = g.uuid();
    let describe = |k: &str| format!("[KeyIdentifier={k},KeyType=Password,KeyUsage=Verify,DisplayName=rotation]");
    to_line(&json!({
        "time": entra_time(at, "Z"), "category": "AuditLogs",
        "operationName": "Add service principal credentials", "operationVersion": "1.0", "tenantId": TENANT,
        "resultSignature": "None", "callerIpAddress": "192.0.2.45", "Level": 4,
        "properties": {
            "id": format!("Directory_{uuid}"), "activityDisplayName": "Add service principal credentials",
            "activityDateTime": ts(at), "loggedByService": "Core Directory", "operationType": "Update", "result": "success",
            "initiatedBy": {"user": {"id": admin, "userPrincipalName": "it-admin@example.org", "ipAddress": "192.0.2.45"}},
            "targetResources": [{
                "id": principal, "displayName": name, "type": "ServicePrincipal",
                "modifiedProperties": [{
                    "displayName": "KeyDescription",
                    "oldValue": serde_json::to_string(&[describe(&old_key)]).expect("strings serialize"),
                    "newValue": serde_json::to_string(&[describe(&old_key), describe(new_key)]).expect("strings serialize"),
                }],
            }],
        },
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
