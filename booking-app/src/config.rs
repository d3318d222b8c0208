//! Every setting of booking-app, each a flag and an environment variable: this is the contract
//! the operator writes into pods (README "Configuration contract"). One struct, one sub-struct per
//! store, so a stage adds its settings next to its store's. A setting the operator writes is
//! named by the `flashsale-contract` crate (`env = env::NAME`, `long = flag::NAME`), which the
//! operator builds its pods from; the others are named here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use flashsale_contract::{env, flag};

use crate::domain::Stage;

/// `booking-app <command>`.
#[derive(Debug, Parser)]
#[command(
    name = "booking-app",
    version,
    about = "The flash-sale booking service"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogConfig,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (migrates first unless MIGRATE_ON_START=false).
    #[command(name = flashsale_contract::CMD_SERVE)]
    Serve(Config),
    /// Run the stage's background worker (stage redis: write-behind syncer; stage kafka: consumer).
    #[command(name = flashsale_contract::CMD_WORKER)]
    Worker(Config),
    /// Apply the embedded database migrations and exit.
    Migrate(MigrateConfig),
    /// Print bearer tokens signed with AUTH_HS256_SECRET_FILE (local use, scripts).
    Token(crate::auth::TokenArgs),
    /// Drive load against a running booking-app and check the sale afterwards.
    #[command(name = flashsale_contract::CMD_LOADGEN)]
    Loadgen(crate::loadgen::LoadgenArgs),
    /// The benchmark's floor: an axum endpoint that books nothing (`make bench`; never a service).
    #[command(hide = true)]
    BareServe(crate::loadgen::bare::BareServeArgs),
}

/// Settings of `serve` and `worker`.
#[derive(Debug, Clone, Parser)]
#[command(name = "booking-app")]
pub struct Config {
    /// Which inventory implementation decides bookings.
    #[arg(long, env = env::STAGE, value_enum, default_value_t = Stage::Postgres)]
    pub stage: Stage,

    /// Address the HTTP API listens on.
    #[arg(long, env = env::LISTEN_ADDR,
          default_value_t = SocketAddr::from(([0, 0, 0, 0], flashsale_contract::HTTP_PORT)))]
    pub listen_addr: SocketAddr,

    /// Apply the embedded migrations before serving.
    #[arg(long, env = env::MIGRATE_ON_START, default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// Also run the stage's background worker inside `serve` (stages redis and kafka), so one
    /// `serve` is a complete deployment. The operator sets it to false and runs a worker
    /// Deployment instead.
    #[arg(long, env = env::RUN_WORKER, default_value_t = true, action = clap::ArgAction::Set)]
    pub run_worker: bool,

    /// `worker` only: work off the stage's backlog, then exit 0 (stage redis: every stream entry
    /// written to Postgres and acknowledged; stage kafka: the group's committed offsets at the end of
    /// every partition). The operator's drain Job before a stage change.
    #[arg(long = flag::DRAIN, default_value_t = false)]
    pub drain: bool,

    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub postgres: PostgresConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub sale_event: SaleEventConfig,
    #[command(flatten)]
    pub auth: crate::auth::AuthConfig,
    #[command(flatten)]
    pub idempotency: IdempotencyConfig,
}

/// How long what a key's first use left behind is kept (`stage::retention`).
#[derive(Debug, Clone, Args)]
pub struct IdempotencyConfig {
    /// How long a stored refusal (and, at stage redis, a key's claim on its event) is kept, e.g.
    /// `24h`, `30m`, `90s`: a retry after it is a new request. `serve` deletes older refusals
    /// from Postgres; a confirmed booking is never deleted and keeps its key.
    #[arg(long, env = "IDEMPOTENCY_RETENTION", default_value = "24h",
          value_parser = crate::duration::parse_duration)]
    pub idempotency_retention: Duration,
}

impl IdempotencyConfig {
    /// At least a second: Redis expires in whole seconds.
    pub fn retention(&self) -> Duration {
        self.idempotency_retention.max(Duration::from_secs(1))
    }
}

