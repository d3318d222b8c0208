//! The HTTP side of the metrics (`crate::metrics`): the middleware that counts and times every
//! routed request, and `GET /metrics`.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
pub use crate::metrics::Metrics;
use crate::metrics::{HttpLabels, RouteLabels};

/// Counts and times one routed request (called by the route gate, `super::gate`, once its
/// answer is ready).
pub fn observe(metrics: &Metrics, method: &str, route: &str, started: Instant, status: u16) {
    let labels = RouteLabels {
        method: method.to_owned(),
        route: route.to_owned(),
    };
    metrics
        .http_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: labels.method,
            route: labels.route,
            status,
        })
        .inc();
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
    use crate::domain::Stage;
    use crate::metrics::HttpLabels;

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
        // The series the operator's load observer reads, under the contract's name.
        assert!(
            text.contains(&format!(
                r#"{}{{method="GET",route="/events/{{id}}",status="200"}} 1"#,
                flashsale_contract::REQUEST_COUNTER
            )),
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
