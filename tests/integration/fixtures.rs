//! Every file of `../shared/fixtures/external/` through the normalizer, with exact values.
//!
//! Small files are compared event by event as whole JSON objects (every field, nothing
//! extra); the large ones field by field against tables taken from the source records.

use std::path::Path;

use nhiwatch::event::Event;
use serde_json::{Value, json};

use crate::support::*;

/// Asserts the whole serialized event.
fn check(event: &Event, expected: Value) {
    let actual = serde_json::to_value(event).expect("events serialize");
    assert_eq!(actual, expected, "\nactual:   {actual}\nexpected: {expected}");
}

fn p(reference: &str) -> String {
    pseudonymizer().patient(reference)
}

pub(crate) fn fixture(path: &str) -> std::path::PathBuf {
    external().join(path)
}

fn whole(path: &str) -> Event {
    one(&read(&fixture(path)))
}

/// The Auth0 events of an elastic-package pipeline test file (`.events[].json`).
pub(crate) fn auth0_records(path: &Path) -> Vec<String> {
    let v: Value = serde_json::from_str(&read(path)).expect("valid JSON");
    v["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["json"].to_string())
        .collect()
}

#[test]
fn every_fixture_file_is_covered() {
    let covered = [
        "aws-healthlake-docs/healthlake-cloudtrail-CreateFHIRDatastore.example.json",
        "elastic-auth0/test-success-api-ops.excerpt-events1-5.json",
        "elastic-auth0/test-token-xchg-success.json",
        "elastic-azure-auditlogs/test-audit-logs-sample.log",
        "elastic-azure-auditlogs/test-auditlogs-raw.log",
        "elastic-azure-signinlogs/test-managed-identity-sample.log",
        "elastic-azure-signinlogs/test-service-principal-signinlogs-sample.log",
        "elastic-azure-signinlogs/test-service-principal.log",
        "elastic-gcp-audit/test-audit.excerpt-lines1-11.log",
        "elastic-gcp-audit/test-iamcredentials-googleapis-com.log",
        "elastic-keycloak/pipeline/test-log.log",
        "elastic-keycloak/sample_logs/test-log.log",
        "elastic-okta/okta-system.json.log",
        "hl7-fhir-core-auditevent/audit-event-example-create-traceID.xml",
        "hl7-fhir-core-auditevent/audit-event-example-search.xml",
        "hl7-fhir-core-auditevent/auditevent-example-advanced-create.xml",
        "hl7-fhir-core-auditevent/auditevent-example-breakglass-start.xml",
        "hl7-fhir-core-auditevent/auditevent-example-consent-authz.xml",
        "hl7-fhir-core-auditevent/auditevent-example-error.xml",
        "ihe-balp/AuditEvent-ex-auditAuthZconsent-deny.json",
        "ihe-balp/AuditEvent-ex-auditBasicDeleteNoPatient.json",
        "ihe-balp/AuditEvent-ex-auditBasicQueryGetNoPatient.json",
        "ihe-balp/AuditEvent-ex-auditBasicQueryGetServer.json",
        "ihe-balp/AuditEvent-ex-auditBasicQueryPost.json",
        "ihe-balp/AuditEvent-ex-auditBasicReadClient.json",
        "ihe-balp/AuditEvent-ex-auditBasicReadOServerMin.json",
        "ihe-balp/AuditEvent-ex-auditBasicUpdateNoUser.json",
        "ihe-balp/AuditEvent-ex-auditPoke-SAML-Min.json",
        "ihe-balp/AuditEvent-ex-auditPrivacyDisclosure-source2.json",
        "ihe-mhd/AuditEvent-ex-auditProvideBundle-source.json",
        "ihe-pdqm/AuditEvent-ex-auditPdqmQuery-supplier.json",
        "msticpy-aad-signinlogs/SigninLogs.ndjson",
    ];
    let mut found = Vec::new();
    let root = external();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "SOURCE.txt") {
                found.push(
                    path.strip_prefix(&root)
                        .expect("under root")
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    found.sort();
    let mut covered: Vec<String> = covered.iter().map(|s| s.to_string()).collect();
    covered.sort();
    assert_eq!(
        found, covered,
        "a fixture was added or removed: give it an exact-value test"
    );
}

// ---- FHIR AuditEvent, IHE BALP (JSON) ----

/// BALP Basic Read pattern: the server sends the data, so it is the Source (110153, here
/// `Device/ex-device` at the FHIR base URL, network type 5) and the client that read is the
/// Destination (110152): `myMachine.example.org`. John Smith (`IRCP`) is the person it read for.
/// `network.type` 2 is an IP address: the client's.
#[test]
fn balp_read_by_client() {
    check(
        &whole("ihe-balp/AuditEvent-ex-auditBasicReadClient.json"),
        json!({
        "event_id": "ex-auditBasicReadClient", "time": "2020-04-29T09:49:00Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "myMachine.example.org", "identity_type": "application",
        "on_behalf_of": "John Smith", "interaction": "read", "resource_type": "List",
        "patients": [p("Patient/ex-patient")], "src_ip": "2001:db8:85a3::8a2e:370:7334", "outcome": "success",
        "action": "read"}),
    );
}

/// The same Read recorded by the server (BALP "Basic Read, OAuth, server, minimal"): the client is
/// still the Destination `myMachine.example.org`; the `UserOauthAgent` names no one (`who` absent)
/// but carries the token id in `policy`.
#[test]
fn balp_read_with_oauth_token() {
    check(
        &whole("ihe-balp/AuditEvent-ex-auditBasicReadOServerMin.json"),
        json!({
        "event_id": "ex-auditBasicReadOServerMin", "time": "2020-04-29T09:49:00Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "myMachine.example.org", "identity_type": "application", "interaction": "read",
        "resource_type": "List", "patients": [p("Patient/ex-patient")], "src_ip": "2001:db8:85a3::8a2e:370:7334",
        "outcome": "success", "token_id": "C187CC480FAC40A0936902D8BC324F5F", "action": "read"}),
    );
}

#[test]
fn balp_queries_decode_the_base64_request() {
    check(
        &whole("ihe-balp/AuditEvent-ex-auditBasicQueryGetServer.json"),
        json!({
        "event_id": "ex-auditBasicQueryGetServer", "time": "2020-04-29T09:49:00Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "myMachine.example.org", "identity_type": "application",
        "on_behalf_of": "John Smith", "interaction": "search", "resource_type": "Observation",
        "patients": [p("Patient/ex-patient")], "src_ip": "2001:db8:85a3::8a2e:370:7334", "outcome": "success",
        "action": "search"}),
    );
    check(
        &whole("ihe-balp/AuditEvent-ex-auditBasicQueryGetNoPatient.json"),
        json!({
        "event_id": "ex-auditBasicQueryGetNoPatient", "time": "2020-04-29T09:49:00Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "myMachine.example.org", "identity_type": "application",
        "on_behalf_of": "John Smith", "interaction": "search", "resource_type": "MeasureReport",
        "src_ip": "2001:db8:85a3::8a2e:370:7334", "outcome": "success", "action": "search"}),
    );
    check(
        &whole("ihe-balp/AuditEvent-ex-auditBasicQueryPost.json"),
        json!({
        "event_id": "ex-auditBasicQueryPost", "time": "2020-04-29T09:49:00Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "myMachine.example.org", "identity_type": "application",
        "on_behalf_of": "John Smith", "interaction": "search", "resource_type": "Observation",
        "patients": [p("Patient/ex-patient")], "src_ip": "2001:db8:85a3::8a2e:370:7334", "outcome": "success",
        "action": "search-type"}),
    );
}

#[test]
fn balp_writes() {
    check(
        &whole("ihe-balp/AuditEvent-ex-auditBasicUpdateNoUser.json"),
        json!({
        "event_id": "ex-auditBasicUpdateNoUser", "time": "2020-04-29T09:49:00Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "myMachine.example.org", "identity_type": "application",
        "interaction": "update", "resource_type": "List", "patients": [p("Patient/ex-patient")],
        "src_ip": "2001:db8:85a3::8a2e:370:7334", "outcome": "success", "action": "update"}),
    );
    check(
        &whole("ihe-balp/AuditEvent-ex-auditBasicDeleteNoPatient.json"),
        json!({
        "event_id": "ex-auditBasicDeleteNoPatient", "time": "2020-04-06T09:49:00Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "myMachine.example.org", "identity_type": "application",
        "on_behalf_of": "John Smith", "interaction": "delete", "resource_type": "MeasureReport",
        "src_ip": "2001:db8:85a3::8a2e:370:7334", "outcome": "success", "action": "delete"}),
    );
}

#[test]
fn balp_consent_denial_is_an_auth_failure() {
    check(
        &whole("ihe-balp/AuditEvent-ex-auditAuthZconsent-deny.json"),
        json!({
        "event_id": "ex-auditAuthZconsent-deny", "time": "2021-12-27T09:49:00Z", "format": "fhir_audit_event",
        "kind": "auth_failure", "identity": "Device/ex-device", "identity_type": "device",
        "on_behalf_of": "Practitioner/ex-practitioner", "resource_type": "Consent",
        "patients": [p("Patient/ex-patient")], "purpose_of_use": ["PATRQT"],
        "src_ip": "2001:db8:85a3::8a2e:370:7334", "outcome": "failure",
        "error": "Consent denied access to this user", "action": "AuthZ-Consent"}),
    );
}

#[test]
fn balp_saml_poke_names_the_user() {
    check(
        &whole("ihe-balp/AuditEvent-ex-auditPoke-SAML-Min.json"),
        json!({
        "event_id": "ex-auditPoke-SAML-Min", "time": "2021-12-03T09:49:00Z", "format": "fhir_audit_event",
        "kind": "other", "identity": "05086900124", "identity_type": "user", "outcome": "success",
        "token_id": "XC4WdYS0W5bjsMGc5Ue6tClD_5U", "action": "poke"}),
    );
}

/// Disclosure and MHD Provide Bundle are recorded by the mobile app that is the Source (110153,
/// the `source.observer`, security-source-type 1 "User Device"); the Destination of the
/// disclosure is at the FHIR base URL (network type 5): the server. PDQm's Patient Demographics
/// Supplier records a query, sent by the consumer `Device/ex-device` (110153). Host names
/// (network type 1, `myDevice.example.com`) are not IP addresses: no `src_ip`.
#[test]
fn balp_disclosure_mhd_and_pdqm() {
    check(
        &whole("ihe-balp/AuditEvent-ex-auditPrivacyDisclosure-source2.json"),
        json!({
        "event_id": "ex-auditPrivacyDisclosure-source2", "time": "2020-04-29T09:49:00Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "model number ABC, serial number 1234", "identity_type": "application",
        "on_behalf_of": "Patient/ex-patient", "interaction": "read", "resource_type": "DocumentReference",
        "patients": [p("Patient/ex-patient")], "purpose_of_use": ["PATRQT"],
        "outcome": "success", "action": "read"}),
    );
    check(
        &whole("ihe-mhd/AuditEvent-ex-auditProvideBundle-source.json"),
        json!({
        "event_id": "ex-auditProvideBundle-source", "time": "2020-04-29T09:49:00Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "model number ABC, serial number 1234", "identity_type": "application",
        "resource_type": "List", "patients": [p("Patient/ex-patient")],
        "outcome": "success", "action": "110106"}),
    );
    check(
        &whole("ihe-pdqm/AuditEvent-ex-auditPdqmQuery-supplier.json"),
        json!({
        "event_id": "ex-auditPdqmQuery-supplier", "time": "2021-07-13T19:17:32Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "Device/ex-device", "identity_type": "device", "interaction": "search",
        "resource_type": "Patient", "patients": [p("Patient/ex-patient")], "src_ip": "2001:db8:85a3::8a2e:370:7334",
        "outcome": "success", "action": "search"}),
    );
}

// ---- FHIR AuditEvent (XML, R4/R5 element names mixed) ----
// The client is the Source (110153) of a search or create (the client sends); the `humanuser`
// is the person it acted for. `Workstation1.ehr.familyclinic.com` and `custodian.net` are host
// names, not IP addresses: no `src_ip`.

#[test]
fn xml_rest_events() {
    check(
        &whole("hl7-fhir-core-auditevent/audit-event-example-search.xml"),
        json!({
        "event_id": "example-search", "time": "2015-08-22T23:42:24Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "2.16.840.1.113883.4.2", "identity_type": "application",
        "on_behalf_of": "95", "interaction": "search", "resource_type": "Encounter",
        "outcome": "success", "action": "search"}),
    );
    check(
        &whole("hl7-fhir-core-auditevent/audit-event-example-create-traceID.xml"),
        json!({
        "event_id": "example-rest-create-traceID", "time": "2019-12-04T11:59:28.646Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "2.16.840.1.113883.4.2", "identity_type": "application",
        "on_behalf_of": "95", "interaction": "create", "resource_type": "Patient",
        "patients": [p("Patient/example")],
        "outcome": "success", "action": "create"}),
    );
    check(
        &whole("hl7-fhir-core-auditevent/auditevent-example-advanced-create.xml"),
        json!({
        "event_id": "example-advanced-create", "time": "2020-04-29T09:49:00Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "myMachine.example.org", "identity_type": "application",
        "on_behalf_of": "Betty Jones", "interaction": "create", "resource_type": "List",
        "patients": [p("Patient/example")], "purpose_of_use": ["TREAT"], "src_ip": "2001:db8:85a3::8a2e:370:7334",
        "outcome": "success", "action": "create"}),
    );
    check(
        &whole("hl7-fhir-core-auditevent/auditevent-example-error.xml"),
        json!({
        "event_id": "example-error", "time": "2017-09-07T23:42:24Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "2.16.840.1.113883.4.2", "identity_type": "application",
        "on_behalf_of": "95", "interaction": "create",
        "outcome": "failure", "error": "Invalid request to create an Operation resource on the Patient endpoint.",
        "action": "create"}),
    );
}

#[test]
fn xml_break_glass_and_consent() {
    check(
        &whole("hl7-fhir-core-auditevent/auditevent-example-breakglass-start.xml"),
        json!({
        "event_id": "example-breakglass-start", "time": "2013-09-22T00:08:00Z", "format": "fhir_audit_event",
        "kind": "other", "identity": "Practitioner/f001", "identity_type": "user", "resource_type": "Patient",
        "patients": [p("Patient/example")], "purpose_of_use": ["ETREAT"],
        "outcome": "success", "action": "110127"}),
    );
    check(
        &whole("hl7-fhir-core-auditevent/auditevent-example-consent-authz.xml"),
        json!({
        "event_id": "example-consent-permit-authz", "time": "2021-09-08T21:51:59.932Z", "format": "fhir_audit_event",
        "kind": "data_access", "identity": "Org1", "identity_type": "application", "resource_type": "Consent",
        "patients": [p("Patient/example")], "purpose_of_use": ["TREAT"], "outcome": "success", "action": "110112"}),
    );
}

// ---- Okta ----

#[test]
fn okta_array_of_user_events() {
    let events = normalize(&read(&fixture("elastic-okta/okta-system.json.log"))).expect("normalizes");
    let ua = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:72.0) Gecko/20100101 Firefox/72.0";
    let base = |id: &str, time: &str, kind: &str, action: &str| {
        json!({
        "event_id": id, "time": time, "format": "okta", "kind": kind, "identity": "00u1abvz4pYqdM8ms4x6",
        "identity_name": "xxxxxx", "identity_type": "user", "src_ip": "108.255.197.247", "user_agent": ua,
        "outcome": "success", "action": action})
    };
    assert_eq!(events.len(), 3);
    check(
        &events[0],
        base(
            "faf7398a-4f77-11ea-97fb-5925e98228bd",
            "2020-02-14T22:18:51.843Z",
            "other",
            "user.session.end",
        ),
    );
    check(
        &events[1],
        base(
            "3aeede38-4f67-11ea-abd3-1f5d113f2546",
            "2020-02-14T20:18:57.718Z",
            "sign_in",
            "user.session.start",
        ),
    );
    check(
        &events[2],
        base(
            "3af594f9-4f67-11ea-abd3-1f5d113f2546",
            "2020-02-14T20:18:57.762Z",
            "other",
            "policy.evaluate_sign_on",
        ),
    );
}

/// Scopes as the event serializes them (sorted and deduplicated, as `Scope::collect` keeps them).
fn scopes(list: &[&str]) -> Value {
    json!(nhiwatch::scope::Scope::collect(list.iter().copied()))
}

/// The System Log `LogEvent` fields every Okta record below shares (Okta System Log API, LogEvent
/// object: `uuid`, `published`, `eventType`, `actor`, `client`, `outcome`, `target`).
pub(crate) fn okta(uuid: &str, event_type: &str, actor: Value, outcome: &str, target: Value) -> String {
    json!({
        "uuid": uuid, "published": "2026-03-02T14:05:11.204Z", "eventType": event_type, "version": "0",
        "severity": "INFO", "actor": actor,
        "client": {"ipAddress": "198.51.100.23", "userAgent": {"rawUserAgent": "Mozilla/5.0 (X11; Linux x86_64)"}},
        "outcome": {"result": outcome, "reason": null}, "target": target,
    })
    .to_string()
}

pub(crate) const OKTA_PERSON: &str = "00u5qnsdwiFfu6tk22p7";
pub(crate) const OKTA_CLIENT: &str = "0oa7rb3qjbKyi6j7O2p7";

/// `ConsentGrant` targets as the System Log records them for `app.oauth2.as.consent.grant`: one
/// per scope, the scope in `displayName`, the client in `detailEntry.publicclientapp` (shape of a
/// System Log API response recorded in department-of-veterans-affairs/vets-api,
/// spec/support/vcr_cassettes/okta/connection_logs.yml; ids and scopes here are made up).
pub(crate) fn consent_targets(scopes: &[&str]) -> Value {
    scopes
        .iter()
        .enumerate()
        .map(|(i, scope)| {
            json!({"id": format!("oagnhue9y5HBzoAOp2p{i}"), "type": "ConsentGrant", "alternateId": null,
            "displayName": scope, "detailEntry": {"publicclientapp": OKTA_CLIENT,
            "authorizationserver": "aus1bptuzqo48Ut942p7", "user": OKTA_PERSON}})
        })
        .collect()
}

#[test]
fn okta_consent_grant_lands_on_the_client_that_receives_the_scopes() {
    // Okta Workflows, "OAuth2 App Consent Granted" (app.oauth2.as.consent.grant): the actor is
    // "the Okta actor who granted the consent", each target "the scope granted". The identity is
    // the client those scopes were granted to; the person who consented is the initiator.
    let person = json!({"id": OKTA_PERSON, "type": "User", "alternateId": "ana@example.org", "displayName": "Ana"});
    let granted = ["launch/patient", "patient/Observation.read", "offline_access"];
    let record = okta(
        "64c501c6-4568-11eb-8734-8539fa555daa",
        "app.oauth2.as.consent.grant",
        person.clone(),
        "SUCCESS",
        consent_targets(&granted),
    );
    check(
        &one(&record),
        json!({"event_id": "64c501c6-4568-11eb-8734-8539fa555daa", "time": "2026-03-02T14:05:11.204Z",
        "format": "okta", "kind": "permission_grant", "identity": OKTA_CLIENT, "identity_type": "application",
        "initiator": OKTA_PERSON, "scopes": scopes(&granted), "src_ip": "198.51.100.23",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "outcome": "success", "action": "app.oauth2.as.consent.grant"}),
    );
    // Okta event types: app.oauth2.as.consent.revoke takes a grant away; it is no grant, but a
    // permission change on the same client.
    let revoke = one(&okta(
        "85049f25-4568-11eb-ba7d-892e1f144239",
        "app.oauth2.as.consent.revoke",
        person,
        "SUCCESS",
        consent_targets(&["launch/patient"]),
    ));
    assert_eq!(
        (
            revoke.kind.as_str(),
            revoke.identity.as_str(),
            revoke.identity_type.as_str()
        ),
        ("admin", OKTA_CLIENT, "application")
    );
    assert_eq!(revoke.initiator.as_deref(), Some(OKTA_PERSON));
    assert!(revoke.scopes.is_empty(), "a revoke grants nothing");
}

#[test]
fn okta_refresh_token_reuse_is_an_auth_failure_of_the_client() {
    // Okta refresh token guide, "Refresh token reuse detection": when a rotated refresh token is
    // used again Okta "immediately invalidates the most recently issued refresh token and all
    // access tokens issued since the user authenticated" and fires
    // app.oauth2.as.token.detect_reuse (custom authorization server) or
    // app.oauth2.token.detect_reuse (org authorization server). The client presented the token:
    // its auth failure, the event type kept as the action and the error.
    let client = json!({"id": OKTA_CLIENT, "type": "PublicClientApp", "alternateId": OKTA_CLIENT, "displayName": "Bedside Charts"});
    let record = okta(
        "21b88508-456b-11eb-9cff-f1bfeb710ec6",
        "app.oauth2.as.token.detect_reuse",
        client,
        "SUCCESS",
        Value::Null,
    );
    check(
        &one(&record),
        json!({"event_id": "21b88508-456b-11eb-9cff-f1bfeb710ec6", "time": "2026-03-02T14:05:11.204Z",
        "format": "okta", "kind": "auth_failure", "identity": OKTA_CLIENT, "identity_name": "Bedside Charts",
        "identity_type": "application", "src_ip": "198.51.100.23", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "outcome": "failure", "error": "app.oauth2.as.token.detect_reuse", "action": "app.oauth2.as.token.detect_reuse"}),
    );
    // The same event recorded with the person as actor and the client as a target is still the client's.
    let person = json!({"id": OKTA_PERSON, "type": "User", "alternateId": "ana@example.org", "displayName": "Ana"});
    let app = json!([{"id": OKTA_CLIENT, "type": "PublicClientApp", "displayName": "Bedside Charts"}]);
    let e = one(&okta(
        "a291c74c-4568-11eb-8235-539d6a6bdeac",
        "app.oauth2.token.detect_reuse",
        person,
        "FAILURE",
        app,
    ));
    assert_eq!(
        (
            e.kind.as_str(),
            e.identity.as_str(),
            e.identity_type.as_str(),
            e.outcome.as_str()
        ),
        ("auth_failure", OKTA_CLIENT, "application", "failure")
    );
}

#[test]
fn okta_people_are_never_apps_and_ips_never_identities() {
    // Okta event types: user.session.start is a person's sign-in to Okta; failed, it is the
    // person's auth failure, never an app's (issue 18 item 5).
    let person = json!({"id": OKTA_PERSON, "type": "User", "alternateId": "ana@example.org", "displayName": "Ana"});
    let e = one(&okta(
        "bba65f3b-4568-11eb-a2e2-17cc2f3b9cbf",
        "user.session.start",
        person,
        "FAILURE",
        Value::Null,
    ));
    assert_eq!(
        (e.kind.as_str(), e.identity.as_str(), e.identity_type.as_str()),
        ("auth_failure", OKTA_PERSON, "user")
    );
    // An actor of type `IP address` is where a request came from: the source address, not an
    // identity. With no app or person targeted, the event names nobody.
    let ip = json!({"id": "192.0.2.44", "type": "IP address", "alternateId": "unknown", "displayName": "192.0.2.44"});
    let record = json!({"uuid": "9c2a1f0e-1111-11eb-8000-000000000001", "published": "2026-03-02T14:06:00.000Z",
        "eventType": "security.threat.detected", "actor": ip, "client": {"ipAddress": null},
        "outcome": {"result": "DENY", "reason": "Password Spray"}, "target": null})
    .to_string();
    check(
        &one(&record),
        json!({"event_id": "9c2a1f0e-1111-11eb-8000-000000000001", "time": "2026-03-02T14:06:00Z", "format": "okta",
        "kind": "other", "identity": "unidentified", "identity_type": "unknown", "src_ip": "192.0.2.44",
        "outcome": "failure", "error": "Password Spray", "action": "security.threat.detected"}),
    );
    // SystemPrincipal is Okta itself: acting on a person, the event is the person's, Okta the
    // initiator; acting on nothing of the tenant's, it is Okta's own principal, a system.
    let okta_itself = json!({"id": "unknown", "type": "SystemPrincipal", "alternateId": "system@okta.com", "displayName": "Okta System"});
    let target = json!([{"id": OKTA_PERSON, "type": "User", "alternateId": "ana@example.org", "displayName": "Ana"}]);
    let e = one(&okta(
        "9c2a1f0e-1111-11eb-8000-000000000002",
        "user.lifecycle.suspend",
        okta_itself.clone(),
        "SUCCESS",
        target,
    ));
    assert_eq!(
        (e.identity.as_str(), e.identity_type.as_str(), e.initiator.as_deref()),
        (OKTA_PERSON, "user", Some("system@okta.com"))
    );
    let e = one(&okta(
        "9c2a1f0e-1111-11eb-8000-000000000003",
        "system.email.delivery",
        okta_itself,
        "SUCCESS",
        Value::Null,
    ));
    assert_eq!(
        (e.identity.as_str(), e.identity_type.as_str(), e.kind.as_str()),
        ("system@okta.com", "device", "admin")
    );
    // RFC 6749 §3.3: scopes are space-separated; the stray comma of "a, b" is not part of a scope.
    let app = json!({"id": OKTA_CLIENT, "type": "PublicClientApp", "displayName": "Bedside Charts"});
    let mut grant: Value = serde_json::from_str(&okta(
        "9c2a1f0e-1111-11eb-8000-000000000004",
        "app.oauth2.as.token.grant.access_token",
        app,
        "SUCCESS",
        Value::Null,
    ))
    .expect("json");
    grant["debugContext"] = json!({"debugData": {"grantedScopes": "system/Patient.read, system/Observation.read"}});
    let e = one(&grant.to_string());
    assert_eq!(
        json!(e.scopes),
        scopes(&["system/Patient.read", "system/Observation.read"])
    );
}

// ---- Keycloak ----

#[test]
fn keycloak_console_lines_without_dates() {
    let path = fixture("elastic-keycloak/pipeline/test-log.log");
    let mut events = Vec::new();
    let mut server_lines = 0;
    for line in lines(&path) {
        match normalize(&line) {
            Ok(mut e) => events.append(&mut e),
            Err(e) => {
                assert_eq!(e.reason(), "not_audit_event", "{line}");
                assert!(
                    !line.contains("[org.keycloak.events]"),
                    "an events line was rejected: {line}"
                );
                server_lines += 1;
            }
        }
    }
    assert_eq!(server_lines, 17);
    let times = [
        "21:01:45.403",
        "21:01:49.114",
        "21:01:52.658",
        "21:02:04.915",
        "21:02:08.006",
        "21:02:28.314",
        "21:02:28.913",
        "21:02:31.781",
        "21:20:42.120",
        "21:24:41.076",
        "21:24:42.565",
        "21:25:46.013",
        "21:29:09.867",
        "21:31:31.555",
        "21:31:31.574",
    ];
    assert_eq!(events.len(), times.len());
    for (event, t) in events.iter().zip(times) {
        assert_eq!(
            event.time,
            time(&format!("2021-10-22T{t}Z")),
            "dated by arrival, timed by the line"
        );
        assert_eq!(event.kind.as_str(), "auth_failure");
        assert_eq!(event.action.as_deref(), Some("LOGIN_ERROR"));
        assert_eq!(event.src_ip.as_deref(), Some("172.18.0.1"));
    }
    let who: Vec<(&str, &str, Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e.identity.as_str(),
                e.tenant.as_deref().unwrap_or(""),
                e.error.as_deref(),
                e.on_behalf_of.as_deref(),
            )
        })
        .collect();
    // A `LOGIN_ERROR` is a person's failed browser login (Keycloak Server Administration
    // Guide, "Auditing and events": "Login — a user logs in"), whatever client it went through:
    // the person is the identity, `unidentified` when Keycloak names none.
    assert!(events.iter().all(|e| e.identity_type.as_str() == "user"));
    let redirect = ("unidentified", "test", Some("invalid_redirect_uri"), None);
    let console = |user: Option<&'static str>| (user.unwrap_or("unidentified"), "master", Some("user_not_found"), None);
    assert_eq!(
        who,
        vec![
            redirect,
            redirect,
            redirect,
            redirect,
            redirect,
            redirect,
            redirect,
            redirect,
            (
                "cc74404c-de7e-482a-98f7-b271ff3c49be",
                "test",
                Some("invalid_user_credentials"),
                None
            ),
            console(None),
            console(Some("asdf")),
            console(Some("asdf")),
            console(Some("asdf")),
            redirect,
            redirect
        ]
    );
}

