//! Kafka source: a consumer-group member over several topics, committing only what was processed.
//!
//! Offsets are stored (`enable.auto.offset.store=false`) after the pipeline returned for a
//! message, and committed from the stored positions in the background and on shutdown, so a
//! crash re-delivers at most what was in flight: at-least-once.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;

use super::Record;
use crate::config::KafkaConfig;
use crate::event::{Event, Origin};
use crate::pipeline::Pipeline;

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
        if let Some(progress) = progress {
            progress.store(processed, Ordering::Release);
        }
    }
    pipeline.flush()?;
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(processed)
}
