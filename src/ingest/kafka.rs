//! Kafka source: a consumer-group member over several topics, committing only what was processed.
//!
//! Offsets are stored (`enable.auto.offset.store=false`) after the pipeline returned for a
//! message, and committed from the stored positions in the background and on shutdown, so a
//! crash re-delivers at most what was in flight: at-least-once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;

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

/// A consumer in `cfg.group_id`, subscribed to `cfg.topics`.
pub fn subscribe(cfg: &KafkaConfig) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    let mut config = client_config(cfg);
    config
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &cfg.auto_offset_reset)
        .set("partition.assignment.strategy", "cooperative-sticky");
    let consumer: StreamConsumer = config.create()?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Consumes until `shutdown` completes or `limit` records were processed; returns the count.
/// `progress`, if given, is kept equal to the number of records processed so far.
pub async fn consume(
    consumer: &StreamConsumer,
    pipeline: &mut Pipeline,
    sink: &mut dyn FnMut(Event),
    limit: Option<u64>,
    progress: Option<&AtomicU64>,
    metrics: Option<&Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, KafkaIngestError> {
    tokio::pin!(shutdown);
    let mut processed = 0u64;
    let mut lag: HashMap<(String, i32), i64> = HashMap::new();
    let mut lag_checked = std::time::Instant::now();
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
        if let Some(m) = metrics {
            if let Some(at) = received {
                let micros = (chrono::Utc::now() - at).num_microseconds().unwrap_or(0);
                m.latency_micros(micros.max(0) as u64);
            }
            // Once a second, ask the broker for the end of this message's partition (a short
            // blocking request, moved off the async workers) and sum the lag of all partitions
            // seen: partitions are refreshed as their messages arrive.
            if lag_checked.elapsed() >= std::time::Duration::from_secs(1) {
                let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
                let high = tokio::task::block_in_place(|| {
                    consumer.fetch_watermarks(topic, partition, std::time::Duration::from_millis(200))
                });
                if let Ok((_, high)) = high {
                    lag.insert((topic.to_owned(), partition), (high - offset - 1).max(0));
                }
                m.set_lag(lag.values().sum());
                lag_checked = std::time::Instant::now();
            }
        }
        if let Some(progress) = progress {
            progress.store(processed, Ordering::Release);
        }
    }
    if let Some(m) = metrics {
        m.set_lag(lag.values().sum());
    }
    pipeline.flush()?;
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(processed)
}
