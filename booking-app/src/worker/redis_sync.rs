//! Stage redis's write-behind syncer: reads every event's booking stream with a consumer group,
//! writes each batch to Postgres in one idempotent transaction, and only then acknowledges (and
//! deletes) the entries. A crash anywhere re-delivers the batch; writing it twice changes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{Config, RedisConfig};
use crate::metrics::Metrics;
use crate::stage::StageError;
use crate::stage::redis::connection::{self, classify};
use crate::stage::redis::keys::{Keys, SYNC_GROUP};
use crate::stage::redis::load::{StreamBooking, parse_entry};

mod park;
mod watch;
mod write;

use park::Parked;

pub use write::{Written, write_batch};

/// How the syncer paces itself (all from `RedisConfig`).
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Consumer name in the group: unique per process, stable across restarts of one pod.
    pub consumer: String,
    /// Most entries read (and written in one transaction) per stream per pass.
    pub batch_size: usize,
    /// How long one read waits for new entries.
    pub block: Duration,
    /// Entries another consumer left unacknowledged this long are taken over (its crash).
    pub claim_idle: Duration,
}

impl SyncSettings {
    pub fn from_config(config: &RedisConfig) -> Self {
        Self {
            consumer: config.sync_consumer_name(),
            batch_size: config.sync_batch_size.max(1),
            block: Duration::from_millis(config.sync_block_ms),
            claim_idle: Duration::from_millis(config.sync_claim_idle_ms),
        }
    }
}

/// The syncer's series (registered by `booking-app worker` on its own `/metrics`).
#[derive(Debug, Clone, Default)]
pub struct SyncMetrics {
    /// Bookings (and kept refusals) newly written to Postgres.
    pub written: Counter,
    /// Batches committed (a batch delivered again after a crash counts again).
    pub batches: Counter,
    /// Passes that failed (Redis or Postgres unavailable) and were retried.
    pub failures: Counter,
    /// Entries in the streams, i.e. decisions not yet in Postgres.
    pub lag: Gauge,
    /// Events whose batch Postgres refused (not a store outage): skipped for a while, their
    /// entries kept, so one event cannot stop the write-behind of every other (`park`).
    pub parked: Gauge,
}

impl SyncMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "redis_sync_written",
            "Bookings the write-behind syncer wrote to Postgres",
            m.written.clone(),
        );
        metrics.register(
            "redis_sync_batches",
            "Batches the write-behind syncer committed",
            m.batches.clone(),
        );
        metrics.register(
            "redis_sync_failures",
            "Write-behind syncer passes that failed and were retried",
            m.failures.clone(),
        );
        metrics.register(
            "redis_stream_lag",
            "Confirmed bookings in Redis not yet written to Postgres",
            m.lag.clone(),
        );
        metrics.register(
            "redis_sync_parked_events",
            "Events whose bookings Postgres refused; retried with backoff, their entries kept",
            m.parked.clone(),
        );
        m
    }
}

/// Entries of one event's stream, delivered together.
#[derive(Debug)]
pub struct Batch {
    pub event_id: Uuid,
    pub entry_ids: Vec<String>,
    pub bookings: Vec<StreamBooking>,
}

pub struct Syncer {
    /// Its own connection: a blocking read holds the connection it is sent on.
    redis: ConnectionManager,
    /// Acknowledgements go on a connection of their own, so a batch's acknowledgement travels
    /// while the next batch is read and written (`connect`; `new` shares `redis`).
    acks: ConnectionManager,
    /// The acknowledgement of the last committed batch, still on its way. At most one: the next
    /// commit waits for it before sending its own.
    acking: Option<tokio::task::JoinHandle<Result<(), StageError>>>,
    /// The event index as last read, and when: read again every `EVENTS_REFRESH`, not per pass.
    events_read: Option<(Instant, Vec<Uuid>)>,
    pool: PgPool,
    keys: Keys,
    settings: SyncSettings,
    /// Events whose stream has the group (created idempotently, once per process).
    grouped: HashSet<Uuid>,
    /// Events whose last batch Postgres refused, and until when they are skipped (`park`).
    parked: HashMap<Uuid, Parked>,
    /// Entries may be delivered to this consumer and not acknowledged (start, failure, claim).
    own_pending: bool,
    last_claim: Option<Instant>,
    metrics: SyncMetrics,
    last_lag_sample: Option<Instant>,
}

