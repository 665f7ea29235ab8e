//! Property tests of every normalizer and of the dispatcher: arbitrary bytes, arbitrary JSON
//! built from the formats' own keys, XML-ish trees of FHIR's elements, and valid records of each
//! format with random parts replaced, deleted or nested deep. Nothing panics, and every input
//! ends as entries that are each accepted (with events), refused with a known reason, or skipped.
//! Cases are few and small, so the whole runs in seconds.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

/// One valid record of each normalizer, with the shape it is sniffed as.
fn samples() -> Vec<(Shape, String)> {
    let okta = json!({"uuid": "u-1", "published": "2026-01-05T09:00:00.000Z",
        "eventType": "app.oauth2.as.token.grant.access_token",
        "actor": {"id": "0oa-etl", "type": "PublicClientApp", "displayName": "ETL"},
        "client": {"ipAddress": "10.0.0.1"}, "outcome": {"result": "SUCCESS"},
        "debugContext": {"debugData": {"grantedScopes": "system/Patient.read"}},
        "target": [{"id": "AT.abc", "type": "access_token", "detailEntry": {"expires": "2026-01-05T10:00:00.000Z"}}]});
    let gateway = json!({"ts": "2026-01-05T10:00:00Z", "request_id": "r-1", "client_id": "lab-feed", "sub": "u1",
        "scopes": "system/Patient.read", "method": "GET", "path": "/fhir/Patient?name=x", "status": 200,
        "records": 3, "patients": ["9"], "src_ip": "10.0.0.1", "token_issued_at": 1767603600});
    let audit_event = json!({"resourceType": "AuditEvent", "id": "ae-1", "recorded": "2026-01-05T09:00:00Z",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "agent": [{"type": {"coding": [{"code": "110153"}]}, "who": {"identifier": {"value": "lab-feed"}},
                   "network": {"address": "10.0.0.1", "type": "2"}, "policy": ["tok"]},
                  {"type": {"coding": [{"code": "110152"}]}, "who": {"reference": "Device/fhir"},
                   "network": {"address": "https://fhir.example.org", "type": "5"}}],
        "source": {"observer": {"display": "gateway"}},
        "entity": [{"what": {"reference": "Patient/9"}, "role": {"code": "1"}},
                   {"role": {"code": "24"}, "query": "R0VUIC9maGlyL1BhdGllbnQvOSBIVFRQLzEuMQ=="}]});
    let bundle = json!({"resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": audit_event}, {"resource": {"resourceType": "Patient", "id": "9"}}]});
    let xml = r#"<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/><entry><resource><AuditEvent><id value="x-1"/><recorded value="2026-01-05T09:00:00Z"/><subtype><system value="http://hl7.org/fhir/restful-interaction"/><code value="search-type"/></subtype><agent><type><coding><code value="110153"/></coding></type><who><display value="lab-feed"/></who><requestor value="false"/></agent><entity><what><reference value="Patient/9"/></what><role><code value="1"/></role></entity></AuditEvent></resource></entry></Bundle>"#;
    let keycloak = json!({"id": "k-1", "time": 1767603600000u64, "type": "CLIENT_LOGIN", "realmId": "r",
        "clientId": "svc", "ipAddress": "10.0.0.2", "details": {"grant_type": "client_credentials", "scope": "openid"}});
    let line = "2021-10-22 21:20:42,120 WARN  [org.keycloak.events] (default task-2) type=CLIENT_LOGIN, realmId=test, \
        clientId=svc, userId=null, ipAddress=172.18.0.1, grant_type=client_credentials";
    let ecs = json!({"@timestamp": "2021-10-22T21:01:45.403Z", "log.logger": "org.keycloak.events",
        "message": "type=CLIENT_LOGIN, realmId=r, clientId=svc, userId=null, ipAddress=10.0.0.1"});
    let entra_signin = json!({"time": "2026-03-02T11:10:03Z", "category": "ServicePrincipalSignInLogs",
        "operationName": "Sign-in activity", "properties": {"id": "s-1", "createdDateTime": "2026-03-02T11:10:03Z",
        "appId": "6131d760-00a0-4c4e-9a8e-1d2d3c4b5a69", "servicePrincipalId": "b029d485-a308-4311-8720-fb3192e5284e",
        "servicePrincipalName": "lab-feed", "ipAddress": "10.20.1.11", "status": {"errorCode": 0}}});
    let entra_audit = json!({"time": "2026-03-02T11:10:03Z", "category": "AuditLogs",
        "operationName": "Add service principal credentials", "properties": {"id": "a-1",
        "activityDateTime": "2026-03-02T11:10:03Z", "activityDisplayName": "Add service principal credentials",
        "initiatedBy": {"user": {"userPrincipalName": "admin@example.org"}},
        "targetResources": [{"id": "b029d485-a308-4311-8720-fb3192e5284e", "type": "ServicePrincipal", "displayName": "lab-feed"}],
        "result": "success"}});
    let auth0 = json!({"log_id": "l-1", "data": {"date": "2026-01-05T10:00:00Z", "type": "seccft",
        "client_id": "c1", "client_name": "svc", "ip": "10.0.0.1", "scope": "read:patients"}});
    let gcp = json!({"protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "authenticationInfo": {"principalEmail": "etl@p.iam.gserviceaccount.com"},
        "serviceName": "healthcare.googleapis.com",
        "methodName": "google.cloud.healthcare.v1.fhir.FhirService.ReadResource",
        "resourceName": "projects/p/locations/l/datasets/d/fhirStores/s/fhir/Patient/1",
        "requestMetadata": {"callerIp": "10.0.0.1"}, "status": {}},
        "insertId": "i-1", "logName": "projects/p/logs/cloudaudit.googleapis.com%2Fdata_access",
        "timestamp": "2026-01-05T10:00:00Z"});
    let cloudtrail = json!({"eventVersion": "1.08", "eventSource": "healthlake.amazonaws.com",
        "eventName": "ReadResource", "eventTime": "2026-01-05T10:00:00Z", "eventID": "e-1",
        "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/etl/s",
            "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::1:role/etl", "userName": "etl"}}},
        "sourceIPAddress": "10.0.0.1"});
    vec![
        (Shape::Okta, okta.to_string()),
        (Shape::Gateway, gateway.to_string()),
        (Shape::FhirJson, audit_event.to_string()),
        (Shape::FhirJson, bundle.to_string()),
        (Shape::FhirXml, xml.to_owned()),
        (Shape::KeycloakJson, keycloak.to_string()),
        (Shape::KeycloakLine, line.to_owned()),
        (Shape::KeycloakEcs, ecs.to_string()),
        (Shape::EntraSignIn, entra_signin.to_string()),
        (Shape::EntraAudit, entra_audit.to_string()),
        (Shape::Auth0, auth0.to_string()),
        (Shape::GcpAudit, gcp.to_string()),
        (Shape::CloudTrail, cloudtrail.to_string()),
    ]
}