#[test]
fn keycloak_sample_lines_login_logout_admin_and_json_server_log() {
    let records = lines(&fixture("elastic-keycloak/sample_logs/test-log.log"));
    assert_eq!(records.len(), 10);
    let results: Vec<_> = records.iter().map(|r| normalize(r)).collect();
    let rejected: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.reason()))
        .collect();
    assert_eq!(
        rejected, ["not_audit_event"; 5],
        "the JBoss line and the four ECS server lines"
    );
    let events: Vec<Event> = results.into_iter().filter_map(Result::ok).flatten().collect();
    assert_eq!(events.len(), 5);
    let id = |e: &Event| e.event_id.clone();
    check(
        &events[0],
        json!({"event_id": id(&events[0]), "time": "2021-10-22T21:20:42.120Z", "format": "keycloak",
        "kind": "auth_failure", "identity": "cc74404c-de7e-482a-98f7-b271ff3c49be", "identity_type": "user",
        "tenant": "test", "src_ip": "172.18.0.1", "outcome": "failure",
        "error": "invalid_user_credentials", "action": "LOGIN_ERROR"}),
    );
    check(
        &events[1],
        json!({"event_id": id(&events[1]), "time": "2021-10-22T21:01:49.114Z", "format": "keycloak",
        "kind": "auth_failure", "identity": "unidentified", "identity_type": "user", "tenant": "test",
        "src_ip": "172.18.0.1", "outcome": "failure", "error": "invalid_redirect_uri", "action": "LOGIN_ERROR"}),
    );
    check(
        &events[2],
        json!({"event_id": id(&events[2]), "time": "2021-10-22T22:11:31.257Z", "format": "keycloak",
        "kind": "sign_in", "identity": "ce637d23-b89c-4fca-9088-1aea1d053e19", "identity_type": "user",
        "tenant": "TEST-REALM", "src_ip": "10.2.2.156", "outcome": "success", "action": "LOGIN"}),
    );
    check(
        &events[3],
        json!({"event_id": id(&events[3]), "time": "2021-10-22T22:45:12.592Z", "format": "keycloak",
        "kind": "other", "identity": "ce637d23-b89c-4fca-9088-1aea1d053e19", "identity_type": "user",
        "tenant": "TEST-REALM", "src_ip": "10.2.2.156", "outcome": "success", "action": "LOGOUT"}),
    );
    check(
        &events[4],
        json!({"event_id": id(&events[4]), "time": "2021-10-22T22:14:29.031Z", "format": "keycloak",
        "kind": "admin", "identity": "7bcaf1cb-820a-40f1-91dd-75ced03ef03b", "identity_type": "application",
        "tenant": "TEST-REALM", "initiator": "ce637d23-b89c-4fca-9088-1aea1d053e19", "src_ip": "10.2.2.156",
        "outcome": "success", "action": "CREATE GROUP"}),
    );
    // Ids of sourceless lines are stable hashes of the line.
    assert!(
        events
            .iter()
            .all(|e| e.event_id.starts_with("keycloak:") && e.event_id.len() == 9 + 32)
    );
    assert_eq!(normalize(&records[0]).expect("again")[0].event_id, events[0].event_id);
}

