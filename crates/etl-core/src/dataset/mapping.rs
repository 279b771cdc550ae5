//! `mapping.json`: how a document of a dataset becomes rows
//! (docs/datasets.md has an annotated example). Read with every field
//! known, so a misspelt one is refused instead of ignored, and checked for
//! what can be checked without a database.

use std::collections::BTreeSet;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    #[serde(rename = "$comment", default, skip_serializing)]
    pub comment: Option<String>,
    /// JSON Pointer of the top-level field that names a document (its
    /// slug is the Kafka key and part of the S3 key).
    pub document_name: String,
    pub table: String,
    /// The column identifying a row; a newer document replaces the row.
    pub key: String,
    pub columns: Vec<Column>,
    pub pipeline_columns: PipelineColumns,
    pub unknown_fields: UnknownFields,
    #[serde(default)]
    pub children: Vec<Child>,
}

/// A column and the JSON Pointer (into the document, or into an element
/// for a child table) its value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub column: String,
    pub from: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
}

/// The column types a mapping can write, each with the name
/// `information_schema.columns.data_type` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    Integer,
    Bigint,
    Double,
    Boolean,
    Date,
    Timestamptz,
    Jsonb,
}

impl ColumnType {
    /// The name to cast an array of it to in SQL (`$1::integer[]`).
    pub fn sql_type(self) -> &'static str {
        match self {
            ColumnType::Timestamptz => "timestamptz",
            other => other.data_type(),
        }
    }

    pub fn data_type(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Bigint => "bigint",
            ColumnType::Double => "double precision",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Timestamptz => "timestamp with time zone",
            ColumnType::Jsonb => "jsonb",
        }
    }
}

/// The columns the pipeline fills, not the document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineColumns {
    pub slug: String,
    pub file_id: String,
    /// When the api received the file: a row is replaced only by a file
    /// received later.
    pub received_at: String,
    /// Set to the time of every update, when named.
    pub updated_at: Option<String>,
}

/// What happens to top-level fields no column or child table reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UnknownFields {
    /// Kept, as one object, in this jsonb column.
    KeepIn(String),
    /// The document is refused, naming each one.
    Refuse,
}

/// An array of the document whose elements are rows of their own table,
/// replaced as a whole by each newer document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Child {
    pub table: String,
    pub from: String,
    /// The column holding the parent row's key.
    pub parent_key: String,
    /// The column holding the element's index in the array.
    pub position: String,
    pub columns: Vec<Column>,
}

impl Mapping {
    /// Everything wrong with the mapping that shows without a database,
    /// one sentence each; empty when it is usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        pointer(&self.document_name, "document_name", &mut problems);
        if self.document_name.matches('/').count() > 1 {
            problems.push(format!(
                "document_name {:?} must name a top-level field: the api reads it while the body streams",
                self.document_name
            ));
        }
        identifier(&self.table, "table", &mut problems);
        let mut names = vec![self.key.as_str()];
        let pipeline = &self.pipeline_columns;
        names
            .extend([&pipeline.slug, &pipeline.file_id, &pipeline.received_at].map(String::as_str));
        names.extend(pipeline.updated_at.as_deref());
        if let UnknownFields::KeepIn(column) = &self.unknown_fields {
            names.push(column);
        }
        let own: Vec<&str> = self.columns.iter().map(|c| c.column.as_str()).collect();
        if !own.contains(&self.key.as_str()) {
            problems.push(format!(
                "key {:?} is not one of the columns read from the document",
                self.key
            ));
        }
        columns(&self.table, &self.columns, &names[1..], &mut problems);
        let mut tables = BTreeSet::from([self.table.as_str()]);
        for child in &self.children {
            if !tables.insert(&child.table) {
                problems.push(format!("table {:?} is written twice", child.table));
            }
            identifier(&child.table, "a child table", &mut problems);
            pointer(
                &child.from,
                &format!("{}: from", child.table),
                &mut problems,
            );
            let own = [child.parent_key.as_str(), child.position.as_str()];
            columns(&child.table, &child.columns, &own, &mut problems);
        }
        problems
    }

    /// The type of the key column (text when the mapping is wrong and
    /// names none: [`Mapping::problems`] refuses that).
    pub fn key_type(&self) -> ColumnType {
        self.columns
            .iter()
            .find(|c| c.column == self.key)
            .map_or(ColumnType::Text, |c| c.kind)
    }

    /// The top-level field that names a document (`name` for `/name`).
    pub fn name_field(&self) -> String {
        unescape(self.document_name.trim_start_matches('/'))
    }

    /// The top-level fields the mapping reads, for telling unknown ones.
    pub fn known_fields(&self) -> BTreeSet<String> {
        let top = |pointer: &str| pointer.split('/').nth(1).map(unescape);
        self.columns
            .iter()
            .map(|c| c.from.as_str())
            .chain(self.children.iter().map(|c| c.from.as_str()))
            .chain([self.document_name.as_str()])
            .filter_map(top)
            .collect()
    }
}

/// `columns` of `table` besides `others` (the pipeline's): valid names,
/// each once, each read from a valid pointer.
fn columns(table: &str, columns: &[Column], others: &[&str], problems: &mut Vec<String>) {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for name in others
        .iter()
        .copied()
        .chain(columns.iter().map(|c| c.column.as_str()))
    {
        identifier(name, &format!("a column of {table}"), problems);
        if !seen.insert(name) {
            problems.push(format!("{table}: column {name:?} is written twice"));
        }
    }
    let mut read: BTreeSet<&str> = BTreeSet::new();
    for c in columns {
        pointer(&c.from, &format!("{table}.{}: from", c.column), problems);
        if !read.insert(&c.from) {
            problems.push(format!(
                "{table}: {} is read into two columns; read it once",
                c.from
            ));
        }
    }
}

/// Table and column names: plain lower-case SQL identifiers, so that the
/// statements generated from a mapping need no quoting rules of their own.
fn identifier(name: &str, what: &str, problems: &mut Vec<String>) {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63;
    if !ok {
        problems.push(format!(
            "{what} {name:?} is not a plain identifier ([a-z_][a-z0-9_]*, at most 63 characters)"
        ));
    }
}

fn pointer(pointer: &str, what: &str, problems: &mut Vec<String>) {
    if !pointer.starts_with('/') {
        problems.push(format!(
            "{what} {pointer:?} is not a JSON Pointer to a field (\"/name\", \"/address/city\")"
        ));
    }
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}