/// Limits of the HTTP layer.
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// A request still running after this long is answered 503 `timeout`.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Largest accepted request body; larger ones are answered 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// Most API requests inside the stage at once; as many more may wait ADMISSION_WAIT_MS for a
    /// place, the rest are answered 503 + Retry-After at once. Default per stage (postgres 512,
    /// redis 1024, kafka 2048); the operator sets it from the calibrated capacity and the SLO.
    #[arg(long, env = env::MAX_IN_FLIGHT, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: Option<u32>,

    /// How long a request past MAX_IN_FLIGHT waits for a place before it is answered 503.
    #[arg(long, env = env::ADMISSION_WAIT_MS, default_value_t = 100)]
    pub admission_wait_ms: u64,

    /// Most status streams (`GET /bookings/{id}/events`) open at once; more are answered 503.
    #[arg(long, env = "MAX_STREAMS", default_value_t = 1024)]
    pub max_streams: usize,

    /// Serve `/metrics` (and `/healthz`) on this address of its own, and no longer on
    /// LISTEN_ADDR: a NetworkPolicy can then open the API to clients and the metrics only to the
    /// scrapers. Unset: `/metrics` is on LISTEN_ADDR beside the API.
    #[arg(long, env = env::METRICS_LISTEN_ADDR)]
    pub metrics_listen_addr: Option<SocketAddr>,
}

impl HttpConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// PostgreSQL: the source of truth of every stage.
#[derive(Debug, Clone, Args)]
pub struct PostgresConfig {
    /// postgres://user:password@host:port/database; may carry `sslmode` and `sslrootcert`.
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// TLS to Postgres, as libpq's `sslmode`; overrides the URL's. `verify-full` checks the
    /// server's certificate against DB_SSL_ROOT_CERT (or the system's roots) and its host name.
    #[arg(long, env = env::DB_SSL_MODE, value_enum)]
    pub db_ssl_mode: Option<DbSslMode>,

    /// PEM file of the CA(s) the Postgres server's certificate must chain to (`sslrootcert`).
    #[arg(long, env = env::DB_SSL_ROOT_CERT)]
    pub db_ssl_root_cert: Option<PathBuf>,

    /// PEM file of this client's certificate, for a server that asks for one (`sslcert`).
    #[arg(long, env = env::DB_SSL_CLIENT_CERT, requires = "db_ssl_client_key")]
    pub db_ssl_client_cert: Option<PathBuf>,

    /// PEM file of that certificate's private key (`sslkey`).
    #[arg(long, env = env::DB_SSL_CLIENT_KEY, requires = "db_ssl_client_cert")]
    pub db_ssl_client_key: Option<PathBuf>,

    /// Connections this process keeps open (per pod: the operator divides max_connections).
    #[arg(long, env = env::DB_POOL_SIZE, default_value_t = 16)]
    pub db_pool_size: u32,

    /// How long a request waits for a free connection before it is answered 503.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_acquire_timeout_ms: u64,

    /// Postgres `statement_timeout` of every connection: a statement running longer is cancelled
    /// (503 on the API, retried by workers). 0 turns it off.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_statement_timeout_ms: u64,

    /// Postgres `lock_timeout`: a booking waiting this long for its event's row lock gives up (503)
    /// instead of queueing behind the lock without bound. 0 turns it off.
    #[arg(long, env = "DB_LOCK_TIMEOUT_MS", default_value_t = 2_000)]
    pub db_lock_timeout_ms: u64,

    /// Stage postgres: decide the bookings waiting for one event together, one transaction per
    /// batch (`batch`), or one transaction per booking (`per-booking`, the benchmark's baseline).
    #[arg(long, env = "POSTGRES_DECIDE", value_enum, default_value_t = PostgresDecide::Batch)]
    pub postgres_decide: PostgresDecide,

