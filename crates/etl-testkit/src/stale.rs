//! What earlier test runs left on the shared itest stack: every test makes
//! its own database, bucket and topics and none removes them (a failed test
//! keeps them to look at), so `make test` after `make test` would fill the
//! disk and give the brokers thousands of partitions. What is more than 15
//! minutes old goes, once per test process; `ETL_STALE_AFTER_SECS` sets
//! another age (`make bench` sweeps what is more than a minute old: 3,187
//! leftover partitions per broker node doubled the idle cluster's CPU and
//! the broker's CPU per file in a measured run). An hour of leftovers,
//! about 4 runs of `make test`, was 4,606 partitions per node, and one
//! node died of a full heap; 15 minutes still leave a failed run's
//! database, bucket and topics to look at.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use sqlx::PgPool;

use etl_core::config::Env;
use etl_core::metrics::DependencyTimer;
use etl_core::storage::{ObjectStore, S3Settings};

static SWEPT: AtomicBool = AtomicBool::new(false);
const DEFAULT_MAX_AGE_SECS: u64 = 15 * 60;

pub(crate) async fn sweep_once(admin: &PgPool, vars: &BTreeMap<String, String>, now: u64) {
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let max_age = std::env::var("ETL_STALE_AFTER_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_AGE_SECS);
    let stale = |name: &str| created_at(name).is_some_and(|t| t + max_age < now);
    drop_databases(admin, &stale).await;
    delete_buckets(vars, &stale).await;
    delete_topics(vars, &stale).await;
}

/// When a test run made `name`: tests name what they make `it_<epoch>_…`
/// (databases) or `it-<epoch>-…` (buckets, topic prefixes), and the fuzz
/// run `fuzz-<epoch>-…`.
fn created_at(name: &str) -> Option<u64> {
    let rest = ["it_", "it-", "fuzz-"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn drop_databases(admin: &PgPool, stale: &impl Fn(&str) -> bool) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'it\\_%'")
            .fetch_all(admin)
            .await
            .unwrap_or_default();
    for name in names.iter().filter(|n| stale(n)) {
        let _ = sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
            .execute(admin)
            .await;
    }
}

/// The local SeaweedFS deletes a bucket with what is in it.
async fn delete_buckets(vars: &BTreeMap<String, String>, stale: &impl Fn(&str) -> bool) {
    let env = Env::with_overrides(vars.clone());
    let Ok(settings) = S3Settings::from_env(&env) else {
        return;
    };
    let timer = DependencyTimer::new(&prometheus::Registry::new());
    let store = ObjectStore::new(&settings, timer);
    let Ok(buckets) = store.list_buckets().await else {
        return;
    };
    for bucket in buckets.iter().filter(|b| stale(b)) {
        let _ = store.with_bucket(bucket).delete_bucket().await;
    }
}

async fn delete_topics(vars: &BTreeMap<String, String>, stale: &impl Fn(&str) -> bool) {
    let Some(brokers) = vars.get("KAFKA_BROKERS") else {
        return;
    };
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("log_level", "3")
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let timeout = Duration::from_secs(10);
    let Ok(metadata) = admin.inner().fetch_metadata(None, timeout) else {
        return;
    };
    let names: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|name| stale(name))
        .collect();
    if names.is_empty() {
        return;
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    let _ = admin.delete_topics(&names, &options).await;
}

#[cfg(test)]
mod tests {
    use super::created_at;

    #[test]
    fn what_test_runs_make_is_dated_by_its_name() {
        assert_eq!(created_at("it_1700000000_ab12cd34"), Some(1_700_000_000));
        assert_eq!(created_at("it-1700000000-ab12cd34"), Some(1_700_000_000));
        assert_eq!(
            created_at("it-1700000000-ab12cd34.etl.file-loaded"),
            Some(1_700_000_000)
        );
        assert_eq!(created_at("fuzz-1700000000-4242"), Some(1_700_000_000));
        assert_eq!(created_at("imports"), None);
        assert_eq!(created_at("etl.file-loaded"), None);
        assert_eq!(created_at("it-x"), None);
    }
}
