//! Prometheus metrics (prometheus-client): HTTP requests by route and status, their latency, and
//! bookings by outcome. One `Metrics` per process, shared by the HTTP layer, the stages and the
//! workers (which is why it sits at the crate's root, below all of them); a stage or worker
//! registers its own series (e.g. stream lag) with `Metrics::register`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::domain::Stage;

// The prefix of every series this process exports, and the request counter the operator's
// load observer scrapes (`booking_http_requests_total`): named by the contract crate.
use flashsale_contract::{HTTP_REQUESTS, METRICS_PREFIX};

// Labels are `&'static str`: the hot path counts every request, and owned strings cost it
// allocations (routes are interned by the gate, methods and outcomes are constants).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: &'static str,
    /// The route template (`/events/{id}`), never the raw path: bounded cardinality.
    pub route: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BookingLabels {
    pub stage: &'static str,
    /// confirmed | pending | sold_out | per_user_limit
    pub outcome: &'static str,
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
            HTTP_REQUESTS,
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

    pub fn record_booking(&self, stage: Stage, outcome: &'static str) {
        self.bookings
            .get_or_create(&BookingLabels {
                stage: stage.as_str(),
                outcome,
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
