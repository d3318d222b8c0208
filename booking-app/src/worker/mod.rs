//! Background workers of the stages that decide or persist asynchronously: stage redis's
//! write-behind syncer and stage kafka's consumer. Each runs until its token is cancelled.

pub mod kafka_consumer;
pub mod ops;
pub mod redis_sync;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::domain::Stage;

/// Whether `stage` needs a worker running somewhere (in `serve` with RUN_WORKER, or `worker`).
pub fn needed(stage: Stage) -> bool {
    !matches!(stage, Stage::Postgres)
}

/// Runs the worker of `config.stage` until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_metrics(
        config,
        std::sync::Arc::new(crate::metrics::Metrics::new()),
        shutdown,
    )
    .await
}

/// `run`, with the worker's series registered in `metrics` (a standalone `booking-app worker`
/// serves them with `ops::spawn`).
pub async fn run_with_metrics(
    config: Config,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match config.stage {
        Stage::Postgres => anyhow::bail!("stage postgres has no background worker"),
        Stage::Redis => Ok(redis_sync::run_from_config(&config, &metrics, shutdown).await?),
        Stage::Kafka => Ok(kafka_consumer::run_from_config(&config, &metrics, shutdown).await?),
    }
}
