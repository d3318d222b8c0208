//! loadgen's view of the booking API: a pooled HTTP/1 client and the few calls it makes.
//! A booking attempt never fails as a Rust error: every outcome, transport failures included,
//! becomes an `Answer` that the report counts and the invariant ledger accounts for.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use uuid::Uuid;

use super::tokens::Tokens;
use crate::domain::{BookingRequest, BookingStatus, NewEvent};

/// Header a client sets so a retried request books at most once (see `stage::IdempotencyKey`).
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP request to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("not a usable URL {url:?}: {detail}")]
    Url { url: String, detail: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} answered a body loadgen cannot read: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The fields of an event loadgen needs (the server may send more; they are ignored).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EventView {
    pub id: Uuid,
    pub tickets: i64,
    pub remaining: i64,
    #[serde(default)]
    pub per_user_limit: Option<i32>,
}

/// The fields of a booking loadgen needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BookingView {
    pub id: Uuid,
    pub status: BookingStatus,
    pub quantity: i32,
    pub user_id: String,
}

/// Why a booking was refused with 409, read from the error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SoldOut,
    PerUserLimit,
    Other,
}

/// What one booking attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 201: decided and confirmed now.
    Confirmed,
    /// 202: queued; the id is polled until final.
    Pending(Uuid),
    /// 409: a business refusal, a correct answer under load (not an error).
    Refused(Refusal),
    /// 503 `overloaded` (with `Retry-After`): shed at the door before the stage saw it, so
    /// nothing was booked (the API's contract). An error to the SLO like any 503, never an
    /// unknown outcome, and counted apart so a run shows how much of its overload was shed.
    Shed,
    /// Any other status: counted as an error; the booking may or may not exist.
    Unexpected(u16),
    /// No answer at all (connect, timeout, broken body): an error with an unknown outcome.
    Failed(&'static str),
}

impl Answer {
    /// Label under which the report counts this answer.
    pub fn label(&self) -> String {
        match self {
            Answer::Unexpected(status) => status.to_string(),
            Answer::Failed(kind) => format!("no answer ({kind})"),
            fixed => fixed
                .static_label()
                .expect("every other answer has a fixed label")
                .to_string(),
        }
    }

    /// `label` when it is fixed (all but other statuses and failures), without allocating.
    pub fn static_label(&self) -> Option<&'static str> {
        Some(match self {
            Answer::Confirmed => "201 confirmed",
            Answer::Pending(_) => "202 pending",
            Answer::Refused(Refusal::SoldOut) => "409 sold_out",
            Answer::Refused(Refusal::PerUserLimit) => "409 per_user_limit",
            Answer::Refused(Refusal::Other) => "409 other",
            Answer::Shed => "503 shed (Retry-After)",
            Answer::Unexpected(_) | Answer::Failed(_) => return None,
        })
    }

    /// Errors are what an SLO's error rate counts: anything that is not a decision or a queueing.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Answer::Shed | Answer::Unexpected(_) | Answer::Failed(_)
        )
    }

    /// Admitted: the request got in and was decided or queued (201, 202).
    pub fn is_admitted(&self) -> bool {
        matches!(self, Answer::Confirmed | Answer::Pending(_))
    }

    /// True when the request may have booked tickets without loadgen learning it.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Answer::Failed(_) => true,
            // 4xx other than 409 are validation refusals: nothing was booked.
            Answer::Unexpected(status) => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// Pooled client bound to one booking-app base URL.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    /// None: the service runs with AUTH_DISABLED, no token is sent.
    tokens: Option<Arc<Tokens>>,
}

