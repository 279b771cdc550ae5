//! The Kafka side: settings, topic names and creation, an idempotent event
//! publisher, consumers that never commit on their own, and their lag.

mod consumer;
mod fault;
mod lag;
mod producer_health;
mod publisher;
mod settings;
mod topics;
mod writable;

pub use consumer::{
    ReceiveBackoff, consumer, consumer_alive, consumer_ready, headers_map, metadata_ok,
    next_record, release_consumer,
};
pub use fault::{CONSUMER_FATAL_VAR, FaultPlan, Injector, PRODUCER_FATAL_VAR};
pub use lag::{ConsumerLag, WaitingRecords, uncommitted};
pub use publisher::{Delivered, EventPublisher, Pending};
pub use settings::KafkaSettings;
pub use topics::{Topics, ensure_topics, provision_topics};

use rdkafka::error::KafkaError;

pub const HEADER_EVENT_TYPE: &str = "event-type";
pub const HEADER_REQUEST_ID: &str = "request-id";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka client setup failed: {0}")]
    Setup(#[source] KafkaError),
    #[error("creating topic {topic} failed: {error}")]
    CreateTopic { topic: String, error: String },
    #[error("publishing to {topic} failed: {source}")]
    Publish {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("kafka metadata request failed: {0}")]
    Metadata(String),
    #[error("{0}")]
    Unwritable(String),
    /// The producer cannot deliver: fatal, or its latest publishes failed.
    #[error("{0}")]
    Unhealthy(String),
}
