//! Kafka source: a consumer-group member over several topics, committing only what is durable.
//!
//! The consumer keeps, per partition, the next offset whose record has not been taken in. At a
//! commit point (every `state.interval_seconds`, and on shutdown) the dead letter is flushed,
//! the caller's [`Stage::durable`] makes everything taken in durable (the archive, a checkpoint
//! of the detection state), and only then are those offsets committed to Kafka. A crash
//! therefore replays at most the records since the last commit point, and a restored checkpoint
//! says where its state ends: when a partition is assigned, reading starts at the offset this
//! process knows (restored or reached), not at the group's committed one, and a record below it
//! is passed over, so nothing is counted twice.
//!
//! Partitions are read in step in event time ([`super::align`]): the stage is told which
//! partitions are assigned ([`Stage::assigned`]) and which are idle ([`Stage::idle`]), so its reorder
//! buffer waits for the slowest one, and a partition running ahead of the slowest by more than
//! the bound is paused until the slowest catches up.
//!
//! A member of a group whose state is per partition gives an [`Owner`]: the rebalance callback
//! has it restore a partition's state before the partition is read, and start reading at the
//! offset that state reflects. While a commit point fails (the stage cannot be made durable),
//! every assigned partition is paused, so nothing piles up behind it; the first commit point
//! that succeeds resumes them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::align::{Alignment, End};
use super::{KafkaConfig, client_config};
use crate::event::Origin;
use crate::ingest::{Offsets, Record};
use crate::telemetry::metrics::Metrics;

