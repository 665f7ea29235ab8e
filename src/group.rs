//! Scale-out: several `run` instances in one consumer group, each owning the state of the
//! partitions it is assigned. Kafka is the cluster; nothing here coordinates instances.
//!
//! Two roles split the work of a single instance:
//!
//! - `run --role rekey` reads the raw topics (`kafka.topics`, consumer group
//!   `<kafka.group_id>-rekey`), normalizes each record and publishes the event as JSON to
//!   `kafka.events_topic`, keyed by its canonical identity (registry aliases resolved), with
//!   librdkafka's `murmur2_random` partitioner — the Java client's default for keyed records — so
//!   every event of one identity lands on one partition, as a Java or Kafka Streams producer
//!   would put it. Its offsets are committed only after the broker acknowledged every event
//!   published before them (at least once).
//! - `run --role detect` reads `kafka.events_topic` in `kafka.group_id`. Each assigned partition
//!   has its own detection (baselines, open findings, events waiting for order, clocks), since
//!   the identities of a partition are its own. At every commit point, each partition that took
//!   in records has its state written to `kafka.changelog_topic` (same partition number, key
//!   `<events topic>/<partition>`), and only once the broker acknowledged those records are the
//!   offsets committed. When a partition is assigned — at start or when a rebalance moves it
//!   here — its newest state is read back from the changelog before any of its records, and
//!   reading starts at the offset that state reflects. A revoked partition's state is dropped.
//!
//! # Changelog record
//!
//! The value is a [`crate::engine::checkpoint`] container (magic, format version, SHA-256) whose sequence
//! is the next input offset the state reflects and whose payload is a [`crate::engine::state`] payload
//! of that one partition. The topic is created compacted if missing (`cleanup.policy=compact`),
//! so it keeps about one record per partition. A reader takes, of the records under the
//! partition's key, the one reflecting the highest offset that verifies and decodes: a torn or
//! corrupt record, or one of another format version, is passed over (logged) for the one before,
//! and a late write by a member that has lost the partition cannot take the new owner's place.
//!
//! A member that dies loses what it took in since its last commit point; the next owner re-reads
//! it from the state's offset, so nothing is counted twice in a baseline, and findings raised
//! again carry the same ids.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::baseline::Baselines;
use crate::config::KafkaConfig;
use crate::engine::checkpoint;
use crate::engine::state;
use crate::engine::{Detection, Engine};
use crate::event::Event;
use crate::findings::Finding;
use crate::ingest::Offsets;
use crate::kafka::producer::{Deliveries, acknowledged, producer, producer_config};
use crate::kafka::{Owner, admin, client_config, send_waiting};
use crate::registry::Registry;
use crate::runtime::{Judge, Outputs};

/// How long reading a partition's state back from the changelog may take.
const RESTORE: Duration = Duration::from_secs(60);

/// The `rekey` role's stage: each event published to the events topic, keyed by identity.
pub struct Rekey {
    producer: BaseProducer<Deliveries>,
    topic: String,
    registry: Option<Arc<Registry>>,
    buffer: Vec<u8>,
    /// Why publishing broke; once set nothing is committed again (the records since the last
    /// commit point are re-published after a restart).
    broken: Option<String>,
    /// Events published.
    pub published: u64,
}

impl Rekey {
    /// Publishes to `cfg.events_topic`, resolving aliases through `registry`.
    pub fn new(cfg: &KafkaConfig, registry: Option<Arc<Registry>>) -> Result<Rekey, rdkafka::error::KafkaError> {
        Ok(Rekey {
            producer: producer(cfg)?,
            topic: cfg.events_topic.clone(),
            registry,
            buffer: Vec::with_capacity(1024),
            broken: None,
            published: 0,
        })
    }
}

/// The key an event is partitioned by: its canonical identity.
pub fn key<'a>(event: &'a Event, registry: Option<&'a Registry>) -> &'a str {
    registry
        .and_then(|r| r.resolve(&event.identity))
        .map_or(event.identity.as_str(), |e| e.id.as_str())
}

