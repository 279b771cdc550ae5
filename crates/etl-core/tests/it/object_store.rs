//! The object store against the real local SeaweedFS: signatures it
//! accepts for any key, listings past one page, refusals reported with the
//! server's reason, and the retries and deadline of a call, with a TCP
//! relay in front of the server that drops or holds connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use etl_core::metrics::DependencyTimer;
use etl_core::storage::{ObjectStore, S3Settings, StoreError};
use etl_testkit::TestEnv;

fn store(env: &TestEnv, extra: &[(&str, &str)]) -> ObjectStore {
    let settings = S3Settings::from_env(&env.env(extra)).expect("S3 settings");
    ObjectStore::new(
        &settings,
        DependencyTimer::new(&prometheus::Registry::new()),
    )
}

#[tokio::test]
async fn keys_with_any_character_are_stored_listed_read_and_deleted() {
    let env = TestEnv::new().await;
    let store = store(&env, &[]);
    store.ensure_bucket().await.expect("bucket created");
    store
        .ensure_bucket()
        .await
        .expect("an existing bucket is fine");

    let keys = [
        "acme/files/0190b2c4-0000-8000-8000-000000000001.json",
        "with space/ü+=&;@$,/x.json",
        "tilde~dot.-_/y",
        "quote'\"(*)!?#%/z",
    ];
    for (n, key) in keys.iter().enumerate() {
        let body = format!("{{\"n\":{n},\"key\":{key:?}}}").into_bytes();
        let stored = store.put(key, body.clone()).await.expect("stored");
        assert!(!stored.etag.is_empty(), "{key}: no ETag");
        assert_eq!(store.get(key).await.expect("read back"), body, "{key}");
    }
    let mut listed = store.list("").await.expect("listed");
    listed.sort();
    let mut expected: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(store.list("with space/").await.unwrap(), [keys[1]]);

    store.delete(keys[1]).await.expect("deleted");
    assert!(matches!(
        store.get(keys[1]).await,
        Err(StoreError::NotFound { key }) if key == keys[1]
    ));
    store
        .delete(keys[1])
        .await
        .expect("deleting what is gone succeeds, as in S3");
    assert_eq!(store.list("").await.unwrap().len(), keys.len() - 1);
}

#[tokio::test]
async fn a_listing_longer_than_one_page_is_read_to_its_end() {
    let env = TestEnv::new().await;
    let store = store(&env, &[]);
    store.ensure_bucket().await.expect("bucket created");
    // S3 answers at most 1,000 keys a page.
    let keys: Vec<String> = (0..1_005).map(|i| format!("many/{i:05}")).collect();
    let stored = futures::stream::iter(&keys)
        .map(|key| store.put(key, b"{}".to_vec()))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    assert!(stored.iter().all(Result::is_ok), "every PUT stored");
    let mut listed = store.list("many/").await.expect("listed");
    listed.sort();
    assert_eq!(listed, keys);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_the_servers_reason() {
    let env = TestEnv::new().await;
    store(&env, &[])
        .ensure_bucket()
        .await
        .expect("bucket created");
    let wrong = store(&env, &[("S3_SECRET_ACCESS_KEY", "not-the-secret")]);
    let e = wrong.put("k", b"{}".to_vec()).await.unwrap_err();
    let StoreError::Unavailable { operation, message } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*operation, "PutObject");
    assert!(message.starts_with("403 Forbidden"), "{message}");
    assert!(
        !message.contains("attempts"),
        "a refusal is not retried: {message}"
    );
}

/// A relay on a loopback port in front of the stack's S3 server. The first
/// `drop_first` connections are read from and closed without an answer;
/// with `hold`, every connection is read from and left unanswered.
struct Relay {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(upstream: &str, drop_first: usize, hold: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = upstream.to_owned();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if hold || n <= drop_first {
                        let mut request = [0u8; 1024];
                        let _ = client.read(&mut request).await;
                        if hold {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Self { port, connections }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn upstream(env: &TestEnv) -> String {
    let endpoint = &env.vars["S3_ENDPOINT"];
    endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_retried() {
    let env = TestEnv::new().await;
    store(&env, &[])
        .ensure_bucket()
        .await
        .expect("bucket created");
    let relay = Relay::start(&upstream(&env), 1, false).await;
    let through = store(&env, &[("S3_ENDPOINT", &relay.endpoint())]);

    through
        .put("retried.json", b"{\"a\":1}".to_vec())
        .await
        .expect("stored on the second attempt");
    assert_eq!(relay.connections(), 2, "one dropped, one answered");
    assert_eq!(
        store(&env, &[]).get("retried.json").await.unwrap(),
        b"{\"a\":1}"
    );
}

#[tokio::test]
async fn a_call_gives_up_after_three_attempts() {
    let env = TestEnv::new().await;
    let relay = Relay::start(&upstream(&env), usize::MAX, false).await;
    let through = store(&env, &[("S3_ENDPOINT", &relay.endpoint())]);

    let e = through.put("never.json", b"{}".to_vec()).await.unwrap_err();
    let StoreError::Unavailable { message, .. } = &e else {
        panic!("{e:?}");
    };
    assert!(message.ends_with("(3 attempts)"), "{message}");
    assert_eq!(relay.connections(), 3);
}

#[tokio::test]
async fn a_server_that_never_answers_is_given_up_on_at_the_timeout() {
    let env = TestEnv::new().await;
    let relay = Relay::start(&upstream(&env), 0, true).await;
    let through = store(
        &env,
        &[("S3_ENDPOINT", &relay.endpoint()), ("S3_TIMEOUT_MS", "500")],
    );

    let started = Instant::now();
    let e = through.get("anything.json").await.unwrap_err();
    let waited = started.elapsed();
    let StoreError::Unavailable { operation, message } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*operation, "GetObject");
    assert!(
        message.contains("no answer within S3_TIMEOUT_MS (500 ms)"),
        "{message}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "gave up after {waited:?}, not at the 500 ms deadline"
    );
}
