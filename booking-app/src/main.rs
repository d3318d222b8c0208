//! `booking-app serve | worker | migrate | token | loadgen`: configuration → logs → pool → migrations →
//! stage → serve. Everything else lives in the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use booking_app::auth::{self, Authenticator};
use booking_app::config::{Cli, Command, Config};
use booking_app::http::{self, AppState, Metrics};
use booking_app::{db, loadgen, server, stage, telemetry, worker};
use clap::Parser;

/// mimalloc instead of glibc malloc: at a sale's concurrency every request allocates its body,
/// record and answer, and glibc's malloc/free were a fifth of the API's CPU (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log.log_format);
    let result = match cli.command {
        Command::Serve(config) => serve(config).await,
        Command::Worker(config) => run_worker(config).await,
        Command::Migrate(config) => migrate(config).await,
        Command::Token(args) => auth::mint::run(&args),
        Command::Loadgen(args) => loadgen::run(args).await,
        Command::BareServe(args) => loadgen::bare::serve(args).await.map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "exiting");
            // loadgen's own codes (2: invariants violated, 3: no capacity) survive; others are 1.
            loadgen::exit_code(&err)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(stage = %config.stage, "starting");
    // First: a service that cannot tell its users apart must not start serving them.
    let auth = Arc::new(
        Authenticator::from_config(&config.auth)
            .await
            .context("setting up bearer-token verification")?,
    );
    let pool = open_database(&config).await?;
    let metrics = Arc::new(Metrics::new());
    let inventory = stage::build_inventory(&config, pool.clone(), metrics.clone())
        .await
        .context("building the stage")?;
    let shutdown = server::shutdown_on_signal();
    // Stored refusals expire (IDEMPOTENCY_RETENTION); every API pod sweeps, skipping each
    // other's rows.
    tokio::spawn(stage::retention::run(
        pool,
        config.idempotency.retention(),
        metrics.clone(),
        shutdown.child_token(),
    ));
    let worker = (config.run_worker && worker::needed(config.stage)).then(|| {
        tokio::spawn(worker::run_with_metrics(
            config.clone(),
            metrics.clone(),
            shutdown.child_token(),
        ))
    });
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding {}", config.listen_addr))?;
    worker::ops::spawn_metrics_listener(&config, metrics.clone(), &shutdown).await?;
    let app = http::app(AppState {
        inventory,
        metrics,
        limits: config.http.clone(),
        auth,
    });
    server::serve(listener, app, shutdown.clone().cancelled_owned()).await?;
    if let Some(worker) = worker {
        shutdown.cancel();
        worker.await.context("worker panicked")??;
    }
    Ok(())
}

async fn run_worker(config: Config) -> anyhow::Result<()> {
    // Postgres answers and is migrated before the worker starts (it opens pools of its own).
    drop(open_database(&config).await?);
    // A standalone worker serves /healthz and /metrics on LISTEN_ADDR for its pod's probes.
    let metrics = Arc::new(Metrics::new());
    let shutdown = server::shutdown_on_signal();
    worker::ops::spawn(&config, metrics.clone(), shutdown.clone()).await?;
    worker::run_with_metrics(config, metrics, shutdown).await
}

async fn migrate(config: booking_app::config::MigrateConfig) -> anyhow::Result<()> {
    let pool = db::connect(&config.postgres)
        .await
        .context("connecting to Postgres")?;
    db::migrate(&pool).await.context("migrating")?;
    tracing::info!(
        migrations = db::MIGRATOR.iter().count(),
        "schema up to date"
    );
    Ok(())
}

/// The pool to Postgres, migrated first when MIGRATE_ON_START says so.
async fn open_database(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    let pool = db::connect(&config.postgres)
        .await
        .context("connecting to Postgres")?;
    if config.migrate_on_start {
        db::migrate(&pool).await.context("migrating")?;
    }
    Ok(pool)
}
