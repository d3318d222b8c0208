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

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, RwLock};
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
        .map_or("unmatched", |matched| intern(matched.as_str()));
    request.extensions_mut().insert(gate.admission.clone());
    let handler = async {
        match tokio::time::timeout(gate.timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::from_status(StatusCode::SERVICE_UNAVAILABLE).into_response(),
        }
    };
    // The probes' and the scrape's templates are their paths (no parameters).
    let response = admission::admit(&gate.admission, route, handler).await;
    metrics::observe(
        &gate.metrics,
        &method,
        route,
        started,
        response.status().as_u16(),
    );
    response
}

/// Most route templates interned; the router has about a dozen, so past this something is wrong
/// and the rest share one label rather than growing the set.
const MAX_ROUTES: usize = 64;

/// The route template as a `&'static str`, so labelling a request allocates nothing: each of the
/// router's templates is leaked once (they are the router's own, never a client's path).
fn intern(route: &str) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(RwLock::default);
    if let Some(known) = routes.read().expect("lock poisoned").get(route) {
        return known;
    }
    let mut routes = routes.write().expect("lock poisoned");
    if let Some(known) = routes.get(route) {
        return known;
    }
    if routes.len() >= MAX_ROUTES {
        return "other";
    }
    let leaked: &'static str = Box::leak(route.to_owned().into_boxed_str());
    routes.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::intern;

    #[test]
    fn a_route_is_interned_once() {
        let first = intern("/events/{id}/bookings");
        let again = intern(&String::from("/events/{id}/bookings"));
        assert_eq!(first, "/events/{id}/bookings");
        assert!(std::ptr::eq(first, again));
    }
}
