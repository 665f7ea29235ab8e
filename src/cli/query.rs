//! `query`: read-only SQL over the archive, in a query process.

use crate::config::Settings;
use crate::registry::Registry;
use anyhow::{Context, bail};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::*;

/// `query` options.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL text (or give `--saved` or `--file`).
    #[arg(required_unless_present_any = ["file", "saved", "list"], conflicts_with_all = ["file", "saved"])]
    pub sql: Option<String>,
    /// A saved query by name, e.g. `least_privilege` (`--list` shows them and their parameters).
    #[arg(long, short, conflicts_with = "file")]
    pub saved: Option<String>,
    /// Lists the saved queries (name, parameters, what each answers) and exits.
    #[arg(long, exclusive = true)]
    pub list: bool,
    /// A file of SQL.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// A parameter `name=value`, bound to `$name` (integers as integers, anything else as text).
    #[arg(long = "param", short = 'p', value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// The archive: a directory or object-store URL (default: `archive.location`).
    #[arg(long)]
    pub archive: Option<String>,
    /// Identity registry, queryable as the table `integrations` (default: `engine.registry`).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv"])]
    pub format: String,
    /// Run the query this many times and print the fastest and median run time (benchmarks;
    /// each run in its own query process, as the server runs them).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Configuration file (for `archive.*` and query limits).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub(crate) fn parse_param(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected name=value")?;
    let k = k.trim_start_matches('$');
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("`{k}` is not a parameter name (letters, digits, _)"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Queries from outside over the archive at `location`, each in a process of this executable.
pub(crate) fn sandbox(
    location: &str,
    registry: Option<PathBuf>,
    settings: &Settings,
) -> anyhow::Result<crate::replay::sandbox::Sandbox> {
    crate::replay::sandbox::Sandbox::for_archive(location, registry, &settings.raw.archive)
        .context("finding this executable to run queries in")
}

pub(crate) fn query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    if args.list {
        let mut out = std::io::stdout().lock();
        for q in crate::replay::saved::all() {
            let takes: Vec<String> = q.parameters.iter().map(|p| format!("-p {p}=…")).collect();
            writeln!(out, "{}  {}\n    {}", q.name, takes.join(" "), q.description)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let settings = load(args.config.as_deref())?;
    let location = archive_location(args.archive.as_deref(), &settings)?;
    let sql = match (&args.sql, &args.saved, &args.file) {
        (Some(s), _, _) => s.clone(),
        (None, Some(name), _) => {
            let q = crate::replay::saved::get(name)
                .with_context(|| format!("no saved query {name} (`nhiwatch query --list` shows them)"))?;
            q.check_params(args.params.iter().map(|(k, _)| k.as_str()))
                .map_err(anyhow::Error::msg)?;
            q.sql.to_owned()
        }
        (None, None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        (None, None, None) => bail!("give the SQL, --saved NAME or --file"),
    };
    let params = args
        .params
        .iter()
        .map(|(k, v)| {
            let value = match v.parse::<i64>() {
                Ok(n) => serde_json::Value::from(n),
                Err(_) => serde_json::Value::String(v.clone()),
            };
            (k.clone(), value)
        })
        .collect();
    let registry = registry_file(args.registry.as_deref(), &settings);
    if let Some(path) = &registry {
        // A bad registry is the user's error, named before any query runs.
        Registry::load(path)?;
    }
    // The same sandbox as the API's: a query that runs away stops its own process, not this one.
    let sandbox = sandbox(&location, registry, &settings)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let answer = runtime.block_on(async {
        let mut times = Vec::new();
        let mut answer = None;
        for _ in 0..args.repeat.max(1) {
            let t = std::time::Instant::now();
            answer = Some(sandbox.query(&sql, &params).await?);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        if args.repeat > 1 {
            times.sort_by(f64::total_cmp);
            eprintln!(
                "timing: fastest {:.1} ms, median {:.1} ms over {} runs",
                times[0],
                times[times.len() / 2],
                times.len()
            );
        }
        answer.ok_or(crate::replay::QueryError::Invalid("no run".into()))
    });
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout());
    match args.format.as_str() {
        "json" => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
            w.write_batches(&answer.batches.iter().collect::<Vec<_>>())?;
            w.finish()?;
        }
        "csv" => {
            let mut w = datafusion::arrow::csv::Writer::new(&mut out);
            for b in &answer.batches {
                w.write(&crate::replay::for_csv(b)?)?;
            }
        }
        _ => {
            let batches = answer
                .batches
                .iter()
                .map(crate::replay::for_terminal)
                .collect::<Result<Vec<_>, _>>()?;
            writeln!(out, "{}", pretty_format_batches(&batches)?)?
        }
    }
    out.flush()?;
    eprintln!(
        "{} rows{}",
        answer.rows(),
        if answer.truncated {
            " (truncated at archive.max_result_rows)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}