// ---- Entra ID ----

// Identities are app ids (`appId`, Azure Monitor table reference: "Unique GUID representing the
// app ID"): the app registration, its service principal and its sign-ins share it, so one app is
// one identity (module doc of `src/normalize/entra.rs`).

#[test]
fn entra_service_principal_sign_in_with_expired_secret() {
    let events = lines(&fixture("elastic-azure-signinlogs/test-service-principal.log"));
    assert_eq!(events.len(), 1);
    check(
        &one(&events[0]),
        json!({
        "event_id": "22222222-5ec0-4795-bf9f-9017bcc32f00", "time": "2021-07-30T11:29:26.673366800Z",
        "format": "entra_signin", "kind": "auth_failure", "identity": "22222222-ddf2-4ab6-b25f-f23d5d614338",
        "identity_name": "ConfigMgrSvc_22222222-dfb4-4070-ad95-cf1e68280bb0", "identity_type": "application",
        "tenant": "1111111111-902d-4dea-8026-5a790862fede", "scopes": ["22222222-c916-4293-8373-d584996f60ae/.default"],
        "src_ip": "11.22.33.44", "outcome": "failure", "error": "7000222", "action": "Sign-in activity"}),
    );
}

#[test]
fn entra_service_principal_sign_ins() {
    let records = lines(&fixture(
        "elastic-azure-signinlogs/test-service-principal-signinlogs-sample.log",
    ));
    let expected = [
        (
            "d5935dca-86f2-4ac9-a42c-3593b00af801",
            "2022-02-08T06:22:28.3518405Z",
            "797f4846-ba00-4fd7-ba43-dac1f8f63013",
        ),
        (
            "4d81e7dd-bc8d-4048-9a02-bccc1d945802",
            "2022-02-08T06:22:53.0529653Z",
            "797f4846-ba00-4fd7-ba43-dac1f8f63013",
        ),
        (
            "989c6c81-1332-4d1c-b496-b26124ab9000",
            "2022-02-08T06:22:13.161064Z",
            "00000002-0000-0000-c000-000000000000",
        ),
        (
            "1127d600-5436-4c44-9fa1-d035b3462701",
            "2022-02-08T06:24:46.6703563Z",
            "797f4846-ba00-4fd7-ba43-dac1f8f63013",
        ),
        (
            "f40891a8-ef66-440a-a783-997e10b36801",
            "2022-02-08T06:22:14.2738442Z",
            "797f4846-ba00-4fd7-ba43-dac1f8f63013",
        ),
        (
            "aff44b42-16b3-429b-99c0-5658c6314d01",
            "2022-02-08T06:23:55.1440862Z",
            "797f4846-ba00-4fd7-ba43-dac1f8f63013",
        ),
        (
            "ff10e682-2d33-41b1-bddf-3338823f7f01",
            "2022-02-08T06:24:08.8471332Z",
            "797f4846-ba00-4fd7-ba43-dac1f8f63013",
        ),
    ];
    assert_eq!(records.len(), expected.len());
    for (record, (id, t, resource)) in records.iter().zip(expected) {
        check(
            &one(record),
            json!({
            "event_id": id, "time": time(t), "format": "entra_signin", "kind": "token_issued",
            "identity": "6131d760-7fda-4db5-8bb1-b771898e9f15", "identity_name": "Terraform-Datadog-CLI",
            "identity_type": "application", "tenant": "4bbb79f7-5724-4c9e-95f3-de075f6ec090",
            "scopes": [format!("{resource}/.default")], "src_ip": "1.128.3.4", "outcome": "success",
            "credential_id": "dbcd79c0-c3ea-46b9-9604-ff40d43b8618", "action": "Sign-in activity"}),
        );
    }
}

