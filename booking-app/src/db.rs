//! The PostgreSQL pool and the embedded migrations, shared by every stage, `migrate` and tests.
//! TLS: the URL's `sslmode`/`sslrootcert` work as with libpq, and the DB_SSL_* settings (files a
//! Secret mounts) override them, so a managed database's URL needs no file paths in it. sqlx
//! speaks TLS through rustls on ring, the provider of the rest of the process.

use std::path::Path;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

use crate::config::{DbSslMode, PostgresConfig};

/// The schema, compiled into the binary from `booking-app/migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a pool of `db_pool_size` connections; fails when the database does not answer. Every
/// connection carries the statement and lock timeouts, so no request waits on Postgres without
/// bound (a long lock queue on a hot event row is the stage postgres failure under a spike).
pub async fn connect(config: &PostgresConfig) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(config)?.options([
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

/// Where and how every connection of booking-app reaches Postgres: the URL and the TLS settings
/// over it. A TLS file that is not there fails here, naming its setting, rather than at the
/// first connection.
pub fn connect_options(config: &PostgresConfig) -> Result<PgConnectOptions, sqlx::Error> {
    let mut options = PgConnectOptions::from_str(&config.database_url)?;
    if let Some(mode) = config.db_ssl_mode {
        options = options.ssl_mode(ssl_mode(mode));
    }
    if let Some(path) = &config.db_ssl_root_cert {
        options = options.ssl_root_cert(readable("DB_SSL_ROOT_CERT", path)?);
    }
    if let (Some(cert), Some(key)) = (&config.db_ssl_client_cert, &config.db_ssl_client_key) {
        options = options
            .ssl_client_cert(readable("DB_SSL_CLIENT_CERT", cert)?)
            .ssl_client_key(readable("DB_SSL_CLIENT_KEY", key)?);
    }
    Ok(options)
}

fn ssl_mode(mode: DbSslMode) -> PgSslMode {
    match mode {
        DbSslMode::Disable => PgSslMode::Disable,
        DbSslMode::Allow => PgSslMode::Allow,
        DbSslMode::Prefer => PgSslMode::Prefer,
        DbSslMode::Require => PgSslMode::Require,
        DbSslMode::VerifyCa => PgSslMode::VerifyCa,
        DbSslMode::VerifyFull => PgSslMode::VerifyFull,
    }
}

fn readable<'a>(setting: &str, path: &'a Path) -> Result<&'a Path, sqlx::Error> {
    std::fs::File::open(path).map(|_| path).map_err(|e| {
        sqlx::Error::Configuration(format!("{setting} {}: {e}", path.display()).into())
    })
}

/// Applies every migration not applied yet. Safe to run from many processes at once: sqlx takes
/// an advisory lock for the duration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn postgres(args: &[&str]) -> PostgresConfig {
        let base = [
            "booking-app",
            "--database-url",
            "postgres://u@db:5432/d?sslmode=require",
        ];
        crate::config::Config::try_parse_from(base.iter().chain(args))
            .expect("parses")
            .postgres
    }

    #[test]
    fn db_ssl_mode_overrides_the_urls() {
        let from_url = connect_options(&postgres(&[])).unwrap();
        assert!(matches!(from_url.get_ssl_mode(), PgSslMode::Require));
        let overridden = connect_options(&postgres(&["--db-ssl-mode", "verify-full"])).unwrap();
        assert!(matches!(overridden.get_ssl_mode(), PgSslMode::VerifyFull));
    }

    #[test]
    fn a_missing_tls_file_is_named_before_any_connection() {
        let error = connect_options(&postgres(&["--db-ssl-root-cert", "/nowhere/ca.crt"]))
            .expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("DB_SSL_ROOT_CERT /nowhere/ca.crt"),
            "{error}"
        );
    }
}
