//! The sale's invariants, checked after a run: nothing oversold, `remaining` equal to what the
//! answers loadgen saw imply, no user above the per-user limit, every pending booking decided.
//! `Ledger` collects what loadgen saw; `check` is the pure judgement; `settle.rs` does the I/O.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use super::client::Answer;

/// One booking attempt as loadgen generated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Position in the run's request sequence (also makes the idempotency key).
    pub index: u64,
    pub user: u32,
    pub quantity: i32,
}

/// A 202 answer still to be followed to its decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingBooking {
    pub id: uuid::Uuid,
    pub attempt: Attempt,
}

/// Everything loadgen learned about the bookings it made, warm-up included (tickets sold in
/// warm-up are sold all the same).
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub confirmed_quantity: i64,
    pub confirmed_bookings: u64,
    pub rejected_bookings: u64,
    /// Confirmed quantity per user index.
    pub per_user: HashMap<u32, i64>,
    pub pending: Vec<PendingBooking>,
    /// Attempts with no usable answer: they may have booked. Replayed with their idempotency key.
    pub uncertain: Vec<Attempt>,
}

impl Ledger {
    pub fn note(&mut self, attempt: Attempt, answer: &Answer) {
        match answer {
            Answer::Confirmed => self.confirm(attempt),
            Answer::Pending(id) => self.pending.push(PendingBooking { id: *id, attempt }),
            Answer::Refused(_) => self.rejected_bookings += 1,
            other if other.outcome_unknown() => self.uncertain.push(attempt),
            // A 4xx validation refusal booked nothing.
            _ => {}
        }
    }

    pub fn confirm(&mut self, attempt: Attempt) {
        self.confirmed_quantity += i64::from(attempt.quantity);
        self.confirmed_bookings += 1;
        *self.per_user.entry(attempt.user).or_default() += i64::from(attempt.quantity);
    }

    pub fn merge(&mut self, other: Ledger) {
        self.confirmed_quantity += other.confirmed_quantity;
        self.confirmed_bookings += other.confirmed_bookings;
        self.rejected_bookings += other.rejected_bookings;
        for (user, quantity) in other.per_user {
            *self.per_user.entry(user).or_default() += quantity;
        }
        self.pending.extend(other.pending);
        self.uncertain.extend(other.uncertain);
    }

    /// The user holding the most tickets, from loadgen's answers alone.
    pub fn top_user(&self) -> Option<(u32, i64)> {
        self.per_user
            .iter()
            .map(|(u, q)| (*u, *q))
            .max_by_key(|(u, q)| (*q, std::cmp::Reverse(*u)))
    }
}

/// Everything `check` judges, gathered after the run has settled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observed {
    pub tickets: i64,
    /// `remaining` before the run (equals `tickets` for an event loadgen created).
    pub remaining_before: i64,
    /// `remaining` as `GET /events/{id}` reports it after the run.
    pub remaining_after: i64,
    pub per_user_limit: Option<i32>,
    /// Tickets in bookings loadgen saw confirmed (201, or 202 later confirmed).
    pub confirmed_quantity: i64,
    /// Tickets in attempts whose outcome stayed unknown: each may or may not have been booked.
    pub unknown_quantity: i64,
    /// The user holding the most tickets (index, quantity), from loadgen's answers.
    pub top_user: Option<(u32, i64)>,
    /// Pending bookings still pending when the bounded wait ran out.
    pub pending_unresolved: u64,
    /// Pending bookings that `GET /bookings/{id}` never found.
    pub pending_missing: u64,
}

impl Observed {
    /// Tickets sold as the store sees them, or as the answers prove, whichever is more: either
    /// above `tickets` is overselling.
    pub fn sold(&self) -> i64 {
        let by_store = self.tickets - self.remaining_after;
        let by_answers = self.confirmed_quantity + (self.tickets - self.remaining_before);
        by_store.max(by_answers)
    }

    pub fn oversold(&self) -> i64 {
        (self.sold() - self.tickets).max(0)
    }
}

