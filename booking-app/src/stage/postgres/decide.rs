//! The decision of one batch of stage postgres, without I/O: given the event's locked row, the
//! holdings of the batch's users and the bookings already made with its idempotency keys, each
//! request is decided in arrival order with the per-booking rule (`refusal`: limit, then stock),
//! counting what earlier requests of the same batch took.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::refusal;
use crate::domain::{Booking, BookingOutcome, BookingRequest, BookingStatus, RejectReason};
use crate::stage::{IdempotencyKey, StageError, idempotency};

/// One booking request as it waits for its event's batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub request: BookingRequest,
    pub key: Option<IdempotencyKey>,
}

/// The event's inventory row, as the batch transaction locked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub remaining: i64,
    pub per_user_limit: Option<i32>,
}

/// What one request is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Confirmed by this batch (201).
    Confirmed(Booking),
    /// Refused by this batch (409).
    Refused {
        reason: RejectReason,
        detail: String,
    },
    /// Its key was used before, in the table or earlier in this batch: the first answer when the
    /// request is the same, 422 otherwise (`idempotency::replay`).
    Replay(Booking),
    /// No such event (404).
    EventNotFound,
}

impl Answer {
    /// The HTTP-facing result for `ask`, a request for `event_id`.
    pub fn into_result(self, event_id: Uuid, ask: &Ask) -> Result<BookingOutcome, StageError> {
        match self {
            Answer::Confirmed(booking) => Ok(BookingOutcome::Confirmed(booking)),
            Answer::Refused { reason, detail } => Err(StageError::Rejected { reason, detail }),
            Answer::Replay(first) => idempotency::replay(first, event_id, &ask.request),
            Answer::EventNotFound => Err(StageError::EventNotFound(event_id)),
        }
    }
}

/// A row this batch writes to `bookings`: every confirmed booking, and a refusal only when it
/// carries a key (so a retry replays it), as the per-booking form stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub booking: Booking,
    pub key: Option<IdempotencyKey>,
}

/// A batch's answers (same order as its requests) and the writes they imply.
#[derive(Debug, Default, PartialEq)]
pub struct Decided {
    pub answers: Vec<Answer>,
    /// Sorted by key (keyless last): every batch inserts keys in the same order, so two batches
    /// that wait on each other's uncommitted keys (a key reused across events at the same
    /// moment) cannot deadlock.
    pub rows: Vec<Row>,
    /// Tickets confirmed per user, one entry each (an upsert may touch a row once per statement).
    pub holdings_added: BTreeMap<String, i32>,
    /// Tickets confirmed in total: what `remaining` goes down by.
    pub sold: i64,
}