/// A broker error or a dead letter that could not be written (a stage that cannot be made
/// durable is logged and retried at the next commit point, not an error).
#[derive(Debug, thiserror::Error)]
pub enum KafkaIngestError {
    /// The broker or client failed (retryable by restarting).
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The dead letter could not be written; processing stopped so nothing is lost.
    #[error("dead letter: {0}")]
    DeadLetter(#[from] std::io::Error),
}

/// What takes the consumed records in (the runtime: normalize, detect, outputs; see
/// [`crate::runtime`]). The consumer knows nothing of what it does with them.
pub trait Stage {
    /// Takes one record in; returns the newest event time of what it made of it (the
    /// partitions are read in step by it). An error (the dead letter could not be written)
    /// stops consumption: the record is not acknowledged.
    fn record(&mut self, record: Record<'_>) -> std::io::Result<Option<chrono::DateTime<chrono::Utc>>>;

    /// Takes several records in, in order (they were ready together: a stage may normalize them
    /// side by side); the newest event time of each. An error stops consumption, and none of
    /// them is acknowledged.
    fn records(&mut self, records: &[Record<'_>]) -> std::io::Result<Vec<Option<chrono::DateTime<chrono::Utc>>>> {
        records.iter().map(|r| self.record(*r)).collect()
    }

    /// The partitions read from now on (told before the first record of a new one): a stage
    /// that orders events across partitions waits for the slowest of them.
    fn assigned(&mut self, partitions: &[(String, i32)]) {
        let _ = partitions;
    }

    /// `topic`/`partition` is at its end or silent while others deliver (`true`), or gives
    /// records again (`false`, told before them): an idle partition holds no one back.
    fn idle(&mut self, topic: &str, partition: i32, idle: bool) {
        let _ = (topic, partition, idle);
    }

    /// Makes the dead letter durable, first at every commit point; an error stops consumption
    /// (what it refused would be lost).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    /// Makes everything taken so far durable; `offsets` are the positions it reflects, committed
    /// to Kafka once this returns `Ok`. On `Err` nothing is committed (the commit point is
    /// retried at the next interval, and the error is logged).
    fn durable(&mut self, offsets: &Offsets) -> anyhow::Result<()> {
        let _ = offsets;
        Ok(())
    }
}

/// State kept per partition by a member of a consumer group: restored when a partition is
/// assigned, before any of its records is read, and dropped when it is revoked.
pub trait Owner: Send + Sync {
    /// `topic`/`partition` was assigned to this member: restore its state and say the offset it
    /// reflects (where reading starts), or `None` to start at the group's committed offset.
    fn assigned(&self, topic: &str, partition: i32) -> Option<i64>;
    /// `topic`/`partition` went to another member: forget its state.
    fn revoked(&self, topic: &str, partition: i32);
}

/// The consumer's context: turns librdkafka's statistics (once a second) into the lag gauge, and
/// starts each assigned partition where this process's state ends.
pub struct Context {
    metrics: Option<Arc<Metrics>>,
    positions: Mutex<Offsets>,
    owner: Option<Arc<dyn Owner>>,
    /// Set by a rebalance: the consumer loop reads the assignment again before the next record.
    reassigned: AtomicBool,
    /// Per partition, from librdkafka's statistics: its low and high watermark offsets and the
    /// group's committed offset (-1 when not known).
    ends: Mutex<HashMap<(String, i32), Ends>>,
}

#[derive(Debug, Clone, Copy)]
struct Ends {
    low: i64,
    high: i64,
    committed: i64,
}

impl Context {
    fn positions(&self) -> std::sync::MutexGuard<'_, Offsets> {
        self.positions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next offset to take in, per partition: restored, then advanced record by record.
    pub fn offsets(&self) -> Offsets {
        self.positions().clone()
    }

    fn forget_ends(&self, tpl: &TopicPartitionList) {
        let mut ends = self.ends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in tpl.elements() {
            ends.remove(&(e.topic().to_owned(), e.partition()));
        }
    }

    /// Where `topic`/`partition`'s position is against its end, as the last statistics (once a
    /// second) said: read to its end (the next offset to read at its high watermark, or it is
    /// empty), behind it, or not known.
    fn end(&self, topic: &str, partition: i32) -> End {
        let ends = self.ends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(e) = ends.get(&(topic.to_owned(), partition)) else {
            return End::Unknown;
        };
        if e.high < 0 {
            return End::Unknown;
        }
        if e.high == e.low {
            return End::Reached;
        }
        // Never read by this process: reading starts at the group's committed offset.
        match self
            .positions()
            .get(topic, partition)
            .or((e.committed >= 0).then_some(e.committed))
        {
            Some(next) if next >= e.high => End::Reached,
            Some(_) => End::Behind,
            None => End::Unknown,
        }
    }
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        {
            let mut ends = self.ends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (topic, t) in &statistics.topics {
                for p in t.partitions.values().filter(|p| p.partition >= 0) {
                    ends.insert(
                        (topic.clone(), p.partition),
                        Ends {
                            low: p.lo_offset,
                            high: p.hi_offset,
                            committed: p.committed_offset,
                        },
                    );
                }
            }
        }
        let Some(m) = &self.metrics else { return };
        // Partition -1 is librdkafka's internal UA partition; -1 lag means not known yet.
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        m.set_lag(lag);
    }
}

impl ConsumerContext for Context {
    // rdkafka's own rebalance, with the offsets of partitions this process has state for set
    // before they are assigned.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        self.reassigned.store(true, Ordering::Release);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Where a partition ends is judged from statistics after its assignment.
                self.forget_ends(tpl);
                // A group member restores each partition's state now, before its first record,
                // and reads on from the offset that state reflects.
                if let Some(owner) = &self.owner {
                    for e in tpl.elements() {
                        let start = owner.assigned(e.topic(), e.partition());
                        let mut positions = self.positions();
                        positions.forget(e.topic(), e.partition());
                        if let Some(next) = start {
                            positions.advance(e.topic(), e.partition(), next);
                        }
                    }
                }
                let known: Vec<(String, i32, i64)> = {
                    let positions = self.positions();
                    tpl.elements()
                        .iter()
                        .filter_map(|e| {
                            let next = positions.get(e.topic(), e.partition())?;
                            Some((e.topic().to_owned(), e.partition(), next))
                        })
                        .collect()
                };
                for (topic, partition, next) in &known {
                    if let Err(error) = tpl.set_partition_offset(topic, *partition, Offset::Offset(*next)) {
                        tracing::error!(%error, topic, partition, "Could not set a partition's start.");
                    }
                }
                tracing::info!(
                    partitions = tpl.count(),
                    from_state = known.len(),
                    "Partitions assigned."
                );
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.forget_ends(tpl);
                tracing::info!(partitions = tpl.count(), "Partitions revoked.");
                if let Some(owner) = &self.owner {
                    for e in tpl.elements() {
                        owner.revoked(e.topic(), e.partition());
                        self.positions().forget(e.topic(), e.partition());
                    }
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                let code: rdkafka::types::RDKafkaErrorCode = other.into();
                tracing::error!(error = %code, "Rebalance failed.");
                if cooperative { Ok(()) } else { consumer.unassign() }
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "Could not apply a rebalance.");
        }
    }
}

/// The Kafka consumer nhiwatch uses.
pub type Consumer = StreamConsumer<Context>;

/// A consumer in `cfg.group_id`, subscribed to `cfg.topics`, resuming at `resume` where it has
/// an offset (a restored checkpoint's); its lag goes to `metrics`.
pub fn subscribe(
    cfg: &KafkaConfig,
    metrics: Option<Arc<Metrics>>,
    resume: Offsets,
) -> Result<Consumer, rdkafka::error::KafkaError> {
    subscribe_to(cfg, &cfg.group_id, &cfg.topics, metrics, resume, None)
}

