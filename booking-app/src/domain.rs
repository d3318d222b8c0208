//! The booking domain: events, booking requests and bookings, shared by every stage.
//! These are also the HTTP bodies (serde + utoipa), so the API and the stages speak one language.

pub mod schema;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Longest accepted `user_id`, in characters.
pub const MAX_USER_ID_LEN: usize = 128;
/// Longest accepted event name, in characters.
pub const MAX_EVENT_NAME_LEN: usize = 200;

/// What `validation::validate_text` accepts, as an ECMA-262 pattern for the OpenAPI document: no control
/// character anywhere (`char::is_control`: U+0000-U+001F, U+007F-U+009F) and at least one
/// character that is not white space. Postgres refuses NUL in `text`, and logs and headers should
/// not carry the others.
pub const TEXT_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*\
                                [^\\s\\u0000-\\u001f\\u007f-\\u009f]\
                                [^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Largest quantity one booking may ask for.
pub const MAX_QUANTITY: i32 = 100;
/// Largest `tickets` an event may have.
pub const MAX_TICKETS: i64 = 100_000_000;

/// Which inventory implementation decides bookings: configuration, not a build. Defined by the
/// contract crate, which the operator writes `STAGE` from.
pub use flashsale_contract::Stage;

/// `POST /events` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    #[schema(schema_with = schema::event_name)]
    pub name: String,
    #[schema(schema_with = schema::tickets)]
    #[serde(deserialize_with = "integral::deserialize")]
    pub tickets: i64,
    /// Most tickets one user may hold for this event; unlimited when absent.
    #[serde(default, deserialize_with = "integral::deserialize_option")]
    #[schema(schema_with = schema::per_user_limit)]
    pub per_user_limit: Option<i32>,
}

/// An event and its inventory as the stage's source of truth sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: Uuid,
    pub name: String,
    pub tickets: i64,
    pub remaining: i64,
    pub per_user_limit: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// `POST /events/{id}/bookings` body. The user is the bearer token's subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingBody {
    /// May be omitted; when given it must be the token's `sub` (403 otherwise). Required, and
    /// trusted, only when the service runs with AUTH_DISABLED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::user_id, required = false)]
    pub user_id: Option<String>,
    #[schema(schema_with = schema::quantity)]
    #[serde(deserialize_with = "integral::deserialize")]
    pub quantity: i32,
}

/// A booking request as a stage receives it: the user is settled (the token's subject).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingRequest {
    #[schema(schema_with = schema::user_id)]
    pub user_id: String,
    #[schema(schema_with = schema::quantity)]
    #[serde(deserialize_with = "integral::deserialize")]
    pub quantity: i32,
}

/// Where a booking is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BookingStatus {
    /// Accepted for later decision (stage kafka).
    Pending,
    /// The tickets are the user's.
    Confirmed,
    /// Decided against; `reason` says why.
    Rejected,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Pending => "pending",
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Rejected => "rejected",
        }
    }
}

/// Why a booking was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Fewer tickets left than the quantity asked for.
    SoldOut,
    /// The user would hold more than the event's per-user limit.
    PerUserLimit,
    /// Stage kafka: the request's `Idempotency-Key` was first used for a different request
    /// (decided by the worker; the other stages answer 422 at once).
    IdempotencyKeyReused,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::SoldOut => "sold_out",
            RejectReason::PerUserLimit => "per_user_limit",
            RejectReason::IdempotencyKeyReused => "idempotency_key_reused",
        }
    }
}

/// A booking as `GET /bookings/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Booking {
    pub id: Uuid,
    pub event_id: Uuid,
    pub user_id: String,
    pub quantity: i32,
    pub status: BookingStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RejectReason>,
    /// Stage kafka, while pending: requests ahead of this one that are not decided yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl Booking {
    /// The booking `request` becomes when a stage confirms it at once (stages postgres, redis).
    pub fn confirmed(
        id: Uuid,
        event_id: Uuid,
        request: &BookingRequest,
        created_at: DateTime<Utc>,
    ) -> Self {
        Booking {
            id,
            event_id,
            user_id: request.user_id.clone(),
            quantity: request.quantity,
            status: BookingStatus::Confirmed,
            reason: None,
            position: None,
            created_at,
        }
    }
}

/// What a stage answered to a booking request that it accepted for processing.
/// Refusals (sold out, per-user limit) are errors (`StageError::Rejected`) for stages that decide
/// at once, and a `Rejected` status later for stage kafka.
#[derive(Debug, Clone, PartialEq)]
pub enum BookingOutcome {
    /// Decided now: 201.
    Confirmed(Booking),
    /// Queued for a worker: 202.
    Pending(Booking),
}

impl BookingOutcome {
    pub fn booking(&self) -> &Booking {
        match self {
            BookingOutcome::Confirmed(b) | BookingOutcome::Pending(b) => b,
        }
    }
}

/// Integers as JSON Schema defines them: `2.0` is the integer 2 (the document says `integer`, and
/// a client or fuzzer may write it so); `2.5`, strings and out-of-range values are refused.
mod integral {
    use serde::de::{self, Deserializer, Visitor};

    struct Integral<T>(std::marker::PhantomData<T>);

    impl<T: TryFrom<i64>> Visitor<'_> for Integral<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            i64::try_from(v)
                .ok()
                .and_then(|v| T::try_from(v).ok())
                .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            // Exactly representable integers only: beyond 2^53 a float is not one integer.
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if v.fract() != 0.0 || !(-EXACT..=EXACT).contains(&v) {
                return Err(E::invalid_type(de::Unexpected::Float(v), &self));
            }
            self.visit_i64(v as i64)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
        d: D,
    ) -> Result<T, D::Error> {
        d.deserialize_any(Integral(std::marker::PhantomData))
    }

    pub(super) fn deserialize_option<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        struct Optional<T>(std::marker::PhantomData<T>);
        impl<'de, T: TryFrom<i64>> Visitor<'de> for Optional<T> {
            type Value = Option<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer or null")
            }

            fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
                deserialize(d).map(Some)
            }
        }
        d.deserialize_option(Optional(std::marker::PhantomData))
    }

    #[cfg(test)]
    mod tests {
        use crate::domain::{BookingRequest, NewEvent};

        #[test]
        fn integral_floats_are_integers_and_the_rest_is_refused() {
            let b: BookingRequest =
                serde_json::from_str(r#"{"user_id":"u","quantity":2.0}"#).unwrap();
            assert_eq!(b.quantity, 2);
            for bad in ["2.5", "\"2\"", "4294967296", "1e300", "null", "true"] {
                let json = format!(r#"{{"user_id":"u","quantity":{bad}}}"#);
                assert!(
                    serde_json::from_str::<BookingRequest>(&json).is_err(),
                    "{bad}"
                );
            }
            let e: NewEvent =
                serde_json::from_str(r#"{"name":"n","tickets":5.0,"per_user_limit":3.0}"#).unwrap();
            assert_eq!((e.tickets, e.per_user_limit), (5, Some(3)));
            let e: NewEvent =
                serde_json::from_str(r#"{"name":"n","tickets":5,"per_user_limit":null}"#).unwrap();
            assert_eq!(e.per_user_limit, None);
            let e: NewEvent = serde_json::from_str(r#"{"name":"n","tickets":5}"#).unwrap();
            assert_eq!(e.per_user_limit, None);
            assert!(
                serde_json::from_str::<NewEvent>(
                    r#"{"name":"n","tickets":5,"per_user_limit":1.5}"#
                )
                .is_err()
            );
        }
    }
}
