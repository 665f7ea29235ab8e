//! `run`: the service — all roles — over Kafka, or over files and stdin.

use crate::config::Settings;
use crate::engine::state::{Restored, StateStore};
use crate::engine::{Detection, Engine};
use crate::findings::store::FindingStore;
use crate::http::auth::Auth;
use crate::http::{AppState, ConnectionLimits};
use crate::ingest::Offsets;
use crate::kafka;
use crate::normalize::{Normalizer, Pseudonymizer};
use crate::runtime::{Announce, ArchiveFindings, Normalize, Outputs, Runtime, Single};
use crate::sink::Sinks;
use crate::telemetry::metrics::Metrics;
use anyhow::{Context, bail};
use clap::Args;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML), laid over the defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Read these NDJSON files (`-` for stdin) instead of Kafka.
    #[arg(long = "input", short = 'i')]
    pub inputs: Vec<PathBuf>,
    /// Write normalized events as NDJSON to this file (`-` for stdout).
    #[arg(long)]
    pub events_out: Option<PathBuf>,
    /// Write findings as NDJSON to this file (`-` for stdout), each new or updated finding as it
    /// happens.
    #[arg(long)]
    pub findings_out: Option<PathBuf>,
    /// What this instance does (README, "Running a group").
    #[arg(long, value_enum, default_value_t = Role::All)]
    pub role: Role,
}

/// What a `run` instance does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Everything, alone: normalize the raw topics and detect, with checkpoints in `state.dir`.
    All,
    /// Normalize the raw topics and publish each event to `kafka.events_topic`, keyed by identity.
    Rekey,
    /// One member of a group consuming `kafka.events_topic`: detect on the partitions it is
    /// assigned, their state in `kafka.changelog_topic`.
    Detect,
}

pub(crate) fn run_service(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = load(args.config.as_deref())?;
    crate::telemetry::init(
        &settings.raw.log.filter,
        settings.raw.log.format == crate::telemetry::LogFormat::Json,
    );
    let pseudonymizer = match settings.pseudonymizer() {
        Some(p) => p?,
        None => bail!(
            "no pseudonymisation key: set NHIWATCH_PSEUDONYM_KEY (at least {} bytes) or pseudonymisation.key",
            Pseudonymizer::MIN_KEY_BYTES
        ),
    };
    let max = settings.raw.ingest.max_record_bytes;
    let metrics = Arc::new(Metrics::default());
    let normalize = Normalize::new(Normalizer::new(pseudonymizer, max), dead_letter(&settings)?, max)
        .with_metrics(Arc::clone(&metrics))
        .with_workers(settings.raw.ingest.workers());
    let engine = build_engine(&settings, None, None)?;
    let lateness = settings.raw.engine.lateness();
    let from_kafka = args.inputs.is_empty();
    if args.role != Role::All {
        if !from_kafka {
            let role = clap::ValueEnum::to_possible_value(&args.role).map(|v| v.get_name().to_owned());
            bail!(
                "--role {} reads Kafka; --input is for --role all",
                role.unwrap_or_default()
            );
        }
        return run_role(args, &settings, normalize, engine, lateness, metrics);
    }
    let state_cfg = &settings.raw.state;
    // Checkpoints belong to the Kafka service: a file run is a batch, read whole each time.
    let (single, resume) = if from_kafka && !state_cfg.dir.as_os_str().is_empty() {
        let (store, restored) = StateStore::open(&state_cfg.dir, state_cfg.keep, engine, lateness, true)
            .with_context(|| format!("opening the checkpoints (state.dir in {})", settings.origin))?;
        report_restore(&restored);
        let saved = restored.from.is_some().then(|| restored.offsets.clone());
        // Findings wait for the checkpoint of the state that raised them (README, "Restarts").
        let detection = restored
            .detection
            .with_max_waiting(settings.raw.engine.max_waiting_events)
            .with_history(settings.raw.http.max_findings)
            .holding();
        (Single::new(detection).checkpointed(store, saved), restored.offsets)
    } else {
        if from_kafka {
            tracing::warn!(
                "No state directory (state.dir): baselines are not checkpointed, and a restart learns every identity again."
            );
        }
        let detection = Detection::new(engine, lateness, true)
            .with_max_waiting(settings.raw.engine.max_waiting_events)
            .with_history(settings.raw.http.max_findings);
        (Single::new(detection), Offsets::default())
    };
    // Inputs that cannot be opened fail the run before anything starts (the HTTP server did).
    let inputs = (!from_kafka).then(|| open_inputs(&args.inputs)).transpose()?;
    let runtime = tokio::runtime::Runtime::new()?;
    // A file run is a batch: Ctrl-C keeps its default there.
    let stop = from_kafka.then(|| StopSignals::take(&runtime)).transpose()?;
    let quiet = single.detection.engine().detectors().quiet_periods();
    let (store, sinks) = findings_store(&settings, quiet, &runtime, &metrics)?;
    let ready = Arc::new(AtomicBool::new(false));
    // The archive exists before the API serves queries over it.
    let outputs = service_outputs(&settings, &args, &store, &metrics)?;
    serve_http(
        &settings,
        &runtime,
        single.detection.engine(),
        None,
        Arc::clone(&store),
        &metrics,
        (&ready, from_kafka),
    )?;
    let mut service = Runtime::new(normalize, single, outputs);
    if let Some(stop) = stop {
        runtime.block_on(async {
            let consumer = kafka::subscribe(&settings.raw.kafka, Some(Arc::clone(&metrics)), resume)?;
            tracing::info!(brokers = %settings.raw.kafka.brokers, topics = ?settings.raw.kafka.topics, "Consuming.");
            // Ready once subscribed and caught up (lag from librdkafka statistics).
            ready.store(true, Ordering::Release);
            let interval = std::time::Duration::from_secs(state_cfg.interval_seconds);
            let align = kafka::Align {
                bound: lateness.max(chrono::Duration::minutes(1)),
                idle_after: std::time::Duration::from_secs(settings.raw.kafka.idle_partition_seconds),
            };
            consume_until_stopped(&consumer, &mut service, &metrics, interval, Some(align), stop).await
        })?;
    } else if let Some(inputs) = inputs {
        // Reading its inputs (a file, or stdin as it arrives) is all a file run does.
        ready.store(true, Ordering::Release);
        service.files(inputs, max)?;
    }
    service.finish();
    let Runtime {
        normalize,
        judge,
        outputs,
    } = service;
    close_outputs(outputs, sinks, &runtime)?;
    eprint!("{}", summary(normalize.stats(), 10));
    eprint!(
        "{}",
        findings_summary(&crate::findings::aggregate(judge.detection.findings()))
    );
    Ok(ExitCode::SUCCESS)
}

