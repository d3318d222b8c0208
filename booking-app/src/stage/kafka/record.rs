//! The queued booking request: what the API produces to the requests topic and the worker
//! decides. JSON with a version field, keyed by event id so one event's requests stay in order.
//! One record of the topic carries the requests of one event that one API pod accepted together
//! (a JSON array of them, in the order they were accepted): librdkafka, the broker and every
//! pod's tail then handle one record where a sale sends hundreds of requests. A record holding a
//! single request as a bare object (what the first layout wrote) is read the same way.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Booking, BookingStatus};

/// Version of the record layout; a worker refuses records it does not know.
pub const RECORD_VERSION: u8 = 1;

/// Namespace of the name-based (v5) booking ids derived from idempotency keys. Fixed forever:
/// changing it would give a retried request a new id.
const IDEMPOTENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_04a7_9f0e_4c55_b1a8_2d7e_31c0_5b9a);

/// One booking request as it travels through Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingRecord {
    pub v: u8,
    pub id: Uuid,
    pub event_id: Uuid,
    pub user_id: String,
    pub quantity: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// When the API accepted it; becomes the booking's `created_at`.
    pub accepted_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record has no payload, or no request in it")]
    Empty,
    #[error("record is not valid JSON of a booking request: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("record version {0} is not supported (this build knows {RECORD_VERSION})")]
    UnknownVersion(u8),
}

/// The booking id of a request. With an idempotency key the id is derived from the key *and* the
/// request it carries (event, user, quantity), so a retry — even one racing the first attempt on
/// another pod, or one sent after the decision — carries the same id and the worker decides it
/// once, with no store read at the door; the same key sent with a different request gets another
/// id, which the worker decides as rejected (`idempotency_key_reused`) and the status then shows.
/// Keys stay unique across events (see the `bookings.idempotency_key` column).
pub fn booking_id(
    idempotency_key: Option<&str>,
    event_id: Uuid,
    user_id: &str,
    quantity: i32,
) -> Uuid {
    let Some(key) = idempotency_key else {
        return Uuid::new_v4();
    };
    // Length-prefixed fields: no two different requests share an encoding.
    let mut name = Vec::with_capacity(key.len() + user_id.len() + 28);
    name.extend_from_slice(&(key.len() as u32).to_be_bytes());
    name.extend_from_slice(key.as_bytes());
    name.extend_from_slice(event_id.as_bytes());
    name.extend_from_slice(&(user_id.len() as u32).to_be_bytes());
    name.extend_from_slice(user_id.as_bytes());
    name.extend_from_slice(&quantity.to_be_bytes());
    Uuid::new_v5(&IDEMPOTENT_ID_NAMESPACE, &name)
}

