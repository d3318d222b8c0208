//! Prometheus metrics of the operator (`flashsale_operator_*`): reconciles, failures by error
//! label, reconcile duration, whether this replica leads (runs the controller), and the per-sale
//! gauges of `sale_metrics`. Served on /metrics by `server.rs`.

use crate::sale_metrics::SaleGauges;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// "namespace/name" of the FlashSale.
    pub sale: String,
    /// `Error::metric_label`.
    pub error: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    /// 1 while this replica holds the leader Lease (see `leader`).
    pub leader: Gauge,
    /// Per-sale gauges, read from the controllers' caches at each scrape.
    pub sales: SaleGauges,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flashsale_operator");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0]);
        registry.register(
            "reconciles",
            "FlashSale reconciles started",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "FlashSale reconciles that failed, by error",
            failures.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time a FlashSale reconcile took",
            Unit::Seconds,
            duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and runs the controller",
            leader.clone(),
        );
        let sales = SaleGauges::default();
        sales.register(&mut registry);
        Self {
            registry,
            reconciles,
            failures,
            duration,
            leader,
            sales,
        }
    }
}

impl Metrics {
    /// Count a reconcile and time it until the returned guard drops.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    pub fn reconcile_failed(&self, sale: &str, error: &crate::error::Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                sale: sale.into(),
                error: error.metric_label().into(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        self.sales.refresh();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records the elapsed time on drop, so early returns and errors are measured too.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_count_reconciles_failures_and_durations() {
        let m = Metrics::default();
        drop(m.reconcile_started());
        m.reconcile_failed("ns/s", &crate::error::Error::InvalidSpec("x".into()));
        let text = m.encode();
        assert!(
            text.contains("flashsale_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"flashsale_operator_reconcile_failures_total{sale="ns/s",error="invalid_spec"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("flashsale_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }
}