/// Decides `asks` in order. `locked` is `None` when the event does not exist; `holdings` holds
/// the tickets the batch's users already hold (read only when the event has a limit); `known` the
/// bookings already made with the batch's keys; `now` is the transaction's timestamp (every row's
/// `created_at`); `new_id` names each new booking.
pub fn decide(
    event_id: Uuid,
    locked: Option<Locked>,
    asks: &[Ask],
    holdings: &HashMap<String, i32>,
    known: &HashMap<String, Booking>,
    now: DateTime<Utc>,
    mut new_id: impl FnMut() -> Uuid,
) -> Decided {
    let mut decided = Decided::default();
    let mut left = locked.map_or(0, |l| l.remaining);
    // Keys first used in this batch: a second request with one gets the first one's answer.
    let mut firsts: HashMap<&str, Booking> = HashMap::new();
    for ask in asks {
        if let Some(first) = ask
            .key
            .as_deref()
            .and_then(|k| known.get(k).or_else(|| firsts.get(k)))
        {
            decided.answers.push(Answer::Replay(first.clone()));
            continue;
        }
        let Some(locked) = locked else {
            decided.answers.push(Answer::EventNotFound);
            continue;
        };
        let request = &ask.request;
        let added = decided
            .holdings_added
            .get(&request.user_id)
            .copied()
            .unwrap_or(0);
        let held = holdings.get(&request.user_id).copied().unwrap_or(0) + added;
        let (booking, answer) = match refusal(left, locked.per_user_limit, held, request.quantity) {
            Some((reason, detail)) => {
                if ask.key.is_none() {
                    // A refusal changes nothing; without a key nothing needs to replay it.
                    decided.answers.push(Answer::Refused { reason, detail });
                    continue;
                }
                let booking = Booking {
                    status: BookingStatus::Rejected,
                    reason: Some(reason),
                    ..Booking::confirmed(new_id(), event_id, request, now)
                };
                (booking, Answer::Refused { reason, detail })
            }
            None => {
                left -= i64::from(request.quantity);
                decided.sold += i64::from(request.quantity);
                *decided
                    .holdings_added
                    .entry(request.user_id.clone())
                    .or_insert(0) += request.quantity;
                let booking = Booking::confirmed(new_id(), event_id, request, now);
                (booking.clone(), Answer::Confirmed(booking))
            }
        };
        if let Some(key) = ask.key.as_deref() {
            firsts.insert(key, booking.clone());
        }
        decided.rows.push(Row {
            booking,
            key: ask.key.clone(),
        });
        decided.answers.push(answer);
    }
    decided
        .rows
        .sort_by(|a, b| (a.key.is_none(), &a.key).cmp(&(b.key.is_none(), &b.key)));
    decided
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(user: &str, quantity: i32, key: Option<&str>) -> Ask {
        Ask {
            request: BookingRequest {
                user_id: user.into(),
                quantity,
            },
            key: key.map(Into::into),
        }
    }

    fn run(
        locked: Option<Locked>,
        asks: &[Ask],
        holdings: &[(&str, i32)],
        known: &[(&str, Booking)],
    ) -> Decided {
        let holdings = holdings
            .iter()
            .map(|(u, q)| ((*u).to_owned(), *q))
            .collect();
        let known = known
            .iter()
            .map(|(k, b)| ((*k).to_owned(), b.clone()))
            .collect();
        decide(
            EVENT,
            locked,
            asks,
            &holdings,
            &known,
            chrono::Utc::now(),
            Uuid::new_v4,
        )
    }

    const EVENT: Uuid = Uuid::from_u128(7);

    fn stock(remaining: i64, per_user_limit: Option<i32>) -> Option<Locked> {
        Some(Locked {
            remaining,
            per_user_limit,
        })
    }

    fn refused(answer: &Answer) -> Option<RejectReason> {
        match answer {
            Answer::Refused { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    #[test]
    fn decides_in_arrival_order_until_sold_out() {
        let asks = [
            ask("a", 2, None),
            ask("b", 2, None),
            ask("c", 2, None),
            ask("d", 1, None),
        ];
        let d = run(stock(5, None), &asks, &[], &[]);
        assert!(
            matches!(d.answers[0], Answer::Confirmed(_))
                && matches!(d.answers[1], Answer::Confirmed(_))
        );
        assert_eq!(
            refused(&d.answers[2]),
            Some(RejectReason::SoldOut),
            "2 asked, 1 left"
        );
        assert!(
            matches!(d.answers[3], Answer::Confirmed(_)),
            "the last ticket still fits a smaller request"
        );
        assert_eq!(d.sold, 5);
        assert_eq!(d.rows.len(), 3, "a keyless refusal is not stored");
        assert_eq!(
            d.holdings_added,
            BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("d".into(), 1)])
        );
    }

    #[test]
    fn per_user_limit_counts_holdings_and_earlier_requests_of_the_batch() {
        let asks = [
            ask("a", 1, None),
            ask("a", 1, None),
            ask("a", 1, None),
            ask("b", 2, None),
            ask("b", 1, None),
        ];
        let d = run(stock(100, Some(2)), &asks, &[("a", 1)], &[]);
        let reasons: Vec<_> = d.answers.iter().map(refused).collect();
        assert_eq!(
            reasons,
            [
                None,
                Some(RejectReason::PerUserLimit),
                Some(RejectReason::PerUserLimit),
                None,
                Some(RejectReason::PerUserLimit)
            ]
        );
        assert_eq!(
            d.holdings_added,
            BTreeMap::from([("a".into(), 1), ("b".into(), 2)])
        );
        assert_eq!(d.sold, 3);
    }

    #[test]
    fn the_limit_is_checked_before_the_stock() {
        let d = run(
            stock(0, Some(1)),
            &[ask("a", 1, None), ask("b", 1, None)],
            &[("a", 1)],
            &[],
        );
        assert_eq!(refused(&d.answers[0]), Some(RejectReason::PerUserLimit));
        assert_eq!(refused(&d.answers[1]), Some(RejectReason::SoldOut));
        assert!(d.rows.is_empty() && d.sold == 0);
    }

    #[test]
    fn a_key_repeated_in_the_batch_gets_the_first_answer() {
        let asks = [
            ask("a", 2, Some("k")),
            ask("a", 2, Some("k")),
            ask("b", 1, Some("k")),
        ];
        let d = run(stock(10, None), &asks, &[], &[]);
        let Answer::Confirmed(first) = &d.answers[0] else {
            panic!("{:?}", d.answers[0])
        };
        assert_eq!(d.answers[1], Answer::Replay(first.clone()));
        assert_eq!(d.answers[2], Answer::Replay(first.clone()));
        assert_eq!(d.rows.len(), 1, "the key is written once");
        assert_eq!(d.sold, 2, "the retry books nothing more");
        // The same request replays the booking; a different one under the key is 422.
        let same = d.answers[1].clone().into_result(EVENT, &asks[1]).unwrap();
        assert_eq!(same, BookingOutcome::Confirmed(first.clone()));
        let other = d.answers[2]
            .clone()
            .into_result(EVENT, &asks[2])
            .unwrap_err();
        assert!(
            matches!(other, StageError::IdempotencyKeyReused),
            "{other:?}"
        );
    }

    #[test]
    fn a_keyed_refusal_is_stored_and_replayed_within_the_batch() {
        let asks = [ask("a", 3, Some("k")), ask("a", 3, Some("k"))];
        let d = run(stock(2, None), &asks, &[], &[]);
        assert_eq!(refused(&d.answers[0]), Some(RejectReason::SoldOut));
        let Answer::Replay(first) = &d.answers[1] else {
            panic!("{:?}", d.answers[1])
        };
        assert_eq!(
            (first.status, first.reason),
            (BookingStatus::Rejected, Some(RejectReason::SoldOut))
        );
        assert_eq!(d.rows.len(), 1);
        assert_eq!(d.rows[0].booking, *first);
        let again = d.answers[1]
            .clone()
            .into_result(EVENT, &asks[1])
            .unwrap_err();
        assert!(
            matches!(
                again,
                StageError::Rejected {
                    reason: RejectReason::SoldOut,
                    ..
                }
            ),
            "{again:?}"
        );
    }

    #[test]
    fn keys_already_in_the_table_replay_without_booking() {
        let earlier = run(stock(10, None), &[ask("a", 1, Some("k"))], &[], &[]);
        let stored = earlier.rows[0].booking.clone();
        let d = run(
            stock(9, None),
            &[ask("a", 1, Some("k")), ask("b", 1, Some("k2"))],
            &[],
            &[("k", stored.clone())],
        );
        assert_eq!(d.answers[0], Answer::Replay(stored));
        assert!(matches!(d.answers[1], Answer::Confirmed(_)));
        assert_eq!(d.sold, 1);
        assert_eq!(d.rows.len(), 1);
    }

    #[test]
    fn an_unknown_event_books_nothing_but_still_replays_known_keys() {
        let mut stored = run(stock(1, None), &[ask("a", 1, Some("k"))], &[], &[]).rows[0]
            .booking
            .clone();
        stored.event_id = Uuid::from_u128(8);
        let d = run(
            None,
            &[ask("a", 1, None), ask("a", 1, Some("k"))],
            &[],
            &[("k", stored)],
        );
        assert_eq!(d.answers[0], Answer::EventNotFound);
        let reused = d.answers[1]
            .clone()
            .into_result(EVENT, &ask("a", 1, Some("k")))
            .unwrap_err();
        assert!(
            matches!(reused, StageError::IdempotencyKeyReused),
            "the key belongs to another event: {reused:?}"
        );
        assert!(d.rows.is_empty() && d.sold == 0);
    }

    #[test]
    fn rows_are_written_in_key_order() {
        let asks = [
            ask("a", 1, None),
            ask("b", 1, Some("z")),
            ask("c", 1, Some("m")),
            ask("d", 1, None),
        ];
        let d = run(stock(10, None), &asks, &[], &[]);
        let keys: Vec<_> = d.rows.iter().map(|r| r.key.as_deref()).collect();
        assert_eq!(keys, [Some("m"), Some("z"), None, None]);
        assert!(d.rows.iter().all(|r| r.booking.event_id == EVENT));
    }
}