impl ApiClient {
    /// `pool` idle connections are kept per host so `pool` workers each reuse their own.
    /// Every request but a booking carries the admin token of `tokens`.
    pub fn new(
        base_url: &str,
        pool: usize,
        timeout: Duration,
        tokens: Option<Arc<Tokens>>,
    ) -> Result<Self, ClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(tokens) = &tokens {
            let admin = reqwest::header::HeaderValue::from_str(tokens.admin())
                .expect("a token is a header value");
            headers.insert(reqwest::header::AUTHORIZATION, admin);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            // Targets are loopback or in-cluster services: a proxy from the environment is never right.
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(|source| ClientError::Transport {
                url: base_url.to_string(),
                source,
            })?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            tokens,
        })
    }

    /// The `Authorization` value user index `user` books with (None: no tokens).
    pub fn bearer(&self, user: u32) -> Option<std::borrow::Cow<'_, str>> {
        self.tokens.as_deref().map(|t| t.user(user))
    }

    /// The `Authorization` value of any user id (None: no tokens).
    pub fn bearer_named(&self, user: &str) -> Option<String> {
        self.tokens.as_deref().map(|t| t.named(user))
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub async fn create_event(&self, new: &NewEvent) -> Result<EventView, ClientError> {
        let url = format!("{}/events", self.base);
        let request = self.http.post(&url).json(new);
        self.json_call(url, request, StatusCode::CREATED).await
    }

    pub async fn get_event(&self, id: Uuid) -> Result<EventView, ClientError> {
        let url = format!("{}/events/{id}", self.base);
        let request = self.http.get(&url);
        self.json_call(url, request, StatusCode::OK).await
    }

    pub async fn get_booking(&self, id: Uuid) -> Result<BookingView, ClientError> {
        let url = format!("{}/bookings/{id}", self.base);
        let request = self.http.get(&url);
        self.json_call(url, request, StatusCode::OK).await
    }

    /// The URL booking attempts are posted to, parsed once per run: parsing it per request
    /// showed up in loadgen's profile, and loadgen's CPU is taken from the server it measures.
    pub fn bookings_url(&self, event_id: Uuid) -> Result<reqwest::Url, ClientError> {
        let url = format!("{}/events/{event_id}/bookings", self.base);
        reqwest::Url::parse(&url).map_err(|err| ClientError::Url {
            url,
            detail: err.to_string(),
        })
    }

    /// One booking attempt. `body` is the serialized `BookingRequest`; `bearer` is its user's
    /// `Authorization` value (`bearer()`).
    pub async fn book(
        &self,
        bookings_url: &reqwest::Url,
        body: Vec<u8>,
        key: Option<&str>,
        bearer: Option<&str>,
    ) -> Answer {
        let mut request = self
            .http
            .post(bookings_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(bearer) = bearer {
            request = request.header(reqwest::header::AUTHORIZATION, bearer);
        }
        if let Some(key) = key {
            request = request.header(IDEMPOTENCY_KEY_HEADER, key);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Answer::Failed(transport_kind(&err)),
        };
        let status = response.status().as_u16();
        let retry_after = status == 503
            && response
                .headers()
                .contains_key(reqwest::header::RETRY_AFTER);
        // The body is always read to the end so the connection goes back to the pool.
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => return Answer::Failed(transport_kind(&err)),
        };
        shed_if(classify(status, &body), retry_after)
    }

    async fn json_call<T: serde::de::DeserializeOwned>(
        &self,
        url: String,
        request: reqwest::RequestBuilder,
        expected: StatusCode,
    ) -> Result<T, ClientError> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(source) => return Err(ClientError::Transport { url, source }),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(source) => return Err(ClientError::Transport { url, source }),
        };
        if status != expected {
            let body = String::from_utf8_lossy(&body).chars().take(500).collect();
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                body,
            });
        }
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode { url, source })
    }
}

/// Serialized request body for one attempt.
pub fn booking_body(user_id: String, quantity: i32) -> Vec<u8> {
    serde_json::to_vec(&BookingRequest { user_id, quantity })
        .expect("a BookingRequest always serializes")
}

/// Maps a booking answer to an `Answer`; pure so the mapping is tested without a server.
pub fn classify(status: u16, body: &[u8]) -> Answer {
    match status {
        201 => Answer::Confirmed,
        202 => match serde_json::from_slice::<PendingBody>(body) {
            Ok(pending) => Answer::Pending(pending.id),
            // A 202 without a readable id cannot be followed: treat it as an unknown outcome.
            Err(_) => Answer::Failed("202 without a booking id"),
        },
        409 => Answer::Refused(refusal(body)),
        503 if error_code(body).as_deref() == Some("overloaded") => Answer::Shed,
        other => Answer::Unexpected(other),
    }
}

