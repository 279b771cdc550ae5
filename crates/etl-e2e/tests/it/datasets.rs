//! A dataset declared only in a test's own DATASETS_DIR (schema, mapping,
//! and a table the test creates) goes end to end without any Rust change:
//! 202, stored under its dataset, validated against its schema, its rows
//! and child rows written, FileLoaded; a bad document of it is a
//! ValidationError with its paths and writes nothing. And a mapping that
//! does not fit its table stops the processor at start, naming it.

use serde_json::{Value, json};

use etl_core::events::Event;
use etl_testkit::{
    Answer, DEADLINE, Endpoint, ImportRequest, Received, TestEnv, eventually, example,
    example_json, get_json, http, metric, read_events, run_binary, scrape,
};

const TABLES: &str = "
    CREATE TABLE products (
        sku text PRIMARY KEY, title text NOT NULL, stock integer, launched date, maker_inn text,
        slug text NOT NULL, file_id uuid NOT NULL, received_at timestamptz NOT NULL);
    CREATE TABLE product_prices (
        sku text NOT NULL REFERENCES products ON DELETE CASCADE, position integer NOT NULL,
        currency text NOT NULL, amount double precision NOT NULL,
        PRIMARY KEY (sku, position));";

/// `products`: named by its `sku`, the maker's INN checked by the same
/// rule as a company's, unknown fields refused.
fn products_folder(stock_type: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("datasets-{}", uuid::Uuid::new_v4()));
    let products = dir.join("products");
    std::fs::create_dir_all(&products).unwrap();
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Product",
        "type": "object",
        "required": ["sku", "title"],
        "properties": {
            "sku": {"type": "string", "minLength": 1},
            "title": {"type": "string"},
            "stock": {"type": "integer", "minimum": 0},
            "launched": {"type": "string", "format": "date"},
            "maker_inn": {"type": "string", "format": "inn"},
            "prices": {"type": "array", "items": {"type": "object", "required": ["currency", "amount"]}}
        }
    });
    let mapping = json!({
        "document_name": "/sku",
        "table": "products",
        "key": "sku",
        "columns": [
            {"column": "sku", "from": "/sku", "type": "text"},
            {"column": "title", "from": "/title", "type": "text"},
            {"column": "stock", "from": "/stock", "type": stock_type},
            {"column": "launched", "from": "/launched", "type": "date"},
            {"column": "maker_inn", "from": "/maker_inn", "type": "text"}
        ],
        "pipeline_columns": {"slug": "slug", "file_id": "file_id", "received_at": "received_at"},
        "unknown_fields": "refuse",
        "children": [{"table": "product_prices", "from": "/prices", "parent_key": "sku",
                      "position": "position",
                      "columns": [{"column": "currency", "from": "/currency", "type": "text"},
                                  {"column": "amount", "from": "/amount", "type": "double"}]}]
    });
    std::fs::write(products.join("schema.json"), schema.to_string()).unwrap();
    std::fs::write(products.join("mapping.json"), mapping.to_string()).unwrap();
    dir
}

fn outcome(records: &[Received], file_id: &str) -> Option<Event> {
    records
        .iter()
        .map(|r| r.envelope.event.clone())
        .find(|e| e.file_id().is_some_and(|f| f.to_string() == file_id))
}

