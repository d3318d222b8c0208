//! Stage redis, "the fast cache": one Lua script decides each booking inside Redis and appends it
//! to the event's stream; the write-behind syncer (`worker::redis_sync`) moves the stream into
//! Postgres. No Postgres call on the booking path once the event is loaded.
//!
//! A booking is one round trip to Redis, keyed or not: the script also claims the
//! `Idempotency-Key` (binds it to its event for IDEMPOTENCY_RETENTION, and keeps a refusal's
//! answer in that claim, so the refusal expires with it), because with `appendfsync always` every
//! writing round trip waits for its own fsync, and a separate claim command doubled the fsyncs
//! of keyed bookings. The claim key is global (keys are unique across events), so a keyed
//! script touches a slot outside its event's: stage redis assumes a single Redis primary, not
//! Redis Cluster (see booking.lua's header).

pub mod connection;
pub mod keys;
pub mod load;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisWrite};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::connection::{Pool, classify};
use self::keys::Keys;
use self::load::Loader;
use super::{CheckedBooking, Inventory, StageError, idempotency, records};
use crate::config::RedisConfig;
use crate::domain::{
    Booking, BookingOutcome, BookingRequest, Event, NewEvent, RejectReason, Stage,
};
use crate::metrics::Metrics;

/// The booking decision (see the script's header for its keys, arguments and answers).
pub const BOOKING_SCRIPT: &str = include_str!("booking.lua");

/// How often the stream-lag gauge is refreshed.
const LAG_SAMPLE_PERIOD: Duration = Duration::from_secs(2);

pub struct RedisInventory {
    /// Reads, loads and the lag sampler (the pool's first connection).
    redis: ConnectionManager,
    /// The booking scripts, spread over `REDIS_CONNECTIONS` connections.
    bookings: Pool,
    pool: PgPool,
    keys: Keys,
    booking_script: redis::Script,
    /// How long a key's claim (and a refusal's answer in it) lives: IDEMPOTENCY_RETENTION. A
    /// confirmed answer stays in the event's idempotency hash as long as the event is in Redis.
    claim_ttl_secs: u64,
    loader: Loader,
    /// Stops the lag sampler when the stage is dropped.
    sampler: CancellationToken,
}

