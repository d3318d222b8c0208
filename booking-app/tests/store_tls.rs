//! TLS and authentication to the stores (README "TLS and authentication"): every stage books
//! through stores that accept nothing but TLS, started by this test with certificates it made
//! (`tls_support`), and each client refuses a server whose certificate another CA signed.
//! Postgres is `verify-full` with a client certificate, Redis `rediss://` with a client
//! certificate, Kafka SASL_SSL with SCRAM-SHA-512 (and PLAIN) — through booking-app's own
//! settings (`Config`), the ones the operator writes into pods.

mod common;
mod tls_support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use booking_app::config::{
    Config, DbSslMode, KafkaConfig, KafkaSaslMechanism, KafkaSecurityProtocol, PostgresConfig,
    RedisConfig,
};
use booking_app::db;
use booking_app::domain::Stage;
use booking_app::stage::kafka::client::KafkaSettings;
use booking_app::stage::redis::connection;
use clap::Parser;
use common::TestApp;
use common::client::Decision;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::Connection;
use tls_support::{KafkaPorts, Pki, Server};

// Ports of this test's servers (the project's range for them is 18200-18299).
const PG_PORT: u16 = 18201;
const REDIS_PG_PORT: u16 = 18211;
const REDIS_PORT: u16 = 18212;
const KAFKA_PG_PORT: u16 = 18221;
const KAFKA_PORTS: KafkaPorts = KafkaPorts {
    sasl_ssl: 18222,
    controller: 18223,
    internal: 18224,
};

fn path(p: PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

/// A booking-app of `stage` whose Postgres is the test's TLS one on `pg_port`: verify-full
/// against the test's CA, with the client certificate the server requires.
fn config_for(stage: Stage, pki: &Pki, pg_port: u16) -> Config {
    let mut config = Config::try_parse_from([
        "booking-app".to_owned(),
        "--stage".into(),
        stage.as_str().into(),
        "--listen-addr".into(),
        "127.0.0.1:0".into(),
        "--database-url".into(),
        format!("postgres://postgres@localhost:{pg_port}/postgres"),
        "--db-ssl-mode".into(),
        "verify-full".into(),
        "--db-ssl-root-cert".into(),
        path(pki.ca()),
        "--db-ssl-client-cert".into(),
        path(pki.client_cert()),
        "--db-ssl-client-key".into(),
        path(pki.client_key()),
        "--db-pool-size".into(),
        "4".into(),
        "--request-timeout-ms".into(),
        "60000".into(),
    ])
    .expect("the TLS configuration parses");
    config.auth = common::auth::config();
    config
}

async fn wait_postgres(server: &mut Server, config: &PostgresConfig) {
    let options = db::connect_options(config).expect("Postgres TLS settings");
    server
        .wait_ready(|| {
            let options = options.clone();
            async move { sqlx::PgConnection::connect_with(&options).await.is_ok() }
        })
        .await;
}

/// One booking through the app: confirmed, and in Postgres (stage redis writes it behind,
/// stage kafka decides it in the worker).
async fn book_one(app: &TestApp) {
    let event = app.create_event(10, Some(4)).await;
    let answer = app.book(event.id, "alice", 2, Some("tls-booking")).await;
    let Decision::Confirmed(booking) = app.settle(&answer).await else {
        panic!(
            "stage {} refused the only booking: {}",
            app.stage, answer.body
        );
    };
    let stored = app
        .wait_confirmed_in_db(event.id, &BTreeSet::from([booking.id]))
        .await;
    assert_eq!(stored[0].quantity, 2);
    app.assert_store_consistent(event.id).await;
}

/// The app's own Postgres connections are TLS ones.
async fn assert_pool_uses_tls(app: &TestApp) {
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&app.pool)
        .await
        .expect("pg_stat_ssl");
    assert!(ssl, "the app's Postgres connection is not TLS");
}

