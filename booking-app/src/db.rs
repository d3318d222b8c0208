//! The PostgreSQL pool and the embedded migrations, shared by every stage, `migrate` and tests.

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::config::PostgresConfig;

/// The schema, compiled into the binary from `booking-app/migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a pool of `db_pool_size` connections; fails when the database does not answer.
pub async fn connect(config: &PostgresConfig) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(config.db_pool_size)
        .acquire_timeout(config.acquire_timeout())
        .connect(&config.database_url)
        .await
}

/// Applies every migration not applied yet. Safe to run from many processes at once: sqlx takes
/// an advisory lock for the duration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
