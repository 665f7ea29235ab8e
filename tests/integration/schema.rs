//! `schemas/*.schema.json` are kept true: every event the normalizers make from the fixtures and
//! from a generated scenario validates against the Event schema, and every generated gateway line
//! against the gateway access-log schema.

use std::path::Path;

use nhiwatch::event::SourceFormat;
use nhiwatch::generate::{Options, generate};
use serde_json::Value;

use crate::support::*;

fn validator(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(name);
    let schema: Value = serde_json::from_str(&read(&path)).expect("schema is JSON");
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

fn assert_valid(v: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{instance}\n{errors:#?}");
}

#[test]
fn the_schema_rejects_what_the_event_type_forbids() {
    let v = validator("event.schema.json");
    let event = one(&read(
        &external().join("ihe-balp/AuditEvent-ex-auditBasicReadClient.json"),
    ));
    let good = serde_json::to_value(&event).expect("serializes");
    assert_valid(&v, &good);
    for (field, bad) in [
        ("kind", Value::from("reading")),
        ("time", Value::from("yesterday")),
        ("patients", Value::from(vec!["Patient/ex-patient"])),
        ("src_ip", Value::from("myMachine.example.org")),
        ("src_ip", Value::from("IP")),
    ] {
        let mut instance = good.clone();
        instance[field] = bad;
        assert!(!v.is_valid(&instance), "{field} should be rejected");
    }
    let mut extra = good.clone();
    extra["surprise"] = Value::from(1);
    assert!(!v.is_valid(&extra), "unknown fields are rejected");
}

#[test]
fn generated_events_and_gateway_lines_match_their_schemas() {
    let events_schema = validator("event.schema.json");
    let gateway_schema = validator("gateway-access.schema.json");
    let scenario = generate(&Options {
        identities: 10,
        days: 3,
        ..Options::default()
    });
    let normalizer = normalizer();
    let mut formats = std::collections::BTreeSet::new();
    for record in &scenario.records {
        if record.format == SourceFormat::GatewayAccess {
            assert_valid(&gateway_schema, &serde_json::from_str(&record.line).expect("JSON line"));
        }
        let events = normalizer
            .normalize(record.line.as_bytes(), &Default::default())
            .expect("generated records normalize");
        for event in events {
            assert_eq!(event.format, record.format);
            formats.insert(event.format);
            assert_valid(&events_schema, &serde_json::to_value(&event).expect("serializes"));
        }
    }
    assert!(
        formats.len() >= 5,
        "the scenario covers the generated formats: {formats:?}"
    );
}

#[test]
fn fixture_events_match_the_schema() {
    let v = validator("event.schema.json");
    let mut n = 0;
    let mut stack = vec![external()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.to_string_lossy().to_string();
            if name.ends_with("SOURCE.txt") || name.contains("auth0") {
                continue;
            }
            let records = if name.ends_with(".log") {
                lines(&path)
            } else {
                vec![read(&path)]
            };
            for record in records {
                for event in normalize(&record).unwrap_or_default() {
                    assert_valid(&v, &serde_json::to_value(&event).expect("serializes"));
                    n += 1;
                }
            }
        }
    }
    assert!(n > 80, "validated {n} events");
}
