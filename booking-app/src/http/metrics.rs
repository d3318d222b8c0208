//! Prometheus metrics (prometheus-client): HTTP requests by route and status, their latency, and
//! bookings by outcome. `Metrics` is shared by the HTTP layer and the stages; a stage or worker
//! registers its own series (e.g. stream lag) with `Metrics::register`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use super::AppState;
use super::error::ApiError;
use crate::domain::Stage;

/// Prefix of every series this process exports (`booking_http_requests_total`, ...).
pub const METRICS_PREFIX: &str = "booking";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route template (`/events/{id}`), never the raw path: bounded cardinality.
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BookingLabels {
    pub stage: String,
    /// confirmed | pending | sold_out | per_user_limit
    pub outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabels>,
    pub bookings: Family<BookingLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(METRICS_PREFIX);
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        // 0.5 ms .. ~16 s: a hot-row Postgres booking is ~1 ms, a queued one can take seconds.
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_duration.clone(),
        );
        let bookings = Family::<BookingLabels, Counter>::default();
        registry.register("bookings", "Booking requests by outcome", bookings.clone());
        Self {
            registry: Mutex::new(registry),
            http_requests,
            http_duration,
            bookings,
        }
    }

    /// Adds a series to the exported set; keep a clone of `metric` to update it.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .expect("metrics registry poisoned")
            .register(name, help, metric);
    }

    pub fn record_booking(&self, stage: Stage, outcome: &str) {
        self.bookings
            .get_or_create(&BookingLabels {
                stage: stage.as_str().to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(
            &mut out,
            &self.registry.lock().expect("metrics registry poisoned"),
        )?;
        Ok(out)
    }
}

/// Middleware (route layer): counts and times every routed request.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = RouteLabels { method, route };
    metrics
        .http_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: labels.method,
            route: labels.route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// `GET /metrics`
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(err) => ApiError::internal(err).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_series() {
        let metrics = Metrics::new();
        metrics.record_booking(Stage::Postgres, "sold_out");
        metrics
            .http_requests
            .get_or_create(&HttpLabels {
                method: "GET".into(),
                route: "/events/{id}".into(),
                status: 200,
            })
            .inc();
        metrics
            .http_duration
            .get_or_create(&RouteLabels {
                method: "GET".into(),
                route: "/events/{id}".into(),
            })
            .observe(0.002);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"booking_bookings_total{stage="postgres",outcome="sold_out"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"booking_http_requests_total{method="GET",route="/events/{id}",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("booking_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn stages_can_add_series() {
        let metrics = Metrics::new();
        let lag = prometheus_client::metrics::gauge::Gauge::<i64>::default();
        metrics.register("stream_lag", "records not yet decided", lag.clone());
        lag.set(7);
        assert!(metrics.encode().unwrap().contains("booking_stream_lag 7"));
    }
}
