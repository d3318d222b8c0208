//! The API contract, stage by stage: what a client sees for a booking's whole life.

use booking_app::domain::{BookingStatus, Stage};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::client::Decision;
use crate::common::{Target, TestApp};

pub async fn event_round_trip_and_booking_read_back(target: Target) {
    let app = TestApp::spawn(target).await;
    let name = format!("round-trip-{}", Uuid::new_v4());
    let created = app
        .post_json(
            "/events",
            &json!({"name": name, "tickets": 10, "per_user_limit": 4}),
            None,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id: Uuid = created.body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(created.body["name"], name);
    assert_eq!(created.body["tickets"], 10);
    assert_eq!(created.body["remaining"], 10);
    assert_eq!(created.body["per_user_limit"], 4);
    assert_eq!(app.event(id).await.remaining, 10);

    let answer = app.book(id, "alice", 3, None).await;
    assert!(
        matches!(answer.status, StatusCode::CREATED | StatusCode::ACCEPTED),
        "{}",
        answer.body
    );
    let Decision::Confirmed(booking) = app.settle(&answer).await else {
        panic!("not confirmed: {}", answer.body)
    };
    assert_eq!(
        (booking.event_id, booking.user_id.as_str(), booking.quantity),
        (id, "alice", 3)
    );

    let read = app.get(&format!("/bookings/{}", booking.id)).await;
    assert_eq!(read.status, StatusCode::OK);
    let read = read.booking();
    assert_eq!(read.status, BookingStatus::Confirmed);
    assert_eq!(read.reason, None);
    assert_eq!((read.id, read.event_id, read.quantity), (booking.id, id, 3));
    assert_eq!(app.event(id).await.remaining, 7);
}

pub async fn refusals_are_409_with_their_reason(target: Target) {
    let app = TestApp::spawn(target).await;
    let event = app.create_event(3, Some(2)).await;
    let first = app.book(event.id, "alice", 2, None).await;
    assert!(matches!(app.settle(&first).await, Decision::Confirmed(_)));

    // alice holds 2 of at most 2.
    let over_limit = app.book(event.id, "alice", 1, None).await;
    assert_eq!(
        app.settle(&over_limit).await,
        Decision::Rejected("per_user_limit".into()),
        "{}",
        over_limit.body
    );
    // 1 ticket left, bob asks for 2.
    let too_many = app.book(event.id, "bob", 2, None).await;
    app.assert_sold_out(&too_many).await;
    let last = app.book(event.id, "bob", 1, None).await;
    assert!(matches!(app.settle(&last).await, Decision::Confirmed(_)));
    let none_left = app.book(event.id, "carol", 1, None).await;
    app.assert_sold_out(&none_left).await;
    assert_eq!(app.event(event.id).await.remaining, 0);
}

pub async fn booking_status_streams_as_server_sent_events(target: Target) {
    let app = TestApp::spawn(target).await;
    let event = app.create_event(5, None).await;
    let answer = app.book(event.id, "alice", 1, None).await;
    let id = answer.booking().id;

    let mut response = open_sse(&app, id).await;
    assert!(
        response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // The stream ends after the final state; collect it whole.
    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.expect("stream chunk") {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let states: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| serde_json::from_str(data.trim()).expect("booking JSON"))
        .collect();
    assert!(text.contains("event: booking"), "{text}");
    let last = states
        .last()
        .unwrap_or_else(|| panic!("no states in {text:?}"));
    assert_eq!(last["id"], id.to_string());
    assert_eq!(last["status"], "confirmed");
    assert!(
        states.iter().all(|s| s["status"] == "pending" || s == last),
        "{states:?}"
    );

    let unknown = app
        .get(&format!("/bookings/{}/events", Uuid::new_v4()))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "not_found");
}

/// A booking's status stream, opened: fails the test unless it answers 200.
async fn open_sse(app: &TestApp, id: Uuid) -> reqwest::Response {
    let response = app
        .http
        .get(app.url(&format!("/bookings/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
}

/// Every event of a booking's status stream, read to its end: (event name, data as JSON).
async fn sse_events(app: &TestApp, id: Uuid) -> Vec<(String, Value)> {
    let mut response = open_sse(app, id).await;
    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.expect("stream chunk") {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Events are separated by a blank line; keep-alive comments (`:`) carry no event.
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            let data = field("data:")?;
            let name = field("event:").unwrap_or_else(|| "message".into());
            let json = serde_json::from_str(&data)
                .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data:?}"));
            Some((name, json))
        })
        .collect()
}

/// The schema the document the app serves at `/openapi.json` gives the events of
/// `GET /bookings/{id}/events` (its `Booking`), references resolved inside that document.
async fn booking_schema(app: &TestApp) -> (jsonschema::Validator, Value) {
    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    let stream = &doc.body["paths"]["/bookings/{id}/events"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"];
    let reference = stream["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("the event stream's schema is no reference: {stream}"));
    assert_eq!(reference, "#/components/schemas/Booking");
    let schemas = &doc.body["components"]["schemas"];
    let booking = schemas["Booking"].clone();
    assert!(booking.is_object(), "no Booking schema in {schemas}");
    // The document is the schema's only resource: `#/components/schemas/...` resolves in it.
    let root = json!({"$ref": reference, "components": doc.body["components"]});
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("the document's Booking schema does not compile: {e}"));
    (validator, booking)
}

/// The payload is a `Booking` as the document states it: valid against the schema (types,
/// formats, enums, required), and no property the schema does not name.
fn assert_matches_booking_schema(schema: &(jsonschema::Validator, Value), payload: &Value) {
    let (validator, booking) = schema;
    let errors: Vec<String> = validator
        .iter_errors(payload)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{payload} does not match the OpenAPI Booking schema: {errors:?}"
    );
    let declared = booking["properties"]
        .as_object()
        .expect("Booking properties");
    for field in payload.as_object().expect("a JSON object").keys() {
        assert!(
            declared.contains_key(field),
            "{payload}: `{field}` is not in the OpenAPI Booking schema"
        );
    }
}

/// The `booking` events of `GET /bookings/{id}/events` are the document's own `Booking`
/// (`GET /bookings/{id}` too): a client generated from `/openapi.json` reads what is sent. At
/// stage kafka the stream may carry queued states (with `position`) first, and a request over
/// the per-user limit (which its door cannot know) streams a refusal with its `reason`.
pub async fn booking_events_match_the_openapi_booking_schema(target: Target) {
    let app = TestApp::spawn(target).await;
    let schema = booking_schema(&app).await;
    // The validator is not a pushover: a wrong status, a missing field, a stray one fail it.
    let event = app.create_event(10, Some(1)).await;
    let answer = app.book(event.id, "alice", 1, None).await;
    let Decision::Confirmed(confirmed) = app.settle(&answer).await else {
        panic!("not confirmed: {}", answer.body)
    };
    let read = app.get(&format!("/bookings/{}", confirmed.id)).await;
    assert_matches_booking_schema(&schema, &read.body);
    let mut bad = read.body.clone();
    bad["status"] = json!("maybe");
    assert!(!schema.0.is_valid(&bad), "status outside the enum passed");
    let mut bad = read.body.clone();
    bad.as_object_mut().unwrap().remove("created_at");
    assert!(!schema.0.is_valid(&bad), "a missing required field passed");
    for (field, value) in [("created_at", json!("yesterday")), ("id", json!("b-1"))] {
        let mut bad = read.body.clone();
        bad[field] = value;
        assert!(!schema.0.is_valid(&bad), "formats are checked: {bad}");
    }

    let mut ids = vec![confirmed.id];
    if target.stage == Stage::Kafka {
        // alice holds her 1 of 1: queued, then decided as refused.
        let refused = app.book(event.id, "alice", 1, None).await;
        assert_eq!(refused.status, StatusCode::ACCEPTED, "{}", refused.body);
        ids.push(refused.booking().id);
    }
    for id in ids {
        let events = sse_events(&app, id).await;
        assert!(!events.is_empty(), "no event for booking {id}");
        for (name, payload) in &events {
            assert_eq!(name, "booking", "{payload}");
            assert_matches_booking_schema(&schema, payload);
        }
        let last = &events.last().unwrap().1;
        assert_ne!(last["status"], "pending", "the stream ends decided: {last}");
    }
}

pub async fn idempotent_retries_book_once(target: Target) {
    let app = TestApp::spawn(target).await;
    let event = app.create_event(10, None).await;
    let key = format!("retry-{}", Uuid::new_v4());
    // The same request, with the same key, 20 times at once and then twice more.
    let concurrent =
        futures::future::join_all((0..20).map(|_| app.book(event.id, "alice", 2, Some(&key))))
            .await;
    let later = [
        app.book(event.id, "alice", 2, Some(&key)).await,
        app.book(event.id, "alice", 2, Some(&key)).await,
    ];
    let answers: Vec<_> = concurrent.iter().chain(&later).collect();
    let first_id = answers[0].booking().id;
    for answer in &answers {
        assert!(
            matches!(answer.status, StatusCode::CREATED | StatusCode::ACCEPTED),
            "{}",
            answer.body
        );
        assert_eq!(
            answer.booking().id,
            first_id,
            "a retry got a different booking"
        );
    }
    let Decision::Confirmed(_) = app.settle(answers[0]).await else {
        panic!("not confirmed")
    };
    assert_eq!(
        app.event(event.id).await.remaining,
        8,
        "retries must book nothing more"
    );
    let stored = app.wait_confirmed_in_db(event.id, &[first_id].into()).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(app.rows_with_key("alice", &key).await, 1);

    // A refusal is replayed too: the key's first answer stays the answer.
    let small = app.create_event(1, None).await;
    let refused_key = format!("refused-{}", Uuid::new_v4());
    let refused = app.book(small.id, "bob", 2, Some(&refused_key)).await;
    app.assert_sold_out(&refused).await;
    let again = app.book(small.id, "bob", 2, Some(&refused_key)).await;
    app.assert_sold_out(&again).await;
    assert_eq!(app.event(small.id).await.remaining, 1);
}

pub async fn reused_idempotency_key_is_refused(target: Target) {
    let app = TestApp::spawn(target).await;
    let event = app.create_event(10, None).await;
    let other = app.create_event(10, None).await;
    let key = format!("reuse-{}", Uuid::new_v4());
    let first = app.book(event.id, "alice", 1, Some(&key)).await;
    let Decision::Confirmed(first) = app.settle(&first).await else {
        panic!("not confirmed")
    };
    // Reused by its own user with another body or event. (Another user's use of the same key
    // is another request: `the_same_key_from_two_users_books_twice`.)
    for (event_id, user, quantity) in [(event.id, "alice", 2), (other.id, "alice", 1)] {
        let reused = app.book(event_id, user, quantity, Some(&key)).await;
        if target.stage == Stage::Kafka && reused.status == StatusCode::ACCEPTED {
            // Stage kafka's door reads no store: once the first request is decided and out of
            // the queue, the reuse is queued and the worker decides it as refused.
            assert_eq!(
                app.settle(&reused).await,
                Decision::Rejected("idempotency_key_reused".into())
            );
            continue;
        }
        assert_eq!(
            reused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reused.body
        );
        assert_eq!(reused.error_code(), "idempotency_key_reused");
    }
    assert_eq!(app.event(event.id).await.remaining, 9);
    assert_eq!(app.event(other.id).await.remaining, 10);
    app.wait_confirmed_in_db(event.id, &[first.id].into()).await;
    // Stage kafka stores the worker's refusal (the status shows it); nothing is ever confirmed.
    assert!(
        app.confirmed_in_db(other.id).await.is_empty(),
        "a reuse books nothing"
    );
    if target.stage != Stage::Kafka {
        assert_eq!(app.bookings_in_db(other.id).await, 0);
    }
}

/// A key belongs to its user: the same `Idempotency-Key` from two users is two requests, so
/// nobody can take another user's key first (or read its answer by replaying it).
pub async fn the_same_key_from_two_users_books_twice(target: Target) {
    let app = TestApp::spawn(target).await;
    let event = app.create_event(10, None).await;
    let key = format!("shared-{}", Uuid::new_v4());
    let alice = app.book(event.id, "alice", 1, Some(&key)).await;
    let bob = app.book(event.id, "bob", 2, Some(&key)).await;
    let (Decision::Confirmed(alice), Decision::Confirmed(bob)) =
        (app.settle(&alice).await, app.settle(&bob).await)
    else {
        panic!("both must be confirmed")
    };
    assert_ne!(alice.id, bob.id);
    assert_eq!(
        (alice.user_id.as_str(), bob.user_id.as_str()),
        ("alice", "bob")
    );
    // Each user's retry still replays that user's own booking.
    let again = app.book(event.id, "bob", 2, Some(&key)).await;
    assert_eq!(again.booking().id, bob.id, "{}", again.body);
    assert_eq!(app.event(event.id).await.remaining, 7);
    app.wait_confirmed_in_db(event.id, &[alice.id, bob.id].into())
        .await;
    assert_eq!(app.rows_with_key("alice", &key).await, 1);
    assert_eq!(app.rows_with_key("bob", &key).await, 1);
}

pub async fn operations_endpoints_answer(target: Target) {
    let app = TestApp::spawn(target).await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["stage"], app.stage.as_str());
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(ready.body["status"], "ready");

    let event = app.create_event(1, None).await;
    app.book(event.id, "alice", 1, None).await;
    app.book(event.id, "bob", 1, None).await;
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.body.as_str().expect("metrics are text");
    assert!(
        text.contains(
            r#"booking_http_requests_total{method="POST",route="/events/{id}/bookings",status="#
        ),
        "{text}"
    );
    assert!(
        text.contains("booking_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"booking_bookings_total{{stage="{}",outcome="#,
            app.stage
        )),
        "{text}"
    );
}

pub async fn every_documented_route_is_served(target: Target) {
    let app = TestApp::spawn(target).await;
    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(
        doc.body["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc.body["openapi"]
    );
    let paths = doc.body["paths"].as_object().expect("paths");
    assert!(paths.len() >= 9, "{paths:?}");
    for (path, item) in paths {
        let concrete = path.replace("{id}", &Uuid::new_v4().to_string());
        for method in item.as_object().unwrap().keys() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let answer = app.request(method.clone(), &concrete).await;
            // Any answer but the router's own "no such route" proves the route exists.
            let code = answer.body["error"]["code"].as_str();
            assert!(
                code != Some("no_route") && answer.status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not served: {} {}",
                answer.status,
                answer.body
            );
        }
    }
}