impl RedisInventory {
    /// Connects, loads the scripts once (later calls are EVALSHA; a Redis that lost its script
    /// cache gets them again on NOSCRIPT), and starts the stream-lag gauge.
    pub async fn connect(
        config: &RedisConfig,
        retention: Duration,
        pool: PgPool,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StageError> {
        let client = connection::client(config, "stage redis")?;
        let bookings =
            Pool::connect(&client, config.response_timeout(), config.redis_connections).await?;
        let mut redis = bookings.get();
        let keys = Keys::new(config.redis_key_prefix.clone());
        let booking_script = redis::Script::new(BOOKING_SCRIPT);
        booking_script
            .prepare_invoke()
            .load_async(&mut redis)
            .await
            .map_err(classify)?;
        let claim_ttl_secs = retention.as_secs().max(1);
        let loader = Loader::new(redis.clone(), pool.clone(), keys.clone(), claim_ttl_secs);
        loader.prepare(&mut redis).await?;

        let lag = Gauge::default();
        metrics.register(
            "redis_stream_lag",
            "Confirmed bookings in Redis not yet written to Postgres",
            lag.clone(),
        );
        let sampler = CancellationToken::new();
        tokio::spawn(sample_lag(
            redis.clone(),
            keys.clone(),
            lag,
            sampler.clone(),
        ));

        Ok(Self {
            redis,
            bookings,
            pool,
            keys,
            booking_script,
            claim_ttl_secs,
            loader,
            sampler,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// One EVALSHA: with a key, the script also claims it (KEYS[6], global: keys are unique
    /// across events, so this one key is outside the event's hash slot; a single Redis primary
    /// is assumed). Without a key only the event's own keys are passed. A Redis that lost its
    /// script cache (restart) answers NOSCRIPT: the script is loaded and the call made again.
    async fn run_booking_script(
        &self,
        booking: &Booking,
        key: &str,
    ) -> Result<Verdict, StageError> {
        let call = booking_call(
            &self.keys,
            self.booking_script.get_hash(),
            booking,
            key,
            self.claim_ttl_secs,
        )?;
        let mut redis = self.bookings.get();
        let reply: redis::Value = match call.query_async(&mut redis).await {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                self.booking_script
                    .prepare_invoke()
                    .load_async(&mut redis)
                    .await
                    .map_err(classify)?;
                call.query_async(&mut redis).await
            }
            reply => reply,
        }
        .map_err(classify)?;
        Verdict::parse(&reply)
    }
}

impl Drop for RedisInventory {
    fn drop(&mut self) {
        self.sampler.cancel();
    }
}

/// The booking script's EVALSHA command (its arguments as booking.lua's header lists them),
/// every key and argument written straight into the command's one buffer: the booking's JSON is
/// serialized there, the key names formatted there.
fn booking_call(
    keys: &Keys,
    script_hash: &str,
    booking: &Booking,
    key: &str,
    claim_ttl_secs: u64,
) -> Result<redis::Cmd, StageError> {
    let mut call = redis::Cmd::with_capacity(16, 1024);
    call.arg("EVALSHA")
        .arg(script_hash)
        .arg(if key.is_empty() { 5 } else { 6 });
    keys.write_event_args(&mut call, booking.event_id);
    if !key.is_empty() {
        keys.write_key_claim_arg(&mut call, key);
    }
    call.arg(&booking.user_id).arg(booking.quantity).arg(key);
    serde_json::to_writer(call.writer_for_next_arg(), booking)
        .map_err(|e| StageError::Internal(e.to_string()))?;
    call.write_arg_fmt(booking.id);
    call.write_arg_fmt(booking.event_id);
    call.arg(claim_ttl_secs);
    Ok(call)
}

/// What the booking script answered.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The key is bound to another event.
    Reused,
    Missing,
    Replay(String),
    Rejected {
        reason: RejectReason,
        count: i64,
    },
    Confirmed,
}

impl Verdict {
    /// Reads the script's answer in place (an array of bulk strings).
    fn parse(reply: &redis::Value) -> Result<Self, StageError> {
        let bad = || StageError::Internal(format!("booking script answered {reply:?}"));
        let redis::Value::Array(items) = reply else {
            return Err(bad());
        };
        let text = |i: usize| match items.get(i) {
            Some(redis::Value::BulkString(bytes)) => std::str::from_utf8(bytes).ok(),
            Some(redis::Value::SimpleString(s)) => Some(s.as_str()),
            _ => None,
        };
        let count = |i: usize| text(i).and_then(|v| v.parse::<i64>().ok()).ok_or_else(bad);
        match text(0) {
            Some("reused") => Ok(Verdict::Reused),
            Some("missing") => Ok(Verdict::Missing),
            Some("replay") => Ok(Verdict::Replay(text(1).ok_or_else(bad)?.to_owned())),
            Some("confirmed") => Ok(Verdict::Confirmed),
            Some("rejected") => {
                let reason = text(1).and_then(records::parse_reason).ok_or_else(bad)?;
                Ok(Verdict::Rejected {
                    reason,
                    count: count(2)?,
                })
            }
            _ => Err(bad()),
        }
    }
}

/// Postgres stores microseconds: the booking answered now and the row read later must be equal.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

fn rejection(reason: RejectReason, count: i64, request: &BookingRequest) -> StageError {
    let detail = match reason {
        RejectReason::SoldOut => format!("{count} tickets left, {} asked for", request.quantity),
        RejectReason::PerUserLimit => {
            format!(
                "user {} holds {count} tickets, {} more would exceed the limit",
                request.user_id, request.quantity
            )
        }
        RejectReason::IdempotencyKeyReused => StageError::IdempotencyKeyReused.to_string(),
    };
    StageError::Rejected { reason, detail }
}

#[async_trait]
impl Inventory for RedisInventory {
    fn stage(&self) -> Stage {
        Stage::Redis
    }

    /// Postgres keeps the event; Redis gets its inventory at once (and again whenever it is
    /// missing, so a failed load here only costs the first booking a Postgres read).
    async fn create_event(&self, new: NewEvent) -> Result<Event, StageError> {
        let event = records::insert_event(&self.pool, &new).await?;
        if let Err(err) = self.loader.load(event.id).await {
            tracing::warn!(event = %event.id, error = %err, "event created; loading it into Redis failed, it loads on first use");
        }
        Ok(event)
    }

    /// Redis is this stage's truth for `remaining`: it knows bookings Postgres has not seen yet.
    async fn get_event(&self, id: Uuid) -> Result<Event, StageError> {
        for _ in 0..2 {
            if let Some(event) = self.loader.read(id).await? {
                return Ok(event);
            }
            self.loader.load(id).await?;
        }
        Err(StageError::Internal(format!(
            "event {id} vanished from Redis right after loading"
        )))
    }

    async fn book_checked(&self, booking: CheckedBooking) -> Result<BookingOutcome, StageError> {
        let (event_id, request, key) = booking.into_parts();
        // The script takes "" for no key (a checked key is never empty).
        let key = key.unwrap_or_default();
        // A time-ordered id (UUIDv7): the syncer's inserts then append to the primary key's
        // btree instead of dirtying a random leaf page per booking (and, after each checkpoint,
        // writing each such page whole to the WAL).
        let booking = Booking::confirmed(Uuid::now_v7(), event_id, &request, now_micros());

        // A missing event is loaded and the script run again; twice missing means it vanished
        // again in between (Redis restarted empty twice): let the client retry. A run that
        // answered missing claimed nothing (the script checks the event first).
        for _ in 0..2 {
            match self.run_booking_script(&booking, &key).await? {
                Verdict::Reused => return Err(StageError::IdempotencyKeyReused),
                Verdict::Missing => self.loader.load(event_id).await?,
                Verdict::Replay(first) => {
                    let first: Booking = serde_json::from_str(&first)
                        .map_err(|e| StageError::Internal(format!("stored answer: {e}")))?;
                    return idempotency::replay(first, event_id, &request);
                }
                Verdict::Rejected { reason, count } => {
                    return Err(rejection(reason, count, &request));
                }
                Verdict::Confirmed => return Ok(BookingOutcome::Confirmed(booking)),
            }
        }
        Err(StageError::Unavailable {
            store: "redis",
            detail: format!("event {event_id} keeps disappearing"),
        })
    }

    /// Redis first (bookings not synced yet), then Postgres. In that order a booking the syncer
    /// writes meanwhile is found in one place or the other: it leaves Redis after the commit.
    /// A booking id does not name its event, so every watched event's unsynced hash is asked,
    /// in one round trip (the syncer stops watching events that are sold out and synced).
    async fn get_booking(&self, id: Uuid) -> Result<Booking, StageError> {
        let mut redis = self.redis.clone();
        let events: Vec<String> = redis
            .smembers(self.keys.event_index())
            .await
            .map_err(classify)?;
        let mut pipe = redis::pipe();
        for event in events.iter().filter_map(|e| e.parse::<Uuid>().ok()) {
            pipe.hget(self.keys.event(event).unsynced, id.to_string());
        }
        let found: Vec<Option<String>> = pipe.query_async(&mut redis).await.map_err(classify)?;
        if let Some(json) = found.into_iter().flatten().next() {
            return serde_json::from_str(&json)
                .map_err(|e| StageError::Internal(format!("unsynced booking: {e}")));
        }
        records::fetch_booking(&self.pool, id).await
    }

    async fn watch_booking(&self, id: Uuid) -> Result<BoxStream<'static, Booking>, StageError> {
        let booking = self.get_booking(id).await?;
        Ok(Box::pin(futures::stream::once(async move { booking })))
    }

    async fn ready(&self) -> Result<(), StageError> {
        let mut redis = self.redis.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut redis)
            .await
            .map_err(classify)?;
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(records::pg_error)?;
        Ok(())
    }
}