fn assert_mentions(what: &str, error: &str, needles: &[&str]) {
    assert!(
        needles.iter().any(|n| error.contains(n)),
        "{what}: expected an error naming one of {needles:?}, got: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_postgres_books_over_verify_full_tls_and_refuses_a_wrong_ca() {
    common::init_logs();
    let pki = Pki::generate("pg");
    let mut server = tls_support::start_postgres("pg", &pki, PG_PORT);
    let config = config_for(Stage::Postgres, &pki, PG_PORT);
    wait_postgres(&mut server, &config.postgres).await;

    let app = TestApp::spawn_config(config.clone()).await;
    book_one(&app).await;
    assert_pool_uses_tls(&app).await;
    app.stop().await;

    let mut wrong_ca = config.postgres.clone();
    wrong_ca.db_ssl_root_cert = Some(pki.wrong_ca());
    let error = db::connect(&wrong_ca)
        .await
        .expect_err("a server certificate of another CA must be refused");
    assert_mentions(
        "wrong CA",
        &error.to_string(),
        &["UnknownIssuer", "certificate"],
    );

    // The server takes nothing but TLS with a client certificate: the success above was TLS.
    let mut plain = config.postgres.clone();
    plain.db_ssl_mode = Some(DbSslMode::Disable);
    let error = db::connect(&plain)
        .await
        .expect_err("plain text must be refused");
    assert_mentions("plain text", &error.to_string(), &["no encryption"]);
    let mut anonymous = config.postgres.clone();
    anonymous.db_ssl_client_cert = None;
    anonymous.db_ssl_client_key = None;
    let error = db::connect(&anonymous)
        .await
        .expect_err("no client certificate must be refused");
    assert_mentions(
        "no client certificate",
        &error.to_string(),
        &["certificate"],
    );
}

async fn redis_ping(config: &RedisConfig) -> Result<(), String> {
    let client = connection::client(config, "the test").map_err(|e| e.to_string())?;
    let mut redis = connection::connect(&client, Duration::from_secs(2))
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut redis)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_redis_books_over_rediss_with_a_client_certificate_and_refuses_a_wrong_ca() {
    common::init_logs();
    let pki = Pki::generate("redis");
    let mut pg = tls_support::start_postgres("redis-pg", &pki, REDIS_PG_PORT);
    let mut redis = tls_support::start_redis("redis", &pki, REDIS_PORT);
    let mut config = config_for(Stage::Redis, &pki, REDIS_PG_PORT);
    config.redis.redis_url = Some(format!("rediss://localhost:{REDIS_PORT}"));
    config.redis.redis_tls_ca_file = Some(pki.ca());
    config.redis.redis_tls_cert_file = Some(pki.client_cert());
    config.redis.redis_tls_key_file = Some(pki.client_key());
    config.redis.redis_connections = 2;
    config.redis.sync_block_ms = 100;
    wait_postgres(&mut pg, &config.postgres).await;
    let settings = config.redis.clone();
    redis
        .wait_ready(|| {
            let settings = settings.clone();
            async move { redis_ping(&settings).await.is_ok() }
        })
        .await;

    // The API's script and the write-behind syncer both go through TLS.
    let app = TestApp::spawn_config(config.clone()).await;
    book_one(&app).await;
    assert_pool_uses_tls(&app).await;
    app.stop().await;

    let mut wrong_ca = config.redis.clone();
    wrong_ca.redis_tls_ca_file = Some(pki.wrong_ca());
    let error = redis_ping(&wrong_ca)
        .await
        .expect_err("a server certificate of another CA must be refused");
    assert_mentions("wrong CA", &error, &["UnknownIssuer", "certificate"]);

    let mut anonymous = config.redis.clone();
    anonymous.redis_tls_cert_file = None;
    anonymous.redis_tls_key_file = None;
    redis_ping(&anonymous)
        .await
        .expect_err("the server requires a client certificate");

    // TLS files with a plain-text URL would go unused: refused before any connection.
    let mut plain = config.redis.clone();
    plain.redis_url = Some(format!("redis://localhost:{REDIS_PORT}"));
    let error = redis_ping(&plain)
        .await
        .expect_err("TLS files need rediss://");
    assert_mentions("redis:// with TLS files", &error, &["rediss://"]);
}

/// librdkafka's log and error lines of one client, for telling why it could not connect.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl ClientContext for Recorder {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.lock().unwrap().push(format!("{fac}: {message}"));
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for Recorder {}

/// A metadata request through `settings`'s security settings (what every client of the stage
/// gets): Ok, or the error with librdkafka's lines about it (its error events reach the context
/// only while the client is polled).
async fn kafka_metadata(settings: &KafkaSettings) -> Result<(), String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("log_level", "6");
    settings.security.apply(&mut config);
    let recorder = Recorder::default();
    let client: BaseConsumer<Recorder> = config
        .create_with_context(recorder.clone())
        .map_err(|e| e.to_string())?;
    let result = tokio::task::spawn_blocking(move || {
        let result = client
            .fetch_metadata(None, Duration::from_secs(6))
            .map(drop);
        for _ in 0..10 {
            let _ = client.poll(Duration::from_millis(100));
        }
        result
    })
    .await
    .unwrap();
    result.map_err(|e| format!("{e}; {}", recorder.0.lock().unwrap().join("; ")))
}

