//! The HTTP side of the metrics (`crate::metrics`): the middleware that counts and times every
//! routed request, and `GET /metrics`.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
pub use crate::metrics::Metrics;
use crate::metrics::{HttpLabels, RouteLabels};

/// Counts and times one routed request (called by the route gate, `super::gate`, once its
/// answer is ready). `route` is the matched template, interned by the gate.
pub fn observe(
    metrics: &Metrics,
    method: &Method,
    route: &'static str,
    started: Instant,
    status: u16,
) {
    let method = method_label(method);
    metrics
        .http_duration
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status,
        })
        .inc();
}

/// The method as a label: the API's routes answer standard methods only (others are 405 before
/// the gate), so anything else is `OTHER` rather than a new series per made-up method.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
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
                method: "GET",
                route: "/events/{id}",
                status: 200,
            })
            .inc();
        metrics
            .http_duration
            .get_or_create(&RouteLabels {
                method: "GET",
                route: "/events/{id}",
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