#[test]
fn entra_managed_identity_sign_ins() {
    let records = lines(&fixture("elastic-azure-signinlogs/test-managed-identity-sample.log"));
    let expected = [
        (
            "a08869a8-3b15-46e4-8de3-273849e60100",
            "b3b975ac-995b-426e-8b5d-363a165df41c",
            "2022-01-24T04:59:49.2279838+00:00",
        ),
        (
            "a300df78-a761-4f2b-b181-c48e5efe0400",
            "b3b975ac-995b-426e-8b5d-363a165df41c",
            "2022-01-24T04:59:40.2272862+00:00",
        ),
        (
            "f17106d8-8648-40e3-883e-fe9b3db23400",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T04:58:22.0158249+00:00",
        ),
        (
            "2ccdd439-6b8c-4e7b-a7d4-8d0c4c07ca00",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T04:58:33.5367099+00:00",
        ),
        (
            "26941260-15d0-43ea-be76-eac699d07301",
            "6528e359-af96-4214-ba42-18723813e564",
            "2022-01-24T04:59:58.1571548+00:00",
        ),
        (
            "5dbba3a3-ccec-44c9-b6a2-5a64515a8900",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T05:02:22.2197479+00:00",
        ),
        (
            "d1d914d5-949a-4e62-a0f8-113f48f2ec00",
            "6528e359-af96-4214-ba42-18723813e564",
            "2022-01-24T05:00:03.346468+00:00",
        ),
        (
            "a08869a8-3b15-46e4-8de3-27382ae70100",
            "b3b975ac-995b-426e-8b5d-363a165df41c",
            "2022-01-24T05:02:51.3929313+00:00",
        ),
        (
            "7f0de093-0b5f-494b-90c0-5fa73db03900",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T05:02:30.922275+00:00",
        ),
        (
            "faa9bd79-1443-4ae7-b267-00ac54619901",
            "b6e10128-f4bf-4134-99c2-ea60b8057ac4",
            "2022-01-24T05:02:13.5873965+00:00",
        ),
        (
            "a6f22ef3-8d09-4c1d-a20a-981fcf210300",
            "b3b975ac-995b-426e-8b5d-363a165df41c",
            "2022-01-24T05:02:58.5215861+00:00",
        ),
        (
            "26941260-15d0-43ea-be76-eac6a2067401",
            "b6e10128-f4bf-4134-99c2-ea60b8057ac4",
            "2022-01-24T05:02:27.9205247+00:00",
        ),
        (
            "31d61360-6c5e-4d03-a113-01f4d973f500",
            "6528e359-af96-4214-ba42-18723813e564",
            "2022-01-24T05:04:40.2454887+00:00",
        ),
        (
            "cea31b26-454e-4005-858f-5e70c180e700",
            "6528e359-af96-4214-ba42-18723813e564",
            "2022-01-24T05:04:44.7581489+00:00",
        ),
        (
            "24ecf645-8809-48b0-a517-e4886ff50400",
            "b3b975ac-995b-426e-8b5d-363a165df41c",
            "2022-01-24T05:05:57.0361585+00:00",
        ),
        (
            "f0d9ac60-f6c1-48c4-bfd2-cf553df50400",
            "b3b975ac-995b-426e-8b5d-363a165df41c",
            "2022-01-24T05:06:04.1987479+00:00",
        ),
        (
            "021e7b20-1831-4fba-b295-f440aa7c3f00",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T05:06:24.9798088+00:00",
        ),
        (
            "021e7b20-1831-4fba-b295-f440b57e3f00",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T05:06:35.9021971+00:00",
        ),
        (
            "d1d914d5-949a-4e62-a0f8-113f5d45ed00",
            "e3d9a3ac-f3d2-40e9-9aa6-ab336823a166",
            "2022-01-24T05:06:24.1113164+00:00",
        ),
        (
            "26941260-15d0-43ea-be76-eac63f717401",
            "b6e10128-f4bf-4134-99c2-ea60b8057ac4",
            "2022-01-24T05:07:53.0673233+00:00",
        ),
        (
            "43a166a9-3f82-4525-be6f-63cef1860100",
            "b3b975ac-995b-426e-8b5d-363a165df41c",
            "2022-01-24T05:09:05.6370136+00:00",
        ),
        (
            "84498794-bd1d-486b-b761-54759b6d8a01",
            "b6e10128-f4bf-4134-99c2-ea60b8057ac4",
            "2022-01-24T05:07:39.0558777+00:00",
        ),
        (
            "3209a641-19e2-41e2-93db-a73898d54000",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T05:10:28.0838653+00:00",
        ),
        (
            "cea31b26-454e-4005-858f-5e7047cae700",
            "6528e359-af96-4214-ba42-18723813e564",
            "2022-01-24T05:09:32.3607568+00:00",
        ),
        (
            "d1d914d5-949a-4e62-a0f8-113f9170ed00",
            "6528e359-af96-4214-ba42-18723813e564",
            "2022-01-24T05:09:27.4439596+00:00",
        ),
        (
            "d84e260f-f76a-4479-af49-8d2c2c44df00",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T05:10:39.3488534+00:00",
        ),
        (
            "29dce79d-20f8-4fe9-b2a8-103dd1abd600",
            "92edba11-5082-45f0-bd5e-7021c9a7e3a7",
            "2022-01-24T05:12:24.7932061+00:00",
        ),
        (
            "6ace2f72-2c4c-4e8f-8be0-d1cf06b5db00",
            "6464370b-b04c-4f06-8687-f0a23a3c52b3",
            "2022-01-24T05:14:50.9041713+00:00",
        ),
        (
            "d90d7c7a-d7f1-4ba4-9655-f5c063f24000",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T05:14:30.6539296+00:00",
        ),
        (
            "3e8148b2-1b3a-4f55-a657-f3203dabcb00",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T05:14:40.9622359+00:00",
        ),
        (
            "9a61b857-7e55-4d43-8e58-e7ef9bcc3900",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T05:26:46.2506325+00:00",
        ),
        (
            "4733a133-4e0f-4a35-bd83-7290b964d100",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T05:30:59.5702268+00:00",
        ),
        (
            "3209a641-19e2-41e2-93db-a73878054200",
            "8e1e40fc-5ec1-4077-b595-08d5cf42fef4",
            "2022-01-24T05:34:52.5307853+00:00",
        ),
    ];
    assert_eq!(records.len(), expected.len());
    for (record, (id, app, created)) in records.iter().zip(expected) {
        let event = one(record);
        assert_eq!(event.event_id, id);
        assert_eq!(event.identity, app);
        assert_eq!(event.time, time(created));
        assert_eq!(event.format.as_str(), "entra_signin");
        assert_eq!(event.kind.as_str(), "token_issued");
        assert_eq!(event.identity_type.as_str(), "managed_identity");
        assert_eq!(event.outcome.as_str(), "success");
        assert_eq!(event.src_ip, None, "managed identities sign in with an empty ipAddress");
    }
    check(
        &one(&records[0]),
        json!({
        "event_id": "a08869a8-3b15-46e4-8de3-273849e60100", "time": "2022-01-24T04:59:49.227983800Z",
        "format": "entra_signin", "kind": "token_issued", "identity": "b3b975ac-995b-426e-8b5d-363a165df41c",
        "identity_name": "testplatformlogslube", "identity_type": "managed_identity",
        "tenant": "4bbb79f7-5724-4c9e-95f3-de075f6ec090", "scopes": ["797f4846-ba00-4fd7-ba43-dac1f8f63013/.default"],
        "outcome": "success", "action": "Sign-in activity"}),
    );
}

