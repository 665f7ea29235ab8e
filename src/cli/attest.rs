//! `attest`: the attestation report of a period.

use crate::findings::store::FindingStore;
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::*;

/// `attest` options.
#[derive(Debug, Args)]
pub struct AttestArgs {
    /// Identity registry: the integrations to attest (default: `engine.registry`).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// The archive: a directory or object-store URL (default: `archive.location`).
    #[arg(long)]
    pub archive: Option<String>,
    /// Length of the period, ending at `--to`: a number and a unit (`90d`, `4weeks`, `1month`).
    #[arg(long, default_value = "90d", value_parser = parse_period)]
    pub period: chrono::Duration,
    /// End of the period, excluded: a date (`2026-03-01`, its start UTC) or RFC 3339 time;
    /// default: the end of the newest archived day.
    #[arg(long, value_parser = parse_time)]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// The findings journal (`http.findings_journal` of the service), read only: finding status
    /// as analysts left it. Without it, status is as archived at detection.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Output format.
    #[arg(long, default_value = "html", value_parser = ["html", "csv", "json"])]
    pub format: String,
    /// The report file (`-` for stdout; `--out` is accepted too).
    #[arg(long = "output", short = 'o', alias = "out")]
    pub out: PathBuf,
    /// Configuration file (for `archive.*`, `engine.registry` and query limits).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub(crate) fn parse_period(s: &str) -> Result<chrono::Duration, String> {
    const FORMS: &str = "a number and a unit: 90d, 12weeks, 3months, 36h";
    if s.trim().bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} has no unit: give {FORMS}"));
    }
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e}): give {FORMS}"))?;
    let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
    if d < chrono::Duration::days(1) {
        return Err("the period must be at least one day".into());
    }
    Ok(d)
}

pub(crate) fn attest(args: AttestArgs) -> anyhow::Result<ExitCode> {
    let settings = load(args.config.as_deref())?;
    crate::telemetry::init("warn", false);
    let location = archive_location(args.archive.as_deref(), &settings)?;
    let registry = registry_of(args.registry.as_deref(), &settings)
        .context("no registry: give --registry or set engine.registry")??;
    let journal = args
        .journal
        .as_deref()
        .map(|p| {
            FindingStore::read(p, usize::MAX).with_context(|| format!("reading the findings journal {}", p.display()))
        })
        .transpose()?;
    let limits = crate::replay::Limits {
        max_rows: 1 << 40,
        ..crate::replay::Limits::of(&settings.raw.archive)
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let sql = crate::replay::Sql::open(&location, limits).await?;
        let to = match args.to {
            Some(to) => to,
            None => {
                let newest = sql
                    .query("SELECT max(date) FROM events", &Default::default())
                    .await?
                    .batches
                    .iter()
                    .find_map(|b| {
                        use datafusion::arrow::array::{Array, AsArray};
                        let a = b.column(0).as_string::<i32>();
                        (!a.is_empty() && !a.is_null(0)).then(|| a.value(0).to_owned())
                    })
                    .context("the archive holds no events: give --to, or archive some first")?;
                let day = chrono::NaiveDate::parse_from_str(&newest, "%Y-%m-%d")
                    .with_context(|| format!("archive partition date={newest}"))?;
                (day + chrono::Duration::days(1))
                    .and_hms_opt(0, 0, 0)
                    .context("date out of range")?
                    .and_utc()
            }
        };
        let from = to - args.period;
        anyhow::Ok(crate::attest::build(&sql, &registry, journal.as_ref(), from, to, chrono::Utc::now()).await?)
    })?;
    let bytes = match args.format.as_str() {
        "csv" => crate::attest::csv(&report)?,
        "json" => serde_json::to_vec_pretty(&report)?,
        _ => crate::attest::html(&report).into_bytes(),
    };
    if args.out.as_os_str() == "-" {
        std::io::stdout().write_all(&bytes)?;
    } else {
        std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    }
    eprintln!(
        "attestation of {} integrations from {} to {}: {} need attention ({} with access beyond approval or open findings), \
         {} unregistered identities active; written to {}",
        report.integrations.len(),
        report.from,
        report.to,
        report.needing_attention(),
        report.serious(),
        report.unregistered.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
