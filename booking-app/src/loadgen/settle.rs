//! After the load stops, learns the final fate of every booking loadgen started, through the API:
//! attempts that got no answer are replayed with their idempotency key, pending bookings are
//! polled until decided (bounded), then the event is read and `invariants::check` judges.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use uuid::Uuid;

use super::client::{ApiClient, BookingView, ClientError, EventView, booking_body};
use super::driver::{idempotency_key, user_id};
use super::invariants::{InvariantReport, Ledger, Observed, PendingBooking, check};
use crate::domain::BookingStatus;

/// How long and how hard to follow up.
#[derive(Debug, Clone, Copy)]
pub struct SettleOptions {
    /// Give up on pending bookings once none has been decided for this long (a stalled worker),
    /// however long the whole drain takes while it makes progress.
    pub pending_timeout: Duration,
    /// Requests in flight while following up.
    pub concurrency: usize,
}

/// What the event looked like before the run, and when the first 202 came (for the drain rate).
#[derive(Debug, Clone)]
pub struct Baseline {
    pub event: EventView,
    pub first_pending_at: Option<Instant>,
}

/// Follows every booking of `ledger` to its end, then checks the invariants.
pub async fn settle(
    client: &ApiClient,
    baseline: &Baseline,
    mut ledger: Ledger,
    key_prefix: Option<&str>,
    options: SettleOptions,
) -> Result<InvariantReport, ClientError> {
    let event_id = baseline.event.id;
    let unknown_quantity = replay_uncertain(
        client,
        event_id,
        &mut ledger,
        key_prefix,
        options.concurrency,
    )
    .await?;
    let pending_total = ledger.pending.len() as u64;
    let drained = resolve_pending(client, &mut ledger, options).await;
    let after = client.get_event(event_id).await?;

    let observed = Observed {
        tickets: baseline.event.tickets,
        remaining_before: baseline.event.remaining,
        remaining_after: after.remaining,
        per_user_limit: baseline.event.per_user_limit,
        confirmed_quantity: ledger.confirmed_quantity,
        unknown_quantity,
        top_user: ledger.top_user(),
        pending_unresolved: drained.unresolved,
        pending_missing: drained.missing,
    };
    let drain_rps = match (baseline.first_pending_at, drained.last_decided_at) {
        (Some(first), Some(last)) if last > first && drained.decided > 0 => {
            Some(drained.decided as f64 / last.duration_since(first).as_secs_f64())
        }
        _ => None,
    };
    let violations = check(&observed);
    Ok(InvariantReport {
        event_id,
        oversold: observed.oversold(),
        observed,
        confirmed_bookings: ledger.confirmed_bookings,
        rejected_bookings: ledger.rejected_bookings,
        pending_total,
        drain_rps,
        ok: violations.is_empty(),
        violations,
    })
}

