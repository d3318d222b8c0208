//! Rows of the shared Postgres schema (`migrations/`) as domain values: reading and writing
//! events and bookings the same way from every stage and worker.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::StageError;
use crate::domain::{Booking, BookingStatus, Event, NewEvent, RejectReason};

/// Name of the unique constraint on `bookings.idempotency_key` (Postgres' default naming).
pub const IDEMPOTENCY_KEY_CONSTRAINT: &str = "bookings_idempotency_key_key";

// Macros rather than consts so the queries stay `&'static str` (sqlx 0.9 refuses built strings).
macro_rules! event_columns {
    () => {
        "id, name, tickets, remaining, per_user_limit, created_at"
    };
}
macro_rules! booking_columns {
    () => {
        "id, event_id, user_id, quantity, status, reason, created_at"
    };
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: Uuid,
    name: String,
    tickets: i64,
    remaining: i64,
    per_user_limit: Option<i32>,
    created_at: DateTime<Utc>,
}

impl From<EventRow> for Event {
    fn from(r: EventRow) -> Self {
        Event {
            id: r.id,
            name: r.name,
            tickets: r.tickets,
            remaining: r.remaining,
            per_user_limit: r.per_user_limit,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct BookingRow {
    id: Uuid,
    event_id: Uuid,
    user_id: String,
    quantity: i32,
    status: String,
    reason: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<BookingRow> for Booking {
    type Error = StageError;

    fn try_from(r: BookingRow) -> Result<Self, StageError> {
        let status = parse_status(&r.status).ok_or_else(|| {
            StageError::Internal(format!("booking {} has status {:?}", r.id, r.status))
        })?;
        let reason = match r.reason.as_deref() {
            None => None,
            Some(text) => Some(parse_reason(text).ok_or_else(|| {
                StageError::Internal(format!("booking {} has reason {text:?}", r.id))
            })?),
        };
        Ok(Booking {
            id: r.id,
            event_id: r.event_id,
            user_id: r.user_id,
            quantity: r.quantity,
            status,
            reason,
            position: None,
            created_at: r.created_at,
        })
    }
}

pub fn parse_status(text: &str) -> Option<BookingStatus> {
    [
        BookingStatus::Pending,
        BookingStatus::Confirmed,
        BookingStatus::Rejected,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
}

pub fn parse_reason(text: &str) -> Option<RejectReason> {
    [
        RejectReason::SoldOut,
        RejectReason::PerUserLimit,
        RejectReason::IdempotencyKeyReused,
    ]
    .into_iter()
    .find(|r| r.as_str() == text)
}

/// SQLSTATEs of a statement given up on by our own timeouts (`lock_timeout`: 55P03
/// lock_not_available; `statement_timeout`: 57014 query_canceled) or of a server shutting down
/// (57P01..57P03): the store is too busy or away, so 503 and retry, not 500.
const UNAVAILABLE_SQLSTATES: &[&str] = &["55P03", "57014", "57P01", "57P02", "57P03"];

/// Connection-level failures and timeouts are the store being unavailable (503); the rest stays
/// a database error (500).
pub fn pg_error(err: sqlx::Error) -> StageError {
    let timed_out = err
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| UNAVAILABLE_SQLSTATES.contains(&code.as_ref()));
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StageError::Unavailable {
            store: "postgres",
            detail: err.to_string(),
        },
        _ if timed_out => StageError::Unavailable {
            store: "postgres",
            detail: err.to_string(),
        },
        other => StageError::Database(other),
    }
}

/// True when `err` is the unique violation of `constraint`.
pub fn violates(err: &sqlx::Error, constraint: &str) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.constraint() == Some(constraint))
}

macro_rules! insert_event {
    () => {
        "INSERT INTO events (id, name, tickets, remaining, per_user_limit) VALUES ($1, $2, $3, $3, $4)"
    };
}

pub async fn insert_event(db: impl PgExecutor<'_>, new: &NewEvent) -> Result<Event, StageError> {
    let sql = concat!(insert_event!(), " RETURNING ", event_columns!());
    let row: EventRow = sqlx::query_as(sql)
        .bind(Uuid::new_v4())
        .bind(&new.name)
        .bind(new.tickets)
        .bind(new.per_user_limit)
        .fetch_one(db)
        .await
        .map_err(pg_error)?;
    Ok(row.into())
}

/// The event `id` as stored, creating it from `new` if absent (any number of pods may race).
/// An existing event is never changed: its inventory may already be partly sold. The flag is
/// true when this call created it.
pub async fn ensure_event(
    db: &sqlx::PgPool,
    id: Uuid,
    new: &NewEvent,
) -> Result<(Event, bool), StageError> {
    let sql = concat!(
        insert_event!(),
        " ON CONFLICT (id) DO NOTHING RETURNING ",
        event_columns!()
    );
    let created: Option<EventRow> = sqlx::query_as(sql)
        .bind(id)
        .bind(&new.name)
        .bind(new.tickets)
        .bind(new.per_user_limit)
        .fetch_optional(db)
        .await
        .map_err(pg_error)?;
    match created {
        Some(row) => Ok((row.into(), true)),
        None => Ok((fetch_event(db, id).await?, false)),
    }
}

pub async fn fetch_event(db: impl PgExecutor<'_>, id: Uuid) -> Result<Event, StageError> {
    let sql = concat!("SELECT ", event_columns!(), " FROM events WHERE id = $1");
    let row: Option<EventRow> = sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(db)
        .await
        .map_err(pg_error)?;
    row.map(Event::from).ok_or(StageError::EventNotFound(id))
}

pub async fn fetch_booking(db: impl PgExecutor<'_>, id: Uuid) -> Result<Booking, StageError> {
    let sql = concat!(
        "SELECT ",
        booking_columns!(),
        " FROM bookings WHERE id = $1"
    );
    let row: Option<BookingRow> = sqlx::query_as(sql)
        .bind(id)
        .fetch_optional(db)
        .await
        .map_err(pg_error)?;
    row.ok_or(StageError::BookingNotFound(id))?.try_into()
}

/// The booking first made with this idempotency key, if any.
pub async fn fetch_booking_by_key(
    db: impl PgExecutor<'_>,
    key: &str,
) -> Result<Option<Booking>, StageError> {
    let sql = concat!(
        "SELECT ",
        booking_columns!(),
        " FROM bookings WHERE idempotency_key = $1"
    );
    let row: Option<BookingRow> = sqlx::query_as(sql)
        .bind(key)
        .fetch_optional(db)
        .await
        .map_err(pg_error)?;
    row.map(Booking::try_from).transpose()
}

#[derive(sqlx::FromRow)]
struct KeyedBookingRow {
    idempotency_key: String,
    #[sqlx(flatten)]
    booking: BookingRow,
}

/// The bookings first made with any of `keys`, by key (one round trip for a whole batch).
pub async fn fetch_bookings_by_keys(
    db: impl PgExecutor<'_>,
    keys: &[&str],
) -> Result<Vec<(String, Booking)>, StageError> {
    let sql = concat!(
        "SELECT idempotency_key, ",
        booking_columns!(),
        " FROM bookings WHERE idempotency_key = ANY($1)"
    );
    let rows: Vec<KeyedBookingRow> = sqlx::query_as(sql)
        .bind(keys)
        .fetch_all(db)
        .await
        .map_err(pg_error)?;
    rows.into_iter()
        .map(|r| Ok((r.idempotency_key, r.booking.try_into()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_reason_round_trip_through_their_column_text() {
        for s in [
            BookingStatus::Pending,
            BookingStatus::Confirmed,
            BookingStatus::Rejected,
        ] {
            assert_eq!(parse_status(s.as_str()), Some(s));
        }
        for r in [
            RejectReason::SoldOut,
            RejectReason::PerUserLimit,
            RejectReason::IdempotencyKeyReused,
        ] {
            assert_eq!(parse_reason(r.as_str()), Some(r));
        }
        assert_eq!(parse_status("cancelled"), None);
    }
}