#[tokio::test]
async fn a_dataset_declared_in_a_folder_is_imported_end_to_end() {
    let env = TestEnv::new().await;
    sqlx::raw_sql(TABLES).execute(&env.pool).await.unwrap();
    let dir = products_folder("integer");
    let extra = [("DATASETS_DIR", dir.to_str().unwrap())];
    let api = env.spawn_api(&extra).await;
    let _processor = env.spawn_processor(&extra).await;

    let good = json!({"sku": "A-1", "title": "Anvil", "stock": 3, "launched": "2026-01-31",
                      "maker_inn": "7707083893",
                      "prices": [{"currency": "EUR", "amount": 9.5}, {"currency": "USD", "amount": 11}]});
    let bad = json!({"sku": "B-2", "title": 7, "maker_inn": "7707083894", "colour": "red"});
    let body = serde_json::to_vec(&json!([good, bad])).unwrap();
    let answer = ImportRequest::new(&api, "/import/products", body)
        .send()
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let files = answer.file_ids();
    assert_eq!(
        answer.body["files"][0]["s3_key"],
        format!("products/a-1/files/{}.json", files[0])
    );

    let topics = env.kafka().topics();
    let mut loaded = env.tail(&topics.file_loaded);
    let records = loaded
        .until(DEADLINE, "the product's FileLoaded", |r| {
            outcome(r, &files[0]).is_some()
        })
        .await;
    let Some(Event::FileLoaded(event)) = outcome(records, &files[0]) else {
        panic!("{records:?}")
    };
    let rows: Value = serde_json::to_value(&event.rows).unwrap();
    assert_eq!(rows, json!({"products": 1, "product_prices": 2}));
    let row: (String, Option<i32>, String) =
        sqlx::query_as("SELECT title, stock, slug FROM products WHERE sku = 'A-1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(row, ("Anvil".into(), Some(3), "a-1".into()));
    let prices: Vec<(i32, String, f64)> = sqlx::query_as(
        "SELECT position, currency, amount FROM product_prices WHERE sku = 'A-1' ORDER BY position",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(prices, [(0, "EUR".into(), 9.5), (1, "USD".into(), 11.0)]);

    let mut invalid = env.tail(&topics.validation_error);
    let records = invalid
        .until(DEADLINE, "the bad product's ValidationError", |r| {
            outcome(r, &files[1]).is_some()
        })
        .await;
    let Some(Event::ValidationError(event)) = outcome(records, &files[1]) else {
        panic!("{records:?}")
    };
    let mut paths: Vec<&str> = event.errors.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        ["/colour", "/maker_inn", "/title"],
        "{:?}",
        event.errors
    );
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM products WHERE sku = 'B-2'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(written, 0);
    let ledger: Vec<String> = eventually(DEADLINE, "both ledger rows", || async {
        let statuses: Vec<String> =
            sqlx::query_scalar("SELECT status || ' ' || dataset FROM import_files ORDER BY status")
                .fetch_all(&env.pool)
                .await
                .unwrap();
        (statuses.len() == 2).then_some(statuses)
    })
    .await;
    assert_eq!(ledger, ["invalid products", "loaded products"]);
}

#[tokio::test]
async fn a_mapping_that_does_not_fit_its_table_stops_the_processor_naming_it() {
    let env = TestEnv::new().await;
    sqlx::raw_sql(TABLES).execute(&env.pool).await.unwrap();
    let dir = products_folder("bigint");
    let mut vars = env.vars.clone();
    vars.insert("DATASETS_DIR".into(), dir.to_str().unwrap().into());
    vars.insert("PROCESSOR_LISTEN_ADDR".into(), "127.0.0.1:0".into());
    let out = run_binary("cmd-processor", &[], vars);
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("dataset products: products.stock is integer, the mapping writes bigint"),
        "{said}"
    );
}

/// The files of one request of the shipped examples, by their answer.
struct Posted {
    loaded: Vec<String>,
    bad_snils: String,
    schema_errors: String,
}

#[tokio::test]
async fn employees_go_end_to_end_and_the_monitor_tells_the_datasets_apart() {
    let env = TestEnv::new().await;
    let api = env.spawn_api(&[]).await;
    let processor = env.spawn_processor(&[]).await;
    let monitor = env.spawn_monitor(&[]).await;
    let mut live = subscribe(&monitor, "/events/stream?dataset=employees").await;

    let posted = the_example_employees_are_accepted_and_the_broken_ones_answered(&api).await;
    let company = etl_testkit::import(&api, example("companies/c.json"))
        .send()
        .await;
    assert_eq!(company.status, 202, "{}", company.body);
    every_good_employee_is_loaded_with_skills_and_the_bad_ones_are_not(&env, &posted).await;
    the_api_counts_each_dataset_apart(&api).await;
    the_processor_counts_each_dataset_apart(&processor).await;
    the_monitor_filters_by_dataset(&monitor, &posted, &company.file_ids()[0], &mut live).await;
}

async fn subscribe(monitor: &impl Endpoint, path: &str) -> reqwest::Response {
    let mut live = http().get(monitor.url(path)).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = read_events(&mut live, "the ready message", |e| !e.is_empty()).await;
    assert_eq!(ready[0].0, "ready");
    live
}

