//! SIGTERM in the middle of work, as Kubernetes sends it on every rollout:
//! whatever the api acknowledged is loaded after a restart, exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use serde_json::Value;
use tokio::sync::Mutex;

use etl_core::events::Event;
use etl_testkit::{
    DEADLINE, ServiceProcess, TestEnv, eventually, generated_company, http, metric, scrape,
};

const FILES: u32 = 300;
const CLIENTS: usize = 8;
/// Posted one by one before the batch, until the processor is loading.
const WARM_UP: u32 = 10;
/// Acknowledged imports of the batch before the signal.
const SIGNAL_AFTER: usize = 40;
/// Acknowledged files not loaded yet at the signal: more than the one lane
/// the processor runs here can hold (the files it took stay its to finish),
/// so the signal is sure to interrupt work.
const BACKLOG: i64 = 30;

/// What one client request came back with.
#[derive(Debug)]
enum Answer {
    Accepted(String),
    Status(u16, String),
    /// Connection refused or closed: the api had stopped listening.
    Nothing,
}

async fn post_company(client: &reqwest::Client, url: &str, tag: &str, n: u32) -> Answer {
    let body = serde_json::to_vec(&generated_company(tag, n)).unwrap();
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status() == 202 => {
            let body: Value = r.json().await.unwrap();
            Answer::Accepted(body["files"][0]["file_id"].as_str().unwrap().into())
        }
        Ok(r) => Answer::Status(r.status().as_u16(), r.text().await.unwrap()),
        Err(_) => Answer::Nothing,
    }
}

#[tokio::test]
async fn sigterm_during_a_batch_loses_no_acknowledged_file_and_loads_none_twice() {
    let env = TestEnv::new().await;
    let mut api = ServiceProcess::api(&env, &[]).await;
    let mut processor = ServiceProcess::processor(&env, &[("PROCESSOR_CONCURRENCY", "1")]).await;

    // A first few files, until the processor is loading.
    let url = api.url("/import/companies");
    let mut warm_up = Vec::new();
    for n in 0..WARM_UP {
        warm_up.push(post_company(&http(), &url, &env.id, n).await);
    }
    eventually(DEADLINE, "the processor to be loading", || async {
        let loaded: i64 = sqlx::query_scalar("SELECT count(*) FROM import_files")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        (loaded >= 5).then_some(())
    })
    .await;

    // Then many clients at once, with the processor held (SIGSTOP) until
    // the api has acknowledged more than its one lane can hold: whether the
    // processor falls behind on its own depends on how fast the brokers
    // acknowledge its outcomes, and the signal must find both at work.
    processor.signal("STOP");
    let next = Arc::new(AtomicU32::new(WARM_UP));
    let accepted = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(warm_up));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, accepted, answers, url) =
                (next.clone(), accepted.clone(), answers.clone(), url.clone());
            let tag = env.id.clone();
            tokio::spawn(async move {
                let client = http();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= FILES {
                        return;
                    }
                    let answer = post_company(&client, &url, &tag, n).await;
                    if matches!(answer, Answer::Accepted(_)) {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    answers.lock().await.push(answer);
                }
            })
        })
        .collect();
    eventually(DEADLINE, "the batch to be under way", || async {
        let acknowledged = accepted.load(Ordering::SeqCst);
        let loaded: i64 = sqlx::query_scalar("SELECT count(*) FROM import_files")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        (acknowledged >= SIGNAL_AFTER
            && acknowledged as i64 + i64::from(WARM_UP) - loaded >= BACKLOG)
            .then_some(())
    })
    .await;
    processor.signal("CONT");
    api.signal("TERM");
    processor.signal("TERM");
    let api_exit = api.wait(DEADLINE).await;
    let processor_exit = processor.wait(DEADLINE).await;
    for client in clients {
        client.await.unwrap();
    }
    assert!(api_exit.success(), "api: {api_exit}\n{}", api.log_text());
    assert!(
        processor_exit.success(),
        "processor: {processor_exit}\n{}",
        processor.log_text()
    );

    let answers = answers.lock().await;
    let acknowledged: BTreeSet<String> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Accepted(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert!(acknowledged.len() >= SIGNAL_AFTER);
    assert!(
        acknowledged.len() < FILES as usize,
        "the signal came too late to test anything"
    );
    for answer in answers.iter() {
        if let Answer::Status(status, body) = answer {
            // Refusing during shutdown is fine; failing is not.
            assert_eq!(*status, 503, "{body}");
        }
    }
    let loaded_before_restart: i64 =
        sqlx::query_scalar("SELECT count(*) FROM import_files WHERE file_id::text = ANY($1)")
            .bind(acknowledged.iter().cloned().collect::<Vec<_>>())
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(
        (loaded_before_restart as usize) < acknowledged.len(),
        "the processor had finished before the signal; nothing was interrupted"
    );
    assert!(loaded_before_restart > 0, "the processor never started");

    eprintln!(
        "injected: SIGTERM to api and processor mid-batch; acknowledged {} of {FILES}, {loaded_before_restart} of them loaded before the restart",
        acknowledged.len()
    );
    processor.restart().await;
    let ids: Vec<String> = acknowledged.iter().cloned().collect();
    eventually(DEADLINE, "every acknowledged file to be loaded", || async {
        let loaded: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM import_files WHERE status = 'loaded' AND file_id::text = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        (loaded as usize == ids.len()).then_some(())
    })
    .await;
    // Files the api stored but could not confirm may be loaded too; nothing
    // else, and each company once.
    let (files, companies): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM import_files), (SELECT count(*) FROM companies)",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(files, companies);

    // Each loaded file announced once: a graceful stop leaves nothing to redo.
    eventually(
        DEADLINE,
        "the restarted processor to drain the topic",
        || async {
            let samples = scrape(&processor).await;
            (metric(&samples, "consumer_lag_records", &[]) == 0.0
                && samples.iter().any(|s| s.name == "consumer_lag_records"))
            .then_some(())
        },
    )
    .await;
    let samples = scrape(&processor).await;
    for outcome in ["duplicate", "reemitted"] {
        assert_eq!(
            metric(&samples, "processor_files_total", &[("outcome", outcome)]),
            0.0,
            "{outcome}"
        );
    }
    let topic = env.kafka().topics().file_loaded;
    let mut tail = env.tail(&topic);
    let records = tail
        .until(DEADLINE, "a FileLoaded per loaded file", |r| {
            r.len() >= files as usize
        })
        .await;
    let mut per_file: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        if let Event::FileLoaded(e) = &r.envelope.event {
            *per_file.entry(e.file_id.to_string()).or_default() += 1;
        }
    }
    assert_eq!(per_file.len(), files as usize);
    assert!(per_file.values().all(|n| *n == 1), "{per_file:?}");
    eprintln!(
        "counted: {files} ledger rows, {companies} companies, one FileLoaded each; every one of {} acknowledged loaded",
        ids.len()
    );
}