/// A 503 is load shedding when its body says `overloaded`; one without `Retry-After` is not the
/// API's answer (a proxy's, say), so it stays an unexpected status whatever its body.
pub fn shed_if(answer: Answer, retry_after: bool) -> Answer {
    match answer {
        Answer::Shed if !retry_after => Answer::Unexpected(503),
        other => other,
    }
}

#[derive(Deserialize)]
struct PendingBody {
    id: Uuid,
}

/// `{"error": {"code": "sold_out", ...}}`, the HTTP layer's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorCode,
}

#[derive(Deserialize)]
struct ErrorCode {
    code: String,
}

fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error.code)
}

fn refusal(body: &[u8]) -> Refusal {
    if let Some(code) = error_code(body) {
        return match code.as_str() {
            "sold_out" => Refusal::SoldOut,
            "per_user_limit" => Refusal::PerUserLimit,
            _ => Refusal::Other,
        };
    }
    // Another body shape (a proxy in between, an older server): look for the reason's wire name.
    if contains(body, b"per_user_limit") {
        Refusal::PerUserLimit
    } else if contains(body, b"sold_out") {
        Refusal::SoldOut
    } else {
        Refusal::Other
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn transport_kind(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else if err.is_body() || err.is_decode() {
        "body"
    } else {
        "request"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_from_status_and_body() {
        let id = Uuid::new_v4();
        let pending =
            format!(r#"{{"id":"{id}","status":"pending","status_url":"/bookings/{id}"}}"#);
        assert_eq!(classify(201, b"{}"), Answer::Confirmed);
        assert_eq!(classify(202, pending.as_bytes()), Answer::Pending(id));
        assert_eq!(
            classify(202, b"{}"),
            Answer::Failed("202 without a booking id")
        );
        let refused = |code: &str, message: &str| {
            classify(
                409,
                format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#).as_bytes(),
            )
        };
        assert_eq!(
            refused("sold_out", "3 tickets left, 4 asked for"),
            Answer::Refused(Refusal::SoldOut)
        );
        assert_eq!(
            refused("per_user_limit", "not sold_out"),
            Answer::Refused(Refusal::PerUserLimit)
        );
        assert_eq!(
            refused("conflict", "sold_out"),
            Answer::Refused(Refusal::Other)
        );
        assert_eq!(
            classify(409, b"per_user_limit reached"),
            Answer::Refused(Refusal::PerUserLimit)
        );
        assert_eq!(classify(503, b""), Answer::Unexpected(503));
        assert_eq!(
            classify(503, br#"{"error":{"code":"unavailable","message":"x"}}"#),
            Answer::Unexpected(503)
        );
        assert_eq!(
            classify(503, br#"{"error":{"code":"overloaded","message":"x"}}"#),
            Answer::Shed
        );
        assert_eq!(Answer::Shed.label(), "503 shed (Retry-After)");
    }

    #[test]
    fn only_server_side_failures_leave_the_outcome_unknown() {
        assert!(Answer::Failed("timeout").outcome_unknown());
        assert!(Answer::Unexpected(503).outcome_unknown());
        assert!(!Answer::Shed.is_admitted());
        assert!(Answer::Confirmed.is_admitted() && Answer::Pending(Uuid::nil()).is_admitted());
        assert!(!Answer::Unexpected(422).outcome_unknown());
        assert!(!Answer::Refused(Refusal::SoldOut).outcome_unknown());
        assert!(!Answer::Refused(Refusal::SoldOut).is_error());
        assert!(Answer::Unexpected(422).is_error());
        assert!(
            Answer::Shed.is_error() && !Answer::Shed.outcome_unknown(),
            "shed: past capacity, nothing booked"
        );
    }
}