/// A broken invariant, with the numbers that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    Oversold {
        tickets: i64,
        sold: i64,
    },
    RemainingMismatch {
        expected_min: i64,
        expected_max: i64,
        actual: i64,
    },
    PerUserLimitExceeded {
        user: u32,
        held: i64,
        limit: i32,
    },
    PendingUnresolved {
        count: u64,
    },
    PendingMissing {
        count: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Oversold { tickets, sold } => {
                write!(f, "oversold: {sold} tickets sold of {tickets}")
            }
            Violation::RemainingMismatch {
                expected_min,
                expected_max,
                actual,
            } if expected_min == expected_max => {
                write!(
                    f,
                    "remaining is {actual}, the confirmed answers imply {expected_max}"
                )
            }
            Violation::RemainingMismatch {
                expected_min,
                expected_max,
                actual,
            } => write!(
                f,
                "remaining is {actual}, the answers imply between {expected_min} and {expected_max}"
            ),
            Violation::PerUserLimitExceeded { user, held, limit } => {
                write!(
                    f,
                    "user-{user} holds {held} tickets, above the per-user limit {limit}"
                )
            }
            Violation::PendingUnresolved { count } => {
                write!(
                    f,
                    "{count} pending bookings were still pending when the wait ran out"
                )
            }
            Violation::PendingMissing { count } => {
                write!(f, "{count} bookings answered 202 pending cannot be found")
            }
        }
    }
}

/// Judges the settled state. Empty means every invariant holds.
pub fn check(o: &Observed) -> Vec<Violation> {
    let mut violations = Vec::new();
    let sold = o.sold();
    if o.remaining_after < 0 || sold > o.tickets {
        violations.push(Violation::Oversold {
            tickets: o.tickets,
            sold,
        });
    }
    let expected_max = o.remaining_before - o.confirmed_quantity;
    let expected_min = expected_max - o.unknown_quantity;
    if o.remaining_after < expected_min || o.remaining_after > expected_max {
        violations.push(Violation::RemainingMismatch {
            expected_min,
            expected_max,
            actual: o.remaining_after,
        });
    }
    if let (Some(limit), Some((user, held))) = (o.per_user_limit, o.top_user)
        && held > i64::from(limit)
    {
        violations.push(Violation::PerUserLimitExceeded { user, held, limit });
    }
    if o.pending_unresolved > 0 {
        violations.push(Violation::PendingUnresolved {
            count: o.pending_unresolved,
        });
    }
    if o.pending_missing > 0 {
        violations.push(Violation::PendingMissing {
            count: o.pending_missing,
        });
    }
    violations
}

/// The invariant section of loadgen's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvariantReport {
    pub event_id: uuid::Uuid,
    #[serde(flatten)]
    pub observed: Observed,
    /// Tickets sold beyond `tickets` (0 when the invariants hold).
    pub oversold: i64,
    pub confirmed_bookings: u64,
    pub rejected_bookings: u64,
    pub pending_total: u64,
    /// Stage kafka: pending bookings decided per second, from the first 202 to the last decision
    /// seen. A lower bound when the worker finished before loadgen started polling.
    pub drain_rps: Option<f64>,
    pub violations: Vec<Violation>,
    pub ok: bool,
}

