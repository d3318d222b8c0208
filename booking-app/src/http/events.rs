//! `/events`: create an event with its inventory, read it back with `remaining`.

use axum::extract::State;
use axum::http::StatusCode;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody, JsonWriteRefusals};
use super::extract::{Json, Path};
use super::{AppState, Located, located};
use crate::domain::{Event, NewEvent};
use crate::validation::validate_new_event;

/// `POST /events`
#[utoipa::path(post, path = "/events", tag = "events",
    request_body = NewEvent,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Event,
            headers(("Location" = String, description = "/events/{id}"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        JsonWriteRefusals,
        (status = 403, description = "The token lacks the `flashsale:admin` scope or role", body = ErrorBody),
        (status = 422, description = "Invalid values", body = ErrorBody),
    ))]
pub async fn create_event(
    State(state): State<AppState>,
    caller: Caller,
    Json(new): Json<NewEvent>,
) -> Result<Located<Event>, ApiError> {
    caller.require_admin()?;
    validate_new_event(&new).map_err(|e| ApiError::invalid(e.to_string()))?;
    let event = state.inventory.create_event(new).await?;
    let location = format!("/events/{}", event.id);
    Ok(located(StatusCode::CREATED, location, event))
}

/// `GET /events/{id}`
#[utoipa::path(get, path = "/events/{id}", tag = "events",
    params(("id" = Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The event and its remaining tickets", body = Event),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
    ))]
pub async fn get_event(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Event>, ApiError> {
    Ok(axum::Json(state.inventory.get_event(id).await?))
}
