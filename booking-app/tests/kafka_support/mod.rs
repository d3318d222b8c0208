//! Stage kafka's own harness, beside the shared one: API pods and workers started and stopped
//! separately (a pod without a worker keeps requests pending; a worker can run as a child
//! process and be killed), each test on its own topic and consumer group.
#![allow(dead_code)] // each test binary uses a different part of it

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use booking_app::config::Config;
use booking_app::domain::Stage;
use booking_app::http::{self, AppState, Metrics};
use booking_app::stage::kafka::client::KafkaSettings;
use booking_app::worker::kafka_consumer;
use booking_app::{db, server, stage};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::common::{EVENTUAL, auth, harness_client, test_config};

/// The binary under test; `BOOKING_APP_BIN` overrides it (a copy taken out of a target
/// directory that other builds share).
pub fn binary() -> String {
    std::env::var("BOOKING_APP_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_booking-app").to_owned())
}

/// A test's start on `config`: logs on, its pool (migrated), and one API pod on it.
pub async fn start_pod(config: Config) -> (Config, PgPool, Pod) {
    crate::common::init_logs();
    let pool = pool(&config).await;
    let pod = Pod::start(&config, pool.clone()).await;
    (config, pool, pod)
}

/// The booking id in a response body; panics, showing the body, if it has none.
pub fn id_of(body: &Value) -> Uuid {
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {body}"))
        .parse()
        .unwrap()
}

/// The booking-app binary run as `args` on stage kafka, listening on `listen`, on `config`'s
/// topic, consumer group and partitions; no migrations (the harness ran them), stdout dropped,
/// killed with its handle.
pub fn kafka_process(args: &[&str], config: &Config, listen: &str) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("STAGE", "kafka")
        .env("LISTEN_ADDR", listen)
        .env("MIGRATE_ON_START", "false")
        .env("KAFKA_TOPIC", &config.kafka.kafka_topic)
        .env("KAFKA_CONSUMER_GROUP", &config.kafka.kafka_consumer_group)
        .env(
            "KAFKA_PARTITIONS",
            config.kafka.kafka_partitions.to_string(),
        )
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The stage kafka test configuration on a topic and group of its own.
pub fn kafka_config(test: &str) -> Config {
    let mut config = test_config(Stage::Kafka);
    let unique = format!("test-{test}-{}", Uuid::new_v4().simple());
    config.kafka.kafka_topic = unique.clone();
    config.kafka.kafka_consumer_group = format!("{unique}-workers");
    config.kafka.kafka_partitions = 3;
    config
}

static MIGRATED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// A consumer of `topic` from its first offset, in a group of its own that commits nothing: it
/// reads what the test produced (or the worker dead-lettered) without disturbing anyone.
pub fn topic_reader(config: &Config, topic: &str) -> rdkafka::consumer::StreamConsumer {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
        .set(
            "bootstrap.servers",
            config.kafka.kafka_brokers.as_deref().unwrap(),
        )
        .set("group.id", format!("reader-{}", Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

pub async fn pool(config: &Config) -> PgPool {
    let pool = db::connect(&config.postgres)
        .await
        .expect("connect to Postgres (is `hack/services.sh up` running?)");
    MIGRATED
        .get_or_init(|| async { db::migrate(&pool).await.expect("migrations apply") })
        .await;
    pool
}

/// Polls `check` until it returns `Some`, failing the test after `EVENTUAL`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < EVENTUAL, "after {EVENTUAL:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An API pod of stage kafka (no worker), served on a real port.
pub struct Pod {
    pub base_url: String,
    pub http: reqwest::Client,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

impl Pod {
    pub async fn start(config: &Config, pool: PgPool) -> Pod {
        let metrics = Arc::new(Metrics::new());
        let inventory = stage::build_inventory(config, pool, metrics.clone())
            .await
            .expect("build stage kafka");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let router = http::app(AppState {
            inventory,
            metrics: metrics.clone(),
            limits: config.http.clone(),
            auth: auth::authenticator(config).await,
        });
        let server = tokio::spawn(server::serve(
            listener,
            router,
            shutdown.clone().cancelled_owned(),
        ));
        let http = harness_client(256);
        Pod {
            base_url,
            http,
            metrics,
            shutdown,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_event(&self, tickets: i64, per_user_limit: Option<i32>) -> Uuid {
        let body = json!({"name": format!("kafka-{}", Uuid::new_v4()), "tickets": tickets, "per_user_limit": per_user_limit});
        let (status, body) = self
            .answer(self.http.post(self.url("/events")).json(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn book(
        &self,
        event: Uuid,
        user: &str,
        quantity: i32,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(self.url(&format!("/events/{event}/bookings")))
            .header(reqwest::header::AUTHORIZATION, auth::bearer(user, false))
            .json(&json!({"user_id": user, "quantity": quantity}));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        self.answer(request).await
    }

    pub async fn booking(&self, id: Uuid) -> (StatusCode, Value) {
        self.answer(self.http.get(self.url(&format!("/bookings/{id}"))))
            .await
    }

    pub async fn remaining(&self, event: Uuid) -> i64 {
        let (status, body) = self
            .answer(self.http.get(self.url(&format!("/events/{event}"))))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["remaining"].as_i64().unwrap()
    }

    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task")
            .expect("server stops");
    }
}

/// The value of an unlabelled series in a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A worker in this process, with its own metrics.
pub struct Worker {
    pub metrics: Arc<Metrics>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Worker {
    pub fn start(config: &Config, pool: PgPool) -> Worker {
        let settings = KafkaSettings::from_config(&config.kafka).unwrap();
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let handle = tokio::spawn({
            let (metrics, stop) = (metrics.clone(), stop.clone());
            async move {
                kafka_consumer::run(settings, pool, &metrics, stop)
                    .await
                    .expect("worker runs")
            }
        });
        Worker {
            metrics,
            stop,
            handle,
        }
    }

    pub fn decisions(&self, outcome: &str) -> f64 {
        let text = self.metrics.encode().unwrap();
        metric(
            &text,
            &format!("booking_kafka_decisions_total{{outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0)
    }

    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(EVENTUAL, self.handle)
            .await
            .expect("worker stops")
            .expect("worker task");
    }
}

/// `booking-app worker --stage kafka` as its own process (as a pod runs it), with its
/// `/healthz` and `/metrics` on a port of its own.
pub struct ChildWorker {
    pub child: Child,
    pub base_url: String,
}

impl ChildWorker {
    /// Starts a worker process and waits until it answers `/healthz`.
    pub async fn spawn(config: &Config, extra_env: &[(&str, &str)]) -> ChildWorker {
        let mut worker = Self::start(config, extra_env);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let (child, base_url) = (&mut worker.child, worker.base_url.clone());
        eventually("the worker process answers /healthz", || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("booking-app worker exited at start: {status}");
            }
            let request = client.get(format!("{base_url}/healthz")).send();
            async move {
                request
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        worker
    }

    /// Starts a worker process without waiting for it (one that may exit at once).
    pub fn start(config: &Config, extra_env: &[(&str, &str)]) -> ChildWorker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = kafka_process(&["worker"], config, &format!("127.0.0.1:{port}"));
        command
            .env(
                "KAFKA_BATCH_SIZE",
                config.kafka.kafka_batch_size.to_string(),
            )
            .env("LOG_FORMAT", "json");
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start booking-app worker");
        ChildWorker {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn metrics_text(&self) -> Option<String> {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        client
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// SIGKILL: no shutdown, no offset commit, nothing flushed.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL the worker");
        self.child.wait().await.expect("reap the worker");
    }
}
