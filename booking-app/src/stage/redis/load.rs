//! An event's inventory enters Redis from Postgres: when the event is created, and whenever its
//! keys are missing (first use, or a Redis that lost its data). The rebuild counts what Postgres
//! has plus what is still unsynced in the event's stream, so sold tickets never come back.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use sqlx::PgPool;
use uuid::Uuid;

use super::connection::classify;
use super::keys::{ENTRY_BOOKING, ENTRY_KEY, Keys, SYNC_GROUP};
use crate::domain::{Booking, BookingStatus, Event};
use crate::stage::{StageError, records};

/// The SET-NX-for-a-whole-event load (see the script's header).
pub const LOAD_SCRIPT: &str = include_str!("../inventory_load.lua");

pub struct Loader {
    redis: ConnectionManager,
    pool: PgPool,
    keys: Keys,
    script: redis::Script,
    /// The booking script's claim TTL: a refusal restored into its claim lives what is left of it.
    claim_ttl_secs: u64,
}

/// A booking found in the stream: decided in Redis, maybe not yet in Postgres.
#[derive(Debug, Clone)]
pub struct StreamBooking {
    pub booking: Booking,
    pub idempotency_key: Option<String>,
}

/// Parses a stream entry written by the booking script.
pub fn parse_entry(entry: &redis::streams::StreamId) -> Result<StreamBooking, StageError> {
    let bad = |what: &str| StageError::Internal(format!("stream entry {}: {what}", entry.id));
    let json: String = entry
        .get(ENTRY_BOOKING)
        .ok_or_else(|| bad("no booking field"))?;
    let booking: Booking = serde_json::from_str(&json).map_err(|e| bad(&e.to_string()))?;
    let key: String = entry.get(ENTRY_KEY).unwrap_or_default();
    Ok(StreamBooking {
        booking,
        idempotency_key: Some(key).filter(|k| !k.is_empty()),
    })
}

type KeyedRow = (
    String,
    Uuid,
    String,
    i32,
    String,
    Option<String>,
    DateTime<Utc>,
);

/// Everything Postgres knows about one event, read in one snapshot.
struct Snapshot {
    event: Event,
    /// Which of the stream's booking ids Postgres already has.
    synced: HashSet<Uuid>,
    holdings: HashMap<String, i64>,
    /// Idempotency key -> its first answer (confirmed, or a refusal kept for its key).
    answers: Vec<(String, Booking)>,
}

impl Loader {
    pub fn new(redis: ConnectionManager, pool: PgPool, keys: Keys, claim_ttl_secs: u64) -> Self {
        Self {
            redis,
            pool,
            keys,
            script: redis::Script::new(LOAD_SCRIPT),
            claim_ttl_secs,
        }
    }

