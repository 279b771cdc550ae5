use super::*;

const SCHEMA: &str = r#"{"type": "object", "properties": {"sku": {"type": "string"}}}"#;

fn mapping(table: &str, key: &str) -> String {
    serde_json::json!({
        "document_name": "/sku",
        "table": table,
        "key": key,
        "columns": [{"column": "sku", "from": "/sku", "type": "text"},
                    {"column": "price", "from": "/price/amount", "type": "double"}],
        "pipeline_columns": {"slug": "slug", "file_id": "file_id", "received_at": "received_at"},
        "unknown_fields": "refuse"
    })
    .to_string()
}

/// A folder of datasets: (folder name, schema, mapping) each.
fn folder(datasets: &[(&str, &str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("datasets-{}", uuid::Uuid::new_v4()));
    for (name, schema, mapping) in datasets {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("schema.json"), schema).unwrap();
        std::fs::write(d.join("mapping.json"), mapping).unwrap();
    }
    dir
}

fn refusal(datasets: &[(&str, &str, &str)]) -> String {
    Datasets::load(Some(&folder(datasets)))
        .unwrap_err()
        .to_string()
}

#[test]
fn companies_is_built_in_and_reads_every_field_it_stores() {
    let all = Datasets::load(None).unwrap();
    assert_eq!(all.names(), ["companies", "employees"]);
    let companies = all.get("companies").unwrap();
    assert_eq!(companies.mapping.key, "inn");
    assert_eq!(companies.schema["properties"]["inn"]["format"], "inn");
    let known: Vec<String> = companies.mapping.known_fields().into_iter().collect();
    assert_eq!(
        known,
        [
            "address",
            "contacts",
            "employees",
            "founded_at",
            "industry",
            "inn",
            "name",
            "offices",
            "ogrn",
            "website"
        ]
    );
}

#[test]
fn employees_is_built_in_keyed_by_snils_and_refuses_fields_it_does_not_store() {
    let all = Datasets::load(None).unwrap();
    let employees = all.get("employees").unwrap();
    assert_eq!(employees.mapping.key, "snils");
    assert_eq!(employees.mapping.name_field(), "full_name");
    assert_eq!(employees.mapping.unknown_fields, UnknownFields::Refuse);
    assert_eq!(employees.schema["properties"]["snils"]["format"], "snils");
    assert_eq!(
        employees.schema["properties"]["company_inn"]["format"],
        "inn"
    );
    let known: Vec<String> = employees.mapping.known_fields().into_iter().collect();
    let mut declared: Vec<&String> = employees.schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    declared.sort();
    assert_eq!(
        known.iter().collect::<Vec<_>>(),
        declared,
        "every field the schema allows is stored"
    );
}

#[test]
fn a_dataset_name_is_a_safe_segment() {
    for good in ["employees", "a", "product-lines", "v2_items"] {
        assert_eq!(DatasetName::parse(good).unwrap().as_str(), good);
    }
    for bad in [
        "",
        "Employees",
        "1st",
        "../etc",
        "a b",
        "a/b",
        "é",
        &"a".repeat(64),
    ] {
        assert!(DatasetName::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_folder_adds_datasets_and_replaces_a_built_in_one_of_its_name() {
    let products = mapping("products", "sku");
    let companies = mapping("companies", "sku");
    let dir = folder(&[
        ("products", SCHEMA, &products),
        ("companies", SCHEMA, &companies),
    ]);
    let all = Datasets::load(Some(&dir)).unwrap();
    assert_eq!(all.names(), ["companies", "employees", "products"]);
    assert_eq!(all.get("products").unwrap().mapping.table, "products");
    assert_eq!(all.get("companies").unwrap().mapping.key, "sku");
    assert!(all.get("nothing").is_none());
}

#[test]
fn a_broken_dataset_is_refused_naming_its_file_and_the_problem() {
    let m = mapping("products", "sku");
    let says = refusal(&[("products", "{nope", &m)]);
    assert!(says.contains("products/schema.json: not JSON"), "{says}");

    let misspelt = m.replace("\"columns\"", "\"colums\"");
    let says = refusal(&[("products", SCHEMA, &misspelt)]);
    assert!(
        says.contains("products/mapping.json") && says.contains("colums"),
        "{says}"
    );

    let says = refusal(&[("Products", SCHEMA, &m)]);
    assert!(says.contains("\"Products\" is not [a-z]"), "{says}");

    let says = refusal(&[("products", SCHEMA, "{}")]);
    assert!(
        says.contains("products/mapping.json: missing field"),
        "{says}"
    );
}

#[test]
fn a_mapping_names_each_thing_wrong_with_it() {
    let wrong = serde_json::json!({
        "document_name": "sku",
        "table": "Products",
        "key": "id",
        "columns": [{"column": "sku", "from": "/sku", "type": "text"},
                    {"column": "sku", "from": "price", "type": "text"},
                    {"column": "code", "from": "/sku", "type": "text"}],
        "pipeline_columns": {"slug": "slug", "file_id": "slug", "received_at": "received_at"},
        "unknown_fields": {"keep_in": "extra"},
        "children": [{"table": "parts", "from": "/parts", "parent_key": "sku", "position": "n",
                      "columns": [{"column": "n", "from": "/n", "type": "integer"}]}]
    });
    let mapping: Mapping = serde_json::from_value(wrong).unwrap();
    let problems = mapping.problems().join("\n");
    for expected in [
        "document_name \"sku\" is not a JSON Pointer",
        "table \"Products\" is not a plain identifier",
        "key \"id\" is not one of the columns",
        "Products: column \"slug\" is written twice",
        "Products: column \"sku\" is written twice",
        "Products.sku: from \"price\" is not a JSON Pointer",
        "parts: column \"n\" is written twice",
        "Products: /sku is read into two columns; read it once",
    ] {
        assert!(
            problems.contains(expected),
            "{expected}\n--- in ---\n{problems}"
        );
    }
}

#[test]
fn an_unknown_column_type_is_refused() {
    let m = mapping("products", "sku").replace("\"double\"", "\"money\"");
    let says = refusal(&[("products", SCHEMA, &m)]);
    assert!(says.contains("unknown variant `money`"), "{says}");
}
