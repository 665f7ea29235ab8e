//! One record of each shape issue 18 added, end to end: normalized, valid against
//! `schemas/event.schema.json`, archived by `nhiwatch detect --archive`, and read back by
//! `nhiwatch query` with every field the normalizer gave it. The values themselves are checked
//! against the standards and vendor docs in `fixtures.rs` and the normalizers' unit tests; this
//! proves nothing of them is lost or bent on the way to a compliance query.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};

use crate::fixtures::{OKTA_CLIENT, OKTA_PERSON, auth0_records, consent_targets, fixture, gcp, okta};
use crate::support::*;

/// Azure Monitor table reference, `AADServicePrincipalSignInLogs` (a dynamic column as a JSON
/// string), and `AuditLogs` (an app role granted to a client, `TargetResources` as a string);
/// Microsoft Graph `directoryAudit` of the same grant; a Keycloak person's failed login
/// (listener JSON); a FHIR AuditEvent whose request line is on Epic's base URL.
fn written_here() -> Vec<String> {
    let app = "6131d760-00a0-4c4e-9a8e-1d2d3c4b5a69";
    let graph = "00000003-0000-0000-c000-000000000000";
    let targets = json!([{"id": "c4a1b2d3-0000-4000-8000-0000000000aa", "displayName": "Microsoft Graph",
        "type": "ServicePrincipal", "modifiedProperties": [
            {"displayName": "AppRole.Value", "oldValue": null, "newValue": "\"Directory.ReadWrite.All\""},
            {"displayName": "ServicePrincipal.ObjectID", "oldValue": null, "newValue": "\"b029d485-a308-4311-8720-fb3192e5284e\""},
            {"displayName": "ServicePrincipal.AppId", "oldValue": null, "newValue": format!("\"{app}\"")},
            {"displayName": "TargetId.ServicePrincipalNames", "oldValue": null, "newValue": format!("\"{graph}\"")}]}]);
    let initiated = json!({"user": {"userPrincipalName": "it-admin@example.org", "ipAddress": "192.0.2.45"}});
    let table_grant = json!({"TimeGenerated": "2026-03-02T11:00:00.1Z", "OperationName": "Add app role assignment to service principal",
        "Category": "ApplicationManagement", "Result": "success", "AADTenantId": "6c1f3e2a-1111-4c2b-9d0e-000000000001",
        "ActivityDateTime": "2026-03-02T11:00:00Z", "Id": "Directory_table_grant_1",
        "InitiatedBy": initiated.to_string(), "TargetResources": targets.to_string(), "AdditionalDetails": "[]", "Type": "AuditLogs"});
    let graph_grant = json!({"id": "Directory_graph_grant_1", "category": "ApplicationManagement", "result": "success",
        "activityDateTime": "2026-03-02T11:05:00Z", "activityDisplayName": "Add app role assignment to service principal",
        "loggedByService": "Core Directory", "initiatedBy": initiated, "targetResources": targets, "additionalDetails": []});
    let sp_row = json!({"TenantId": "0b0a0c0d-0000-4000-8000-00000000beef", "TimeGenerated": "2026-03-02T11:10:03.5Z",
        "OperationName": "Sign-in activity", "Category": "ServicePrincipalSignInLogs", "ResultType": "0",
        "AppId": app, "ServicePrincipalId": "b029d485-a308-4311-8720-fb3192e5284e", "ServicePrincipalName": "lab-results-feed-2",
        "ResourceDisplayName": "FHIR API", "ResourceIdentity": "0f1e2d3c-0000-4000-8000-000000000001", "IPAddress": "10.20.1.11",
        "Id": "d5935dca-86f2-4ac9-a42c-3593b00af801", "LocationDetails": "{\"city\":\"Leeds\"}", "Type": "AADServicePrincipalSignInLogs"});
    let keycloak = json!({"id": "4b1f7f0e-7a0e-4f55-9d3e-0c1d2e3f4a5b", "time": 1772446200000_i64, "type": "LOGIN_ERROR",
        "realmId": "hospital", "clientId": "ehr-web", "userId": "0d5c1f7e-2b9a-4e3c-8f1d-6a7b8c9d0e1f", "ipAddress": "10.9.8.7",
        "error": "invalid_user_credentials", "details": {"auth_method": "openid-connect", "username": "nurse.ana"}});
    let query = base64_encode("GET /api/FHIR/R4/Observation?patient=eq081&category=laboratory HTTP/1.1");
    let epic = json!({"resourceType": "AuditEvent", "id": "epic-search-1", "recorded": "2026-03-02T11:20:00Z",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "action": "E", "outcome": "0",
        "agent": [
            {"type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153"}]},
             "who": {"identifier": {"value": "cds-backend"}}, "requestor": false, "network": {"address": "10.30.0.4", "type": "2"}},
            {"type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110152"}]},
             "who": {"display": "https://fhir.example.org/api/FHIR/R4"}, "requestor": false}],
        "source": {"observer": {"display": "https://fhir.example.org/api/FHIR/R4"}},
        "entity": [{"role": {"code": "24"}, "query": query}]});
    [table_grant, graph_grant, sp_row, keycloak, epic]
        .iter()
        .map(Value::to_string)
        .collect()
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The documented shapes of `fixtures.rs` and records of the shared fixtures.
fn from_fixtures() -> Vec<String> {
    let minified = |path: &str| {
        let v: Value = serde_json::from_str(&read(&fixture(path))).expect("JSON");
        v.to_string()
    };
    let signins = lines(&fixture("msticpy-aad-signinlogs/SigninLogs.ndjson"));
    let person = json!({"id": OKTA_PERSON, "type": "User", "alternateId": "ana@example.org", "displayName": "Ana"});
    let sa = "lab-sync@ehr-prod.iam.gserviceaccount.com";
    vec![
        minified("ihe-balp/AuditEvent-ex-auditBasicReadClient.json"),
        signins[0].clone(),
        okta(
            "64c501c6-4568-11eb-8734-8539fa555daa",
            "app.oauth2.as.consent.grant",
            person,
            "SUCCESS",
            consent_targets(&["launch/patient", "patient/Observation.read"]),
        ),
        auth0_records(&fixture("elastic-auth0/test-success-api-ops.excerpt-events1-5.json"))[3].clone(),
        gcp(
            "-set-iam-1",
            "activity",
            json!({"serviceName": "cloudresourcemanager.googleapis.com", "methodName": "SetIamPolicy",
            "resourceName": "projects/ehr-prod", "status": {},
            "serviceData": {"@type": "type.googleapis.com/google.iam.v1.logging.AuditData", "policyDelta": {"bindingDeltas": [
                {"action": "ADD", "member": format!("serviceAccount:{sa}"), "role": "roles/iam.serviceAccountTokenCreator"}]}}}),
        ),
        gcp(
            "key-create-1",
            "activity",
            json!({"serviceName": "iam.googleapis.com", "methodName": "google.iam.admin.v1.CreateServiceAccountKey",
            "resourceName": "projects/-/serviceAccounts/112233445566778899001",
            "request": {"name": format!("projects/-/serviceAccounts/{sa}")}}),
        ),
        gcp(
            "-vpcsc-1",
            "policy",
            json!({"authenticationInfo": {}, "serviceName": "storage.googleapis.com", "methodName": "google.storage.objects.get",
            "resourceName": "projects/_/buckets/ehr-exports/objects/x", "status": {"code": 7, "message": "PERMISSION_DENIED"}}),
        ),
    ]
}

