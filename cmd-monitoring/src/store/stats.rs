//! The numbers of `/stats`, all read from one snapshot.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use etl_core::domain::CompanySlug;

use super::Store;

#[derive(Debug, Serialize)]
pub struct Counts {
    pub by_type: BTreeMap<String, i64>,
    /// Refused uploads, invalid files and dead letters over everything that
    /// reached an end (those plus loaded files); `null` before the first.
    pub failure_rate: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    /// Files whose latency is known in the window.
    pub count: i64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Window {
    #[serde(flatten)]
    pub counts: Counts,
    pub latency: Latency,
}

#[derive(Debug, Serialize)]
pub struct CompanyCounts {
    pub company: String,
    pub last_event_at: DateTime<Utc>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub company: Option<String>,
    pub generated_at: DateTime<Utc>,
    pub total: Counts,
    pub latency: Latency,
    /// `5m`, `1h`, `24h`: by when the events happened.
    pub windows: BTreeMap<&'static str, Window>,
    /// Files by current status.
    pub files: BTreeMap<String, i64>,
    /// The most recently active companies first.
    pub companies: Vec<CompanyCounts>,
}

/// The windows of `/stats`, as (name, seconds).
const WINDOWS: [(&str, i64); 3] = [("5m", 300), ("1h", 3_600), ("24h", 86_400)];
/// How many companies `/stats` lists.
const STATS_COMPANIES: i64 = 50;

const FAILURES: [&str; 3] = ["FileExtractError", "ValidationError", "DeadLetter"];

impl Store {
    /// Every number of `/stats`, read from one snapshot, so they agree
    /// with each other however many events arrive meanwhile.
    pub async fn stats(&self, company: Option<&CompanySlug>) -> Result<Stats, sqlx::Error> {
        let company = company.map(|c| c.as_str());
        let mut tx = self.snapshot().await?;
        let (total, window_counts) = event_counts(&mut tx, company).await?;
        let mut windows = std::collections::BTreeMap::new();
        for ((name, seconds), counts) in WINDOWS.into_iter().zip(window_counts) {
            let latency = latency(&mut tx, company, Some(seconds)).await?;
            windows.insert(name, Window { counts, latency });
        }
        let files = sqlx::query!(
            r#"SELECT status, count(*) AS "files!" FROM monitoring_files
               WHERE ($1::text IS NULL OR company = $1) GROUP BY status"#,
            company,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| (row.status, row.files))
        .collect();
        let companies = active_companies(&mut tx, company).await?;
        let latency = latency(&mut tx, company, None).await?;
        tx.commit().await?;
        Ok(Stats {
            company: company.map(str::to_owned),
            generated_at: Utc::now(),
            total,
            latency,
            windows,
            files,
            companies,
        })
    }
}

/// Events by type in all, and in each of `WINDOWS`: one scan.
async fn event_counts(
    conn: &mut PgConnection,
    company: Option<&str>,
) -> Result<(Counts, [Counts; 3]), sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query!(
        r#"SELECT event_type,
                  count(*) AS "total!",
                  count(*) FILTER (WHERE occurred_at > now() - make_interval(secs => $2))
                      AS "first_window!",
                  count(*) FILTER (WHERE occurred_at > now() - make_interval(secs => $3))
                      AS "second_window!",
                  count(*) FILTER (WHERE occurred_at > now() - make_interval(secs => $4))
                      AS "third_window!"
           FROM monitoring_events
           WHERE ($1::text IS NULL OR company = $1)
           GROUP BY event_type"#,
        company,
        WINDOWS[0].1 as f64,
        WINDOWS[1].1 as f64,
        WINDOWS[2].1 as f64,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| {
        (
            r.event_type,
            r.total,
            r.first_window,
            r.second_window,
            r.third_window,
        )
    })
    .collect();
    // A window lists only the types it saw, as a GROUP BY of its own would.
    let column = |pick: fn(&(String, i64, i64, i64, i64)) -> i64| {
        counts(
            rows.iter()
                .map(|row| (row.0.clone(), pick(row)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    };
    Ok((
        column(|r| r.1),
        [column(|r| r.2), column(|r| r.3), column(|r| r.4)],
    ))
}

/// The `STATS_COMPANIES` most recently active companies with their counts.
async fn active_companies(
    conn: &mut PgConnection,
    company: Option<&str>,
) -> Result<Vec<CompanyCounts>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH active AS (
               SELECT company, max(occurred_at) AS last_event_at FROM monitoring_events
               WHERE company IS NOT NULL AND ($1::text IS NULL OR company = $1)
               GROUP BY company ORDER BY last_event_at DESC LIMIT $2)
           SELECT a.company AS "company!", a.last_event_at AS "last_event_at!",
                  e.event_type, count(*) AS "events!"
           FROM active a JOIN monitoring_events e ON e.company = a.company
           GROUP BY a.company, a.last_event_at, e.event_type
           ORDER BY a.last_event_at DESC, a.company"#,
        company,
        STATS_COMPANIES,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut companies: Vec<CompanyCounts> = Vec::new();
    for row in rows {
        let (company, last_event_at, event_type, n) =
            (row.company, row.last_event_at, row.event_type, row.events);
        match companies.last_mut() {
            Some(current) if current.company == company => {
                current.counts.by_type.insert(event_type, n);
            }
            _ => companies.push(CompanyCounts {
                company,
                last_event_at,
                counts: counts(vec![(event_type, n)]),
            }),
        }
    }
    for c in &mut companies {
        c.counts = counts(std::mem::take(&mut c.counts.by_type).into_iter().collect());
    }
    Ok(companies)
}

/// End-to-end latency of the files loaded (in the last `seconds`).
async fn latency(
    conn: &mut PgConnection,
    company: Option<&str>,
    seconds: Option<i64>,
) -> Result<Latency, sqlx::Error> {
    sqlx::query_as!(
        Latency,
        r#"SELECT count(latency_ms) AS "count!",
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms,
                  percentile_cont(0.9) WITHIN GROUP (ORDER BY latency_ms) AS p90_ms,
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99_ms,
                  max(latency_ms) AS max_ms
           FROM monitoring_files
           WHERE latency_ms IS NOT NULL
             AND ($1::text IS NULL OR company = $1)
             AND ($2::float8 IS NULL OR loaded_at > now() - make_interval(secs => $2))"#,
        company,
        seconds.map(|s| s as f64),
    )
    .fetch_one(&mut *conn)
    .await
}

fn counts(by_type: Vec<(String, i64)>) -> Counts {
    let by_type: BTreeMap<String, i64> = by_type.into_iter().collect();
    let failed: i64 = FAILURES
        .iter()
        .map(|t| by_type.get(*t).copied().unwrap_or(0))
        .sum();
    let finished = failed + by_type.get("FileLoaded").copied().unwrap_or(0);
    Counts {
        failure_rate: (finished > 0).then(|| failed as f64 / finished as f64),
        by_type,
    }
}
