//! Test harness: booking-app of a given stage, over the real services of `hack/services.sh`,
//! served on a real TCP port so concurrency is real. A stage plugs in through
//! `booking_app::stage::build_inventory` and, when `worker::needed(stage)`, its background worker
//! is started here beside the server (the hook for stages redis and kafka).
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod auth;
pub mod checks;
pub mod client;
pub mod process;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use booking_app::config::{Config, PostgresDecide};
use booking_app::domain::Stage;
use booking_app::http::{self, AppState, Metrics};
use booking_app::{db, server, stage, worker};
use clap::Parser;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest a test waits for something eventual (a queued booking decided, a write-behind landed).
/// Only bounds a hang; never asserted as a performance number.
pub const EVENTUAL: Duration = Duration::from_secs(60);

/// The client the harnesses send requests with: as the harness's admin, no proxy, keeping up
/// to `idle` connections per host, each request bounded by `EVENTUAL`.
pub fn harness_client(idle: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(auth::default_headers())
        .no_proxy()
        .pool_max_idle_per_host(idle)
        .timeout(EVENTUAL)
        .build()
        .expect("HTTP client")
}

/// The environment variable each stage needs from `hack/.services.env`.
pub fn required_env(stage: Stage) -> &'static [&'static str] {
    match stage {
        Stage::Postgres => &["DATABASE_URL"],
        Stage::Redis => &["DATABASE_URL", "REDIS_URL"],
        Stage::Kafka => &["DATABASE_URL", "KAFKA_BROKERS"],
    }
}

/// Panics, naming the fix, when a service's settings are missing: never skip silently.
pub fn require_services(stage: Stage) {
    for var in required_env(stage) {
        if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
            panic!(
                "{var} is not set: run `hack/services.sh up` and `. hack/.services.env` \
                 (or just `make test`) before testing stage {stage}"
            );
        }
    }
}

/// The configuration a test app runs with: the services from the environment, test-friendly
/// limits, everything else at its production default.
pub fn test_config(stage: Stage) -> Config {
    require_services(stage);
    Config::try_parse_from([
        "booking-app",
        "--stage",
        stage.as_str(),
        "--listen-addr",
        "127.0.0.1:0",
        "--db-pool-size",
        "16",
        // Hundreds of concurrent requests queue for 16 connections: wait rather than answer 503.
        "--db-acquire-timeout-ms",
        "60000",
        "--request-timeout-ms",
        "60000",
    ])
    .map(|mut config: Config| {
        config.auth = auth::config();
        if stage == Stage::Kafka {
            // A topic and consumer group per test: tests run in parallel on one broker.
            let unique = format!("test-{}", uuid::Uuid::new_v4().simple());
            config.kafka.kafka_consumer_group = format!("{unique}-workers");
            config.kafka.kafka_topic = unique;
            config.kafka.kafka_partitions = 3;
        }
        config
    })
    .expect("test configuration parses")
}

/// What a test runs: a stage, and the settings that select one of its forms.
#[derive(Clone, Copy)]
pub struct Target {
    pub stage: Stage,
    pub configure: fn(&mut Config),
}

impl From<Stage> for Target {
    fn from(stage: Stage) -> Self {
        Target {
            stage,
            configure: |_| {},
        }
    }
}

/// Stage postgres deciding the bookings waiting for one event together (the default).
pub fn decide_in_batches(config: &mut Config) {
    config.postgres.postgres_decide = PostgresDecide::Batch;
}

/// Stage postgres with one transaction per booking.
pub fn decide_per_booking(config: &mut Config) {
    config.postgres.postgres_decide = PostgresDecide::PerBooking;
}

/// A running booking-app: its base URL, an HTTP client, and a Postgres pool for checking
/// invariants behind the API's back.
pub struct TestApp {
    pub stage: Stage,
    pub config: Config,
    pub base_url: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    worker: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The databases (by URL) this test binary has migrated.
static MIGRATED: tokio::sync::Mutex<BTreeSet<String>> =
    tokio::sync::Mutex::const_new(BTreeSet::new());

impl TestApp {
    pub async fn spawn(target: impl Into<Target>) -> TestApp {
        Self::spawn_with(target, |_| {}).await
    }

