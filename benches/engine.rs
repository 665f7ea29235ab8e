//! Detection throughput and per-identity memory.
#![allow(clippy::print_stdout)]
//!
//! `cargo bench --bench engine` first prints the state memory for 1M identities shaped like the
//! generated population's common case (a 24/7 interface: three scopes, one network, one user
//! agent, three resource × interaction pairs), as resident-set growth divided by identities,
//! then runs criterion groups:
//! - `engine/process`: the engine alone on normalized events (state update + every detector);
//! - `detect/normalize+engine`: raw generated lines through normalizer and engine, the work of
//!   offline `nhiwatch detect` per core (without file reading).

use std::hint::black_box;

use chrono::{DateTime, Duration, Utc};
use criterion::{Criterion, Throughput};
use nhiwatch::baseline;
use nhiwatch::detect::Detectors;
use nhiwatch::engine::Engine;
use nhiwatch::event::{Event, EventKind, IdentityType, Interaction, Outcome, SourceFormat};
use nhiwatch::generate::{Options, generate};
use nhiwatch::normalize::{DEFAULT_MAX_RECORD_BYTES, Normalizer, Pseudonymizer, RecordMeta};
use nhiwatch::registry::Registry;
use nhiwatch::scope::Scope;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// The events one identity of the common case shows: a token with three scopes, then reads
/// and searches, from one address, hourly.
fn common_case(identity: &str, start: DateTime<Utc>, out: &mut Vec<Event>) {
    for h in 0..6 {
        let t = start + Duration::hours(h);
        let mut token = Event::new(
            format!("{identity}-t{h}"),
            t,
            SourceFormat::Okta,
            EventKind::TokenIssued,
            identity.into(),
        );
        token.identity_type = IdentityType::Application;
        token.outcome = Outcome::Success;
        token.src_ip = Some("10.20.1.15".into());
        token.user_agent = Some("Mirth Connect/4.4.1".into());
        token.scopes = Scope::parse_list("system/Patient.rs system/Observation.rs system/Encounter.rs");
        out.push(token);
        for (n, (interaction, resource)) in [
            (Interaction::Read, "Patient"),
            (Interaction::Search, "Observation"),
            (Interaction::Search, "Encounter"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = Event::new(
                format!("{identity}-{h}-{n}"),
                t + Duration::minutes(10 + n as i64),
                SourceFormat::FhirAuditEvent,
                EventKind::DataAccess,
                identity.into(),
            );
            e.identity_type = IdentityType::Application;
            e.outcome = Outcome::Success;
            e.interaction = Some(interaction);
            e.resource_type = Some(resource.into());
            e.patient_count = Some(2);
            e.src_ip = Some("10.20.1.15".into());
            e.user_agent = Some("Mirth Connect/4.4.1".into());
            out.push(e);
        }
    }
}

fn memory_report() {
    const N: usize = 1_000_000;
    let start: DateTime<Utc> = "2026-01-05T00:00:00Z".parse().expect("valid");
    let mut engine = Engine::new(Detectors::default(), None, baseline::Settings::default());
    let mut updates = Vec::new();
    let mut events = Vec::with_capacity(32);
    let before = rss_bytes();
    for i in 0..N {
        events.clear();
        common_case(&format!("integration-{i:07}"), start, &mut events);
        for e in &events {
            engine.process(e, e.time, &mut updates);
        }
        updates.clear();
    }
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / N as f64;
    println!(
        "state memory: {} identities, resident set grew {:.1} MiB: {:.0} bytes per identity (target 1024)",
        engine.baseline().len(),
        (after - before) as f64 / (1 << 20) as f64,
        per
    );
}

fn engine_process(c: &mut Criterion) {
    let scenario = generate(&Options {
        identities: 40,
        days: 14,
        ..Options::default()
    });
    let normalizer = Normalizer::new(
        Pseudonymizer::new(b"benchmark-key-not-a-secret").expect("long enough"),
        DEFAULT_MAX_RECORD_BYTES,
    );
    let meta = RecordMeta::default();
    let registry = Registry::parse(&scenario.registry, std::path::Path::new("registry.toml")).expect("valid");
    let mut events = Vec::new();
    for r in &scenario.records {
        normalizer
            .normalize_into(r.line.as_bytes(), &meta, &mut events)
            .expect("generated records normalize");
    }
    let lines: Vec<&[u8]> = scenario.records.iter().map(|r| r.line.as_bytes()).collect();

    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("process", |b| {
        b.iter(|| {
            let mut engine = Engine::new(
                Detectors::default(),
                Some(registry.clone()),
                baseline::Settings::default(),
            );
            let mut updates = Vec::new();
            for e in &events {
                engine.process(e, e.time, &mut updates);
            }
            black_box(updates.len())
        });
    });
    group.finish();

    let mut group = c.benchmark_group("detect");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("normalize+engine", |b| {
        b.iter(|| {
            let mut engine = Engine::new(
                Detectors::default(),
                Some(registry.clone()),
                baseline::Settings::default(),
            );
            let mut updates = Vec::new();
            let mut out = Vec::with_capacity(4);
            for line in &lines {
                out.clear();
                normalizer.normalize_into(line, &meta, &mut out).expect("normalizes");
                for e in &out {
                    engine.process(e, e.time, &mut updates);
                }
            }
            black_box(updates.len())
        });
    });
    group.finish();
}

fn main() {
    memory_report();
    let mut c = Criterion::default().configure_from_args();
    engine_process(&mut c);
    c.final_summary();
}
