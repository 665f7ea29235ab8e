//! Findings on a generated scenario: every labelled anomaly is found, nothing else is, and every
//! finding validates against `schemas/finding.schema.json` and encodes as an OCSF Detection
//! Finding with the attributes class 2004 requires.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::Duration;
use nhiwatch::baseline;
use nhiwatch::detect::Detectors;
use nhiwatch::engine::{Detection, Engine};
use nhiwatch::findings::{Change, Finding, ocsf};
use nhiwatch::generate::{Options, generate};
use nhiwatch::registry::Registry;
use nhiwatch::score::{Scored, score};
use serde_json::Value;

use crate::support::*;

type Run = (Vec<Finding>, Vec<nhiwatch::generate::Label>, Vec<Change>);

/// A small scenario with every anomaly kind, through normalizer and engine (once per binary).
pub fn scenario_findings() -> Run {
    static RUN: std::sync::OnceLock<Run> = std::sync::OnceLock::new();
    RUN.get_or_init(run_scenario).clone()
}

fn run_scenario() -> Run {
    let scenario = generate(&Options {
        identities: 24,
        days: 45,
        seed: 3,
        ..Options::default()
    });
    let registry =
        Registry::parse(&scenario.registry, Path::new("registry.toml")).expect("generated registry is valid");
    let engine = Engine::new(Detectors::default(), Some(registry), baseline::Settings::default());
    let mut detection = Detection::new(engine, Duration::minutes(5), false);
    let normalizer = normalizer();
    let mut changes = Vec::new();
    for record in &scenario.records {
        for event in normalizer
            .normalize(record.line.as_bytes(), &Default::default())
            .expect("generated records normalize")
        {
            detection.push(event, &mut |u| changes.push(u.change));
        }
    }
    detection.finish(&mut |u| changes.push(u.change));
    (detection.findings().to_vec(), scenario.labels, changes)
}

#[test]
fn a_generated_scenario_is_found_exactly() {
    let (findings, labels, _) = scenario_findings();

    let scored: Vec<Scored> = findings.iter().map(Scored::from).collect();
    let scores = score(&labels, &scored, Duration::minutes(5));
    let detectors: BTreeSet<&str> = scores.keys().map(String::as_str).collect();
    assert_eq!(detectors.len(), 12, "every detector is labelled: {detectors:?}");
    for (detector, s) in &scores {
        assert_eq!(
            (s.labels_found, s.findings_correct),
            (s.labels, s.findings),
            "{detector}: {s:?}\n{}",
            nhiwatch::score::table(&scores)
        );
    }
}

#[test]
fn findings_match_their_schema_and_encode_as_ocsf_detection_findings() {
    let (findings, _, changes) = scenario_findings();
    assert!(
        changes.contains(&Change::Escalated),
        "the credential_added escalation happens"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/finding.schema.json");
    let schema: Value = serde_json::from_str(&read(&path)).expect("schema is JSON");
    let v = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles");
    for f in &findings {
        let json = serde_json::to_value(f).expect("serializes");
        let errors: Vec<String> = v
            .iter_errors(&json)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{json}\n{errors:#?}");
        let back: Finding = serde_json::from_value(json).expect("round-trips");
        assert_eq!(&back, f);

        let o = ocsf::encode(f, Change::New);
        assert_eq!(
            (o["class_uid"].as_u64(), o["category_uid"].as_u64()),
            (Some(2004), Some(2))
        );
        assert_eq!(
            (o["activity_id"].as_u64(), o["type_uid"].as_u64()),
            (Some(1), Some(200_401))
        );
        for required in ["time", "metadata", "severity_id", "finding_info"] {
            assert!(!o[required].is_null(), "{required} missing in {o}");
        }
        assert!((1..=5).contains(&o["severity_id"].as_u64().unwrap_or(0)));
        assert!((1..=3).contains(&o["confidence_id"].as_u64().unwrap_or(0)));
        assert_eq!(o["finding_info"]["uid"], Value::from(f.id.clone()));
        assert_eq!(o["metadata"]["product"]["name"], "nhiwatch");
        assert!(o["metadata"]["version"].is_string());
        let analysis = &o["anomaly_analyses"][0];
        assert_eq!(
            analysis["analysis_targets"][0]["name"],
            Value::from(f.identity.id.clone())
        );
        let anomalies = analysis["anomalies"].as_array().expect("anomalies");
        assert_eq!(anomalies.len(), f.analysis.len());
        assert!(
            anomalies
                .iter()
                .all(|a| a["observation_parameter"].is_string() && a["observations"][0]["value"].is_string())
        );
        assert_eq!(o["evidences"].as_array().map(Vec::len), Some(f.evidence.len()));
        assert_eq!(ocsf::encode(f, Change::Escalated)["type_uid"], 200_402);

        // Every finding carries its detector's controls, natively and in OCSF.
        let controls = nhiwatch::findings::controls::of(f.detector);
        assert!(!controls.is_empty());
        assert_eq!(f.controls, controls, "{}", f.detector);
        let compliance = &o["unmapped"]["compliance"];
        let requirements: Vec<String> = controls.iter().map(|c| format!("{} {}", c.framework, c.id)).collect();
        assert_eq!(compliance["requirements"], serde_json::json!(requirements));
        assert_eq!(
            compliance["standards"].as_array().map(Vec::len),
            Some(2),
            "{compliance}"
        );
    }
    let drift = findings
        .iter()
        .find(|f| f.detector.as_str() == "scope_drift")
        .expect("a scope_drift finding");
    let ids: Vec<&str> = drift.controls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["NHI5:2025", "PR.AA-05"]);
}