/// The keys the formats read, so that arbitrary objects reach past the first lookups.
const KEYS: &[&str] = &[
    "resourceType",
    "AuditEvent",
    "Bundle",
    "entry",
    "resource",
    "agent",
    "who",
    "identifier",
    "value",
    "reference",
    "display",
    "type",
    "coding",
    "code",
    "system",
    "recorded",
    "subtype",
    "entity",
    "role",
    "query",
    "what",
    "network",
    "address",
    "policy",
    "source",
    "observer",
    "eventType",
    "actor",
    "published",
    "target",
    "detailEntry",
    "outcome",
    "result",
    "client",
    "ipAddress",
    "debugContext",
    "debugData",
    "ts",
    "client_id",
    "method",
    "path",
    "status",
    "patients",
    "scopes",
    "realmId",
    "clientId",
    "time",
    "details",
    "log.logger",
    "message",
    "@timestamp",
    "category",
    "operationName",
    "properties",
    "appId",
    "createdDateTime",
    "servicePrincipalId",
    "initiatedBy",
    "targetResources",
    "TimeGenerated",
    "Type",
    "log_id",
    "data",
    "date",
    "protoPayload",
    "logName",
    "insertId",
    "authenticationInfo",
    "principalEmail",
    "serviceName",
    "methodName",
    "resourceName",
    "serviceData",
    "policyDelta",
    "bindingDeltas",
    "member",
    "action",
    "eventVersion",
    "eventSource",
    "eventName",
    "userIdentity",
    "@odata.context",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(KEYS).prop_map(str::to_owned), 1 => ".{0,8}"]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(
            &[
                "2026-01-05T10:00:00Z",
                "110153",
                "110152",
                "read",
                "AuditEvent",
                "5",
                "10.0.0.1",
                "SUCCESS",
                "ADD",
                "serviceAccount:a@p.iam.gserviceaccount.com",
                "Patient/9",
                "GET",
                "/fhir/Patient/9"
            ][..]
        )
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