/// A consumer in `group`, subscribed to `topics`; with an `owner`, partition state is restored
/// on assignment and dropped on revocation.
pub fn subscribe_to(
    cfg: &KafkaConfig,
    group: &str,
    topics: &[String],
    metrics: Option<Arc<Metrics>>,
    resume: Offsets,
    owner: Option<Arc<dyn Owner>>,
) -> Result<Consumer, rdkafka::error::KafkaError> {
    let mut config = client_config(cfg);
    // The statistics say where each partition ends (an idle partition does not hold the
    // others back) and give the lag gauge.
    if !cfg.properties.contains_key("statistics.interval.ms") {
        config.set("statistics.interval.ms", "1000");
    }
    // When the fetched-ahead queue is full, librdkafka waits this long before fetching a
    // partition again (its default, 1 s, is longer than the queue takes to drain here: the
    // consumer then sat idle half of each second, measured with `nhiwatch bench`).
    if !cfg.properties.contains_key("fetch.queue.backoff.ms") {
        config.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    }
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", cfg.auto_offset_reset.as_str())
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "queued.max.messages.kbytes",
            (cfg.fetch_buffer_bytes / 1024).to_string(),
        );
    if !cfg.instance_id.is_empty() {
        config.set("group.instance.id", &cfg.instance_id);
    }
    let context = Context {
        metrics,
        positions: Mutex::new(resume),
        owner,
        reassigned: AtomicBool::new(false),
        ends: Mutex::new(HashMap::new()),
    };
    let consumer: Consumer = config.create_with_context(context)?;
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// librdkafka's `fetch.queue.backoff.ms` unless `kafka.properties` sets it.
const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// Most records handed to the stage at once (those ready together).
const BATCH: usize = 512;

/// How [`consume`] runs.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    /// Stop after this many records.
    pub limit: Option<u64>,
    /// Kept equal to the number of records processed so far.
    pub progress: Option<&'a AtomicU64>,
    /// Counts and the arrival-to-processed latency.
    pub metrics: Option<&'a Metrics>,
    /// Time between commit points.
    pub commit_every: Duration,
    /// Partitions read in step in event time (see [`super::align`]); `None` reads each as
    /// fast as it comes and tells the stage nothing of partitions.
    pub align: Option<Align>,
}

/// How far partitions may run apart.
#[derive(Debug, Clone, Copy)]
pub struct Align {
    /// A partition more than this ahead of the slowest in event time is paused (the reorder
    /// buffer's lateness bound).
    pub bound: chrono::Duration,
    /// A partition that gives no record this long while others do is idle.
    pub idle_after: Duration,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            limit: None,
            progress: None,
            metrics: None,
            commit_every: Duration::from_secs(60),
            align: None,
        }
    }
}