/// Unsynced bookings = the length of every event's stream (synced entries are deleted).
pub async fn stream_lag(
    redis: &mut ConnectionManager,
    keys: &Keys,
) -> Result<i64, redis::RedisError> {
    let events: Vec<String> = redis.smembers(keys.event_index()).await?;
    let mut pipe = redis::pipe();
    for id in events.iter().filter_map(|e| e.parse::<Uuid>().ok()) {
        pipe.xlen(keys.event(id).stream);
    }
    let lengths: Vec<i64> = pipe.query_async(redis).await?;
    Ok(lengths.iter().sum())
}

async fn sample_lag(mut redis: ConnectionManager, keys: Keys, lag: Gauge, stop: CancellationToken) {
    loop {
        match stream_lag(&mut redis, &keys).await {
            Ok(n) => {
                lag.set(n);
            }
            Err(err) => tracing::debug!(error = %err, "stream lag not sampled"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LAG_SAMPLE_PERIOD) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(items: &[&str]) -> redis::Value {
        redis::Value::Array(
            items
                .iter()
                .map(|s| redis::Value::BulkString(s.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn script_answers_parse() {
        assert_eq!(
            Verdict::parse(&reply(&["reused"])).unwrap(),
            Verdict::Reused
        );
        assert_eq!(
            Verdict::parse(&reply(&["missing"])).unwrap(),
            Verdict::Missing
        );
        assert_eq!(
            Verdict::parse(&reply(&["confirmed", "7"])).unwrap(),
            Verdict::Confirmed
        );
        assert_eq!(
            Verdict::parse(&reply(&["replay", "{}"])).unwrap(),
            Verdict::Replay("{}".into())
        );
        assert_eq!(
            Verdict::parse(&reply(&["rejected", "sold_out", "0"])).unwrap(),
            Verdict::Rejected {
                reason: RejectReason::SoldOut,
                count: 0
            }
        );
        assert_eq!(
            Verdict::parse(&reply(&["rejected", "per_user_limit", "2"])).unwrap(),
            Verdict::Rejected {
                reason: RejectReason::PerUserLimit,
                count: 2
            }
        );
        assert!(Verdict::parse(&reply(&["rejected", "weather", "1"])).is_err());
        assert!(Verdict::parse(&reply(&[])).is_err());
    }

    /// The command built in one buffer is the call the script's interface describes: the same
    /// bytes as the call built argument by argument from the named keys.
    #[test]
    fn booking_call_is_the_scripts_interface() {
        let keys = Keys::new("test:run-1");
        let script = redis::Script::new(BOOKING_SCRIPT);
        let request = BookingRequest {
            user_id: "user-1".into(),
            quantity: 2,
        };
        let booking = Booking::confirmed(Uuid::new_v4(), Uuid::new_v4(), &request, now_micros());
        for key in ["", "key-7"] {
            let mut expected = redis::cmd("EVALSHA");
            expected
                .arg(script.get_hash())
                .arg(if key.is_empty() { 5 } else { 6 });
            for k in keys.event(booking.event_id).as_array() {
                expected.arg(k);
            }
            if !key.is_empty() {
                expected.arg(keys.key_claim(key));
            }
            expected
                .arg(&booking.user_id)
                .arg(booking.quantity)
                .arg(key)
                .arg(serde_json::to_string(&booking).unwrap())
                .arg(booking.id.to_string())
                .arg(booking.event_id.to_string())
                .arg(86_400);
            let built = booking_call(&keys, script.get_hash(), &booking, key, 86_400).unwrap();
            assert_eq!(
                built.get_packed_command(),
                expected.get_packed_command(),
                "key {key:?}"
            );
        }
    }

    #[test]
    fn answered_timestamps_survive_postgres_precision() {
        let t = now_micros();
        assert_eq!(t.timestamp_subsec_nanos() % 1000, 0);
    }
}