async fn post_employees(api: &impl Endpoint, name: &str, content_type: &str) -> Answer {
    let path = format!("/import/employees?filename={name}");
    ImportRequest::new(api, &path, example(&format!("employees/{name}")))
        .header("content-type", content_type)
        .send()
        .await
}

async fn the_example_employees_are_accepted_and_the_broken_ones_answered(
    api: &impl Endpoint,
) -> Posted {
    let mut loaded = Vec::new();
    let mut keys = Vec::new();
    for (name, content_type, files) in [
        ("e.json", "application/json", 1),
        ("employees.json", "application/json", 19),
        ("employees.ndjson", "application/x-ndjson", 4),
    ] {
        let answer = post_employees(api, name, content_type).await;
        assert_eq!(answer.status, 202, "{name}: {}", answer.body);
        assert_eq!(answer.file_ids().len(), files, "{name}");
        loaded.extend(answer.file_ids());
        keys.push(answer.body["files"][0]["s3_key"].clone());
    }
    assert_eq!(
        keys[0],
        format!("employees/ivanova-anna-sergeevna/files/{}.json", loaded[0]),
        "named by full_name"
    );

    let missing = post_employees(api, "invalid/missing-name.json", "application/json").await;
    assert_eq!(missing.status, 422, "{}", missing.body);
    assert_eq!(missing.body["error"]["code"], "missing_document_name");
    let message = missing.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"full_name\""), "{message}");

    let bad_snils = post_employees(api, "invalid/bad-snils.json", "application/json").await;
    let schema_errors = post_employees(api, "invalid/schema-errors.json", "application/json").await;
    assert_eq!((bad_snils.status, schema_errors.status), (202, 202));
    Posted {
        loaded,
        bad_snils: bad_snils.file_ids().remove(0),
        schema_errors: schema_errors.file_ids().remove(0),
    }
}

async fn every_good_employee_is_loaded_with_skills_and_the_bad_ones_are_not(
    env: &TestEnv,
    posted: &Posted,
) {
    let topics = env.kafka().topics();
    let mut loaded = env.tail(&topics.file_loaded);
    let records = loaded
        .until(DEADLINE, "a FileLoaded for every employee", |r| {
            posted.loaded.iter().all(|id| outcome(r, id).is_some())
        })
        .await;
    let Some(Event::FileLoaded(first)) = outcome(records, &posted.loaded[0]) else {
        panic!("{records:?}")
    };
    let examples: Vec<Value> = [
        vec![example_json("employees/e.json")],
        example_json("employees/employees.json")
            .as_array()
            .unwrap()
            .clone(),
    ]
    .concat();
    let skills = examples[0]["skills"].as_array().unwrap().len() as u64;
    let rows: Value = serde_json::to_value(&first.rows).unwrap();
    assert_eq!(rows, json!({"employees": 1, "employee_skills": skills}));
    let row: (String, String, Option<i64>, Option<bool>) = sqlx::query_as(
        "SELECT full_name, company_inn, monthly_salary_rub, remote FROM employees WHERE snils = $1",
    )
    .bind(examples[0]["snils"].as_str().unwrap())
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let e = &examples[0];
    assert_eq!(
        row,
        (
            e["full_name"].as_str().unwrap().to_owned(),
            e["company_inn"].as_str().unwrap().to_owned(),
            e["monthly_salary_rub"].as_i64(),
            e["remote"].as_bool()
        )
    );
    let employees: i64 = sqlx::query_scalar("SELECT count(*) FROM employees")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(employees, 24, "every example employee once; no bad one");

    let mut invalid = env.tail(&topics.validation_error);
    let records = invalid
        .until(DEADLINE, "both employees' ValidationErrors", |r| {
            outcome(r, &posted.bad_snils).is_some() && outcome(r, &posted.schema_errors).is_some()
        })
        .await;
    let Some(Event::ValidationError(bad_snils)) = outcome(records, &posted.bad_snils) else {
        panic!("{records:?}")
    };
    assert_eq!(bad_snils.errors.len(), 1, "{:?}", bad_snils.errors);
    assert_eq!(bad_snils.errors[0].path, "/snils");
    assert!(bad_snils.errors[0].message.contains("checksum"));
    let Some(Event::ValidationError(many)) = outcome(records, &posted.schema_errors) else {
        panic!("{records:?}")
    };
    let mut paths: Vec<&str> = many.errors.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/company_inn",
            "/department",
            "/email",
            "/hired_at",
            "/monthly_salary_rub",
            "/remote",
            "/skills/0/level",
            "/skills/0/name",
            "/snils"
        ],
        "{:?}",
        many.errors
    );
}

