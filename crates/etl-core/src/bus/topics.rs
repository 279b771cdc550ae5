//! The contract's topic names and their creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::{BusError, KafkaSettings};
use crate::events::Event;

/// The topic names of the contract, with the configured prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub file_extract_success: String,
    pub file_extract_error: String,
    pub validation_error: String,
    pub file_loaded: String,
    pub dead_letter: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            file_extract_success: format!("{prefix}etl.file-extract-success"),
            file_extract_error: format!("{prefix}etl.file-extract-error"),
            validation_error: format!("{prefix}etl.validation-error"),
            file_loaded: format!("{prefix}etl.file-loaded"),
            dead_letter: format!("{prefix}etl.dead-letter"),
        }
    }

    pub fn for_event(&self, event: &Event) -> &str {
        match event {
            Event::FileExtractSuccess(_) => &self.file_extract_success,
            Event::FileExtractError(_) => &self.file_extract_error,
            Event::ValidationError(_) => &self.validation_error,
            Event::FileLoaded(_) => &self.file_loaded,
            Event::DeadLetter(_) => &self.dead_letter,
        }
    }

    pub fn all(&self) -> [&str; 5] {
        [
            &self.file_extract_success,
            &self.file_extract_error,
            &self.validation_error,
            &self.file_loaded,
            &self.dead_letter,
        ]
    }
}

/// Creates the given topics if they do not exist yet.
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[&str]) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> =
        settings.client_config().create().map_err(BusError::Setup)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| BusError::CreateTopic {
            topic: topics.join(","),
            error: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(BusError::CreateTopic {
                    topic,
                    error: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Creates every topic of the contract if missing, now or, while the broker
/// is down, in the background (see [`crate::provision`]).
pub async fn provision_topics(settings: &KafkaSettings) {
    let settings = settings.clone();
    crate::provision("topics", move || {
        let settings = settings.clone();
        async move {
            ensure_topics(&settings, &settings.topics().all())
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_contract_and_take_a_prefix() {
        let t = Topics::with_prefix("");
        assert_eq!(
            t.all(),
            [
                "etl.file-extract-success",
                "etl.file-extract-error",
                "etl.validation-error",
                "etl.file-loaded",
                "etl.dead-letter"
            ]
        );
        assert_eq!(
            Topics::with_prefix("it-1.").file_loaded,
            "it-1.etl.file-loaded"
        );
    }
}