impl Syncer {
    pub async fn connect(config: &RedisConfig, pool: PgPool) -> Result<Self, StageError> {
        let settings = SyncSettings::from_config(config);
        let client = connection::client(config, "the redis syncer")?;
        let redis =
            connection::connect(&client, settings.block + config.response_timeout()).await?;
        let acks = connection::connect(&client, config.response_timeout()).await?;
        let mut syncer = Self::new(
            redis,
            pool,
            Keys::new(config.redis_key_prefix.clone()),
            settings,
        );
        syncer.acks = acks;
        Ok(syncer)
    }

    pub fn new(redis: ConnectionManager, pool: PgPool, keys: Keys, settings: SyncSettings) -> Self {
        Self {
            acks: redis.clone(),
            acking: None,
            events_read: None,
            redis,
            pool,
            keys,
            settings,
            grouped: HashSet::new(),
            parked: HashMap::new(),
            own_pending: true,
            last_claim: None,
            metrics: SyncMetrics::default(),
            last_lag_sample: None,
        }
    }

    pub fn with_metrics(mut self, metrics: SyncMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn settings(&self) -> &SyncSettings {
        &self.settings
    }

    /// Syncs until `stop` is cancelled. Failures (Redis or Postgres down) are logged and retried
    /// with backoff; nothing is acknowledged that is not committed.
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(consumer = %self.settings.consumer, batch = self.settings.batch_size, "redis syncer started");
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let pass = tokio::select! {
                () = stop.cancelled() => break,
                pass = self.pass() => pass,
            };
            match pass {
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    self.sample_lag().await;
                }
                Err(err) => {
                    self.metrics.failures.inc();
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "redis syncer pass failed");
                    if let Err(err) = self.settle_ack().await {
                        tracing::warn!(error = %err, "acknowledgement failed; the batch is read again");
                    }
                    self.own_pending = true;
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        if let Err(err) = self.settle_ack().await {
            tracing::warn!(error = %err, "last acknowledgement failed; its entries are written again after a restart");
        }
        tracing::info!(consumer = %self.settings.consumer, "redis syncer stopped");
    }

