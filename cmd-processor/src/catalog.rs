//! The datasets the processor loads, each with what it needs made once at
//! start: its validator, its mapping and the statements that write it;
//! and the check that every mapping fits the live tables.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;
use sqlx::PgPool;

use etl_core::dataset::{ColumnType, Dataset, Datasets, Mapping, UnknownFields};
use etl_core::events::FieldError;

use crate::db::TableWriter;
use crate::record::Record;
use crate::validate::DocumentValidator;

/// One dataset, ready to load.
pub struct Loadable {
    pub name: String,
    validator: DocumentValidator,
    mapping: Mapping,
    /// The mapping's top-level fields, worked out once.
    known: BTreeSet<String>,
    pub writer: TableWriter,
}

impl Loadable {
    fn new(dataset: &Dataset) -> Result<Self, String> {
        Ok(Self {
            name: dataset.name.to_string(),
            validator: DocumentValidator::new(dataset)?,
            mapping: dataset.mapping.clone(),
            known: dataset.mapping.known_fields(),
            writer: TableWriter::new(&dataset.mapping),
        })
    }

    /// The values a stored file writes, or every problem of it.
    pub fn read(&self, bytes: &[u8]) -> Result<Record, Vec<FieldError>> {
        let doc: Value = self.validator.validate(bytes)?;
        Record::read(&self.mapping, &self.known, doc)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    /// One sentence per mismatch.
    #[error("{0}")]
    Mismatch(String),
    #[error("reading the table definitions failed: {0}")]
    Database(#[from] sqlx::Error),
}

#[derive(Clone)]
pub struct Catalog(Arc<BTreeMap<String, Arc<Loadable>>>);

impl Catalog {
    pub fn new(datasets: &Datasets) -> Result<Self, String> {
        let loadable = datasets
            .iter()
            .map(|d| Ok((d.name.to_string(), Arc::new(Loadable::new(d)?))))
            .collect::<Result<_, String>>()?;
        Ok(Self(Arc::new(loadable)))
    }

    /// The built-in datasets.
    pub fn built_in() -> Self {
        let datasets = Datasets::load(None).expect("the built-in datasets are valid");
        Self::new(&datasets).expect("the built-in datasets compile")
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Loadable>> {
        self.0.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// Every table and column each mapping writes exists with the type it
    /// writes, and each key can take `ON CONFLICT`; else one sentence per
    /// mismatch, naming the dataset, the column and what differs.
    pub async fn check_tables(&self, pool: &PgPool) -> Result<(), TablesError> {
        let mut problems = Vec::new();
        for loadable in self.0.values() {
            let expected = expected_columns(&loadable.mapping);
            let tables: Vec<&str> = expected.keys().map(String::as_str).collect();
            let live = live_columns(pool, &tables).await?;
            for (table, columns) in &expected {
                let Some(found) = live.get(table) else {
                    problems.push(format!(
                        "dataset {}: there is no table {table}",
                        loadable.name
                    ));
                    continue;
                };
                for (column, data_type) in columns {
                    match found.get(column) {
                        None => problems.push(format!(
                            "dataset {}: table {table} has no column {column}",
                            loadable.name
                        )),
                        Some(live) if live != data_type => problems.push(format!(
                            "dataset {}: {table}.{column} is {live}, the mapping writes {data_type}",
                            loadable.name
                        )),
                        Some(_) => {}
                    }
                }
            }
            let m = &loadable.mapping;
            if live.contains_key(&m.table) && !unique_key(pool, &m.table, &m.key).await? {
                problems.push(format!(
                    "dataset {}: {}.{} is neither the primary key nor unique, so a newer document cannot replace its row",
                    loadable.name, m.table, m.key
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TablesError::Mismatch(problems.join("; ")))
        }
    }
}

/// Per table, the columns the mapping writes with their
/// `information_schema` type names.
fn expected_columns(m: &Mapping) -> BTreeMap<String, Vec<(String, &'static str)>> {
    let timestamptz = ColumnType::Timestamptz.data_type();
    let mut own: Vec<(String, &'static str)> = m
        .columns
        .iter()
        .map(|c| (c.column.clone(), c.kind.data_type()))
        .collect();
    let p = &m.pipeline_columns;
    own.push((p.slug.clone(), "text"));
    own.push((p.file_id.clone(), "uuid"));
    own.push((p.received_at.clone(), timestamptz));
    own.extend(p.updated_at.iter().map(|c| (c.clone(), timestamptz)));
    if let UnknownFields::KeepIn(column) = &m.unknown_fields {
        own.push((column.clone(), "jsonb"));
    }
    let key_type = m.key_type().data_type();
    let mut tables = BTreeMap::from([(m.table.clone(), own)]);
    for child in &m.children {
        let mut columns = vec![
            (child.parent_key.clone(), key_type),
            (child.position.clone(), ColumnType::Integer.data_type()),
        ];
        columns.extend(
            child
                .columns
                .iter()
                .map(|c| (c.column.clone(), c.kind.data_type())),
        );
        tables.insert(child.table.clone(), columns);
    }
    tables
}

async fn live_columns(
    pool: &PgPool,
    tables: &[&str],
) -> Result<BTreeMap<String, BTreeMap<String, String>>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT table_name AS "table_name!", column_name AS "column_name!",
                  data_type AS "data_type!"
           FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name = ANY($1)"#,
        tables as &[&str]
    )
    .fetch_all(pool)
    .await?;
    let mut live: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for row in rows {
        live.entry(row.table_name)
            .or_default()
            .insert(row.column_name, row.data_type);
    }
    Ok(live)
}

/// Whether `column` alone is the primary key or a unique constraint of
/// `table`.
async fn unique_key(pool: &PgPool, table: &str, column: &str) -> Result<bool, sqlx::Error> {
    let keys = sqlx::query_scalar!(
        r#"SELECT array_agg(k.column_name::text) AS "columns!"
           FROM information_schema.table_constraints t
           JOIN information_schema.key_column_usage k
             ON k.constraint_name = t.constraint_name AND k.table_schema = t.table_schema
           WHERE t.table_schema = current_schema() AND t.table_name = $1
             AND t.constraint_type IN ('PRIMARY KEY', 'UNIQUE')
           GROUP BY t.constraint_name"#,
        table
    )
    .fetch_all(pool)
    .await?;
    let wanted = BTreeSet::from([column.to_owned()]);
    Ok(keys
        .into_iter()
        .any(|k| k.into_iter().collect::<BTreeSet<_>>() == wanted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Cell;
    use crate::validate::MAX_ERRORS;
    use serde_json::json;

    fn check(doc: Value) -> Result<Record, Vec<FieldError>> {
        companies().read(doc.to_string().as_bytes())
    }

    fn companies() -> Arc<Loadable> {
        Catalog::built_in().get("companies").unwrap().clone()
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn a_full_document_is_read_for_its_columns_and_keeps_unknown_fields() {
        let c = check(json!({
            "name": "ПАО Сбербанк", "inn": "7707083893", "ogrn": "1027700132195",
            "founded_at": "1991-06-20", "employees": 200000, "website": "https://www.sberbank.ru",
            "address": {"country": "RU", "city": "Москва"},
            "contacts": [{"kind": "phone", "value": "+7 495 500-55-50"}],
            "offices": [{"city": "Москва", "headcount": 5000}],
            "rating": "AAA"
        }))
        .unwrap();
        assert_eq!(c.key, "7707083893");
        assert_eq!(c.cells[1], Cell::Text("ПАО Сбербанк".into()));
        let founded = chrono::NaiveDate::from_ymd_opt(1991, 6, 20).unwrap();
        assert_eq!(c.cells[3], Cell::Date(founded));
        assert_eq!(c.cells[4], Cell::Integer(200000));
        assert_eq!(c.cells[8], Cell::Text("Москва".into()), "address_city");
        assert_eq!(c.cells[9], Cell::Null, "no street");
        let (offices, contacts) = (&c.children[0], &c.children[1]);
        assert_eq!(
            offices[0],
            [Cell::Text("Москва".into()), Cell::Null, Cell::Integer(5000)]
        );
        assert_eq!(contacts[0][0], Cell::Text("phone".into()));
        assert_eq!(c.unknown.get("rating"), Some(&json!("AAA")));
        assert!(!c.unknown.contains_key("name"));
        assert!(!c.unknown.contains_key("address"));
    }

    #[test]
    fn a_bad_inn_checksum_is_reported_at_its_path() {
        let errors = check(json!({"name": "X", "inn": "7707083894"})).unwrap_err();
        assert_eq!(paths(&errors), ["/inn"]);
        assert!(
            errors[0].message.contains("check digit"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn huge_values_and_countless_problems_give_a_bounded_report() {
        let contacts: Vec<Value> = (0..5_000)
            .map(|_| json!({"kind": "fax", "value": "1"}))
            .collect();
        let errors = check(json!({
            "name": "x".repeat(1_000_000), "inn": "7707083893", "contacts": contacts
        }))
        .unwrap_err();
        assert_eq!(errors.len(), MAX_ERRORS + 1);
        assert!(errors.iter().all(|e| e.message.chars().count() < 400));
        assert!(
            errors.iter().any(|e| e.path == "/name"),
            "{:?}",
            paths(&errors)
        );
        assert!(errors[MAX_ERRORS].message.starts_with("and "));
    }

    #[test]
    fn nul_characters_are_reported_where_they_are() {
        let errors = check(json!({
            "name": "A\u{0}B", "inn": "7707083893",
            "contacts": [{"kind": "phone", "value": "1\u{0}"}], "x\u{0}": 1
        }))
        .unwrap_err();
        let mut p = paths(&errors);
        p.sort();
        assert_eq!(p, ["/contacts/0/value", "/name", "/x\u{0}"]);
    }

    #[test]
    fn every_failing_path_is_listed() {
        let errors = check(json!({
            "name": "", "inn": "12", "employees": -1, "founded_at": "yesterday",
            "contacts": [{"kind": "fax", "value": "1"}]
        }))
        .unwrap_err();
        let mut p = paths(&errors);
        p.sort();
        assert_eq!(
            p,
            [
                "/contacts/0/kind",
                "/employees",
                "/founded_at",
                "/inn",
                "/name"
            ]
        );
    }

    #[test]
    fn missing_required_fields_are_reported() {
        let errors = check(json!({"name": "X"})).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("inn"), "{}", errors[0].message);
    }

    fn employee(doc: Value) -> Result<Record, Vec<FieldError>> {
        let employees = Catalog::built_in().get("employees").unwrap().clone();
        employees.read(doc.to_string().as_bytes())
    }

    #[test]
    fn an_employee_is_read_for_its_typed_columns_and_skills() {
        let e = employee(json!({
            "full_name": "Иванова Анна Сергеевна", "snils": "11223344595",
            "company_inn": "7707083893", "hired_at": "2021-03-01",
            "monthly_salary_rub": 3_000_000_000_i64, "remote": true,
            "skills": [{"name": "SQL", "level": 4}, {"name": "Rust"}]
        }))
        .unwrap();
        assert_eq!(e.key, "11223344595");
        assert_eq!(e.cells[5], Cell::Bigint(3_000_000_000), "beyond an integer");
        assert_eq!(e.cells[6], Cell::Boolean(true));
        assert_eq!(e.cells[7], Cell::Null, "no email");
        assert_eq!(
            e.children[0],
            [
                vec![Cell::Text("SQL".into()), Cell::Integer(4)],
                vec![Cell::Text("Rust".into()), Cell::Null]
            ]
        );
    }

    #[test]
    fn an_employee_is_checked_by_both_rules_and_refuses_unknown_fields() {
        let errors = employee(json!({
            "full_name": "Петров Пётр", "snils": "11223344594", "company_inn": "7707083894",
            "email": "not an address", "skills": [{"name": "SQL", "level": 9}], "pet": "cat"
        }))
        .unwrap_err();
        let mut p = paths(&errors);
        p.sort();
        assert_eq!(
            p,
            [
                "/company_inn",
                "/email",
                "/pet",
                "/skills/0/level",
                "/snils"
            ]
        );
        let snils = errors.iter().find(|e| e.path == "/snils").unwrap();
        assert!(
            snils.message.contains("last two digits should be 95"),
            "{}",
            snils.message
        );
    }

    #[test]
    fn a_file_that_is_not_json_is_one_error() {
        let errors = companies().read(b"{nope").unwrap_err();
        assert_eq!(errors.len(), 1);
    }
}