/// The target service principal `a7d5dcbe-…` carries its app id twice: `AdditionalDetails` `AppId`
/// and the first name of `TargetId.ServicePrincipalNames` (`a70a7931-…;https://identity.azure.net/…`,
/// a managed identity's); the initiator is the Managed Service Identity service principal (no app
/// id: its `servicePrincipalId`).
#[test]
fn entra_audit_credential_added_to_service_principal() {
    let records = lines(&fixture("elastic-azure-auditlogs/test-audit-logs-sample.log"));
    assert_eq!(records.len(), 3);
    let base = |id: &str, t: &str, kind: &str, action: &str| {
        json!({
        "event_id": id, "time": t, "format": "entra_audit", "kind": kind,
        "identity": "a70a7931-c387-4dce-9f35-fbf95bdcc91e", "identity_name": "billing-test-wus",
        "identity_type": "application", "tenant": "4bbb79f7-5724-4c9e-95f3-de075f6ec090",
        "initiator": "b9814691-9ca1-4e55-a1ac-8ef5dd010ec0", "src_ip": "1.128.3.4", "outcome": "success", "action": action})
    };
    let mut added = base(
        "Directory_53161141-e3f4-4944-85b6-7b953f17265e_6X649_134684731",
        "2022-01-22T18:15:02.516809300Z",
        "credential_change",
        "Add service principal credentials",
    );
    added["credential_id"] = json!("d747da7e-e11b-4af2-aede-0487c44067af");
    check(&one(&records[0]), added);
    check(
        &one(&records[1]),
        base(
            "Directory_53161141-e3f4-4944-85b6-7b953f17265e_6X649_134684743",
            "2022-01-22T18:15:02.516809300Z",
            "app_lifecycle",
            "Update service principal",
        ),
    );
    check(
        &one(&records[2]),
        base(
            "Directory_87979703-118b-498f-99c2-ccd1a56f1a5a_ULAYA_144938566",
            "2022-01-22T18:15:02.387542900Z",
            "app_lifecycle",
            "Update service principal",
        ),
    );
}

#[test]
fn entra_audit_device_updates() {
    let records = lines(&fixture("elastic-azure-auditlogs/test-auditlogs-raw.log"));
    assert_eq!(records.len(), 3);
    let base = |identity_name: Option<&str>, identity_type: &str| {
        let mut v = json!({"event_id": "Directory_ESQ", "time": "2019-10-18T15:30:51.027371600Z", "format": "entra_audit",
            "kind": "admin", "identity_type": identity_type, "tenant": "8a4de8b5-095c-47d0-a96f-a75130c61d53",
            "outcome": "success", "action": "Update device"});
        if let Some(n) = identity_name {
            v["identity_name"] = json!(n);
        }
        v
    };
    let mut by_app = base(Some("Device Registration Service"), "application");
    by_app["identity"] = json!("8a4de8b5-095c-47d0-a96f-a75130c61d53");
    check(&one(&records[0]), by_app);
    let mut by_user = base(Some("User Registration Service"), "user");
    by_user["identity"] = json!("UserName");
    check(&one(&records[1]), by_user);
    let mut by_user = base(None, "user");
    by_user["identity"] = json!("UserName");
    check(&one(&records[2]), by_user);
}

/// 86 rows of the Log Analytics `SigninLogs` table (SOURCE.txt: every row a person's sign-in,
/// `ServicePrincipalName` empty, `ResultType` 0 ×84 and 90072 ×2). Azure Monitor table reference,
/// SigninLogs: `UserPrincipalName` is the user, `CreatedDateTime` when the sign-in was initiated,
/// `ResultType` "0 indicates success; other values are failures", `AADTenantId` the directory
/// (`TenantId` is the Log Analytics workspace), `IPAddress` and `UserAgent` the client's. The app
/// signed in to (`AppId`, e.g. the Azure Portal) is never the identity: these are human events.
#[test]
fn entra_signinlogs_table_rows_are_people_signing_in() {
    let path = fixture("msticpy-aad-signinlogs/SigninLogs.ndjson");
    let records = lines(&path);
    assert_eq!(records.len(), 86);
    let events: Vec<Event> = records.iter().map(|r| one(r)).collect();
    let rows: Vec<Value> = records.iter().map(|r| serde_json::from_str(r).expect("JSON")).collect();
    for (event, row) in events.iter().zip(&rows) {
        assert_eq!(event.event_id, row["Id"].as_str().expect("Id"));
        assert_eq!(event.identity, row["UserPrincipalName"].as_str().expect("UPN"));
        assert_eq!(event.identity_type.as_str(), "user");
        assert_eq!(
            event.time,
            time(row["CreatedDateTime"].as_str().expect("CreatedDateTime"))
        );
        assert_eq!(event.tenant.as_deref(), row["AADTenantId"].as_str());
        assert_eq!(event.src_ip.as_deref(), row["IPAddress"].as_str());
        assert!(
            event.scopes.is_empty(),
            "a person's sign-in grants the app no scope of its own"
        );
        assert_ne!(Some(event.identity.as_str()), row["AppId"].as_str());
        let failed = row["ResultType"] != "0";
        assert_eq!(event.kind.as_str(), if failed { "auth_failure" } else { "sign_in" });
        assert_eq!(
            event.error.as_deref(),
            failed.then(|| row["ResultType"].as_str().expect("code"))
        );
    }
    let count = |kind: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| e.kind.as_str() == kind && e.outcome.as_str() == outcome)
            .count()
    };
    assert_eq!(count("sign_in", "success"), 84);
    assert_eq!(count("auth_failure", "failure"), 2);
    assert!(events.iter().all(|e| !e.identity_type.is_non_human()));
    let agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
               Chrome/81.0.4044.138 Safari/537.36 Edg/81.0.416.72";
    check(
        &events[0],
        json!({"event_id": "f05079ed-f820-4531-ab26-498b53af3800", "time": "2020-05-20T18:19:04Z",
            "format": "entra_signin", "kind": "sign_in", "identity": "ctfuser3@seccxp.ninja",
            "identity_name": "CTFUser3", "identity_type": "user", "tenant": "4b2462a4-bbee-495a-a0e1-f23ae524cc9c",
            "src_ip": "24.13.212.221", "user_agent": agent, "outcome": "success", "action": "Sign-in activity"}),
    );
    check(
        &events[9],
        json!({"event_id": "2a292f6a-7658-495a-92ea-b750ca502b00", "time": "2020-05-20T11:47:15Z",
            "format": "entra_signin", "kind": "auth_failure", "identity": "meganb@seccxp.ninja",
            "identity_name": "Megan Bowens", "identity_type": "user", "tenant": "4b2462a4-bbee-495a-a0e1-f23ae524cc9c",
            "src_ip": "136.55.145.135", "user_agent": agent, "outcome": "failure", "error": "90072",
            "action": "Sign-in activity"}),
    );
}

// ---- Auth0 ----

