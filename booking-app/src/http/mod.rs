//! The HTTP API: `app(state)` builds the whole router (handlers per resource, error mapping,
//! metrics, limits). It knows the stage only as `Arc<dyn Inventory>`.

pub mod admission;
pub mod auth;
pub mod body_limit;
pub mod bookings;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod metrics;
pub mod openapi;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::timeout::TimeoutLayer;

use crate::auth::Authenticator;
use crate::config::HttpConfig;
use crate::stage::Inventory;
pub use error::ApiError;
pub use metrics::Metrics;

/// An answer that names where its resource now lives: `201`/`202` with a `Location` header.
pub type Located<T> = (StatusCode, [(header::HeaderName, String); 1], axum::Json<T>);

pub fn located<T>(status: StatusCode, location: String, body: T) -> Located<T> {
    (status, [(header::LOCATION, location)], axum::Json(body))
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub inventory: Arc<dyn Inventory>,
    pub metrics: Arc<Metrics>,
    pub limits: HttpConfig,
    /// Verifies bearer tokens (or, AUTH_DISABLED, nothing).
    pub auth: Arc<Authenticator>,
}

impl axum::extract::FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

/// The whole API as one router, ready to serve.
pub fn app(state: AppState) -> Router {
    let admission = Arc::new(admission::Admission::new(
        &state.limits,
        state.inventory.stage(),
        &state.metrics,
    ));
    let (router, _doc) = openapi::routes().split_for_parts();
    let metrics_elsewhere = state.limits.metrics_listen_addr;
    router
        // Route layers see the matched route: the timeout sits inside the metrics so a timed-out
        // request is still counted (as 503).
        .route_layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.limits.request_timeout(),
        ))
        // Outside the timeout, inside the metrics: a shed request is counted (as 503) and never
        // waits for the stage.
        .route_layer(middleware::from_fn_with_state(
            admission.clone(),
            admission::admit,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .layer(axum::Extension(admission))
        .fallback(no_route)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            metrics_only_elsewhere(metrics_elsewhere, request, next)
        }))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            body_limit::BodyLimit {
                max_bytes: state.limits.max_body_bytes,
                timeout: state.limits.request_timeout(),
            },
            body_limit::limit,
        ))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// With METRICS_LISTEN_ADDR set, `/metrics` answers there only: the API port (open to every
/// client) must not expose it.
async fn metrics_only_elsewhere(
    elsewhere: Option<std::net::SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match elsewhere {
        Some(addr) if request.uri().path() == "/metrics" => ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!(
                "/metrics is served on port {} (METRICS_LISTEN_ADDR)",
                addr.port()
            ),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

async fn no_route(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {}", request.uri().path()),
    )
}

/// Safety net for answers produced outside our handlers (405 from the router, 503 from the
/// timeout): every error leaves this service as `{"error":{...}}`.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
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