impl BookingRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a BookingRecord always serializes")
    }

    /// The requests of one record of the topic, in their order: an array of requests, or one
    /// request alone. Every request must be of a known version, and an array not empty.
    pub fn decode(payload: Option<&[u8]>) -> Result<Vec<Self>, RecordError> {
        let payload = payload.ok_or(RecordError::Empty)?;
        let records: Vec<Self> = match payload.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => serde_json::from_slice(payload)?,
            _ => vec![serde_json::from_slice(payload)?],
        };
        if let Some(unknown) = records.iter().find(|r| r.v != RECORD_VERSION) {
            return Err(RecordError::UnknownVersion(unknown.v));
        }
        if records.is_empty() {
            return Err(RecordError::Empty);
        }
        Ok(records)
    }

    /// The payload of one record carrying `encoded` (each one request's `encode`), in order.
    pub fn join(encoded: &[Vec<u8>]) -> Vec<u8> {
        let len = encoded.iter().map(|e| e.len() + 1).sum::<usize>() + 1;
        let mut payload = Vec::with_capacity(len);
        payload.push(b'[');
        for (i, request) in encoded.iter().enumerate() {
            if i > 0 {
                payload.push(b',');
            }
            payload.extend_from_slice(request);
        }
        payload.push(b']');
        payload
    }

    /// The message key: the event id, so the partitioner keeps an event's requests in one
    /// partition and therefore in order.
    pub fn key(&self) -> String {
        self.event_id.to_string()
    }

    /// The booking as it looks while queued.
    pub fn pending_booking(&self, position: Option<i64>) -> Booking {
        Booking {
            id: self.id,
            event_id: self.event_id,
            user_id: self.user_id.clone(),
            quantity: self.quantity,
            status: BookingStatus::Pending,
            reason: None,
            position,
            created_at: self.accepted_at,
        }
    }

    /// Whether `other` asks for the same thing (same key reused for the same request).
    pub fn same_request(&self, event_id: Uuid, user_id: &str, quantity: i32) -> bool {
        self.event_id == event_id && self.user_id == user_id && self.quantity == quantity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> BookingRecord {
        let event_id = Uuid::new_v4();
        BookingRecord {
            v: RECORD_VERSION,
            id: booking_id(Some("k-1"), event_id, "alice", 2),
            event_id,
            user_id: "alice".into(),
            quantity: 2,
            idempotency_key: Some("k-1".into()),
            accepted_at: Utc::now(),
        }
    }

    #[test]
    fn round_trips_alone_and_together() {
        let r = record();
        assert_eq!(
            BookingRecord::decode(Some(&r.encode())).unwrap(),
            std::slice::from_ref(&r)
        );
        let mut second = record();
        second.user_id = "bob".into();
        let together = BookingRecord::join(&[r.encode(), second.encode()]);
        assert_eq!(
            BookingRecord::decode(Some(&together)).unwrap(),
            [r.clone(), second]
        );
        assert_eq!(
            BookingRecord::decode(Some(&BookingRecord::join(&[r.encode()]))).unwrap(),
            [r]
        );
    }

    #[test]
    fn idempotent_ids_are_stable_and_bound_to_the_request() {
        let e = Uuid::nil();
        let id = |key, user, quantity| booking_id(Some(key), e, user, quantity);
        assert_eq!(id("k-1", "alice", 1), id("k-1", "alice", 1));
        assert_ne!(id("k-1", "alice", 1), id("k-2", "alice", 1));
        assert_ne!(
            id("k-1", "alice", 1),
            id("k-1", "bob", 1),
            "another user: another request"
        );
        assert_ne!(
            id("k-1", "alice", 1),
            id("k-1", "alice", 2),
            "another quantity: another request"
        );
        assert_ne!(
            id("k-1", "alice", 1),
            booking_id(Some("k-1"), Uuid::max(), "alice", 1)
        );
        // Field boundaries count: key "ab" + user "c" is not key "a" + user "bc".
        assert_ne!(id("ab", "c", 1), id("a", "bc", 1));
        assert_ne!(
            booking_id(None, e, "alice", 1),
            booking_id(None, e, "alice", 1)
        );
        // Pinned: a change of namespace or encoding would break retries across a deploy.
        assert_eq!(
            id("k-1", "alice", 1).to_string(),
            "754b3219-60b2-5770-997b-afe644618abe"
        );
        assert_eq!(id("k-1", "alice", 1).get_version_num(), 5);
    }

    #[test]
    fn refuses_garbage_and_unknown_versions() {
        assert!(matches!(
            BookingRecord::decode(None),
            Err(RecordError::Empty)
        ));
        assert!(matches!(
            BookingRecord::decode(Some(b"{")),
            Err(RecordError::Malformed(_))
        ));
        assert!(matches!(
            BookingRecord::decode(Some(b" []")),
            Err(RecordError::Empty)
        ));
        let mut r = record();
        r.v = 9;
        assert!(matches!(
            BookingRecord::decode(Some(&r.encode())),
            Err(RecordError::UnknownVersion(9))
        ));
        // One bad request refuses its whole record: it is set aside as one, never half decided.
        let mixed = BookingRecord::join(&[record().encode(), r.encode()]);
        assert!(matches!(
            BookingRecord::decode(Some(&mixed)),
            Err(RecordError::UnknownVersion(9))
        ));
    }

    #[test]
    fn pending_booking_carries_the_request() {
        let r = record();
        let b = r.pending_booking(Some(3));
        assert_eq!(
            (b.id, b.event_id, b.quantity, b.position),
            (r.id, r.event_id, 2, Some(3))
        );
        assert_eq!(b.status, BookingStatus::Pending);
        assert!(r.same_request(r.event_id, "alice", 2));
        assert!(!r.same_request(r.event_id, "alice", 1));
    }
}