#[test]
fn auth0_management_api_operations() {
    let records = auth0_records(&fixture("elastic-auth0/test-success-api-ops.excerpt-events1-5.json"));
    assert_eq!(records.len(), 5);
    let chrome = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/95.0.4638.69 Safari/537.36";
    let admin = "auth0|6181ce2b0f293a006d158194";
    // Auth0 log event schema, sapi: `ip` is "the IP of the admin using the manage dashboard"; the
    // record names the admin in `user_id` (and `details.request.auth.user`). A log stream created
    // from the dashboard is the person's admin action, not one of the dashboard's client.
    check(
        &one(&records[0]),
        json!({"event_id": "90020211104001144643223441133851203963552710102024716354",
        "time": "2021-11-04T00:11:39.575Z", "format": "auth0", "kind": "admin", "identity": admin,
        "identity_type": "user", "src_ip": "35.167.74.121",
        "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWeb Kit/537.36 (KHTML, like Gecko) Chrome/95.0.4638.69 Safari/537.36",
        "outcome": "success", "action": "Create a log stream"}),
    );
    let update = one(&records[1]);
    assert_eq!(
        (
            update.kind.as_str(),
            update.identity.as_str(),
            update.identity_type.as_str()
        ),
        ("admin", admin, "user")
    );
    check(
        &one(&records[2]),
        json!({"event_id": "90020211103020611966106762909211229137199648175879618642",
        "time": "2021-11-03T02:06:06.888Z", "format": "auth0", "kind": "app_lifecycle", "identity": "OjVPkOH645QsMFPitAEmQOx2J7NcAYCZ",
        "identity_name": "My Test App", "identity_type": "application", "initiator": admin, "src_ip": "35.167.74.121",
        "user_agent": chrome, "outcome": "success", "action": "Create aclient"}),
    );
    // Auth0 Management API, POST /api/v2/client-grants ("Create client grant"): the grant gives
    // `scope` on `audience` to `client_id`. That client receives the permission; the admin who
    // called the API granted it.
    let grant = one(&records[3]);
    assert_eq!(
        (
            grant.kind.as_str(),
            grant.identity.as_str(),
            grant.identity_type.as_str(),
            grant.initiator.as_deref()
        ),
        (
            "permission_grant",
            "OjVPkOH645QsMFPitAEmQOx2J7NcAYCZ",
            "application",
            Some(admin)
        )
    );
    assert_eq!(grant.action.as_deref(), Some("Create client grant"));
    let raw: Value = serde_json::from_str(&records[3]).expect("json");
    let granted: Vec<&str> = raw["data"]["details"]["response"]["body"]["scope"]
        .as_array()
        .expect("scope array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        json!(grant.scopes),
        scopes(&granted),
        "every granted management scope is carried"
    );
    assert!(grant.scopes.iter().any(|s| s.to_string() == "create:client_grants"));
    check(
        &one(&records[4]),
        json!({"event_id": "90020211103022433749106763107276799719582109303184556114",
        "time": "2021-11-03T02:24:28.694Z", "format": "auth0", "kind": "app_lifecycle", "identity": "OjVPkOH645QsMFPitAEmQOx2J7NcAYCZ",
        "identity_type": "application", "initiator": admin, "src_ip": "35.166.202.113", "user_agent": chrome,
        "outcome": "success", "action": "Delete a client"}),
    );
}

/// An Auth0 tenant log event (Auth0 log event schema: `log_id`, `date`, `type`, `description`,
/// `client_id`, `client_name`, `ip`, `user_agent`, `user_id`, `user_name`, `hostname`), in the
/// log-stream envelope. Ids are made up.
pub(crate) fn auth0(log_id: &str, code: &str, description: &str, extra: Value) -> String {
    let mut data = json!({"date": "2026-03-02T09:15:00.000Z", "type": code, "description": description,
        "client_id": "l87BhM2D7sCdX6e3WWwpf6Fk5d19LjBi", "client_name": "Bedside Charts", "ip": "203.0.113.50",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "hostname": "ehr-dev.eu.auth0.com", "log_id": log_id});
    for (k, v) in extra.as_object().expect("object") {
        data[k] = v.clone();
    }
    json!({"log_id": log_id, "data": data}).to_string()
}

#[test]
fn auth0_people_logins_and_blocks_are_the_persons_not_the_apps() {
    // Auth0 log event type codes: s "Successful Login", f "Failed Login", fp "Failed Login
    // (Incorrect Password)", fu "Failed Login (Invalid Email/Username)", limit_wc "Blocked Account"
    // (an IP reached the maximum failed logins into a single account), limit_mu (an IP blocked
    // for too many failed logins or signups). All are a person at the login page of the client:
    // the person's events (identity_type user), never the client's auth failures.
    let person = "auth0|5f0ccc02d86d8c0013f0e7da";
    let user =
        json!({"user_id": person, "user_name": "ana@example.org", "connection": "Username-Password-Authentication"});
    check(
        &one(&auth0(
            "90020260302091500000000000000000000000000000000000000001",
            "limit_wc",
            "Too many failed login attempts for this account.",
            user.clone(),
        )),
        json!({"event_id": "90020260302091500000000000000000000000000000000000000001", "time": "2026-03-02T09:15:00Z",
        "format": "auth0", "kind": "auth_failure", "identity": person, "identity_name": "ana@example.org",
        "identity_type": "user", "tenant": "ehr-dev.eu.auth0.com", "src_ip": "203.0.113.50",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "outcome": "failure",
        "error": "Too many failed login attempts for this account.", "action": "limit_wc"}),
    );
    let cases = [
        ("fp", "Wrong email or password.", user.clone(), "auth_failure", person),
        ("f", "Invalid user", user.clone(), "auth_failure", person),
        ("s", "Successful login", user.clone(), "sign_in", person),
        (
            "fu",
            "Wrong email or password.",
            json!({"user_name": "nobody@example.org"}),
            "auth_failure",
            "nobody@example.org",
        ),
        (
            "limit_mu",
            "Too many failed login attempts from this IP.",
            json!({}),
            "auth_failure",
            "unidentified",
        ),
    ];
    for (n, (code, description, extra, kind, identity)) in cases.into_iter().enumerate() {
        let e = one(&auth0(
            &format!("9002026030209150000000000000000000000000000000000000001{n}"),
            code,
            description,
            extra,
        ));
        assert_eq!(
            (
                e.kind.as_str(),
                e.identity.as_str(),
                e.identity_type.as_str(),
                e.on_behalf_of.as_deref()
            ),
            (kind, identity, "user", None),
            "{code}"
        );
    }
    // A failed exchange of a person's refresh token (fertft) that names the person is theirs too.
    let e = one(&auth0(
        "90020260302091500000000000000000000000000000000000000020",
        "fertft",
        "Unknown or invalid refresh token.",
        user,
    ));
    assert_eq!(
        (e.kind.as_str(), e.identity.as_str(), e.identity_type.as_str()),
        ("auth_failure", person, "user")
    );
}

#[test]
fn auth0_client_credentials_exchanges_are_the_apps() {
    // Auth0 log event type codes: seccft "Successful exchange of Access Token for a Client
    // Credentials Grant", feccft its failure. Machine to machine: the client is the identity,
    // and its failures feed its own auth-failure rate. `scope` is space-separated (RFC 6749 §3.3).
    let m2m = json!({"client_name": "Lab Results Sync", "audience": "https://fhir.example.org/",
        "scope": "system/Observation.read system/Patient.read"});
    check(
        &one(&auth0(
            "90020260302091500000000000000000000000000000000000000030",
            "seccft",
            "",
            m2m.clone(),
        )),
        json!({"event_id": "90020260302091500000000000000000000000000000000000000030", "time": "2026-03-02T09:15:00Z",
        "format": "auth0", "kind": "token_issued", "identity": "l87BhM2D7sCdX6e3WWwpf6Fk5d19LjBi",
        "identity_name": "Lab Results Sync", "identity_type": "application", "tenant": "ehr-dev.eu.auth0.com",
        "scopes": scopes(&["system/Observation.read", "system/Patient.read"]), "src_ip": "203.0.113.50",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "outcome": "success", "action": "seccft"}),
    );
    let e = one(&auth0(
        "90020260302091500000000000000000000000000000000000000031",
        "feccft",
        "Unauthorized",
        m2m,
    ));
    assert_eq!(
        (
            e.kind.as_str(),
            e.identity.as_str(),
            e.identity_type.as_str(),
            e.error.as_deref()
        ),
        (
            "auth_failure",
            "l87BhM2D7sCdX6e3WWwpf6Fk5d19LjBi",
            "application",
            Some("Unauthorized")
        )
    );
}

