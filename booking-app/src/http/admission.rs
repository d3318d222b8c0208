//! Admission control: the API lets at most `MAX_IN_FLIGHT` requests into the stage at once, lets a
//! bounded number more wait up to `ADMISSION_WAIT_MS` for a place, and sheds the rest at once with
//! `503` + `Retry-After` (counted in `booking_http_shed_total`). Past its capacity a stage then
//! answers fewer requests quickly instead of every request slowly: the latency of what is
//! admitted stays near `in-flight / throughput` (Little's law), and nothing queues without bound.
//!
//! Health, readiness, metrics and the OpenAPI document are never shed. Status streams (SSE) hold
//! a place of their own for their whole life, capped separately by `MAX_STREAMS`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;
use super::metrics::Metrics;
use crate::config::HttpConfig;
use crate::domain::Stage;

/// Paths that must answer whatever the load: probes and scrapes.
const NEVER_SHED: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    /// `full`: the wait line was full; `waited`: no place freed up within the wait.
    reason: &'static str,
}

/// The limits of one process, shared by every request.
pub struct Admission {
    places: Arc<Semaphore>,
    limit: usize,
    /// Requests waiting for a place right now; at most `limit` may wait.
    waiting: AtomicUsize,
    wait: Duration,
    streams: Arc<Semaphore>,
    shed: Family<ShedLabels, Counter>,
    in_flight: Gauge,
}

impl Admission {
    /// The limits of `config`, with the stage's default where `MAX_IN_FLIGHT` is not set, their
    /// series registered in `metrics`.
    pub fn new(config: &HttpConfig, stage: Stage, metrics: &Metrics) -> Self {
        let limit = config
            .max_in_flight
            .map_or_else(|| default_in_flight(stage), |n| n as usize)
            .max(1);
        let admission = Self {
            places: Arc::new(Semaphore::new(limit)),
            limit,
            waiting: AtomicUsize::new(0),
            wait: Duration::from_millis(config.admission_wait_ms),
            streams: Arc::new(Semaphore::new(config.max_streams.max(1))),
            shed: Family::default(),
            in_flight: Gauge::default(),
        };
        metrics.register(
            "http_shed",
            "Requests answered 503 at the door because the stage was at its in-flight limit",
            admission.shed.clone(),
        );
        metrics.register(
            "http_in_flight",
            "API requests inside the stage now",
            admission.in_flight.clone(),
        );
        admission
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place inside the stage, or why there is none.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Shed> {
        if let Ok(place) = self.places.clone().try_acquire_owned() {
            return Ok(place);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse("full"));
        }
        let waited = tokio::time::timeout(self.wait, self.places.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(place)) => Ok(place),
            _ => Err(self.refuse("waited")),
        }
    }

    /// A place for one status stream, held until the stream ends; none waits.
    pub fn open_stream(&self) -> Result<OwnedSemaphorePermit, Shed> {
        self.streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.refuse("streams"))
    }

    fn refuse(&self, reason: &'static str) -> Shed {
        self.shed.get_or_create(&ShedLabels { reason }).inc();
        Shed { reason }
    }
}

/// In-flight limit when `MAX_IN_FLIGHT` is not set: generous enough that a closed loop of a few
/// hundred clients is never shed by a healthy stage, small enough that the memory of what waits
/// is bounded. The operator sets it from the calibrated capacity and the SLO instead.
pub fn default_in_flight(stage: Stage) -> usize {
    match stage {
        Stage::Postgres => 512,
        Stage::Redis => 1024,
        Stage::Kafka => 2048,
    }
}

/// A request refused at the door.
#[derive(Debug)]
pub struct Shed {
    reason: &'static str,
}

impl IntoResponse for Shed {
    fn into_response(self) -> Response {
        let message = match self.reason {
            "streams" => {
                "too many status streams are open on this pod; poll the booking instead, or retry"
            }
            _ => "the service is at capacity; retry after the delay in Retry-After",
        };
        // ApiError sets Retry-After on every 503.
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message).into_response()
    }
}

/// Runs `inner` (the handler) holding a place, unless `route` (the matched template) is a probe or
/// a scrape; shed at once or after the bounded wait when there is none. Called by the route gate
/// (`super::gate`).
pub async fn admit<F>(admission: &Admission, route: &str, inner: F) -> Response
where
    F: Future<Output = Response>,
{
    if NEVER_SHED.contains(&route) {
        return inner.await;
    }
    let place = match admission.enter().await {
        Ok(place) => place,
        Err(shed) => return shed.into_response(),
    };
    // A guard, not inc/dec around the await: a client that hangs up drops this future mid-way,
    // and the gauge must come down with it (as the place does).
    let _inside = InFlight::enter(&admission.in_flight);
    let response = inner.await;
    drop(place);
    response
}

/// Counts one request in `booking_http_in_flight` for as long as it lives.
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(limit: usize, wait_ms: u64) -> Admission {
        let config = HttpConfig {
            request_timeout_ms: 1_000,
            max_body_bytes: 1024,
            max_in_flight: Some(limit as u32),
            admission_wait_ms: wait_ms,
            max_streams: 1,
            metrics_listen_addr: None,
        };
        Admission::new(&config, Stage::Postgres, &Metrics::new())
    }

    #[tokio::test]
    async fn past_the_limit_a_bounded_line_waits_then_is_shed() {
        let a = admission(2, 20);
        let first = a.enter().await.unwrap();
        let _second = a.enter().await.unwrap();
        // Nobody leaves: the third waits its 20 ms, then is shed.
        assert_eq!(a.enter().await.unwrap_err().reason, "waited");
        // A place freed while waiting is taken.
        let waiter = a.enter();
        drop(first);
        assert!(waiter.await.is_ok());
    }

    #[tokio::test]
    async fn the_wait_line_is_as_long_as_the_limit() {
        let a = Arc::new(admission(1, 10_000));
        let _inside = a.enter().await.unwrap();
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.enter().await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            a.enter().await.unwrap_err().reason,
            "full",
            "one waits already: the next is refused at once"
        );
        waiting.abort();
    }

    #[tokio::test]
    async fn streams_have_their_own_cap() {
        let a = admission(1, 0);
        let stream = a.open_stream().unwrap();
        assert!(a.open_stream().is_err());
        let _request = a
            .enter()
            .await
            .expect("a stream does not take a request's place");
        drop(stream);
        assert!(a.open_stream().is_ok());
    }

    #[test]
    fn shed_answers_503_with_retry_after() {
        let response = Shed { reason: "full" }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
