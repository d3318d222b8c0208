//! The HTTP API: `app(state)` builds the whole router (handlers per resource, error mapping,
//! metrics, limits). It knows the stage only as `Arc<dyn Inventory>`.

pub mod admission;
pub mod auth;
pub mod body_limit;
pub mod bookings;
pub mod edge;
pub mod error;
pub mod events;
pub mod extract;
pub mod gate;
pub mod health;
pub mod metrics;
pub mod openapi;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware;

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

/// The whole API as one router, ready to serve: the routes, one route layer (`gate`: timing,
/// admission, timeout, metrics) and one layer around everything (`edge`: the body limit, the
/// metrics port, JSON errors).
pub fn app(state: AppState) -> Router {
    let admission = Arc::new(admission::Admission::new(
        &state.limits,
        state.inventory.stage(),
        &state.metrics,
    ));
    let gate = Arc::new(gate::Gate {
        admission,
        metrics: state.metrics.clone(),
        timeout: state.limits.request_timeout(),
    });
    let edge = edge::Edge {
        metrics_elsewhere: state.limits.metrics_listen_addr,
        body: body_limit::BodyLimit {
            max_bytes: state.limits.max_body_bytes,
            timeout: state.limits.request_timeout(),
        },
    };
    let (router, _doc) = openapi::routes().split_for_parts();
    router
        .route_layer(middleware::from_fn_with_state(gate, gate::gate))
        .fallback(no_route)
        // The extractors' own bound (axum's Bytes/Json), the same as the edge's.
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(edge, edge::edge))
        .with_state(state)
}

async fn no_route(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {}", request.uri().path()),
    )
}
