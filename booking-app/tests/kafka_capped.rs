//! A stage kafka pod whose queue is far longer than its memory: `booking-app serve` as its own
//! process, with a backlog in the topic whose view would take more than the pod's memory limit.
//! Its view stops at `KAFKA_MAX_QUEUED_BYTES`: the process stays under the limit (peak RSS read
//! from /proc), it is ready without reading the whole backlog, its door answers 503 +
//! Retry-After, and once a worker drains the queue every request that was accepted is decided.

mod common;
mod kafka_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use booking_app::domain::NewEvent;
use booking_app::stage::kafka::backlog::footprint;
use booking_app::stage::kafka::client::KafkaSettings;
use booking_app::stage::kafka::record::{BookingRecord, RECORD_VERSION, booking_id};
use common::process::{admin_client, free_port, json_of, wait_ready};
use futures::StreamExt;
use rdkafka::producer::FutureRecord;
use reqwest::StatusCode;
use uuid::Uuid;

use kafka_support::{Worker, kafka_config, kafka_process, pool};

/// Requests queued by "other pods" (produced straight to the topic) while this pod runs.
const BACKLOG: usize = 150_000;
/// The memory limit the pod is held to in this test (an idle debug-build pod takes ~40 MiB).
const POD_MEMORY_LIMIT: u64 = 80 * 1024 * 1024;
/// The pod's cap on its view, far below what the backlog would take.
const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// How long the worker may take to decide the whole backlog (a bound on a hang only).
const DRAIN_WITHIN: Duration = Duration::from_secs(480);

/// Peak and current resident memory of a process, in bytes (`VmHWM`, `VmRSS`).
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("memory field")
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn fat_record(event: Uuid, n: usize) -> BookingRecord {
    // Long users and keys: the view's cost per request is mostly its strings. Keys are unique
    // across events (as the API's are), so each run's carry its event id.
    let user = format!("{n:0>120}");
    let key = format!("{n}-{}-{}", event.simple(), "k".repeat(150));
    BookingRecord {
        v: RECORD_VERSION,
        id: booking_id(Some(&key), event, &user, 1),
        event_id: event,
        user_id: user,
        quantity: 1,
        idempotency_key: Some(key),
        accepted_at: chrono::Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_beyond_the_cap_sheds_at_the_door_stays_under_the_memory_limit_and_loses_nothing()
{
    common::init_logs();
    let config = kafka_config("capped-rss");
    let pool = pool(&config).await;
    let settings = KafkaSettings::from_config(&config.kafka).unwrap();
    settings.ensure_topics().await.expect("topics");
    let tickets = 10 * BACKLOG as i64;
    let event = booking_app::stage::records::insert_event(
        &pool,
        &NewEvent {
            name: format!("capped-{}", Uuid::new_v4()),
            tickets,
            per_user_limit: None,
        },
    )
    .await
    .expect("event")
    .id;
    let uncapped = BACKLOG * footprint(&fat_record(event, 0));

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = kafka_process(&["serve"], &config, &format!("127.0.0.1:{port}"))
        // As the operator runs API pods next to a worker Deployment: this pod only queues.
        .env("RUN_WORKER", "false")
        .env("DB_POOL_SIZE", "4")
        .env("KAFKA_MAX_QUEUED_BYTES", MAX_QUEUED_BYTES.to_string())
        .env("LOG_FORMAT", "json")
        .envs(common::auth::env())
        .spawn()
        .expect("start booking-app serve");
    let pid = child.id().expect("pid");
    wait_ready(&mut child, &base).await;
    let (idle, _) = memory_of(pid);
    println!("idle pod: peak RSS {} MiB", idle >> 20);
    assert!(
        idle + uncapped as u64 > POD_MEMORY_LIMIT,
        "an uncapped view of the backlog must not fit the limit for this test to mean anything"
    );
    let http = admin_client();
    let book = |user: String| {
        http.post(format!("{base}/events/{event}/bookings"))
            .header(
                reqwest::header::AUTHORIZATION,
                common::auth::bearer(&user, false),
            )
            .json(&serde_json::json!({"user_id": user, "quantity": 1}))
            .send()
    };

    // Accepted by this pod before the backlog arrives: these must be decided in the end.
    let mut accepted = BTreeSet::new();
    for n in 0..5 {
        let answer = book(format!("early-{n}")).await.unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        let body: serde_json::Value = answer.json().await.unwrap();
        accepted.insert(body["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }

    // The backlog, queued as other pods would have queued it.
    let producer = settings.producer().unwrap();
    let started = Instant::now();
    let key = event.to_string();
    let records: Vec<BookingRecord> = (0..BACKLOG).map(|n| fat_record(event, n)).collect();
    let sent = futures::stream::iter(records.iter().map(|record| {
        let payload = record.encode();
        let producer = &producer;
        let topic = &settings.topic;
        let key = &key;
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(err, _)| err)
        }
    }))
    .buffer_unordered(10_000)
    .collect::<Vec<_>>()
    .await;
    assert!(
        sent.iter().all(Result::is_ok),
        "every backlog record produced"
    );
    println!(
        "produced {BACKLOG} requests ({} MiB of view uncapped) in {:?}",
        uncapped >> 20,
        started.elapsed()
    );

    // The view fills to its cap: the door sheds with Retry-After, the pod stays ready.
    let mut shed = 0;
    let deadline = Instant::now() + common::EVENTUAL;
    while shed < 20 {
        assert!(Instant::now() < deadline, "the door never shed");
        let answer = book(format!("late-{shed}")).await.unwrap();
        match answer.status() {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(answer.headers().contains_key("retry-after"));
                let body: serde_json::Value = answer.json().await.unwrap();
                assert_eq!(body["error"]["code"], "overloaded", "{body}");
                shed += 1;
            }
            StatusCode::ACCEPTED => {
                let body: serde_json::Value = answer.json().await.unwrap();
                accepted.insert(body["id"].as_str().unwrap().parse::<Uuid>().unwrap());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "full, and still ready");
    let (peak, now) = memory_of(pid);
    println!(
        "full view: peak RSS {} MiB, RSS {} MiB (limit {} MiB)",
        peak >> 20,
        now >> 20,
        POD_MEMORY_LIMIT >> 20
    );
    assert!(peak < POD_MEMORY_LIMIT, "peak RSS {peak} B");

    // A worker drains the queue; the pod reads the rest of the backlog as room appears.
    let worker = Worker::start(&config, pool.clone());
    let drain_started = Instant::now();
    let expected = (BACKLOG + accepted.len()) as i64;
    loop {
        let decided: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM bookings WHERE event_id = $1 AND status = 'confirmed'",
        )
        .bind(event)
        .fetch_one(&pool)
        .await
        .unwrap();
        if decided == expected {
            break;
        }
        assert!(
            drain_started.elapsed() < DRAIN_WITHIN,
            "{decided} of {expected} decided"
        );
        assert!(child.try_wait().unwrap().is_none(), "the pod died");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "worker decided {expected} requests in {:?}",
        drain_started.elapsed()
    );
    for id in &accepted {
        let booking = json_of(http.get(format!("{base}/bookings/{id}"))).await;
        assert_eq!(booking["status"], "confirmed", "{booking}");
    }
    let (peak, _) = memory_of(pid);
    println!("after the drain: peak RSS {} MiB", peak >> 20);
    assert!(peak < POD_MEMORY_LIMIT, "peak RSS {peak} B");
    let remaining: i64 = sqlx::query_scalar("SELECT remaining FROM events WHERE id = $1")
        .bind(event)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(remaining, tickets - expected, "nothing sold twice or lost");
    worker.stop().await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
