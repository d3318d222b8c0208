//! Stored refusals expire (`IDEMPOTENCY_RETENTION`, default 24 h). A refusal is kept so a retry
//! with the same `Idempotency-Key` gets the same answer, but refusals are unbounded (every retry
//! storm of a sold-out sale, and at stage kafka every refused request): `serve` deletes from
//! Postgres, in batches, every refusal decided longer ago than the retention. A retry after that
//! is a new request. A confirmed booking is never deleted: it holds tickets and keeps its key.
//! Stage redis's copies of refusals live in the key's claim, which Redis expires itself.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{StageError, records};
use crate::metrics::Metrics;

/// Rows deleted per statement, so a sweep never holds many row locks or one long transaction.
const BATCH: i64 = 5_000;
/// Longest pause between sweeps, whatever the retention: refusals outlive it by at most this.
const MAX_PERIOD: Duration = Duration::from_secs(10 * 60);

/// Refusals decided before `now() - retention`, event by event through the `(event_id, status)`
/// index (so no new index, and no migration an older release would refuse); rows another pod's
/// sweep holds are skipped (every API pod sweeps).
const DELETE_EXPIRED: &str = "\
DELETE FROM bookings WHERE id IN (
    SELECT expired.id FROM events e
    CROSS JOIN LATERAL (
        SELECT b.id FROM bookings b
        WHERE b.event_id = e.id AND b.status = 'rejected'
          AND b.decided_at < now() - make_interval(secs => $1)
        LIMIT $2
        FOR UPDATE OF b SKIP LOCKED
    ) expired
    LIMIT $2
)";

/// Deletes every refusal older than `retention`; returns how many.
pub async fn sweep(pool: &PgPool, retention: Duration) -> Result<u64, StageError> {
    let mut deleted = 0;
    loop {
        let batch = sqlx::query(DELETE_EXPIRED)
            .bind(retention.as_secs_f64())
            .bind(BATCH)
            .execute(pool)
            .await
            .map_err(records::pg_error)?
            .rows_affected();
        deleted += batch;
        if batch < BATCH as u64 {
            return Ok(deleted);
        }
    }
}

/// How often `run` sweeps: an eighth of the retention (so a refusal lives at most an eighth
/// longer than it), between a second and `MAX_PERIOD`.
pub fn period(retention: Duration) -> Duration {
    (retention / 8).clamp(Duration::from_secs(1), MAX_PERIOD)
}

/// Sweeps every `period(retention)`, the first one period after start (a restarting fleet does
/// not sweep at once), until `stop`; a failed sweep is logged and tried again at the next period
/// (the rows wait, nothing else does).
pub async fn run(
    pool: PgPool,
    retention: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let expired: Counter = Counter::default();
    metrics.register(
        "idempotency_refusals_expired",
        "Stored refusals deleted after IDEMPOTENCY_RETENTION",
        expired.clone(),
    );
    let every = period(retention);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match sweep(&pool, retention).await {
            Ok(0) => {}
            Ok(n) => {
                expired.inc_by(n);
                tracing::info!(deleted = n, ?retention, "expired stored refusals");
            }
            Err(err) => tracing::warn!(error = %err, "refusal retention sweep failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_runs_an_eighth_of_the_retention_apart_within_bounds() {
        assert_eq!(period(Duration::from_secs(24 * 3600)), MAX_PERIOD);
        assert_eq!(period(Duration::from_secs(40)), Duration::from_secs(5));
        assert_eq!(period(Duration::from_secs(2)), Duration::from_secs(1));
    }
}