/// The stage's Kafka settings of `config`, changed.
fn kafka_settings(config: &Config, change: impl FnOnce(&mut KafkaConfig)) -> KafkaSettings {
    let mut kafka = config.kafka.clone();
    change(&mut kafka);
    KafkaSettings::from_config(&kafka).expect("Kafka settings")
}

/// The broker answers on its plain-text internal listener (which booking-app never uses).
async fn kafka_internal_ready() -> bool {
    let client: BaseConsumer = match ClientConfig::new()
        .set(
            "bootstrap.servers",
            format!("127.0.0.1:{}", KAFKA_PORTS.internal),
        )
        .set("log_level", "0")
        .create()
    {
        Ok(c) => c,
        Err(_) => return false,
    };
    tokio::task::spawn_blocking(move || {
        client
            .fetch_metadata(None, Duration::from_secs(1))
            .is_ok_and(|m| !m.brokers().is_empty())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_kafka_books_over_sasl_ssl_and_refuses_a_wrong_ca_or_password() {
    common::init_logs();
    let pki = Pki::generate("kafka");
    let mut pg = tls_support::start_postgres("kafka-pg", &pki, KAFKA_PG_PORT);
    let mut broker = tls_support::start_kafka("kafka", &pki, &KAFKA_PORTS);
    let password_file = pki.file("sasl-password");
    std::fs::write(&password_file, format!("{}\n", tls_support::SCRAM_PASSWORD)).unwrap();
    let mut config = config_for(Stage::Kafka, &pki, KAFKA_PG_PORT);
    config.kafka.kafka_brokers = Some(format!("localhost:{}", KAFKA_PORTS.sasl_ssl));
    config.kafka.kafka_security_protocol = KafkaSecurityProtocol::SaslSsl;
    config.kafka.kafka_ssl_ca_file = Some(pki.ca());
    config.kafka.kafka_sasl_mechanism = Some(KafkaSaslMechanism::ScramSha512);
    config.kafka.kafka_sasl_username = Some(tls_support::SCRAM_USER.into());
    config.kafka.kafka_sasl_password = None;
    config.kafka.kafka_sasl_password_file = Some(password_file);
    config.kafka.kafka_partitions = 2;
    wait_postgres(&mut pg, &config.postgres).await;
    broker.wait_ready(kafka_internal_ready).await;

    // The API's producer and tail, the offsets reader, the admin client and the worker's group
    // consumer all go through SASL_SSL.
    let app = TestApp::spawn_config(config.clone()).await;
    book_one(&app).await;
    assert_pool_uses_tls(&app).await;
    app.stop().await;

    let plain_user = kafka_settings(&config, |k| {
        k.kafka_sasl_mechanism = Some(KafkaSaslMechanism::Plain);
        k.kafka_sasl_username = Some(tls_support::PLAIN_USER.into());
        k.kafka_sasl_password_file = None;
        k.kafka_sasl_password = Some(tls_support::PLAIN_PASSWORD.into());
    });
    let wrong_ca = kafka_settings(&config, |k| k.kafka_ssl_ca_file = Some(pki.wrong_ca()));
    let wrong_password = kafka_settings(&config, |k| {
        k.kafka_sasl_password_file = None;
        k.kafka_sasl_password = Some("not-the-password".into());
    });
    let (plain_user, wrong_ca, wrong_password) = tokio::join!(
        kafka_metadata(&plain_user),
        kafka_metadata(&wrong_ca),
        kafka_metadata(&wrong_password)
    );
    plain_user.expect("SASL PLAIN with the right password is accepted");
    assert_mentions(
        "wrong CA",
        &wrong_ca.expect_err("a broker certificate of another CA must be refused"),
        &["certificate verify failed"],
    );
    assert_mentions(
        "wrong password",
        &wrong_password.expect_err("a wrong SCRAM password must be refused"),
        &[
            "Authentication failed",
            "authentication failed",
            "SASL authentication error",
        ],
    );
}