impl fmt::Display for InvariantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.observed;
        writeln!(f, "event       {}", self.event_id)?;
        writeln!(
            f,
            "sold        {} of {} tickets ({} bookings confirmed, {} refused), remaining {}",
            o.confirmed_quantity,
            o.tickets,
            self.confirmed_bookings,
            self.rejected_bookings,
            o.remaining_after
        )?;
        if self.pending_total > 0 {
            write!(
                f,
                "pending     {} answered 202, {} unresolved",
                self.pending_total, o.pending_unresolved
            )?;
            match self.drain_rps {
                Some(rps) => writeln!(f, ", drained at {rps:.1} decisions/s")?,
                None => writeln!(f)?,
            }
        }
        if o.unknown_quantity > 0 {
            writeln!(
                f,
                "unknown     {} tickets in attempts with no answer",
                o.unknown_quantity
            )?;
        }
        if self.ok {
            writeln!(f, "invariants  ok (oversold = {})", o.oversold())
        } else {
            writeln!(f, "invariants  VIOLATED")?;
            for v in &self.violations {
                writeln!(f, "  - {v}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::client::Refusal;

    fn attempt(index: u64, user: u32, quantity: i32) -> Attempt {
        Attempt {
            index,
            user,
            quantity,
        }
    }

    fn consistent() -> Observed {
        Observed {
            tickets: 100,
            remaining_before: 100,
            remaining_after: 40,
            per_user_limit: Some(4),
            confirmed_quantity: 60,
            unknown_quantity: 0,
            top_user: Some((7, 4)),
            pending_unresolved: 0,
            pending_missing: 0,
        }
    }

    #[test]
    fn a_consistent_sale_passes() {
        assert_eq!(check(&consistent()), vec![]);
        let sold_out = Observed {
            remaining_after: 0,
            confirmed_quantity: 100,
            ..consistent()
        };
        assert_eq!(check(&sold_out), vec![]);
    }

    #[test]
    fn a_fabricated_oversold_state_is_flagged() {
        // The store says -3 left and the answers confirmed 103 of 100 tickets.
        let oversold = Observed {
            remaining_after: -3,
            confirmed_quantity: 103,
            ..consistent()
        };
        let violations = check(&oversold);
        assert_eq!(
            violations,
            vec![Violation::Oversold {
                tickets: 100,
                sold: 103
            }]
        );
        // Oversold by confirmations alone, while the store's counter looks fine (lost decrement).
        let lost_update = Observed {
            remaining_after: 0,
            confirmed_quantity: 103,
            ..consistent()
        };
        let violations = check(&lost_update);
        assert!(
            violations.contains(&Violation::Oversold {
                tickets: 100,
                sold: 103
            }),
            "{violations:?}"
        );
        assert!(
            violations
                .iter()
                .any(|v| matches!(v, Violation::RemainingMismatch { .. }))
        );
    }

    #[test]
    fn remaining_must_match_the_confirmed_answers() {
        // A confirmed booking that the store forgot (remaining too high).
        let forgot = Observed {
            remaining_after: 42,
            ..consistent()
        };
        assert_eq!(
            check(&forgot),
            vec![Violation::RemainingMismatch {
                expected_min: 40,
                expected_max: 40,
                actual: 42
            }]
        );
        // Unknown outcomes widen the accepted range, by exactly their quantity.
        let unknown = Observed {
            remaining_after: 37,
            unknown_quantity: 3,
            ..consistent()
        };
        assert_eq!(check(&unknown), vec![]);
        let beyond = Observed {
            remaining_after: 36,
            unknown_quantity: 3,
            ..consistent()
        };
        assert_eq!(check(&beyond).len(), 1);
        // An existing event: only this run's sales are accounted against its starting remaining.
        let existing = Observed {
            remaining_before: 70,
            remaining_after: 10,
            ..consistent()
        };
        assert_eq!(check(&existing), vec![]);
    }

    #[test]
    fn per_user_limit_and_pending_are_checked() {
        let greedy = Observed {
            top_user: Some((3, 5)),
            ..consistent()
        };
        assert_eq!(
            check(&greedy),
            vec![Violation::PerUserLimitExceeded {
                user: 3,
                held: 5,
                limit: 4
            }]
        );
        let unlimited = Observed {
            per_user_limit: None,
            top_user: Some((3, 50)),
            ..consistent()
        };
        assert_eq!(check(&unlimited), vec![]);
        let stuck = Observed {
            pending_unresolved: 2,
            pending_missing: 1,
            ..consistent()
        };
        assert_eq!(
            check(&stuck),
            vec![
                Violation::PendingUnresolved { count: 2 },
                Violation::PendingMissing { count: 1 }
            ]
        );
    }

    #[test]
    fn the_ledger_accounts_every_answer() {
        let mut a = Ledger::default();
        a.note(attempt(0, 1, 2), &Answer::Confirmed);
        a.note(attempt(1, 1, 1), &Answer::Refused(Refusal::PerUserLimit));
        a.note(attempt(2, 2, 3), &Answer::Failed("timeout"));
        a.note(attempt(3, 2, 1), &Answer::Unexpected(400));
        let mut b = Ledger::default();
        let id = uuid::Uuid::new_v4();
        b.note(attempt(4, 3, 1), &Answer::Pending(id));
        b.note(attempt(5, 1, 3), &Answer::Confirmed);
        b.note(attempt(6, 4, 1), &Answer::Unexpected(503));
        a.merge(b);
        assert_eq!(a.confirmed_quantity, 5);
        assert_eq!(a.confirmed_bookings, 2);
        assert_eq!(a.rejected_bookings, 1);
        assert_eq!(a.top_user(), Some((1, 5)));
        assert_eq!(
            a.pending,
            vec![PendingBooking {
                id,
                attempt: attempt(4, 3, 1)
            }]
        );
        assert_eq!(a.uncertain, vec![attempt(2, 2, 3), attempt(6, 4, 1)]);
    }
}