#[test]
fn auth0_code_exchanges() {
    let records = auth0_records(&fixture("elastic-auth0/test-token-xchg-success.json"));
    let expected = [
        (
            "90020211104001514276223441402873466602396154780480176194",
            "2021-11-04T00:15:10.907Z",
            "auth0|618223a4e3f49e006948565c",
        ),
        (
            "90020211103032533223115389920819109674646826560562135090",
            "2021-11-03T03:25:29.382Z",
            "auth0|6182002f34f4dd006b05b5c7",
        ),
        (
            "90020211103055356921223355655001812450210017671557152834",
            "2021-11-03T05:53:54.714Z",
            "auth0|6182002f34f4dd006b05b5c7",
        ),
        (
            "90020211103055417070115394218610844695634887352363515954",
            "2021-11-03T05:54:15.863Z",
            "auth0|618223a4e3f49e006948565c",
        ),
        (
            "90020211103070025453223361339703470878590694285033603138",
            "2021-11-03T07:00:21.161Z",
            "auth0|618232c562bac1006935a7af",
        ),
        (
            "90020211103081329169106767059161007825876379053011763282",
            "2021-11-03T08:13:24.290Z",
            "auth0|618223a4e3f49e006948565c",
        ),
        (
            "90020211103081747834106767097563745411754707146353147986",
            "2021-11-03T08:17:46.184Z",
            "auth0|618232c562bac1006935a7af",
        ),
        (
            "90020211103082505159223368972684592755695916615263584322",
            "2021-11-03T08:25:00.234Z",
            "auth0|618232c562bac1006935a7af",
        ),
        (
            "90020211103082528115223369008130297786796845598196629570",
            "2021-11-03T08:25:23.077Z",
            "auth0|618223a4e3f49e006948565c",
        ),
        (
            "90020211103085744439115398741355869453054444297355526194",
            "2021-11-03T08:57:43.955Z",
            "auth0|61823277a44a21007221a59a",
        ),
        (
            "90020211103085843618106767481997320345928494961253154898",
            "2021-11-03T08:58:41.378Z",
            "auth0|61823277a44a21007221a59a",
        ),
        (
            "90020211103102326019106768307491764530844927445776203858",
            "2021-11-03T10:23:21.308Z",
            "auth0|61823277a44a21007221a59a",
        ),
        (
            "90020211103103606684106768432065525613034443117615382610",
            "2021-11-03T10:36:01.665Z",
            "auth0|61823277a44a21007221a59a",
        ),
        (
            "90020211103103728977106768445800131849676250806449340498",
            "2021-11-03T10:37:24.933Z",
            "auth0|6182002f34f4dd006b05b5c7",
        ),
        (
            "90020211103104330288223383260091503229401565368577687618",
            "2021-11-03T10:43:25.246Z",
            "auth0|618232c562bac1006935a7af",
        ),
        (
            "90020211103105137698223384111124505353676723471492579394",
            "2021-11-03T10:51:33.221Z",
            "auth0|61823277a44a21007221a59a",
        ),
        (
            "90020211103105337123223384318518147560205595828304216130",
            "2021-11-03T10:53:33.520Z",
            "auth0|61823277a44a21007221a59a",
        ),
        (
            "90020211103221641308223432165971774216334598458560217154",
            "2021-11-03T22:16:38.865Z",
            "auth0|618232c562bac1006935a7af",
        ),
        (
            "90020211104001514276223441402873466602396154780480176194",
            "2021-11-04T00:15:10.907Z",
            "auth0|618223a4e3f49e006948565c",
        ),
        (
            "90020211104011631432334548139276348032705599973097472098",
            "2021-11-04T01:16:26.371Z",
            "auth0|6183285d6e5071006a61f319",
        ),
        (
            "90020211104011631432334548139276348032705599973097472098",
            "2021-11-04T01:16:26.371Z",
            "auth0|6183285d6e5071006a61f319",
        ),
    ];
    assert_eq!(records.len(), expected.len());
    for (record, (id, date, user)) in records.iter().zip(expected) {
        check(
            &one(record),
            json!({"event_id": id, "time": date, "format": "auth0", "kind": "token_issued",
            "identity": "aI61p8I8aFjmYRliLWgvM9ev97kCCNDB", "identity_name": "Default App", "identity_type": "application",
            "tenant": "dev-yoj8axza.au.auth0.com", "on_behalf_of": user, "src_ip": "114.76.60.57",
            "user_agent": "Go-http-client/2.0", "outcome": "success", "action": "seacft"}),
        );
    }
}

// ---- GCP Cloud Audit Logs ----

#[test]
fn gcp_audit_entries() {
    let records = lines(&fixture("elastic-gcp-audit/test-audit.excerpt-lines1-11.log"));
    let expected = [
        (
            "-uihnmjctwo",
            "xxx@xxx.xxx",
            "user",
            "other",
            "success",
            Some("192.168.1.1"),
            None,
        ),
        (
            "-h6onuze1h7dg",
            "xxx@xxx.xxx",
            "user",
            "other",
            "success",
            Some("192.168.1.1"),
            Some(71),
        ),
        (
            "yonau2dg2zi",
            "xxx@xxx.xxx",
            "user",
            "other",
            "success",
            Some("192.168.1.1"),
            Some(61),
        ),
        (
            "yonau3dc2zi",
            "xxx@xxx.xxx",
            "user",
            "auth_failure",
            "failure",
            Some("192.168.1.1"),
            Some(61),
        ),
        (
            "87efd529-6349-45d2-b905-fc607e6c5d3b",
            "system:serviceaccount:cert-manager:cert-manager-webhook",
            "service_account",
            "other",
            "success",
            Some("10.11.12.13"),
            None,
        ),
        (
            "v2spcwdzmc2",
            "user@mycompany.com",
            "user",
            "admin",
            "success",
            Some("67.43.156.13"),
            None,
        ),
        (
            "-c7ctxmd2zab",
            "user@mycompany.com",
            "user",
            "admin",
            "success",
            Some("67.43.156.13"),
            None,
        ),
        (
            "94170ac4-6e82-4345-98ad-3c780222d19d",
            "xxx@xxx.xxx",
            "user",
            "other",
            "success",
            Some("192.168.1.1"),
            None,
        ),
        (
            "b10a904a-faa4-4e0d-9ec3-7bc6a180196a",
            "xxx@xxx.xxx",
            "user",
            "other",
            "success",
            Some("192.168.1.1"),
            None,
        ),
        (
            "e973134d-b4d5-4e2f-92b8-82bba13fdb92",
            "system:anonymous",
            "unknown",
            "other",
            "success",
            Some("127.0.0.1"),
            None,
        ),
        (
            "03adfb9f-71a3-4f41-9701-29b5542f4d22",
            "system:serviceaccount:kube-system:generic-garbage-collector",
            "service_account",
            "other",
            "success",
            Some("::1"),
            None,
        ),
    ];
    assert_eq!(records.len(), expected.len());
    for (record, (id, identity, identity_type, kind, outcome, ip, records_returned)) in records.iter().zip(expected) {
        let e = one(record);
        let got = (
            e.event_id.as_str(),
            e.identity.as_str(),
            e.identity_type.as_str(),
            e.kind.as_str(),
            e.outcome.as_str(),
            e.src_ip.as_deref(),
            e.records,
        );
        assert_eq!(got, (id, identity, identity_type, kind, outcome, ip, records_returned));
        assert_eq!(e.format.as_str(), "gcp_audit");
    }
    check(
        &one(&records[3]),
        json!({"event_id": "yonau3dc2zi", "time": "2019-12-19T00:44:25.051Z", "format": "gcp_audit",
        "kind": "auth_failure", "identity": "xxx@xxx.xxx", "identity_type": "user", "tenant": "elastic-beats", "records": 61,
        "src_ip": "192.168.1.1",
        "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:71.0) Gecko/20100101 Firefox/71.0,gzip(gfe),gzip(gfe)",
        "outcome": "failure", "error": "PERMISSION_DENIED", "action": "beta.compute.instances.aggregatedList"}),
    );
}

#[test]
fn gcp_workload_identity_token_minting() {
    let records = lines(&fixture("elastic-gcp-audit/test-iamcredentials-googleapis-com.log"));
    assert_eq!(records.len(), 1);
    // IAM Service Account Credentials API, projects.serviceAccounts.generateAccessToken: `name`
    // is the service account "for which the credentials are requested"; the caller
    // (authenticationInfo, here a workload identity pool principal) impersonates it. The token is
    // the service account's, minted on behalf of the caller.
    check(
        &one(&records[0]),
        json!({"event_id": "15djrryd6bap", "time": "2024-11-19T00:49:55.293368631Z",
        "format": "gcp_audit", "kind": "token_issued",
        "identity": "made-up-ci-account@project-id.iam.gserviceaccount.com", "identity_type": "service_account",
        "on_behalf_of": "principal://iam.googleapis.com/projects/project-id/locations/global/workloadIdentityPools/...",
        "tenant": "project-id", "src_ip": "175.16.199.45",
        "user_agent": "Go-http-client/2.0,gzip(gfe)", "outcome": "success", "action": "GenerateAccessToken"}),
    );
}

/// A Cloud Audit Logs entry (LogEntry with a `google.cloud.audit.AuditLog` `protoPayload`),
/// `payload` laid over the common members. Project, accounts and ids are made up.
pub(crate) fn gcp(insert_id: &str, log: &str, payload: Value) -> String {
    let mut p = json!({"@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "authenticationInfo": {"principalEmail": "ana@example.org"},
        "requestMetadata": {"callerIp": "203.0.113.9", "callerSuppliedUserAgent": "google-cloud-sdk gcloud/468.0.0"}});
    for (k, v) in payload.as_object().expect("object") {
        p[k] = v.clone();
    }
    json!({"insertId": insert_id, "logName": format!("projects/ehr-prod/logs/cloudaudit.googleapis.com%2F{log}"),
        "protoPayload": p, "receiveTimestamp": "2026-03-02T10:00:01.123456789Z", "severity": "NOTICE",
        "timestamp": "2026-03-02T10:00:00.5Z"})
    .to_string()
}

