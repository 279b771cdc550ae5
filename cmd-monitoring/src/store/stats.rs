//! The numbers of `/stats`, all read from one snapshot.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use etl_core::dataset::DatasetName;
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

/// A dataset's events by type.
#[derive(Debug, Serialize)]
pub struct DatasetCounts {
    /// `null` for refused uploads recorded before events named their dataset.
    pub dataset: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub company: Option<String>,
    pub dataset: Option<String>,
    pub generated_at: DateTime<Utc>,
    pub total: Counts,
    pub latency: Latency,
    /// `5m`, `1h`, `24h`: by when the events happened.
    pub windows: BTreeMap<&'static str, Window>,
    /// Files by current status.
    pub files: BTreeMap<String, i64>,
    /// The most recently active companies first.
    pub companies: Vec<CompanyCounts>,
    /// Every dataset with events, by name.
    pub datasets: Vec<DatasetCounts>,
}

/// What `/stats` is narrowed to: a company, a dataset, both or neither.
#[derive(Debug, Default)]
pub struct StatsFilter {
    pub company: Option<CompanySlug>,
    pub dataset: Option<DatasetName>,
}

/// A [`StatsFilter`] as the queries bind it.
#[derive(Clone, Copy)]
struct Filter<'a> {
    company: Option<&'a str>,
    dataset: Option<&'a str>,
}

/// The windows of `/stats`, as (name, seconds).
const WINDOWS: [(&str, i64); 3] = [("5m", 300), ("1h", 3_600), ("24h", 86_400)];
/// How many companies `/stats` lists.
const STATS_COMPANIES: i64 = 50;

const FAILURES: [&str; 3] = ["FileExtractError", "ValidationError", "DeadLetter"];

impl Store {
    /// Every number of `/stats`, read from one snapshot, so they agree
    /// with each other however many events arrive meanwhile.
    pub async fn stats(&self, filter: &StatsFilter) -> Result<Stats, sqlx::Error> {
        let company = filter.company.as_ref().map(|c| c.as_str());
        let dataset = filter.dataset.as_ref().map(|d| d.as_str());
        let filter = Filter { company, dataset };
        let mut tx = self.snapshot().await?;
        let (total, window_counts, datasets) = event_counts(&mut tx, filter).await?;
        let mut windows = std::collections::BTreeMap::new();
        for ((name, seconds), counts) in WINDOWS.into_iter().zip(window_counts) {
            let latency = latency(&mut tx, filter, Some(seconds)).await?;
            windows.insert(name, Window { counts, latency });
        }
        let files = sqlx::query!(
            r#"SELECT status, count(*) AS "files!" FROM monitoring_files
               WHERE ($1::text IS NULL OR company = $1) AND ($2::text IS NULL OR dataset = $2)
               GROUP BY status"#,
            company,
            dataset,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| (row.status, row.files))
        .collect();
        let companies = active_companies(&mut tx, filter).await?;
        let latency = latency(&mut tx, filter, None).await?;
        tx.commit().await?;
        Ok(Stats {
            company: company.map(str::to_owned),
            dataset: dataset.map(str::to_owned),
            generated_at: Utc::now(),
            total,
            latency,
            windows,
            files,
            companies,
            datasets,
        })
    }
}

/// One row of [`event_counts`]: a dataset's events of one type, in all
/// and in each of `WINDOWS`.
struct TypeCounts {
    dataset: Option<String>,
    event_type: String,
    all: i64,
    windows: [i64; 3],
}

