//! The rows of one dataset, written for many files at once with one
//! multi-row statement per table (`UNNEST` of one array per column). The
//! statements are made from the mapping once, at start; table and column
//! names are plain identifiers (checked when the mapping was read), so
//! they go into the SQL as they are.

use std::collections::HashSet;

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};

use etl_core::dataset::{Child, ColumnType, Mapping, UnknownFields};

use super::{Load, Rows};
use crate::record::{Cell, Record};

type Statement<'q> = Query<'q, Postgres, PgArguments>;

/// How one dataset's rows are written.
#[derive(Debug)]
pub struct TableWriter {
    table: String,
    upsert: String,
    types: Vec<ColumnType>,
    keep_unknown: bool,
    children: Vec<ChildWriter>,
}

#[derive(Debug)]
struct ChildWriter {
    table: String,
    delete: String,
    insert: String,
    types: Vec<ColumnType>,
}

impl TableWriter {
    pub fn new(mapping: &Mapping) -> Self {
        let key_type = mapping.key_type();
        Self {
            table: mapping.table.clone(),
            upsert: upsert_sql(mapping),
            types: mapping.columns.iter().map(|c| c.kind).collect(),
            keep_unknown: matches!(mapping.unknown_fields, UnknownFields::KeepIn(_)),
            children: mapping
                .children
                .iter()
                .map(|child| ChildWriter::new(child, key_type))
                .collect(),
        }
    }

