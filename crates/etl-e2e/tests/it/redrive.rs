//! `cmd-processor redrive`: a dead letter goes back to its topic once the
//! cause is fixed, and is re-driven once.

use prometheus::Registry;
use sha2::{Digest, Sha256};

use etl_core::bus::EventPublisher;
use etl_core::dataset::DatasetName;
use etl_core::domain::{CompanySlug, FileId, RequestId};
use etl_core::events::{Envelope, Event, FileExtractSuccess};
use etl_core::metrics::DependencyTimer;
use etl_core::storage::{ObjectStore, S3Settings, company_file_key};
use etl_testkit::{DEADLINE, ServiceProcess, TestEnv, eventually, example, run_binary};

fn redrive(env: &TestEnv) -> String {
    let out = run_binary("cmd-processor", &["redrive"], env.vars.clone());
    assert!(out.status.success(), "redrive: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_file_whose_object_was_missing_loads_once_redriven() {
    let env = TestEnv::new().await;
    let registry = Registry::new();
    let timer = DependencyTimer::new(&registry);
    let store = ObjectStore::new(&S3Settings::from_env(&env.env(&[])).unwrap(), timer.clone());
    // The api creates the bucket; here there is no api.
    store.ensure_bucket().await.unwrap();
    let _processor = ServiceProcess::processor(&env, &[]).await;

    // An announced file whose object is not (yet) in S3: dead-lettered.
    let bytes = example("companies/c.json");
    let company = CompanySlug::parse("pao-sberbank").unwrap();
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    let file_id = FileId::for_content(&company, &sha);
    let s3_key = company_file_key(&company, file_id);
    let announced = Envelope::new(
        RequestId::generate(),
        Some(company),
        Some(DatasetName::parse("companies").unwrap()),
        Event::FileExtractSuccess(FileExtractSuccess {
            file_id,
            filename: "c.json".into(),
            s3_bucket: store.bucket().to_owned(),
            s3_key: s3_key.clone(),
            size_bytes: bytes.len() as u64,
            sha256: sha.iter().map(|b| format!("{b:02x}")).collect(),
            etag: String::new(),
            replay: false,
        }),
    );
    let publisher = EventPublisher::new(&env.kafka(), &registry, timer).unwrap();
    publisher.publish(&announced).await.unwrap();
    let topics = env.kafka().topics();
    let letters = env
        .tail(&topics.dead_letter)
        .until(DEADLINE, "the dead letter", |r| !r.is_empty())
        .await
        .to_vec();
    let Event::DeadLetter(letter) = &letters[0].envelope.event else {
        panic!("{:?}", letters[0].envelope)
    };
    assert_eq!(letter.file_id, Some(file_id));
    eprintln!(
        "injected: FileExtractSuccess for a missing object → {}",
        letter.error
    );

    // Fixed: the object is there now. One run re-drives it, once.
    store.put(&s3_key, bytes).await.unwrap();
    let first = redrive(&env);
    assert!(first.contains("re-drove 1 dead letter(s)"), "{first}");
    let loaded = env
        .tail(&topics.file_loaded)
        .until(DEADLINE, "FileLoaded after the re-drive", |r| !r.is_empty())
        .await
        .to_vec();
    assert_eq!(loaded[0].envelope.event.file_id(), Some(file_id));
    eventually(DEADLINE, "the ledger row", || async {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM import_files WHERE file_id = $1")
                .bind(file_id.as_uuid())
                .fetch_optional(&env.pool)
                .await
                .unwrap();
        status.filter(|s| s == "loaded")
    })
    .await;

    let second = redrive(&env);
    assert!(second.contains("re-drove 0 dead letter(s)"), "{second}");
}
