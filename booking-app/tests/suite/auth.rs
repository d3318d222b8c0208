//! Identity, stage by stage: a booking's user is the verified token's subject, never the body's
//! say-so; no or bad token is 401, a token for someone else's action is 403.

use booking_app::domain::BookingStatus;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::auth::{self, AUDIENCE, ISSUER};
use crate::common::client::{Answer, Decision};
use crate::common::{Target, TestApp};

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A token signed with `secret` carrying exactly `claims`.
fn signed(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

fn test_secret() -> Vec<u8> {
    std::fs::read(auth::secret_file()).unwrap()
}

/// Valid claims for `sub`, to be spoiled one at a time.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600})
}

impl TestApp {
    /// A request with exactly this `Authorization` header (none when `None`).
    async fn send_as(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        // A client of its own: the harness's default token must not stand in for a missing one.
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut request = client.request(method, self.url(path));
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.json().await.unwrap_or(Value::Null);
        if status == StatusCode::UNAUTHORIZED {
            let challenge = headers
                .get(reqwest::header::WWW_AUTHENTICATE)
                .expect("401 names its scheme in WWW-Authenticate");
            assert!(challenge.to_str().unwrap().starts_with("Bearer"));
        }
        Answer {
            status,
            body,
            content_type,
        }
    }

    async fn book_as(&self, event: Uuid, authorization: Option<&str>, body: &Value) -> Answer {
        self.send_as(
            reqwest::Method::POST,
            &format!("/events/{event}/bookings"),
            authorization,
            Some(body),
        )
        .await
    }
}

fn assert_refused(answer: &Answer, status: StatusCode, code: &str, case: &str) {
    assert_eq!(answer.status, status, "{case}: {}", answer.body);
    assert_eq!(answer.error_code(), code, "{case}: {}", answer.body);
}

pub async fn requests_without_a_token_are_401(target: Target) {
    let app = TestApp::spawn(target).await;
    let event = app.create_event(10, None).await;
    let booking = json!({"quantity": 1});
    for (case, header) in [
        ("no header", None),
        ("empty bearer", Some("Bearer ")),
        ("basic auth", Some("Basic YWxpY2U6c2VjcmV0")),
        ("no scheme", Some("just-a-token")),
    ] {
        let answer = app.book_as(event.id, header, &booking).await;
        assert_refused(&answer, StatusCode::UNAUTHORIZED, "unauthorized", case);
    }
    let answer = app
        .send_as(
            reqwest::Method::POST,
            "/events",
            None,
            Some(&json!({"name": "x", "tickets": 1})),
        )
        .await;
    assert_refused(
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "create event",
    );
    let answer = app
        .send_as(
            reqwest::Method::GET,
            &format!("/bookings/{}", Uuid::new_v4()),
            None,
            None,
        )
        .await;
    assert_refused(
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "read booking",
    );
    assert_eq!(app.event(event.id).await.remaining, 10, "nothing booked");
}

pub async fn expired_misdirected_or_forged_tokens_are_401(target: Target) {
    let app = TestApp::spawn(target).await;
    let event = app.create_event(10, None).await;
    let secret = test_secret();
    let with = |patch: Value| {
        let mut c = claims("mallory");
        c.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        c
    };
    let cases = [
        // Past the 30 s leeway.
        (
            "expired",
            signed(&with(json!({"exp": now() - 120})), &secret),
        ),
        (
            "wrong audience",
            signed(&with(json!({"aud": "another-service"})), &secret),
        ),
        (
            "wrong issuer",
            signed(&with(json!({"iss": "https://evil.example"})), &secret),
        ),
        (
            "not valid yet",
            signed(&with(json!({"nbf": now() + 600})), &secret),
        ),
        (
            "wrong signature",
            signed(&claims("mallory"), b"some-other-secret-of-32-bytes-or-more"),
        ),
        ("no subject", {
            let mut c = claims("x");
            c.as_object_mut().unwrap().remove("sub");
            signed(&c, &secret)
        }),
        ("no expiry", {
            let mut c = claims("mallory");
            c.as_object_mut().unwrap().remove("exp");
            signed(&c, &secret)
        }),
        ("not a JWT", "not.a.jwt".to_owned()),
        ("unsigned (alg none)", {
            let token = auth::token("mallory", true);
            let mut parts = token.split('.');
            let (_, payload) = (parts.next(), parts.next().unwrap());
            // {"alg":"none","typ":"JWT"}
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
        }),
    ];
    for (case, token) in cases {
        let answer = app
            .book_as(
                event.id,
                Some(&format!("Bearer {token}")),
                &json!({"quantity": 1}),
            )
            .await;
        assert_refused(&answer, StatusCode::UNAUTHORIZED, "unauthorized", case);
    }
    // The same claims correctly signed are accepted: the cases above fail for their one flaw.
    let good = signed(&claims("mallory"), &secret);
    let answer = app
        .book_as(
            event.id,
            Some(&format!("Bearer {good}")),
            &json!({"quantity": 1}),
        )
        .await;
    assert!(
        matches!(app.settle(&answer).await, Decision::Confirmed(_)),
        "{}",
        answer.body
    );
    assert_eq!(app.event(event.id).await.remaining, 9);
}

