//! Parking: an event whose batch Postgres refuses while it answers (its event row is missing, a
//! constraint the decision breaks) is skipped with backoff instead of failing every pass. Its
//! entries stay pending in its stream, unacknowledged: nothing is lost, and they are written once
//! what Postgres refused is mended. Without it, one such event (a Redis shared by two databases
//! under one key prefix, an event deleted in Postgres) stopped the write-behind of every sale:
//! a failed pass re-reads the pending entries of all events, the refused batch first.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Syncer;
use crate::stage::StageError;

/// The first wait after a refusal; doubled per refusal in a row, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One parked event.
#[derive(Debug, Clone, Copy)]
pub(super) struct Parked {
    /// Skipped until then.
    until: Instant,
    /// The wait after the next refusal.
    next: Duration,
    /// Its pending entries were handed back for a retry (`unparked`).
    retrying: bool,
}

impl Syncer {
    /// Skips `event` for a while after Postgres refused its batch with `err`.
    pub(super) fn park(&mut self, event: Uuid, err: &StageError) {
        let wait = self.parked.get(&event).map_or(FIRST_BACKOFF, |p| p.next);
        self.parked.insert(
            event,
            Parked {
                until: Instant::now() + wait,
                next: (wait * 2).min(MAX_BACKOFF),
                retrying: false,
            },
        );
        // Its entries are this consumer's pending ones: read again with "0" after the wait.
        self.own_pending = true;
        self.metrics.failures.inc();
        self.metrics.parked.set(self.parked.len() as i64);
        tracing::error!(event = %event, error = %err, retry_in_ms = wait.as_millis() as u64,
            "Postgres refused this event's bookings; they stay in its Redis stream, the other events go on");
    }

    /// `event`'s batch was written: it is parked no more.
    pub(super) fn unpark(&mut self, event: Uuid) {
        if self.parked.remove(&event).is_some() {
            self.metrics.parked.set(self.parked.len() as i64);
            tracing::info!(event = %event, "Postgres took this event's bookings again");
        }
    }

    /// `events` without those parked now. An event whose wait is over is read again, its
    /// pending entries first.
    pub(super) fn unparked(&mut self, mut events: Vec<Uuid>) -> Vec<Uuid> {
        if self.parked.is_empty() {
            return events;
        }
        let now = Instant::now();
        let mut released = false;
        for parked in self.parked.values_mut() {
            if parked.until <= now && !parked.retrying {
                parked.retrying = true;
                released = true;
            }
        }
        if released {
            self.own_pending = true;
        }
        // Events gone from the index (e.g. after a rebuild) are forgotten.
        self.parked.retain(|id, _| events.contains(id));
        self.metrics.parked.set(self.parked.len() as i64);
        events.retain(|id| self.parked.get(id).is_none_or(|p| p.until <= now));
        events
    }
}
