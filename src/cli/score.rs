//! `score`: precision and recall of findings against labels.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `score` options.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// `labels.json` written by `generate`.
    #[arg(long)]
    pub labels: PathBuf,
    /// Findings NDJSON written by `detect`.
    #[arg(long)]
    pub findings: PathBuf,
    /// Minutes a finding may fall outside a label's window and still count.
    #[arg(long, default_value_t = 5)]
    pub slack_minutes: i64,
}

pub(crate) fn score(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let labels: Vec<crate::score::Label> = serde_json::from_slice(
        &std::fs::read(&args.labels).with_context(|| format!("reading {}", args.labels.display()))?,
    )
    .with_context(|| format!("parsing {}", args.labels.display()))?;
    let text =
        std::fs::read_to_string(&args.findings).with_context(|| format!("reading {}", args.findings.display()))?;
    let mut findings = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        findings.push(
            serde_json::from_str::<crate::score::Scored>(line)
                .with_context(|| format!("{}:{}: not a finding", args.findings.display(), n + 1))?,
        );
    }
    let scores = crate::score::score(&labels, &findings, chrono::Duration::minutes(args.slack_minutes));
    print!("{}", crate::score::table(&scores));
    Ok(ExitCode::SUCCESS)
}
