//! The company document, checked against the companies dataset
//! (`datasets/companies/schema.json`, the INN checksum as `"format": "inn"`),
//! then typed for loading.

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Map, Value};

use etl_core::dataset::Datasets;
use etl_core::domain::Inn;
use etl_core::events::FieldError;

use crate::validate::DocumentValidator;

#[derive(Debug, Clone, Deserialize)]
pub struct Company {
    pub name: String,
    pub inn: Inn,
    pub ogrn: Option<String>,
    pub founded_at: Option<NaiveDate>,
    pub employees: Option<i32>,
    pub industry: Option<String>,
    pub website: Option<String>,
    #[serde(default)]
    pub address: Address,
    #[serde(default)]
    pub contacts: Vec<Contact>,
    #[serde(default)]
    pub offices: Vec<Office>,
    /// Unknown top-level fields, kept in `companies.extra`.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Address {
    pub country: Option<String>,
    pub city: Option<String>,
    pub street: Option<String>,
    pub postal_code: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Contact {
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Office {
    pub city: Option<String>,
    pub address: Option<String>,
    pub headcount: Option<i32>,
}

/// Checks a stored file against the companies dataset and types it for
/// the loader.
pub struct CompanyValidator {
    documents: DocumentValidator,
}

impl CompanyValidator {
    pub fn new() -> Self {
        let datasets = Datasets::load(None).expect("the built-in datasets are valid");
        let companies = datasets.get("companies").expect("companies is built in");
        let documents = DocumentValidator::new(companies).expect("its schema compiles");
        Self { documents }
    }

    /// Every problem of the document, each with its JSON Pointer, or the
    /// typed company.
    pub fn validate(&self, bytes: &[u8]) -> Result<Company, Vec<FieldError>> {
        let doc = self.documents.validate(bytes)?;
        serde_json::from_value(doc).map_err(|e| {
            vec![FieldError {
                path: String::new(),
                message: format!("the document passed the schema but cannot be read: {e}"),
            }]
        })
    }
}

impl Default for CompanyValidator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::MAX_ERRORS;
    use serde_json::json;

    fn check(doc: Value) -> Result<Company, Vec<FieldError>> {
        CompanyValidator::new().validate(doc.to_string().as_bytes())
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn a_full_document_is_typed_and_keeps_unknown_fields() {
        let c = check(json!({
            "name": "ПАО Сбербанк", "inn": "7707083893", "ogrn": "1027700132195",
            "founded_at": "1991-06-20", "employees": 200000, "website": "https://www.sberbank.ru",
            "address": {"country": "RU", "city": "Москва"},
            "contacts": [{"kind": "phone", "value": "+7 495 500-55-50"}],
            "offices": [{"city": "Москва", "headcount": 5000}],
            "rating": "AAA"
        }))
        .unwrap();
        assert_eq!(c.inn.as_str(), "7707083893");
        assert_eq!(c.offices.len(), 1);
        assert_eq!(c.extra.get("rating"), Some(&json!("AAA")));
        assert!(!c.extra.contains_key("name"));
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

    #[test]
    fn a_file_that_is_not_json_is_one_error() {
        let errors = CompanyValidator::new().validate(b"{nope").unwrap_err();
        assert_eq!(errors.len(), 1);
    }
}
