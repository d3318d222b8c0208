//! The decision rule of a batch, without I/O: given the locked inventory rows, the users'
//! holdings and which requests were already decided, decide each request in offset order with
//! the same rule as stage postgres (limit first, then stock).

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::domain::RejectReason;
use crate::stage::kafka::record::BookingRecord;
use crate::stage::postgres::refusal;

/// An event's inventory row as the batch transaction locked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inventory {
    pub remaining: i64,
    pub per_user_limit: Option<i32>,
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Confirmed,
    Rejected(RejectReason),
    /// Already decided (a redelivered record, or a retry carrying the same idempotency key):
    /// changes nothing.
    Duplicate,
    /// The event does not exist: the API checks this, so only a foreign record gets here.
    UnknownEvent,
    /// The record's values are outside what the API accepts (a record nobody's API produced),
    /// naming the first field at fault: dead-lettered and counted, so it can never stop the queue.
    Invalid(&'static str),
}

impl Verdict {
    /// Label of `booking_kafka_decisions_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            Verdict::Confirmed => "confirmed",
            Verdict::Rejected(reason) => reason.as_str(),
            Verdict::Duplicate => "duplicate",
            Verdict::UnknownEvent => "unknown_event",
            Verdict::Invalid(_) => "invalid",
        }
    }

    /// Whether a booking row is written for it.
    pub fn is_decision(self) -> bool {
        matches!(self, Verdict::Confirmed | Verdict::Rejected(_))
    }
}

/// The batch's verdicts (same order as the requests) and the writes they imply.
#[derive(Debug, Default, PartialEq)]
pub struct Decided {
    pub verdicts: Vec<Verdict>,
    /// New `remaining` of every event that sold tickets in this batch.
    pub remaining: HashMap<Uuid, i64>,
    /// Tickets confirmed per (event, user) in this batch, to add to `holdings`.
    pub holdings_added: HashMap<(Uuid, String), i32>,
}

/// Decides `requests` in order. `known_ids` holds the ids already in the bookings table,
/// `known_keys` the idempotency keys there with the id of the booking each was first used for;
/// `holdings` the tickets users already hold.
pub fn decide(
    requests: &[BookingRecord],
    events: &HashMap<Uuid, Inventory>,
    holdings: &HashMap<(Uuid, String), i32>,
    known_ids: &HashSet<Uuid>,
    known_keys: &HashMap<String, Uuid>,
) -> Decided {
    let mut decided = Decided::default();
    let mut remaining: HashMap<Uuid, i64> = HashMap::new();
    let mut seen_ids: HashSet<Uuid> = HashSet::new();
    let mut seen_keys: HashMap<&str, Uuid> = HashMap::new();
    for request in requests {
        // The id is derived from the key and the request (`booking_id`): the same id is the same
        // request again; the same key under another id is the key reused for another request.
        let duplicate = known_ids.contains(&request.id) || !seen_ids.insert(request.id);
        let reused = request.idempotency_key.as_deref().is_some_and(|k| {
            let first = known_keys.get(k).or_else(|| seen_keys.get(k)).copied();
            first.is_some_and(|first| first != request.id)
        });
        let verdict = if duplicate {
            Verdict::Duplicate
        } else if let Err(field) = check(request) {
            Verdict::Invalid(field)
        } else if reused {
            Verdict::Rejected(RejectReason::IdempotencyKeyReused)
        } else if let Some(event) = events.get(&request.event_id) {
            let left = remaining.entry(request.event_id).or_insert(event.remaining);
            let key = (request.event_id, request.user_id.clone());
            let held = holdings.get(&key).copied().unwrap_or(0)
                + decided.holdings_added.get(&key).copied().unwrap_or(0);
            match refusal(*left, event.per_user_limit, held, request.quantity) {
                Some((reason, _)) => Verdict::Rejected(reason),
                None => {
                    *left -= i64::from(request.quantity);
                    *decided.holdings_added.entry(key).or_insert(0) += request.quantity;
                    Verdict::Confirmed
                }
            }
        } else {
            Verdict::UnknownEvent
        };
        if verdict.is_decision()
            && let Some(key) = request.idempotency_key.as_deref()
        {
            seen_keys.entry(key).or_insert(request.id);
        }
        decided.verdicts.push(verdict);
    }
    decided.remaining = remaining
        .into_iter()
        .filter(|(event, left)| events.get(event).is_some_and(|e| e.remaining != *left))
        .collect();
    decided
}

