//! The API's edge: the one middleware around the whole router, in this order: with
//! METRICS_LISTEN_ADDR set, `/metrics` is refused on the API port; the body is read within
//! `MAX_BODY_BYTES` (`body_limit`); and whatever answer leaves is JSON when it is an error, even
//! one made outside our handlers (405 from the router). One layer for the three: axum clones the
//! service beneath every layer per request (see `gate`).

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::body_limit::{self, BodyLimit};

/// What the edge needs for every request.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    /// METRICS_LISTEN_ADDR: `/metrics` answers there only.
    pub metrics_elsewhere: Option<SocketAddr>,
    pub body: BodyLimit,
}

/// The middleware.
pub async fn edge(State(edge): State<Edge>, request: Request, next: Next) -> Response {
    let response = match edge.metrics_elsewhere {
        // The API port is open to every client: it must not expose the metrics.
        Some(addr) if request.uri().path() == "/metrics" => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!(
                "/metrics is served on port {} (METRICS_LISTEN_ADDR)",
                addr.port()
            ),
        )
        .into_response(),
        _ => match body_limit::read(edge.body, request).await {
            Ok(request) => next.run(request).await,
            Err(refusal) => refusal,
        },
    };
    json_errors(response)
}

/// Safety net for answers produced outside our handlers (405 from the router): every error
/// leaves this service as `{"error":{...}}`.
fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let mut replaced = ApiError::from_status(status).into_response();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    replaced.headers_mut().extend(parts.headers);
    replaced
}
