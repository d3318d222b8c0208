//! The one place request values are checked, before any stage sees them: `Inventory::book`
//! checks every booking request (`stage::CheckedBooking`), the HTTP layer its headers and new
//! events, and the stage kafka worker each record it reads.

use crate::domain::{BookingRequest, MAX_QUANTITY, MAX_TICKETS, MAX_USER_ID_LEN, NewEvent};
pub use crate::domain::{MAX_EVENT_NAME_LEN, TEXT_PATTERN};

/// Longest accepted `Idempotency-Key` header, in bytes (it is printable ASCII).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;
/// What `validate_idempotency_key` accepts, for the OpenAPI document.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]+$";

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
    validate_text("name", &new.name, MAX_EVENT_NAME_LEN)?;
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
    validate_quantity(request.quantity)
}

pub fn validate_quantity(quantity: i32) -> Result<(), ValidationError> {
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(invalid(
            "quantity",
            format!("must be between 1 and {MAX_QUANTITY}"),
        ));
    }
    Ok(())
}

/// A user id (a token's `sub`, or a body's `user_id` when auth is disabled).
pub fn validate_user_id(user_id: &str) -> Result<(), ValidationError> {
    validate_text("user_id", user_id, MAX_USER_ID_LEN)
}

/// A text field as `TEXT_PATTERN` and `max_chars` describe it. Lengths are in characters (Unicode
/// scalar values), as JSON Schema's `maxLength` counts them.
fn validate_text(
    field: &'static str,
    value: &str,
    max_chars: usize,
) -> Result<(), ValidationError> {
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty or only white space"));
    }
    if value.chars().count() > max_chars {
        return Err(invalid(
            field,
            format!("must be at most {max_chars} characters"),
        ));
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
            "nul\0".to_owned(),
            "\u{85}".to_owned(),
        ] {
            let err = validate_booking_request(&booking(&bad, 1)).unwrap_err();
            assert_eq!(err.field, "user_id", "{bad:?}");
        }
    }

    #[test]
    fn lengths_are_in_characters() {
        let wide = "\u{e9}".repeat(MAX_USER_ID_LEN);
        assert!(validate_booking_request(&booking(&wide, 1)).is_ok());
        let name = "\u{1f3ab}".repeat(MAX_EVENT_NAME_LEN + 1);
        assert_eq!(
            validate_new_event(&event(&name, 1, None))
                .unwrap_err()
                .field,
            "name"
        );
    }

    #[test]
    fn event_name_refuses_control_characters() {
        for bad in ["d\0", "tab\there", "\u{7f}", "\u{9f}x"] {
            assert_eq!(
                validate_new_event(&event(bad, 5, None)).unwrap_err().field,
                "name",
                "{bad:?}"
            );
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

    /// The document's pattern and the validation agree, so a fuzzer trusting the document finds
    /// no value one accepts and the other refuses.
    #[test]
    fn text_pattern_matches_validation() {
        let pattern = regex::Regex::new(TEXT_PATTERN).unwrap();
        for sample in [
            "alice",
            " a ",
            "\u{a0}x",
            "\u{3000}",
            " ",
            "",
            "a\0",
            "a\n",
            "\t",
            "\u{7f}",
            "\u{9f}",
            "\u{a0}",
            "\u{2028}",
            "\u{1f3ab}",
            "x\u{85}",
            "\u{200b}",
            "caf\u{e9}",
        ] {
            assert_eq!(
                pattern.is_match(sample),
                validate_text("f", sample, 10).is_ok(),
                "{sample:?}"
            );
        }
        let key = regex::Regex::new(IDEMPOTENCY_KEY_PATTERN).unwrap();
        for sample in ["k-1", "a b", "", "\u{e9}", "~!"] {
            assert_eq!(
                key.is_match(sample),
                validate_idempotency_key(sample).is_ok(),
                "{sample:?}"
            );
        }
    }

    #[test]
    fn idempotency_key_bounds() {
        assert!(validate_idempotency_key("order-42_retry.1").is_ok());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key("has space").is_err());
        assert!(validate_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1)).is_err());
    }
}
