//! The API as a test client sees it: raw answers (status + JSON), and `settle` which turns any
//! accepted booking into its final decision, polling while the stage keeps it pending.

use std::time::Instant;

use booking_app::domain::{Booking, BookingStatus, Event};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{EVENTUAL, TestApp};

/// One HTTP answer: status and body (JSON when it parses, else the text as a JSON string).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub content_type: Option<String>,
}

impl Answer {
    /// The `error.code` of an error answer; panics when the body is not the error shape.
    pub fn error_code(&self) -> &str {
        assert!(
            self.content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "error answer {} is not JSON: {:?}",
            self.status,
            self.content_type
        );
        let code = self.body["error"]["code"].as_str();
        let message = self.body["error"]["message"].as_str();
        assert!(
            code.is_some() && message.is_some(),
            "not an error body: {} {}",
            self.status,
            self.body
        );
        code.unwrap()
    }

    pub fn booking(&self) -> Booking {
        serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("not a booking ({e}): {} {}", self.status, self.body))
    }
}

/// What a booking request finally came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Confirmed(Booking),
    /// Refused, with the error code (`sold_out`, `per_user_limit`), at once or after queueing.
    Rejected(String),
}

impl TestApp {
    async fn answer(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"));
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.expect("response body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            body,
            content_type,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.answer(self.http.get(self.url(path))).await
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Answer {
        let mut request = self.http.post(self.url(path)).json(body);
        // A body that names a user is sent with that user's token (a booking of theirs).
        if let Some(user) = body.get("user_id").and_then(Value::as_str) {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                super::auth::bearer(user, false),
            );
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.answer(request).await
    }

    /// A POST with exactly these bytes and this content type (none when `None`).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let mut request = self.http.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, ct);
        }
        self.answer(request).await
    }

    pub async fn request(&self, method: reqwest::Method, path: &str) -> Answer {
        self.answer(self.http.request(method, self.url(path))).await
    }

    pub async fn create_event(&self, tickets: i64, per_user_limit: Option<i32>) -> Event {
        let name = format!("test-{}", Uuid::new_v4());
        let answer = self
            .post_json(
                "/events",
                &json!({"name": name, "tickets": tickets, "per_user_limit": per_user_limit}),
                None,
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "create event: {}",
            answer.body
        );
        serde_json::from_value(answer.body).expect("an Event")
    }

    pub async fn event(&self, id: Uuid) -> Event {
        let answer = self.get(&format!("/events/{id}")).await;
        assert_eq!(answer.status, StatusCode::OK, "get event: {}", answer.body);
        serde_json::from_value(answer.body).expect("an Event")
    }

    pub async fn book(
        &self,
        event_id: Uuid,
        user_id: &str,
        quantity: i32,
        key: Option<&str>,
    ) -> Answer {
        self.post_json(
            &format!("/events/{event_id}/bookings"),
            &json!({"user_id": user_id, "quantity": quantity}),
            key,
        )
        .await
    }

    /// Settles `answer`; fails the test, showing its body, unless it was refused as `sold_out`.
    pub async fn assert_sold_out(&self, answer: &Answer) {
        assert_eq!(
            self.settle(answer).await,
            Decision::Rejected("sold_out".into()),
            "{}",
            answer.body
        );
    }

    /// The final decision behind a booking answer: 201 is confirmed, 409 rejected, and 202 is
    /// polled through `GET /bookings/{id}` until decided. Any other status fails the test.
    pub async fn settle(&self, answer: &Answer) -> Decision {
        match answer.status {
            StatusCode::CREATED => {
                let booking = answer.booking();
                assert_eq!(
                    booking.status,
                    BookingStatus::Confirmed,
                    "201 must be confirmed: {}",
                    answer.body
                );
                Decision::Confirmed(booking)
            }
            StatusCode::CONFLICT => Decision::Rejected(answer.error_code().to_owned()),
            StatusCode::ACCEPTED => {
                let pending = answer.booking();
                assert_eq!(
                    pending.status,
                    BookingStatus::Pending,
                    "202 must be pending: {}",
                    answer.body
                );
                self.wait_decided(pending.id).await
            }
            other => panic!("booking answered {other}: {}", answer.body),
        }
    }

    /// Polls a booking until it is confirmed or rejected.
    pub async fn wait_decided(&self, id: Uuid) -> Decision {
        let started = Instant::now();
        loop {
            let answer = self.get(&format!("/bookings/{id}")).await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "GET /bookings/{id}: {}",
                answer.body
            );
            let booking = answer.booking();
            match booking.status {
                BookingStatus::Confirmed => return Decision::Confirmed(booking),
                BookingStatus::Rejected => {
                    let reason = booking
                        .reason
                        .unwrap_or_else(|| panic!("rejected without reason: {}", answer.body));
                    return Decision::Rejected(reason.as_str().to_owned());
                }
                BookingStatus::Pending => {
                    self.assert_worker_alive();
                    assert!(
                        started.elapsed() < EVENTUAL,
                        "booking {id} still pending after {EVENTUAL:?}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }
}
