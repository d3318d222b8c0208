//! The one place request values are checked, before any stage sees them: the HTTP layer calls
//! these, and a stage or worker that receives requests another way (a Kafka record) can too.

use crate::domain::{BookingRequest, MAX_QUANTITY, MAX_TICKETS, MAX_USER_ID_LEN, NewEvent};

/// Longest accepted `Idempotency-Key` header, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;
/// Longest accepted event name, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 200;

/// A request value outside what the API accepts (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ValidationError {
    ValidationError {
        field,
        problem: problem.into(),
    }
}

pub fn validate_new_event(new: &NewEvent) -> Result<(), ValidationError> {
    if new.name.trim().is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if new.name.len() > MAX_EVENT_NAME_LEN {
        return Err(invalid(
            "name",
            format!("must be at most {MAX_EVENT_NAME_LEN} bytes"),
        ));
    }
    if !(0..=MAX_TICKETS).contains(&new.tickets) {
        return Err(invalid(
            "tickets",
            format!("must be between 0 and {MAX_TICKETS}"),
        ));
    }
    if let Some(limit) = new.per_user_limit
        && limit < 1
    {
        return Err(invalid(
            "per_user_limit",
            "must be at least 1 (omit it for no limit)",
        ));
    }
    Ok(())
}

pub fn validate_booking_request(request: &BookingRequest) -> Result<(), ValidationError> {
    validate_user_id(&request.user_id)?;
    if !(1..=MAX_QUANTITY).contains(&request.quantity) {
        return Err(invalid(
            "quantity",
            format!("must be between 1 and {MAX_QUANTITY}"),
        ));
    }
    Ok(())
}

/// A user id (a token's `sub`, or a body's `user_id` when auth is disabled).
pub fn validate_user_id(user_id: &str) -> Result<(), ValidationError> {
    if user_id.trim().is_empty() {
        return Err(invalid("user_id", "must not be empty"));
    }
    if user_id.len() > MAX_USER_ID_LEN {
        return Err(invalid(
            "user_id",
            format!("must be at most {MAX_USER_ID_LEN} bytes"),
        ));
    }
    if user_id.chars().any(char::is_control) {
        return Err(invalid("user_id", "must not contain control characters"));
    }
    Ok(())
}

/// Idempotency keys are opaque, but bounded and printable so they can be logged and stored as-is.
pub fn validate_idempotency_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(invalid(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "Idempotency-Key",
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn booking(user_id: &str, quantity: i32) -> BookingRequest {
        BookingRequest {
            user_id: user_id.into(),
            quantity,
        }
    }

    fn event(name: &str, tickets: i64, per_user_limit: Option<i32>) -> NewEvent {
        NewEvent {
            name: name.into(),
            tickets,
            per_user_limit,
        }
    }

    #[test]
    fn booking_quantity_bounds() {
        assert!(validate_booking_request(&booking("u", 1)).is_ok());
        assert!(validate_booking_request(&booking("u", MAX_QUANTITY)).is_ok());
        for bad in [0, -1, MAX_QUANTITY + 1, i32::MAX, i32::MIN] {
            let err = validate_booking_request(&booking("u", bad)).unwrap_err();
            assert_eq!(err.field, "quantity", "{bad}");
        }
    }

    #[test]
    fn booking_user_id_bounds() {
        assert!(validate_booking_request(&booking(&"u".repeat(MAX_USER_ID_LEN), 1)).is_ok());
        for bad in [
            "".to_owned(),
            "   ".to_owned(),
            "u".repeat(MAX_USER_ID_LEN + 1),
            "a\nb".to_owned(),
        ] {
            let err = validate_booking_request(&booking(&bad, 1)).unwrap_err();
            assert_eq!(err.field, "user_id", "{bad:?}");
        }
    }

    #[test]
    fn event_bounds() {
        assert!(validate_new_event(&event("Tour", 0, None)).is_ok());
        assert!(validate_new_event(&event("Tour", MAX_TICKETS, Some(1))).is_ok());
        assert_eq!(
            validate_new_event(&event("", 1, None)).unwrap_err().field,
            "name"
        );
        assert_eq!(
            validate_new_event(&event("Tour", -1, None))
                .unwrap_err()
                .field,
            "tickets"
        );
        assert_eq!(
            validate_new_event(&event("Tour", MAX_TICKETS + 1, None))
                .unwrap_err()
                .field,
            "tickets"
        );
        assert_eq!(
            validate_new_event(&event("Tour", 1, Some(0)))
                .unwrap_err()
                .field,
            "per_user_limit"
        );
    }

    #[test]
    fn idempotency_key_bounds() {
        assert!(validate_idempotency_key("order-42_retry.1").is_ok());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key("has space").is_err());
        assert!(validate_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1)).is_err());
    }
}