    /// Like `spawn`, with the configuration adjusted first (e.g. a unique Kafka topic per test).
    pub async fn spawn_with(
        target: impl Into<Target>,
        customize: impl FnOnce(&mut Config),
    ) -> TestApp {
        let Target { stage, configure } = target.into();
        let mut config = test_config(stage);
        configure(&mut config);
        customize(&mut config);
        Self::spawn_config(config).await
    }

    /// A booking-app of `config.stage` with exactly `config` (e.g. stores a test started itself).
    pub async fn spawn_config(config: Config) -> TestApp {
        let stage = config.stage;
        let pool = db::connect(&config.postgres)
            .await
            .expect("connect to Postgres at DATABASE_URL (is `hack/services.sh up` running?)");
        {
            // Once per database and test binary: concurrent first-time migrations would race
            // on the catalog.
            let mut migrated = MIGRATED.lock().await;
            if !migrated.contains(&config.postgres.database_url) {
                db::migrate(&pool).await.expect("migrations apply");
                migrated.insert(config.postgres.database_url.clone());
            }
        }
        let metrics = Arc::new(Metrics::new());
        let authenticator = auth::authenticator(&config).await;
        let inventory = stage::build_inventory(&config, pool.clone(), metrics.clone())
            .await
            .unwrap_or_else(|err| panic!("build stage {stage}: {err}"));
        let shutdown = CancellationToken::new();
        // As `serve` runs it: stored refusals expire.
        tokio::spawn(booking_app::stage::retention::run(
            pool.clone(),
            config.idempotency.retention(),
            metrics.clone(),
            shutdown.child_token(),
        ));
        // Hook for asynchronous stages: their worker runs beside the server, stopped with it.
        let worker = worker::needed(stage)
            .then(|| tokio::spawn(worker::run(config.clone(), shutdown.child_token())));
        let listener = tokio::net::TcpListener::bind(config.listen_addr)
            .await
            .expect("bind a free port");
        let addr = listener.local_addr().expect("local address");
        let router = http::app(AppState {
            inventory,
            metrics: metrics.clone(),
            limits: config.http.clone(),
            auth: authenticator,
        });
        let server = tokio::spawn(server::serve(
            listener,
            router,
            shutdown.clone().cancelled_owned(),
        ));
        // Requests that name no user come from the harness's admin (`auth::DEFAULT_USER`).
        let http = harness_client(512);
        TestApp {
            stage,
            config,
            base_url: format!("http://{addr}"),
            http,
            pool,
            metrics,
            shutdown,
            server: Some(server),
            worker,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Panics when the stage's worker has stopped: a test waiting for it would only time out.
    pub fn assert_worker_alive(&self) {
        if let Some(worker) = &self.worker
            && worker.is_finished()
        {
            panic!(
                "the {} worker stopped while the test needed it (see its log above)",
                self.stage
            );
        }
    }

    /// Graceful shutdown: stop accepting, finish in-flight requests, stop the worker.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
        if let Some(worker) = self.worker.take() {
            worker
                .await
                .expect("worker task")
                .expect("worker stops cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A database of its own on the test server, migrated, for a test whose app changes rows other
/// tests wrote (a short `IDEMPOTENCY_RETENTION` deletes every old refusal it finds). Returns its
/// URL; `drop_database` removes it.
pub async fn own_database(purpose: &str) -> String {
    require_services(Stage::Postgres);
    let shared = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let name = format!("test_{purpose}_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPool::connect(&shared)
        .await
        .expect("connect to Postgres at DATABASE_URL");
    // The name is ours: a fixed purpose and a UUID.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    admin.close().await;
    let mut url = reqwest::Url::parse(&shared).expect("DATABASE_URL is a URL");
    url.set_path(&name);
    let pool = PgPool::connect(url.as_str()).await.expect("connect to it");
    db::migrate(&pool).await.expect("migrations apply");
    pool.close().await;
    url.to_string()
}

/// Removes a database `own_database` made (its connections are closed first).
pub async fn drop_database(url: &str) {
    let name = reqwest::Url::parse(url).expect("a URL").path()[1..].to_string();
    let shared = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let admin = PgPool::connect(&shared).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap_or_else(|e| panic!("DROP DATABASE {name}: {e}"));
}

/// Logs of the app under test go to the test's captured output (`RUST_LOG` to adjust).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
