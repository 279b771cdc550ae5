//! The mappings checked against the live tables, as the processor does at
//! start: the built-in datasets fit the migrated database, and a mapping
//! that names a missing column, a wrong type or a key without a unique
//! constraint is refused, naming the dataset, the column and the mismatch.

use cmd_processor::catalog::{Catalog, TablesError};
use etl_core::dataset::{Dataset, DatasetName, Datasets};
use etl_testkit::TestEnv;

const SCHEMA: &str = r#"{"type": "object"}"#;

fn products(columns: serde_json::Value) -> Datasets {
    let mapping = serde_json::json!({
        "document_name": "/sku",
        "table": "products",
        "key": "sku",
        "columns": columns,
        "pipeline_columns": {"slug": "slug", "file_id": "file_id", "received_at": "received_at"},
        "unknown_fields": "refuse",
        "children": [{"table": "product_prices", "from": "/prices", "parent_key": "sku",
                      "position": "position",
                      "columns": [{"column": "amount", "from": "/amount", "type": "double"}]}]
    });
    let name = DatasetName::parse("products").unwrap();
    let dataset = Dataset::from_texts(name, "test", SCHEMA, &mapping.to_string()).unwrap();
    Datasets::from_datasets([dataset])
}

async fn create_products(env: &TestEnv, key: &str) {
    sqlx::raw_sql(&format!(
        "CREATE TABLE products (sku text {key}, stock integer, slug text NOT NULL,
                                file_id uuid NOT NULL, received_at timestamptz NOT NULL);
         CREATE TABLE product_prices (sku text, position integer, amount numeric);"
    ))
    .execute(&env.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_built_in_datasets_fit_the_migrated_database() {
    let env = TestEnv::new().await;
    Catalog::built_in().check_tables(&env.pool).await.unwrap();
}

#[tokio::test]
async fn a_mapping_that_does_not_fit_its_tables_is_refused_naming_each_mismatch() {
    let env = TestEnv::new().await;
    create_products(&env, "").await;
    let columns = serde_json::json!([
        {"column": "sku", "from": "/sku", "type": "text"},
        {"column": "stock", "from": "/stock", "type": "bigint"},
        {"column": "colour", "from": "/colour", "type": "text"}
    ]);
    let catalog = Catalog::new(&products(columns)).unwrap();
    let Err(TablesError::Mismatch(problems)) = catalog.check_tables(&env.pool).await else {
        panic!("the mismatches are refused");
    };
    for expected in [
        "dataset products: products.stock is integer, the mapping writes bigint",
        "dataset products: table products has no column colour",
        "dataset products: product_prices.amount is numeric, the mapping writes double precision",
        "dataset products: products.sku is neither the primary key nor unique",
    ] {
        assert!(
            problems.contains(expected),
            "{expected}\n--- in ---\n{problems}"
        );
    }
}

#[tokio::test]
async fn a_mapping_of_a_table_that_does_not_exist_is_refused() {
    let env = TestEnv::new().await;
    let columns = serde_json::json!([{"column": "sku", "from": "/sku", "type": "text"}]);
    let catalog = Catalog::new(&products(columns)).unwrap();
    let Err(TablesError::Mismatch(problems)) = catalog.check_tables(&env.pool).await else {
        panic!("a missing table is refused");
    };
    assert!(
        problems.contains("dataset products: there is no table products"),
        "{problems}"
    );
    assert!(
        problems.contains("there is no table product_prices"),
        "{problems}"
    );
}
