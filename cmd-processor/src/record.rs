//! A document that passed its dataset's checks, as the values its mapping
//! writes: the row's cells, each child table's rows, and the unknown
//! fields kept. Read once, right after validation, so a value the schema
//! let through but the column cannot hold (an integer out of range) is
//! reported as the document's problem, at its path, not as a failed load.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

use etl_core::dataset::{Column, ColumnType, Mapping, UnknownFields};
use etl_core::events::FieldError;

/// One value for one column; `Null` for a field the document lacks.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Integer(i32),
    Bigint(i64),
    Double(f64),
    Boolean(bool),
    Date(NaiveDate),
    Timestamptz(DateTime<Utc>),
    Jsonb(Value),
}

/// What one document writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The key column's value as text: files of one key take turns, and
    /// child rows find their parent by it.
    pub key: String,
    /// One per column of the mapping, in its order.
    pub cells: Vec<Cell>,
    /// Per child table of the mapping: per element, one per column.
    pub children: Vec<Vec<Vec<Cell>>>,
    /// The top-level fields no column reads (kept when the mapping says
    /// so; empty otherwise).
    pub unknown: Map<String, Value>,
}

impl Record {
    /// The values `mapping` writes for `doc`, or each value that does not
    /// fit its column. The values are moved out of `doc`, not copied (a
    /// mapping reads each field into one column); `known` is the mapping's
    /// [`Mapping::known_fields`], worked out once.
    pub fn read(
        mapping: &Mapping,
        known: &BTreeSet<String>,
        mut doc: Value,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let cells = read_cells(&mapping.columns, &mut doc, None, &mut errors);
        let children = mapping
            .children
            .iter()
            .map(|child| {
                let elements = match doc.pointer_mut(&child.from).map(Value::take) {
                    Some(Value::Array(elements)) => elements,
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => {
                        errors.push(problem(&child.from, "must be an array (a child table)"));
                        Vec::new()
                    }
                };
                elements
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut element)| {
                        let at = Some((child.from.as_str(), i));
                        read_cells(&child.columns, &mut element, at, &mut errors)
                    })
                    .collect()
            })
            .collect();
        let key_at = mapping.columns.iter().position(|c| c.column == mapping.key);
        let key = match key_at.map(|i| &cells[i]) {
            Some(Cell::Null) | None => {
                let from = key_at.map_or("", |i| mapping.columns[i].from.as_str());
                errors.push(problem(from, "is required: it identifies the row"));
                String::new()
            }
            Some(cell) => key_text(cell),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            key,
            cells,
            children,
            unknown: unknown_fields(mapping, known, doc),
        })
    }
}

/// One cell per column, each value taken out of `doc`; `element` is the
/// child array and index `doc` is an element of, for the error's path.
fn read_cells(
    columns: &[Column],
    doc: &mut Value,
    element: Option<(&str, usize)>,
    errors: &mut Vec<FieldError>,
) -> Vec<Cell> {
    columns
        .iter()
        .map(|c| {
            let value = doc.pointer_mut(&c.from).map_or(Value::Null, Value::take);
            cell(value, c.kind).unwrap_or_else(|expected| {
                let at = element.map_or(String::new(), |(array, i)| format!("{array}/{i}"));
                errors.push(problem(
                    &format!("{at}{}", c.from),
                    &format!("must be {expected} to fit column {}", c.column),
                ));
                Cell::Null
            })
        })
        .collect()
}

/// The cell for `value` in a column of type `kind`, or what it should be.
fn cell(value: Value, kind: ColumnType) -> Result<Cell, &'static str> {
    if value.is_null() {
        return Ok(Cell::Null);
    }
    let cell = match kind {
        ColumnType::Text => match value {
            Value::String(s) => Some(Cell::Text(s)),
            other @ (Value::Number(_) | Value::Bool(_)) => Some(Cell::Text(other.to_string())),
            _ => None,
        },
        ColumnType::Integer => value
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Cell::Integer),
        ColumnType::Bigint => value.as_i64().map(Cell::Bigint),
        ColumnType::Double => value.as_f64().map(Cell::Double),
        ColumnType::Boolean => value.as_bool().map(Cell::Boolean),
        ColumnType::Date => value
            .as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .map(Cell::Date),
        ColumnType::Timestamptz => value
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| Cell::Timestamptz(t.with_timezone(&Utc))),
        ColumnType::Jsonb => Some(Cell::Jsonb(value)),
    };
    cell.ok_or(match kind {
        ColumnType::Text => "a string, number or boolean",
        ColumnType::Integer => "an integer from -2147483648 to 2147483647",
        ColumnType::Bigint => "an integer of at most 19 digits",
        ColumnType::Double => "a number",
        ColumnType::Boolean => "true or false",
        ColumnType::Date => "a date (YYYY-MM-DD)",
        ColumnType::Timestamptz => "a time with its offset (RFC 3339)",
        ColumnType::Jsonb => "JSON",
    })
}

