//! Bad input never books: every malformed, mistyped, out-of-range or oversized request gets a
//! 4xx `{"error":{code,message}}` and leaves Postgres untouched.

use booking_app::domain::{MAX_QUANTITY, MAX_TICKETS, MAX_USER_ID_LEN};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::common::client::Answer;
use crate::common::{Target, TestApp};

const JSON: Option<&str> = Some("application/json");

fn assert_error(answer: &Answer, status: StatusCode, case: &str) {
    assert_eq!(answer.status, status, "{case}: {}", answer.body);
    answer.error_code();
}

pub async fn bad_booking_requests_are_4xx_and_write_nothing(target: Target) {
    let app = TestApp::spawn(target).await;
    let event = app.create_event(100, Some(10)).await;
    let path = format!("/events/{}/bookings", event.id);
    let long_user = "u".repeat(MAX_USER_ID_LEN + 1);
    let oversized_user = "u".repeat(app.config.http.max_body_bytes + 1);
    let unprocessable = [
        (
            "zero quantity",
            r#"{"user_id":"alice","quantity":0}"#.to_owned(),
        ),
        (
            "negative quantity",
            r#"{"user_id":"alice","quantity":-1}"#.to_owned(),
        ),
        (
            "quantity above the maximum",
            format!(r#"{{"user_id":"alice","quantity":{}}}"#, MAX_QUANTITY + 1),
        ),
        (
            "quantity beyond i32",
            r#"{"user_id":"alice","quantity":4294967296}"#.to_owned(),
        ),
        (
            "huge quantity",
            r#"{"user_id":"alice","quantity":99999999999999999999999}"#.to_owned(),
        ),
        (
            "fractional quantity",
            r#"{"user_id":"alice","quantity":1.5}"#.to_owned(),
        ),
        (
            "quantity as a string",
            r#"{"user_id":"alice","quantity":"2"}"#.to_owned(),
        ),
        (
            "null quantity",
            r#"{"user_id":"alice","quantity":null}"#.to_owned(),
        ),
        ("missing quantity", r#"{"user_id":"alice"}"#.to_owned()),
        (
            "user_id as a number",
            r#"{"user_id":42,"quantity":1}"#.to_owned(),
        ),
        (
            "unknown field",
            r#"{"user_id":"alice","quantity":1,"price":0}"#.to_owned(),
        ),
        (
            "an array",
            r#"[{"user_id":"alice","quantity":1}]"#.to_owned(),
        ),
    ];
    for (case, body) in unprocessable {
        let answer = app.post_raw(&path, JSON, body).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, case);
    }
    // The harness's token is `DEFAULT_USER`'s: a body naming anyone else is refused.
    let not_the_subject = [
        ("empty user_id", r#"{"user_id":"","quantity":1}"#.to_owned()),
        (
            "blank user_id",
            r#"{"user_id":"   ","quantity":1}"#.to_owned(),
        ),
        (
            "very long user_id",
            format!(r#"{{"user_id":"{long_user}","quantity":1}}"#),
        ),
    ];
    for (case, body) in not_the_subject {
        let answer = app.post_raw(&path, JSON, body).await;
        assert_error(&answer, StatusCode::FORBIDDEN, case);
    }
    let valid = r#"{"user_id":"alice","quantity":1}"#;
    let others = [
        (
            "malformed JSON",
            JSON,
            r#"{"user_id":"alice","quantity":"#.to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        ("empty body", JSON, String::new(), StatusCode::BAD_REQUEST),
        (
            "text/plain",
            Some("text/plain"),
            valid.to_owned(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "form content type",
            Some("application/x-www-form-urlencoded"),
            valid.to_owned(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "no content type",
            None,
            valid.to_owned(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "oversized body",
            JSON,
            format!(r#"{{"user_id":"{oversized_user}","quantity":1}}"#),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        // Far larger than the socket buffers: answered after the body is read, not reset.
        (
            "5 MiB body",
            JSON,
            format!(r#"{{"user_id":"{}","quantity":1}}"#, "u".repeat(5 << 20)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (case, content_type, body, status) in others {
        let answer = app.post_raw(&path, content_type, body).await;
        assert_error(&answer, status, case);
    }
    let bad_key = app
        .http
        .post(app.url(&path))
        .header("Idempotency-Key", "has spaces in it")
        .json(&serde_json::json!({"user_id": "alice", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bad_key.status(),
        StatusCode::BAD_REQUEST,
        "invalid Idempotency-Key"
    );

    let unknown_event = Uuid::new_v4();
    let answer = app.book(unknown_event, "alice", 1, None).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "unknown event");
    let answer = app
        .post_raw("/events/not-a-uuid/bookings", JSON, valid)
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "non-UUID event id");

    // Nothing written, anywhere.
    assert_eq!(app.event(event.id).await.remaining, 100);
    assert_eq!(app.bookings_in_db(event.id).await, 0);
    assert_eq!(app.bookings_in_db(unknown_event).await, 0);
    // And the event still takes a good booking (the bad ones did not poison anything).
    let good = app.book(event.id, "alice", 1, None).await;
    assert!(
        matches!(good.status, StatusCode::CREATED | StatusCode::ACCEPTED),
        "{}",
        good.body
    );
}

pub async fn bad_event_requests_are_4xx_and_write_nothing(target: Target) {
    let app = TestApp::spawn(target).await;
    let name = format!("bad-input-{}", Uuid::new_v4());
    let cases = [
        (
            "negative tickets",
            JSON,
            format!(r#"{{"name":"{name}","tickets":-1}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "too many tickets",
            JSON,
            format!(r#"{{"name":"{name}","tickets":{}}}"#, MAX_TICKETS + 1),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "tickets as a string",
            JSON,
            format!(r#"{{"name":"{name}","tickets":"10"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "fractional tickets",
            JSON,
            format!(r#"{{"name":"{name}","tickets":2.5}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "missing tickets",
            JSON,
            format!(r#"{{"name":"{name}"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "zero per-user limit",
            JSON,
            format!(r#"{{"name":"{name}","tickets":5,"per_user_limit":0}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "negative per-user limit",
            JSON,
            format!(r#"{{"name":"{name}","tickets":5,"per_user_limit":-3}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown field",
            JSON,
            format!(r#"{{"name":"{name}","tickets":5,"remaining":9}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "empty name",
            JSON,
            r#"{"name":"","tickets":5}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        // Postgres refuses NUL in text: refused before it gets there, naming the field.
        (
            "NUL in the name",
            JSON,
            format!(r#"{{"name":"{name}\u0000","tickets":5}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a control character in the name",
            JSON,
            format!(r#"{{"name":"{name}\u001b[31m","tickets":5}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "5 MiB body",
            JSON,
            format!(r#"{{"name":"{}","tickets":5}}"#, "n".repeat(5 << 20)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "malformed JSON",
            JSON,
            format!(r#"{{"name":"{name}","tickets":"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            "text/plain",
            Some("text/plain"),
            format!(r#"{{"name":"{name}","tickets":5}}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (case, content_type, body, status) in cases {
        let answer = app.post_raw("/events", content_type, body).await;
        assert_error(&answer, status, case);
        if case.contains("in the name") {
            let message = answer.body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with("name:"), "{case}: {}", answer.body);
        }
    }
    assert_eq!(
        app.events_named(&name).await,
        0,
        "a refused event was written"
    );
    assert_eq!(app.events_named("").await, 0);
}

pub async fn bad_ids_and_routes_are_4xx_json(target: Target) {
    let app = TestApp::spawn(target).await;
    for path in [
        "/events/not-a-uuid",
        "/bookings/not-a-uuid",
        "/bookings/12345/events",
        "/events/%00",
    ] {
        assert_error(&app.get(path).await, StatusCode::BAD_REQUEST, path);
    }
    let unknown = Uuid::new_v4();
    for path in [format!("/events/{unknown}"), format!("/bookings/{unknown}")] {
        let answer = app.get(&path).await;
        assert_error(&answer, StatusCode::NOT_FOUND, &path);
        assert_eq!(answer.error_code(), "not_found");
    }
    assert_error(
        &app.get("/no/such/route").await,
        StatusCode::NOT_FOUND,
        "unknown route",
    );
    assert_error(
        &app.request(reqwest::Method::DELETE, &format!("/events/{unknown}"))
            .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "wrong method",
    );
}
