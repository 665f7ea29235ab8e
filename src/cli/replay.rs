//! `replay`: the detectors re-run over the archive of a period.

use crate::findings::Finding;
use crate::runtime::outputs::write_line;
use crate::runtime::{Judge as _, Outputs, Single};
use anyhow::{Context, bail};
use clap::Args;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::*;

/// `replay` options.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The archive: a directory or object-store URL (default: `archive.location`).
    #[arg(long)]
    pub archive: Option<String>,
    /// Start of the period, included: a date (`2026-01-15`, its start UTC) or RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub from: chrono::DateTime<chrono::Utc>,
    /// End of the period, excluded: a date (its start UTC) or RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub to: chrono::DateTime<chrono::Utc>,
    /// The registry and detector settings, if not the configured ones.
    #[command(flatten)]
    pub engine: EngineFiles,
    /// Findings NDJSON, one per line in its final state (`-` for stdout; `--out` is accepted
    /// too).
    #[arg(long, short, alias = "out")]
    pub output: PathBuf,
    /// Compare with the findings archived live for the period; exit 1 when they differ.
    #[arg(long)]
    pub compare: bool,
    /// Configuration file (TOML), laid over the defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub(crate) fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let settings = load(args.config.as_deref())?;
    crate::telemetry::init("warn", false);
    let location = archive_location(args.archive.as_deref(), &settings)?;
    if args.from >= args.to {
        bail!("--from must be before --to");
    }
    // The archive's events are normalized already: they go to the judge as they are, and what
    // it raises stays in it (written below).
    let mut judge = Single::new(args.engine.offline_detection(&settings)?);
    let mut outputs = Outputs::none();
    let limits = crate::replay::Limits {
        max_rows: 1 << 40,
        ..crate::replay::Limits::of(&settings.raw.archive)
    };
    let days = (args.to - args.from).num_days().max(0) as u64 + 1;
    let bar = indicatif::ProgressBar::new(days).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} days  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let (events, archived) = runtime.block_on(async {
        let sql = crate::replay::Sql::open(&location, limits).await?;
        let n = sql
            .events_in(args.from, args.to, |day, events| {
                for event in events {
                    judge.event(None, event, &mut outputs);
                }
                bar.inc(1);
                bar.set_message(day.to_owned());
                Ok(())
            })
            .await?;
        let archived = if args.compare {
            Some(sql.findings_in(args.from, args.to).await?)
        } else {
            None
        };
        anyhow::Ok((n, archived))
    })?;
    bar.finish_and_clear();
    judge.finish(&mut outputs);
    let detection = judge.detection;
    let findings = detection.findings();
    let mut out = event_sink(Some(&args.output))?;
    let mut write_error = None;
    for f in findings {
        write_line(&mut out, f, &mut write_error);
    }
    if let Some(e) = write_error {
        return Err(e).with_context(|| format!("writing {}", args.output.display()));
    }
    out.flush()?;
    eprintln!(
        "replayed {events} events from {} to {} ({} repeats of a record dropped): {} findings in {:.1} s",
        args.from.to_rfc3339(),
        args.to.to_rfc3339(),
        detection.engine().stats().duplicates_total(),
        findings.len(),
        started.elapsed().as_secs_f64()
    );
    eprint!("{}", findings_summary(findings));
    let Some(archived) = archived else {
        return Ok(ExitCode::SUCCESS);
    };
    // Compare what identifies a finding and what it concluded; `detected_at` is the wall clock
    // of the live run and differs by nature.
    let key = |f: &Finding| (f.detector, f.severity, f.count, f.event_time, f.last_event_time);
    let replayed: BTreeMap<&str, &Finding> = findings.iter().map(|f| (f.id.as_str(), f)).collect();
    let live: BTreeMap<&str, &Finding> = archived.iter().map(|f| (f.id.as_str(), f)).collect();
    let only_replay: Vec<&Finding> = replayed
        .iter()
        .filter(|(k, _)| !live.contains_key(*k))
        .map(|(_, f)| *f)
        .collect();
    let only_live: Vec<&Finding> = live
        .iter()
        .filter(|(k, _)| !replayed.contains_key(*k))
        .map(|(_, f)| *f)
        .collect();
    let differ: Vec<(&Finding, &Finding)> = replayed
        .iter()
        .filter_map(|(k, r)| live.get(k).filter(|l| key(l) != key(r)).map(|l| (*l, *r)))
        .collect();
    eprintln!(
        "compared with {} findings archived live: {} identical, {} only in the replay, {} only live, {} different",
        live.len(),
        replayed.len() - only_replay.len() - differ.len(),
        only_replay.len(),
        only_live.len(),
        differ.len()
    );
    let what = |f: &Finding| {
        format!(
            "{} {} {} on {}, {} event(s) {} to {}",
            f.id,
            f.severity,
            f.detector,
            f.identity.id,
            f.count,
            f.event_time.to_rfc3339(),
            f.last_event_time.to_rfc3339()
        )
    };
    for (heading, list) in [("only in the replay", &only_replay), ("only live", &only_live)] {
        for f in list.iter().take(20) {
            eprintln!("  {heading}: {}", what(f));
        }
    }
    for (l, r) in differ.iter().take(20) {
        eprintln!("  different: {}\n    replayed as {}", what(l), what(r));
    }
    let listed = only_replay.len().min(20) + only_live.len().min(20) + differ.len().min(20);
    let total = only_replay.len() + only_live.len() + differ.len();
    if listed < total {
        eprintln!("  ({} more not listed)", total - listed);
    }
    if total > 0 {
        eprintln!(
            "note: the replay starts with empty baselines at --from ({}); identities that had learned before it \
             judge differently until they have learned again. Replay from the archive's first day to compare a whole run.",
            args.from.to_rfc3339()
        );
    }
    Ok(if only_replay.is_empty() && only_live.is_empty() && differ.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
