//! Detection throughput and per-identity memory.
#![allow(clippy::print_stdout)]
//!
//! `cargo bench --bench engine` first prints the state memory for 1M identities shaped like the
//! generated population's common case (a 24/7 interface: three scopes, one network, one user
//! agent, three resource × interaction pairs), as resident-set growth divided by identities,
//! then runs criterion groups:
//! - `engine/process`: the engine alone on normalized events (state update + every detector);
//! - `detect/normalize+engine`: raw generated lines through normalizer and engine, the work of
//!   offline `nhiwatch detect` per core (without file reading);
//! - `detector/<id>`: the engine with only that detector enabled (subtract `detector/none`, the
//!   state update alone, for the detector's own cost);
//! - `scope/covered_by`: SMART scope containment, each event's scopes against a granted set;
//! - `archive/append`: events copied into the archive's Arrow column builders.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use nhiwatch::archive::schema::EventRows;
use nhiwatch::baseline;
use nhiwatch::detect::{Detectors, configured_ids};
use nhiwatch::engine::Engine;
use nhiwatch::event::Event;
use nhiwatch::findings::DetectorId;
use nhiwatch::generate::{Options, generate, normalize_all};
use nhiwatch::normalize::{DEFAULT_MAX_RECORD_BYTES, Normalizer, Pseudonymizer, RecordMeta};
use nhiwatch::registry::Registry;
use nhiwatch::scope::Scope;

fn memory_report() {
    let (held, per) = nhiwatch::bench::state_memory(1_000_000);
    println!("state memory: {held} identities: {per:.0} bytes per identity (target 1024)");
}

/// The generated set both groups run on: its raw lines, their events, the registry.
struct Corpus {
    normalizer: Normalizer,
    registry: Registry,
    lines: Vec<String>,
    events: Vec<Event>,
}

fn corpus() -> Corpus {
    let scenario = generate(&Options {
        identities: 40,
        days: 14,
        ..Options::default()
    });
    let normalizer = Normalizer::new(
        Pseudonymizer::new(b"benchmark-key-not-a-secret").expect("long enough"),
        DEFAULT_MAX_RECORD_BYTES,
    );
    let registry = Registry::parse(&scenario.registry, std::path::Path::new("registry.toml")).expect("valid");
    let events = normalize_all(&scenario.records, &normalizer).expect("generated records normalize");
    let lines = scenario.records.into_iter().map(|r| r.line).collect();
    Corpus {
        normalizer,
        registry,
        lines,
        events,
    }
}

fn engine_process(c: &mut Criterion, corpus: &Corpus) {
    let Corpus {
        normalizer,
        registry,
        lines,
        events,
    } = corpus;
    let meta = RecordMeta::default();
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
            for e in events {
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
            for line in lines {
                out.clear();
                normalizer
                    .normalize_into(line.as_bytes(), &meta, &mut out)
                    .expect("normalizes");
                for e in &out {
                    engine.process(e, e.time, &mut updates);
                }
            }
            black_box(updates.len())
        });
    });
    group.finish();
}

/// The default detectors with only `keep` enabled (none for `None`).
fn only(keep: Option<DetectorId>) -> Detectors {
    Detectors::build(|id| {
        let enabled = Some(id) == keep || (keep == Some(DetectorId::NewNetwork) && id == DetectorId::CredentialSharing);
        Ok(Some((
            std::path::PathBuf::from(format!("{}.toml", id.as_str())),
            format!("enabled = {enabled}\n"),
        )))
    })
    .expect("valid")
}

fn pieces(c: &mut Criterion, corpus: &Corpus) {
    let Corpus { registry, events, .. } = corpus;
    let mut group = c.benchmark_group("detector");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    let ids = std::iter::once(None).chain(configured_ids().map(Some));
    for keep in ids {
        let name = keep.map_or("none", DetectorId::as_str);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut engine = Engine::new(only(keep), Some(registry.clone()), baseline::Settings::default());
                let mut updates = Vec::new();
                for e in events {
                    engine.process(e, e.time, &mut updates);
                }
                black_box(updates.len())
            });
        });
    }
    group.finish();

    let granted = Scope::parse_list("system/Patient.rs system/Observation.rs system/Encounter.r system/*.s");
    let mut group = c.benchmark_group("scope");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("covered_by", |b| {
        b.iter(|| {
            events
                .iter()
                .flat_map(|e| &e.scopes)
                .filter(|s| s.covered_by(&granted))
                .count()
        });
    });
    group.finish();

    let mut group = c.benchmark_group("archive");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("append", |b| {
        b.iter(|| {
            let mut rows = EventRows::default();
            for e in events {
                rows.push(e);
            }
            black_box(rows.finish().expect("batch").num_rows())
        });
    });
    group.finish();
}

fn main() {
    memory_report();
    let mut c = Criterion::default().configure_from_args();
    let corpus = corpus();
    engine_process(&mut c, &corpus);
    pieces(&mut c, &corpus);
    c.final_summary();
}
