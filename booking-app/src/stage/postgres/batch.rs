//! Group commit for stage postgres: the bookings of one event that wait in this process are
//! decided together. Each event that has bookings waiting gets a bounded queue and one decider
//! task; the decider takes everything waiting (up to the batch size) as soon as its previous
//! transaction finished, decides it in one transaction (`transaction.rs`) and answers every
//! request through its own oneshot. There is no linger: a lone booking is decided at once, and
//! batches grow only while a transaction is running, i.e. exactly when bookings would otherwise
//! queue for the row lock. Across pods the row lock still serialises the batches.
//!
//! Bounds: a full queue, or more events active at once than `MAX_ACTIVE_EVENTS`, is answered
//! `StageError::Unavailable` (503 + Retry-After); a decider idle for `DECIDER_IDLE` (or whose
//! event does not exist) removes its entry and stops; a request whose caller went away (client
//! gone, request timeout) is dropped from its batch before the transaction, and answering it is
//! never waited for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::decide::Ask;
use super::transaction::decide_batch;
use crate::domain::BookingOutcome;
use crate::metrics::Metrics;
use crate::stage::StageError;
use crate::stage::records::{IDEMPOTENCY_KEY_CONSTRAINT, pg_error, violates};

/// Most events with a decider at once in one process (each holds at most one connection while
/// deciding; the pool bounds how many decide at the same moment).
pub const MAX_ACTIVE_EVENTS: usize = 1_024;
/// A decider with nothing to do for this long stops and removes its event's entry.
pub const DECIDER_IDLE: Duration = Duration::from_secs(10);
/// Attempts of one batch whose keys keep being committed by other transactions between read and
/// write; each attempt replays the keys the previous one conflicted on, so more is pathological.
const MAX_ATTEMPTS: usize = 4;

/// The batcher's bounds, from `PostgresConfig`.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most bookings decided in one transaction.
    pub max_batch: usize,
    /// Most bookings of one event waiting for their batch.
    pub queue_capacity: usize,
}

impl BatchSettings {
    pub fn checked(max_batch: usize, queue_capacity: usize) -> Result<Self, StageError> {
        if max_batch == 0 || queue_capacity == 0 {
            return Err(StageError::Invalid(format!(
                "POSTGRES_BATCH_SIZE ({max_batch}) and POSTGRES_QUEUE_CAPACITY ({queue_capacity}) must be at least 1"
            )));
        }
        Ok(Self {
            max_batch,
            queue_capacity,
        })
    }
}

/// A request in its event's queue, with where its answer goes.
struct Waiter {
    ask: Ask,
    reply: oneshot::Sender<Result<BookingOutcome, StageError>>,
}

/// An event's queue. The sender lives only here and is used only under the map's lock, so a
/// decider that removes its entry under that lock knows nothing can be sent to it afterwards.
struct Entry {
    generation: u64,
    queue: mpsc::Sender<Waiter>,
}

#[derive(Default)]
struct Deciders {
    by_event: HashMap<Uuid, Entry>,
    next_generation: u64,
}

/// Why a booking was turned away before its batch (label of
/// `booking_postgres_batch_refused_total`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    /// queue_full | too_many_events
    reason: &'static str,
}

#[derive(Clone)]
struct BatchMetrics {
    /// Bookings waiting for their batch, all events.
    queued: Gauge,
    /// Events with a decider.
    active_events: Gauge,
    batch_size: Histogram,
    refused: Family<RefusedLabels, Counter>,
    /// Batches decided again after an idempotency-key conflict.
    reruns: Counter,
}

impl BatchMetrics {
    fn register(metrics: &Metrics) -> Self {
        let m = BatchMetrics {
            queued: Gauge::default(),
            active_events: Gauge::default(),
            // 1 .. 1024 bookings per transaction.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            refused: Family::default(),
            reruns: Counter::default(),
        };
        metrics.register(
            "postgres_batch_queued",
            "Bookings waiting for their event's next batch",
            m.queued.clone(),
        );
        metrics.register(
            "postgres_batch_active_events",
            "Events with a batch decider",
            m.active_events.clone(),
        );
        metrics.register(
            "postgres_batch_size",
            "Bookings decided per batch transaction",
            m.batch_size.clone(),
        );
        metrics.register(
            "postgres_batch_refused",
            "Bookings answered 503 before their batch (queue full, too many events)",
            m.refused.clone(),
        );
        metrics.register(
            "postgres_batch_reruns",
            "Batches decided again after an idempotency-key conflict",
            m.reruns.clone(),
        );
        m
    }

