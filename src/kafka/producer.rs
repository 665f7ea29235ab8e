//! Producers: the idempotent, Java-partitioned producer of the group roles (events topic and
//! changelog), with a context that counts failed deliveries.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::ClientContext;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer as _, ProducerContext};

use super::{KafkaConfig, client_config};

/// How long a commit point waits for the broker to acknowledge what it published.
const FLUSH: Duration = Duration::from_secs(30);

/// A producer context that counts failed deliveries and keeps the last reason.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    reason: Mutex<Option<String>>,
}

impl Deliveries {
    /// Deliveries that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Acquire)
    }

    fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            *self.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.to_string());
            self.failed.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// An idempotent producer on `cfg`'s brokers whose keyed records are partitioned as the Java
/// client does (murmur2 of the key, positive, modulo the partition count).
pub fn producer(cfg: &KafkaConfig) -> Result<BaseProducer<Deliveries>, rdkafka::error::KafkaError> {
    producer_config(cfg).create_with_context(Deliveries::default())
}

/// The configuration of [`producer`], to which a caller adds its own properties.
pub fn producer_config(cfg: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut config = client_config(cfg);
    config
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("compression.type", "lz4");
    config
}

/// Waits until everything sent is acknowledged; an error if anything failed since `before`
/// failures were counted.
pub fn acknowledged(producer: &BaseProducer<Deliveries>, before: u64, what: &str) -> anyhow::Result<()> {
    producer
        .flush(FLUSH)
        .with_context(|| format!("waiting for the broker to acknowledge the {what}"))?;
    let failed = producer.context().failed() - before;
    if failed > 0 {
        bail!(
            "{failed} {what} records were not delivered: {}",
            producer.context().reason()
        );
    }
    Ok(())
}