/// The outputs of a service: archive (each change), findings store, metrics, the log, and the
/// NDJSON streams asked for.
fn service_outputs(
    settings: &Settings,
    args: &RunArgs,
    store: &Arc<FindingStore>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Outputs> {
    Ok(Outputs::none()
        .archive(open_archive(settings)?, ArchiveFindings::EachChange)
        .store(Arc::clone(store))
        .metrics(Arc::clone(metrics))
        .announce(Announce::Log)
        .findings_out(output(args.findings_out.as_ref())?)
        .events_out(args.events_out.as_ref().map(|p| output(Some(p))).transpose()?))
}

/// `run --role rekey` or `--role detect`: one part of a group deployment (see [`crate::group`]).
pub(crate) fn run_role(
    args: RunArgs,
    settings: &Settings,
    normalize: Normalize,
    engine: Engine,
    lateness: chrono::Duration,
    metrics: Arc<Metrics>,
) -> anyhow::Result<ExitCode> {
    let kafka = &settings.raw.kafka;
    let runtime = tokio::runtime::Runtime::new()?;
    let stop = StopSignals::take(&runtime)?;
    let ready = Arc::new(AtomicBool::new(false));
    let interval = std::time::Duration::from_secs(settings.raw.state.interval_seconds);
    let registry = engine.registry().cloned();
    if args.role == Role::Rekey {
        // Health, readiness and metrics; no findings are made here.
        serve_http(
            settings,
            &runtime,
            &engine,
            None,
            Arc::new(FindingStore::in_memory(1)),
            &metrics,
            (&ready, true),
        )?;
        let rekey = crate::group::Rekey::new(kafka, registry)?;
        let mut rekey = Runtime::new(normalize, rekey, Outputs::none());
        let group = format!("{}-rekey", kafka.group_id);
        runtime.block_on(async {
            let consumer = kafka::subscribe_to(
                kafka,
                &group,
                &kafka.topics,
                Some(Arc::clone(&metrics)),
                Offsets::default(),
                None,
            )?;
            tracing::info!(topics = ?kafka.topics, events_topic = %kafka.events_topic, %group, "Rekeying.");
            ready.store(true, Ordering::Release);
            // The events partitions get records in the order the rekey takes them in: in step
            // across the source partitions, so that no topic runs ahead of another.
            let align = kafka::Align {
                bound: lateness.max(chrono::Duration::minutes(1)),
                idle_after: std::time::Duration::from_secs(kafka.idle_partition_seconds),
            };
            consume_until_stopped(&consumer, &mut rekey, &metrics, interval, Some(align), stop).await
        })?;
        eprint!("{}", summary(rekey.normalize.stats(), 10));
        eprintln!("published {} events to {}", rekey.judge.published, kafka.events_topic);
        return Ok(ExitCode::SUCCESS);
    }
    let normalize = normalize.normalized();
    let changelog = runtime
        .block_on(crate::group::Changelog::open(kafka))
        .with_context(|| format!("opening the changelog (kafka.changelog_topic in {})", settings.origin))?;
    let quiet = engine.detectors().quiet_periods();
    let partitions = Arc::new(crate::group::Partitions::new(
        &kafka.events_topic,
        changelog,
        engine,
        lateness,
        settings.raw.engine.max_waiting_events,
        settings.raw.http.max_findings,
    ));
    let (store, sinks) = findings_store(settings, quiet, &runtime, &metrics)?;
    // The archive exists before the API serves queries over it.
    let outputs = service_outputs(settings, &args, &store, &metrics)?;
    serve_http(
        settings,
        &runtime,
        partitions.template(),
        Some(partitions.baselines().clone()),
        Arc::clone(&store),
        &metrics,
        (&ready, true),
    )?;
    let member = crate::group::Member {
        partitions: Arc::clone(&partitions),
        unowned: 0,
    };
    let mut member = Runtime::new(normalize, member, outputs);
    runtime.block_on(async {
        let owner: Arc<dyn kafka::Owner> = partitions.clone();
        let topics = [kafka.events_topic.clone()];
        let consumer = kafka::subscribe_to(kafka, &kafka.group_id, &topics, Some(Arc::clone(&metrics)), Offsets::default(), Some(owner))?;
        tracing::info!(topic = %kafka.events_topic, changelog = %kafka.changelog_topic, group = %kafka.group_id, "Detecting as a group member.");
        ready.store(true, Ordering::Release);
        // Each events partition has its own state and order: none waits for another.
        consume_until_stopped(&consumer, &mut member, &metrics, interval, None, stop).await
    })?;
    member.finish();
    if member.judge.unowned > 0 {
        tracing::warn!(
            events = member.judge.unowned,
            "Events of partitions this member did not own were passed over."
        );
    }
    let findings = crate::findings::aggregate(&partitions.findings());
    close_outputs(member.outputs, sinks, &runtime)?;
    eprint!("{}", summary(member.normalize.stats(), 10));
    eprint!("{}", findings_summary(&findings));
    Ok(ExitCode::SUCCESS)
}

/// The findings store (journal and API) of `[http]`, delivering to the configured sinks
/// through the outbox.
pub(crate) fn findings_store(
    settings: &Settings,
    quiet: HashMap<crate::findings::DetectorId, chrono::Duration>,
    runtime: &tokio::runtime::Runtime,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<FindingStore>, Option<Sinks>)> {
    let http = &settings.raw.http;
    let store = if http.findings_journal.as_os_str().is_empty() {
        FindingStore::in_memory(http.max_findings).with_quiet(quiet)
    } else {
        FindingStore::open_quiet(&http.findings_journal, http.max_findings, quiet).with_context(|| {
            format!(
                "opening the findings journal (http.findings_journal in {})",
                settings.origin
            )
        })?
    };
    // SIEM sinks, each delivering from the durable outbox (none configured: no outbox).
    let sinks = if settings.sinks.is_empty() {
        None
    } else {
        let _guard = runtime.enter();
        let sinks = Sinks::start(settings.sink_setup())?;
        metrics.register(sinks.exposition());
        tracing::info!(
            sinks = sinks.stats.len(),
            "Delivering findings to the configured sinks."
        );
        Some(sinks)
    };
    let store = Arc::new(match &sinks {
        Some(s) => store.with_outbox(Arc::clone(&s.outbox)),
        None => store,
    });
    Ok((store, sinks))
}

/// Serves the HTTP API at `http.listen`, if set: `engine`'s identities (or `baselines`'),
/// `store`'s findings, SQL over the archive.
pub(crate) fn serve_http(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    baselines: Option<crate::baseline::Baselines>,
    store: Arc<FindingStore>,
    metrics: &Arc<Metrics>,
    // Set once the source is being read; with `true`, readiness also waits for the Kafka lag.
    (ready, lag_gates_readiness): (&Arc<AtomicBool>, bool),
) -> anyhow::Result<()> {
    let http = &settings.raw.http;
    if http.listen.is_empty() {
        return Ok(());
    }
    let env = |name: &str| std::env::var(name).ok();
    let auth = Auth::new(http, env(READ_TOKEN_ENV).as_deref(), env(ADMIN_TOKEN_ENV).as_deref());
    if http.tokens.is_empty() && env(READ_TOKEN_ENV).is_none() && env(ADMIN_TOKEN_ENV).is_none() {
        tracing::warn!("No API tokens are configured: every API request but /healthz and /readyz will be refused.");
    }
    let mut state = AppState::new(engine, store, auth, http, Arc::clone(metrics), Arc::clone(ready));
    if let Some(b) = baselines {
        state = state.with_baselines(b);
    }
    if !lag_gates_readiness {
        state = state.reading_files();
    }
    // Compliance queries over the archive, when there is one.
    let state = match settings.archive_location() {
        Some(location) => state.with_sql(Arc::new(sandbox(&location, registry_file(None, settings), settings)?)),
        None => state,
    };
    let (addr, _task) = runtime
        .block_on(crate::http::serve(
            &http.listen,
            state,
            ConnectionLimits::from_config(http),
        ))
        .with_context(|| format!("listening on {} (http.listen in {})", http.listen, settings.origin))?;
    tracing::info!(%addr, "Serving the HTTP API.");
    Ok(())
}

/// The archive of `archive.location`, if set.
pub(crate) fn open_archive(settings: &Settings) -> anyhow::Result<Option<crate::archive::Archive>> {
    settings
        .archive_location()
        .map(|l| crate::archive::Archive::open(&l, settings.archive_limits()))
        .transpose()
        .with_context(|| format!("opening the archive (archive.location in {})", settings.origin))
}

/// Flushes the archive and streams, and gives the sinks a moment to deliver.
pub(crate) fn close_outputs(
    mut outputs: Outputs,
    sinks: Option<Sinks>,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    if let Some(a) = &mut outputs.archive {
        let flushed = a.flush().context("writing the archive")?;
        tracing::info!(
            files = flushed.files,
            events = flushed.events,
            findings = flushed.findings,
            "Archive flushed."
        );
    }
    if let Some(sinks) = sinks {
        runtime.block_on(async {
            // Give the sinks a moment to deliver the last findings; the rest stays in the
            // outbox and goes out at the next start.
            if !sinks.drain(std::time::Duration::from_secs(10)).await {
                tracing::warn!("Some findings are still waiting in the outbox for a sink; they will be delivered after the next start.");
            }
            sinks.stop().await;
        });
    }
    if let Some(e) = outputs.write_error.take() {
        return Err(e).context("writing events or findings");
    }
    if let Some(out) = &mut outputs.findings_out {
        out.flush()?;
    }
    if let Some(out) = &mut outputs.events_out {
        out.flush()?;
    }
    Ok(())
}

/// SIGINT from a terminal, SIGTERM from systemd or Kubernetes: both stop `run` cleanly. Taken
/// as soon as the runtime exists, so a stop during start-up is not the default (killing) one.
pub(crate) struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn take(runtime: &tokio::runtime::Runtime) -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        let _guard = runtime.enter();
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }
}

