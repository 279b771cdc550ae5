//! cmd-monitoring against the real broker.

use std::collections::BTreeMap;

use etl_core::dataset::DatasetName;
use etl_core::domain::{CompanySlug, FileId, RequestId};
use etl_core::events::{Envelope, Event, FileExtractSuccess, FileLoaded, ValidationError};
use etl_testkit::{
    DEADLINE, OwnKafka, OwnServer, TestEnv, eventually, get_json, metric, readiness,
    readiness_follows, scrape,
};

#[tokio::test]
async fn readiness_names_the_broker_while_it_is_down() {
    let mut env = TestEnv::new().await;
    let mut kafka = OwnKafka::start(&env.id, 1).await;
    kafka.serve(&mut env);
    let monitor = env.spawn_monitor(&[("READINESS_TIMEOUT_MS", "1000")]).await;
    let (status, report) = readiness(&monitor).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["checks"]["kafka"]["ok"], true, "{report}");

    readiness_follows(
        &monitor,
        kafka.node(1),
        OwnServer::kill,
        "kafka",
        async || {},
    )
    .await;
}

/// Events of different topics arrive in any order, and a crashed processor
/// re-emits an outcome with the same event id: the file's story must still
/// be told once and in the right order. A record that is not an event is
/// counted and skipped without holding up the ones behind it.
#[tokio::test]
async fn out_of_order_repeated_and_unreadable_records_leave_one_true_story() {
    let env = TestEnv::new().await;
    let monitor = env.spawn_monitor(&[]).await;
    let publisher = env.publisher();
    let company = CompanySlug::parse(&format!("order-{}", env.id.replace('_', "-"))).unwrap();
    let file_id: FileId = uuid::Uuid::new_v4().into();
    let mut received = announcement(&company, file_id, false);
    received.occurred_at -= chrono::Duration::milliseconds(250);
    let loaded = loaded(&received);

    // The outcome first (twice), garbage, then the cause.
    publisher.publish(&loaded).await.unwrap();
    publisher.publish(&loaded).await.unwrap();
    publisher
        .publish_raw(
            &publisher.topics().file_loaded,
            None,
            b"not an event",
            &BTreeMap::new(),
        )
        .await
        .unwrap();
    publisher.publish(&received).await.unwrap();

    let file = eventually(DEADLINE, "both events of the file recorded", || async {
        let (_, file) = get_json(&monitor, &format!("/files/{file_id}")).await;
        (file["timeline"].as_array().map(Vec::len) == Some(2)).then_some(file)
    })
    .await;
    assert_eq!(file["status"], "loaded", "the later event decides: {file}");
    assert_eq!(file["events"], 2, "{file}");
    assert_eq!(file["timeline"][0]["event_type"], "FileExtractSuccess");
    assert_eq!(file["timeline"][1]["event_type"], "FileLoaded");
    let latency = file["latency_ms"].as_f64().unwrap();
    assert!(
        (250.0..1_000.0).contains(&latency),
        "{latency} ms from the events' own times"
    );

    let stats = get_json(&monitor, "/stats").await.1;
    assert_eq!(
        stats["total"]["by_type"],
        serde_json::json!({"FileExtractSuccess": 1, "FileLoaded": 1}),
        "the repeated outcome counts once: {stats}"
    );
    let samples = scrape(&monitor).await;
    assert_eq!(
        metric(
            &samples,
            "monitoring_events_total",
            &[("event_type", "FileLoaded")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &samples,
            "monitoring_events_total",
            &[("event_type", "unreadable")]
        ),
        1.0
    );
    assert_eq!(
        metric(&samples, "pipeline_end_to_end_latency_seconds_count", &[]),
        1.0
    );
}

/// A `FileExtractSuccess` of `file_id`, as the api (or, with `replay`,
/// `cmd-processor replay`) publishes it.
fn announcement(company: &CompanySlug, file_id: FileId, replay: bool) -> Envelope {
    Envelope::new(
        RequestId::parse("req-order").unwrap(),
        Some(company.clone()),
        Some(DatasetName::parse("companies").unwrap()),
        Event::FileExtractSuccess(FileExtractSuccess {
            file_id,
            filename: "c.json".into(),
            s3_bucket: "b".into(),
            s3_key: format!("{company}/files/{file_id}.json"),
            size_bytes: 10,
            sha256: "00".repeat(32),
            etag: "\"e\"".into(),
            replay,
        }),
    )
}

fn loaded(cause: &Envelope) -> Envelope {
    let file_id = cause.event.file_id().unwrap();
    Envelope::caused_by(
        cause,
        Event::FileLoaded(FileLoaded {
            file_id,
            rows: BTreeMap::from([("companies".to_owned(), 1)]),
            duration_ms: 5,
        }),
    )
}

/// The same content posted again is announced again, and the processor
/// skips it without an outcome: the file stays loaded, whichever event the
/// monitor reads first. A replay keeps the file's outcome until its own.
#[tokio::test]
async fn an_announcement_never_hides_an_outcome() {
    let env = TestEnv::new().await;
    let monitor = env.spawn_monitor(&[]).await;
    let publisher = env.publisher();
    let company = CompanySlug::parse(&format!("again-{}", env.id.replace('_', "-"))).unwrap();
    let file_id: FileId = uuid::Uuid::new_v4().into();
    let mut first = announcement(&company, file_id, false);
    first.occurred_at -= chrono::Duration::milliseconds(500);
    let mut outcome = loaded(&first);
    outcome.occurred_at -= chrono::Duration::milliseconds(400);
    let again = announcement(&company, file_id, false);

    publisher.publish(&again).await.unwrap();
    publisher.publish(&first).await.unwrap();
    publisher.publish(&outcome).await.unwrap();
    let file = eventually(DEADLINE, "the three events of the file", || async {
        let (_, file) = get_json(&monitor, &format!("/files/{file_id}")).await;
        (file["events"] == 3).then_some(file)
    })
    .await;
    assert_eq!(file["status"], "loaded", "{file}");
    let (_, stats) = get_json(&monitor, "/stats").await;
    assert_eq!(
        stats["files"],
        serde_json::json!({"loaded": 1}),
        "none waiting: {stats}"
    );

    let replay = announcement(&company, file_id, true);
    publisher.publish(&replay).await.unwrap();
    let file = eventually(DEADLINE, "the replay recorded", || async {
        let (_, file) = get_json(&monitor, &format!("/files/{file_id}")).await;
        (file["events"] == 4).then_some(file)
    })
    .await;
    assert_eq!(file["status"], "loaded", "{file}");
    let mut invalid = Envelope::caused_by(
        &replay,
        Event::ValidationError(ValidationError {
            file_id,
            s3_key: format!("{company}/files/{file_id}.json"),
            errors: Vec::new(),
        }),
    );
    invalid.occurred_at += chrono::Duration::milliseconds(100);
    publisher.publish(&invalid).await.unwrap();
    let file = eventually(DEADLINE, "the replay's outcome recorded", || async {
        let (_, file) = get_json(&monitor, &format!("/files/{file_id}")).await;
        (file["events"] == 5).then_some(file)
    })
    .await;
    assert_eq!(
        file["status"], "invalid",
        "the later outcome decides: {file}"
    );
}

/// A database that cannot answer in time is "retry later" (503); a query
/// the database refuses is the monitor's own bug (500), answered without
/// its internals.
#[tokio::test]
async fn a_locked_table_is_a_503_and_a_refused_query_a_500() {
    let env = TestEnv::new().await;
    let monitor = env
        .spawn_monitor(&[("DATABASE_STATEMENT_TIMEOUT_MS", "300")])
        .await;
    let (status, body) = get_json(&monitor, "/stats").await;
    assert_eq!(status, 200, "{body}");

    let mut lock = env.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE monitoring_files IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let (status, body) = get_json(&monitor, "/stats").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "dependency_unavailable", "{body}");
    lock.commit().await.unwrap();
    let (status, body) = get_json(&monitor, "/stats").await;
    assert_eq!(status, 200, "once the lock is gone: {body}");

    let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
    sqlx::query(&rename("monitoring_files", "monitoring_files_away"))
        .execute(&env.pool)
        .await
        .unwrap();
    let (status, body) = get_json(&monitor, "/stats").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("monitoring_files"),
        "no internals in the answer: {message}"
    );
    sqlx::query(&rename("monitoring_files_away", "monitoring_files"))
        .execute(&env.pool)
        .await
        .unwrap();
    let (status, body) = get_json(&monitor, "/stats").await;
    assert_eq!(status, 200, "once the table is back: {body}");
}