    /// Inserts or updates each file's row unless a file received later
    /// already set it; returns the keys whose row is now this batch's.
    pub async fn upsert(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        files: &[&Load<'_>],
    ) -> Result<HashSet<String>, sqlx::Error> {
        let mut query = sqlx::query_scalar::<_, String>(&self.upsert);
        for (i, kind) in self.types.iter().enumerate() {
            query = bind(query, *kind, files.iter().map(|f| &f.record.cells[i]));
        }
        query = query
            .bind(
                files
                    .iter()
                    .map(|f| f.meta.company.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                files
                    .iter()
                    .map(|f| f.meta.file_id.as_uuid())
                    .collect::<Vec<_>>(),
            )
            .bind(files.iter().map(|f| f.meta.received_at).collect::<Vec<_>>());
        if self.keep_unknown {
            let unknown = files.iter().map(|f| Json(&f.record.unknown));
            query = query.bind(unknown.collect::<Vec<_>>());
        }
        Ok(query.fetch_all(&mut **tx).await?.into_iter().collect())
    }

    /// Each record's child rows, replaced by those of its document.
    pub async fn replace_children(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        records: &[&Record],
    ) -> Result<(), sqlx::Error> {
        if records.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
        for (c, child) in self.children.iter().enumerate() {
            sqlx::query(&child.delete)
                .bind(&keys)
                .execute(&mut **tx)
                .await?;
            let rows: Vec<(&str, i32, &Vec<Cell>)> = records
                .iter()
                .flat_map(|r| {
                    let elements = r.children[c].iter().enumerate();
                    elements.map(|(i, cells)| (r.key.as_str(), i as i32, cells))
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            let mut insert = sqlx::query(&child.insert)
                .bind(rows.iter().map(|(key, ..)| *key).collect::<Vec<_>>())
                .bind(rows.iter().map(|(_, i, _)| *i).collect::<Vec<_>>());
            for (i, kind) in child.types.iter().enumerate() {
                insert = bind(insert, *kind, rows.iter().map(|(.., cells)| &cells[i]));
            }
            insert.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Rows written per table for one file (none when a newer file's row
    /// was kept).
    pub fn rows_of(&self, record: &Record, set: bool) -> Rows {
        let count = |n: usize| if set { n as u64 } else { 0 };
        let children = self
            .children
            .iter()
            .zip(&record.children)
            .map(|(child, rows)| (child.table.clone(), count(rows.len())));
        std::iter::once((self.table.clone(), count(1)))
            .chain(children)
            .collect()
    }
}

impl ChildWriter {
    /// The child rows of `child` find their parent by its key, given to
    /// both statements as text and cast to the key's type.
    fn new(child: &Child, key_type: ColumnType) -> Self {
        let keys = format!("CAST($1::text[] AS {}[])", key_type.sql_type());
        let columns: String = child
            .columns
            .iter()
            .map(|c| format!(", {}", c.column))
            .collect();
        let arrays: String = child
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!(", ${}::{}[]", i + 3, c.kind.sql_type()))
            .collect();
        let (table, parent_key) = (&child.table, &child.parent_key);
        Self {
            table: table.clone(),
            delete: format!("DELETE FROM {table} WHERE {parent_key} = ANY({keys})"),
            insert: format!(
                "INSERT INTO {table} ({parent_key}, {}{columns}) \
                 SELECT * FROM UNNEST({keys}, $2::integer[]{arrays})",
                child.position
            ),
            types: child.columns.iter().map(|c| c.kind).collect(),
        }
    }
}

/// `INSERT … SELECT * FROM UNNEST(…) ON CONFLICT (key) DO UPDATE … WHERE
/// the stored row was received no later`, returning the keys written.
fn upsert_sql(mapping: &Mapping) -> String {
    let pipeline = &mapping.pipeline_columns;
    let mut columns: Vec<(&str, &str)> = mapping
        .columns
        .iter()
        .map(|c| (c.column.as_str(), c.kind.sql_type()))
        .collect();
    columns.push((&pipeline.slug, "text"));
    columns.push((&pipeline.file_id, "uuid"));
    columns.push((&pipeline.received_at, "timestamptz"));
    if let UnknownFields::KeepIn(column) = &mapping.unknown_fields {
        columns.push((column, "jsonb"));
    }
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| format!("${}::{kind}[]", i + 1))
        .collect();
    let mut updates: Vec<String> = names
        .iter()
        .filter(|name| **name != mapping.key)
        .map(|name| format!("{name} = EXCLUDED.{name}"))
        .collect();
    updates.extend(pipeline.updated_at.iter().map(|c| format!("{c} = now()")));
    format!(
        "INSERT INTO {table} ({names}) SELECT * FROM UNNEST({arrays}) \
         ON CONFLICT ({key}) DO UPDATE SET {updates} \
         WHERE {table}.{received_at} <= EXCLUDED.{received_at} \
         RETURNING {key}::text",
        table = mapping.table,
        names = names.join(", "),
        arrays = arrays.join(", "),
        key = mapping.key,
        updates = updates.join(", "),
        received_at = pipeline.received_at,
    )
}

/// Binds one column's cells as one typed array.
fn bind<'q, Q: Bindable<'q>>(
    query: Q,
    kind: ColumnType,
    cells: impl Iterator<Item = &'q Cell>,
) -> Q {
    macro_rules! array {
        ($variant:ident, $value:expr) => {
            query.bind_array(
                cells
                    .map(|c| match c {
                        Cell::$variant(v) => Some($value(v)),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            )
        };
    }
    match kind {
        ColumnType::Text => array!(Text, |v: &'q String| v.as_str()),
        ColumnType::Integer => array!(Integer, |v: &i32| *v),
        ColumnType::Bigint => array!(Bigint, |v: &i64| *v),
        ColumnType::Double => array!(Double, |v: &f64| *v),
        ColumnType::Boolean => array!(Boolean, |v: &bool| *v),
        ColumnType::Date => array!(Date, |v: &chrono::NaiveDate| *v),
        ColumnType::Timestamptz => array!(Timestamptz, |v: &chrono::DateTime<chrono::Utc>| *v),
        ColumnType::Jsonb => array!(Jsonb, |v: &'q serde_json::Value| Json(v)),
    }
}

/// The two kinds of statement a column is bound to: rows returned
/// (`query_scalar`) or not (`query`).
trait Bindable<'q> {
    fn bind_array<T>(self, values: Vec<Option<T>>) -> Self
    where
        T: 'q + Send + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
        Vec<Option<T>>: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>;
}

impl<'q> Bindable<'q> for Statement<'q> {
    fn bind_array<T>(self, values: Vec<Option<T>>) -> Self
    where
        T: 'q + Send + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
        Vec<Option<T>>: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    {
        self.bind(values)
    }
}

impl<'q> Bindable<'q> for sqlx::query::QueryScalar<'q, Postgres, String, PgArguments> {
    fn bind_array<T>(self, values: Vec<Option<T>>) -> Self
    where
        T: 'q + Send + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
        Vec<Option<T>>: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    {
        self.bind(values)
    }
}