/// Consumes until `shutdown` completes or `options.limit` records were processed, with a commit
/// point every `options.commit_every` and one at the end; returns the count of records processed.
pub async fn consume(
    consumer: &Consumer,
    stage: &mut dyn Stage,
    options: Options<'_>,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, KafkaIngestError> {
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(options.commit_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut processed = 0u64;
    let mut paused = false;
    let mut align = options.align.map(|a| Alignment::new(a.bound, a.idle_after));
    // Idleness and pausing are reviewed a few times a second: the statistics that say where
    // partitions end come once a second.
    let mut review = tokio::time::interval(Duration::from_millis(200));
    review.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while options.limit.is_none_or(|l| processed < l) {
        let message = tokio::select! {
            m = consumer.recv() => match m {
                Ok(m) => m,
                // A broker down, a fetch that failed: librdkafka reconnects and fetches again
                // by itself, so the service waits it out; a fatal error ends it.
                Err(error @ rdkafka::error::KafkaError::MessageConsumptionFatal(_)) => return Err(error.into()),
                Err(error) => {
                    tracing::warn!(%error, "Kafka reported an error; consumption goes on when the broker answers.");
                    continue;
                }
            },
            _ = ticker.tick() => {
                if let Some(align) = &mut align {
                    reassigned(consumer, align, stage, paused);
                }
                let durable = commit_point(consumer, stage, CommitMode::Async)?;
                hold(consumer, !durable, &mut paused, align.as_mut(), options.metrics);
                continue;
            }
            _ = review.tick(), if align.is_some() => {
                if let Some(align) = &mut align {
                    reassigned(consumer, align, stage, paused);
                    if !paused {
                        realign(consumer, align, stage, options.metrics);
                    }
                }
                continue;
            }
            () = &mut shutdown => break,
        };
        // What else is ready now goes with it: the stage takes them together.
        let room = options
            .limit
            .map_or(BATCH, |l| (l - processed).min(BATCH as u64) as usize);
        let mut batch = vec![message];
        while batch.len() < room {
            match consumer.recv().now_or_never() {
                Some(Ok(m)) => batch.push(m),
                Some(Err(error @ rdkafka::error::KafkaError::MessageConsumptionFatal(_))) => return Err(error.into()),
                Some(Err(error)) => {
                    tracing::warn!(%error, "Kafka reported an error; consumption goes on when the broker answers.");
                    break;
                }
                None => break,
            }
        }
        if let Some(align) = &mut align {
            // A partition newly assigned is known to the stage before its first record.
            reassigned(consumer, align, stage, paused);
        }
        let mut taken = Vec::with_capacity(batch.len());
        for message in &batch {
            let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
            if let Some(align) = &mut align
                && align.record(topic, partition, None, std::time::Instant::now())
            {
                stage.idle(topic, partition, false);
            }
            // Below the position this process's state already reflects (a partition assigned
            // back, or a commit lost to a crash): taken in before, so not again.
            if consumer
                .context()
                .positions()
                .get(topic, partition)
                .is_some_and(|next| offset < next)
            {
                continue;
            }
            let origin = Origin {
                name: topic.to_owned(),
                partition: Some(partition),
                offset,
            };
            let received = message
                .timestamp()
                .to_millis()
                .and_then(chrono::DateTime::from_timestamp_millis);
            taken.push((message, origin, received));
        }
        let records: Vec<Record<'_>> = taken
            .iter()
            .map(|(message, origin, received)| Record {
                bytes: message.payload().unwrap_or_default(),
                origin,
                oversized_len: None,
                received: *received,
            })
            .collect();
        let newest = stage.records(&records)?;
        for ((message, _, received), newest) in taken.iter().zip(newest) {
            let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
            if let Some(align) = &mut align
                && newest.is_some()
            {
                align.record(topic, partition, newest, std::time::Instant::now());
            }
            consumer.context().positions().advance(topic, partition, offset + 1);
            processed += 1;
            if let Some(m) = options.metrics
                && let Some(at) = received
            {
                let micros = (chrono::Utc::now() - *at).num_microseconds().unwrap_or(0);
                m.latency_micros(micros.max(0) as u64);
            }
        }
        if let Some(progress) = options.progress {
            progress.store(processed, Ordering::Release);
        }
    }
    if let Some(m) = options.metrics {
        // The consumer stops here: its last lag and alignment would go stale.
        m.set_lag(-1);
        m.set_alignment(0, 0);
    }
    if !commit_point(consumer, stage, CommitMode::Sync)? {
        tracing::error!(
            "Stopped with work not durable: the records since the last commit point are read again at the next start."
        );
    }
    Ok(processed)
}

/// After a rebalance (the flag its callback sets), tells `align` and the stage which partitions
/// are read now.
fn reassigned(consumer: &Consumer, align: &mut Alignment, stage: &mut dyn Stage, paused: bool) {
    if !consumer.context().reassigned.swap(false, Ordering::AcqRel) {
        return;
    }
    let Ok(assignment) = consumer.assignment() else {
        consumer.context().reassigned.store(true, Ordering::Release);
        return;
    };
    let now: Vec<(String, i32)> = assignment
        .elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect();
    let gone: Vec<(String, i32)> = align
        .assigned()
        .filter(|(t, p)| !now.iter().any(|(u, q)| u == t && q == p))
        .map(|(t, p)| (t.to_owned(), p))
        .collect();
    for (topic, partition) in &gone {
        align.revoke(topic, *partition);
    }
    let at = std::time::Instant::now();
    let mut new = TopicPartitionList::new();
    for (topic, partition) in &now {
        if align.assign(topic, *partition, at) {
            new.add_partition(topic, *partition);
        }
    }
    // librdkafka keeps a partition's pause across a revocation: one paused for running ahead
    // and assigned back is read again (unless everything waits for a commit point).
    if !paused
        && new.count() > 0
        && let Err(error) = consumer.resume(&new)
    {
        tracing::warn!(%error, "Could not resume newly assigned partitions.");
    }
    // With nothing assigned (between a revocation and the next assignment) nothing is
    // released and each partition's position is kept for when it comes back.
    if !now.is_empty() {
        stage.assigned(&now);
        // The stage takes every partition it is told of as being read: say again which of
        // those kept are idle.
        for (topic, partition) in &now {
            if align.is_idle(topic, *partition) {
                stage.idle(topic, *partition, true);
            }
        }
    }
}

/// Tells the stage which partitions went idle or active, and pauses the partitions running
/// ahead of the slowest by more than the bound (resuming those back within it).
fn realign(consumer: &Consumer, align: &mut Alignment, stage: &mut dyn Stage, metrics: Option<&Metrics>) {
    let context = consumer.context();
    let review = align.review(std::time::Instant::now(), &|topic, partition| {
        context.end(topic, partition)
    });
    for (topic, partition, idle) in &review.idle {
        tracing::debug!(topic, partition, idle, "Partition idleness changed.");
        stage.idle(topic, *partition, *idle);
    }
    let list = |parts: &[(String, i32)]| {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in parts {
            tpl.add_partition(topic, *partition);
        }
        tpl
    };
    if !review.pause.is_empty() {
        if let Err(error) = consumer.pause(&list(&review.pause)) {
            tracing::warn!(%error, "Could not pause the partitions running ahead.");
        }
        tracing::debug!(partitions = ?review.pause, "Paused partitions running ahead of the slowest.");
    }
    if !review.resume.is_empty() {
        if let Err(error) = consumer.resume(&list(&review.resume)) {
            tracing::warn!(%error, "Could not resume partitions back within the bound.");
        }
        tracing::debug!(partitions = ?review.resume, "Resumed partitions back within the bound.");
    }
    if let Some(m) = metrics {
        let (ahead, idle) = align.counts();
        m.set_alignment(ahead, idle);
    }
}

/// Backpressure: while the stage cannot be made durable (the archive's store refuses files, the
/// changelog's broker does not acknowledge), every assigned partition is paused, so what waits
/// to be made durable stops growing; the first commit point that succeeds resumes them (except
/// those paused for running ahead).
fn hold(consumer: &Consumer, stop: bool, paused: &mut bool, align: Option<&mut Alignment>, metrics: Option<&Metrics>) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    if stop {
        // Again at every commit point: a partition assigned meanwhile is paused too.
        if let Err(error) = consumer.pause(&assigned) {
            tracing::error!(%error, "Could not pause consumption.");
            return;
        }
        if !std::mem::replace(paused, true) {
            tracing::warn!(
                partitions = assigned.count(),
                "Consumption paused until what was taken in is durable."
            );
        }
    } else if std::mem::replace(paused, false) {
        let mut resume = TopicPartitionList::new();
        for e in assigned.elements() {
            if !align.as_ref().is_some_and(|a| a.is_ahead(e.topic(), e.partition())) {
                resume.add_partition(e.topic(), e.partition());
            }
        }
        if let Some(align) = align {
            align.restart_silence(std::time::Instant::now());
        }
        match consumer.resume(&resume) {
            Ok(()) => tracing::info!(partitions = resume.count(), "Consumption resumed."),
            Err(error) => {
                tracing::error!(%error, "Could not resume consumption.");
                *paused = true;
            }
        }
    }
    if let Some(m) = metrics {
        m.set_paused(*paused);
    }
}

