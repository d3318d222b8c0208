//! Trying to oversell: many concurrent clients, more demand than tickets, random users from a
//! small pool (so the per-user limit bites) and random quantities, some retrying with an
//! idempotency key. Afterwards, checked through the API and in Postgres: confirmed tickets ==
//! tickets - remaining, remaining >= 0, no user above the limit, retries booked once, no 5xx.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::common::checks::per_user;
use crate::common::client::{Answer, Decision};
use crate::common::{Target, TestApp};

/// One client's attempt: its request, and every answer it got (several when it retried).
struct Attempt {
    user: String,
    quantity: i32,
    key: Option<String>,
    answers: Vec<Answer>,
}

fn seeded_rng() -> (u64, StdRng) {
    let seed = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("random seed {seed} (set TEST_SEED to replay)");
    (seed, StdRng::seed_from_u64(seed))
}

fn assert_booking_answer(answer: &Answer) {
    assert!(
        !answer.status.is_server_error(),
        "5xx under load: {} {}",
        answer.status,
        answer.body
    );
    assert!(
        matches!(
            answer.status,
            StatusCode::CREATED | StatusCode::ACCEPTED | StatusCode::CONFLICT
        ),
        "unexpected answer {} {}",
        answer.status,
        answer.body
    );
}

pub async fn concurrent_bookings_never_oversell(target: Target) {
    const TICKETS: i64 = 150;
    const LIMIT: i32 = 4;
    const USERS: usize = 60; // 60 users x 4 > 150 tickets: both refusals happen
    const ATTEMPTS: usize = 400;
    let app = Arc::new(TestApp::spawn(target).await);
    let event = app.create_event(TICKETS, Some(LIMIT)).await;
    let (seed, mut rng) = seeded_rng();

    let mut tasks = Vec::with_capacity(ATTEMPTS);
    for i in 0..ATTEMPTS {
        let user = format!("user-{}", rng.random_range(0..USERS));
        let quantity = rng.random_range(1..=3);
        // One in four clients retries: twice at once, then once more after its answer.
        let key = (i % 4 == 0).then(|| format!("{}-{seed}-{i}", event.id));
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let answers = match &key {
                None => vec![app.book(event.id, &user, quantity, None).await],
                Some(key) => {
                    let (a, b) = tokio::join!(
                        app.book(event.id, &user, quantity, Some(key)),
                        app.book(event.id, &user, quantity, Some(key))
                    );
                    let c = app.book(event.id, &user, quantity, Some(key)).await;
                    vec![a, b, c]
                }
            };
            Attempt {
                user,
                quantity,
                key,
                answers,
            }
        }));
    }
    let mut attempts = Vec::with_capacity(ATTEMPTS);
    for task in tasks {
        attempts.push(task.await.expect("client task"));
    }

    // Every answer is a booking answer; every attempt settles to one decision, retries included.
    let mut confirmed: BTreeMap<Uuid, (String, i32)> = BTreeMap::new();
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for attempt in &attempts {
        attempt.answers.iter().for_each(assert_booking_answer);
        let mut decisions = Vec::new();
        for answer in &attempt.answers {
            decisions.push(app.settle(answer).await);
        }
        assert!(
            decisions.windows(2).all(|w| w[0] == w[1]),
            "retries with key {:?} got different answers: {decisions:?}",
            attempt.key
        );
        match &decisions[0] {
            Decision::Confirmed(b) => {
                assert_eq!(
                    (b.user_id.as_str(), b.quantity, b.event_id),
                    (attempt.user.as_str(), attempt.quantity, event.id)
                );
                assert!(
                    confirmed
                        .insert(b.id, (b.user_id.clone(), b.quantity))
                        .is_none(),
                    "booking {} twice",
                    b.id
                );
            }
            Decision::Rejected(code) => {
                assert!(
                    code == "sold_out" || code == "per_user_limit",
                    "unknown refusal {code}"
                );
                *refusals.entry(code.clone()).or_default() += 1;
            }
        }
    }

    // The API's view.
    let remaining = app.event(event.id).await.remaining;
    let sold: i64 = confirmed.values().map(|(_, q)| i64::from(*q)).sum();
    eprintln!(
        "{} confirmed ({sold} tickets), refusals {refusals:?}, remaining {remaining}",
        confirmed.len()
    );
    assert!(remaining >= 0, "remaining {remaining}");
    assert_eq!(
        sold,
        TICKETS - remaining,
        "confirmed tickets != tickets - remaining"
    );
    assert!(
        !confirmed.is_empty() && !refusals.is_empty(),
        "demand exceeded supply: expected both outcomes"
    );
    let mut held: BTreeMap<&str, i64> = BTreeMap::new();
    for (user, quantity) in confirmed.values() {
        *held.entry(user.as_str()).or_default() += i64::from(*quantity);
    }
    assert!(
        held.values().all(|&h| h <= i64::from(LIMIT)),
        "a user above the limit: {held:?}"
    );

    // Postgres' view: exactly the bookings clients were told are confirmed, nothing more.
    let ids: BTreeSet<Uuid> = confirmed.keys().copied().collect();
    let stored = app.wait_confirmed_in_db(event.id, &ids).await;
    let stored_sold: i64 = stored.iter().map(|b| i64::from(b.quantity)).sum();
    assert_eq!(stored_sold, sold);
    assert!(
        per_user(&stored).values().all(|&h| h <= i64::from(LIMIT)),
        "Postgres: a user above the limit"
    );
    app.assert_store_consistent(event.id).await;
    for attempt in attempts.iter().filter(|a| a.key.is_some()) {
        let rows = app
            .rows_with_key(&attempt.user, attempt.key.as_deref().unwrap())
            .await;
        assert!(rows <= 1, "key {:?} stored {rows} times", attempt.key);
    }
}