/// The checks the API makes before producing (`validation`), made again on what was read: the
/// topic is writable by more than our API. The error is the field at fault.
pub fn check(request: &BookingRecord) -> Result<(), &'static str> {
    use crate::validation::{validate_idempotency_key, validate_quantity, validate_user_id};
    validate_user_id(&request.user_id).map_err(|e| e.field)?;
    validate_quantity(request.quantity).map_err(|e| e.field)?;
    if let Some(key) = request.idempotency_key.as_deref() {
        validate_idempotency_key(key).map_err(|e| e.field)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::kafka::record::{RECORD_VERSION, booking_id};

    fn request(event: Uuid, user: &str, quantity: i32, key: Option<&str>) -> BookingRecord {
        BookingRecord {
            v: RECORD_VERSION,
            id: booking_id(key, event, user, quantity),
            event_id: event,
            user_id: user.into(),
            quantity,
            idempotency_key: key.map(Into::into),
            accepted_at: chrono::Utc::now(),
        }
    }

    fn events(list: &[(Uuid, i64, Option<i32>)]) -> HashMap<Uuid, Inventory> {
        list.iter()
            .map(|&(id, remaining, per_user_limit)| {
                (
                    id,
                    Inventory {
                        remaining,
                        per_user_limit,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn decides_in_order_until_sold_out() {
        let e = Uuid::new_v4();
        let requests = [
            request(e, "a", 2, None),
            request(e, "b", 2, None),
            request(e, "c", 1, None),
            request(e, "d", 1, None),
        ];
        let d = decide(
            &requests,
            &events(&[(e, 5, None)]),
            &HashMap::new(),
            &HashSet::new(),
            &HashMap::new(),
        );
        assert_eq!(
            d.verdicts,
            [
                Verdict::Confirmed,
                Verdict::Confirmed,
                Verdict::Confirmed,
                Verdict::Rejected(RejectReason::SoldOut)
            ]
        );
        assert_eq!(d.remaining[&e], 0);
        assert_eq!(d.holdings_added.values().sum::<i32>(), 5);
    }

    #[test]
    fn a_smaller_request_still_fits_after_a_bigger_one_is_refused() {
        let e = Uuid::new_v4();
        let requests = [request(e, "a", 3, None), request(e, "b", 1, None)];
        let d = decide(
            &requests,
            &events(&[(e, 2, None)]),
            &HashMap::new(),
            &HashSet::new(),
            &HashMap::new(),
        );
        assert_eq!(
            d.verdicts,
            [Verdict::Rejected(RejectReason::SoldOut), Verdict::Confirmed]
        );
        assert_eq!(d.remaining[&e], 1);
    }

    #[test]
    fn per_user_limit_counts_earlier_holdings_and_this_batch() {
        let e = Uuid::new_v4();
        let holdings = HashMap::from([((e, "a".to_owned()), 1)]);
        let requests = [
            request(e, "a", 1, None),
            request(e, "a", 1, None),
            request(e, "b", 2, None),
        ];
        let d = decide(
            &requests,
            &events(&[(e, 100, Some(2))]),
            &holdings,
            &HashSet::new(),
            &HashMap::new(),
        );
        assert_eq!(
            d.verdicts,
            [
                Verdict::Confirmed,
                Verdict::Rejected(RejectReason::PerUserLimit),
                Verdict::Confirmed
            ]
        );
        assert_eq!(d.holdings_added[&(e, "a".to_owned())], 1);
        assert_eq!(d.remaining[&e], 97);
    }

    #[test]
    fn redelivered_and_retried_requests_change_nothing() {
        let e = Uuid::new_v4();
        let first = request(e, "a", 1, Some("k1"));
        let retry = first.clone();
        let decided_before = request(e, "b", 1, None);
        let retried_after_its_decision = request(e, "c", 1, Some("k2"));
        let requests = [
            first,
            retry,
            decided_before.clone(),
            retried_after_its_decision.clone(),
        ];
        let d = decide(
            &requests,
            &events(&[(e, 10, None)]),
            &HashMap::new(),
            &HashSet::from([decided_before.id, retried_after_its_decision.id]),
            &HashMap::from([("k2".to_owned(), retried_after_its_decision.id)]),
        );
        assert_eq!(
            d.verdicts,
            [
                Verdict::Confirmed,
                Verdict::Duplicate,
                Verdict::Duplicate,
                Verdict::Duplicate
            ]
        );
        assert_eq!(d.remaining[&e], 9);
    }

    #[test]
    fn a_key_reused_for_another_request_is_rejected_and_takes_nothing() {
        let e = Uuid::new_v4();
        let earlier = request(e, "a", 1, Some("k1"));
        let reused_later = request(e, "a", 2, Some("k1"));
        let in_batch_first = request(e, "b", 1, Some("k2"));
        let in_batch_reused = request(e, "c", 1, Some("k2"));
        let requests = [reused_later, in_batch_first, in_batch_reused];
        let d = decide(
            &requests,
            &events(&[(e, 10, None)]),
            &HashMap::new(),
            &HashSet::from([earlier.id]),
            &HashMap::from([("k1".to_owned(), earlier.id)]),
        );
        let reused = Verdict::Rejected(RejectReason::IdempotencyKeyReused);
        assert_eq!(d.verdicts, [reused, Verdict::Confirmed, reused]);
        assert_eq!(d.remaining[&e], 9);
        assert!(
            reused.is_decision(),
            "the refusal is stored so the status shows it"
        );
    }

    #[test]
    fn records_the_api_would_refuse_are_skipped() {
        let e = Uuid::new_v4();
        let mut zero = request(e, "a", 1, None);
        zero.quantity = 0;
        let mut nobody = request(e, "a", 1, None);
        nobody.user_id = String::new();
        let fine = request(e, "b", 1, None);
        let d = decide(
            &[zero, nobody, fine],
            &events(&[(e, 10, None)]),
            &HashMap::new(),
            &HashSet::new(),
            &HashMap::new(),
        );
        assert_eq!(
            d.verdicts,
            [
                Verdict::Invalid("quantity"),
                Verdict::Invalid("user_id"),
                Verdict::Confirmed
            ]
        );
        assert!(!Verdict::Invalid("quantity").is_decision());
    }

    #[test]
    fn unknown_events_and_untouched_inventory() {
        let (e, other) = (Uuid::new_v4(), Uuid::new_v4());
        let requests = [request(other, "a", 1, None), request(e, "a", 5, None)];
        let d = decide(
            &requests,
            &events(&[(e, 1, None)]),
            &HashMap::new(),
            &HashSet::new(),
            &HashMap::new(),
        );
        assert_eq!(
            d.verdicts,
            [
                Verdict::UnknownEvent,
                Verdict::Rejected(RejectReason::SoldOut)
            ]
        );
        assert!(d.remaining.is_empty(), "nothing sold: no inventory write");
        assert!(
            Verdict::Rejected(RejectReason::SoldOut).is_decision()
                && !Verdict::Duplicate.is_decision()
        );
        assert_eq!(
            Verdict::Rejected(RejectReason::PerUserLimit).outcome(),
            "per_user_limit"
        );
    }
}
