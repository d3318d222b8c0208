//! One error type for every HTTP answer that is not a success: `{"error":{"code","message"}}`.
//! Stage errors and extractor rejections are mapped here and nowhere else; 5xx details are logged,
//! never sent.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::RejectReason;
use crate::stage::StageError;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `sold_out`, `per_user_limit`, `invalid_request`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// The refusals every write with a JSON body shares (its own 400 and 422 say what of it is
/// malformed or invalid), for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: only its `IntoResponses` description is used
pub enum JsonWriteRefusals {
    #[response(status = 401, description = "No, expired or invalid bearer token")]
    Unauthenticated(ErrorBody),
    #[response(status = 413, description = "Body too large")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "Not application/json")]
    NotJson(ErrorBody),
}

/// An error answer: status, stable code, message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 422: the request is well-formed JSON but its values are not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 400: a path id that is not a UUID.
    pub fn invalid_id(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_id", message)
    }

    /// 403: the caller is known but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 whose cause is logged here and replaced by a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// The default code for a status produced outside our handlers (router, tower layers).
    pub fn from_status(status: StatusCode) -> Self {
        let code = match status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_server_error() => "internal",
            _ => "bad_request",
        };
        let message = status.canonical_reason().unwrap_or("error").to_lowercase();
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // RFC 6750: a 401 names the scheme the client should authenticate with.
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"booking-app\""),
            );
        }
        response
    }
}

impl From<StageError> for ApiError {
    fn from(err: StageError) -> Self {
        match err {
            StageError::EventNotFound(_) | StageError::BookingNotFound(_) => {
                Self::not_found(err.to_string())
            }
            // Both refusals are 409: the request is valid but conflicts with the current state of
            // the inventory (429 would tell clients to retry, which would not help either).
            StageError::Rejected {
                reason: RejectReason::IdempotencyKeyReused,
                ..
            } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                StageError::IdempotencyKeyReused.to_string(),
            ),
            StageError::Rejected { reason, ref detail } => {
                Self::new(StatusCode::CONFLICT, reason.as_str(), detail.clone())
            }
            StageError::IdempotencyKeyReused => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                err.to_string(),
            ),
            StageError::Invalid(message) => Self::invalid(message),
            StageError::Overloaded(ref what) => {
                tracing::debug!(what, "shed: a bound of this pod is reached");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the service is at capacity; retry after the delay in Retry-After",
                )
            }
            StageError::Unavailable { .. } => {
                tracing::warn!(error = %err, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "try again later",
                )
            }
            StageError::Database(sqlx::Error::PoolTimedOut) => {
                tracing::warn!("database pool exhausted");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "try again later",
                )
            }
            StageError::Database(_)
            | StageError::Redis(_)
            | StageError::Kafka(_)
            | StageError::Internal(_) => Self::internal(err),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code) = match &rejection {
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            JsonRejection::JsonDataError(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            }
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            other => (other.status(), "bad_request"),
        };
        Self::new(status, code, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::invalid_id(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn status_and_code(err: StageError) -> (StatusCode, &'static str) {
        let api = ApiError::from(err);
        (api.status, api.code)
    }

    #[test]
    fn stage_errors_map_to_documented_statuses() {
        let id = Uuid::nil();
        assert_eq!(
            status_and_code(StageError::EventNotFound(id)),
            (StatusCode::NOT_FOUND, "not_found")
        );
        assert_eq!(
            status_and_code(StageError::BookingNotFound(id)),
            (StatusCode::NOT_FOUND, "not_found")
        );
        let sold_out = StageError::Rejected {
            reason: RejectReason::SoldOut,
            detail: "x".into(),
        };
        assert_eq!(
            status_and_code(sold_out),
            (StatusCode::CONFLICT, "sold_out")
        );
        let limit = StageError::Rejected {
            reason: RejectReason::PerUserLimit,
            detail: "x".into(),
        };
        assert_eq!(
            status_and_code(limit),
            (StatusCode::CONFLICT, "per_user_limit")
        );
        assert_eq!(
            status_and_code(StageError::IdempotencyKeyReused),
            (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
        );
        assert_eq!(
            status_and_code(StageError::Invalid("bad".into())),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        );
        assert_eq!(
            status_and_code(StageError::Overloaded("queue".into())),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );
        let down = StageError::Unavailable {
            store: "redis",
            detail: "refused".into(),
        };
        assert_eq!(
            status_and_code(down),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert_eq!(
            status_and_code(StageError::Database(sqlx::Error::PoolTimedOut)),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let api = ApiError::from(StageError::Internal("password=hunter2 at db:5432".into()));
        assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!api.message.contains("hunter2"));
    }
}
