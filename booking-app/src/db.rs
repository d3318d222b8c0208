//! The PostgreSQL pool and the embedded migrations, shared by every stage, `migrate` and tests.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::PostgresConfig;

/// The schema, compiled into the binary from `booking-app/migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a pool of `db_pool_size` connections; fails when the database does not answer. Every
/// connection carries the statement and lock timeouts, so no request waits on Postgres without
/// bound (a long lock queue on a hot event row is the stage postgres failure under a spike).
pub async fn connect(config: &PostgresConfig) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(&config.database_url)?.options([
        (
            "statement_timeout",
            config.db_statement_timeout_ms.to_string(),
        ),
        ("lock_timeout", config.db_lock_timeout_ms.to_string()),
    ]);
    PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .acquire_timeout(config.acquire_timeout())
        .connect_with(options)
        .await
}

/// Applies every migration not applied yet. Safe to run from many processes at once: sqlx takes
/// an advisory lock for the duration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