    /// `booking-app worker --drain`: syncs until every stream is empty (each entry written and
    /// acknowledged), taking over other consumers' pending entries at once, then returns.
    pub async fn drain(mut self, stop: CancellationToken) -> Result<(), StageError> {
        self.settings.claim_idle = Duration::ZERO;
        loop {
            if let Err(err) = self.settle_ack().await {
                self.metrics.failures.inc();
                self.own_pending = true;
                tracing::warn!(error = %err, "acknowledgement failed; the batch is read again");
            }
            let lag = crate::stage::redis::stream_lag(&mut self.redis, &self.keys)
                .await
                .map_err(classify)?;
            self.metrics.lag.set(lag);
            if lag == 0 {
                tracing::info!("redis streams drained: every booking is in Postgres");
                return Ok(());
            }
            let pass = tokio::select! {
                () = stop.cancelled() => return Err(StageError::Internal(format!("drain interrupted with {lag} entries left"))),
                pass = self.pass() => pass,
            };
            if let Err(err) = pass {
                self.metrics.failures.inc();
                self.own_pending = true;
                tracing::warn!(error = %err, lag, "drain pass failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// One pass: this consumer's unacknowledged entries first, then abandoned ones of others
    /// (every `claim_idle / 2`), then new entries. Returns the number of bookings written.
    pub async fn pass(&mut self) -> Result<usize, StageError> {
        let events = self.events().await?;
        let events = self.unparked(events);
        if events.is_empty() {
            tokio::time::sleep(self.settings.block).await;
            return Ok(0);
        }
        if self.own_pending {
            // What this consumer holds unacknowledged: with no acknowledgement on its way.
            self.settle_ack().await?;
            let batches = self.read(&events, "0", None).await?;
            if batches.iter().all(|b| b.entry_ids.is_empty()) {
                self.own_pending = false;
            }
            return self.sync(batches).await;
        }
        let claim_due = self
            .last_claim
            .is_none_or(|t| t.elapsed() >= self.settings.claim_idle / 2);
        if claim_due {
            self.last_claim = Some(Instant::now());
            self.forget_finished(&events).await?;
            let batches = self.claim_abandoned(&events).await?;
            if !batches.is_empty() {
                return self.sync(batches).await;
            }
        }
        let block = self.settings.block;
        let batches = self.read(&events, ">", Some(block)).await?;
        self.sync(batches).await
    }

    /// Writes each batch, then sends its acknowledgement on its way: the next read and write
    /// overlap it (Redis reads a client's commands 16 KB per event-loop iteration and writes its
    /// replies 64 KB per iteration, so a batch's acknowledgement and the next batch take several
    /// iterations each; one after the other they halved what the syncer kept up with). Only
    /// committed batches are acknowledged, and at most one acknowledgement is on its way.
    /// A batch Postgres refuses, while Postgres answers, parks its event and the others go on;
    /// Postgres unavailable fails the pass.
    async fn sync(&mut self, batches: Vec<Batch>) -> Result<usize, StageError> {
        let mut written = 0;
        for batch in batches.into_iter().filter(|b| !b.entry_ids.is_empty()) {
            let outcome = match write_batch(&self.pool, &batch).await {
                Ok(outcome) => outcome,
                Err(err @ StageError::Unavailable { .. }) => return Err(err),
                Err(err) => {
                    self.park(batch.event_id, &err);
                    continue;
                }
            };
            self.unpark(batch.event_id);
            written += outcome.inserted;
            self.metrics.batches.inc();
            self.metrics.written.inc_by(outcome.inserted as u64);
            tracing::debug!(event = %batch.event_id, entries = batch.entry_ids.len(), inserted = outcome.inserted, "batch synced");
            self.settle_ack().await?;
            let (mut acks, keys) = (self.acks.clone(), self.keys.clone());
            self.acking = Some(tokio::spawn(async move {
                acknowledge(&mut acks, &keys, &batch).await
            }));
        }
        Ok(written)
    }

    /// Waits for the acknowledgement on its way, if any.
    async fn settle_ack(&mut self) -> Result<(), StageError> {
        match self.acking.take() {
            Some(acking) => acking
                .await
                .map_err(|e| StageError::Internal(format!("acknowledgement task: {e}")))?,
            None => Ok(()),
        }
    }

    /// Acknowledges the batch now (see `acknowledge`).
    pub async fn ack(&mut self, batch: &Batch) -> Result<(), StageError> {
        acknowledge(&mut self.redis, &self.keys, batch).await
    }

    /// Refreshes the lag gauge, at most once a second.
    async fn sample_lag(&mut self) {
        if self
            .last_lag_sample
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_lag_sample = Some(Instant::now());
        match crate::stage::redis::stream_lag(&mut self.redis, &self.keys).await {
            Ok(n) => {
                self.metrics.lag.set(n);
            }
            Err(err) => tracing::debug!(error = %err, "stream lag not sampled"),
        }
    }

    /// XREADGROUP over every stream: `from` "0" re-reads this consumer's pending entries, ">"
    /// takes new ones.
    pub async fn read(
        &mut self,
        events: &[Uuid],
        from: &str,
        block: Option<Duration>,
    ) -> Result<Vec<Batch>, StageError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(SYNC_GROUP)
            .arg(&self.settings.consumer)
            .arg("COUNT")
            .arg(self.settings.batch_size);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS");
        for &id in events {
            cmd.arg(self.keys.event(id).stream);
        }
        for _ in events {
            cmd.arg(from);
        }
        let reply: Option<StreamReadReply> = match cmd.query_async(&mut self.redis).await {
            Ok(reply) => reply,
            Err(err) => {
                if err.code() == Some("NOGROUP") {
                    // Redis lost the group (and the stream): create them again next pass.
                    self.grouped.clear();
                    self.events_read = None;
                }
                return Err(classify(err));
            }
        };
        let mut batches = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let event_id = self.keys.event_of_stream(&stream.key).ok_or_else(|| {
                StageError::Internal(format!(
                    "XREADGROUP answered for unknown stream {}",
                    stream.key
                ))
            })?;
            batches.push(self.batch(event_id, stream.ids)?);
        }
        Ok(batches)
    }

    /// Takes over entries other consumers left unacknowledged longer than `claim_idle`.
    pub async fn claim_abandoned(&mut self, events: &[Uuid]) -> Result<Vec<Batch>, StageError> {
        let min_idle = self.settings.claim_idle.as_millis() as u64;
        let mut pipe = redis::pipe();
        for &event_id in events {
            pipe.cmd("XAUTOCLAIM")
                .arg(self.keys.event(event_id).stream)
                .arg(SYNC_GROUP)
                .arg(&self.settings.consumer)
                .arg(min_idle)
                .arg("0-0")
                .arg("COUNT")
                .arg(self.settings.batch_size);
        }
        let replies: Vec<StreamAutoClaimReply> =
            pipe.query_async(&mut self.redis).await.map_err(classify)?;
        let mut batches = Vec::new();
        for (&event_id, reply) in events.iter().zip(replies) {
            if !reply.claimed.is_empty() {
                tracing::info!(event = %event_id, entries = reply.claimed.len(), "took over abandoned stream entries");
                // Claimed entries are this consumer's pending ones now: if this batch fails they
                // are read again with "0".
                self.own_pending = true;
                batches.push(self.batch(event_id, reply.claimed)?);
            }
        }
        Ok(batches)
    }

    fn batch(&self, event_id: Uuid, entries: Vec<StreamId>) -> Result<Batch, StageError> {
        let bookings = entries
            .iter()
            .map(parse_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Batch {
            event_id,
            entry_ids: entries.into_iter().map(|e| e.id).collect(),
            bookings,
        })
    }
}

/// Acknowledges and deletes the batch's entries, and their bookings' unsynced copies, in one
/// MULTI (one event's keys, one slot): an entry is either still pending (and will be written
/// again, harmlessly) or gone with its copy, never acknowledged but left in the stream.
async fn acknowledge(
    redis: &mut ConnectionManager,
    keys: &Keys,
    batch: &Batch,
) -> Result<(), StageError> {
    let keys = keys.event(batch.event_id);
    let ids: Vec<String> = batch
        .bookings
        .iter()
        .map(|b| b.booking.id.to_string())
        .collect();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("XACK")
        .arg(&keys.stream)
        .arg(SYNC_GROUP)
        .arg(&batch.entry_ids)
        .ignore()
        .cmd("XDEL")
        .arg(&keys.stream)
        .arg(&batch.entry_ids)
        .ignore()
        .cmd("HDEL")
        .arg(&keys.unsynced)
        .arg(&ids)
        .ignore();
    pipe.query_async::<()>(redis).await.map_err(classify)?;
    Ok(())
}

/// `booking-app worker --stage redis` and `serve` with RUN_WORKER: the syncer until `stop` (with
/// `--drain`: until the streams are empty).
/// One transaction at a time needs one connection (a second covers a stuck one being replaced).
pub async fn run_from_config(
    config: &Config,
    metrics: &Arc<Metrics>,
    stop: CancellationToken,
) -> Result<(), StageError> {
    let pool = PgPoolOptions::new()
        .max_connections(config.postgres.db_pool_size.clamp(1, 2))
        .acquire_timeout(config.postgres.acquire_timeout())
        .connect_with(
            crate::db::connect_options(&config.postgres)
                .map_err(crate::stage::records::pg_error)?,
        )
        .await
        .map_err(crate::stage::records::pg_error)?;
    let syncer = Syncer::connect(&config.redis, pool)
        .await?
        .with_metrics(SyncMetrics::register(metrics));
    if config.drain {
        return syncer.drain(stop).await;
    }
    syncer.run(stop).await;
    Ok(())
}
