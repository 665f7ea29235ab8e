//! The dead letter's Kafka form: the raw bytes as the message value; reason, error, source
//! (and length, element) as headers.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

use super::KafkaConfig;
use crate::ingest::dead_letter::{DeadLetter, Letter};

/// Dead letters to a Kafka topic: raw bytes as value, reason, error and source as headers.
pub struct KafkaDeadLetter {
    producer: BaseProducer,
    topic: String,
}

impl KafkaDeadLetter {
    /// An idempotent producer for `topic` on `cfg`'s brokers.
    pub fn new(cfg: &KafkaConfig, topic: &str) -> Result<KafkaDeadLetter, rdkafka::error::KafkaError> {
        let mut config = super::client_config(cfg);
        config.set("enable.idempotence", "true");
        Ok(KafkaDeadLetter {
            producer: config.create()?,
            topic: topic.to_owned(),
        })
    }
}

impl DeadLetter for KafkaDeadLetter {
    fn send(&mut self, letter: &Letter<'_>) -> std::io::Result<()> {
        let source = letter.source.to_string();
        let length = letter.length.map(|l| l.to_string());
        let element = letter.element.map(|i| i.to_string());
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "nhiwatch.reason",
                value: Some(letter.reason),
            })
            .insert(Header {
                key: "nhiwatch.error",
                value: Some(letter.error.as_str()),
            })
            .insert(Header {
                key: "nhiwatch.source",
                value: Some(source.as_str()),
            });
        if let Some(length) = &length {
            headers = headers.insert(Header {
                key: "nhiwatch.length",
                value: Some(length.as_str()),
            });
        }
        if let Some(element) = &element {
            headers = headers.insert(Header {
                key: "nhiwatch.element",
                value: Some(element.as_str()),
            });
        }
        let record = BaseRecord::<(), [u8]>::to(&self.topic)
            .payload(letter.bytes())
            .headers(headers);
        super::send_waiting(&self.producer, record).map_err(std::io::Error::other)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(std::io::Error::other)
    }
}
