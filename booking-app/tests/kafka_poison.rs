//! Records nobody can poison: anything that can reach the requests topic (any pod of the
//! cluster can produce to it) writes records our API never would — `quantity: 0`, garbage, an
//! unknown version, a NUL in the user, an event that does not exist. Each is dead-lettered with
//! its reason and the valid booking queued behind them is decided within seconds.

mod common;
mod kafka_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use booking_app::stage::kafka::client::KafkaSettings;
use booking_app::stage::kafka::record::{BookingRecord, RECORD_VERSION};
use booking_app::worker::kafka_consumer::dead_letter::{REASON_HEADER, SOURCE_HEADER};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use reqwest::StatusCode;
use uuid::Uuid;

use kafka_support::{Worker, eventually, kafka_config, metric, start_pod};

/// "Within seconds": how long the valid booking behind the poison may take to be decided.
const DECIDED_WITHIN: Duration = Duration::from_secs(10);

fn record(event: Uuid, user: &str, quantity: i32) -> BookingRecord {
    BookingRecord {
        v: RECORD_VERSION,
        id: Uuid::new_v4(),
        event_id: event,
        user_id: user.into(),
        quantity,
        idempotency_key: None,
        accepted_at: chrono::Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_are_dead_lettered_and_the_booking_behind_them_is_decided() {
    let (config, pool, pod) = start_pod(kafka_config("poison")).await;
    let worker = Worker::start(&config, pool.clone());
    let event = pod.create_event(10, Some(2)).await;

    let nul_user = record(event, "mal\0lory", 1);
    let mut future_version = serde_json::to_value(record(event, "mallory", 1)).unwrap();
    future_version["v"] = 9.into();
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_quantity", record(event, "mallory", 0).encode()),
        ("invalid_quantity", record(event, "mallory", -5).encode()),
        ("malformed", b"\x00\xffnot a booking {".to_vec()),
        (
            "malformed",
            br#"{"v":1,"event_id":"nope","quantity":1}"#.to_vec(),
        ),
        (
            "unknown_version",
            serde_json::to_vec(&future_version).unwrap(),
        ),
        ("invalid_user_id", nul_user.encode()),
        (
            "unknown_event",
            record(Uuid::new_v4(), "mallory", 1).encode(),
        ),
    ];
    // Keyed by the event like the API's records: the same partition as the booking behind them.
    let settings = KafkaSettings::from_config(&config.kafka).unwrap();
    let producer = settings.producer().unwrap();
    let key = event.to_string();
    for (_, payload) in &poison {
        producer
            .send(
                FutureRecord::to(&settings.topic)
                    .key(&key)
                    .payload(payload.as_slice()),
                Duration::from_secs(10),
            )
            .await
            .expect("poison produced");
    }

    let (status, body) = pod.book(event, "alice", 2, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let accepted = Instant::now();
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let pod_ref = &pod;
    let decided = eventually("the booking behind the poison is decided", || async move {
        let (_, booking) = pod_ref.booking(id).await;
        (booking["status"] != "pending").then_some(booking)
    })
    .await;
    let took = accepted.elapsed();
    println!(
        "valid booking behind {} poison records decided in {took:?}",
        poison.len()
    );
    assert_eq!(decided["status"], "confirmed", "{decided}");
    assert!(took < DECIDED_WITHIN, "decided after {took:?}");
    assert_eq!(pod.remaining(event).await, 8);

    // Every poison record is in the dead-letter topic with its reason and where it came from.
    let letters = read_dead_letters(&config, &settings.dead_letter_topic, poison.len()).await;
    let mut expected: Vec<&str> = poison.iter().map(|(reason, _)| *reason).collect();
    let mut got: Vec<&str> = letters
        .iter()
        .map(|(reason, _, _)| reason.as_str())
        .collect();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, expected);
    for (reason, source, payload) in &letters {
        assert!(
            source.starts_with(&format!("{}/", settings.topic)),
            "{reason}: source {source}"
        );
        // Undecodable records are kept byte for byte (the others are re-encoded once decoded).
        if reason == "malformed" || reason == "unknown_version" {
            assert!(
                poison.iter().any(|(_, p)| p == payload),
                "{reason}: payload kept as read"
            );
        }
    }

    // Counted by reason; nothing of the poison reached Postgres.
    let text = worker.metrics.encode().unwrap();
    let mut by_reason: BTreeMap<&str, f64> = BTreeMap::new();
    for (reason, _) in &poison {
        *by_reason.entry(reason).or_default() += 1.0;
    }
    for (reason, n) in by_reason {
        let series = format!("booking_kafka_dead_letters_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &series), Some(n), "{series}\n{text}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM bookings WHERE event_id = $1")
        .bind(event)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "only the valid booking is written");
    worker.stop().await;
    pod.stop().await;
}

/// The first `n` records of the dead-letter topic: (reason, source, payload).
async fn read_dead_letters(
    config: &booking_app::config::Config,
    topic: &str,
    n: usize,
) -> Vec<(String, String, Vec<u8>)> {
    let consumer = kafka_support::topic_reader(config, topic);
    let mut letters = Vec::new();
    while letters.len() < n {
        let message = tokio::time::timeout(common::EVENTUAL, consumer.recv())
            .await
            .expect("dead letters")
            .unwrap();
        let header = |name: &str| {
            message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        letters.push((
            header(REASON_HEADER),
            header(SOURCE_HEADER),
            message.payload().unwrap_or_default().to_vec(),
        ));
    }
    letters
}
