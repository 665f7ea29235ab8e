//! The embedded broker: librdkafka's mock cluster, a real Kafka-protocol broker on loopback,
//! for `demo`, `bench` and the tests. It keeps only about the last 5 MB of each partition.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A one-broker cluster on loopback, stopped when dropped.
pub struct Embedded {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl Embedded {
    /// Starts the broker.
    pub fn start() -> Result<Embedded, rdkafka::error::KafkaError> {
        Ok(Embedded {
            cluster: MockCluster::new(1)?,
        })
    }

    /// Its `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), rdkafka::error::KafkaError> {
        self.cluster.create_topic(topic, partitions, 1)
    }
}
