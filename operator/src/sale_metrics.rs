//! Per-sale gauges (`flashsale_operator_sale_*`) for dashboards and alerts: what the controller's
//! cache says about each FlashSale (phase, replicas, planned against target rps, calibration),
//! recomputed from the cache at every scrape, so a deleted sale's series disappear with it.

use crate::crd::FlashSale;
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The controller's cache of the sales it watches (one per watched namespace).
pub type SaleStore = Store<DeserializeGuard<FlashSale>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SaleLabels {
    pub namespace: String,
    pub sale: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub sale: String,
    /// The status phase (Pending, Ready, Degraded, ...); the series is 1 for the current one.
    pub phase: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Default)]
pub struct SaleGauges {
    /// The caches of the running controllers, by `watch` id.
    stores: Arc<Mutex<Vec<(u64, SaleStore)>>>,
    next_id: AtomicU64,
    phase: Family<PhaseLabels, Gauge>,
    replicas: Family<SaleLabels, Gauge>,
    desired_replicas: Family<SaleLabels, Gauge>,
    target_rps: Family<SaleLabels, FloatGauge>,
    planned_rps: Family<SaleLabels, FloatGauge>,
    observed_rps: Family<SaleLabels, FloatGauge>,
    measured_per_pod_rps: Family<SaleLabels, FloatGauge>,
    calibration_failures: Family<SaleLabels, Gauge>,
}

impl SaleGauges {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sale_phase",
            "1 for the FlashSale's current status.phase",
            self.phase.clone(),
        );
        registry.register(
            "sale_replicas",
            "Ready booking-app pods of the FlashSale (status.replicas)",
            self.replicas.clone(),
        );
        registry.register(
            "sale_desired_replicas",
            "Booking-app pods the sizing asks for (status.desiredReplicas)",
            self.desired_replicas.clone(),
        );
        registry.register(
            "sale_target_rps",
            "Requests per second the sale must serve (spec.targetRps)",
            self.target_rps.clone(),
        );
        registry.register(
            "sale_planned_rps",
            "Requests per second the desired replicas serve at the target utilization (status.sizing.plannedRps)",
            self.planned_rps.clone(),
        );
        registry.register(
            "sale_observed_rps",
            "Requests per second the booking pods served recently (status.observedRps)",
            self.observed_rps.clone(),
        );
        registry.register(
            "sale_measured_per_pod_rps",
            "Per-pod capacity the last calibration measured (status.measuredPerPodRps)",
            self.measured_per_pod_rps.clone(),
        );
        registry.register(
            "sale_calibration_failures",
            "Failed attempts of the calibration under way (status.calibrationAttempt.failures)",
            self.calibration_failures.clone(),
        );
    }

    /// Reads sales from `store` (the controller of one watched namespace) until the returned
    /// guard drops: a controller stopped on losing the leader Lease leaves no frozen series.
    #[must_use = "the store is read only while the guard lives"]
    pub fn watch(&self, store: SaleStore) -> WatchGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.stores
            .lock()
            .expect("sale stores poisoned")
            .push((id, store));
        WatchGuard {
            id,
            stores: self.stores.clone(),
        }
    }

    /// Rebuilds every series from the caches; called just before each scrape is encoded.
    pub fn refresh(&self) {
        let sales: Vec<FlashSale> = {
            let stores = self.stores.lock().expect("sale stores poisoned");
            stores
                .iter()
                .flat_map(|(_, s)| s.state())
                .filter_map(|guarded| guarded.0.as_ref().ok().cloned())
                .collect()
        };
        self.phase.clear();
        self.replicas.clear();
        self.desired_replicas.clear();
        self.target_rps.clear();
        self.planned_rps.clear();
        self.observed_rps.clear();
        self.measured_per_pod_rps.clear();
        self.calibration_failures.clear();
        for sale in &sales {
            self.record(sale);
        }
    }

    fn record(&self, sale: &FlashSale) {
        let labels = SaleLabels {
            namespace: sale.namespace().unwrap_or_default(),
            sale: sale.name_any(),
        };
        self.target_rps
            .get_or_create(&labels)
            .set(f64::from(sale.spec.target_rps));
        let Some(status) = &sale.status else { return };
        if let Some(phase) = status.phase {
            let phase = serde_json::to_value(phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            self.phase
                .get_or_create(&PhaseLabels {
                    namespace: labels.namespace.clone(),
                    sale: labels.sale.clone(),
                    phase,
                })
                .set(1);
        }
        self.replicas
            .get_or_create(&labels)
            .set(i64::from(status.replicas));
        self.desired_replicas
            .get_or_create(&labels)
            .set(i64::from(status.desired_replicas));
        let floats = [
            (
                &self.planned_rps,
                status.sizing.as_ref().and_then(|s| s.planned_rps),
            ),
            (&self.observed_rps, status.observed_rps),
            (&self.measured_per_pod_rps, status.measured_per_pod_rps),
        ];
        for (family, value) in floats {
            if let Some(value) = value {
                family.get_or_create(&labels).set(value);
            }
        }
        if let Some(attempt) = &status.calibration_attempt {
            self.calibration_failures
                .get_or_create(&labels)
                .set(i64::from(attempt.failures));
        }
    }
}

/// Stops `SaleGauges` reading a controller's cache when dropped.
pub struct WatchGuard {
    id: u64,
    stores: Arc<Mutex<Vec<(u64, SaleStore)>>>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Ok(mut stores) = self.stores.lock() {
            stores.retain(|(id, _)| *id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{FlashSaleStatus, Phase, SizingStatus};
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    #[test]
    fn gauges_follow_the_cached_sales_and_drop_deleted_ones() {
        let mut registry = Registry::with_prefix("flashsale_operator");
        let gauges = SaleGauges::default();
        gauges.register(&mut registry);
        let (reader, mut writer) = store::<DeserializeGuard<FlashSale>>();
        let watching = gauges.watch(reader);
        let mut sale = crate::fixtures::FlashSaleBuilder::new("drop", crate::crd::Stage::Redis)
            .namespace("shop")
            .build();
        sale.status = Some(FlashSaleStatus {
            phase: Some(Phase::Degraded),
            replicas: 2,
            desired_replicas: 5,
            sizing: Some(SizingStatus {
                planned_rps: Some(4500.5),
                ..Default::default()
            }),
            ..Default::default()
        });
        let guarded = DeserializeGuard(Ok(sale));
        writer.apply_watcher_event(&Event::Apply(guarded.clone()));
        gauges.refresh();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"flashsale_operator_sale_phase{namespace="shop",sale="drop",phase="Degraded"} 1"#,
            r#"flashsale_operator_sale_desired_replicas{namespace="shop",sale="drop"} 5"#,
            r#"flashsale_operator_sale_replicas{namespace="shop",sale="drop"} 2"#,
            r#"flashsale_operator_sale_planned_rps{namespace="shop",sale="drop"} 4500.5"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        writer.apply_watcher_event(&Event::Delete(guarded));
        gauges.refresh();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains(r#"sale="drop""#), "{text}");
        // A stopped controller's cache is no longer read.
        writer.apply_watcher_event(&Event::Apply(DeserializeGuard(Ok(
            crate::fixtures::FlashSaleBuilder::new("again", crate::crd::Stage::Redis).build(),
        ))));
        drop(watching);
        gauges.refresh();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains(r#"sale="again""#), "{text}");
    }
}