pub async fn last_ticket_is_sold_once(target: Target) {
    const CLIENTS: usize = 200;
    let app = Arc::new(TestApp::spawn(target).await);
    let event = app.create_event(1, None).await;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { app.book(event.id, &format!("fan-{i}"), 1, None).await })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let answer = task.await.expect("client task");
        assert_booking_answer(&answer);
        match app.settle(&answer).await {
            Decision::Confirmed(b) => winners.push(b.id),
            Decision::Rejected(code) => assert_eq!(code, "sold_out"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "the one ticket was sold {} times",
        winners.len()
    );
    assert_eq!(app.event(event.id).await.remaining, 0);
    app.wait_confirmed_in_db(event.id, &winners.into_iter().collect())
        .await;
    app.assert_store_consistent(event.id).await;
}

pub async fn per_user_limit_holds_under_concurrency(target: Target) {
    const LIMIT: i32 = 3;
    const REQUESTS: usize = 100;
    let app = Arc::new(TestApp::spawn(target).await);
    let event = app.create_event(1_000, Some(LIMIT)).await;
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.book(event.id, "greedy", 1, None).await })
        })
        .collect();
    let mut confirmed = BTreeSet::new();
    for task in tasks {
        let answer = task.await.expect("client task");
        assert_booking_answer(&answer);
        match app.settle(&answer).await {
            Decision::Confirmed(b) => {
                confirmed.insert(b.id);
            }
            Decision::Rejected(code) => assert_eq!(code, "per_user_limit"),
        }
    }
    assert_eq!(
        confirmed.len(),
        LIMIT as usize,
        "one user got {} tickets, limit {LIMIT}",
        confirmed.len()
    );
    assert_eq!(
        app.event(event.id).await.remaining,
        1_000 - i64::from(LIMIT)
    );
    let stored = app.wait_confirmed_in_db(event.id, &confirmed).await;
    assert_eq!(per_user(&stored).get("greedy"), Some(&i64::from(LIMIT)));
    app.assert_store_consistent(event.id).await;
}
