//! Fault tests that take the shared Redis down with `kill -9`. Any other test using Redis at that
//! moment would fail, so they are `#[ignore]`d in the ordinary `cargo test` and `make test` runs
//! them afterwards in a cargo invocation of their own, one at a time:
//! `cargo test -p booking-app --test redis_faults -- --ignored --test-threads=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use booking_app::domain::{Booking, Stage};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::common::checks::per_user;
use crate::common::{EVENTUAL, TestApp};

/// `hack/services.sh ARGS...` (kill9 / start of one service); panics when it fails.
async fn services(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/services.sh");
    let status = tokio::process::Command::new(&script)
        .args(args)
        .status()
        .await
        .expect("run hack/services.sh");
    assert!(
        status.success(),
        "hack/services.sh {args:?} failed: {status}"
    );
}

#[derive(Default)]
struct Sale {
    tickets: i64,
    /// Tickets answered confirmed so far.
    sold: AtomicI64,
    /// Redis has been killed. Until then clients pause at two thirds of the sale, so the kill
    /// lands mid-sale however long `hack/services.sh` takes.
    killed: AtomicBool,
    /// 503 answers (Redis down); each was retried with the same idempotency key.
    unavailable: AtomicUsize,
}

/// One client: books with a fresh idempotency key per request, retries a 503 with the same key
/// until the request is decided, and stops at sold out. Returns its confirmed bookings.
async fn client(app: Arc<TestApp>, event: Uuid, client: usize, sale: Arc<Sale>) -> Vec<Booking> {
    let mut confirmed = Vec::new();
    for n in 0.. {
        let key = format!("{event}-c{client}-{n}");
        let user = format!("c{client}-u{}", n % 50);
        let quantity = 1 + n % 2;
        let started = Instant::now();
        while sale.sold.load(Ordering::Relaxed) >= sale.tickets * 2 / 3
            && !sale.killed.load(Ordering::Relaxed)
        {
            assert!(started.elapsed() < EVENTUAL, "Redis was never killed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        loop {
            let answer = app.book(event, &user, quantity, Some(&key)).await;
            match answer.status {
                StatusCode::CREATED => {
                    let booking = answer.booking();
                    sale.sold
                        .fetch_add(i64::from(booking.quantity), Ordering::Relaxed);
                    confirmed.push(booking);
                    break;
                }
                StatusCode::CONFLICT if answer.error_code() == "sold_out" => return confirmed,
                StatusCode::CONFLICT => break, // this user's limit: next request
                StatusCode::SERVICE_UNAVAILABLE => {
                    sale.unavailable.fetch_add(1, Ordering::Relaxed);
                    assert!(
                        started.elapsed() < EVENTUAL,
                        "request {key} unavailable for {EVENTUAL:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("booking answered {other}: {}", answer.body),
            }
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "kills the shared Redis: `make test` runs it after every other test (see the Makefile)"]
async fn confirmed_bookings_survive_redis_kill_9() {
    const TICKETS: i64 = 600;
    const LIMIT: i32 = 4;
    const CLIENTS: usize = 24;
    common::init_logs();
    let app = Arc::new(TestApp::spawn(Stage::Redis).await);
    let event = app.create_event(TICKETS, Some(LIMIT)).await;
    let sale = Arc::new(Sale {
        tickets: TICKETS,
        ..Sale::default()
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(app.clone(), event.id, c, sale.clone())))
        .collect();

    // A third into the sale, Redis dies (SIGKILL, no shutdown), stays down a moment, comes back
    // from its AOF; the clients keep buying throughout.
    let started = Instant::now();
    while sale.sold.load(Ordering::Relaxed) < TICKETS / 3 {
        assert!(started.elapsed() < EVENTUAL, "the sale did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sold_at_kill = sale.sold.load(Ordering::Relaxed);
    services(&["kill9", "redis"]).await;
    sale.killed.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    services(&["start", "redis"]).await;

    let mut confirmed: BTreeMap<Uuid, Booking> = BTreeMap::new();
    for c in clients {
        for booking in c.await.expect("client task") {
            assert!(
                confirmed.insert(booking.id, booking).is_none(),
                "one booking confirmed to two requests"
            );
        }
    }
    let unavailable = sale.unavailable.load(Ordering::Relaxed);
    let sold: i64 = confirmed.values().map(|b| i64::from(b.quantity)).sum();
    eprintln!(
        "killed at {sold_at_kill} of {TICKETS} tickets; {} bookings ({sold} tickets) confirmed; {unavailable} answers 503 meanwhile",
        confirmed.len()
    );
    assert!(
        unavailable > 0,
        "no request saw Redis down: the kill did not happen mid-sale"
    );
    assert!(
        sold > sold_at_kill,
        "the sale must go on after Redis came back"
    );

    // Redis' view, through the API: nothing oversold, and the counter agrees with the answers.
    let remaining = app.event(event.id).await.remaining;
    assert!(remaining >= 0);
    assert_eq!(
        sold,
        TICKETS - remaining,
        "confirmed tickets != tickets - remaining"
    );
    assert!(
        remaining < i64::from(LIMIT),
        "the clients stopped at sold out, {remaining} left"
    );
    assert!(
        per_user_from(&confirmed)
            .values()
            .all(|&h| h <= i64::from(LIMIT)),
        "a user above the limit"
    );

    // Postgres' view once the syncer caught up: exactly the confirmed bookings, counts agreeing.
    let ids: BTreeSet<Uuid> = confirmed.keys().copied().collect();
    let stored = app.wait_confirmed_in_db(event.id, &ids).await;
    assert_eq!(
        stored.iter().map(|b| i64::from(b.quantity)).sum::<i64>(),
        sold
    );
    let db_remaining: i64 = sqlx::query_scalar("SELECT remaining FROM events WHERE id = $1")
        .bind(event.id)
        .fetch_one(&app.pool)
        .await
        .expect("read event");
    assert_eq!(
        db_remaining, remaining,
        "Postgres and Redis disagree on what is left"
    );
    let held: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i32)>(
        "SELECT user_id, quantity FROM holdings WHERE event_id = $1 AND quantity > 0",
    )
    .bind(event.id)
    .fetch_all(&app.pool)
    .await
    .expect("read holdings")
    .into_iter()
    .map(|(u, q)| (u, i64::from(q)))
    .collect();
    let expected: BTreeMap<String, i64> = per_user(&stored)
        .into_iter()
        .map(|(u, q)| (u.to_owned(), q))
        .collect();
    assert_eq!(
        held, expected,
        "Postgres holdings disagree with its bookings"
    );
}

fn per_user_from(confirmed: &BTreeMap<Uuid, Booking>) -> BTreeMap<&str, i64> {
    let mut held = BTreeMap::new();
    for b in confirmed.values() {
        *held.entry(b.user_id.as_str()).or_insert(0) += i64::from(b.quantity);
    }
    held
}
