//! Background workers of the stages that decide or persist asynchronously: stage redis's
//! write-behind syncer and stage kafka's consumer. Each runs until its token is cancelled.

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
    let _ = (&config, &shutdown);
    match config.stage {
        Stage::Postgres => anyhow::bail!("stage postgres has no background worker"),
        Stage::Redis => Ok(redis_sync::run_from_config(&config, &std::sync::Arc::new(crate::http::Metrics::new()), shutdown).await?),
        Stage::Kafka => anyhow::bail!("kafka consumer: not implemented yet"),
    }
}
