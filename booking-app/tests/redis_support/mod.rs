//! Helpers of the stage-redis tests: a stage under a key prefix of its own (so no other test's
//! syncer touches its streams), syncers driven step by step, and Postgres read behind the API.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use booking_app::config::Config;
use booking_app::domain::{Booking, BookingOutcome, BookingRequest, Event, NewEvent, Stage};
use booking_app::http::Metrics;
use booking_app::stage::redis::RedisInventory;
use booking_app::stage::redis::keys::Keys;
use booking_app::stage::{Inventory, StageError};
use booking_app::worker::redis_sync::{SyncSettings, Syncer};
use booking_app::{db, stage::redis::connection};
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use std::sync::Arc;
use uuid::Uuid;

use crate::common::{EVENTUAL, test_config};

/// Stage redis over its own key prefix, with no syncer running unless a test starts one.
pub struct Isolated {
    pub config: Config,
    pub pool: PgPool,
    pub inventory: RedisInventory,
    pub metrics: Arc<Metrics>,
    pub redis: ConnectionManager,
    pub keys: Keys,
}

impl Isolated {
    pub async fn new(name: &str) -> Isolated {
        let mut config = test_config(Stage::Redis);
        config.redis.redis_key_prefix = format!("test-{name}-{}", Uuid::new_v4());
        config.redis.sync_block_ms = 100;
        config.redis.sync_claim_idle_ms = 300;
        let pool = db::connect(&config.postgres)
            .await
            .expect("connect to Postgres at DATABASE_URL");
        db::migrate(&pool).await.expect("migrations apply");
        let metrics = Arc::new(Metrics::new());
        let inventory = RedisInventory::connect(
            &config.redis,
            config.idempotency.retention(),
            pool.clone(),
            metrics.clone(),
        )
        .await
        .expect("stage redis connects");
        let client = connection::client(&config.redis, "the test").expect("REDIS_URL");
        let redis = connection::connect(&client, Duration::from_secs(5))
            .await
            .expect("connect to Redis");
        let keys = Keys::new(config.redis.redis_key_prefix.clone());
        Isolated {
            config,
            pool,
            inventory,
            metrics,
            redis,
            keys,
        }
    }

    pub async fn event(&self, tickets: i64, per_user_limit: Option<i32>) -> Event {
        let name = format!("redis-test-{}", Uuid::new_v4());
        self.inventory
            .create_event(NewEvent {
                name,
                tickets,
                per_user_limit,
            })
            .await
            .expect("create event")
    }

    pub async fn book(
        &self,
        event: Uuid,
        user: &str,
        quantity: i32,
        key: Option<&str>,
    ) -> Result<Booking, StageError> {
        let request = BookingRequest {
            user_id: user.into(),
            quantity,
        };
        match self
            .inventory
            .book(event, request, key.map(str::to_owned))
            .await?
        {
            BookingOutcome::Confirmed(b) => Ok(b),
            BookingOutcome::Pending(b) => panic!("stage redis answered pending: {b:?}"),
        }
    }

    /// A syncer of this prefix named `consumer`, batches of `batch_size`.
    pub fn syncer(&self, consumer: &str, batch_size: usize) -> Syncer {
        let mut settings = SyncSettings::from_config(&self.config.redis);
        settings.consumer = consumer.into();
        settings.batch_size = batch_size;
        Syncer::new(
            self.redis.clone(),
            self.pool.clone(),
            self.keys.clone(),
            settings,
        )
    }

    /// Runs `syncer` until Postgres holds exactly `expected` as the event's confirmed bookings
    /// and the stream is empty.
    pub async fn sync_until(&self, syncer: &mut Syncer, event: Uuid, expected: &BTreeSet<Uuid>) {
        let started = Instant::now();
        loop {
            if let Err(err) = syncer.pass().await {
                eprintln!("sync pass failed (retrying): {err}");
            }
            let stored: BTreeSet<Uuid> = confirmed_in_db(&self.pool, event)
                .await
                .keys()
                .copied()
                .collect();
            let unexpected: Vec<_> = stored.difference(expected).collect();
            assert!(
                unexpected.is_empty(),
                "Postgres has bookings nobody confirmed: {unexpected:?}"
            );
            if stored == *expected && self.stream_len(event).await == 0 {
                return;
            }
            assert!(
                started.elapsed() < EVENTUAL,
                "Postgres has {} of {} bookings after {EVENTUAL:?}",
                stored.len(),
                expected.len()
            );
        }
    }