    pub async fn prepare(&self, redis: &mut ConnectionManager) -> Result<(), StageError> {
        self.script
            .prepare_invoke()
            .load_async(redis)
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// The event as Redis has it, `None` when it is not loaded.
    pub async fn read(&self, id: Uuid) -> Result<Option<Event>, StageError> {
        let mut redis = self.redis.clone();
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.event(id).inventory)
            .query_async(&mut redis)
            .await
            .map_err(classify)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let bad = |what: &str| StageError::Internal(format!("event {id} in Redis: bad {what}"));
        let number = |name: &str| {
            fields
                .get(name)
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| bad(name))
        };
        let limit = number("limit")?;
        let created_at = fields
            .get("created_at")
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .ok_or_else(|| bad("created_at"))?;
        Ok(Some(Event {
            id,
            name: fields.get("name").cloned().ok_or_else(|| bad("name"))?,
            tickets: number("tickets")?,
            remaining: number("remaining")?,
            per_user_limit: if limit < 0 {
                None
            } else {
                Some(i32::try_from(limit).map_err(|_| bad("limit"))?)
            },
            created_at: created_at.with_timezone(&Utc),
        }))
    }

    /// Loads the event unless it is loaded already; `EventNotFound` when Postgres has no such event.
    pub async fn load(&self, id: Uuid) -> Result<(), StageError> {
        let mut redis = self.redis.clone();
        let event_keys = self.keys.event(id);
        // Stream first, Postgres second: an entry synced in between is in both, and the snapshot
        // below says so; an entry synced later is in the stream only, and so counted once.
        let range: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&event_keys.stream)
            .arg("-")
            .arg("+")
            .query_async(&mut redis)
            .await
            .map_err(classify)?;
        let unsynced_candidates = range
            .ids
            .iter()
            .map(parse_entry)
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<Uuid> = unsynced_candidates.iter().map(|s| s.booking.id).collect();
        let mut snapshot = self.snapshot(id, &ids).await?;

        let mut remaining = snapshot.event.remaining;
        for pending in unsynced_candidates
            .into_iter()
            .filter(|s| !snapshot.synced.contains(&s.booking.id))
        {
            if pending.booking.status == BookingStatus::Confirmed {
                let quantity = i64::from(pending.booking.quantity);
                remaining -= quantity;
                *snapshot
                    .holdings
                    .entry(pending.booking.user_id.clone())
                    .or_default() += quantity;
            }
            if let Some(key) = pending.idempotency_key {
                snapshot.answers.push((key, pending.booking));
            }
        }
        if remaining < 0 {
            return Err(StageError::Internal(format!(
                "event {id}: Postgres and the stream add up to {remaining} tickets left"
            )));
        }

        // Registered before the event can take a booking, so the syncer is watching its stream
        // even if this load stops half-way; only events Postgres knows get here.
        let _: i64 = redis::cmd("SADD")
            .arg(self.keys.event_index())
            .arg(id.to_string())
            .query_async(&mut redis)
            .await
            .map_err(classify)?;

        // Refusals go back into their keys' claims, as the booking script keeps them, for what is
        // left of their retention (older ones Postgres deletes; a retry of one is a new request).
        // Before the event is loaded, so no booking can claim such a key first; NX keeps a claim
        // that exists.
        let (refusals, answers): (Vec<_>, Vec<_>) = std::mem::take(&mut snapshot.answers)
            .into_iter()
            .partition(|(_, booking)| booking.status == BookingStatus::Rejected);
        snapshot.answers = answers;
        let mut restore = redis::pipe();
        let now = Utc::now();
        for (key, booking) in &refusals {
            let age = (now - booking.created_at)
                .num_seconds()
                .max(0)
                .unsigned_abs();
            let Some(ttl) = self.claim_ttl_secs.checked_sub(age).filter(|t| *t > 0) else {
                continue;
            };
            let answer =
                serde_json::to_string(booking).map_err(|e| StageError::Internal(e.to_string()))?;
            restore
                .cmd("SET")
                .arg(self.keys.key_claim(key))
                .arg(format!("{id} {answer}"))
                .arg("EX")
                .arg(ttl)
                .arg("NX")
                .ignore();
        }
        if !refusals.is_empty() {
            let () = restore.query_async(&mut redis).await.map_err(classify)?;
        }

        let event = &snapshot.event;
        let mut invocation = self.script.prepare_invoke();
        for k in &event_keys.as_array()[..4] {
            invocation.key(k);
        }
        invocation
            .arg(&event.name)
            .arg(event.tickets)
            .arg(event.per_user_limit.map_or(-1, i64::from))
            .arg(event.created_at.to_rfc3339())
            .arg(remaining)
            .arg(SYNC_GROUP)
            .arg(snapshot.holdings.len());
        for (user, tickets) in &snapshot.holdings {
            invocation.arg(user).arg(tickets);
        }
        for (key, booking) in &snapshot.answers {
            let answer =
                serde_json::to_string(booking).map_err(|e| StageError::Internal(e.to_string()))?;
            invocation.arg(key).arg(answer);
        }
        let loaded: i64 = invocation
            .invoke_async(&mut redis)
            .await
            .map_err(classify)?;
        if loaded == 1 {
            tracing::info!(event = %id, remaining, tickets = event.tickets, "event inventory loaded into Redis");
        }
        Ok(())
    }

    /// One repeatable-read transaction, so the event row and the booking ids agree.
    async fn snapshot(&self, id: Uuid, stream_ids: &[Uuid]) -> Result<Snapshot, StageError> {
        let pg = records::pg_error;
        let mut tx = self.pool.begin().await.map_err(pg)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        let event = records::fetch_event(&mut *tx, id).await?;
        let synced: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM bookings WHERE id = ANY($1)")
            .bind(stream_ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(pg)?;
        let holdings: Vec<(String, i32)> = sqlx::query_as(
            "SELECT user_id, quantity FROM holdings WHERE event_id = $1 AND quantity > 0",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg)?;
        // Every first answer a key must replay: bookings and the refusals kept for their key.
        let keyed: Vec<KeyedRow> = sqlx::query_as(
            "SELECT idempotency_key, id, user_id, quantity, status, reason, created_at FROM bookings \
             WHERE event_id = $1 AND idempotency_key IS NOT NULL",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;

        let answers = keyed
            .into_iter()
            .map(
                |(key, booking_id, user_id, quantity, status, reason, created_at)| {
                    let bad = || {
                        StageError::Internal(format!(
                            "booking {booking_id}: status {status:?}, reason {reason:?}"
                        ))
                    };
                    let booking = Booking {
                        id: booking_id,
                        event_id: id,
                        user_id,
                        quantity,
                        status: records::parse_status(&status).ok_or_else(bad)?,
                        reason: match reason.as_deref() {
                            None => None,
                            Some(r) => Some(records::parse_reason(r).ok_or_else(bad)?),
                        },
                        position: None,
                        created_at,
                    };
                    Ok((key, booking))
                },
            )
            .collect::<Result<_, StageError>>()?;
        Ok(Snapshot {
            event,
            synced: synced.into_iter().collect(),
            holdings: holdings
                .into_iter()
                .map(|(u, q)| (u, i64::from(q)))
                .collect(),
            answers,
        })
    }
}
