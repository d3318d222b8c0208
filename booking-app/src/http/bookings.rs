//! Bookings: `POST /events/{id}/bookings` asks the stage for tickets; `GET /bookings/{id}` reads
//! one back; `GET /bookings/{id}/events` streams its states (SSE) until it is decided.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use super::admission::Admission;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody, JsonWriteRefusals};
use super::extract::{Json, Path};
use super::{AppState, Located, located};
use crate::domain::{Booking, BookingBody, BookingOutcome, BookingRequest};
use crate::stage::StageError;
use crate::stage::idempotency;
use crate::validation::validate_idempotency_key;

/// Header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /events/{id}/bookings`
#[utoipa::path(post, path = "/events/{id}/bookings", tag = "bookings",
    params(
        ("id" = Uuid, Path, description = "Event id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200,
            pattern = "^[!-~]+$", description = "Repeating a key returns the first answer and books nothing more; \
                           reusing it for a different request is 422"),
    ),
    request_body = BookingBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Confirmed (stages postgres, redis)", body = BookingAnswer,
            headers(("Location" = String, description = "/bookings/{id}"))),
        (status = 202, description = "Queued; poll `status_url` or stream `events_url` (stage kafka)",
            body = BookingAnswer, headers(("Location" = String, description = "/bookings/{id}"))),
        (status = 400, description = "Malformed JSON, id or header", body = ErrorBody),
        JsonWriteRefusals,
        (status = 403, description = "`user_id` is not the token's subject", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 409, description = "`sold_out` or `per_user_limit`", body = ErrorBody),
        (status = 422, description = "Invalid values, or `idempotency_key_reused`", body = ErrorBody),
        (status = 503, description = "At capacity (`overloaded`) or a store is unavailable (`unavailable`); \
                                      retry after `Retry-After` seconds", body = ErrorBody),
    ))]
pub async fn create_booking(
    State(state): State<AppState>,
    caller: Caller,
    Path(event_id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<BookingBody>,
) -> Result<Located<BookingAnswer>, ApiError> {
    let key = idempotency_key(&headers)?;
    let request = BookingRequest {
        user_id: caller.booking_user(body.user_id)?,
        quantity: body.quantity,
    };
    // Keys are the user's own: the stages see the key scoped to who asks.
    let key = key.map(|k| idempotency::scoped(&request.user_id, &k));
    let stage = state.inventory.stage();
    let outcome = state
        .inventory
        .book(event_id, request, key)
        .await
        .inspect_err(|err| {
            if let StageError::Rejected { reason, .. } = err {
                state.metrics.record_booking(stage, reason.as_str());
            }
        })?;
    let status = match outcome {
        BookingOutcome::Confirmed(_) => StatusCode::CREATED,
        BookingOutcome::Pending(_) => StatusCode::ACCEPTED,
    };
    let booking = match outcome {
        BookingOutcome::Confirmed(b) | BookingOutcome::Pending(b) => b,
    };
    state.metrics.record_booking(stage, booking.status.as_str());
    let answer = BookingAnswer::new(booking);
    Ok(located(status, answer.status_url.clone(), answer))
}

/// The answer to a booking request: the booking, and where to follow it (what a client of a
/// queued booking needs next).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BookingAnswer {
    #[serde(flatten)]
    pub booking: Booking,
    /// `/bookings/{id}`: the booking's current state (also the `Location` header).
    pub status_url: String,
    /// `/bookings/{id}/events`: its states pushed as Server-Sent Events until decided.
    pub events_url: String,
}

impl BookingAnswer {
    pub fn new(booking: Booking) -> Self {
        let status_url = format!("/bookings/{}", booking.id);
        let events_url = format!("{status_url}/events");
        Self {
            booking,
            status_url,
            events_url,
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_header", message);
    let key = value
        .to_str()
        .map_err(|_| invalid("Idempotency-Key: must be ASCII".into()))?;
    validate_idempotency_key(key).map_err(|e| invalid(e.to_string()))?;
    Ok(Some(key.to_owned()))
}

/// The refusals both reads of one booking share, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: only its `IntoResponses` description is used
enum BookingReadRefusals {
    #[response(status = 400, description = "The id is not a UUID")]
    NotAUuid(ErrorBody),
    #[response(status = 401, description = "No, expired or invalid bearer token")]
    Unauthenticated(ErrorBody),
    #[response(
        status = 403,
        description = "Another user's booking (only its owner or an admin reads it)"
    )]
    NotTheOwner(ErrorBody),
    #[response(status = 404, description = "No such booking")]
    NotFound(ErrorBody),
}

/// `GET /bookings/{id}`
#[utoipa::path(get, path = "/bookings/{id}", tag = "bookings",
    params(("id" = Uuid, Path, description = "Booking id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The booking; `reason` when rejected, `position` while queued", body = Booking),
        BookingReadRefusals,
    ))]
pub async fn get_booking(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Booking>, ApiError> {
    let booking = state.inventory.get_booking(id).await?;
    caller.require_owner(&booking.user_id)?;
    Ok(axum::Json(booking))
}

/// `GET /bookings/{id}/events`
#[utoipa::path(get, path = "/bookings/{id}/events", tag = "bookings",
    params(("id" = Uuid, Path, description = "Booking id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Server-sent events named `booking`, each a Booking as JSON; \
                                      the stream ends after the first confirmed or rejected state \
                                      (or after REQUEST_TIMEOUT_MS: reconnect)",
            content_type = "text/event-stream", body = Booking),
        BookingReadRefusals,
        (status = 503, description = "Too many open streams on this pod (`overloaded`); poll instead", body = ErrorBody),
    ))]
pub async fn watch_booking(
    State(state): State<AppState>,
    Extension(admission): Extension<Arc<Admission>>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Response> {
    // The stream's own place, held until it ends (the request's place is given back as soon as
    // the headers are sent).
    let place = admission
        .open_stream()
        .map_err(IntoResponse::into_response)?;
    let mut states = state
        .inventory
        .watch_booking(id)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    // Every stage's stream starts with the booking's current state: its owner is checked on
    // that, and it is sent as the stream's first event.
    let first = states.next().await;
    if let Some(booking) = &first {
        caller
            .require_owner(&booking.user_id)
            .map_err(IntoResponse::into_response)?;
    }
    let states = futures::stream::iter(first).chain(states);
    // Bounded like any request, so an undecided booking cannot hold a graceful shutdown open;
    // an SSE client reconnects and carries on.
    let deadline = tokio::time::sleep(state.limits.request_timeout());
    let events = states.take_until(deadline).map(move |booking| {
        let _place = &place;
        let event = SseEvent::default()
            .event("booking")
            .json_data(&booking)
            .unwrap_or_else(|err| {
                tracing::error!(error = %err, "cannot encode booking");
                SseEvent::default().event("error").data("internal error")
            });
        Ok(event)
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