    pub async fn stream_len(&self, event: Uuid) -> i64 {
        redis::cmd("XLEN")
            .arg(self.keys.event(event).stream)
            .query_async(&mut self.redis.clone())
            .await
            .expect("XLEN")
    }

    /// Entries delivered to some syncer and not acknowledged.
    pub async fn pending(&self, event: Uuid) -> i64 {
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(self.keys.event(event).stream)
            .arg(booking_app::stage::redis::keys::SYNC_GROUP)
            .query_async(&mut self.redis.clone())
            .await
            .expect("XPENDING");
        match summary {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => *n,
                other => panic!("XPENDING answered {other:?}"),
            },
            other => panic!("XPENDING answered {other:?}"),
        }
    }

    /// Forgets the event in Redis the way a data loss would (`with_stream`: its unsynced
    /// bookings too).
    pub async fn lose_event(&self, event: Uuid, with_stream: bool) {
        let keys = self.keys.event(event);
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&keys.inventory)
            .arg(&keys.holdings)
            .arg(&keys.idempotency);
        if with_stream {
            cmd.arg(&keys.stream).arg(&keys.unsynced);
        }
        let _: i64 = cmd.query_async(&mut self.redis.clone()).await.expect("DEL");
    }

    /// Removes every key of this prefix (the event rows stay in Postgres, like other tests').
    pub async fn cleanup(self) {
        let mut redis = self.redis.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.keys.prefix()))
            .query_async(&mut redis)
            .await
            .expect("KEYS");
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut redis)
                .await
                .expect("DEL");
        }
    }
}

/// Confirmed bookings of the event in Postgres: id -> (user, quantity).
pub async fn confirmed_in_db(pool: &PgPool, event: Uuid) -> BTreeMap<Uuid, (String, i32)> {
    let rows: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "SELECT id, user_id, quantity FROM bookings WHERE event_id = $1 AND status = 'confirmed'",
    )
    .bind(event)
    .fetch_all(pool)
    .await
    .expect("read bookings");
    rows.into_iter().map(|(id, u, q)| (id, (u, q))).collect()
}

/// Postgres agrees with what clients were told: exactly `confirmed`, each once; `remaining` and
/// every user's holding follow from them (a batch applied twice would show here).
pub async fn assert_postgres_consistent(
    pool: &PgPool,
    event: &Event,
    confirmed: &BTreeMap<Uuid, Booking>,
) {
    let stored = confirmed_in_db(pool, event.id).await;
    let stored_ids: BTreeSet<Uuid> = stored.keys().copied().collect();
    let told: BTreeSet<Uuid> = confirmed.keys().copied().collect();
    assert_eq!(
        stored_ids, told,
        "Postgres' confirmed bookings differ from those answered confirmed"
    );
    let sold: i64 = confirmed.values().map(|b| i64::from(b.quantity)).sum();
    let remaining: i64 = sqlx::query_scalar("SELECT remaining FROM events WHERE id = $1")
        .bind(event.id)
        .fetch_one(pool)
        .await
        .expect("read event");
    assert_eq!(
        remaining,
        event.tickets - sold,
        "Postgres remaining != tickets - confirmed tickets"
    );
    let mut expected_holdings: BTreeMap<String, i64> = BTreeMap::new();
    for b in confirmed.values() {
        *expected_holdings.entry(b.user_id.clone()).or_default() += i64::from(b.quantity);
    }
    let holdings: Vec<(String, i32)> = sqlx::query_as(
        "SELECT user_id, quantity FROM holdings WHERE event_id = $1 AND quantity > 0",
    )
    .bind(event.id)
    .fetch_all(pool)
    .await
    .expect("read holdings");
    let holdings: BTreeMap<String, i64> = holdings
        .into_iter()
        .map(|(u, q)| (u, i64::from(q)))
        .collect();
    assert_eq!(
        holdings, expected_holdings,
        "Postgres holdings disagree with the confirmed bookings"
    );
}