/// Makes the dead letter and the stage durable, then commits the offsets they reflect for the
/// partitions still assigned; `false` when the stage could not be made durable. That is logged
/// and nothing is committed: the records since the last commit point are replayed after a
/// restart.
fn commit_point(consumer: &Consumer, stage: &mut dyn Stage, mode: CommitMode) -> Result<bool, KafkaIngestError> {
    stage.flush()?;
    let offsets = consumer.context().offsets();
    tracing::debug!(
        partitions = offsets.iter().count(),
        next = ?offsets.iter().map(|(_, p, o)| (p, o)).collect::<Vec<_>>(),
        "Commit point."
    );
    if let Err(error) = stage.durable(&offsets) {
        tracing::error!(
            error = format!("{error:#}"),
            "Not durable yet: offsets not committed; retrying at the next commit point."
        );
        return Ok(false);
    }
    let assigned = consumer.assignment()?;
    let mut commit = TopicPartitionList::new();
    for (topic, partition, next) in offsets.iter() {
        if assigned.find_partition(topic, partition).is_some() {
            commit.add_partition_offset(topic, partition, Offset::Offset(next))?;
        }
    }
    if commit.count() == 0 {
        return Ok(true);
    }
    // A failed commit costs a replay after a restart, which the checkpoint's offsets skip.
    if let Err(error) = consumer.commit(&commit, mode) {
        tracing::warn!(%error, "Committing offsets failed; the next commit point retries.");
    }
    Ok(true)
}
