//! Whether the cluster takes `acks=all` writes to a topic now: every
//! partition has a leader that answers and enough replicas in sync.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::{BusError, KafkaSettings};

/// The `min.insync.replicas` of each topic, asked once (a topic
/// setting that hardly ever changes).
pub(super) struct MinInsyncReplicas {
    admin: AdminClient<DefaultClientContext>,
    known: Mutex<HashMap<String, usize>>,
}

impl MinInsyncReplicas {
    pub(super) fn new(settings: &KafkaSettings) -> Result<Self, BusError> {
        Ok(Self {
            admin: settings.client_config().create().map_err(BusError::Setup)?,
            known: Mutex::new(HashMap::new()),
        })
    }

    pub(super) async fn of(&self, topic: &str, timeout: Duration) -> Result<usize, BusError> {
        if let Some(known) = self.known.lock().expect("not poisoned").get(topic) {
            return Ok(*known);
        }
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let failed = |e: String| BusError::Metadata(format!("{topic}: {e}"));
        let described = self
            .admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let resource = described
            .into_iter()
            .next()
            .ok_or_else(|| failed("no configuration described".into()))?
            .map_err(|code| failed(code.to_string()))?;
        let min_isr = resource
            .get("min.insync.replicas")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| failed("min.insync.replicas not described".into()))?;
        self.known
            .lock()
            .expect("not poisoned")
            .insert(topic.to_owned(), min_isr);
        Ok(min_isr)
    }
}

/// One partition of a metadata answer: id, leader, replicas, in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PartitionState {
    partition: i32,
    leader: i32,
    replicas: usize,
    in_sync: usize,
}

/// The partitions of `topic`, each leader asked for its offsets (a
/// metadata answer can name a leader that is long gone), or what is wrong.
pub(super) fn describe_partitions<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<PartitionState>, BusError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| BusError::Metadata(e.to_string()))?;
    let unwritable = |why: String| BusError::Unwritable(format!("{topic}: {why}"));
    let described = metadata
        .topics()
        .first()
        .ok_or_else(|| unwritable("the broker described no such topic".into()))?;
    if let Some(code) = described.error() {
        return Err(unwritable(RDKafkaErrorCode::from(code).to_string()));
    }
    let states: Vec<PartitionState> = described
        .partitions()
        .iter()
        .map(|p| PartitionState {
            partition: p.id(),
            leader: p.leader(),
            replicas: p.replicas().len(),
            in_sync: p.isr().len(),
        })
        .collect();
    for p in states.iter().filter(|p| p.leader >= 0) {
        if let Err(e) = client.fetch_watermarks(topic, p.partition, timeout / 2) {
            return Err(unwritable(format!(
                "partition {} has broker {} for leader, which does not answer ({e})",
                p.partition, p.leader
            )));
        }
    }
    Ok(states)
}

/// `Ok` when every partition of `topic` has a leader and at least
/// `min_isr` replicas in sync; else a sentence saying which does not.
pub(super) fn writable(
    topic: &str,
    partitions: &[PartitionState],
    min_isr: usize,
) -> Result<(), String> {
    if partitions.is_empty() {
        return Err(format!("{topic} has no partitions"));
    }
    for p in partitions {
        if p.leader < 0 {
            return Err(format!("{topic} partition {} has no leader", p.partition));
        }
        if p.in_sync < min_isr {
            return Err(format!(
                "{topic} partition {}: {} of {} replicas in sync, min.insync.replicas is {min_isr}: \
                 the cluster refuses acks=all writes until a broker returns",
                p.partition, p.in_sync, p.replicas
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(partition: i32, leader: i32, in_sync: usize) -> PartitionState {
        PartitionState {
            partition,
            leader,
            replicas: 3,
            in_sync,
        }
    }

    #[test]
    fn a_topic_is_writable_only_with_a_leader_and_enough_replicas_in_sync() {
        let healthy = [partition(0, 1, 3), partition(1, 2, 2), partition(2, 3, 3)];
        assert_eq!(writable("t", &healthy, 2), Ok(()));

        let two_down = [partition(0, 1, 1), partition(1, 1, 1), partition(2, 1, 1)];
        let refused = writable("t", &two_down, 2).unwrap_err();
        assert!(
            refused.contains("t partition 0: 1 of 3 replicas in sync, min.insync.replicas is 2"),
            "{refused}"
        );
        assert_eq!(writable("t", &two_down, 1), Ok(()));

        let leaderless = [partition(0, 1, 2), partition(1, -1, 1)];
        assert_eq!(
            writable("t", &leaderless, 1),
            Err("t partition 1 has no leader".into())
        );
        assert_eq!(writable("t", &[], 1), Err("t has no partitions".into()));
    }
}
