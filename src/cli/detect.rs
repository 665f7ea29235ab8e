//! `detect`: offline detection in event time.

use crate::normalize::{Normalizer, Pseudonymizer};
use crate::runtime::{ArchiveFindings, Normalize, Outputs, Runtime, Single};
use clap::Args;
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
    /// The registry and detector settings, if not the configured ones.
    #[command(flatten)]
    pub engine: EngineFiles,
    /// Findings NDJSON, one finding per line in its final state (`-` for stdout; `--out` is
    /// accepted too).
    #[arg(long, short, alias = "out")]
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
    let detection = args.engine.offline_detection(&settings)?;
    let max = settings.raw.ingest.max_record_bytes;
    let normalize = Normalize::new(Normalizer::new(pseudonymizer, max), dead_letter(&settings)?, max)
        .with_workers(settings.raw.ingest.workers());
    let archive_location = args.archive.clone().or_else(|| settings.archive_location());
    let archive = archive_location
        .as_deref()
        .map(|l| crate::archive::Archive::open(l, settings.archive_limits()))
        .transpose()?;
    let archived = archive.is_some();
    // A batch: the archive takes each finding once, in its final state.
    let outputs = Outputs::none().archive(archive, ArchiveFindings::Final);
    let mut runtime = Runtime::new(normalize, Single::new(detection), outputs);
    runtime.merged(open_inputs(&args.inputs)?, max)?;
    runtime.finish();
    let Runtime {
        normalize: pipeline,
        judge: Single { detection, .. },
        mut outputs,
    } = runtime;
    if outputs.archive_failed() {
        anyhow::bail!("the archive stopped taking rows (the error is logged above)");
    }
    if let Some(a) = &mut outputs.archive {
        a.flush()?;
    }
    if archived {
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
    let dead = stats.dead_lettered();
    if dead > 0 {
        eprintln!(
            "{dead} record(s) could not be read; each is in the dead letter, {}, with its reason",
            dead_letter_place(&settings)
        );
    }
    if stats.events == 0 && dead > 0 {
        // Nothing was judged: findings "none" would read as a clean bill of health.
        eprintln!(
            "error: no event could be read from the input (is it one of the supported formats? see the README's \"Supported input formats\")"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