pub async fn the_token_names_the_user_and_the_body_cannot_name_another(target: Target) {
    let app = TestApp::spawn(target).await;
    let event = app.create_event(10, None).await;
    let bob = auth::bearer("bob", false);
    for (case, body) in [
        ("someone else", json!({"user_id": "alice", "quantity": 1})),
        (
            "bob with a space",
            json!({"user_id": "bob ", "quantity": 1}),
        ),
        ("empty", json!({"user_id": "", "quantity": 1})),
    ] {
        let answer = app.book_as(event.id, Some(&bob), &body).await;
        assert_refused(&answer, StatusCode::FORBIDDEN, "forbidden", case);
    }
    for body in [
        json!({"quantity": 1}),
        json!({"user_id": "bob", "quantity": 1}),
    ] {
        let answer = app.book_as(event.id, Some(&bob), &body).await;
        let Decision::Confirmed(booking) = app.settle(&answer).await else {
            panic!("not confirmed: {}", answer.body)
        };
        assert_eq!(booking.user_id, "bob");
    }
    assert_eq!(app.event(event.id).await.remaining, 8);
}

pub async fn only_admins_create_events(target: Target) {
    let app = TestApp::spawn(target).await;
    let new = json!({"name": format!("auth-{}", Uuid::new_v4()), "tickets": 5});
    let user = auth::bearer("bob", false);
    let answer = app
        .send_as(reqwest::Method::POST, "/events", Some(&user), Some(&new))
        .await;
    assert_refused(&answer, StatusCode::FORBIDDEN, "forbidden", "plain user");
    // The admin scope in `scope` (space-separated) or in `roles` grants it.
    let secret = test_secret();
    let mut by_scope = claims("ops");
    by_scope["scope"] = json!("openid flashsale:admin profile");
    let mut by_role = claims("ops");
    by_role["roles"] = json!(["viewer", "flashsale:admin"]);
    let mut lookalike = claims("ops");
    lookalike["scope"] = json!("flashsale:admin-not");
    let lookalike = format!("Bearer {}", signed(&lookalike, &secret));
    let answer = app
        .send_as(
            reqwest::Method::POST,
            "/events",
            Some(&lookalike),
            Some(&new),
        )
        .await;
    assert_refused(
        &answer,
        StatusCode::FORBIDDEN,
        "forbidden",
        "look-alike scope",
    );
    for admin in [by_scope, by_role] {
        let token = format!("Bearer {}", signed(&admin, &secret));
        let answer = app
            .send_as(reqwest::Method::POST, "/events", Some(&token), Some(&new))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "{admin}: {}",
            answer.body
        );
    }
}

pub async fn per_user_limit_holds_however_the_body_is_written(target: Target) {
    let app = TestApp::spawn(target).await;
    let event = app.create_event(100, Some(2)).await;
    let carol = auth::bearer("carol", false);
    // Ten tries with every way of writing the body, each its own request (own key or none),
    // concurrently: carol ends with 2 tickets at most.
    let bodies = [
        json!({"quantity": 1}),
        json!({"user_id": "carol", "quantity": 1}),
        json!({"user_id": "carol-2", "quantity": 1}),
        json!({"user_id": "Carol", "quantity": 1}),
        json!({"user_id": "other", "quantity": 1}),
    ];
    let answers = futures::future::join_all((0..10).map(|i| {
        let body = bodies[i % bodies.len()].clone();
        let (app, carol) = (&app, &carol);
        async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut request = client
                .post(app.url(&format!("/events/{}/bookings", event.id)))
                .header(reqwest::header::AUTHORIZATION, carol.as_str())
                .json(&body);
            if i % 2 == 0 {
                request = request.header("Idempotency-Key", format!("carol-{}-{i}", event.id));
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            Answer {
                status,
                body,
                content_type: Some("application/json".into()),
            }
        }
    }))
    .await;
    let mut confirmed = 0;
    for answer in &answers {
        match answer.status {
            StatusCode::FORBIDDEN => assert_eq!(answer.error_code(), "forbidden"),
            _ => match app.settle(answer).await {
                Decision::Confirmed(booking) => {
                    assert_eq!(booking.user_id, "carol");
                    confirmed += booking.quantity;
                }
                Decision::Rejected(code) => assert_eq!(code, "per_user_limit"),
            },
        }
    }
    assert_eq!(confirmed, 2, "carol holds exactly her limit");
    assert_eq!(app.event(event.id).await.remaining, 98);
    let held: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(quantity), 0)::bigint FROM bookings \
         WHERE event_id = $1 AND status = 'confirmed'",
    )
    .bind(event.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // Stage redis writes behind: Postgres may not have all of them yet, never more.
    assert!(held <= 2, "{held} tickets confirmed in Postgres");
}

pub async fn a_booking_is_read_by_its_owner_or_an_admin(target: Target) {
    let app = TestApp::spawn(target).await;
    let event = app.create_event(10, None).await;
    let dave = auth::bearer("dave", false);
    let answer = app
        .book_as(event.id, Some(&dave), &json!({"quantity": 1}))
        .await;
    let id = answer.booking().id;
    let path = format!("/bookings/{id}");
    let own = app
        .send_as(reqwest::Method::GET, &path, Some(&dave), None)
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    assert_eq!(own.booking().user_id, "dave");
    let admin = auth::bearer("ops", true);
    let read = app
        .send_as(reqwest::Method::GET, &path, Some(&admin), None)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let eve = auth::bearer("eve", false);
    let other = app
        .send_as(reqwest::Method::GET, &path, Some(&eve), None)
        .await;
    assert_refused(&other, StatusCode::FORBIDDEN, "forbidden", "another user");
    let stream = app
        .send_as(
            reqwest::Method::GET,
            &format!("{path}/events"),
            Some(&eve),
            None,
        )
        .await;
    assert_refused(
        &stream,
        StatusCode::FORBIDDEN,
        "forbidden",
        "another user's stream",
    );
    assert!(matches!(
        app.wait_decided(id).await,
        Decision::Confirmed(b) if b.status == BookingStatus::Confirmed
    ));
}
