//! Stage 1, the "Acid truth": the event's inventory row is locked `FOR UPDATE`, so bookings of
//! one event are decided one transaction at a time against committed state: nothing oversold, no
//! user above the limit, however many pods run. `POSTGRES_DECIDE` picks how many bookings one
//! transaction decides: `batch` (default) decides every booking of the event waiting in this pod
//! together, one lock and one commit for all of them (`batch.rs`); `per-booking` runs one
//! transaction per booking (below), the form the benchmark compares it with.

mod batch;
mod decide;
mod transaction;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use sqlx::PgPool;
use uuid::Uuid;

use self::batch::{BatchSettings, Batcher};
use self::decide::Ask;
use super::records::{self, IDEMPOTENCY_KEY_CONSTRAINT, pg_error, violates};
use super::{CheckedBooking, IdempotencyKey, Inventory, StageError, idempotency};
use crate::config::{PostgresConfig, PostgresDecide};
use crate::domain::{
    Booking, BookingOutcome, BookingRequest, Event, NewEvent, RejectReason, Stage,
};
use crate::metrics::Metrics;

pub struct PostgresInventory {
    pool: PgPool,
    /// `None`: one transaction per booking.
    batcher: Option<Batcher>,
}

impl PostgresInventory {
    /// The per-booking form.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            batcher: None,
        }
    }

    /// The form `config.postgres_decide` names; its series are registered on `metrics`.
    pub fn from_config(
        config: &PostgresConfig,
        pool: PgPool,
        metrics: &Metrics,
    ) -> Result<Self, StageError> {
        let batcher = match config.postgres_decide {
            PostgresDecide::PerBooking => None,
            PostgresDecide::Batch => {
                let settings = BatchSettings::checked(
                    config.postgres_batch_size,
                    config.postgres_queue_capacity,
                )?;
                Some(Batcher::new(pool.clone(), settings, metrics))
            }
        };
        tracing::info!(decide = ?config.postgres_decide, "stage postgres");
        Ok(Self { pool, batcher })
    }

    /// The per-booking form of `book`: a key's first answer is looked up before the lock; a
    /// concurrent first use of the key shows as a unique violation and is replayed.
    async fn book_alone(
        &self,
        event_id: Uuid,
        request: BookingRequest,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<BookingOutcome, StageError> {
        let Some(key) = idempotency_key else {
            return self
                .decide(event_id, &request, None)
                .await
                .map_err(db_to_pg_error);
        };
        // A retry usually finds its first answer here, without taking the event's lock.
        if let Some(first) = records::fetch_booking_by_key(&self.pool, &key).await? {
            return idempotency::replay(first, event_id, &request);
        }
        match self.decide(event_id, &request, Some(&key)).await {
            Err(StageError::Database(err)) if violates(&err, IDEMPOTENCY_KEY_CONSTRAINT) => {
                let first = records::fetch_booking_by_key(&self.pool, &key)
                    .await?
                    .ok_or_else(|| {
                        StageError::Internal(format!(
                            "idempotency key {key:?} conflicted but its booking is gone"
                        ))
                    })?;
                idempotency::replay(first, event_id, &request)
            }
            other => other.map_err(db_to_pg_error),
        }
    }

    /// The booking transaction. `Err(Database)` with an idempotency-key violation means a
    /// concurrent request with the same key committed first; the caller replays its answer.
    async fn decide(
        &self,
        event_id: Uuid,
        request: &BookingRequest,
        key: Option<&str>,
    ) -> Result<BookingOutcome, StageError> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        // The lock: every booking of this event waits here for the one before it to commit.
        let row: Option<(i64, Option<i32>)> =
            sqlx::query_as("SELECT remaining, per_user_limit FROM events WHERE id = $1 FOR UPDATE")
                .bind(event_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg_error)?;
        let Some((remaining, per_user_limit)) = row else {
            return Err(StageError::EventNotFound(event_id));
        };
        // A separate statement, so it reads what the previous lock holder committed: joined into
        // the locking SELECT, the holdings row would come from the snapshot taken before the wait
        // (Postgres re-reads only the locked row), and the limit would be checked against stale
        // holdings.
        let held: i32 = if per_user_limit.is_some() {
            sqlx::query_scalar("SELECT quantity FROM holdings WHERE event_id = $1 AND user_id = $2")
                .bind(event_id)
                .bind(&request.user_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg_error)?
                .unwrap_or(0)
        } else {
            0
        };

        let refusal = refusal(remaining, per_user_limit, held, request.quantity);
        let id = Uuid::new_v4();
        if let Some((reason, detail)) = refusal {
            // A refusal changes nothing; it is stored only when a key must replay it.
            if let Some(key) = key {
                sqlx::query(
                    "INSERT INTO bookings (id, event_id, user_id, quantity, status, reason, idempotency_key, decided_at) \
                     VALUES ($1, $2, $3, $4, 'rejected', $5, $6, now())",
                )
                .bind(id)
                .bind(event_id)
                .bind(&request.user_id)
                .bind(request.quantity)
                .bind(reason.as_str())
                .bind(key)
                .execute(&mut *tx)
                .await?;
                tx.commit().await.map_err(pg_error)?;
            }
            return Err(StageError::Rejected { reason, detail });
        }

        // The three writes in one statement: one round trip while the row is locked.
        let (created_at,): (chrono::DateTime<chrono::Utc>,) = sqlx::query_as(
            "WITH booking AS ( \
                 INSERT INTO bookings (id, event_id, user_id, quantity, status, idempotency_key, decided_at) \
                 VALUES ($1, $2, $3, $4, 'confirmed', $5, now()) RETURNING created_at), \
             inventory AS ( \
                 UPDATE events SET remaining = remaining - $4 WHERE id = $2), \
             holding AS ( \
                 INSERT INTO holdings (event_id, user_id, quantity) VALUES ($2, $3, $4) \
                 ON CONFLICT (event_id, user_id) DO UPDATE SET quantity = holdings.quantity + EXCLUDED.quantity) \
             SELECT created_at FROM booking",
        )
        .bind(id)
        .bind(event_id)
        .bind(&request.user_id)
        .bind(request.quantity)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(BookingOutcome::Confirmed(Booking::confirmed(
            id, event_id, request, created_at,
        )))
    }
}