    /// Stage postgres, batch: most bookings of one event decided in one transaction.
    #[arg(long, env = "POSTGRES_BATCH_SIZE", default_value_t = 256)]
    pub postgres_batch_size: usize,

    /// Stage postgres, batch: most bookings of one event waiting for their batch in this
    /// process; beyond it a booking is answered 503 with Retry-After.
    #[arg(long, env = "POSTGRES_QUEUE_CAPACITY", default_value_t = 1_024)]
    pub postgres_queue_capacity: usize,
}

/// How stage postgres decides bookings. Either way the event's row is locked `FOR UPDATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PostgresDecide {
    /// The bookings waiting for an event are decided together: one lock, one commit per batch.
    Batch,
    /// One transaction per booking.
    PerBooking,
}

/// libpq's `sslmode` values (booking-app's Postgres client is sqlx over rustls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DbSslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl PostgresConfig {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.db_acquire_timeout_ms)
    }
}

/// Redis (stage redis).
#[derive(Debug, Clone, Args)]
pub struct RedisConfig {
    /// redis://host:port/db, or rediss://… for TLS — required by stage redis.
    #[arg(long, env = env::REDIS_URL, hide_env_values = true)]
    pub redis_url: Option<String>,

    /// With a rediss:// URL: PEM file of the CA(s) the server's certificate must chain to
    /// (default: the system's roots).
    #[arg(long, env = env::REDIS_TLS_CA_FILE)]
    pub redis_tls_ca_file: Option<PathBuf>,

    /// With a rediss:// URL: PEM file of this client's certificate, for a server that asks for
    /// one (`tls-auth-clients`).
    #[arg(long, env = env::REDIS_TLS_CERT_FILE, requires = "redis_tls_key_file")]
    pub redis_tls_cert_file: Option<PathBuf>,

    /// PEM file of that certificate's private key.
    #[arg(long, env = env::REDIS_TLS_KEY_FILE, requires = "redis_tls_cert_file")]
    pub redis_tls_key_file: Option<PathBuf>,

    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(long, env = env::REDIS_KEY_PREFIX, default_value = "flashsale")]
    pub redis_key_prefix: String,

    /// A Redis command unanswered this long fails (503); with `appendfsync always` a write waits
    /// for its fsync.
    #[arg(long, env = "REDIS_RESPONSE_TIMEOUT_MS", default_value_t = 5_000)]
    pub redis_response_timeout_ms: u64,

    /// Stage redis: multiplexed connections the API's bookings are spread over, round-robin.
    /// Redis reads at most 16 KB per connection per event-loop iteration and fsyncs once per
    /// iteration (`appendfsync always`), so one connection caps the bookings per fsync; 16 keep
    /// 256 waiting bookings (~750 B each) within one iteration's reads.
    #[arg(long, env = "REDIS_CONNECTIONS", default_value_t = 16)]
    pub redis_connections: usize,

    /// Write-behind syncer: most stream entries written to Postgres in one transaction.
    #[arg(long, env = "SYNC_BATCH_SIZE", default_value_t = 500)]
    pub sync_batch_size: usize,

    /// Write-behind syncer: how long one read waits for new bookings.
    #[arg(long, env = "SYNC_BLOCK_MS", default_value_t = 1_000)]
    pub sync_block_ms: u64,

    /// Write-behind syncer: entries another syncer left unacknowledged this long are taken over
    /// (it crashed). Longer than the slowest batch write.
    #[arg(long, env = "SYNC_CLAIM_IDLE_MS", default_value_t = 30_000)]
    pub sync_claim_idle_ms: u64,

    /// Write-behind syncer: consumer name in the stream's group. Default `$HOSTNAME-<pid>`, which
    /// in a pod is the pod's name: a restarted container resumes its own unacknowledged entries.
    #[arg(long, env = "SYNC_CONSUMER")]
    pub sync_consumer: Option<String>,
}

