//! A dataset declared only in a test's own DATASETS_DIR (schema, mapping,
//! and a table the test creates) goes end to end without any Rust change:
//! 202, stored under its dataset, validated against its schema, its rows
//! and child rows written, FileLoaded; a bad document of it is a
//! ValidationError with its paths and writes nothing. And a mapping that
//! does not fit its table stops the processor at start, naming it.

use serde_json::{Value, json};

use etl_core::events::Event;
use etl_testkit::{DEADLINE, ImportRequest, Received, TestEnv, eventually, run_binary};

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
