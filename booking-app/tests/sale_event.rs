//! The sale's own event (`SALE_EVENT_*`, set by the operator from a FlashSale's spec.event),
//! per stage against the real services: created once however often pods start, bookable through
//! the API, and never changed by a later start with other settings.

mod common;

use booking_app::domain::Stage;
use common::TestApp;
use common::client::Decision;
use uuid::Uuid;

async fn start(stage: Stage, id: Uuid, name: &str, tickets: i64) -> TestApp {
    common::init_logs();
    TestApp::spawn_with(stage, |config| {
        config.sale_event.sale_event_id = Some(id);
        config.sale_event.sale_event_name = Some(name.into());
        config.sale_event.sale_event_tickets = Some(tickets);
        config.sale_event.sale_event_per_user_limit = Some(2);
    })
    .await
}

async fn rows_with_id(app: &TestApp, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn starting_twice_creates_one_bookable_event(stage: Stage) {
    let id = Uuid::new_v4();
    let first = start(stage, id, "Sale", 10).await;
    let second = start(stage, id, "Sale", 10).await;
    assert_eq!(rows_with_id(&second, id).await, 1);
    let event = second.event(id).await;
    assert_eq!(
        (
            event.name.as_str(),
            event.tickets,
            event.remaining,
            event.per_user_limit
        ),
        ("Sale", 10, 10, Some(2))
    );

    let answer = first.book(id, "alice", 2, None).await;
    assert!(
        matches!(first.settle(&answer).await, Decision::Confirmed(_)),
        "{}",
        answer.body
    );
    // The configured limit holds: a third ticket for alice is refused.
    let answer = second.book(id, "alice", 1, None).await;
    assert_eq!(
        second.settle(&answer).await,
        Decision::Rejected("per_user_limit".into())
    );
    assert_eq!(second.event(id).await.remaining, 8);
    first.stop().await;
    second.stop().await;
}

async fn other_settings_never_change_the_stored_inventory(stage: Stage) {
    let id = Uuid::new_v4();
    let app = start(stage, id, "Sale", 10).await;
    for user in ["a", "b"] {
        let answer = app.book(id, user, 2, None).await;
        assert!(
            matches!(app.settle(&answer).await, Decision::Confirmed(_)),
            "{}",
            answer.body
        );
    }
    app.stop().await;

    let restarted = start(stage, id, "Renamed", 50).await;
    let event = restarted.event(id).await;
    assert_eq!(
        (event.name.as_str(), event.tickets, event.remaining),
        ("Sale", 10, 6),
        "stored event kept as it was"
    );
    assert_eq!(rows_with_id(&restarted, id).await, 1);
    restarted.stop().await;
}

#[tokio::test]
async fn postgres_starting_twice_creates_one_bookable_event() {
    starting_twice_creates_one_bookable_event(Stage::Postgres).await;
}

#[tokio::test]
async fn postgres_other_settings_never_change_the_stored_inventory() {
    other_settings_never_change_the_stored_inventory(Stage::Postgres).await;
}

#[tokio::test]
async fn redis_starting_twice_creates_one_bookable_event() {
    starting_twice_creates_one_bookable_event(Stage::Redis).await;
}

#[tokio::test]
async fn redis_other_settings_never_change_the_stored_inventory() {
    other_settings_never_change_the_stored_inventory(Stage::Redis).await;
}

#[tokio::test]
async fn kafka_starting_twice_creates_one_bookable_event() {
    starting_twice_creates_one_bookable_event(Stage::Kafka).await;
}

#[tokio::test]
async fn a_partial_sale_event_refuses_to_start() {
    let mut config = common::test_config(Stage::Postgres);
    config.sale_event.sale_event_id = Some(Uuid::new_v4());
    let pool = booking_app::db::connect(&config.postgres)
        .await
        .expect("connect to Postgres");
    let metrics = std::sync::Arc::new(booking_app::http::Metrics::new());
    let err = booking_app::stage::build_inventory(&config, pool, metrics)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("missing SALE_EVENT_NAME, SALE_EVENT_TICKETS"),
        "{err}"
    );
}
