//! One batch of queued requests decided in one Postgres transaction: lock the events' inventory
//! rows (in id order, so workers never deadlock), read what is already decided and held, decide
//! (`decide.rs`), write every booking, the holdings and the inventory, commit.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::decide::{Decided, Inventory, Verdict, check, decide};
use crate::domain::RejectReason;
use crate::stage::kafka::record::BookingRecord;

/// What a committed batch did.
#[derive(Debug)]
pub struct Outcome {
    pub decided: Decided,
    /// `remaining` of every event the batch touched, after it.
    pub remaining_after: HashMap<Uuid, i64>,
}

pub async fn decide_batch(
    pool: &PgPool,
    requests: &[BookingRecord],
) -> Result<Outcome, sqlx::Error> {
    let mut tx = pool.begin().await?;

    let mut event_ids: Vec<Uuid> = requests.iter().map(|r| r.event_id).collect();
    event_ids.sort_unstable();
    event_ids.dedup();
    // The lock: a worker that took over these partitions mid-batch (rebalance) waits here until
    // this batch is committed, then sees its bookings as already decided.
    let rows: Vec<(Uuid, i64, Option<i32>)> = sqlx::query_as(
        "SELECT id, remaining, per_user_limit FROM events WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&event_ids)
    .fetch_all(&mut *tx)
    .await?;
    let events: HashMap<Uuid, Inventory> = rows
        .into_iter()
        .map(|(id, remaining, per_user_limit)| {
            (
                id,
                Inventory {
                    remaining,
                    per_user_limit,
                },
            )
        })
        .collect();

    let ids: Vec<Uuid> = requests.iter().map(|r| r.id).collect();
    // Only valid requests' text reaches a query: Postgres refuses a NUL in text, so one foreign
    // record could otherwise fail every retry of its batch (the invalid ones are set aside).
    let valid: Vec<&BookingRecord> = requests.iter().filter(|r| check(r).is_ok()).collect();
    let keys: Vec<String> = valid
        .iter()
        .filter_map(|r| r.idempotency_key.clone())
        .collect();
    let known: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "SELECT id, idempotency_key FROM bookings WHERE id = ANY($1) OR idempotency_key = ANY($2)",
    )
    .bind(&ids)
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?;
    let known_ids: HashSet<Uuid> = known.iter().map(|(id, _)| *id).collect();
    let known_keys: HashMap<String, Uuid> = known
        .into_iter()
        .filter_map(|(id, key)| Some((key?, id)))
        .collect();

    let (holders_events, holders): (Vec<Uuid>, Vec<String>) = valid
        .iter()
        .map(|r| (r.event_id, r.user_id.clone()))
        .unzip();
    let held: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "SELECT h.event_id, h.user_id, h.quantity FROM holdings h \
         JOIN (SELECT DISTINCT * FROM UNNEST($1::uuid[], $2::text[])) AS k(event_id, user_id) \
           ON h.event_id = k.event_id AND h.user_id = k.user_id",
    )
    .bind(&holders_events)
    .bind(&holders)
    .fetch_all(&mut *tx)
    .await?;
    let holdings: HashMap<(Uuid, String), i32> =
        held.into_iter().map(|(e, u, q)| ((e, u), q)).collect();

    let decided = decide(requests, &events, &holdings, &known_ids, &known_keys);
    insert_bookings(&mut tx, requests, &decided.verdicts).await?;
    add_holdings(&mut tx, &decided.holdings_added).await?;
    if !decided.remaining.is_empty() {
        let (ids, remaining): (Vec<Uuid>, Vec<i64>) =
            decided.remaining.iter().map(|(id, r)| (*id, *r)).unzip();
        sqlx::query(
            "UPDATE events e SET remaining = d.remaining \
             FROM UNNEST($1::uuid[], $2::bigint[]) AS d(id, remaining) WHERE e.id = d.id",
        )
        .bind(&ids)
        .bind(&remaining)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;

    let remaining_after = events
        .iter()
        .map(|(id, e)| {
            (
                *id,
                decided.remaining.get(id).copied().unwrap_or(e.remaining),
            )
        })
        .collect();
    Ok(Outcome {
        decided,
        remaining_after,
    })
}

async fn insert_bookings(
    tx: &mut sqlx::PgConnection,
    requests: &[BookingRecord],
    verdicts: &[Verdict],
) -> Result<(), sqlx::Error> {
    let mut ids = Vec::new();
    let mut events = Vec::new();
    let mut users = Vec::new();
    let mut quantities = Vec::new();
    let mut statuses = Vec::new();
    let mut reasons: Vec<Option<&str>> = Vec::new();
    let mut keys: Vec<Option<String>> = Vec::new();
    let mut created: Vec<DateTime<Utc>> = Vec::new();
    for (request, verdict) in requests.iter().zip(verdicts) {
        let (status, reason) = match verdict {
            Verdict::Confirmed => ("confirmed", None),
            Verdict::Rejected(reason) => ("rejected", Some(reason.as_str())),
            Verdict::Duplicate | Verdict::UnknownEvent | Verdict::Invalid(_) => continue,
        };
        // A reused key stays with the booking it was first used for (the column is unique).
        let key = match verdict {
            Verdict::Rejected(RejectReason::IdempotencyKeyReused) => None,
            _ => request.idempotency_key.clone(),
        };
        ids.push(request.id);
        events.push(request.event_id);
        users.push(request.user_id.clone());
        quantities.push(request.quantity);
        statuses.push(status);
        reasons.push(reason);
        keys.push(key);
        created.push(request.accepted_at);
    }
    if ids.is_empty() {
        return Ok(());
    }
    // No ON CONFLICT: the rows were checked under the events' locks, so a conflict means a key
    // raced on another event; failing the batch (it is retried) beats a silent miscount.
    sqlx::query(
        "INSERT INTO bookings (id, event_id, user_id, quantity, status, reason, idempotency_key, created_at, decided_at) \
         SELECT *, now() FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::text[], \
                                     $7::text[], $8::timestamptz[])",
    )
    .bind(&ids)
    .bind(&events)
    .bind(&users)
    .bind(&quantities)
    .bind(&statuses)
    .bind(&reasons)
    .bind(&keys)
    .bind(&created)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn add_holdings(
    tx: &mut sqlx::PgConnection,
    added: &HashMap<(Uuid, String), i32>,
) -> Result<(), sqlx::Error> {
    if added.is_empty() {
        return Ok(());
    }
    let mut events = Vec::with_capacity(added.len());
    let mut users = Vec::with_capacity(added.len());
    let mut quantities = Vec::with_capacity(added.len());
    for ((event, user), quantity) in added {
        events.push(*event);
        users.push(user.clone());
        quantities.push(*quantity);
    }
    sqlx::query(
        "INSERT INTO holdings (event_id, user_id, quantity) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int[]) \
         ON CONFLICT (event_id, user_id) DO UPDATE SET quantity = holdings.quantity + EXCLUDED.quantity",
    )
    .bind(&events)
    .bind(&users)
    .bind(&quantities)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