/// Replays attempts that got no answer with the same idempotency key: a request that did book
/// returns its first answer, one that never arrived is decided now. Returns the quantity whose
/// outcome is still unknown (no key, or no answer again).
async fn replay_uncertain(
    client: &ApiClient,
    event_id: Uuid,
    ledger: &mut Ledger,
    key_prefix: Option<&str>,
    concurrency: usize,
) -> Result<i64, ClientError> {
    let uncertain = std::mem::take(&mut ledger.uncertain);
    let Some(prefix) = key_prefix else {
        return Ok(uncertain.iter().map(|a| i64::from(a.quantity)).sum());
    };
    let url = client.bookings_url(event_id)?;
    let answers: Vec<_> = futures::stream::iter(uncertain)
        .map(|attempt| {
            let url = &url;
            async move {
                let key = idempotency_key(prefix, attempt.index);
                let body = booking_body(user_id(attempt.user), attempt.quantity);
                let bearer = client.bearer(attempt.user);
                (
                    attempt,
                    client.book(url, body, Some(&key), bearer.as_deref()).await,
                )
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut unknown = 0;
    for (attempt, answer) in answers {
        if answer.outcome_unknown() {
            unknown += i64::from(attempt.quantity);
        } else {
            ledger.note(attempt, &answer);
        }
    }
    Ok(unknown)
}

#[derive(Debug, Default)]
struct Drained {
    /// Decisions seen while following the drain (the drain rate's numerator).
    decided: u64,
    unresolved: u64,
    missing: u64,
    last_decided_at: Option<Instant>,
}

/// Polls pending bookings, oldest first, until each is decided or none has been for
/// `pending_timeout`. Workers decide roughly in arrival order, so the head of the queue shows
/// the progress: a batch is polled while the head is decided, and once it reaches undecided ones
/// loadgen waits and then probes only the oldest, so the polling does not take the CPU the worker
/// is draining with. On giving up, one last sweep asks about every booking left, so only the
/// really undecided ones are reported.
async fn resolve_pending(
    client: &ApiClient,
    ledger: &mut Ledger,
    options: SettleOptions,
) -> Drained {
    const POLL_INTERVAL: Duration = Duration::from_millis(100);
    let mut queue: VecDeque<PendingBooking> = std::mem::take(&mut ledger.pending).into();
    let mut deadline = Instant::now() + options.pending_timeout;
    let batch = options.concurrency.clamp(1, 256);
    let mut follow = Follow {
        ledger,
        drained: Drained::default(),
        not_found: Default::default(),
    };
    let mut probe_only = false;
    while !queue.is_empty() && Instant::now() < deadline {
        let size = if probe_only { 1 } else { batch }.min(queue.len());
        let round: Vec<_> = queue.drain(..size).collect();
        let still = follow.poll(client, round, batch, true).await;
        let progressed = still.len() < size;
        if progressed {
            deadline = Instant::now() + options.pending_timeout;
        }
        let reached_undecided = !still.is_empty();
        probe_only = !progressed;
        for p in still.into_iter().rev() {
            queue.push_front(p);
        }
        if reached_undecided {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    let left = if queue.is_empty() {
        Vec::new()
    } else {
        // Not a decision seen in time: leave the drain clock where it is.
        follow.poll(client, queue.into(), batch, false).await
    };
    let mut drained = follow.drained;
    drained.missing = left
        .iter()
        .filter(|p| follow.not_found.contains(&p.id))
        .count() as u64;
    drained.unresolved = left.len() as u64 - drained.missing;
    drained
}

/// Bookkeeping of `resolve_pending`: decisions go to the ledger as they are found.
struct Follow<'a> {
    ledger: &'a mut Ledger,
    drained: Drained,
    /// Ids that answered 404 so far: a booking may become readable a moment after its 202.
    not_found: std::collections::HashSet<Uuid>,
}

impl Follow<'_> {
    /// Polls `round`, records what was decided, returns the rest in order.
    async fn poll(
        &mut self,
        client: &ApiClient,
        round: Vec<PendingBooking>,
        batch: usize,
        clock: bool,
    ) -> Vec<PendingBooking> {
        let polled: Vec<_> = futures::stream::iter(round)
            .map(|p| async move { (p, client.get_booking(p.id).await) })
            .buffered(batch)
            .collect()
            .await;
        let mut still = Vec::new();
        for (p, result) in polled {
            match result {
                Ok(BookingView {
                    status: BookingStatus::Pending,
                    ..
                }) => still.push(p),
                Ok(BookingView { status, .. }) => {
                    if clock {
                        self.drained.decided += 1;
                        self.drained.last_decided_at = Some(Instant::now());
                    }
                    self.not_found.remove(&p.id);
                    if status == BookingStatus::Confirmed {
                        self.ledger.confirm(p.attempt);
                    } else {
                        self.ledger.rejected_bookings += 1;
                    }
                }
                Err(ClientError::Status { status: 404, .. }) => {
                    self.not_found.insert(p.id);
                    still.push(p);
                }
                // A failed poll is retried next round.
                Err(_) => still.push(p),
            }
        }
        still
    }
}