/// The columns `query` gives back, as the event's JSON has them (absent when empty).
const COLUMNS: &[&str] = &[
    "event_id",
    "format",
    "kind",
    "identity",
    "identity_type",
    "identity_name",
    "tenant",
    "on_behalf_of",
    "initiator",
    "scopes",
    "interaction",
    "resource_type",
    "src_ip",
    "outcome",
    "error",
    "credential_id",
    "action",
];

#[test]
fn a_record_of_each_new_shape_is_normalized_valid_archived_and_queried_back() {
    let schema: Value = serde_json::from_str(&read(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/event.schema.json"),
    ))
    .expect("schema is JSON");
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles");

    let records: Vec<String> = from_fixtures().into_iter().chain(written_here()).collect();
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    for record in &records {
        let events = normalize(record).unwrap_or_else(|e| panic!("{e}: {record}"));
        assert!(!events.is_empty());
        for event in events {
            let json = serde_json::to_value(&event).expect("serializes");
            let errors: Vec<String> = validator.iter_errors(&json).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{json}\n{errors:#?}");
            let row: serde_json::Map<String, Value> = COLUMNS
                .iter()
                .filter_map(|c| json.get(*c).map(|v| ((*c).to_owned(), v.clone())))
                .collect();
            expected.insert(event.event_id.clone(), Value::Object(row));
        }
    }
    // Every new kind of event is among them.
    let kinds: std::collections::BTreeSet<&str> = expected.values().filter_map(|v| v["kind"].as_str()).collect();
    for kind in [
        "permission_grant",
        "credential_change",
        "sign_in",
        "auth_failure",
        "token_issued",
        "data_access",
    ] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }
    assert!(
        expected.values().any(|v| v["identity_type"] == "user"),
        "people among them"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("shapes.ndjson");
    std::fs::write(&input, records.join("\n") + "\n").expect("write");
    let archive = dir.path().join("archive");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nhiwatch"))
            .args(args)
            .env("NHIWATCH_PSEUDONYM_KEY", "a test key of sixteen bytes or more")
            .env("RUST_LOG", "warn")
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let findings = dir.path().join("findings.ndjson");
    run(&[
        "detect",
        "--input",
        input.to_str().expect("utf-8"),
        "--output",
        findings.to_str().expect("utf-8"),
        "--archive",
        archive.to_str().expect("utf-8"),
    ]);
    let sql = format!("SELECT {} FROM events ORDER BY event_id", COLUMNS.join(", "));
    let stdout = run(&[
        "query",
        &sql,
        "--archive",
        archive.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    let mut queried: BTreeMap<String, Value> = BTreeMap::new();
    for line in String::from_utf8(stdout).expect("utf-8").lines() {
        let row: serde_json::Map<String, Value> = serde_json::from_str(line).expect("a JSON row");
        // A null column is an absent field; an empty list too.
        let row: serde_json::Map<String, Value> = row
            .into_iter()
            .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
            .collect();
        queried.insert(row["event_id"].as_str().expect("id").to_owned(), Value::Object(row));
    }
    assert_eq!(queried.len(), expected.len(), "one row per event: {:?}", queried.keys());
    for (id, want) in &expected {
        assert_eq!(queried.get(id), Some(want), "{id}");
    }
    assert_eq!(
        OKTA_CLIENT,
        expected["64c501c6-4568-11eb-8734-8539fa555daa"]["identity"]
    );
}
