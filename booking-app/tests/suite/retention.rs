//! Stored refusals and idempotency claims expire (`IDEMPOTENCY_RETENTION`): within the retention
//! a refused key's answer is its refusal and the key is bound to that request; after it, a retry
//! is a new request. A confirmed booking never expires and keeps its key.

use std::time::{Duration, Instant};

use booking_app::domain::Stage;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::common::client::{Answer, Decision};
use crate::common::{EVENTUAL, Target, TestApp, drop_database, own_database};

/// Long enough for the checks within it on a loaded machine (stage kafka decides through the
/// broker), short enough for a test.
const RETENTION: Duration = Duration::from_secs(6);

/// The key was used before with another request: 422, or at stage kafka (whose door reads no
/// store once the first request left the queue) queued and decided as refused.
async fn assert_reused(app: &TestApp, answer: &Answer) {
    if app.stage == Stage::Kafka && answer.status == StatusCode::ACCEPTED {
        assert_eq!(
            app.settle(answer).await,
            Decision::Rejected("idempotency_key_reused".into())
        );
        return;
    }
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.body
    );
    assert_eq!(answer.error_code(), "idempotency_key_reused");
}

async fn refusals_in_db(app: &TestApp, event_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM bookings WHERE event_id = $1 AND status = 'rejected'")
        .bind(event_id)
        .fetch_one(&app.pool)
        .await
        .expect("count refusals")
}

/// Waits until Postgres holds a refusal of the event (stage redis writes it behind).
async fn wait_refusal_stored(app: &TestApp, event_id: Uuid) {
    let started = Instant::now();
    while refusals_in_db(app, event_id).await == 0 {
        app.assert_worker_alive();
        assert!(
            started.elapsed() < EVENTUAL,
            "no refusal stored after {EVENTUAL:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until Postgres holds no refusal of the event (the sweep deleted them), no sooner than
/// `not_before` after `since`: deleting a refusal early would break its replays.
async fn wait_refusals_expired(app: &TestApp, event_id: Uuid, since: Instant) {
    loop {
        let left = refusals_in_db(app, event_id).await;
        if left == 0 {
            break;
        }
        app.assert_worker_alive();
        assert!(
            since.elapsed() < RETENTION + EVENTUAL,
            "{left} refusals still stored {:?} after the first one (retention {RETENTION:?})",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        since.elapsed() >= RETENTION,
        "refusals deleted {:?} after they were stored, before the retention of {RETENTION:?}",
        since.elapsed()
    );
}

pub async fn a_refused_key_is_a_new_request_after_the_retention(target: Target) {
    let database = own_database("retention").await;
    let app = TestApp::spawn_with(target, |config| {
        config.postgres.database_url = database.clone();
        // Its own Redis keys too: a syncer writes the events it watches into this database.
        config.redis.redis_key_prefix = format!("test-retention-{}", Uuid::new_v4());
        config.idempotency.idempotency_retention = RETENTION;
    })
    .await;
    let event = app.create_event(1, None).await;
    let key = format!("expiring-{}", Uuid::new_v4());

    // alice asks for 2 of 1 ticket: refused, and the refusal is kept for her key.
    let refused = app.book(event.id, "alice", 2, Some(&key)).await;
    let stored_at = Instant::now();
    app.assert_sold_out(&refused).await;
    // Within the retention the refusal is the key's answer, and the key is bound to it.
    let replay = app.book(event.id, "alice", 2, Some(&key)).await;
    app.assert_sold_out(&replay).await;
    assert_reused(&app, &app.book(event.id, "alice", 1, Some(&key)).await).await;
    wait_refusal_stored(&app, event.id).await;
    assert!(
        stored_at.elapsed() < RETENTION,
        "the checks within the retention took {:?}: the machine is too slow for this test",
        stored_at.elapsed()
    );

    // Past it, Postgres keeps no refusal (stage redis: written behind, then deleted alike) and
    // the key is new: the same key with a request that fits books.
    wait_refusals_expired(&app, event.id, stored_at).await;
    let fresh = app.book(event.id, "alice", 1, Some(&key)).await;
    let Decision::Confirmed(booked) = app.settle(&fresh).await else {
        panic!("after the retention the key is new: {}", fresh.body)
    };
    app.wait_confirmed_in_db(event.id, &[booked.id].into())
        .await;
    assert_eq!(
        app.rows_with_key("alice", &key).await,
        1,
        "the confirmed booking holds the key"
    );

    // A confirmation never expires: a retention later it is stored, holds its key, and a retry
    // replays it.
    tokio::time::sleep(RETENTION + Duration::from_secs(2)).await;
    app.wait_confirmed_in_db(event.id, &[booked.id].into())
        .await;
    assert_eq!(app.rows_with_key("alice", &key).await, 1);
    let retry = app.book(event.id, "alice", 1, Some(&key)).await;
    assert_eq!(retry.booking().id, booked.id, "{}", retry.body);
    assert_eq!(app.event(event.id).await.remaining, 0);

    app.stop().await;
    drop_database(&database).await;
}
