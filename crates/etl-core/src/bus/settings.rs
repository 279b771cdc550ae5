//! `KAFKA_*` settings and the client configuration every producer,
//! consumer and admin client of the services starts from.

use std::time::Duration;

use rdkafka::ClientConfig;

use super::fault::{CONSUMER_FATAL_VAR, FaultPlan, Injector, PRODUCER_FATAL_VAR};
use super::topics::Topics;
use crate::config::{ConfigError, Env};

/// How the services reach the broker.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `KAFKA_BROKERS`: comma-separated `host:port` bootstrap list.
    pub brokers: String,
    /// `KAFKA_TOPIC_PREFIX`: prepended to every topic name (isolates tests
    /// and environments sharing a broker).
    pub topic_prefix: String,
    /// `KAFKA_TOPIC_PARTITIONS`: partitions for topics this service creates.
    pub partitions: i32,
    /// `KAFKA_REPLICATION_FACTOR`: replication for topics this service creates.
    pub replication_factor: i32,
    /// `KAFKA_PRODUCE_TIMEOUT_MS`: how long a publish may wait for the
    /// broker's acknowledgement before the caller sees an error.
    pub produce_timeout: Duration,
    /// `KAFKA_LINGER_MS`: how long the producer waits for more records to
    /// send with one before it sends a batch (librdkafka's `linger.ms`).
    pub linger: Duration,
    /// `KAFKA_LAG_INTERVAL_MS`: how often consumers refresh the
    /// `consumer_lag_records` gauge.
    pub lag_interval: Duration,
    /// `KAFKA_SESSION_TIMEOUT_MS`: how long the group waits for a consumer
    /// that stopped heartbeating (crashed) before giving its partitions to
    /// the others. A clean shutdown leaves the group at once.
    pub session_timeout: Duration,
    /// `KAFKA_MAX_POLL_INTERVAL_MS`: how long a consumer may go without
    /// polling before the group takes its partitions away. The processor
    /// polls while it waits to retry a file, so this bounds a stuck call,
    /// not an outage.
    pub max_poll_interval: Duration,
    /// `KAFKA_PRODUCER_MAX_REPLACEMENTS`: replacements in a row of a
    /// producer that librdkafka declared fatal, each going fatal again,
    /// after which liveness fails so that the pod is restarted.
    pub producer_max_replacements: u32,
    /// The test hooks [`PRODUCER_FATAL_VAR`] and [`CONSUMER_FATAL_VAR`];
    /// `None` in every real deployment.
    pub producer_fault: Option<FaultPlan>,
    pub consumer_fault: Option<FaultPlan>,
    /// `KAFKA_DEBUG`: librdkafka debug contexts (`cgrp,fetch`, `all`) to
    /// log at debug level under the `librdkafka` target (so also set
    /// `RUST_LOG=info,librdkafka=debug`); empty for none.
    pub debug: String,
}

fn fault_plan(env: &Env, var: &str) -> Result<Option<FaultPlan>, ConfigError> {
    env.raw(var)
        .map(|plan| FaultPlan::parse(var, &plan))
        .transpose()
}

fn consumer_fault_plan(env: &Env) -> Result<Option<FaultPlan>, ConfigError> {
    let plan = fault_plan(env, CONSUMER_FATAL_VAR)?;
    if plan.is_some_and(|p| p.times != 1) {
        return Err(ConfigError {
            var: CONSUMER_FATAL_VAR.into(),
            problem: "times does not apply: a fatal consumer is not replaced".into(),
        });
    }
    Ok(plan)
}

impl KafkaSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let partitions = env.parse("KAFKA_TOPIC_PARTITIONS", 3)?;
        if partitions < 1 {
            return Err(ConfigError {
                var: "KAFKA_TOPIC_PARTITIONS".into(),
                problem: "must be at least 1".into(),
            });
        }
        Ok(Self {
            brokers: env.non_empty("KAFKA_BROKERS", "127.0.0.1:19092")?,
            topic_prefix: env.string("KAFKA_TOPIC_PREFIX", ""),
            partitions,
            replication_factor: env.parse("KAFKA_REPLICATION_FACTOR", 1)?,
            produce_timeout: env.millis("KAFKA_PRODUCE_TIMEOUT_MS", 10_000)?,
            linger: env.millis("KAFKA_LINGER_MS", 20)?,
            lag_interval: env.millis("KAFKA_LAG_INTERVAL_MS", 5_000)?,
            session_timeout: env.millis("KAFKA_SESSION_TIMEOUT_MS", 45_000)?,
            max_poll_interval: env.millis("KAFKA_MAX_POLL_INTERVAL_MS", 300_000)?,
            producer_max_replacements: env.parse("KAFKA_PRODUCER_MAX_REPLACEMENTS", 5)?,
            producer_fault: fault_plan(env, PRODUCER_FATAL_VAR)?,
            consumer_fault: consumer_fault_plan(env)?,
            debug: env.string("KAFKA_DEBUG", ""),
        })
    }

    /// What puts a consumer of these settings into the fatal state in a
    /// test: nothing, unless [`CONSUMER_FATAL_VAR`] is set.
    pub fn consumer_fault(&self) -> Injector {
        Injector::new(self.consumer_fault, CONSUMER_FATAL_VAR)
    }

    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    pub(super) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        if self.debug.is_empty() {
            // Quiet librdkafka's own logging; errors reach us as results.
            c.set("log_level", "3");
        } else {
            c.set("debug", &self.debug).set("log_level", "7");
        }
        c
    }
}
