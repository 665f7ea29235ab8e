//! `detect`: offline detection in event time.

use crate::engine::Detection;
use crate::ingest::file::LineSource;
use crate::normalize::{Normalizer, Pseudonymizer};
use crate::pipeline::Pipeline;
use anyhow::Context;
use clap::Args;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::*;

/// `detect` options.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// NDJSON files of any supported formats, mixed freely (`-` for stdin). Several files are
    /// merged in event-time order.
    #[arg(long = "input", short = 'i', required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Identity registry (overrides `engine.registry`).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Directory of `<detector>.toml` settings (overrides `engine.detectors`).
    #[arg(long)]
    pub detectors: Option<PathBuf>,
    /// Findings NDJSON, one finding per line in its final state (`-` for stdout).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Configuration file (TOML), laid over the defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Also archive the events and findings as Parquet here (a directory or an object-store
    /// URL; overrides `archive.location`).
    #[arg(long)]
    pub archive: Option<String>,
}

pub(crate) fn detect(args: DetectArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let settings = load(args.config.as_deref())?;
    crate::telemetry::init("warn", false);
    let pseudonymizer = match settings.pseudonymizer() {
        Some(p) => p?,
        None => {
            eprintln!("note: no pseudonymisation key is set; patient references use a random key for this run");
            Pseudonymizer::random()
        }
    };
    let engine = build_engine(&settings, args.registry.as_deref(), args.detectors.as_deref())?;
    let lateness = chrono::Duration::seconds(i64::from(settings.raw.engine.lateness_seconds));
    let mut detection = Detection::new(engine, lateness, false);
    let max = settings.raw.ingest.max_record_bytes;
    let mut pipeline = Pipeline::new(Normalizer::new(pseudonymizer, max), dead_letter(&settings)?, max);
    let archive_location = args.archive.clone().or_else(|| settings.archive_location());
    let mut archive = archive_location
        .as_deref()
        .map(|l| crate::archive::Archive::open(l, settings.archive_limits()))
        .transpose()?;
    let mut inputs = Vec::new();
    for path in &args.inputs {
        inputs.push(Input {
            source: LineSource::new(open_input(path)?, &path.display().to_string(), max),
            queue: VecDeque::new(),
            done: false,
        });
    }
    for input in &mut inputs {
        input.fill(&mut pipeline)?;
    }
    // Each file is (nearly) in event-time order; merging them by their next event keeps the
    // stream in order without reading any file whole. The reorder buffer absorbs the rest.
    while let Some(i) = (0..inputs.len())
        .filter(|&i| !inputs[i].queue.is_empty())
        .min_by_key(|&i| inputs[i].queue.front().map(|e| e.time))
    {
        if let Some(mut event) = inputs[i].queue.pop_front() {
            detection.engine().canonicalize(&mut event);
            if let Some(a) = archive.as_mut() {
                a.append_event(&event)?;
            }
            detection.push(event, &mut |_| {});
        }
        inputs[i].fill(&mut pipeline)?;
    }
    detection.finish(&mut |_| {});
    pipeline.flush().context("flushing the dead letter")?;
    if let Some(mut a) = archive {
        for f in detection.findings() {
            a.append_finding(f)?;
        }
        a.flush()?;
        eprintln!("archived to {}", archive_location.unwrap_or_default());
    }
    // The archive keeps what the engine raised (a replay reproduces it); the output is what an
    // analyst sees: one finding per detector × identity × cause, none resolved offline.
    let findings = crate::findings::aggregate(detection.findings());
    let mut out = event_sink(Some(&args.output))?;
    for finding in &findings {
        serde_json::to_writer(&mut out, finding)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = pipeline.stats();
    eprintln!(
        "records {}  events {}  dead letters {}  late {}  duplicates {}  findings {}  in {:.2} s ({:.0} events/s)",
        stats.records,
        stats.events,
        stats.dead_lettered(),
        detection.late(),
        detection.engine().stats().duplicates_total(),
        findings.len(),
        elapsed,
        stats.events as f64 / elapsed
    );
    eprint!("{}", entries_line(stats));
    if !stats.skipped.is_empty() {
        let skipped: Vec<String> = stats.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
        eprintln!("skipped {} ({})", stats.skipped_total(), skipped.join(", "));
    }
    eprint!("{}", findings_summary(&findings));
    Ok(ExitCode::SUCCESS)
}
