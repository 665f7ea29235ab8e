//! Normalization throughput per input format, on generated data.
//!
//! `cargo bench --bench normalize` reports events/s for each format the generator writes (the
//! `thrpt` line of each group). The target for later issues is normalize + detect at 500k
//! events/s per core; this bench isolates the normalize half.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nhiwatch::event::SourceFormat;
use nhiwatch::generate::{Options, generate};
use nhiwatch::normalize::{DEFAULT_MAX_RECORD_BYTES, Normalizer, Pseudonymizer, RecordMeta};

fn normalize(c: &mut Criterion) {
    let scenario = generate(&Options {
        identities: 20,
        days: 7,
        ..Options::default()
    });
    let normalizer = Normalizer::new(
        Pseudonymizer::new(b"benchmark-key-not-a-secret").expect("long enough"),
        DEFAULT_MAX_RECORD_BYTES,
    );
    let meta = RecordMeta::default();
    let mut group = c.benchmark_group("normalize");
    for format in SourceFormat::ALL {
        let lines: Vec<&[u8]> = scenario
            .records
            .iter()
            .filter(|r| r.format == *format)
            .map(|r| r.line.as_bytes())
            .take(5_000)
            .collect();
        if lines.is_empty() {
            continue;
        }
        let bytes: usize = lines.iter().map(|l| l.len()).sum();
        group.throughput(Throughput::Elements(lines.len() as u64));
        group.bench_function(format!("{}/{}B-avg", format.as_str(), bytes / lines.len()), |b| {
            let mut out = Vec::with_capacity(4);
            b.iter(|| {
                for line in &lines {
                    out.clear();
                    normalizer
                        .normalize_into(line, &meta, &mut out)
                        .expect("generated records normalize");
                }
                out.len()
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = normalize
}
criterion_main!(benches);