impl Judge for Rekey {
    fn event(&mut self, _partition: Option<i32>, event: Event, _: &mut Outputs) {
        if self.broken.is_some() {
            return;
        }
        self.buffer.clear();
        if let Err(error) = serde_json::to_writer(&mut self.buffer, &event) {
            self.broken = Some(format!("encoding an event: {error}"));
            return;
        }
        let key = key(&event, self.registry.as_deref());
        let record = BaseRecord::to(&self.topic).key(key).payload(self.buffer.as_slice());
        match send_waiting(&self.producer, record) {
            Ok(()) => self.published += 1,
            Err(error) => self.broken = Some(format!("publishing to {}: {error}", self.topic)),
        }
    }

    fn durable(&mut self, _: &Offsets, _: &mut Outputs) -> anyhow::Result<()> {
        if let Some(why) = &self.broken {
            bail!("{why}; restart nhiwatch to publish again from the last commit point");
        }
        if let Err(error) = acknowledged(&self.producer, 0, "events") {
            self.broken = Some(format!("{error:#}"));
            bail!("{error:#}; restart nhiwatch to publish again from the last commit point");
        }
        Ok(())
    }
}

/// The changelog topic: each partition's latest state.
pub struct Changelog {
    topic: String,
    events_topic: String,
    producer: BaseProducer<Deliveries>,
    /// One consumer for every read (assigned the partition to read, then unassigned): a new
    /// one per read costs its connection each time.
    reader: Mutex<BaseConsumer>,
}

/// A state read back from the changelog: where it ends and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The next input offset the state reflects.
    pub next: i64,
    /// The [`crate::engine::state`] payload.
    pub payload: Vec<u8>,
}

/// What reading one partition's changelog found.
#[derive(Debug, Default)]
pub struct Read {
    /// Usable records, the highest offset reflected first (at most a few).
    pub found: Vec<Stored>,
    /// Records passed over: changelog offset and reason.
    pub skipped: Vec<(i64, String)>,
}

