//! The company rows and their children (offices, contacts), written for
//! many files at once with one multi-row statement per table.

use std::collections::HashSet;

use chrono::NaiveDate;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};

use super::{Load, column};
use crate::company::Company;

/// Inserts or updates each company unless a newer file already set it.
/// Returns the INNs whose row is now this batch's data.
pub(super) async fn upsert(
    tx: &mut Transaction<'_, Postgres>,
    files: &[&Load<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    let companies = || files.iter().map(|f| f.company);
    let written: Vec<String> = sqlx::query_scalar!(
        "INSERT INTO companies
           (inn, name, slug, ogrn, founded_at, employees, industry, website,
            address_country, address_city, address_street, address_postal_code,
            extra, source_file_id, source_received_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::date[],
                              $6::int[], $7::text[], $8::text[], $9::text[], $10::text[],
                              $11::text[], $12::text[], $13::jsonb[], $14::uuid[],
                              $15::timestamptz[])
         ON CONFLICT (inn) DO UPDATE SET
           name = EXCLUDED.name, slug = EXCLUDED.slug, ogrn = EXCLUDED.ogrn,
           founded_at = EXCLUDED.founded_at, employees = EXCLUDED.employees,
           industry = EXCLUDED.industry, website = EXCLUDED.website,
           address_country = EXCLUDED.address_country, address_city = EXCLUDED.address_city,
           address_street = EXCLUDED.address_street,
           address_postal_code = EXCLUDED.address_postal_code,
           extra = EXCLUDED.extra, source_file_id = EXCLUDED.source_file_id,
           source_received_at = EXCLUDED.source_received_at, updated_at = now()
         WHERE companies.source_received_at <= EXCLUDED.source_received_at
         RETURNING inn",
        &column(companies(), |c| c.inn.as_str()) as &[&str],
        &column(companies(), |c| c.name.as_str()) as &[&str],
        &column(files, |f| f.meta.company.as_str()) as &[&str],
        &column(companies(), |c| c.ogrn.as_deref()) as &[Option<&str>],
        &column(companies(), |c| c.founded_at) as &[Option<NaiveDate>],
        &column(companies(), |c| c.employees) as &[Option<i32>],
        &column(companies(), |c| c.industry.as_deref()) as &[Option<&str>],
        &column(companies(), |c| c.website.as_deref()) as &[Option<&str>],
        &column(companies(), |c| c.address.country.as_deref()) as &[Option<&str>],
        &column(companies(), |c| c.address.city.as_deref()) as &[Option<&str>],
        &column(companies(), |c| c.address.street.as_deref()) as &[Option<&str>],
        &column(companies(), |c| c.address.postal_code.as_deref()) as &[Option<&str>],
        // jsonb is serde_json::Value to the macros: Json<T> encodes itself.
        &column(companies(), |c| Json(&c.extra)) as _,
        &column(files, |f| f.meta.file_id.as_uuid()),
        &column(files, |f| f.meta.received_at),
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(written.into_iter().collect())
}

/// The companies' offices, replaced by those of their documents.
pub(super) async fn replace_offices(
    tx: &mut Transaction<'_, Postgres>,
    companies: &[&Company],
) -> Result<(), sqlx::Error> {
    let offices: Vec<_> = companies
        .iter()
        .flat_map(|c| c.offices.iter().enumerate().map(move |(i, o)| (*c, i, o)))
        .collect();
    clear_children(tx, Children::Offices, companies).await?;
    if offices.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO company_offices (company_inn, position, city, address, headcount)
         SELECT * FROM UNNEST($1::text[], $2::int[], $3::text[], $4::text[], $5::int[])",
        &column(&offices, |(c, ..)| c.inn.as_str()) as &[&str],
        &column(&offices, |(_, i, _)| *i as i32),
        &column(&offices, |(.., o)| o.city.as_deref()) as &[Option<&str>],
        &column(&offices, |(.., o)| o.address.as_deref()) as &[Option<&str>],
        &column(&offices, |(.., o)| o.headcount) as &[Option<i32>],
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The companies' contacts, replaced by those of their documents.
pub(super) async fn replace_contacts(
    tx: &mut Transaction<'_, Postgres>,
    companies: &[&Company],
) -> Result<(), sqlx::Error> {
    let contacts: Vec<_> = companies
        .iter()
        .flat_map(|c| c.contacts.iter().enumerate().map(move |(i, x)| (*c, i, x)))
        .collect();
    clear_children(tx, Children::Contacts, companies).await?;
    if contacts.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO company_contacts (company_inn, position, kind, value)
         SELECT * FROM UNNEST($1::text[], $2::int[], $3::text[], $4::text[])",
        &column(&contacts, |(c, ..)| c.inn.as_str()) as &[&str],
        &column(&contacts, |(_, i, _)| *i as i32),
        &column(&contacts, |(.., x)| x.kind.as_str()) as &[&str],
        &column(&contacts, |(.., x)| x.value.as_str()) as &[&str],
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The child tables of a company, replaced as a whole by each document.
enum Children {
    Offices,
    Contacts,
}

/// Deletes the companies' rows of one child table.
async fn clear_children(
    tx: &mut Transaction<'_, Postgres>,
    children: Children,
    companies: &[&Company],
) -> Result<(), sqlx::Error> {
    if companies.is_empty() {
        return Ok(());
    }
    let inns = column(companies, |c| c.inn.as_str());
    let query = match children {
        Children::Offices => sqlx::query!(
            "DELETE FROM company_offices WHERE company_inn = ANY($1)",
            &inns as &[&str]
        ),
        Children::Contacts => sqlx::query!(
            "DELETE FROM company_contacts WHERE company_inn = ANY($1)",
            &inns as &[&str]
        ),
    };
    query.execute(&mut **tx).await?;
    Ok(())
}
