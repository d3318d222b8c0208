//! What a repeated `Idempotency-Key` gets: the first answer when the request is the same one,
//! `IdempotencyKeyReused` (422) when the key comes back with a different request. Shared by every
//! stage so replays answer alike. A key belongs to its user: the HTTP layer hands the stages
//! `scoped(user, key)`, never the header itself.

use uuid::Uuid;

use super::{IdempotencyKey, StageError};
use crate::domain::{Booking, BookingOutcome, BookingRequest, BookingStatus, RejectReason};

/// Namespace of the scoped keys (UUID v5); fixed, so every pod and release scopes alike.
const SCOPE: Uuid = uuid::uuid!("3b0f6f4e-7c2a-4d8e-9a51-6f1e2d3c4b5a");

/// The key the stages store for `user_id`'s `Idempotency-Key` header: the same header from two
/// users is two requests, and no user can take another's key first. A UUID v5 of the user and
/// the key (a user id holds no NUL, so the separator is unambiguous): 36 printable bytes, within
/// every limit a stored key has, and opaque, so keys never tell one user's requests to another.
pub fn scoped(user_id: &str, key: &str) -> IdempotencyKey {
    let mut name = Vec::with_capacity(user_id.len() + 1 + key.len());
    name.extend_from_slice(user_id.as_bytes());
    name.push(0);
    name.extend_from_slice(key.as_bytes());
    Uuid::new_v5(&SCOPE, &name).to_string()
}

/// True when `first` was made by the same request (the key is global, so the event counts too).
pub fn same_request(first: &Booking, event_id: Uuid, request: &BookingRequest) -> bool {
    first.event_id == event_id
        && first.user_id == request.user_id
        && first.quantity == request.quantity
}

/// The answer to a request whose key was first used for `first`.
pub fn replay(
    first: Booking,
    event_id: Uuid,
    request: &BookingRequest,
) -> Result<BookingOutcome, StageError> {
    if !same_request(&first, event_id, request) {
        return Err(StageError::IdempotencyKeyReused);
    }
    match first.status {
        BookingStatus::Confirmed => Ok(BookingOutcome::Confirmed(first)),
        BookingStatus::Pending => Ok(BookingOutcome::Pending(first)),
        BookingStatus::Rejected => Err(StageError::Rejected {
            reason: first.reason.unwrap_or(RejectReason::SoldOut),
            detail: format!("booking {} was refused (replayed answer)", first.id),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_scoped_to_its_user() {
        assert_eq!(scoped("alice", "k1"), scoped("alice", "k1"));
        assert_ne!(scoped("alice", "k1"), scoped("bob", "k1"));
        assert_ne!(scoped("alice", "k1"), scoped("alice", "k2"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(scoped("ab", "c"), scoped("a", "bc"));
        let key = scoped("alice", "k1");
        assert_eq!(key.len(), 36);
        assert!(crate::validation::validate_idempotency_key(&key).is_ok());
    }

    fn booking(status: BookingStatus, reason: Option<RejectReason>) -> Booking {
        Booking {
            id: Uuid::new_v4(),
            event_id: Uuid::nil(),
            user_id: "alice".into(),
            quantity: 2,
            status,
            reason,
            position: None,
            created_at: chrono::Utc::now(),
        }
    }

    fn request(user_id: &str, quantity: i32) -> BookingRequest {
        BookingRequest {
            user_id: user_id.into(),
            quantity,
        }
    }

    #[test]
    fn same_request_gets_the_first_answer() {
        let first = booking(BookingStatus::Confirmed, None);
        let outcome = replay(first.clone(), Uuid::nil(), &request("alice", 2)).unwrap();
        assert_eq!(outcome, BookingOutcome::Confirmed(first));
    }

    #[test]
    fn first_refusal_is_replayed_as_refusal() {
        let first = booking(BookingStatus::Rejected, Some(RejectReason::PerUserLimit));
        let err = replay(first, Uuid::nil(), &request("alice", 2)).unwrap_err();
        assert!(matches!(
            err,
            StageError::Rejected {
                reason: RejectReason::PerUserLimit,
                ..
            }
        ));
    }

    #[test]
    fn different_request_is_refused() {
        for (event, user, quantity) in [
            (Uuid::nil(), "bob", 2),
            (Uuid::nil(), "alice", 3),
            (Uuid::new_v4(), "alice", 2),
        ] {
            let err = replay(
                booking(BookingStatus::Confirmed, None),
                event,
                &request(user, quantity),
            )
            .unwrap_err();
            assert!(matches!(err, StageError::IdempotencyKeyReused));
        }
    }
}