impl Changelog {
    /// The changelog of `cfg.events_topic`'s partitions, creating `cfg.changelog_topic`
    /// (compacted, as many partitions) if it is missing.
    pub async fn open(cfg: &KafkaConfig) -> anyhow::Result<Changelog> {
        use rdkafka::admin::{NewTopic, TopicReplication};
        let producer: BaseProducer<Deliveries> = producer_config(cfg)
            .set("message.max.bytes", cfg.changelog_max_bytes.to_string())
            .create_with_context(Deliveries::default())?;
        // Metadata through a consumer: it never creates a topic it asks about (a producer's
        // request may, with the broker's default partition count).
        let mut reader = client_config(cfg);
        reader
            .set("group.id", format!("{}-changelog-reader", cfg.group_id))
            .set("enable.auto.commit", "false")
            .set("allow.auto.create.topics", "false")
            // A restore waits for each fetch: answered as soon as there is data, and at once
            // at the end of the partition rather than after the broker's default half second.
            .set("fetch.wait.max.ms", "10")
            .set("fetch.message.max.bytes", cfg.changelog_max_bytes.to_string());
        let reader: BaseConsumer = reader.create()?;
        let partitions = |topic: &str| -> anyhow::Result<usize> {
            let metadata = reader
                .fetch_metadata(Some(topic), Duration::from_secs(30))
                .with_context(|| format!("reading the metadata of {topic}"))?;
            Ok(metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len()))
        };
        let events = partitions(&cfg.events_topic)?;
        if events == 0 {
            bail!(
                "the events topic {} (kafka.events_topic) does not exist: create it with the partitions the group will share",
                cfg.events_topic
            );
        }
        if partitions(&cfg.changelog_topic)? == 0 {
            let max = cfg.changelog_max_bytes.to_string();
            let topic = NewTopic::new(
                &cfg.changelog_topic,
                i32::try_from(events)?,
                TopicReplication::Fixed(cfg.changelog_replication),
            )
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", &max);
            let created = admin::create_topics(&client_config(cfg), &[topic]).await.with_context(|| {
                format!(
                    "creating the changelog topic {}: create it with cleanup.policy=compact and {events} partitions",
                    cfg.changelog_topic
                )
            })?;
            if !created.is_empty() {
                tracing::info!(topic = %cfg.changelog_topic, partitions = events, "Changelog topic created (compacted).");
            }
        }
        let have = partitions(&cfg.changelog_topic)?;
        if have < events {
            bail!(
                "the changelog topic {} has {have} partitions, fewer than the {events} of {}",
                cfg.changelog_topic,
                cfg.events_topic
            );
        }
        Ok(Changelog {
            topic: cfg.changelog_topic.clone(),
            events_topic: cfg.events_topic.clone(),
            producer,
            reader: Mutex::new(reader),
        })
    }

    fn key(&self, partition: i32) -> String {
        format!("{}/{partition}", self.events_topic)
    }

    /// Sends the state of `partition` reflecting offsets before `next` (see [`Changelog::flush`]).
    pub fn write(&self, partition: i32, next: i64, payload: &[u8]) -> anyhow::Result<()> {
        let value = checkpoint::seal(u64::try_from(next)?, payload);
        let key = self.key(partition);
        let record = BaseRecord::to(&self.topic)
            .partition(partition)
            .key(key.as_str())
            .payload(value.as_slice());
        send_waiting(&self.producer, record).with_context(|| format!("writing to {}", self.topic))?;
        Ok(())
    }

    /// Failed deliveries so far (pass to [`Changelog::flush`]).
    pub fn failures(&self) -> u64 {
        self.producer.context().failed()
    }

    /// Waits until the broker acknowledged every state written; an error if any failed since
    /// `before` failures were counted.
    pub fn flush(&self, before: u64) -> anyhow::Result<()> {
        acknowledged(&self.producer, before, "changelog")
    }

    /// Reads `partition`'s records to the end.
    pub fn read(&self, partition: i32) -> anyhow::Result<Read> {
        let consumer = self.reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (low, high) = consumer.fetch_watermarks(&self.topic, partition, Duration::from_secs(30))?;
        let read = Read::default();
        if high <= low {
            return Ok(read);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(low))?;
        consumer.assign(&tpl)?;
        let result = self.read_assigned(&consumer, partition, low, high, read);
        consumer.unassign()?;
        result
    }

    /// Reads `partition`, assigned to `consumer`, from `low` to `high` into `read`.
    fn read_assigned(
        &self,
        consumer: &BaseConsumer,
        partition: i32,
        low: i64,
        high: i64,
        mut read: Read,
    ) -> anyhow::Result<Read> {
        let key = self.key(partition);
        let deadline = Instant::now() + RESTORE;
        let mut at = low;
        while at < high {
            if Instant::now() > deadline {
                bail!(
                    "read {} of partition {partition} only to offset {at} of {high} in {} s",
                    self.topic,
                    RESTORE.as_secs()
                );
            }
            let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let message = message?;
            // The reader was assigned other partitions before: only this one's records count.
            if message.partition() != partition || message.topic() != self.topic || message.offset() < low {
                continue;
            }
            at = message.offset() + 1;
            if message.key() != Some(key.as_bytes()) {
                continue;
            }
            match checkpoint::unseal(message.payload().unwrap_or_default()) {
                Ok((next, payload)) => {
                    read.found.push(Stored {
                        next: i64::try_from(next).unwrap_or(i64::MAX),
                        payload: payload.to_vec(),
                    });
                    // The newest few are enough to fall back on; an uncompacted topic can hold
                    // many.
                    read.found.sort_by_key(|s| std::cmp::Reverse(s.next));
                    read.found.truncate(3);
                }
                Err(reason) => read.skipped.push((message.offset(), reason)),
            }
        }
        Ok(read)
    }
}

