//! The route gate: the one route layer every routed request passes, in this order: the request
//! is timed, then admitted (`admission`: a place in the stage, or 503 + `Retry-After` at once),
//! then the handler runs within `REQUEST_TIMEOUT_MS` (503 past it), then it is counted in
//! `booking_http_requests_total` and its duration observed, whatever the answer (shed and
//! timed-out requests included). The admission is also handed to the handlers that need it (status
//! streams hold a place of their own).
//!
//! One layer, not one per concern: axum clones the service beneath a layer for every request, so
//! each layer costs allocations on the hot path. Measured at 256 connections in `make bench`
//! (bench/results.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::admission::{self, Admission};
use super::metrics::{self, Metrics};

/// What the gate holds for every request.
pub struct Gate {
    pub admission: Arc<Admission>,
    pub metrics: Arc<Metrics>,
    /// `REQUEST_TIMEOUT_MS`.
    pub timeout: Duration,
}

/// The middleware (a route layer: the matched route is known here).
pub async fn gate(State(gate): State<Arc<Gate>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    request.extensions_mut().insert(gate.admission.clone());
    let path = request.uri().path().to_owned();
    let handler = async {
        match tokio::time::timeout(gate.timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::from_status(StatusCode::SERVICE_UNAVAILABLE).into_response(),
        }
    };
    let response = admission::admit(&gate.admission, &path, handler).await;
    metrics::observe(
        &gate.metrics,
        method.as_str(),
        &route,
        started,
        response.status().as_u16(),
    );
    response
}
