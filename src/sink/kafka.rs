//! The Kafka sink: each delivery as an OCSF Detection Finding JSON record on a topic, keyed by
//! the identity (one identity's findings stay in order on one partition), with the finding id
//! and OCSF activity as headers. The producer is idempotent (`enable.idempotence`, `acks=all`),
//! so librdkafka's own retries neither duplicate nor reorder; a batch that still fails is
//! retried by the sink worker from the first record not acknowledged.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

use super::SendError;
use super::outbox::Delivery;
use crate::findings::ocsf;
use crate::kafka::KafkaConfig;

/// `kind = "kafka"`.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Topic (required).
    #[serde(default)]
    pub topic: String,
    /// Bootstrap servers (`[kafka] brokers` by default).
    #[serde(default)]
    pub brokers: Option<String>,
    /// librdkafka properties (`[kafka.properties]` by default).
    #[serde(default)]
    pub properties: Option<BTreeMap<String, String>>,
}

impl KafkaSinkConfig {
    /// Its keys.
    pub const KEYS: &[&str] = &["topic", "brokers", "properties"];

    /// The key that is wrong and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.topic.is_empty() {
            return Err(("topic", super::required("kafka")));
        }
        Ok(())
    }
}

impl std::fmt::Debug for KafkaSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The properties may hold a password: only their keys are shown.
        f.debug_struct("KafkaSinkConfig")
            .field("topic", &self.topic)
            .field("brokers", &self.brokers)
            .field(
                "properties",
                &self.properties.as_ref().map(|p| p.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

/// A producer for one topic.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
}

impl KafkaSink {
    /// A producer to `topic` on the brokers of `kafka`; a record not acknowledged within
    /// `timeout` fails its attempt.
    pub fn new(kafka: &KafkaConfig, topic: String, timeout: Duration) -> anyhow::Result<KafkaSink> {
        let producer: FutureProducer = crate::kafka::client_config(kafka)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", timeout.as_millis().max(1).to_string())
            .create()?;
        Ok(KafkaSink { producer, topic })
    }

    /// Produces `batch` and waits for every acknowledgement.
    pub async fn send(&mut self, batch: &[&Delivery]) -> Result<(), SendError> {
        let mut pending = Vec::with_capacity(batch.len());
        for (i, d) in batch.iter().enumerate() {
            let payload = ocsf::encode_delivery(&d.finding, d.activity, Some(d.seq)).to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "finding_id",
                    value: Some(d.finding.id.as_str()),
                })
                .insert(Header {
                    key: "activity",
                    value: Some(d.activity.name()),
                });
            let record = FutureRecord::to(&self.topic)
                .key(d.finding.identity.id.as_str())
                .payload(&payload)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(future) => pending.push(future),
                Err((e, _)) => {
                    // The local queue is full or closed: wait for what was enqueued, then retry.
                    let delivered = settle(pending).await;
                    return Err(SendError::new(delivered.min(i), format!("kafka {}: {e}", self.topic)));
                }
            }
        }
        let n = pending.len();
        let delivered = settle(pending).await;
        if delivered == n {
            Ok(())
        } else {
            Err(SendError::new(
                delivered,
                format!("kafka {}: not acknowledged", self.topic),
            ))
        }
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

/// Awaits acknowledgements in order; returns how many leading records were acknowledged.
async fn settle(pending: Vec<rdkafka::producer::DeliveryFuture>) -> usize {
    let mut acked = 0;
    let mut gap = false;
    for future in pending {
        let ok = matches!(future.await, Ok(Ok(_)));
        if ok && !gap {
            acked += 1;
        } else if !ok {
            gap = true;
        }
    }
    acked
}
