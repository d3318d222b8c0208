//! Stage postgres, batched: the paths only batching has, against the real Postgres. Batches are
//! made deterministic with a gate: the test locks the event's row from its own connection, so a
//! first "plug" booking's batch waits at the lock; the requests sent meanwhile queue behind it
//! (the queue gauge says when all are in), and when the gate opens the decider takes them as its
//! next batches, up to `POSTGRES_BATCH_SIZE` each. The batch-size histogram then proves how they
//! were grouped.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use booking_app::config::Config;
use booking_app::domain::Stage;
use common::client::{Answer, Decision};
use common::{EVENTUAL, TestApp, decide_in_batches};
use reqwest::StatusCode;
use uuid::Uuid;

const QUEUED: &str = "booking_postgres_batch_queued";
const BATCHES: &str = "booking_postgres_batch_size_count";
const BATCHED: &str = "booking_postgres_batch_size_sum";
const RERUNS: &str = "booking_postgres_batch_reruns_total";

async fn spawn(batch_size: usize, customize: impl FnOnce(&mut Config)) -> Arc<TestApp> {
    let app = TestApp::spawn_with(Stage::Postgres, |config| {
        decide_in_batches(config);
        config.postgres.postgres_batch_size = batch_size;
        customize(config);
    })
    .await;
    Arc::new(app)
}

/// The value of an unlabelled series of this app's `/metrics` (0 when not exported yet).
fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.metrics.encode().expect("metrics encode");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

