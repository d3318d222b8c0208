//! Stage kafka's door, which reads no store: every 202 of a sell-out followed to its decision
//! (the stale-`pending` regression), sold-out refused at once for keyed requests too with their
//! retries still answered, a key reused for another request decided as rejected, and records no
//! API of ours produced (garbage, `quantity: 0`) skipped so the queue keeps moving.

mod common;
mod kafka_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use booking_app::stage::kafka::client::KafkaSettings;
use booking_app::stage::kafka::record::{BookingRecord, RECORD_VERSION, booking_id};
use rdkafka::producer::FutureRecord;
use reqwest::StatusCode;

use kafka_support::{Pod, Worker, eventually, id_of, kafka_config, start_pod};

/// Longest a decided booking may still read `pending` (the status refresh is 200 ms).
const DECISION_VISIBLE_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_202_of_a_sell_out_is_followed_to_its_decision_within_seconds() {
    let (config, pool, first) = start_pod(kafka_config("followed")).await;
    let pods = [
        Arc::new(first),
        Arc::new(Pod::start(&config, pool.clone()).await),
    ];
    let worker = Worker::start(&config, pool.clone());
    let tickets = 500;
    let event = pods[0].create_event(tickets, None).await;

    // 64 clients, 3,000 keyed requests over both pods: the sale sells out midway.
    let clients: Vec<_> = (0..64)
        .map(|c| {
            let pods = pods.clone();
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for i in 0..47 {
                    let n = c * 47 + i;
                    let pod = &pods[n % 2];
                    let (status, body) = pod
                        .book(
                            event,
                            &format!("fan-{n}"),
                            1,
                            Some(&format!("followed-{event}-{n}")),
                        )
                        .await;
                    match status {
                        StatusCode::ACCEPTED => accepted.push(id_of(&body)),
                        StatusCode::CONFLICT => {
                            assert_eq!(body["error"]["code"], "sold_out", "{body}")
                        }
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
                accepted
            })
        })
        .collect();
    let mut accepted = BTreeSet::new();
    for client in clients {
        accepted.extend(client.await.unwrap());
    }
    assert!(
        accepted.len() as i64 >= tickets,
        "{} accepted",
        accepted.len()
    );

    // Every 202, read on the other pod too, shows its decision within seconds.
    let started = Instant::now();
    let mut confirmed = 0;
    for (n, id) in accepted.iter().enumerate() {
        let pod = &pods[n % 2];
        loop {
            let (status, body) = pod.booking(*id).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            match body["status"].as_str() {
                Some("confirmed") => {
                    confirmed += 1;
                    break;
                }
                Some("rejected") => {
                    assert_eq!(body["reason"], "sold_out", "{body}");
                    break;
                }
                _ => {
                    assert!(
                        started.elapsed() < DECISION_VISIBLE_WITHIN,
                        "booking {id} still reads {body} {:?} after the sale",
                        started.elapsed()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    assert_eq!(confirmed, tickets, "exactly the tickets are confirmed");
    worker.stop().await;
    for pod in pods {
        Arc::into_inner(pod).unwrap().stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_sell_out_a_new_key_is_refused_at_once_and_a_retry_gets_its_decision() {
    let (config, pool, pod) = start_pod(kafka_config("keyed-door")).await;
    let worker = Worker::start(&config, pool.clone());
    let event = pod.create_event(1, None).await;

    let (status, body) = pod
        .book(event, "ann", 1, Some(&format!("keyed-door-ann-{event}")))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ann = id_of(&body);
    let pod_ref = &pod;
    eventually("ann's booking is confirmed", || async move {
        (pod_ref.booking(ann).await.1["status"] == "confirmed").then_some(())
    })
    .await;
    eventually("the sold-out mark reaches the pod", || async move {
        let (status, _) = pod_ref.book(event, "probe", 1, None).await;
        (status == StatusCode::CONFLICT).then_some(())
    })
    .await;

    let rows = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM bookings WHERE event_id = $1")
            .bind(event)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = rows(pool.clone()).await;
    for n in 0..20 {
        let (status, body) = pod
            .book(
                event,
                &format!("late-{n}"),
                1,
                Some(&format!("keyed-door-late-{event}-{n}")),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "a new key after the sell-out: {body}"
        );
        assert_eq!(body["error"]["code"], "sold_out", "{body}");
    }
    assert_eq!(
        rows(pool.clone()).await,
        before,
        "nothing refused at the door was queued"
    );

    // Ann's retry is not a new request: it gets her confirmed booking back.
    let (status, body) = pod
        .book(event, "ann", 1, Some(&format!("keyed-door-ann-{event}")))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (id_of(&body), body["status"].as_str()),
        (ann, Some("confirmed")),
        "{body}"
    );
    worker.stop().await;
    pod.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_reused_for_another_request_is_decided_as_rejected_and_the_first_stands() {
    let (config, pool, pod) = start_pod(kafka_config("reused")).await;
    let event = pod.create_event(10, None).await;
    // Keys are unique across events and runs share the database: one of this run's own.
    let reused_key = format!("reused-{event}");

    // No worker yet: while the first is queued, a different request with its key is 422.
    let (status, body) = pod.book(event, "ann", 1, Some(&reused_key)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let first = id_of(&body);
    let (status, body) = pod.book(event, "ann", 2, Some(&reused_key)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused", "{body}");
    let (status, body) = pod.book(event, "ann", 1, Some(&reused_key)).await;
    assert_eq!(
        (status, id_of(&body)),
        (StatusCode::ACCEPTED, first),
        "a retry is the same booking: {body}"
    );

    let worker = Worker::start(&config, pool.clone());
    let pod_ref = &pod;
    eventually("the first is confirmed", || async move {
        (pod_ref.booking(first).await.1["status"] == "confirmed").then_some(())
    })
    .await;
    // Decided and gone from the queue: the door no longer knows the key, so the other request
    // is queued, and the worker rejects it; the status says why.
    let (status, body) = pod.book(event, "ann", 2, Some(&reused_key)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let second = id_of(&body);
    assert_ne!(second, first);
    let decided = eventually("the reuse is decided", || async move {
        let (_, body) = pod_ref.booking(second).await;
        (body["status"] != "pending").then_some(body)
    })
    .await;
    assert_eq!(
        (decided["status"].as_str(), decided["reason"].as_str()),
        (Some("rejected"), Some("idempotency_key_reused"))
    );
    let (_, body) = pod.booking(first).await;
    assert_eq!(
        (body["status"].as_str(), body["quantity"].as_i64()),
        (Some("confirmed"), Some(1)),
        "{body}"
    );
    assert_eq!(pod.remaining(event).await, 9, "the reuse took nothing");
    worker.stop().await;
    pod.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_no_api_produced_are_skipped_and_the_next_booking_is_decided_within_seconds() {
    let (config, pool, pod) = start_pod(kafka_config("poison")).await;
    let worker = Worker::start(&config, pool.clone());
    let event = pod.create_event(10, None).await;

    // Straight to the topic, as any client of the broker could: garbage, then a well-formed
    // record the API would have refused (quantity 0 fails the bookings CHECK).
    let settings = KafkaSettings::from_config(&config.kafka).unwrap();
    let producer = settings.producer().unwrap();
    let key = event.to_string();
    let zero = BookingRecord {
        v: RECORD_VERSION,
        id: booking_id(None, event, "mallory", 0),
        event_id: event,
        user_id: "mallory".into(),
        quantity: 0,
        idempotency_key: None,
        accepted_at: chrono::Utc::now(),
    };
    for payload in [b"{not json".to_vec(), zero.encode()] {
        producer
            .send(
                FutureRecord::to(&settings.topic)
                    .key(&key)
                    .payload(&payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(err, _)| err)
            .expect("produce");
    }

    let started = Instant::now();
    let (status, body) = pod.book(event, "ann", 1, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ann = id_of(&body);
    let pod_ref = &pod;
    eventually(
        "the booking behind the bad records is decided",
        || async move { (pod_ref.booking(ann).await.1["status"] == "confirmed").then_some(()) },
    )
    .await;
    assert!(
        started.elapsed() < DECISION_VISIBLE_WITHIN,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        worker.decisions("invalid"),
        1.0,
        "the quantity-0 record is counted as invalid"
    );
    assert_eq!(
        worker.decisions("malformed"),
        1.0,
        "the garbage is counted as malformed"
    );
    let mallory: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM bookings WHERE user_id = 'mallory' AND event_id = $1",
    )
    .bind(event)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(mallory, 0);
    worker.stop().await;
    pod.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_its_cap_the_pods_view_of_the_queue_sheds_and_loses_nothing() {
    let mut config = kafka_config("capped");
    config.kafka.kafka_max_queued = 20;
    let (config, pool, pod) = start_pod(config).await;
    let event = pod.create_event(1_000, None).await;

    // No worker: the view fills up to its cap, then the door sheds instead of growing.
    let mut accepted = BTreeSet::new();
    for n in 0..30 {
        let (status, body) = pod.book(event, &format!("fan-{n}"), 1, None).await;
        match status {
            StatusCode::ACCEPTED => assert!(accepted.insert(id_of(&body))),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["error"]["code"], "overloaded", "{body}")
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), 20, "exactly the cap is queued");
    let ready = pod.http.get(pod.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "a full view is no reason to leave the Service"
    );

    // The worker drains it: every accepted request is decided, and the door opens again.
    let worker = Worker::start(&config, pool.clone());
    for id in &accepted {
        let pod_ref = &pod;
        eventually("an accepted request is decided", || async move {
            (pod_ref.booking(*id).await.1["status"] == "confirmed").then_some(())
        })
        .await;
    }
    let pod_ref = &pod;
    eventually("the door opens again", || async move {
        (pod_ref.book(event, "later", 1, None).await.0 == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    worker.stop().await;
    pod.stop().await;
}