/// Arbitrary JSON of bounded size, its keys mostly the formats' own.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// XML-ish text: FHIR's element names nested at random, `value` attributes, now and then a
/// broken tag or an entity.
fn xml_text() -> impl Strategy<Value = String> {
    let name = prop::sample::select(
        &[
            "AuditEvent",
            "Bundle",
            "entry",
            "resource",
            "agent",
            "who",
            "display",
            "identifier",
            "value",
            "recorded",
            "type",
            "coding",
            "code",
            "subtype",
            "entity",
            "what",
            "reference",
            "role",
            "network",
            "address",
            "div",
            "x",
        ][..],
    );
    let text = prop_oneof![
        Just(String::new()),
        ".{0,8}".prop_map(|s| s.replace(['<', '>', '&', '"'], "")),
        Just("&amp;".to_owned()),
        Just("&bogus;".to_owned())
    ];
    let element = (name.clone(), prop::option::of(text)).prop_map(|(n, v)| match v {
        Some(v) => format!(r#"<{n} value="{v}"/>"#),
        None => format!("<{n}/>"),
    });
    element.prop_recursive(5, 64, 5, move |inner| {
        (
            name.clone(),
            prop::collection::vec(inner, 0..5),
            prop_oneof![8 => Just(""), 1 => Just("</oops>"), 1 => Just("<")],
        )
            .prop_map(|(n, children, junk)| format!("<{n}>{}{junk}</{n}>", children.concat()))
    })
}

/// A path in a JSON tree.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                here.push(Step::Key(k.clone()));
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                here.push(Step::Index(i));
                paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Index(i) => v.get_mut(*i),
    })
}

/// What to do to one part of a valid record.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Value),
    Remove,
    /// Nest it this deep in arrays (past the limit, or not).
    Bury(usize),
    Repeat,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => json_value().prop_map(Mutation::Replace),
        2 => Just(Mutation::Remove),
        1 => prop_oneof![Just(10usize), Just(MAX_DEPTH + 10)].prop_map(Mutation::Bury),
        1 => Just(Mutation::Repeat),
    ]
}

fn mutate(v: &mut Value, edits: &[(prop::sample::Index, Mutation)]) {
    for (index, edit) in edits {
        let mut all = Vec::new();
        paths(v, &mut Vec::new(), &mut all);
        let path = index.get(&all).clone();
        match edit {
            Mutation::Remove => {
                if let Some((last, parent)) = path.split_last()
                    && let Some(parent) = at_mut(v, parent)
                {
                    match (parent, last) {
                        (Value::Object(map), Step::Key(k)) => drop(map.remove(k.as_str())),
                        (Value::Array(items), Step::Index(i)) if *i < items.len() => drop(items.remove(*i)),
                        _ => {}
                    }
                }
            }
            edit => {
                if let Some(target) = at_mut(v, &path) {
                    *target = match edit {
                        Mutation::Replace(new) => new.clone(),
                        Mutation::Bury(depth) => {
                            let mut buried = target.take();
                            for _ in 0..*depth {
                                buried = Value::Array(vec![buried]);
                            }
                            buried
                        }
                        _ => Value::Array(vec![target.take(), target.clone()]),
                    };
                }
            }
        }
    }
}

/// Normalizes `raw` whole (sniffing, pages, Bundles) and checks the accounting.
fn check_record(raw: &[u8]) -> Result<Entries<'_>, TestCaseError> {
    let n = Normalizer::new(
        Pseudonymizer::new(b"proptest-key-of-enough-bytes").expect("key"),
        1 << 16,
    );
    let mut out = Vec::new();
    let entries = n.normalize_record(raw, &RecordMeta::default(), &mut out);
    prop_assert!(entries.total >= 1);
    prop_assert_eq!(
        entries.total,
        entries.accepted + entries.rejected.len() + entries.skipped.len()
    );
    prop_assert_eq!(entries.events, out.len());
    prop_assert!(entries.events >= entries.accepted);
    for error in entries
        .rejected
        .iter()
        .map(|r| &r.error)
        .chain(entries.skipped.iter().map(|s| &s.error))
    {
        prop_assert!(ParseError::REASONS.contains(&error.reason()), "{}", error.reason());
    }
    for rejected in &entries.rejected {
        if let Some(element) = rejected.element {
            let raw = std::str::from_utf8(raw).expect("an element is text of the record");
            prop_assert!(raw.contains(element.raw), "an element's text is part of the record");
        }
    }
    for skipped in &entries.skipped {
        prop_assert!(matches!(skipped.error.reason(), "empty" | "not_audit_event"));
    }
    Ok(entries)
}

