//! Postgres connection pool and the embedded, reversible migrations.

use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::{ConfigError, Env, Secret};

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`: `postgres://user:password@host:port/db`.
    pub url: Secret,
    /// `DATABASE_MAX_CONNECTIONS`.
    pub max_connections: u32,
    /// `DATABASE_ACQUIRE_TIMEOUT_MS`: how long a query waits for a connection.
    pub acquire_timeout: Duration,
    /// `DATABASE_STATEMENT_TIMEOUT_MS`: the server cancels a statement that
    /// runs longer (a stuck lock then becomes a retry, not a hang).
    pub statement_timeout: Duration,
}

impl DatabaseSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.non_empty("DATABASE_URL", "postgres://postgres@127.0.0.1:55432/etl")?;
        url.parse::<PgConnectOptions>().map_err(|e| ConfigError {
            var: "DATABASE_URL".into(),
            // The URL may hold a password: describe the problem, not the value.
            problem: format!(
                "is not a valid postgres URL: {}",
                redact_url_error(&e.to_string())
            ),
        })?;
        Ok(Self {
            url: Secret::new(url),
            max_connections: env.parse("DATABASE_MAX_CONNECTIONS", 8)?,
            acquire_timeout: env.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 5_000)?,
            statement_timeout: env.millis("DATABASE_STATEMENT_TIMEOUT_MS", 30_000)?,
        })
    }
}

fn redact_url_error(message: &str) -> String {
    message.split("://").next().unwrap_or_default().to_owned()
}

/// A pool that connects on first use, so a service starts (and reports
/// itself not ready) while Postgres is still down.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings
        .url
        .expose()
        .parse::<PgConnectOptions>()?
        .options([(
            "statement_timeout",
            format!("{}ms", settings.statement_timeout.as_millis()),
        )]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options))
}

pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// Reverts the newest `steps` applied migrations.
pub async fn rollback(pool: &PgPool, steps: usize) -> Result<(), MigrateError> {
    let mut applied: Vec<i64> =
        sqlx::query_scalar!("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?;
    let keep = applied.len().saturating_sub(steps);
    applied.truncate(keep);
    let target = applied.last().copied().unwrap_or(0);
    MIGRATOR.undo(pool, target).await
}

/// The database could not answer: no connection (refused, lost, pool
/// exhausted or closed), a server shutting down or out of connections, a
/// statement cancelled at `DATABASE_STATEMENT_TIMEOUT_MS`, a serialization
/// failure or deadlock. Asking again later may succeed. Anything else (SQL
/// the server refuses, a row that does not decode) is a bug on our side.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08 connection exception, 53 insufficient resources, 57
            // operator intervention (cancelled, shutting down), 40
            // transaction rollback (serialization failure, deadlock).
            ["08", "53", "57", "40"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        _ => false,
    }
}

pub async fn check(pool: &PgPool, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, sqlx::query_scalar!("SELECT 1").fetch_one(pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_unavailable_and_our_mistakes_are_not() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::PoolClosed));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::ColumnNotFound("x".into())));
        assert!(!is_unavailable(&sqlx::Error::Protocol("bad".into())));
    }
}
