//! Stage 3, the "spike absorber": a booking request is validated, given its id, produced to the
//! requests topic (idempotent producer, `acks=all`, keyed by event; in one record with the other
//! requests of its event waiting at that moment, `producer.rs`) and answered 202 once the broker
//! acknowledged it; workers decide it later (`worker::kafka_consumer`). Pending requests
//! live in Kafka and in each pod's `Backlog`, never in Postgres on the hot path.

pub mod backlog;
pub mod client;
pub mod metrics;
pub mod producer;
pub mod record;
pub mod tail;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::SubsecRound;
use futures::stream::{self, BoxStream, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use rdkafka::consumer::BaseConsumer;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use self::backlog::{Backlog, Cap, Door};
use self::client::{KafkaSettings, partition_count, unavailable, watermarks};
use self::metrics::GroupMetrics;
use self::producer::{MAX_RECORD_REQUESTS, RequestProducer};
use self::record::{BookingRecord, RECORD_VERSION, booking_id};
use super::records::{self, pg_error};
use super::{CheckedBooking, Inventory, StageError, idempotency};
use crate::domain::{Booking, BookingOutcome, BookingStatus, Event, NewEvent, RejectReason, Stage};
use crate::metrics::Metrics;

/// Longest a status read waits for this pod's tail to reach what other pods acknowledged.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(3);
/// A status watcher re-reads at least this often, even without a wake-up.
const WATCH_POLL: Duration = Duration::from_secs(1);
/// Most event ids a pod remembers as existing (a sale has one; the bound is for stray ids).
const MAX_KNOWN_EVENTS: usize = 10_000;

pub struct KafkaInventory {
    inner: Arc<Inner>,
    _tasks: DropGuard,
}

struct Inner {
    settings: KafkaSettings,
    pool: PgPool,
    producer: RequestProducer,
    backlog: Arc<Backlog>,
    reader: Arc<BaseConsumer>,
    /// Events known to exist (events are never deleted), so the hot path reads Postgres at most
    /// once per event and pod.
    known_events: Mutex<HashSet<Uuid>>,
    produce_failures: Counter,
}

impl KafkaInventory {
    /// Creates the topics if missing, positions this pod's tail at the group's committed offsets
    /// and starts it; everything stops when the inventory is dropped.
    pub async fn connect(
        settings: KafkaSettings,
        pool: PgPool,
        metrics: &Metrics,
    ) -> Result<Self, StageError> {
        let partitions = settings.ensure_topics().await?;
        let reader = Arc::new(settings.offsets_reader()?);
        let backlog = Arc::new(Backlog::new(
            partitions,
            Cap {
                requests: settings.max_queued,
                bytes: settings.max_queued_bytes,
            },
        ));
        let tasks = CancellationToken::new();
        tail::start(
            &settings,
            backlog.clone(),
            reader.clone(),
            GroupMetrics::register(metrics),
            tasks.clone(),
        )
        .await?;
        let produce_failures = Counter::default();
        metrics.register(
            "kafka_produce_failures",
            "Booking requests answered 503 because the broker did not acknowledge them in time",
            produce_failures.clone(),
        );
        let record_requests = Histogram::new(exponential_buckets(
            1.0,
            2.0,
            MAX_RECORD_REQUESTS.ilog2() as u16 + 1,
        ));
        metrics.register(
            "kafka_record_requests",
            "Booking requests per record produced to the requests topic (accepted together)",
            record_requests.clone(),
        );
        let producer = RequestProducer::start(
            settings.producer()?,
            settings.topic.clone(),
            backlog.clone(),
            record_requests,
        );
        let inner = Inner {
            producer,
            settings,
            pool,
            backlog,
            reader,
            known_events: Mutex::default(),
            produce_failures,
        };
        Ok(Self {
            inner: Arc::new(inner),
            _tasks: tasks.drop_guard(),
        })
    }

    /// Requests this pod sees queued and undecided.
    pub fn queued(&self) -> usize {
        self.inner.backlog.len()
    }
}

impl Inner {
    async fn require_event(&self, event_id: Uuid) -> Result<(), StageError> {
        if self
            .known_events
            .lock()
            .expect("lock poisoned")
            .contains(&event_id)
        {
            return Ok(());
        }
        let event = records::fetch_event(&self.pool, event_id).await?;
        if event.remaining == 0 {
            self.backlog.set_sold_out(event_id, true);
        }
        let mut known = self.known_events.lock().expect("lock poisoned");
        if known.len() >= MAX_KNOWN_EVENTS {
            // Bounded: forgetting costs one more read per event, never a wrong answer.
            known.clear();
        }
        known.insert(event_id);
        Ok(())
    }

    /// The booking as known now: queued (with its place in line), decided, or unknown. A miss
    /// waits until this pod's tail has read everything the broker holds, so a booking another
    /// pod just acknowledged is never reported missing.
    async fn booking(&self, id: Uuid) -> Result<Booking, StageError> {
        // The backlog first: a request leaves it only after its decision is in Postgres.
        if let Some(pending) = self.backlog.pending(id) {
            return Ok(pending);
        }
        match records::fetch_booking(&self.pool, id).await {
            Err(StageError::BookingNotFound(_)) => {}
            other => return other,
        }
        let partitions = self.backlog.partitions();
        let high: Vec<i64> = watermarks(&self.reader, &self.settings.topic, partitions)
            .await?
            .into_iter()
            .map(|(_, h)| h)
            .collect();
        tokio::time::timeout(READ_YOUR_WRITES_WAIT, self.backlog.wait_caught_up(&high))
            .await
            .map_err(|_| unavailable("this pod's view of the queue is behind"))?;
        if let Some(pending) = self.backlog.pending(id) {
            return Ok(pending);
        }
        records::fetch_booking(&self.pool, id).await
    }
}

#[async_trait]
impl Inventory for KafkaInventory {
    fn stage(&self) -> Stage {
        Stage::Kafka
    }

    async fn create_event(&self, new: NewEvent) -> Result<Event, StageError> {
        let event = records::insert_event(&self.inner.pool, &new).await?;
        self.inner
            .known_events
            .lock()
            .expect("lock poisoned")
            .insert(event.id);
        Ok(event)
    }

    async fn get_event(&self, id: Uuid) -> Result<Event, StageError> {
        records::fetch_event(&self.inner.pool, id).await
    }

    async fn book_checked(&self, booking: CheckedBooking) -> Result<BookingOutcome, StageError> {
        let (event_id, request, idempotency_key) = booking.into_parts();
        let inner = &self.inner;
        inner.require_event(event_id).await?;
        let key = idempotency_key.as_deref();
        let id = booking_id(key, event_id, &request.user_id, request.quantity);
        // The door reads no store: a key whose first request is still queued is answered from
        // this pod's view of the queue (its first answer, or 422 for a different request); any
        // other keyed request is queued under its deterministic id, and the worker decides a
        // retry of a decided request as the duplicate it is (the client's next read shows the
        // decision).
        match inner.backlog.door(event_id, key) {
            Door::Open => {}
            Door::Replay(first) => return idempotency::replay(first, event_id, &request),
            Door::SoldOut => {
                // Sold out: a new request is refused at once. A keyed one may be the retry of a
                // request decided before the sell-out, whose answer (perhaps a confirmation)
                // must be replayed: one primary-key read of its deterministic id, only here.
                if key.is_some() {
                    match records::fetch_booking(&inner.pool, id).await {
                        Ok(first) => return idempotency::replay(first, event_id, &request),
                        Err(StageError::BookingNotFound(_)) => {}
                        Err(err) => return Err(err),
                    }
                }
                return Err(StageError::Rejected {
                    reason: RejectReason::SoldOut,
                    detail: "the event is sold out".into(),
                });
            }
            // Bounded memory: past the cap the door sheds rather than the pod growing until it
            // is killed (requests other pods queue still enter the view: they are accepted).
            Door::Full { requests, bytes } => {
                return Err(StageError::Overloaded(format!(
                    "{requests} undecided requests ({bytes} B) in this pod's view of the queue \
                     (KAFKA_MAX_QUEUED, KAFKA_MAX_QUEUED_BYTES)"
                )));
            }
        }
        let record = BookingRecord {
            v: RECORD_VERSION,
            id,
            event_id,
            user_id: request.user_id,
            quantity: request.quantity,
            idempotency_key,
            // Postgres keeps microseconds: the pending and the decided booking show the same time.
            accepted_at: chrono::Utc::now().trunc_subsecs(6),
        };
        // No timer of its own here (one per request was measurable at 256 connections):
        // librdkafka answers within KAFKA_PRODUCE_TIMEOUT_MS, the route gate bounds the rest.
        // Acknowledged, the request is in this pod's view already; decided already (a fast
        // worker, or a retry of a decided key), it is still pending to the client, whose next
        // read shows the decision.
        let booking = inner.producer.produce(record).await.inspect_err(|err| {
            if matches!(err, StageError::Unavailable { .. }) {
                inner.produce_failures.inc();
            }
        })?;
        Ok(BookingOutcome::Pending(booking))
    }

    async fn get_booking(&self, id: Uuid) -> Result<Booking, StageError> {
        self.inner.booking(id).await
    }

    async fn watch_booking(&self, id: Uuid) -> Result<BoxStream<'static, Booking>, StageError> {
        // The first read outside the stream, so an unknown id is a 404 rather than an empty stream.
        let first = self.inner.booking(id).await?;
        let watch = Watch {
            inner: self.inner.clone(),
            id,
            wake: self.inner.backlog.subscribe(),
            first: Some(first),
            last: None,
        };
        Ok(stream::unfold(watch, Watch::next).boxed())
    }

    async fn ready(&self) -> Result<(), StageError> {
        sqlx::query("SELECT 1")
            .execute(&self.inner.pool)
            .await
            .map_err(pg_error)?;
        if partition_count(&self.inner.reader, &self.inner.settings.topic).await? == 0 {
            return Err(unavailable(
                "the requests topic is missing or has no leader",
            ));
        }
        if !self.inner.backlog.ready() {
            return Err(unavailable("this pod is still reading the queue"));
        }
        Ok(())
    }
}

/// A status push: the current state, then every change (place in line, decision), ending after
/// the decision. Woken when the group's committed offsets move, and at least every `WATCH_POLL`.
struct Watch {
    inner: Arc<Inner>,
    id: Uuid,
    wake: watch::Receiver<u64>,
    first: Option<Booking>,
    last: Option<Booking>,
}

impl Watch {
    async fn next(mut self) -> Option<(Booking, Self)> {
        if self
            .last
            .as_ref()
            .is_some_and(|b| b.status != BookingStatus::Pending)
        {
            return None;
        }
        loop {
            let state = match self.first.take() {
                Some(first) => first,
                None => {
                    if let Ok(Err(_)) = tokio::time::timeout(WATCH_POLL, self.wake.changed()).await
                    {
                        // The stage is shutting down: keep polling slowly until the client goes.
                        tokio::time::sleep(WATCH_POLL).await;
                    }
                    match self.inner.booking(self.id).await {
                        Ok(state) => state,
                        Err(err) => {
                            tracing::debug!(id = %self.id, error = %err, "watch: cannot read the booking; retrying");
                            continue;
                        }
                    }
                }
            };
            if self.last.as_ref() != Some(&state) {
                self.last = Some(state.clone());
                return Some((state, self));
            }
        }
    }
}
