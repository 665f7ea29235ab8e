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

use criterion::{Criterion, Throughput};
use nhiwatch::baseline;
use nhiwatch::detect::Detectors;
use nhiwatch::engine::Engine;
use nhiwatch::generate::{Options, generate};
use nhiwatch::normalize::{DEFAULT_MAX_RECORD_BYTES, Normalizer, Pseudonymizer, RecordMeta};
use nhiwatch::registry::Registry;

fn memory_report() {
    let (held, per) = nhiwatch::bench::state_memory(1_000_000);
    println!("state memory: {held} identities: {per:.0} bytes per identity (target 1024)");
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
