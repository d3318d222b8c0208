//! One batch of stream entries into Postgres: bookings (and the refusals kept for an idempotency
//! key), the event's `remaining` and the users' holdings in one transaction. Idempotent by booking
//! id: rows already there add nothing, so a batch delivered again after a crash changes nothing.

use std::collections::HashSet;

use sqlx::PgPool;
use uuid::Uuid;

use super::Batch;
use crate::domain::BookingStatus;
use crate::stage::StageError;
use crate::stage::records::{IDEMPOTENCY_KEY_CONSTRAINT, pg_error, violates};

/// What one batch changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bookings new to Postgres (the others were written by an earlier delivery).
    pub inserted: usize,
    /// Bookings whose idempotency key another booking already holds in Postgres; written
    /// without the key.
    pub keys_dropped: usize,
}

/// The inventory and holdings follow only the rows this statement inserted (`RETURNING`), which
/// is what makes a second delivery a no-op.
const WRITE_BATCH: &str = "
WITH batch AS (
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::int4[], $5::text[], $6::text[], $7::text[], $8::timestamptz[])
        AS b (id, user_id, quantity, status, reason, idempotency_key, created_at)
), inserted AS (
    INSERT INTO bookings (id, event_id, user_id, quantity, status, reason, idempotency_key, created_at, decided_at)
    SELECT id, $1::uuid, user_id, quantity, status, reason, idempotency_key, created_at, created_at FROM batch
    ON CONFLICT (id) DO NOTHING
    RETURNING user_id, quantity, status
), sold AS (
    SELECT user_id, quantity FROM inserted WHERE status = 'confirmed'
), inventory AS (
    UPDATE events SET remaining = remaining - (SELECT sum(quantity) FROM sold)
    WHERE id = $1::uuid AND EXISTS (SELECT 1 FROM sold)
    RETURNING remaining
), holdings AS (
    INSERT INTO holdings (event_id, user_id, quantity)
    SELECT $1::uuid, user_id, sum(quantity)::int4 FROM sold GROUP BY user_id
    ON CONFLICT (event_id, user_id) DO UPDATE SET quantity = holdings.quantity + excluded.quantity
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM sold), (SELECT count(*) FROM inventory)";

/// A refusal in Postgres that still holds a key of the batch gives it up: Redis decided the key
/// anew, so its claim, where the refusal was kept, has expired (IDEMPOTENCY_RETENTION; Postgres
/// deletes such refusals too, but its sweep may not have come by yet). The refusal stays.
const REFUSALS_RELEASE_KEYS: &str = "
UPDATE bookings SET idempotency_key = NULL
WHERE idempotency_key = ANY($1::text[]) AND status = 'rejected' AND NOT (id = ANY($2::uuid[]))";

/// Bookings of the batch whose key belongs to another booking already (the key was used for
/// another event after Redis forgot its claim): their tickets are real, the key cannot be theirs.
/// Asked only after the batch's insert hit such a key.
const KEYS_TAKEN: &str = "
SELECT b.id FROM unnest($1::uuid[], $2::text[]) AS b (id, idempotency_key)
JOIN bookings x ON x.idempotency_key = b.idempotency_key AND x.id <> b.id";