fn key_text(cell: &Cell) -> String {
    match cell {
        Cell::Text(s) => s.clone(),
        Cell::Integer(n) => n.to_string(),
        Cell::Bigint(n) => n.to_string(),
        Cell::Double(n) => n.to_string(),
        Cell::Boolean(b) => b.to_string(),
        Cell::Date(d) => d.to_string(),
        Cell::Timestamptz(t) => t.to_rfc3339(),
        Cell::Jsonb(v) => v.to_string(),
        Cell::Null => String::new(),
    }
}

fn unknown_fields(mapping: &Mapping, known: &BTreeSet<String>, doc: Value) -> Map<String, Value> {
    let (UnknownFields::KeepIn(_), Value::Object(fields)) = (&mapping.unknown_fields, doc) else {
        return Map::new();
    };
    fields
        .into_iter()
        .filter(|(k, _)| !known.contains(k))
        .collect()
}

fn problem(path: &str, message: &str) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping() -> Mapping {
        serde_json::from_value(json!({
            "document_name": "/sku",
            "table": "products",
            "key": "sku",
            "columns": [
                {"column": "sku", "from": "/sku", "type": "text"},
                {"column": "stock", "from": "/stock", "type": "integer"},
                {"column": "listed", "from": "/listed", "type": "timestamptz"},
                {"column": "tags", "from": "/tags", "type": "jsonb"}
            ],
            "pipeline_columns": {"slug": "slug", "file_id": "file_id", "received_at": "received_at"},
            "unknown_fields": "refuse",
            "children": [{"table": "prices", "from": "/prices", "parent_key": "sku", "position": "n",
                          "columns": [{"column": "amount", "from": "/amount", "type": "double"}]}]
        }))
        .unwrap()
    }

    fn read(doc: &Value) -> Result<Record, Vec<FieldError>> {
        let mapping = mapping();
        Record::read(&mapping, &mapping.known_fields(), doc.clone())
    }

    #[test]
    fn each_column_gets_its_typed_value_and_a_missing_field_is_null() {
        let doc = json!({"sku": "A-1", "listed": "2026-12-05T10:00:00+03:00", "tags": ["x"],
                         "prices": [{"amount": 9.5}, {}]});
        let record = read(&doc).unwrap();
        assert_eq!(record.key, "A-1");
        let listed = DateTime::parse_from_rfc3339("2026-12-05T07:00:00Z").unwrap();
        assert_eq!(
            record.cells,
            [
                Cell::Text("A-1".into()),
                Cell::Null,
                Cell::Timestamptz(listed.with_timezone(&Utc)),
                Cell::Jsonb(json!(["x"]))
            ]
        );
        assert_eq!(
            record.children,
            [vec![vec![Cell::Double(9.5)], vec![Cell::Null]]]
        );
        assert!(record.unknown.is_empty(), "refused, so never kept");
    }

    #[test]
    fn a_value_its_column_cannot_hold_is_the_documents_problem_at_its_path() {
        let doc = json!({"sku": "A-1", "stock": 3_000_000_000_i64, "listed": "soon",
                         "prices": [{"amount": "cheap"}]});
        let errors = read(&doc).unwrap_err();
        let found: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "/stock",
                    "must be an integer from -2147483648 to 2147483647 to fit column stock"
                ),
                (
                    "/listed",
                    "must be a time with its offset (RFC 3339) to fit column listed"
                ),
                ("/prices/0/amount", "must be a number to fit column amount"),
            ]
        );
    }

    #[test]
    fn a_document_without_its_key_is_refused() {
        let errors = read(&json!({"stock": 1})).unwrap_err();
        assert_eq!(errors[0].path, "/sku");
        assert_eq!(errors[0].message, "is required: it identifies the row");
    }
}
