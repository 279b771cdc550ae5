//! One document checked against its dataset: the schema (compiled once,
//! with the business rules as formats), characters the database cannot
//! store, and fields the mapping does not know when it refuses them.

use std::collections::BTreeSet;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use etl_core::dataset::{Dataset, UnknownFields};
use etl_core::events::FieldError;

use crate::rules;

/// Problems listed per document; the rest are counted. A document with a
/// million bad elements must not become a ValidationError too large for
/// the broker (or the ledger row).
pub const MAX_ERRORS: usize = 100;
/// Problems looked at to choose those listed; beyond, they are only counted.
const MAX_ERRORS_SORTED: usize = 10_000;
/// Characters of one problem's message. jsonschema quotes the failing
/// value, which can be a 10 MB string or a million-element array.
const MAX_MESSAGE_CHARS: usize = 300;

pub struct DocumentValidator {
    schema: jsonschema::Validator,
    /// The top-level fields the mapping reads, when it refuses others.
    refuse_unknown_beside: Option<BTreeSet<String>>,
}

impl DocumentValidator {
    /// Compiles the dataset's schema; a format it names that is neither the
    /// schema language's nor one of our rules is refused here, not ignored.
    pub fn new(dataset: &Dataset) -> Result<Self, String> {
        let options = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .should_ignore_unknown_formats(false);
        let schema = rules::register(options)
            .build(&dataset.schema)
            .map_err(|e| format!("the schema.json of dataset {}: {e}", dataset.name))?;
        let refuse_unknown_beside = match dataset.mapping.unknown_fields {
            UnknownFields::Refuse => Some(dataset.mapping.known_fields()),
            UnknownFields::KeepIn(_) => None,
        };
        Ok(Self {
            schema,
            refuse_unknown_beside,
        })
    }

    /// The document, or every problem of it, each with its JSON Pointer.
    pub fn validate(&self, bytes: &[u8]) -> Result<Value, Vec<FieldError>> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
            vec![FieldError {
                path: String::new(),
                message: format!("the stored file is not JSON: {e}"),
            }]
        })?;
        let mut errors = self.schema_errors(&doc);
        nul_characters(&doc, &mut String::new(), &mut errors);
        if let (Some(known), Some(fields)) = (&self.refuse_unknown_beside, doc.as_object()) {
            errors.extend(
                fields
                    .keys()
                    .filter(|k| !known.contains(*k))
                    .map(|k| FieldError {
                        path: format!("/{}", k.replace('~', "~0").replace('/', "~1")),
                        message: "is not a field of this dataset".into(),
                    }),
            );
        }
        if errors.is_empty() {
            Ok(doc)
        } else {
            Err(errors)
        }
    }

    /// Shallow paths first, so a wrong top-level field is not hidden behind
    /// a thousand bad elements of one array; a rule's explanation only
    /// where the value's shape was right.
    fn schema_errors(&self, doc: &Value) -> Vec<FieldError> {
        let mut errors: Vec<(FieldError, bool)> = Vec::new();
        let mut more = 0usize;
        for e in self.schema.iter_errors(doc) {
            if errors.len() == MAX_ERRORS_SORTED {
                more += 1;
                continue;
            }
            let path = e.instance_path().as_str().to_owned();
            let rule = match e.kind() {
                ValidationErrorKind::Format { format } => e
                    .instance()
                    .as_str()
                    .and_then(|value| rules::explain(format, value)),
                _ => None,
            };
            let is_rule = rule.is_some();
            let message = bounded(rule.unwrap_or_else(|| e.to_string()));
            errors.push((FieldError { path, message }, is_rule));
        }
        let shape_wrong: BTreeSet<String> = errors
            .iter()
            .filter(|(_, is_rule)| !is_rule)
            .map(|(e, _)| e.path.clone())
            .collect();
        let mut errors: Vec<FieldError> = errors
            .into_iter()
            .filter(|(e, is_rule)| !is_rule || !shape_wrong.contains(&e.path))
            .map(|(e, _)| e)
            .collect();
        errors.sort_by_key(|e| e.path.matches('/').count());
        if errors.len() > MAX_ERRORS {
            more += errors.len() - MAX_ERRORS;
            errors.truncate(MAX_ERRORS);
        }
        if more > 0 {
            errors.push(FieldError {
                path: String::new(),
                message: format!("and {more} more problems of the same document"),
            });
        }
        errors
    }
}

fn bounded(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &message[..cut], message.len()),
        None => message,
    }
}
/// PostgreSQL text and jsonb cannot hold U+0000: a document carrying one
/// would be refused at load time, so it is reported here, at its path.
fn nul_characters(value: &Value, path: &mut String, errors: &mut Vec<FieldError>) {
    const MESSAGE: &str = "contains a NUL character (\\u0000), which the database cannot store";
    if errors.len() > MAX_ERRORS {
        return;
    }
    let len = path.len();
    match value {
        Value::String(s) if s.contains('\0') => errors.push(FieldError {
            path: path.clone(),
            message: format!("the text {MESSAGE}"),
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push_str(&format!("/{i}"));
                nul_characters(item, path, errors);
                path.truncate(len);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                if key.contains('\0') {
                    errors.push(FieldError {
                        path: path.clone(),
                        message: format!("the key {MESSAGE}"),
                    });
                }
                nul_characters(item, path, errors);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etl_core::dataset::DatasetName;

    fn dataset(schema: serde_json::Value, unknown_fields: &str) -> Dataset {
        let mapping = serde_json::json!({
            "document_name": "/sku",
            "table": "products",
            "key": "sku",
            "columns": [{"column": "sku", "from": "/sku", "type": "text"},
                        {"column": "maker_inn", "from": "/maker/inn", "type": "text"}],
            "pipeline_columns": {"slug": "slug", "file_id": "file_id", "received_at": "received_at"},
            "unknown_fields": serde_json::from_str::<Value>(unknown_fields).unwrap()
        });
        let name = DatasetName::parse("products").unwrap();
        Dataset::from_texts(name, "test", &schema.to_string(), &mapping.to_string()).unwrap()
    }

    #[test]
    fn a_schema_naming_a_rule_nobody_registered_is_refused_at_start() {
        let schema =
            serde_json::json!({"properties": {"sku": {"type": "string", "format": "gtin"}}});
        let refused = DocumentValidator::new(&dataset(schema, r#""refuse""#))
            .err()
            .expect("an unknown format is refused");
        assert!(
            refused.contains("the schema.json of dataset products"),
            "{refused}"
        );
        assert!(refused.contains("gtin"), "{refused}");
    }

    #[test]
    fn any_dataset_can_use_a_rule_and_refuse_fields_it_does_not_map() {
        let schema = serde_json::json!({"properties": {"maker": {"properties": {
            "inn": {"type": "string", "format": "inn"}}}}});
        let validator = DocumentValidator::new(&dataset(schema.clone(), r#""refuse""#)).unwrap();
        let doc = br#"{"sku": "A-1", "maker": {"inn": "7707083894"}, "colour": "red", "a/b": 1}"#;
        let errors = validator.validate(doc).unwrap_err();
        let found: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("/maker/inn", "INN 7707083894 has a wrong check digit"),
                ("/a~1b", "is not a field of this dataset"),
                ("/colour", "is not a field of this dataset"),
            ]
        );

        let keeping = DocumentValidator::new(&dataset(schema, r#"{"keep_in": "extra"}"#)).unwrap();
        let doc = br#"{"sku": "A-1", "maker": {"inn": "7707083893"}, "colour": "red"}"#;
        assert_eq!(keeping.validate(doc).unwrap()["colour"], "red");
    }
}