/// Consumes through `stage` until SIGINT or SIGTERM, with a commit point every `interval`.
pub(crate) async fn consume_until_stopped(
    consumer: &kafka::Consumer,
    stage: &mut dyn kafka::Stage,
    metrics: &Metrics,
    interval: std::time::Duration,
    align: Option<kafka::Align>,
    stop: StopSignals,
) -> anyhow::Result<()> {
    let StopSignals { mut int, mut term } = stop;
    let shutdown = async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    };
    let options = kafka::Options {
        metrics: Some(metrics),
        commit_every: interval,
        align,
        ..kafka::Options::default()
    };
    kafka::consume(consumer, stage, options, shutdown).await?;
    Ok(())
}

/// Logs what was restored and what was passed over.
pub(crate) fn report_restore(restored: &Restored) {
    for skipped in &restored.skipped {
        tracing::error!(file = %skipped.path.display(), reason = %skipped.reason, "Checkpoint passed over.");
    }
    let detection = &restored.detection;
    match &restored.from {
        Some(path) => tracing::info!(
            file = %path.display(),
            identities = detection.engine().baseline().len(),
            open_findings = detection.engine().open_findings(),
            waiting = detection.waiting(),
            partitions = restored.offsets.iter().count(),
            "State restored; reading resumes at its offsets."
        ),
        None if !restored.skipped.is_empty() => tracing::error!(
            "No usable checkpoint: starting with empty baselines from the committed offsets; every identity learns again."
        ),
        None => tracing::info!("No checkpoint yet: starting with empty baselines."),
    }
}