impl RedisConfig {
    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_response_timeout_ms)
    }

    /// `sync_consumer`, or `$HOSTNAME-<pid>`; a second syncer in one process gets a suffix.
    pub fn sync_consumer_name(&self) -> String {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SYNCERS: AtomicUsize = AtomicUsize::new(0);
        let base = self.sync_consumer.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "syncer".into());
            format!("{host}-{}", std::process::id())
        });
        match SYNCERS.fetch_add(1, Ordering::Relaxed) {
            0 => base,
            n => format!("{base}-{}", n + 1),
        }
    }
}

/// Kafka (stage kafka).
#[derive(Debug, Clone, Args)]
pub struct KafkaConfig {
    /// Comma-separated bootstrap servers host:port — required by stage kafka.
    #[arg(long, env = env::KAFKA_BROKERS)]
    pub kafka_brokers: Option<String>,

    /// How every Kafka client (producer, consumers, admin) talks to the brokers, as librdkafka's
    /// `security.protocol`: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(long, env = env::KAFKA_SECURITY_PROTOCOL, value_enum, ignore_case = true,
        default_value_t = KafkaSecurityProtocol::Plaintext)]
    pub kafka_security_protocol: KafkaSecurityProtocol,

    /// SSL, SASL_SSL: PEM file of the CA(s) the brokers' certificates must chain to (default:
    /// the system's roots). Broker host names are verified either way.
    #[arg(long, env = env::KAFKA_SSL_CA_FILE)]
    pub kafka_ssl_ca_file: Option<PathBuf>,

    /// SSL, SASL_SSL: PEM file of this client's certificate, for brokers that ask for one.
    #[arg(long, env = env::KAFKA_SSL_CERT_FILE, requires = "kafka_ssl_key_file")]
    pub kafka_ssl_cert_file: Option<PathBuf>,

    /// PEM file of that certificate's private key.
    #[arg(long, env = env::KAFKA_SSL_KEY_FILE, requires = "kafka_ssl_cert_file")]
    pub kafka_ssl_key_file: Option<PathBuf>,

    /// SASL_PLAINTEXT, SASL_SSL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = env::KAFKA_SASL_MECHANISM, value_enum, ignore_case = true)]
    pub kafka_sasl_mechanism: Option<KafkaSaslMechanism>,

    /// SASL user name.
    #[arg(long, env = env::KAFKA_SASL_USERNAME)]
    pub kafka_sasl_username: Option<String>,

    /// SASL password (prefer KAFKA_SASL_PASSWORD_FILE: a file is not in the process's
    /// environment).
    #[arg(
        long,
        env = "KAFKA_SASL_PASSWORD",
        hide_env_values = true,
        conflicts_with = "kafka_sasl_password_file"
    )]
    pub kafka_sasl_password: Option<String>,

    /// File holding the SASL password (one trailing newline is ignored).
    #[arg(long, env = env::KAFKA_SASL_PASSWORD_FILE)]
    pub kafka_sasl_password_file: Option<PathBuf>,

    /// Topic booking requests are queued on.
    #[arg(long, env = env::KAFKA_TOPIC, default_value = "booking-requests")]
    pub kafka_topic: String,

    /// Partitions of that topic when booking-app creates it (>= worker replicas).
    #[arg(long, env = env::KAFKA_PARTITIONS, default_value_t = 6)]
    pub kafka_partitions: i32,

    /// Consumer group of the workers (API pods read its committed offsets, never join it).
    #[arg(long, env = env::KAFKA_CONSUMER_GROUP, default_value = "booking-workers")]
    pub kafka_consumer_group: String,

    /// How long the API waits for the broker to acknowledge a request before answering 503.
    #[arg(long, env = "KAFKA_PRODUCE_TIMEOUT_MS", default_value_t = 5_000)]
    pub kafka_produce_timeout_ms: u64,

    /// API: how long librdkafka waits to gather records into one request to the broker. The
    /// requests a pod accepts together already share a record (`stage/kafka/producer.rs`), and
    /// librdkafka batches whatever queues while a request to the broker is in flight, so the
    /// default adds no wait: at 256 connections a wait of 5 ms was pure latency (the closed
    /// loop's throughput fell with it).
    #[arg(long, env = "KAFKA_LINGER_MS", default_value_t = 0)]
    pub kafka_linger_ms: u64,

    /// API: most undecided requests this pod keeps in its view of the queue (~300 B each); at the
    /// bound new requests are answered 503 `overloaded` + Retry-After instead of growing it.
    #[arg(long, env = "KAFKA_MAX_QUEUED", default_value_t = 200_000)]
    pub kafka_max_queued: usize,

    /// API: most bytes (estimated) of undecided requests this pod keeps in its view of the queue;
    /// the default is an eighth of the operator's default 512Mi pod limit. At the bound the door
    /// sheds (503) and the tail stops reading until decisions make room.
    #[arg(long, env = env::KAFKA_MAX_QUEUED_BYTES, default_value_t = 64 * 1024 * 1024)]
    pub kafka_max_queued_bytes: usize,

    /// Worker: requests decided in one Postgres transaction (records are taken whole, so the
    /// last record of a batch may carry it past this by fewer than 256 requests).
    #[arg(long, env = "KAFKA_BATCH_SIZE", default_value_t = 2_000)]
    pub kafka_batch_size: usize,

    /// Worker: how long a batch waits for more requests once it has its first.
    #[arg(long, env = "KAFKA_BATCH_LINGER_MS", default_value_t = 5)]
    pub kafka_batch_linger_ms: u64,

    /// API: how often a pod reads the group's committed offsets (status, place in line, push).
    #[arg(long, env = "KAFKA_STATUS_REFRESH_MS", default_value_t = 200)]
    pub kafka_status_refresh_ms: u64,
}

