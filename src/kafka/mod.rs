//! Kafka's one home: the client configuration (`[kafka]`), the consumer every source and group
//! role reads with ([`consumer`], in step across partitions by [`align`]), the producers of the
//! group roles ([`producer`]), the dead letter's Kafka form ([`dead_letter`]), topic creation
//! ([`admin`]) and the embedded broker of `demo`, `bench` and the tests ([`embedded`]). The
//! Kafka sink builds its producer from [`client_config`] too.

pub mod admin;
pub mod align;
pub mod consumer;
pub mod dead_letter;
pub mod embedded;
pub mod producer;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

pub use consumer::{Align, Consumer, KafkaIngestError, Options, Owner, Stage, consume, subscribe, subscribe_to};

/// `[kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Where a new group starts.
    pub auto_offset_reset: OffsetReset,
    /// Static membership id (`group.instance.id`); empty for dynamic membership.
    pub instance_id: String,
    /// Records fetched ahead of processing, bytes.
    pub fetch_buffer_bytes: u64,
    /// A partition that gives no record this long while others do stops holding the event-time
    /// order back, seconds.
    pub idle_partition_seconds: u64,
    /// The topic `run --role rekey` publishes normalized events to, keyed by identity, and
    /// `run --role detect` consumes.
    pub events_topic: String,
    /// The compacted topic of each events partition's state (`--role detect`).
    pub changelog_topic: String,
    /// Replication factor of the changelog topic when nhiwatch creates it (-1: the broker's).
    pub changelog_replication: i32,
    /// Largest changelog record (one partition's state), bytes.
    pub changelog_max_bytes: u64,
    /// librdkafka properties passed through.
    pub properties: BTreeMap<String, String>,
}

/// Where a consumer group without committed offsets starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// The oldest record kept.
    Earliest,
    /// Records written from now on.
    Latest,
}

impl OffsetReset {
    /// librdkafka's `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
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

/// Sends `record`, polling while librdkafka's local queue is full.
pub fn send_waiting<K, P, C>(
    producer: &rdkafka::producer::BaseProducer<C>,
    mut record: rdkafka::producer::BaseRecord<'_, K, P>,
) -> Result<(), rdkafka::error::KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
    C: rdkafka::producer::ProducerContext<DeliveryOpaque = ()>,
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
