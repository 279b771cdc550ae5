//! A Kafka cluster owned by one test (KRaft nodes that are broker and
//! controller at once, on free loopback ports), so the test can kill,
//! freeze and restart brokers without disturbing other tests.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::own_server::{OwnServer, free_port, server_dir};
use crate::{DEADLINE, TestEnv, eventually};

pub struct OwnKafka {
    /// Node `id` is `nodes[id - 1]`, as Kafka numbers them from 1.
    nodes: Vec<OwnServer>,
    /// One client for every look at the cluster's metadata (the tests poll).
    metadata: Arc<BaseConsumer>,
}

/// One partition as the cluster's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: i32,
    /// The node leading it, `-1` while none does.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl OwnKafka {
    /// Starts a cluster of `nodes` nodes and waits until every node is up.
    /// With three or more, topics get 3 replicas and `min.insync.replicas`
    /// 2, as in production (scripts/kafka/server.properties).
    pub async fn start(test_id: &str, nodes: usize) -> Self {
        let broker_ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let controller_ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let voters = controller_ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{}@127.0.0.1:{port}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let cluster_id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::new_v4().as_bytes());
        let servers: Vec<OwnServer> = (0..nodes)
            .map(|i| {
                let name = format!("kafka-{}", i + 1);
                OwnServer::kafka_node(
                    name.clone(),
                    server_dir(test_id, &name),
                    broker_ports[i],
                    vec![
                        (i + 1).to_string(),
                        broker_ports[i].to_string(),
                        controller_ports[i].to_string(),
                        voters.clone(),
                        cluster_id.clone(),
                    ],
                )
            })
            .collect();
        let metadata = ClientConfig::new()
            .set("bootstrap.servers", bootstrap(&broker_ports))
            .set("log_level", "3")
            .create()
            .expect("a metadata client");
        let cluster = Self {
            nodes: servers,
            metadata: Arc::new(metadata),
        };
        for node in &cluster.nodes {
            node.wait_ready().await;
        }
        cluster
    }

    /// The bootstrap list of every node.
    pub fn brokers(&self) -> String {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        bootstrap(&ports)
    }

    /// Points everything of `env` (its services and its own reads) at this
    /// cluster, with the replication it can give.
    pub fn serve(&self, env: &mut TestEnv) {
        let replication = self.nodes.len().min(3);
        env.vars.insert("KAFKA_BROKERS".into(), self.brokers());
        env.vars
            .insert("KAFKA_REPLICATION_FACTOR".into(), replication.to_string());
    }

    /// Node `id` (1-based, as Kafka numbers them).
    pub fn node(&mut self, id: i32) -> &mut OwnServer {
        let index = usize::try_from(id - 1).expect("node ids start at 1");
        &mut self.nodes[index]
    }

    pub fn node_ids(&self) -> Vec<i32> {
        (1..=self.nodes.len() as i32).collect()
    }

    /// Starts node `id` again and waits until it is up.
    pub async fn restart(&mut self, id: i32) {
        self.node(id).restart().await;
    }

    /// The partitions of `topic`, as the cluster describes them now.
    pub async fn partitions(&self, topic: &str) -> Vec<PartitionState> {
        let (client, topic) = (self.metadata.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let metadata = client
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()?;
            let t = metadata.topics().first()?;
            if t.error().is_some() || t.partitions().is_empty() {
                return None;
            }
            let mut states: Vec<PartitionState> = t
                .partitions()
                .iter()
                .map(|p| PartitionState {
                    partition: p.id(),
                    leader: p.leader(),
                    replicas: p.replicas().to_vec(),
                    isr: p.isr().to_vec(),
                })
                .collect();
            states.sort_by_key(|p| p.partition);
            Some(states)
        })
        .await
        .expect("metadata task")
        .unwrap_or_default()
    }

    /// The node leading `partition` of `topic`, once the topic exists and
    /// the partition has a leader.
    pub async fn leader_of(&self, topic: &str, partition: i32) -> i32 {
        eventually(
            DEADLINE,
            &format!("{topic}[{partition}] to have a leader"),
            || async {
                self.partitions(topic)
                    .await
                    .into_iter()
                    .find(|p| p.partition == partition && p.leader >= 0)
                    .map(|p| p.leader)
            },
        )
        .await
    }

    /// The node coordinating consumer group `group`: the leader of its
    /// partition of `__consumer_offsets` (Kafka's `abs(hashCode) %
    /// partitions`), once a group has joined and that topic exists.
    pub async fn coordinator_of(&self, group: &str) -> i32 {
        let partitions = eventually(DEADLINE, "__consumer_offsets to exist", || async {
            let n = self.partitions("__consumer_offsets").await.len();
            (n > 0).then_some(n as i32)
        })
        .await;
        let hash = group.encode_utf16().fold(0i32, |h, unit| {
            h.wrapping_mul(31).wrapping_add(i32::from(unit))
        });
        // Kafka's Utils.abs: Math.abs, except that i32::MIN becomes 0.
        let partition = hash.checked_abs().unwrap_or(0) % partitions;
        self.leader_of("__consumer_offsets", partition).await
    }

    /// Waits until every partition of `topics` has all its replicas in
    /// sync: what an operator waits for before restarting the next broker.
    pub async fn wait_in_sync(&self, topics: &[&str]) {
        for topic in topics {
            eventually(
                Duration::from_secs(120),
                &format!("every replica of {topic} in sync"),
                || async {
                    let parts = self.partitions(topic).await;
                    let synced = !parts.is_empty()
                        && parts
                            .iter()
                            .all(|p| p.leader >= 0 && sorted(&p.isr) == sorted(&p.replicas));
                    synced.then_some(())
                },
            )
            .await;
        }
    }
}

fn sorted(ids: &[i32]) -> Vec<i32> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

/// `127.0.0.1:<port>,…`: a bootstrap list of the nodes.
fn bootstrap(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Drop for OwnKafka {
    /// The test is over: no clean shutdown is owed to its data, and nodes
    /// stopped one by one would each wait for a quorum that is leaving.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}