pub async fn write_batch(pool: &PgPool, batch: &Batch) -> Result<Written, StageError> {
    let mut seen = HashSet::with_capacity(batch.bookings.len());
    let mut ids = Vec::with_capacity(batch.bookings.len());
    let mut users = Vec::with_capacity(batch.bookings.len());
    let mut quantities = Vec::with_capacity(batch.bookings.len());
    let mut statuses = Vec::with_capacity(batch.bookings.len());
    let mut reasons = Vec::with_capacity(batch.bookings.len());
    let mut keys = Vec::with_capacity(batch.bookings.len());
    let mut created = Vec::with_capacity(batch.bookings.len());
    for entry in &batch.bookings {
        let b = &entry.booking;
        if b.event_id != batch.event_id {
            return Err(StageError::Internal(format!(
                "booking {} of event {} in the stream of {}",
                b.id, b.event_id, batch.event_id
            )));
        }
        // A stream entry delivered twice in one batch (a claim racing a read) is written once.
        if !seen.insert(b.id) {
            continue;
        }
        if !matches!(b.status, BookingStatus::Confirmed | BookingStatus::Rejected) {
            return Err(StageError::Internal(format!(
                "booking {} streamed as {:?}",
                b.id, b.status
            )));
        }
        ids.push(b.id);
        users.push(b.user_id.clone());
        quantities.push(b.quantity);
        statuses.push(b.status.as_str());
        reasons.push(b.reason.map(|r| r.as_str()));
        keys.push(entry.idempotency_key.clone());
        created.push(b.created_at);
    }

    let rows = Rows {
        ids,
        users,
        quantities,
        statuses,
        reasons,
        keys,
        created,
    };
    // Almost always no key of the batch is held by another booking: one statement, no lookup of
    // the keys first. When one is (the unique index refuses the insert and nothing is written),
    // the batch is written again, the taken keys looked up and dropped first.
    match insert(pool, batch.event_id, &rows).await {
        Err(StageError::Database(err)) if violates(&err, IDEMPOTENCY_KEY_CONSTRAINT) => {
            insert_dropping_taken_keys(pool, batch.event_id, rows).await
        }
        written => written,
    }
}

/// The batch's rows, column by column (the statement's `unnest` arguments).
struct Rows<'a> {
    ids: Vec<Uuid>,
    users: Vec<String>,
    quantities: Vec<i32>,
    statuses: Vec<&'a str>,
    reasons: Vec<Option<&'a str>>,
    keys: Vec<Option<String>>,
    created: Vec<chrono::DateTime<chrono::Utc>>,
}

async fn insert(pool: &PgPool, event_id: Uuid, rows: &Rows<'_>) -> Result<Written, StageError> {
    let mut tx = pool.begin().await.map_err(pg_error)?;
    let inserted = insert_in(&mut tx, event_id, rows).await?;
    tx.commit().await.map_err(pg_error)?;
    Ok(Written {
        inserted,
        keys_dropped: 0,
    })
}

async fn insert_dropping_taken_keys(
    pool: &PgPool,
    event_id: Uuid,
    mut rows: Rows<'_>,
) -> Result<Written, StageError> {
    let mut tx = pool.begin().await.map_err(pg_error)?;
    sqlx::query(REFUSALS_RELEASE_KEYS)
        .bind(&rows.keys)
        .bind(&rows.ids)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
    let taken: Vec<Uuid> = sqlx::query_scalar(KEYS_TAKEN)
        .bind(&rows.ids)
        .bind(&rows.keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
    for (id, key) in rows.ids.iter().zip(rows.keys.iter_mut()) {
        if taken.contains(id) {
            tracing::warn!(booking = %id, key = key.as_deref().unwrap_or(""), "idempotency key already used by another booking; writing the booking without it");
            *key = None;
        }
    }
    let inserted = insert_in(&mut tx, event_id, &rows).await?;
    tx.commit().await.map_err(pg_error)?;
    Ok(Written {
        inserted,
        keys_dropped: taken.len(),
    })
}

async fn insert_in(
    tx: &mut sqlx::PgConnection,
    event_id: Uuid,
    rows: &Rows<'_>,
) -> Result<usize, StageError> {
    let (inserted, sold, updated): (i64, i64, i64) = sqlx::query_as(WRITE_BATCH)
        .bind(event_id)
        .bind(&rows.ids)
        .bind(&rows.users)
        .bind(&rows.quantities)
        .bind(&rows.statuses)
        .bind(&rows.reasons)
        .bind(&rows.keys)
        .bind(&rows.created)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_error)?;
    if sold > 0 && updated != 1 {
        // The foreign key makes this unreachable; if it ever is, nothing must be committed.
        return Err(StageError::Internal(format!(
            "event {event_id} missing while syncing its bookings"
        )));
    }
    Ok(inserted as usize)
}
