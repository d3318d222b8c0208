//! The inventory stages behind one trait. The HTTP layer holds an `Arc<dyn Inventory>` and never
//! knows which stage decides; `build()` picks the implementation from configuration.

use async_trait::async_trait;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::domain::{
    Booking, BookingOutcome, BookingRequest, Event, NewEvent, RejectReason, Stage,
};

/// An opaque client-chosen key (`Idempotency-Key` header): a repeated key returns the first
/// answer and books nothing more.
pub type IdempotencyKey = String;

/// Everything a stage can fail with. Mapped once to HTTP in `http::error`.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("event {0} not found")]
    EventNotFound(Uuid),
    #[error("booking {0} not found")]
    BookingNotFound(Uuid),
    /// The request was decided against at once (stages postgres and redis).
    #[error("booking refused: {reason:?}: {detail}")]
    Rejected {
        reason: RejectReason,
        detail: String,
    },
    /// The same idempotency key was used before with a different request.
    #[error("idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("invalid request: {0}")]
    Invalid(String),
    /// This process is at a bound of its own (a queue or map full): 503 `overloaded`, retry
    /// later. Nothing was booked.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A store did not answer in time or refused the connection: 503, retry later.
    #[error("{store} unavailable: {detail}")]
    Unavailable { store: &'static str, detail: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis error: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("kafka error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Internal(String),
}

/// A value `Inventory::book` refuses before any stage sees it: 422 `invalid`.
impl From<crate::validation::ValidationError> for StageError {
    fn from(error: crate::validation::ValidationError) -> Self {
        StageError::Invalid(error.to_string())
    }
}

/// A booking request whose values were checked (`crate::validation`): the only form a stage
/// decides. `Inventory::book` is the one place that builds it, so every stage, and every caller
/// (the HTTP layer, loadgen's in-process runs, the tests), gets the same check once; a stage that
/// batches can trust each row not to fail its whole batch.
#[derive(Debug)]
pub struct CheckedBooking {
    event_id: Uuid,
    request: BookingRequest,
    /// Already scoped to its user by the HTTP layer (`idempotency::scoped`).
    key: Option<IdempotencyKey>,
}

impl CheckedBooking {
    fn new(
        event_id: Uuid,
        request: BookingRequest,
        key: Option<IdempotencyKey>,
    ) -> Result<Self, crate::validation::ValidationError> {
        crate::validation::validate_booking_request(&request)?;
        if let Some(key) = &key {
            crate::validation::validate_idempotency_key(key)?;
        }
        Ok(Self {
            event_id,
            request,
            key,
        })
    }

    /// The event, the request and its (scoped) idempotency key.
    pub fn into_parts(self) -> (Uuid, BookingRequest, Option<IdempotencyKey>) {
        (self.event_id, self.request, self.key)
    }
}

/// One inventory implementation. Implementations must be safe under any number of concurrent
/// calls from any number of processes: nothing oversold, no user above the limit, idempotency
/// keys honoured.
#[async_trait]
pub trait Inventory: Send + Sync + 'static {
    fn stage(&self) -> Stage;
    async fn create_event(&self, new: NewEvent) -> Result<Event, StageError>;
    /// The event as the stage's source of truth sees it (`remaining` included).
    async fn get_event(&self, id: Uuid) -> Result<Event, StageError>;
    /// Checks the request's values (`Invalid`, a 422, before any store is asked), then has the
    /// stage decide it (`book_checked`). Stages do not override it.
    async fn book(
        &self,
        event_id: Uuid,
        request: BookingRequest,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<BookingOutcome, StageError> {
        let booking = CheckedBooking::new(event_id, request, idempotency_key)?;
        self.book_checked(booking).await
    }
    /// Decides a checked request: confirmed, pending (stage kafka), or refused.
    async fn book_checked(&self, booking: CheckedBooking) -> Result<BookingOutcome, StageError>;
    async fn get_booking(&self, id: Uuid) -> Result<Booking, StageError>;
    /// A stream of the booking's states, ending after the first final one (confirmed/rejected).
    /// Stages that decide at once yield the booking and end.
    async fn watch_booking(&self, id: Uuid) -> Result<BoxStream<'static, Booking>, StageError>;
    /// Ok when every store this stage needs answers (for `/readyz`).
    async fn ready(&self) -> Result<(), StageError>;
}

pub mod idempotency;
pub mod kafka;
pub mod postgres;
pub mod records;
pub mod redis;
pub mod retention;
pub mod sale_event;

/// Builds the stage `config.stage` names over an open Postgres pool (every stage keeps its
/// source of truth there). Stage-specific settings are checked here, once, at start-up.
pub async fn build_inventory(
    config: &crate::config::Config,
    pool: sqlx::PgPool,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Result<std::sync::Arc<dyn Inventory>, StageError> {
    // Before any request: the sale's own event exists once the API answers.
    sale_event::ensure(&pool, &config.sale_event).await?;
    match config.stage {
        Stage::Postgres => Ok(std::sync::Arc::new(
            postgres::PostgresInventory::from_config(&config.postgres, pool, &metrics)?,
        )),
        Stage::Redis => Ok(std::sync::Arc::new(
            redis::RedisInventory::connect(
                &config.redis,
                config.idempotency.retention(),
                pool,
                metrics.clone(),
            )
            .await?,
        )),
        Stage::Kafka => {
            let settings = kafka::client::KafkaSettings::from_config(&config.kafka)?;
            Ok(std::sync::Arc::new(
                kafka::KafkaInventory::connect(settings, pool, &metrics).await?,
            ))
        }
    }
}