    fn refuse(&self, reason: &'static str, detail: String) -> StageError {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
        tracing::warn!(reason, %detail, "booking refused before its batch");
        StageError::Unavailable {
            store: "postgres",
            detail,
        }
    }
}

/// The batcher of one `PostgresInventory`. Dropping it stops its deciders once their queues are
/// empty.
pub struct Batcher {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    settings: BatchSettings,
    metrics: BatchMetrics,
    deciders: Mutex<Deciders>,
}

impl Batcher {
    pub fn new(pool: PgPool, settings: BatchSettings, metrics: &Metrics) -> Self {
        let shared = Shared {
            pool,
            settings,
            metrics: BatchMetrics::register(metrics),
            deciders: Mutex::default(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Queues `ask` for its event's next batch and waits for its own answer.
    pub async fn book(&self, event_id: Uuid, ask: Ask) -> Result<BookingOutcome, StageError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(event_id, Waiter { ask, reply })?;
        answer.await.map_err(|_| {
            StageError::Internal(format!("the batch decider of event {event_id} stopped"))
        })?
    }

    fn enqueue(&self, event_id: Uuid, waiter: Waiter) -> Result<(), StageError> {
        let shared = &self.shared;
        let mut deciders = shared.deciders.lock().expect("batch deciders poisoned");
        let waiter = match deciders.by_event.get(&event_id) {
            None => waiter,
            Some(entry) => {
                match entry.queue.try_send(waiter) {
                    Ok(()) => {
                        shared.metrics.queued.inc();
                        return Ok(());
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        let capacity = shared.settings.queue_capacity;
                        return Err(shared.metrics.refuse(
                        "queue_full",
                        format!("{capacity} bookings of event {event_id} already wait for their batch"),
                    ));
                    }
                    // Its decider is gone (it panicked): start another.
                    Err(mpsc::error::TrySendError::Closed(waiter)) => {
                        deciders.by_event.remove(&event_id);
                        waiter
                    }
                }
            }
        };
        if deciders.by_event.len() >= MAX_ACTIVE_EVENTS {
            return Err(shared.metrics.refuse(
                "too_many_events",
                format!("{MAX_ACTIVE_EVENTS} events already have bookings being decided"),
            ));
        }
        let (queue, receiver) = mpsc::channel(shared.settings.queue_capacity);
        let Ok(()) = queue.try_send(waiter) else {
            unreachable!("a new queue has room for one")
        };
        shared.metrics.queued.inc();
        deciders.next_generation += 1;
        let generation = deciders.next_generation;
        deciders
            .by_event
            .insert(event_id, Entry { generation, queue });
        shared
            .metrics
            .active_events
            .set(deciders.by_event.len() as i64);
        let decider = Decider {
            event_id,
            generation,
            pool: shared.pool.clone(),
            settings: shared.settings,
            metrics: shared.metrics.clone(),
            shared: Arc::downgrade(shared),
        };
        tokio::spawn(decider.run(receiver));
        Ok(())
    }
}

/// The one task deciding an event's bookings. It holds the batcher weakly: once the batcher is
/// dropped, the queue's sender goes with it and the decider stops after the last batch.
struct Decider {
    event_id: Uuid,
    generation: u64,
    pool: PgPool,
    settings: BatchSettings,
    metrics: BatchMetrics,
    shared: Weak<Shared>,
}

impl Decider {
    async fn run(self, mut queue: mpsc::Receiver<Waiter>) {
        let mut batch: Vec<Waiter> = Vec::with_capacity(self.settings.max_batch);
        loop {
            let first = match tokio::time::timeout(DECIDER_IDLE, queue.recv()).await {
                Ok(Some(waiter)) => waiter,
                Ok(None) => return,
                Err(_idle) => {
                    if self.retire(&queue) {
                        return;
                    }
                    continue;
                }
            };
            batch.push(first);
            while batch.len() < self.settings.max_batch {
                let Ok(waiter) = queue.try_recv() else { break };
                batch.push(waiter);
            }
            self.metrics.queued.dec_by(batch.len() as i64);
            // Callers that went away are not booked for: nobody would be told.
            batch.retain(|w| !w.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            let answers = self.decide(&batch).await;
            let not_found = answers
                .iter()
                .all(|a| matches!(a, Err(StageError::EventNotFound(_))));
            for (waiter, answer) in batch.drain(..).zip(answers) {
                // A caller gone since is fine: its booking stands, a retry with its key replays it.
                let _ = waiter.reply.send(answer);
            }
            // Requests for an event that does not exist must not hold an entry for long.
            if not_found && self.retire(&queue) {
                return;
            }
        }
    }

    /// One batch, re-run when another transaction committed one of its keys after it read them
    /// (the re-run replays that key). Any other failure is every waiter's answer.
    async fn decide(&self, batch: &[Waiter]) -> Vec<Result<BookingOutcome, StageError>> {
        let asks: Vec<Ask> = batch.iter().map(|w| w.ask.clone()).collect();
        self.metrics.batch_size.observe(asks.len() as f64);
        let started = Instant::now();
        let mut attempt = 1;
        let failure = loop {
            match decide_batch(&self.pool, self.event_id, &asks).await {
                Ok(answers) => {
                    tracing::debug!(
                        event_id = %self.event_id,
                        size = asks.len(),
                        attempt,
                        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                        "batch decided"
                    );
                    return answers
                        .into_iter()
                        .zip(&asks)
                        .map(|(a, ask)| a.into_result(self.event_id, ask))
                        .collect();
                }
                Err(StageError::Database(err))
                    if violates(&err, IDEMPOTENCY_KEY_CONSTRAINT) && attempt < MAX_ATTEMPTS =>
                {
                    self.metrics.reruns.inc();
                    tracing::info!(
                        event_id = %self.event_id,
                        size = asks.len(),
                        attempt,
                        "an idempotency key was committed elsewhere meanwhile: deciding the batch again"
                    );
                    attempt += 1;
                }
                Err(StageError::Database(err)) if violates(&err, IDEMPOTENCY_KEY_CONSTRAINT) => {
                    break StageError::Unavailable {
                        store: "postgres",
                        detail: format!(
                            "idempotency keys kept being committed elsewhere ({attempt} attempts)"
                        ),
                    };
                }
                Err(StageError::Database(err)) => break pg_error(err),
                Err(other) => break other,
            }
        };
        tracing::error!(event_id = %self.event_id, size = asks.len(), attempt, error = %failure, "batch failed");
        (0..asks.len()).map(|_| Err(same_error(&failure))).collect()
    }

    /// Removes this decider's entry if nothing waits in its queue, under the map's lock (senders
    /// only send under it, so nothing can arrive afterwards). False: something arrived, go on.
    fn retire(&self, queue: &mpsc::Receiver<Waiter>) -> bool {
        let Some(shared) = self.shared.upgrade() else {
            return queue.is_empty();
        };
        let mut deciders = shared.deciders.lock().expect("batch deciders poisoned");
        if !queue.is_empty() {
            return false;
        }
        if deciders
            .by_event
            .get(&self.event_id)
            .is_some_and(|e| e.generation == self.generation)
        {
            deciders.by_event.remove(&self.event_id);
        }
        self.metrics
            .active_events
            .set(deciders.by_event.len() as i64);
        true
    }
}

/// The answer of each waiter of a failed batch: the same classification (503 stays 503), the
/// cause kept once in the log above rather than cloned (database errors are not `Clone`).
fn same_error(err: &StageError) -> StageError {
    match err {
        StageError::Unavailable { store, detail } => StageError::Unavailable {
            store,
            detail: detail.clone(),
        },
        StageError::EventNotFound(id) => StageError::EventNotFound(*id),
        StageError::Rejected { reason, detail } => StageError::Rejected {
            reason: *reason,
            detail: detail.clone(),
        },
        StageError::IdempotencyKeyReused => StageError::IdempotencyKeyReused,
        StageError::Invalid(detail) => StageError::Invalid(detail.clone()),
        other => StageError::Internal(format!("batch failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_answers_each_waiter_with_the_same_class() {
        let down = StageError::Unavailable {
            store: "postgres",
            detail: "pool timed out".into(),
        };
        assert!(matches!(
            same_error(&down),
            StageError::Unavailable {
                store: "postgres",
                ..
            }
        ));
        let db = StageError::Database(sqlx::Error::Protocol("bad".into()));
        assert!(matches!(same_error(&db), StageError::Internal(m) if m.contains("bad")));
        assert!(matches!(
            same_error(&StageError::EventNotFound(Uuid::nil())),
            StageError::EventNotFound(_)
        ));
    }

    #[test]
    fn settings_refuse_zero_bounds() {
        assert!(BatchSettings::checked(0, 10).is_err());
        assert!(BatchSettings::checked(10, 0).is_err());
        assert!(BatchSettings::checked(256, 1024).is_ok());
    }
}
