//! Stage kafka beyond the shared suite: pending with a place in line until a worker decides,
//! the status pushed over SSE, a booking visible on every pod once acknowledged, sold-out
//! answered at the door of every pod, lag and decision metrics, and worker crashes (a
//! redelivered batch, a worker process killed mid-sale) that lose nothing and decide nothing twice.

mod common;
mod kafka_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use kafka_support::{ChildWorker, Pod, Worker, eventually, id_of, kafka_config, metric, start_pod};

/// Reads server-sent events until the stream ends, calling `on_event` with each `data` JSON.
async fn read_sse(mut response: reqwest::Response, mut on_event: impl FnMut(&Value)) -> Vec<Value> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    while let Some(chunk) = response.chunk().await.expect("SSE chunk") {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) {
                let value: Value = serde_json::from_str(data.trim()).expect("SSE data is JSON");
                on_event(&value);
                events.push(value);
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_with_place_in_line_until_a_worker_decides_and_the_push_delivers_it() {
    let (config, pool, pod) = start_pod(kafka_config("line")).await;
    let event = pod.create_event(10, None).await;

    // No worker yet: everything stays pending, in line behind the requests before it.
    let mut ids = Vec::new();
    for (i, position) in (0..5).zip(0..) {
        let (status, body) = pod.book(event, &format!("fan-{i}"), 1, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["status"], "pending");
        assert_eq!(
            body["position"], position,
            "one event, one partition: {body}"
        );
        let id = id_of(&body);
        assert_eq!(body["status_url"], format!("/bookings/{id}"), "{body}");
        assert_eq!(
            body["events_url"],
            format!("/bookings/{id}/events"),
            "{body}"
        );
        ids.push(id);
    }
    let (status, body) = pod.booking(ids[4]).await;
    assert_eq!(
        (status, &body["status"], &body["position"]),
        (StatusCode::OK, &Value::from("pending"), &Value::from(4))
    );
    assert_eq!(pod.remaining(event).await, 10, "nothing decided yet");
    let lag = eventually("the pod reports 5 undecided requests", || {
        let pod = &pod;
        async move {
            metric(
                &pod.metrics_text().await,
                "booking_kafka_consumer_lag_total",
            )
            .filter(|&l| l == 5.0)
        }
    })
    .await;
    assert_eq!(lag, 5.0);

    // A client listening on the push channel while the booking waits...
    let response = pod
        .http
        .get(pod.url(&format!("/bookings/{}/events", ids[4])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let listener = tokio::spawn(async move {
        let mut first_tx = Some(first_tx);
        read_sse(response, move |event| {
            if let Some(tx) = first_tx.take() {
                let _ = tx.send(event.clone());
            }
        })
        .await
    });
    let first = first_rx.await.expect("a first state");
    assert_eq!(
        (&first["status"], &first["position"]),
        (&Value::from("pending"), &Value::from(4))
    );

    // ...gets the decision once a worker makes it, and the stream ends.
    let worker = Worker::start(&config, pool.clone());
    let states = tokio::time::timeout(common::EVENTUAL, listener)
        .await
        .expect("the stream ends")
        .unwrap();
    let last = states.last().unwrap();
    assert_eq!(
        (&last["id"], &last["status"]),
        (&Value::from(ids[4].to_string()), &Value::from("confirmed"))
    );
    assert!(
        states[..states.len() - 1]
            .iter()
            .all(|s| s["status"] == "pending"),
        "{states:?}"
    );

    for id in &ids {
        let (status, body) = pod.booking(*id).await;
        assert_eq!(
            (status, &body["status"]),
            (StatusCode::OK, &Value::from("confirmed")),
            "{body}"
        );
        assert!(
            body.get("position").is_none(),
            "a decided booking has no place in line: {body}"
        );
    }
    assert_eq!(pod.remaining(event).await, 5);
    assert_eq!(worker.decisions("confirmed"), 5.0);
    eventually("lag drops to 0 and a decision rate was seen", || {
        let pod = &pod;
        async move {
            let text = pod.metrics_text().await;
            (metric(&text, "booking_kafka_consumer_lag_total") == Some(0.0)).then_some(())?;
            metric(&text, "booking_kafka_decision_rate").map(|_| ())
        }
    })
    .await;
    worker.stop().await;
    pod.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_booking_acknowledged_by_one_pod_is_found_by_every_pod() {
    let (config, pool, a) = start_pod(kafka_config("pods")).await;
    let b = Pod::start(&config, pool.clone()).await;
    let event = a.create_event(100, None).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, body) = a.book(event, &format!("fan-{i}"), 1, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        // Asked at once on the other pod, whose tail may not have read it yet: never a 404.
        let (status, seen) = b.booking(id_of(&body)).await;
        assert_eq!(status, StatusCode::OK, "pod b: {seen}");
        assert_eq!(
            (&seen["status"], &seen["position"]),
            (&Value::from("pending"), &Value::from(i))
        );
        ids.push(id_of(&body));
    }
    let (status, body) = b.booking(Uuid::new_v4()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // A pod started later (a restart, a scale-up) rebuilds the queue from the log: once ready,
    // it knows every pending booking and its place.
    let c = Pod::start(&config, pool.clone()).await;
    let c_ref = &c;
    eventually("the new pod is ready", || async move {
        let response = c_ref.http.get(c_ref.url("/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    for (i, id) in ids.iter().enumerate() {
        let (status, seen) = c.booking(*id).await;
        assert_eq!(
            (status, &seen["status"], &seen["position"]),
            (StatusCode::OK, &Value::from("pending"), &Value::from(i))
        );
    }
    for pod in [a, b, c] {
        pod.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sold_out_event_is_refused_at_the_door_of_every_pod() {
    let (config, pool, a) = start_pod(kafka_config("door")).await;
    let b = Pod::start(&config, pool.clone()).await;
    let worker = Worker::start(&config, pool.clone());
    let event = a.create_event(3, None).await;
    for user in ["ann", "bea", "cat"] {
        let (status, body) = a.book(event, user, 1, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    // Until the sold-out mark reaches a pod it still queues requests (decided sold_out later);
    // then it answers 409 itself, and so does every other pod.
    let queued = AtomicI64::new(3);
    for pod in [&b, &a] {
        let queued = &queued;
        eventually("the pod refuses at the door", || async move {
            let (status, body) = pod.book(event, "late", 1, None).await;
            match status {
                StatusCode::CONFLICT => {
                    assert_eq!(body["error"]["code"], "sold_out", "{body}");
                    Some(())
                }
                StatusCode::ACCEPTED => {
                    queued.fetch_add(1, Ordering::SeqCst);
                    None
                }
                other => panic!("unexpected {other}: {body}"),
            }
        })
        .await;
    }
    let a_ref = &a;
    eventually("every queued request is decided", || async move {
        let lag = metric(
            &a_ref.metrics_text().await,
            "booking_kafka_consumer_lag_total",
        );
        (lag == Some(0.0)).then_some(())
    })
    .await;
    // Pod a's lag gauge is sampled periodically and may predate the last 202 pod b gave: wait
    // for the row of every queued request too, so none is decided during the count below.
    let (pool_ref, queued) = (&pool, queued.load(Ordering::SeqCst));
    eventually("every queued request is in Postgres", || async move {
        (count_rows(pool_ref, event).await == queued).then_some(())
    })
    .await;
    let rows_before: i64 = count_rows(&pool, event).await;
    for _ in 0..10 {
        let (status, _) = b.book(event, "later", 1, None).await;
        assert_eq!(status, StatusCode::CONFLICT);
    }
    assert_eq!(
        count_rows(&pool, event).await,
        rows_before,
        "a request refused at the door is not queued"
    );
    let late_ones: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT status, reason FROM bookings WHERE event_id = $1 AND user_id = 'late'",
    )
    .bind(event)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        late_ones
            .iter()
            .all(|(s, r)| s == "rejected" && r.as_deref() == Some("sold_out")),
        "{late_ones:?}"
    );
    assert_eq!(a.remaining(event).await, 0);
    worker.stop().await;
    a.stop().await;
    b.stop().await;
}

async fn count_rows(pool: &sqlx::PgPool, event: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM bookings WHERE event_id = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// What Postgres holds for an event: every row's status, the inventory, the holdings.
#[derive(Debug, PartialEq)]
struct Ledger {
    bookings: BTreeMap<Uuid, (String, i32, String)>,
    remaining: i64,
    holdings: BTreeMap<String, i32>,
}

async fn ledger(pool: &sqlx::PgPool, event: Uuid) -> Ledger {
    let rows: Vec<(Uuid, String, i32, String)> =
        sqlx::query_as("SELECT id, user_id, quantity, status FROM bookings WHERE event_id = $1")
            .bind(event)
            .fetch_all(pool)
            .await
            .unwrap();
    let remaining = sqlx::query_scalar("SELECT remaining FROM events WHERE id = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap();
    let holdings: Vec<(String, i32)> =
        sqlx::query_as("SELECT user_id, quantity FROM holdings WHERE event_id = $1")
            .bind(event)
            .fetch_all(pool)
            .await
            .unwrap();
    Ledger {
        bookings: rows
            .into_iter()
            .map(|(id, u, q, s)| (id, (u, q, s)))
            .collect(),
        remaining,
        holdings: holdings.into_iter().collect(),
    }
}

/// The stage's invariants on one event: every acknowledged request decided exactly once, the
/// inventory and the holdings equal to the confirmed bookings, nobody above the limit.
fn check_invariants(ledger: &Ledger, acknowledged: &BTreeSet<Uuid>, tickets: i64, limit: i32) {
    let stored: BTreeSet<Uuid> = ledger.bookings.keys().copied().collect();
    assert_eq!(
        &stored, acknowledged,
        "Postgres must hold exactly the acknowledged requests"
    );
    let mut held: BTreeMap<String, i32> = BTreeMap::new();
    for (user, quantity, status) in ledger.bookings.values() {
        assert!(
            status == "confirmed" || status == "rejected",
            "undecided: {status}"
        );
        if status == "confirmed" {
            *held.entry(user.clone()).or_default() += quantity;
        }
    }
    let sold: i64 = held.values().map(|&q| i64::from(q)).sum();
    assert!(ledger.remaining >= 0);
    assert_eq!(
        sold,
        tickets - ledger.remaining,
        "confirmed tickets != tickets - remaining"
    );
    let holdings: BTreeMap<String, i32> = ledger
        .holdings
        .iter()
        .filter(|(_, q)| **q > 0)
        .map(|(u, q)| (u.clone(), *q))
        .collect();
    assert_eq!(holdings, held, "holdings != confirmed bookings per user");
    assert!(
        held.values().all(|&q| q <= limit),
        "a user above the limit: {held:?}"
    );
}

/// Books `n` requests concurrently through `pod` (users from a pool of `users`, 1-2 tickets);
/// each must be acknowledged or, once running workers sold the event out, refused `409 sold_out`
/// at the door (the workers decide while the requests are still being sent).
async fn book_many(pod: &Arc<Pod>, event: Uuid, n: usize, users: usize) -> BTreeSet<Uuid> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let pod = pod.clone();
            tokio::spawn(async move {
                pod.book(
                    event,
                    &format!("user-{}", i % users),
                    1 + (i % 2) as i32,
                    None,
                )
                .await
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == StatusCode::CONFLICT && body["error"]["code"] == "sold_out" {
            continue;
        }
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.insert(id_of(&body));
    }
    ids
}

/// A batch where a redelivered request and a key reused from a decided booking sit among new
/// requests: each is decided with what is known (the duplicate changes nothing, the reused key
/// is refused and takes nothing), and the new ones are booked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mixing_new_requests_with_decided_ids_and_keys_is_decided_with_what_is_known() {
    use booking_app::domain::RejectReason;
    use booking_app::stage::kafka::record::{BookingRecord, RECORD_VERSION, booking_id};
    use booking_app::worker::kafka_consumer::decide::Verdict;
    use booking_app::worker::kafka_consumer::ledger::decide_batch;
    use chrono::SubsecRound;

    let (_config, pool, pod) = start_pod(kafka_config("ledger-guess")).await;
    let event = pod.create_event(10, Some(2)).await;
    // Keys are unique across events (and runs share the database): this run's own.
    let request = |user: &str, key: &str| {
        let key = format!("{key}-{event}");
        BookingRecord {
            v: RECORD_VERSION,
            id: booking_id(Some(&key), event, user, 1),
            event_id: event,
            user_id: user.into(),
            quantity: 1,
            idempotency_key: Some(key),
            accepted_at: chrono::Utc::now().trunc_subsecs(6),
        }
    };
    let first = [request("alice", "k-a"), request("bob", "k-b")];
    let outcome = decide_batch(&pool, &first).await.expect("first batch");
    assert_eq!(outcome.decided.verdicts, [Verdict::Confirmed; 2]);

    let second = [
        request("dave", "k-d"),
        first[0].clone(),
        request("carol", "k-b"),
        request("erin", "k-e"),
    ];
    let outcome = decide_batch(&pool, &second).await.expect("second batch");
    assert_eq!(
        outcome.decided.verdicts,
        [
            Verdict::Confirmed,
            Verdict::Duplicate,
            Verdict::Rejected(RejectReason::IdempotencyKeyReused),
            Verdict::Confirmed,
        ]
    );
    let after = ledger(&pool, event).await;
    assert_eq!(
        after.remaining, 6,
        "alice, bob, dave and erin hold one each"
    );
    let statuses: BTreeMap<&str, &str> = after
        .bookings
        .values()
        .map(|(user, _, status)| (user.as_str(), status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        BTreeMap::from([
            ("alice", "confirmed"),
            ("bob", "confirmed"),
            ("carol", "rejected"),
            ("dave", "confirmed"),
            ("erin", "confirmed"),
        ])
    );
    pod.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_redelivered_after_its_database_commit_changes_nothing() {
    let (config, pool, pod) = start_pod(kafka_config("redelivery")).await;
    let pod = Arc::new(pod);
    let event = pod.create_event(50, Some(3)).await;
    let ids = book_many(&pod, event, 60, 25).await;

    // A worker that died between its database commit and its offset commit: its batch is in
    // Postgres, the group's offsets are where they were.
    let records = read_records(&config, ids.len()).await;
    booking_app::worker::kafka_consumer::ledger::decide_batch(&pool, &records)
        .await
        .expect("batch commits");
    let before = ledger(&pool, event).await;
    check_invariants(&before, &ids, 50, 3);

    // The next member of the group gets the whole batch again.
    let worker = Worker::start(&config, pool.clone());
    let w = &worker;
    eventually("the redelivered batch is seen", || async move {
        (w.decisions("duplicate") == 60.0).then_some(())
    })
    .await;
    assert_eq!(
        worker.decisions("confirmed")
            + worker.decisions("sold_out")
            + worker.decisions("per_user_limit"),
        0.0
    );
    assert_eq!(
        ledger(&pool, event).await,
        before,
        "a redelivered batch changed Postgres"
    );
    worker.stop().await;
    Arc::into_inner(pod).unwrap().stop().await;
}

/// The first `n` booking requests of the test's topic, in offset order per partition (a record
/// carries one or more).
async fn read_records(
    config: &booking_app::config::Config,
    n: usize,
) -> Vec<booking_app::stage::kafka::record::BookingRecord> {
    use rdkafka::message::Message;
    let consumer = kafka_support::topic_reader(config, &config.kafka.kafka_topic);
    let mut records = Vec::new();
    while records.len() < n {
        let message = tokio::time::timeout(common::EVENTUAL, consumer.recv())
            .await
            .expect("records")
            .unwrap();
        records.extend(
            booking_app::stage::kafka::record::BookingRecord::decode(message.payload()).unwrap(),
        );
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_process_killed_mid_sale_loses_nothing_and_decides_nothing_twice() {
    let mut config = kafka_config("kill");
    config.kafka.kafka_batch_size = 10;
    let (config, pool, pod) = start_pod(config).await;
    let pod = Arc::new(pod);
    let (tickets, limit) = (300, 3);
    let event = pod.create_event(tickets, Some(limit)).await;
    let ids = book_many(&pod, event, 400, 150).await;

    // 1. A worker that dies right after its third database commit, before the offset commit.
    let first = ChildWorker::start(&config, &[("KAFKA_WORKER_ABORT_AFTER_BATCHES", "3")]);
    let mut child = first.child;
    let status = tokio::time::timeout(common::EVENTUAL, child.wait())
        .await
        .expect("the worker aborts")
        .unwrap();
    assert!(
        !status.success(),
        "the failpoint must crash the worker: {status}"
    );
    let decided_by_first = ledger(&pool, event).await.bookings.len();
    assert!(
        decided_by_first > 0 && decided_by_first < ids.len(),
        "decided {decided_by_first}"
    );

    // 2. Its successor gets the uncommitted batch again (duplicates), then is SIGKILLed while
    //    it works through the rest.
    let second = ChildWorker::spawn(&config, &[]).await;
    let (s, p) = (&second, &pool);
    eventually("the successor redelivers and decides more", || async move {
        let text = s.metrics_text().await?;
        let duplicates = metric(
            &text,
            "booking_kafka_decisions_total{outcome=\"duplicate\"}",
        )?;
        let decided = ledger(p, event).await.bookings.len();
        (duplicates >= 1.0 && decided > decided_by_first).then_some(())
    })
    .await;
    second.kill9().await;
    let decided_by_second = ledger(&pool, event).await.bookings.len();
    eprintln!(
        "decided: {decided_by_first} before the abort, {decided_by_second} before the SIGKILL, of {}",
        ids.len()
    );

    // 3. A third worker finishes the sale.
    let third = ChildWorker::spawn(&config, &[]).await;
    let (p, n, api) = (&pool, ids.len(), &pod);
    eventually("every acknowledged request is decided", || async move {
        (ledger(p, event).await.bookings.len() == n).then_some(())
    })
    .await;
    eventually("the group's lag is 0", || async move {
        (metric(
            &api.metrics_text().await,
            "booking_kafka_consumer_lag_total",
        ) == Some(0.0))
        .then_some(())
    })
    .await;
    check_invariants(&ledger(&pool, event).await, &ids, tickets, limit);
    third.kill9().await;
    Arc::into_inner(pod).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_share_the_partitions_and_decide_each_request_once() {
    let (config, pool, pod) = start_pod(kafka_config("share")).await;
    let pod = Arc::new(pod);
    let (first, second) = (
        Worker::start(&config, pool.clone()),
        Worker::start(&config, pool.clone()),
    );
    let group = config.kafka.kafka_consumer_group.clone();
    let brokers = config.kafka.kafka_brokers.clone().unwrap();
    eventually("both workers are members of a stable group", || {
        let (group, brokers) = (group.clone(), brokers.clone());
        async move {
            tokio::task::spawn_blocking(move || stable_members(&brokers, &group))
                .await
                .unwrap()
                .filter(|&n| n == 2)
        }
    })
    .await;

    // Twelve events over three partitions: both members get some of them.
    let mut events = Vec::new();
    for _ in 0..12 {
        events.push(pod.create_event(20, Some(2)).await);
    }
    let mut acknowledged: BTreeMap<Uuid, BTreeSet<Uuid>> = BTreeMap::new();
    for event in &events {
        acknowledged.insert(*event, book_many(&pod, *event, 30, 12).await);
    }
    let total: usize = acknowledged.values().map(BTreeSet::len).sum();
    let (p, events_ref) = (&pool, &events);
    eventually("every request decided", || async move {
        let decided: i64 =
            sqlx::query_scalar("SELECT count(*) FROM bookings WHERE event_id = ANY($1)")
                .bind(events_ref)
                .fetch_one(p)
                .await
                .unwrap();
        (decided as usize == total).then_some(())
    })
    .await;
    let decided_by = |w: &Worker| {
        ["confirmed", "sold_out", "per_user_limit", "duplicate"]
            .iter()
            .map(|o| w.decisions(o))
            .sum::<f64>()
    };
    // A worker counts a batch's decisions after its commit: Postgres can show them a moment
    // before the counters do.
    let (first_ref, second_ref) = (&first, &second);
    eventually("the workers counted every decision", || async move {
        (decided_by(first_ref) + decided_by(second_ref) >= total as f64).then_some(())
    })
    .await;
    let (a, b) = (decided_by(&first), decided_by(&second));
    eprintln!("decisions: first worker {a}, second worker {b}, of {total}");
    assert!(
        a > 0.0 && b > 0.0,
        "one worker decided everything: {a} / {b}"
    );
    assert_eq!(
        a + b,
        total as f64,
        "a request was decided by both workers (or by none)"
    );
    for (event, ids) in &acknowledged {
        check_invariants(&ledger(&pool, *event).await, ids, 20, 2);
    }
    first.stop().await;
    second.stop().await;
    Arc::into_inner(pod).unwrap().stop().await;
}

/// Members of `group` once the group is Stable.
fn stable_members(brokers: &str, group: &str) -> Option<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .ok()?;
    let list = client
        .fetch_group_list(Some(group), std::time::Duration::from_secs(5))
        .ok()?;
    let info = list.groups().iter().find(|g| g.name() == group)?;
    (info.state() == "Stable").then(|| info.members().len())
}

/// The operator's drain Job before a stage change: `worker --drain` decides the whole queue with
/// the group, then exits 0 by itself; every acknowledged request is then decided in Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_drain_decides_the_whole_queue_then_exits() {
    let mut config = kafka_config("drain");
    config.kafka.kafka_batch_size = 25;
    let (config, pool, pod) = start_pod(config).await;
    let pod = Arc::new(pod);
    let (tickets, limit) = (150, 2);
    let event = pod.create_event(tickets, Some(limit)).await;
    let ids = book_many(&pod, event, 200, 120).await;
    assert_eq!(
        count_rows(&pool, event).await,
        0,
        "no worker ran yet: nothing may be decided"
    );

    // The same process ChildWorker starts, with `--drain`; it inherits DATABASE_URL and
    // KAFKA_BROKERS from the test's environment.
    let mut command = kafka_support::kafka_process(&["worker", "--drain"], &config, "127.0.0.1:0");
    command.env(
        "KAFKA_BATCH_SIZE",
        config.kafka.kafka_batch_size.to_string(),
    );
    let status = tokio::time::timeout(common::EVENTUAL, command.status())
        .await
        .expect("worker --drain exits once the queue is decided")
        .expect("run booking-app worker --drain");
    assert!(status.success(), "worker --drain failed: {status}");
    check_invariants(&ledger(&pool, event).await, &ids, tickets, limit);
    Arc::into_inner(pod).unwrap().stop().await;
}