/// Why a request for `quantity` must be refused, if it must. The limit is checked first, so a
/// user at their limit hears that even when the event is also sold out (as stage redis does).
pub(crate) fn refusal(
    remaining: i64,
    per_user_limit: Option<i32>,
    held: i32,
    quantity: i32,
) -> Option<(RejectReason, String)> {
    if let Some(limit) = per_user_limit
        && i64::from(held) + i64::from(quantity) > i64::from(limit)
    {
        return Some((
            RejectReason::PerUserLimit,
            format!(
                "user holds {held} of at most {limit} tickets; {quantity} more would exceed it"
            ),
        ));
    }
    if i64::from(quantity) > remaining {
        return Some((
            RejectReason::SoldOut,
            format!("{remaining} tickets left, {quantity} asked for"),
        ));
    }
    None
}

#[async_trait]
impl Inventory for PostgresInventory {
    fn stage(&self) -> Stage {
        Stage::Postgres
    }

    async fn create_event(&self, new: NewEvent) -> Result<Event, StageError> {
        records::insert_event(&self.pool, &new).await
    }

    async fn get_event(&self, id: Uuid) -> Result<Event, StageError> {
        records::fetch_event(&self.pool, id).await
    }

    async fn book_checked(&self, booking: CheckedBooking) -> Result<BookingOutcome, StageError> {
        let (event_id, request, idempotency_key) = booking.into_parts();
        let Some(batcher) = &self.batcher else {
            return self.book_alone(event_id, request, idempotency_key).await;
        };
        // No key lookup before the batch: the batch reads every key after the lock anyway, so a
        // retry costs no more than its place in the batch, and the hot path reads Postgres once.
        batcher
            .book(
                event_id,
                Ask {
                    request,
                    key: idempotency_key,
                },
            )
            .await
    }

    async fn get_booking(&self, id: Uuid) -> Result<Booking, StageError> {
        records::fetch_booking(&self.pool, id).await
    }

    async fn watch_booking(&self, id: Uuid) -> Result<BoxStream<'static, Booking>, StageError> {
        // Decided at once: the stream is the booking's one and final state.
        let booking = records::fetch_booking(&self.pool, id).await?;
        Ok(stream::iter([booking]).boxed())
    }

    async fn ready(&self) -> Result<(), StageError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}

/// Writes inside `decide` keep the raw error (for the key check); classify it afterwards.
fn db_to_pg_error(err: StageError) -> StageError {
    match err {
        StageError::Database(e) => pg_error(e),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_checks_the_limit_then_the_stock() {
        assert!(refusal(10, Some(4), 2, 2).is_none());
        assert!(refusal(2, None, 1_000, 2).is_none());
        assert_eq!(
            refusal(10, Some(4), 3, 2).unwrap().0,
            RejectReason::PerUserLimit
        );
        assert_eq!(refusal(1, Some(4), 0, 2).unwrap().0, RejectReason::SoldOut);
        assert_eq!(
            refusal(0, Some(1), 1, 1).unwrap().0,
            RejectReason::PerUserLimit
        );
        assert_eq!(refusal(0, None, 0, 1).unwrap().0, RejectReason::SoldOut);
    }
}