/// Events by type in all, in each of `WINDOWS` and by dataset: one scan.
async fn event_counts(
    conn: &mut PgConnection,
    filter: Filter<'_>,
) -> Result<(Counts, [Counts; 3], Vec<DatasetCounts>), sqlx::Error> {
    let rows: Vec<TypeCounts> = sqlx::query!(
        r#"SELECT dataset, event_type,
                  count(*) AS "total!",
                  count(*) FILTER (WHERE occurred_at > now() - make_interval(secs => $3))
                      AS "first_window!",
                  count(*) FILTER (WHERE occurred_at > now() - make_interval(secs => $4))
                      AS "second_window!",
                  count(*) FILTER (WHERE occurred_at > now() - make_interval(secs => $5))
                      AS "third_window!"
           FROM monitoring_events
           WHERE ($1::text IS NULL OR company = $1) AND ($2::text IS NULL OR dataset = $2)
           GROUP BY dataset, event_type
           ORDER BY dataset"#,
        filter.company,
        filter.dataset,
        WINDOWS[0].1 as f64,
        WINDOWS[1].1 as f64,
        WINDOWS[2].1 as f64,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| TypeCounts {
        dataset: r.dataset,
        event_type: r.event_type,
        all: r.total,
        windows: [r.first_window, r.second_window, r.third_window],
    })
    .collect();
    // A window lists only the types it saw, as a GROUP BY of its own would.
    let column = |pick: &dyn Fn(&TypeCounts) -> i64| {
        counts(
            rows.iter()
                .map(|row| (row.event_type.clone(), pick(row)))
                .filter(|(_, n)| *n > 0),
        )
    };
    let total = column(&|r| r.all);
    let windows = [0, 1, 2].map(|w| column(&|r: &TypeCounts| r.windows[w]));
    let mut datasets: Vec<DatasetCounts> = Vec::new();
    for row in &rows {
        let count = (row.event_type.clone(), row.all);
        match datasets.last_mut() {
            Some(current) if current.dataset == row.dataset => {
                current.counts.by_type.insert(count.0, count.1);
            }
            _ => datasets.push(DatasetCounts {
                dataset: row.dataset.clone(),
                counts: counts([count]),
            }),
        }
    }
    for d in &mut datasets {
        d.counts = counts(std::mem::take(&mut d.counts.by_type));
    }
    Ok((total, windows, datasets))
}

/// The `STATS_COMPANIES` most recently active companies with their counts.
async fn active_companies(
    conn: &mut PgConnection,
    filter: Filter<'_>,
) -> Result<Vec<CompanyCounts>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH active AS (
               SELECT company, max(occurred_at) AS last_event_at FROM monitoring_events
               WHERE company IS NOT NULL AND ($1::text IS NULL OR company = $1)
                 AND ($2::text IS NULL OR dataset = $2)
               GROUP BY company ORDER BY last_event_at DESC LIMIT $3)
           SELECT a.company AS "company!", a.last_event_at AS "last_event_at!",
                  e.event_type, count(*) AS "events!"
           FROM active a JOIN monitoring_events e ON e.company = a.company
           WHERE ($2::text IS NULL OR e.dataset = $2)
           GROUP BY a.company, a.last_event_at, e.event_type
           ORDER BY a.last_event_at DESC, a.company"#,
        filter.company,
        filter.dataset,
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
                counts: counts([(event_type, n)]),
            }),
        }
    }
    for c in &mut companies {
        c.counts = counts(std::mem::take(&mut c.counts.by_type));
    }
    Ok(companies)
}

/// End-to-end latency of the files loaded (in the last `seconds`).
async fn latency(
    conn: &mut PgConnection,
    filter: Filter<'_>,
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
             AND ($2::text IS NULL OR dataset = $2)
             AND ($3::float8 IS NULL OR loaded_at > now() - make_interval(secs => $3))"#,
        filter.company,
        filter.dataset,
        seconds.map(|s| s as f64),
    )
    .fetch_one(&mut *conn)
    .await
}

/// Counts by type, adding up the counts given for one type.
fn counts(by_type: impl IntoIterator<Item = (String, i64)>) -> Counts {
    let mut summed: BTreeMap<String, i64> = BTreeMap::new();
    for (event_type, n) in by_type {
        *summed.entry(event_type).or_default() += n;
    }
    let by_type = summed;
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