/// Runs one normalizer on `text` directly, whatever its shape, as one entry.
fn check_normalizer(shape: Shape, text: &str) -> Result<bool, TestCaseError> {
    let n = Normalizer::new(
        Pseudonymizer::new(b"proptest-key-of-enough-bytes").expect("key"),
        1 << 16,
    );
    let meta = RecordMeta::default();
    let ctx = Ctx {
        pseudonymizer: n.pseudonymizer(),
        raw: text,
        meta: &meta,
    };
    let (mut out, mut entries) = (Vec::new(), Entries::default());
    Judge::new(&mut out, &mut entries).entry(None, || text, |out| n.one(shape, &ctx, out));
    prop_assert_eq!(entries.total, 1);
    match entries.rejected.first() {
        Some(rejected) => {
            prop_assert!(out.is_empty());
            prop_assert!(ParseError::REASONS.contains(&rejected.error.reason()));
            Ok(false)
        }
        None => {
            prop_assert!(!out.is_empty(), "{shape:?} accepted without an event");
            Ok(true)
        }
    }
}

/// Every sample is a valid record of its format: the mutations start from something real.
#[test]
fn every_sample_normalizes_as_its_shape() {
    for (shape, text) in samples() {
        assert_eq!(sniff(&text).expect("sniffs"), shape, "{text}");
        let entries = check_record(text.as_bytes()).expect("accounted");
        assert!(entries.rejected.is_empty(), "{shape:?}: {:?}", entries.rejected);
        assert!(entries.accepted >= 1, "{shape:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_accounted_for(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_record(&bytes)?;
    }

    #[test]
    fn arbitrary_text_with_openings_of_every_shape_is_accounted_for(
        opening in prop::sample::select(&["{", "[", "<", "<AuditEvent>", "[{", "{\"resourceType\":\"Bundle\",", "21:01:45,403 WARN  [org.keycloak.events] (t) ", ""][..]),
        rest in ".{0,64}",
    ) {
        check_record(format!("{opening}{rest}").as_bytes())?;
    }

    /// Arbitrary JSON into the dispatcher and, forced, into every normalizer.
    #[test]
    fn arbitrary_json_into_every_normalizer(value in json_value()) {
        let text = value.to_string();
        check_record(text.as_bytes())?;
        for shape in [Shape::Gateway, Shape::FhirJson, Shape::Okta, Shape::KeycloakJson, Shape::KeycloakEcs,
                      Shape::EntraSignIn, Shape::EntraAudit, Shape::Auth0, Shape::GcpAudit, Shape::CloudTrail] {
            check_normalizer(shape, &text)?;
        }
    }

    #[test]
    fn xml_ish_trees_into_the_fhir_normalizer(root in prop::sample::select(&["AuditEvent", "Bundle"][..]), body in prop::collection::vec(xml_text(), 0..4)) {
        let text = format!("<{root} xmlns=\"http://hl7.org/fhir\">{}</{root}>", body.concat());
        check_record(text.as_bytes())?;
        check_normalizer(Shape::FhirXml, &text)?;
    }

    #[test]
    fn keycloak_lines_with_arbitrary_fields(fields in prop::collection::vec((key(), ".{0,10}"), 0..8)) {
        let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let line = format!("21:01:45,403 WARN  [org.keycloak.events] (default task-1) {}", pairs.join(", "));
        check_record(line.as_bytes())?;
        check_normalizer(Shape::KeycloakLine, &line)?;
    }

    /// Valid records of each format with parts replaced, removed, buried deep or repeated: through
    /// their normalizer and the dispatcher, alone and as the second element of a page whose first
    /// is the valid record (which still passes).
    #[test]
    fn mutated_records_of_every_format(which in any::<prop::sample::Index>(), edits in prop::collection::vec((any::<prop::sample::Index>(), mutation()), 1..4)) {
        let samples = samples();
        let (shape, text) = which.get(&samples);
        match shape {
            Shape::FhirXml | Shape::KeycloakLine => {
                // Text formats: cut and splice instead.
                let cut = edits.len() * 37 % text.len();
                let mutated = format!("{}{}", &text[..cut], &text[cut..].replacen("value=", "", edits.len()));
                check_record(mutated.as_bytes())?;
                check_normalizer(*shape, &mutated)?;
            }
            _ => {
                let mut value: Value = serde_json::from_str(text).expect("sample JSON");
                mutate(&mut value, &edits);
                let mutated = value.to_string();
                check_record(mutated.as_bytes())?;
                check_normalizer(*shape, &mutated)?;
                let page = format!("[{text}, {mutated}]");
                let entries = check_record(page.as_bytes())?;
                prop_assert_eq!(entries.total, 2);
                prop_assert!(entries.accepted >= 1, "the valid element passes: {:?}", entries.rejected);
            }
        }
    }
}