/// One owned partition.
struct Part {
    detection: Detection,
    /// The offset the changelog's newest state of it reflects.
    saved: Option<i64>,
}

/// The partitions a group member owns, shared by the consumer's rebalance callback (which
/// restores and drops them) and the stage (which feeds them).
pub struct Partitions {
    topic: String,
    parts: Mutex<BTreeMap<i32, Part>>,
    changelog: Changelog,
    template: Engine,
    lateness: chrono::Duration,
    max_waiting: usize,
    history: usize,
    baselines: Baselines,
}

impl Partitions {
    /// Partitions of `topic` with engines configured as `template`, state kept in `changelog`,
    /// events reordered within `lateness`, at most `max_waiting` waiting and about `history`
    /// findings kept per partition.
    pub fn new(
        topic: &str,
        changelog: Changelog,
        template: Engine,
        lateness: chrono::Duration,
        max_waiting: usize,
        history: usize,
    ) -> Partitions {
        Partitions {
            topic: topic.to_owned(),
            parts: Mutex::default(),
            changelog,
            baselines: Baselines::new(template.baseline().settings()),
            template,
            lateness,
            max_waiting,
            history,
        }
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Part>> {
        self.parts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The engine each partition's is configured as.
    pub fn template(&self) -> &Engine {
        &self.template
    }

    /// The baselines of the owned partitions, for the inventory.
    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    /// The newest usable state of `partition` in the changelog, restored; `None` when there is
    /// none.
    pub fn restore(&self, partition: i32) -> anyhow::Result<Option<(i64, Detection)>> {
        let read = self.changelog.read(partition)?;
        for (offset, reason) in &read.skipped {
            tracing::error!(partition, changelog_offset = offset, %reason, "Changelog record passed over.");
        }
        let settings = self.template.baseline().settings();
        for stored in read.found {
            match state::decode(&stored.payload, settings) {
                Ok(decoded) if decoded.offsets.get(&self.topic, partition) == Some(stored.next) => {
                    let detection = decoded
                        .into_detection(self.template.sibling(), self.lateness, true)
                        .with_max_waiting(self.max_waiting)
                        .with_history(self.history);
                    return Ok(Some((stored.next, detection)));
                }
                Ok(_) => tracing::error!(
                    partition,
                    next = stored.next,
                    "Changelog record passed over: its state is not of this partition."
                ),
                Err(error) => tracing::error!(partition, next = stored.next, %error, "Changelog record passed over."),
            }
        }
        Ok(None)
    }

    /// Every finding of the owned partitions, latest state.
    pub fn findings(&self) -> Vec<Finding> {
        self.parts()
            .values()
            .flat_map(|p| p.detection.findings().iter().cloned())
            .collect()
    }
}

impl Owner for Partitions {
    fn assigned(&self, topic: &str, partition: i32) -> Option<i64> {
        if topic != self.topic {
            return None;
        }
        let started = Instant::now();
        let mut attempt = 0;
        let restored = loop {
            attempt += 1;
            match self.restore(partition) {
                Ok(restored) => break restored,
                Err(error) if attempt < 3 => {
                    tracing::warn!(
                        partition,
                        error = format!("{error:#}"),
                        "Reading the changelog failed; retrying."
                    );
                }
                // Reading on without the partition's state would learn it again from the
                // committed offset and judge against an empty baseline: stop instead, and let
                // the restart (and the rebalance it causes) try again.
                Err(error) => {
                    tracing::error!(
                        partition,
                        error = format!("{error:#}"),
                        "The partition's state cannot be read from the changelog; stopping."
                    );
                    std::process::exit(75);
                }
            }
        };
        let (start, detection) = match restored {
            Some((next, detection)) => (Some(next), detection),
            None => (
                None,
                Detection::new(self.template.sibling(), self.lateness, true)
                    .with_max_waiting(self.max_waiting)
                    .with_history(self.history),
            ),
        };
        // Findings wait for the changelog record of the state that raised them.
        let detection = detection.holding();
        tracing::info!(
            partition,
            identities = detection.engine().baseline().len(),
            open_findings = detection.engine().open_findings(),
            waiting = detection.waiting(),
            from = ?start,
            seconds = started.elapsed().as_secs_f64(),
            "Partition state restored."
        );
        self.baselines
            .insert(partition, Arc::clone(detection.engine().baseline()));
        self.parts().insert(
            partition,
            Part {
                detection,
                saved: start,
            },
        );
        start
    }

    fn revoked(&self, topic: &str, partition: i32) {
        if topic == self.topic && self.parts().remove(&partition).is_some() {
            self.baselines.remove(partition);
            tracing::info!(partition, "Partition state dropped.");
        }
    }
}

/// The `detect` role's judge: each event to the detection of its partition; at a commit point
/// the outputs made durable, then each partition's state written to the changelog.
pub struct Member {
    /// The owned partitions.
    pub partitions: Arc<Partitions>,
    /// Events of a partition this member does not own (should stay 0).
    pub unowned: u64,
}

impl Judge for Member {
    fn event(&mut self, partition: Option<i32>, event: Event, out: &mut Outputs) {
        let partition = partition.unwrap_or(-1);
        let mut parts = self.partitions.parts();
        let Some(part) = parts.get_mut(&partition) else {
            self.unowned += 1;
            tracing::warn!(
                partition,
                "An event of a partition this member does not own was passed over."
            );
            return;
        };
        out.detect(&mut part.detection, event);
    }

    fn durable(&mut self, offsets: &Offsets, out: &mut Outputs) -> anyhow::Result<()> {
        out.durable()?;
        let started = Instant::now();
        // Held findings go into the changelog even when no record was read since the last
        // write (the events behind them were released later).
        let written = self.write_states(offsets, &|_, part, next| {
            part.saved != Some(next) || part.detection.held() > 0
        })?;
        if written.is_empty() {
            return Ok(());
        }
        // Durable now: the findings each state raised go out, and the states are written again
        // without them, so that a restart or the partition's next owner does not release them
        // again (only a crash in between does).
        let mut released = Vec::new();
        {
            let mut parts = self.partitions.parts();
            for (partition, _) in &written {
                if let Some(part) = parts.get_mut(partition)
                    && part.detection.held() > 0
                {
                    out.release(&mut part.detection);
                    released.push(*partition);
                }
            }
        }
        if !released.is_empty() {
            out.durable()?;
            self.write_states(offsets, &|partition, _, _| released.contains(&partition))?;
        }
        let took = started.elapsed();
        if let Some(m) = &out.metrics {
            m.checkpoint(took);
        }
        tracing::debug!(partitions = ?written, seconds = took.as_secs_f64(), "Partition states written to the changelog.");
        Ok(())
    }
}

impl Member {
    /// Writes the state of each owned partition that `which` picks (given the partition, its
    /// part and next offset) to the changelog and waits for the broker's acknowledgement; returns the
    /// partitions written with their offsets.
    fn write_states(
        &mut self,
        offsets: &Offsets,
        which: &dyn Fn(i32, &Part, i64) -> bool,
    ) -> anyhow::Result<Vec<(i32, i64)>> {
        let changelog = &self.partitions.changelog;
        let before = changelog.failures();
        let mut parts = self.partitions.parts();
        let mut written = Vec::new();
        for (&partition, part) in parts.iter() {
            let Some(next) = offsets.get(&self.partitions.topic, partition) else {
                continue;
            };
            if !which(partition, part, next) {
                continue;
            }
            let mut own = Offsets::default();
            own.advance(&self.partitions.topic, partition, next);
            let payload = state::encode(&part.detection, &own)?;
            changelog.write(partition, next, &payload)?;
            written.push((partition, next));
        }
        if written.is_empty() {
            return Ok(written);
        }
        changelog.flush(before)?;
        for (partition, next) in &written {
            if let Some(part) = parts.get_mut(partition) {
                part.saved = Some(*next);
            }
        }
        Ok(written)
    }
}