async fn the_api_counts_each_dataset_apart(api: &impl Endpoint) {
    let samples = scrape(api).await;
    let requests = |dataset, outcome| {
        metric(
            &samples,
            "import_requests_total",
            &[("dataset", dataset), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("employees", "accepted"), 5.0);
    assert_eq!(requests("employees", "missing_document_name"), 1.0);
    assert_eq!(requests("companies", "accepted"), 1.0);
    let stored = |dataset| {
        metric(
            &samples,
            "import_files_stored_total",
            &[("dataset", dataset)],
        )
    };
    assert_eq!(stored("employees"), 26.0, "24 good, 2 bad");
    assert_eq!(stored("companies"), 1.0);
}

/// Every outcome is counted once the file is done, which its event's
/// arrival does not guarantee yet: polled.
async fn the_processor_counts_each_dataset_apart(processor: &impl Endpoint) {
    let counted = |samples: &[etl_testkit::Sample], dataset, outcome| {
        metric(
            samples,
            "processor_files_total",
            &[("dataset", dataset), ("outcome", outcome)],
        )
    };
    let expected = [
        ("companies", "loaded", 1.0),
        ("employees", "loaded", 24.0),
        ("employees", "invalid", 2.0),
    ];
    let samples = eventually(DEADLINE, "the processor to count every file", || async {
        let samples = scrape(processor).await;
        let total = metric(&samples, "processor_files_total", &[]);
        (total >= 27.0).then_some(samples)
    })
    .await;
    for (dataset, outcome, n) in expected {
        assert_eq!(
            counted(&samples, dataset, outcome),
            n,
            "{dataset} {outcome}"
        );
    }
}

async fn the_monitor_filters_by_dataset(
    monitor: &impl Endpoint,
    posted: &Posted,
    company_file: &str,
    live: &mut reqwest::Response,
) {
    // 26 announced, 24 loaded, 2 invalid, 1 refused upload.
    let stats = eventually(DEADLINE, "the monitor to count the employees", || async {
        let (status, stats) = get_json(monitor, "/stats?dataset=employees").await;
        assert_eq!(status, 200, "{stats}");
        (stats["total"]["by_type"]["FileLoaded"] == 24
            && stats["total"]["by_type"]["ValidationError"] == 2)
            .then_some(stats)
    })
    .await;
    assert_eq!(stats["dataset"], "employees");
    assert_eq!(
        stats["total"]["by_type"],
        json!({"FileExtractSuccess": 26, "FileExtractError": 1, "FileLoaded": 24,
               "ValidationError": 2}),
        "no company event among them"
    );
    assert_eq!(stats["files"], json!({"loaded": 24, "invalid": 2}));

    let (_, all) = eventually(DEADLINE, "the company's FileLoaded", || async {
        let (status, all) = get_json(monitor, "/stats").await;
        (all["total"]["by_type"]["FileLoaded"] == 25).then_some((status, all))
    })
    .await;
    let by_dataset: Vec<(&str, &Value)> = all["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["dataset"].as_str().unwrap(), &d["by_type"]["FileLoaded"]))
        .collect();
    assert_eq!(
        by_dataset,
        [("companies", &json!(1)), ("employees", &json!(24))]
    );

    let (_, file) = get_json(monitor, &format!("/files/{}", posted.bad_snils)).await;
    assert_eq!(
        (&file["dataset"], &file["status"]),
        (&json!("employees"), &json!("invalid"))
    );
    let (_, file) = get_json(monitor, &format!("/files/{company_file}")).await;
    assert_eq!(file["dataset"], "companies");
    assert!(
        file["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["dataset"] == "companies")
    );

    let streamed = read_events(live, "every employee's FileLoaded on the stream", |e| {
        e.iter().filter(|(name, _)| name == "FileLoaded").count() == 24
    })
    .await;
    assert!(
        streamed.iter().all(|(_, e)| e["dataset"] == "employees"),
        "only employees' events: {streamed:?}"
    );

    let (status, refused) = get_json(monitor, "/stats?dataset=Employees").await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["code"], "invalid_dataset");
}