async fn wait_metric(app: &TestApp, name: &str, expected: f64) {
    let started = Instant::now();
    while metric(app, name) != expected {
        assert!(
            started.elapsed() < EVENTUAL,
            "{name} is {} after {EVENTUAL:?}, expected {expected}",
            metric(app, name)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The event's row locked from the test's own connection: batches of that event wait for it.
struct Gate {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl Gate {
    async fn close(app: &TestApp, event_id: Uuid) -> Gate {
        let mut tx = app.pool.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM events WHERE id = $1 FOR UPDATE")
            .bind(event_id)
            .execute(&mut *tx)
            .await
            .expect("lock the event row");
        Gate { tx }
    }

    async fn open(self) {
        self.tx.rollback().await.expect("release the event row");
    }
}

/// Closes the gate and sends one booking whose batch then waits at the lock; returns once that
/// batch has started, so every request sent next queues behind it.
async fn plug(app: &Arc<TestApp>, event_id: Uuid) -> (Gate, tokio::task::JoinHandle<Answer>) {
    let gate = Gate::close(app, event_id).await;
    let batches = metric(app, BATCHES);
    let plug = tokio::spawn({
        let app = app.clone();
        async move { app.book(event_id, "plug", 1, None).await }
    });
    wait_metric(app, BATCHES, batches + 1.0).await;
    wait_metric(app, QUEUED, 0.0).await;
    (gate, plug)
}

fn spawn_bookings(
    app: &Arc<TestApp>,
    event_id: Uuid,
    requests: Vec<(String, i32, Option<String>)>,
) -> Vec<tokio::task::JoinHandle<Answer>> {
    requests
        .into_iter()
        .map(|(user, quantity, key)| {
            let app = app.clone();
            tokio::spawn(async move { app.book(event_id, &user, quantity, key.as_deref()).await })
        })
        .collect()
}

async fn answers(tasks: Vec<tokio::task::JoinHandle<Answer>>) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("client task"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_bookings_of_one_event_cross_a_batch_boundary() {
    common::init_logs();
    const BATCH: usize = 256;
    const REQUESTS: usize = 320;
    // The plug takes 1; the first full batch 256; 23 are left for the 64 of the second batch.
    const TICKETS: i64 = 280;
    let app = spawn(BATCH, |_| {}).await;
    let event = app.create_event(TICKETS, None).await;
    let (gate, plug) = plug(&app, event.id).await;
    let (batches, batched) = (metric(&app, BATCHES), metric(&app, BATCHED));
    let tasks = spawn_bookings(
        &app,
        event.id,
        (0..REQUESTS)
            .map(|i| (format!("fan-{i}"), 1, None))
            .collect(),
    );
    wait_metric(&app, QUEUED, REQUESTS as f64).await;
    gate.open().await;

    let mut answers = answers(tasks).await;
    answers.push(plug.await.expect("plug task"));
    let mut confirmed = std::collections::BTreeSet::new();
    let mut sold_out = 0;
    for answer in &answers {
        match app.settle(answer).await {
            Decision::Confirmed(b) => {
                assert!(confirmed.insert(b.id), "booking {} answered twice", b.id)
            }
            Decision::Rejected(code) => {
                assert_eq!(code, "sold_out", "{}", answer.body);
                sold_out += 1;
            }
        }
    }
    assert_eq!(
        confirmed.len() as i64,
        TICKETS,
        "exactly the tickets are confirmed"
    );
    assert_eq!(sold_out, REQUESTS + 1 - TICKETS as usize);
    assert_eq!(
        (
            metric(&app, BATCHES) - batches,
            metric(&app, BATCHED) - batched
        ),
        (2.0, REQUESTS as f64),
        "the queued requests were decided as one full batch and the rest"
    );
    assert_eq!(app.event(event.id).await.remaining, 0);
    let stored = app.wait_confirmed_in_db(event.id, &confirmed).await;
    assert_eq!(
        stored.iter().map(|b| i64::from(b.quantity)).sum::<i64>(),
        TICKETS
    );
    // Holdings sum to the tickets, user by user; remaining agrees with the bookings.
    app.assert_store_consistent(event.id).await;
    let held: i64 =
        sqlx::query_scalar("SELECT sum(quantity)::bigint FROM holdings WHERE event_id = $1")
            .bind(event.id)
            .fetch_one(&app.pool)
            .await
            .expect("holdings sum");
    assert_eq!(held, TICKETS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_user_limit_holds_inside_one_batch() {
    common::init_logs();
    const LIMIT: i32 = 3;
    const GREEDY: usize = 50;
    let app = spawn(256, |_| {}).await;
    let event = app.create_event(1_000, Some(LIMIT)).await;
    // Held before the batch: the batch must add to it, not start from zero.
    let earlier = app.book(event.id, "greedy", 1, None).await;
    assert!(
        matches!(app.settle(&earlier).await, Decision::Confirmed(_)),
        "{}",
        earlier.body
    );

    let (gate, plug) = plug(&app, event.id).await;
    let (batches, batched) = (metric(&app, BATCHES), metric(&app, BATCHED));
    let mut requests: Vec<_> = (0..GREEDY)
        .map(|_| ("greedy".to_owned(), 1, None))
        .collect();
    requests.push(("modest".to_owned(), 2, None));
    let tasks = spawn_bookings(&app, event.id, requests);
    wait_metric(&app, QUEUED, (GREEDY + 1) as f64).await;
    gate.open().await;

    let answers = answers(tasks).await;
    assert!(matches!(
        app.settle(&plug.await.expect("plug task")).await,
        Decision::Confirmed(_)
    ));
    assert_eq!(
        (
            metric(&app, BATCHES) - batches,
            metric(&app, BATCHED) - batched
        ),
        (1.0, (GREEDY + 1) as f64),
        "one batch"
    );
    let (greedy, modest) = answers.split_at(GREEDY);
    let mut got = 0;
    for answer in greedy {
        match app.settle(answer).await {
            Decision::Confirmed(b) => {
                assert_eq!(b.user_id, "greedy");
                got += 1;
            }
            Decision::Rejected(code) => assert_eq!(code, "per_user_limit", "{}", answer.body),
        }
    }
    assert_eq!(got, LIMIT - 1, "greedy held 1 and may hold {LIMIT}");
    assert!(
        matches!(app.settle(&modest[0]).await, Decision::Confirmed(_)),
        "another user in the same batch is unaffected"
    );
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT quantity FROM holdings WHERE event_id = $1 AND user_id = 'greedy'",
    )
    .bind(event.id)
    .fetch_optional(&app.pool)
    .await
    .expect("holding");
    assert_eq!(held, Some(LIMIT));
    assert_eq!(
        app.event(event.id).await.remaining,
        1_000 - i64::from(LIMIT) - 2 - 1
    );
    app.assert_store_consistent(event.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_retry_in_the_batch_of_its_first_attempt_books_once() {
    common::init_logs();
    let app = spawn(256, |_| {}).await;
    let event = app.create_event(10, None).await;
    let retried = format!("retried-{}", Uuid::new_v4());
    let reused = format!("reused-{}", Uuid::new_v4());

    let (gate, plug) = plug(&app, event.id).await;
    let (batches, batched, reruns) = (
        metric(&app, BATCHES),
        metric(&app, BATCHED),
        metric(&app, RERUNS),
    );
    let tasks = spawn_bookings(
        &app,
        event.id,
        vec![
            ("alice".into(), 2, Some(retried.clone())),
            ("alice".into(), 2, Some(retried.clone())),
            // The same key with a different body: whichever comes second is refused.
            ("bob".into(), 1, Some(reused.clone())),
            ("bob".into(), 3, Some(reused.clone())),
        ],
    );
    wait_metric(&app, QUEUED, 4.0).await;
    gate.open().await;
    let answers = answers(tasks).await;
    let Decision::Confirmed(plugged) = app.settle(&plug.await.expect("plug task")).await else {
        panic!("plug refused")
    };
    assert_eq!(
        (
            metric(&app, BATCHES) - batches,
            metric(&app, BATCHED) - batched
        ),
        (1.0, 4.0),
        "one batch"
    );
    assert_eq!(
        metric(&app, RERUNS),
        reruns,
        "decided inside the batch, not by a key-conflict re-run"
    );

    // The retry got its first attempt's booking.
    for answer in &answers[..2] {
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    let first = answers[0].booking();
    assert_eq!(
        answers[1].booking().id,
        first.id,
        "the retry got a different booking"
    );
    assert_eq!(app.rows_with_key("alice", &retried).await, 1);
    // A later retry, from the table, still gets it.
    let later = app.book(event.id, "alice", 2, Some(&retried)).await;
    assert_eq!(
        (later.status, later.booking().id),
        (StatusCode::CREATED, first.id)
    );

    // One of the reused key's pair booked, the other is 422.
    let statuses: Vec<_> = answers[2..].iter().map(|a| a.status).collect();
    assert!(
        statuses == [StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY]
            || statuses == [StatusCode::UNPROCESSABLE_ENTITY, StatusCode::CREATED],
        "{statuses:?}"
    );
    let refused = answers[2..]
        .iter()
        .find(|a| a.status == StatusCode::UNPROCESSABLE_ENTITY)
        .unwrap();
    assert_eq!(refused.error_code(), "idempotency_key_reused");
    let booked = answers[2..]
        .iter()
        .find(|a| a.status == StatusCode::CREATED)
        .unwrap()
        .booking();
    assert_eq!(app.rows_with_key("bob", &reused).await, 1);

    let expected: std::collections::BTreeSet<Uuid> = [plugged.id, first.id, booked.id].into();
    let stored = app.wait_confirmed_in_db(event.id, &expected).await;
    let sold: i64 = stored.iter().map(|b| i64::from(b.quantity)).sum();
    assert_eq!(sold, 1 + 2 + i64::from(booked.quantity));
    assert_eq!(
        app.event(event.id).await.remaining,
        10 - sold,
        "retries booked nothing more"
    );
    app.assert_store_consistent(event.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_is_answered_503_with_retry_after() {
    common::init_logs();
    const CAPACITY: usize = 8;
    let app = spawn(256, |config| {
        config.postgres.postgres_queue_capacity = CAPACITY
    })
    .await;
    let event = app.create_event(100, None).await;
    let (gate, plug) = plug(&app, event.id).await;
    let tasks = spawn_bookings(
        &app,
        event.id,
        (0..CAPACITY)
            .map(|i| (format!("fan-{i}"), 1, None))
            .collect(),
    );
    wait_metric(&app, QUEUED, CAPACITY as f64).await;

    let response = app
        .http
        .post(app.url(&format!("/events/{}/bookings", event.id)))
        .header(
            reqwest::header::AUTHORIZATION,
            common::auth::bearer("one-too-many", false),
        )
        .json(&serde_json::json!({"user_id": "one-too-many", "quantity": 1}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        response
            .headers()
            .contains_key(reqwest::header::RETRY_AFTER),
        "{:?}",
        response.headers()
    );
    let body: serde_json::Value = response.json().await.expect("error body");
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(
        metric(
            &app,
            r#"booking_postgres_batch_refused_total{reason="queue_full"}"#
        ),
        1.0
    );

    gate.open().await;
    for answer in answers(tasks).await {
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    plug.await.expect("plug task");
    assert_eq!(
        app.event(event.id).await.remaining,
        100 - 1 - CAPACITY as i64
    );
    assert_eq!(
        app.confirmed_in_db(event.id)
            .await
            .iter()
            .filter(|b| b.user_id == "one-too-many")
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_booking_whose_caller_went_away_is_not_decided() {
    common::init_logs();
    let app = spawn(256, |config| config.http.request_timeout_ms = 500).await;
    let event = app.create_event(100, None).await;
    let (gate, plug) = plug(&app, event.id).await;
    let batches = metric(&app, BATCHES);
    let gone = app.book(event.id, "gone", 1, None).await;
    assert_eq!(
        gone.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the request timed out: {}",
        gone.body
    );
    gate.open().await;
    plug.await.expect("plug task");

    // The decider took the abandoned request, dropped it, and goes on deciding.
    wait_metric(&app, QUEUED, 0.0).await;
    let next = app.book(event.id, "next", 1, None).await;
    assert_eq!(next.status, StatusCode::CREATED, "{}", next.body);
    assert_eq!(
        metric(&app, BATCHES) - batches,
        1.0,
        "only the next booking was decided after the plug"
    );
    let users: Vec<String> = app
        .confirmed_in_db(event.id)
        .await
        .into_iter()
        .map(|b| b.user_id)
        .collect();
    assert!(!users.contains(&"gone".to_owned()), "{users:?}");
    assert!(users.contains(&"next".to_owned()), "{users:?}");
}
