//! One batch of stage postgres in one transaction: lock the event's row, read what the batch's
//! users hold and what its keys already booked, decide in memory (`decide.rs`), write every row
//! with one statement, commit. The same mechanism as the per-booking form, one lock and one commit
//! for many bookings (the ideas of stage kafka's worker ledger, for a single event).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::decide::{Answer, Ask, Decided, Locked, decide};
use crate::stage::records::pg_error;
use crate::stage::{StageError, records};

/// Decides `asks` (all for `event_id`, in arrival order) and commits. Writes keep their raw
/// `Database` error so the caller can tell an idempotency-key conflict (another transaction
/// committed one of the keys after this one read them) from other failures.
pub async fn decide_batch(
    pool: &PgPool,
    event_id: Uuid,
    asks: &[Ask],
) -> Result<Vec<Answer>, StageError> {
    let mut tx = pool.begin().await.map_err(pg_error)?;
    // The lock: batches of this event, from every pod, wait here for the one before to commit.
    // `now()` is the transaction's timestamp, every new row's `created_at` (as in the per-booking
    // form, whose rows default to it).
    let row: Option<(i64, Option<i32>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT remaining, per_user_limit, now() FROM events WHERE id = $1 FOR UPDATE",
    )
    .bind(event_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(pg_error)?;
    let locked = row.map(|(remaining, per_user_limit, _)| Locked {
        remaining,
        per_user_limit,
    });
    let now = row.map_or_else(Utc::now, |(_, _, now)| now);

    // Separate statements after the lock, so they read what the previous holder committed (joined
    // into the locking SELECT they would read the snapshot taken before the wait).
    let mut keys: Vec<&str> = asks.iter().filter_map(|a| a.key.as_deref()).collect();
    keys.sort_unstable();
    keys.dedup();
    let known: HashMap<String, _> = if keys.is_empty() {
        HashMap::new()
    } else {
        records::fetch_bookings_by_keys(&mut *tx, &keys)
            .await?
            .into_iter()
            .collect()
    };
    let holdings: HashMap<String, i32> = match locked {
        Some(Locked {
            per_user_limit: Some(_),
            ..
        }) => {
            let mut users: Vec<&str> = asks.iter().map(|a| a.request.user_id.as_str()).collect();
            users.sort_unstable();
            users.dedup();
            sqlx::query_as(
                "SELECT user_id, quantity FROM holdings WHERE event_id = $1 AND user_id = ANY($2)",
            )
            .bind(event_id)
            .bind(&users)
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_error)?
            .into_iter()
            .collect()
        }
        _ => HashMap::new(),
    };

    let decided = decide(event_id, locked, asks, &holdings, &known, now, Uuid::new_v4);
    if decided.rows.is_empty() {
        // Nothing to write (refusals without keys, replays, no such event): the rollback on drop
        // releases the lock without waiting for a commit record to be flushed.
        return Ok(decided.answers);
    }
    write(&mut tx, event_id, &decided, now).await?;
    tx.commit().await.map_err(pg_error)?;
    Ok(decided.answers)
}

/// The batch's bookings, holdings and inventory in one statement: one round trip while the row
/// is locked, however many bookings the batch has.
async fn write(
    tx: &mut sqlx::PgConnection,
    event_id: Uuid,
    decided: &Decided,
    now: DateTime<Utc>,
) -> Result<(), StageError> {
    let n = decided.rows.len();
    let (mut ids, mut users, mut quantities) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut statuses, mut reasons, mut keys) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for row in &decided.rows {
        ids.push(row.booking.id);
        users.push(row.booking.user_id.as_str());
        quantities.push(row.booking.quantity);
        statuses.push(row.booking.status.as_str());
        reasons.push(row.booking.reason.map(|r| r.as_str()));
        keys.push(row.key.as_deref());
    }
    let (holders, held): (Vec<&str>, Vec<i32>) = decided
        .holdings_added
        .iter()
        .map(|(user, quantity)| (user.as_str(), *quantity))
        .unzip();
    // No ON CONFLICT on the key: a conflict means another transaction committed one of these keys
    // after this one read them; failing here makes the caller re-run the batch, which then
    // replays that key (a silent skip would answer a booking that was never written).
    sqlx::query(
        "WITH booked AS ( \
             INSERT INTO bookings (id, event_id, user_id, quantity, status, reason, idempotency_key, created_at, decided_at) \
             SELECT r.id, $1, r.user_id, r.quantity, r.status, r.reason, r.key, $8, now() \
             FROM UNNEST($2::uuid[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[]) \
                  AS r(id, user_id, quantity, status, reason, key)), \
         held AS ( \
             INSERT INTO holdings (event_id, user_id, quantity) \
             SELECT $1, h.user_id, h.quantity FROM UNNEST($9::text[], $10::int[]) AS h(user_id, quantity) \
             ON CONFLICT (event_id, user_id) DO UPDATE SET quantity = holdings.quantity + EXCLUDED.quantity), \
         inventory AS ( \
             UPDATE events SET remaining = remaining - $11 WHERE id = $1 AND $11 > 0) \
         SELECT 1",
    )
    .bind(event_id)
    .bind(&ids)
    .bind(&users)
    .bind(&quantities)
    .bind(&statuses)
    .bind(&reasons)
    .bind(&keys)
    .bind(now)
    .bind(&holders)
    .bind(&held)
    .bind(decided.sold)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