#[test]
fn gcp_set_iam_policy_grants_land_on_each_identity_that_receives_a_role() {
    // Cloud IAM, google.iam.v1.logging.AuditData: "Audit log information specific to Cloud IAM",
    // in the AuditLog's serviceData; its policyDelta holds BindingDeltas, "each individual change
    // (only one member in each entry)", action ADD or REMOVE (shape as cloudresourcemanager
    // SetIamPolicy logs it). IAM principal identifiers: serviceAccount:, user: are one principal;
    // group: is a set. One permission grant per identity that receives roles, the caller its
    // initiator; a person receiving a role is a grant to a person (identity_type user).
    let ci = "ci-deployer@ehr-prod.iam.gserviceaccount.com";
    let etl = "etl@ehr-prod.iam.gserviceaccount.com";
    let deltas = json!([
        {"action": "ADD", "member": format!("serviceAccount:{ci}"), "role": "roles/iam.serviceAccountTokenCreator"},
        {"action": "ADD", "member": "group:ops@example.org", "role": "roles/viewer"},
        {"action": "ADD", "member": format!("serviceAccount:{etl}"), "role": "roles/editor"},
        {"action": "REMOVE", "member": "serviceAccount:old@ehr-prod.iam.gserviceaccount.com", "role": "roles/owner"},
        {"action": "ADD", "member": format!("serviceAccount:{ci}"), "role": "roles/storage.objectViewer"},
        {"action": "ADD", "member": "user:bo@example.org", "role": "roles/viewer"},
    ]);
    let record = gcp(
        "-a1b2c3d4e5f6",
        "activity",
        json!({"serviceName": "cloudresourcemanager.googleapis.com", "methodName": "SetIamPolicy",
        "resourceName": "projects/ehr-prod", "status": {},
        "request": {"@type": "type.googleapis.com/google.iam.v1.SetIamPolicyRequest", "resource": "ehr-prod"},
        "serviceData": {"@type": "type.googleapis.com/google.iam.v1.logging.AuditData",
            "policyDelta": {"bindingDeltas": deltas}}}),
    );
    let events = normalize(&record).expect("normalizes");
    let base = |id: &str, identity: &str, identity_type: &str, roles: &[&str]| {
        json!({"event_id": id, "time": "2026-03-02T10:00:00.500Z", "format": "gcp_audit", "kind": "permission_grant",
        "identity": identity, "identity_type": identity_type, "tenant": "ehr-prod", "initiator": "ana@example.org",
        "scopes": scopes(roles), "src_ip": "203.0.113.9", "user_agent": "google-cloud-sdk gcloud/468.0.0",
        "outcome": "success", "action": "SetIamPolicy"})
    };
    assert_eq!(events.len(), 3);
    check(
        &events[0],
        base(
            "-a1b2c3d4e5f6#0",
            ci,
            "service_account",
            &["roles/iam.serviceAccountTokenCreator", "roles/storage.objectViewer"],
        ),
    );
    check(
        &events[1],
        base("-a1b2c3d4e5f6#1", etl, "service_account", &["roles/editor"]),
    );
    check(
        &events[2],
        base("-a1b2c3d4e5f6#2", "bo@example.org", "user", &["roles/viewer"]),
    );

    // Only a group gains a role: no one identity receives it; the caller's admin change.
    let record = gcp(
        "-g1",
        "activity",
        json!({"serviceName": "cloudresourcemanager.googleapis.com", "methodName": "SetIamPolicy",
        "resourceName": "projects/ehr-prod", "serviceData": {"policyDelta": {"bindingDeltas": [
            {"action": "ADD", "member": "group:ops@example.org", "role": "roles/viewer"}]}}}),
    );
    let e = one(&record);
    assert_eq!(
        (
            e.event_id.as_str(),
            e.kind.as_str(),
            e.identity.as_str(),
            e.identity_type.as_str()
        ),
        ("-g1", "admin", "ana@example.org", "user")
    );
    // A single grant keeps the entry's own id.
    let record = gcp(
        "-s1",
        "activity",
        json!({"serviceName": "cloudresourcemanager.googleapis.com", "methodName": "SetIamPolicy",
        "resourceName": "projects/ehr-prod", "serviceData": {"policyDelta": {"bindingDeltas": [
            {"action": "ADD", "member": format!("serviceAccount:{etl}"), "role": "roles/owner"}]}}}),
    );
    let e = one(&record);
    assert_eq!((e.event_id.as_str(), e.identity.as_str()), ("-s1", etl));
}

#[test]
fn gcp_service_account_keys_and_impersonation_land_on_the_service_account() {
    // IAM audit logging, "Example logs for service accounts", and the IAM REST reference
    // (projects.serviceAccounts.keys.create): request.name is
    // projects/{PROJECT_ID|-}/serviceAccounts/{EMAIL|UNIQUE_ID}, resourceName carries the unique
    // id, and a key's name ends in /keys/{KEY_ID}. The key belongs to that service account; the
    // caller made the change.
    let sa = "lab-sync@ehr-prod.iam.gserviceaccount.com";
    let record = gcp(
        "1r2s3t4u5v6w",
        "activity",
        json!({"serviceName": "iam.googleapis.com", "methodName": "google.iam.admin.v1.CreateServiceAccountKey",
        "resourceName": "projects/-/serviceAccounts/112233445566778899001",
        "request": {"@type": "type.googleapis.com/google.iam.admin.v1.CreateServiceAccountKeyRequest",
            "name": format!("projects/-/serviceAccounts/{sa}"), "private_key_type": 2},
        "response": {"@type": "type.googleapis.com/google.iam.admin.v1.ServiceAccountKey",
            "name": format!("projects/ehr-prod/serviceAccounts/{sa}/keys/3fa9c6d1e2b4a5f60718293a4b5c6d7e8f901234"),
            "key_algorithm": 2, "key_origin": 2, "key_type": 1}}),
    );
    check(
        &one(&record),
        json!({"event_id": "1r2s3t4u5v6w", "time": "2026-03-02T10:00:00.500Z", "format": "gcp_audit",
        "kind": "credential_change", "identity": sa, "identity_type": "service_account", "tenant": "ehr-prod",
        "initiator": "ana@example.org", "credential_id": "3fa9c6d1e2b4a5f60718293a4b5c6d7e8f901234",
        "src_ip": "203.0.113.9", "user_agent": "google-cloud-sdk gcloud/468.0.0", "outcome": "success",
        "action": "google.iam.admin.v1.CreateServiceAccountKey"}),
    );
    // Named by unique id only: the LogEntry's resource labels give the e-mail (resource type
    // service_account: email_id, unique_id), else the unique id stands.
    let mut by_id: Value = serde_json::from_str(&gcp(
        "1r2s3t4u5v6x",
        "activity",
        json!({"serviceName": "iam.googleapis.com", "methodName": "google.iam.admin.v1.DeleteServiceAccountKey",
        "resourceName": "projects/-/serviceAccounts/112233445566778899001/keys/0a1b2c3d"}),
    ))
    .expect("json");
    let e = one(&by_id.to_string());
    assert_eq!(
        (
            e.identity.as_str(),
            e.identity_type.as_str(),
            e.credential_id.as_deref()
        ),
        ("112233445566778899001", "service_account", Some("0a1b2c3d"))
    );
    by_id["resource"] =
        json!({"type": "service_account", "labels": {"email_id": sa, "unique_id": "112233445566778899001"}});
    assert_eq!(one(&by_id.to_string()).identity, sa);

    // IAM Service Account Credentials API: signJwt and generateIdToken sign or mint for the
    // service account in `name`, called by someone impersonating it; denied, it is still a token
    // request for that account.
    for (method, status, kind, outcome) in [
        ("SignJwt", json!({}), "token_issued", "success"),
        (
            "GenerateIdToken",
            json!({"code": 7, "message": "PERMISSION_DENIED"}),
            "auth_failure",
            "failure",
        ),
    ] {
        let record = gcp(
            "7y8z9a0b1c2d",
            "data_access",
            json!({"serviceName": "iamcredentials.googleapis.com", "methodName": method,
            "resourceName": "projects/-/serviceAccounts/112233445566778899001", "status": status,
            "request": {"name": format!("projects/-/serviceAccounts/{sa}")}}),
        );
        let e = one(&record);
        assert_eq!(
            (
                e.kind.as_str(),
                e.identity.as_str(),
                e.identity_type.as_str(),
                e.on_behalf_of.as_deref(),
                e.outcome.as_str()
            ),
            (kind, sa, "service_account", Some("ana@example.org"), outcome),
            "{method}"
        );
    }
}

#[test]
fn gcp_entries_without_a_principal_are_kept_unidentified() {
    // VPC Service Controls audit logging: Policy Denied entries (log cloudaudit.googleapis.com/policy,
    // metadata VpcServiceControlAuditMetadata, status PERMISSION_DENIED); the caller's e-mail may
    // be redacted ("Caller identities in audit logs"), leaving authenticationInfo empty. The
    // denial is an event with no known principal, not a dead letter.
    let record = gcp(
        "-vpcsc1",
        "policy",
        json!({"authenticationInfo": {}, "serviceName": "storage.googleapis.com", "methodName": "google.storage.objects.get",
        "resourceName": "projects/_/buckets/ehr-exports/objects/2026-03-01.ndjson",
        "status": {"code": 7, "message": "PERMISSION_DENIED",
            "details": [{"@type": "type.googleapis.com/google.rpc.PreconditionFailure",
                "violations": [{"type": "VPC_SERVICE_CONTROLS", "description": "Request is prohibited by organization's policy."}]}]},
        "metadata": {"@type": "type.googleapis.com/google.cloud.audit.VpcServiceControlAuditMetadata",
            "violationReason": "NO_MATCHING_ACCESS_LEVEL",
            "securityPolicyInfo": {"servicePerimeterName": "accessPolicies/1234/servicePerimeters/ehr", "organizationId": "1234"}}}),
    );
    check(
        &one(&record),
        json!({"event_id": "-vpcsc1", "time": "2026-03-02T10:00:00.500Z", "format": "gcp_audit", "kind": "auth_failure",
        "identity": "unidentified", "identity_type": "unknown", "tenant": "ehr-prod", "src_ip": "203.0.113.9",
        "user_agent": "google-cloud-sdk gcloud/468.0.0", "outcome": "failure", "error": "PERMISSION_DENIED",
        "action": "google.storage.objects.get"}),
    );
}

// ---- AWS CloudTrail ----

#[test]
fn cloudtrail_healthlake_control_plane() {
    check(
        &whole("aws-healthlake-docs/healthlake-cloudtrail-CreateFHIRDatastore.example.json"),
        json!({
        "event_id": "7ef483dc-5dca-469e-823a-7d9e3a7fe924", "time": "2020-11-20T00:08:16Z", "format": "cloudtrail",
        "kind": "admin", "identity": "arn:aws:iam::691207106566:role/full_access_iam_role",
        "identity_name": "full_access_iam_role", "identity_type": "service_account", "tenant": "691207106566",
        "src_ip": "3.213.247.1", "user_agent": "Coral/Netty4", "outcome": "success",
        "credential_id": "AKIAIOSFODNN7EXAMPLE", "action": "healthlake.amazonaws.com:CreateFHIRDatastore"}),
    );
}