/// librdkafka's `security.protocol` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KafkaSecurityProtocol {
    #[value(name = "PLAINTEXT")]
    Plaintext,
    #[value(name = "SSL")]
    Ssl,
    #[value(name = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[value(name = "SASL_SSL")]
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// The value librdkafka takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism` values booking-app supports (GSSAPI and OAUTHBEARER are not
/// built in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KafkaSaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl KafkaSaslMechanism {
    /// The value librdkafka takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The sale's own event, created by `serve` if absent (`stage::sale_event`); the operator sets
/// these from a FlashSale's `spec.event`. Id, name and tickets together, or none.
#[derive(Debug, Clone, Args)]
pub struct SaleEventConfig {
    /// Id (UUID) of the sale's event; an existing event with this id is never changed.
    #[arg(long, env = env::SALE_EVENT_ID)]
    pub sale_event_id: Option<uuid::Uuid>,

    /// Name of the sale's event.
    #[arg(long, env = env::SALE_EVENT_NAME)]
    pub sale_event_name: Option<String>,

    /// Tickets of the sale's event (when it is created).
    #[arg(long, env = env::SALE_EVENT_TICKETS)]
    pub sale_event_tickets: Option<i64>,

    /// Most tickets one user may book of the sale's event; unlimited when absent.
    #[arg(long, env = env::SALE_EVENT_PER_USER_LIMIT)]
    pub sale_event_per_user_limit: Option<i32>,
}

/// Settings of `migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateConfig {
    #[command(flatten)]
    pub postgres: PostgresConfig,
}

