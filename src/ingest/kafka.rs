//! Kafka source: a consumer-group member over several topics, committing only what was processed.
//!
//! Offsets are stored (`enable.auto.offset.store=false`) after the pipeline returned for a
//! message, and committed from the stored positions in the background and on shutdown, so a
//! crash re-delivers at most what was in flight: at-least-once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;

use super::Record;
use crate::config::KafkaConfig;
use crate::event::{Event, Origin};
use crate::pipeline::Pipeline;
use crate::telemetry::metrics::Metrics;

/// A broker error or a dead letter that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum KafkaIngestError {
    /// The broker or client failed (retryable by restarting).
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The dead letter could not be written; processing stopped so nothing is lost.
    #[error("dead letter: {0}")]
    DeadLetter(#[from] std::io::Error),
}

/// The client configuration for `cfg`'s brokers with its pass-through properties.
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &cfg.brokers);
    for (key, value) in &cfg.properties {
        config.set(key, value);
    }
    config
}

/// The consumer's context: turns librdkafka's statistics (once a second) into the lag gauge.
pub struct LagContext {
    metrics: Option<Arc<Metrics>>,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
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

impl ConsumerContext for LagContext {}

/// The Kafka consumer nhiwatch uses.
pub type Consumer = StreamConsumer<LagContext>;

/// A consumer in `cfg.group_id`, subscribed to `cfg.topics`; its lag goes to `metrics`.
pub fn subscribe(cfg: &KafkaConfig, metrics: Option<Arc<Metrics>>) -> Result<Consumer, rdkafka::error::KafkaError> {
    let mut config = client_config(cfg);
    if metrics.is_some() && !cfg.properties.contains_key("statistics.interval.ms") {
        config.set("statistics.interval.ms", "1000");
    }
    config
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &cfg.auto_offset_reset)
        .set("partition.assignment.strategy", "cooperative-sticky");
    let consumer: Consumer = config.create_with_context(LagContext { metrics })?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Sends `record`, polling while librdkafka's local queue is full.
pub fn send_waiting<K, P>(
    producer: &rdkafka::producer::BaseProducer,
    mut record: rdkafka::producer::BaseRecord<'_, K, P>,
) -> Result<(), rdkafka::error::KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(std::time::Duration::from_millis(5));
                record = back;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Consumes until `shutdown` completes or `limit` records were processed; returns the count.
/// `progress`, if given, is kept equal to the number of records processed so far.
pub async fn consume(
    consumer: &Consumer,
    pipeline: &mut Pipeline,
    sink: &mut dyn FnMut(Event),
    limit: Option<u64>,
    progress: Option<&AtomicU64>,
    metrics: Option<&Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, KafkaIngestError> {
    tokio::pin!(shutdown);
    let mut processed = 0u64;
    while limit.is_none_or(|l| processed < l) {
        let message = tokio::select! {
            m = consumer.recv() => m?,
            () = &mut shutdown => break,
        };
        let origin = Origin {
            name: message.topic().to_owned(),
            partition: Some(message.partition()),
            offset: message.offset(),
        };
        let received = message
            .timestamp()
            .to_millis()
            .and_then(chrono::DateTime::from_timestamp_millis);
        let bytes = message.payload().unwrap_or_default();
        pipeline.process(
            Record {
                bytes,
                origin: &origin,
                oversized_len: None,
                received,
            },
            sink,
        )?;
        consumer.store_offset_from_message(&message)?;
        processed += 1;
        if let Some(m) = metrics
            && let Some(at) = received
        {
            let micros = (chrono::Utc::now() - at).num_microseconds().unwrap_or(0);
            m.latency_micros(micros.max(0) as u64);
        }
        if let Some(progress) = progress {
            progress.store(processed, Ordering::Release);
        }
    }
    if let Some(m) = metrics {
        // The consumer stops here: its last lag would go stale.
        m.set_lag(-1);
    }
    pipeline.flush()?;
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(processed)
}