/// How logs are written. `RUST_LOG` filters them (default `info`).
#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for pods).
    Json,
    /// Human-readable lines.
    Text,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_override_defaults() {
        let cli = Cli::try_parse_from([
            "booking-app",
            "serve",
            "--stage",
            "redis",
            "--listen-addr",
            "127.0.0.1:9000",
            "--database-url",
            "postgres://x@127.0.0.1/db",
            "--db-pool-size",
            "4",
            "--migrate-on-start",
            "false",
            "--redis-url",
            "redis://127.0.0.1:6379",
        ])
        .unwrap();
        let Command::Serve(config) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(config.stage, Stage::Redis);
        assert_eq!(config.listen_addr.port(), 9000);
        assert_eq!(config.postgres.db_pool_size, 4);
        assert!(!config.migrate_on_start);
        assert_eq!(
            config.redis.redis_url.as_deref(),
            Some("redis://127.0.0.1:6379")
        );
        assert_eq!(config.http.max_body_bytes, 16 * 1024);
        assert_eq!(config.postgres.postgres_decide, PostgresDecide::Batch);
    }

    #[test]
    fn postgres_decide_takes_batch_or_per_booking() {
        let parse = |value: &str| {
            Config::try_parse_from([
                "booking-app",
                "--database-url",
                "x",
                "--postgres-decide",
                value,
            ])
            .map(|c| c.postgres.postgres_decide)
        };
        assert_eq!(parse("per-booking").unwrap(), PostgresDecide::PerBooking);
        assert_eq!(parse("batch").unwrap(), PostgresDecide::Batch);
        assert!(parse("batched").is_err());
    }

    #[test]
    fn database_url_is_required_and_read_from_the_environment() {
        use clap::CommandFactory;
        let command = Config::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "database_url")
            .expect("database_url argument");
        assert!(arg.is_required_set());
        assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new("DATABASE_URL")));
    }

    /// The README's "Configuration contract" table lists exactly the variables (and their flags)
    /// that `serve`/`worker` read: the operator writes pods from that table.
    #[test]
    fn readme_configuration_contract_matches_the_binary() {
        use clap::CommandFactory;
        use std::collections::BTreeSet;
        let readme = include_str!("../../README.md");
        let table = readme
            .split("## Configuration contract")
            .nth(1)
            .expect("README has a Configuration contract section");
        let documented: BTreeSet<(String, String)> = table
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let var = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let flag = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((var.to_owned(), flag.to_owned()))
            })
            .collect();
        let serve = Config::command();
        let log = LogConfig::augment_args(clap::Command::new("log"));
        let read: BTreeSet<(String, String)> = serve
            .get_arguments()
            .chain(log.get_arguments())
            .filter_map(|a| {
                let env = a.get_env()?.to_str()?.to_owned();
                Some((env, format!("--{}", a.get_long()?)))
            })
            .collect();
        assert_eq!(
            documented, read,
            "README table (left) vs. the binary's settings (right)"
        );
    }

    /// Every variable the operator may set is one `serve`/`worker` reads (or the global log
    /// setting), and the values it writes parse: the names are shared constants, so this catches
    /// a setting removed here while the operator still writes it.
    #[test]
    fn every_contract_variable_is_a_setting_of_serve_and_worker() {
        use clap::CommandFactory;
        let serve = Config::command();
        let log = LogConfig::augment_args(clap::Command::new("log"));
        let declared: Vec<&str> = serve
            .get_arguments()
            .chain(log.get_arguments())
            .filter_map(|a| a.get_env()?.to_str())
            .collect();
        for name in env::ENV_VARS {
            assert!(
                declared.contains(&name),
                "the operator sets {name}, which booking-app does not read"
            );
        }
        let config = Cli::try_parse_from([
            "booking-app",
            "--log-format",
            env::LOG_FORMAT_JSON,
            flashsale_contract::CMD_WORKER,
            "--database-url",
            "x",
            "--db-ssl-mode",
            env::DB_SSL_MODE_VERIFY_FULL,
            "--kafka-security-protocol",
            env::KAFKA_SECURITY_SASL_SSL,
            &flag::arg(flag::DRAIN),
        ])
        .unwrap();
        assert_eq!(config.log.log_format, LogFormat::Json);
        let Command::Worker(worker) = config.command else {
            panic!("expected worker")
        };
        assert!(worker.drain);
        assert_eq!(worker.postgres.db_ssl_mode, Some(DbSslMode::VerifyFull));
        assert_eq!(
            worker.kafka.kafka_security_protocol,
            KafkaSecurityProtocol::SaslSsl
        );
        let ssl = Config::try_parse_from([
            "booking-app",
            "--database-url",
            "x",
            "--kafka-security-protocol",
            env::KAFKA_SECURITY_SSL,
        ])
        .unwrap();
        assert_eq!(
            ssl.kafka.kafka_security_protocol,
            KafkaSecurityProtocol::Ssl
        );
        assert_eq!(
            Config::try_parse_from(["booking-app", "--database-url", "x"])
                .unwrap()
                .listen_addr
                .port(),
            flashsale_contract::HTTP_PORT
        );
    }

    /// The calibration Job's command line, as the operator writes it, is a loadgen run.
    #[test]
    fn the_calibration_command_line_parses() {
        let cli = Cli::try_parse_from([
            "booking-app",
            flashsale_contract::CMD_LOADGEN,
            &flag::arg(flag::URL),
            "http://s-cal-0.ns.svc:8080",
            &flag::arg(flag::FIND_CAPACITY),
            &flag::arg(flag::SLO_P99_MS),
            "200",
            &flag::arg(flag::TERMINATION_MESSAGE_PATH),
            "/dev/termination-log",
            &flag::arg(flag::NO_PROGRESS),
        ])
        .unwrap();
        let Command::Loadgen(args) = cli.command else {
            panic!("expected loadgen")
        };
        assert!(args.find_capacity && args.no_progress);
        assert_eq!(args.slo_p99_ms, 200);
        assert_eq!(
            args.termination_message_path.as_deref(),
            Some(std::path::Path::new("/dev/termination-log"))
        );
        assert!(matches!(
            Cli::try_parse_from([
                "booking-app",
                flashsale_contract::CMD_SERVE,
                "--database-url",
                "x"
            ])
            .unwrap()
            .command,
            Command::Serve(_)
        ));
    }

    #[test]
    fn kafka_security_takes_librdkafka_names_in_any_case() {
        let parse = |protocol: &str, mechanism: &str| {
            Config::try_parse_from([
                "booking-app",
                "--database-url",
                "x",
                "--kafka-security-protocol",
                protocol,
                "--kafka-sasl-mechanism",
                mechanism,
            ])
            .map(|c| {
                (
                    c.kafka.kafka_security_protocol,
                    c.kafka.kafka_sasl_mechanism,
                )
            })
        };
        assert_eq!(
            parse("SASL_SSL", "SCRAM-SHA-512").unwrap(),
            (
                KafkaSecurityProtocol::SaslSsl,
                Some(KafkaSaslMechanism::ScramSha512)
            )
        );
        assert_eq!(
            parse("sasl_plaintext", "plain").unwrap(),
            (
                KafkaSecurityProtocol::SaslPlaintext,
                Some(KafkaSaslMechanism::Plain)
            )
        );
        assert!(parse("TLS", "PLAIN").is_err());
        assert!(parse("SSL", "GSSAPI").is_err());
    }

    /// A certificate without its key (or a key alone) is refused at parse time, for every store.
    #[test]
    fn a_client_certificate_needs_its_key() {
        for (cert, key) in [
            ("--db-ssl-client-cert", "--db-ssl-client-key"),
            ("--redis-tls-cert-file", "--redis-tls-key-file"),
            ("--kafka-ssl-cert-file", "--kafka-ssl-key-file"),
        ] {
            for alone in [cert, key] {
                let parsed =
                    Config::try_parse_from(["booking-app", "--database-url", "x", alone, "/f"]);
                assert!(parsed.is_err(), "{alone} without its pair was accepted");
            }
            Config::try_parse_from(["booking-app", "--database-url", "x", cert, "/c", key, "/k"])
                .unwrap_or_else(|e| panic!("{cert} with {key}: {e}"));
        }
    }

    #[test]
    fn unknown_stage_is_refused() {
        let err =
            Config::try_parse_from(["booking-app", "--stage", "mysql", "--database-url", "x"])
                .unwrap_err();
        assert!(err.to_string().contains("postgres"), "{err}");
    }
}
