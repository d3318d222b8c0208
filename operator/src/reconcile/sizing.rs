//! The sizing decision the reconciler applies: booking-app and worker replicas, connection pool,
//! `max_connections`, partitions, and what calibration does this pass. The decision itself is
//! `crate::scaling::decide` (capacity math, calibration, sale window, observed load); this turns
//! it into the values the builders and the status read.

use std::time::Duration;

use crate::autoscale::ObservedLoad;
use crate::calibration::Run;
use crate::capacity::DEFAULT_PARTITIONS;
use crate::crd::{CalibrationAttempt, CalibrationRecord, FlashSaleStatus};
use crate::reconcile::validate::Sale;
use crate::scaling::{self, Inputs};
use crate::schedule::until;

/// What the reconciler builds and reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Sizing {
    pub booking_replicas: i32,
    /// Per-pod capacity behind `booking_replicas`, if known.
    pub per_pod_rps: Option<f64>,
    /// The Calibrated condition: the capacity is pinned or measured for this stage and image.
    pub calibrated: bool,
    /// CamelCase reason and message of the Calibrated condition.
    pub calibration_reason: String,
    pub calibration_message: String,
    pub worker_replicas: i32,
    pub db_pool_size: u32,
    pub postgres_max_connections: u32,
    pub kafka_partitions: i32,
    /// CamelCase cause for status.sizing.reason.
    pub reason: String,
    pub message: String,
    /// Requests per second `booking_replicas` serve at the target utilization.
    pub planned_rps: Option<f64>,
    /// When to reconcile again even if nothing changes (the window opens, a retry is due, …).
    pub requeue_after: Option<Duration>,
    /// Carried into status: the last measurement, and the calibration under way.
    pub calibration: Option<CalibrationRecord>,
    pub calibration_attempt: Option<CalibrationAttempt>,
    /// The measurement valid for the current stage, image, pod size and SLO.
    pub measured_per_pod_rps: Option<f64>,
    /// Stage kafka: the drain rate of that measurement.
    pub measured_drain_rps: Option<f64>,
    /// Stage kafka: what the queue does at the target (status.sizing.queue).
    pub queue: Option<String>,
    /// Calibration objects to keep applied this pass.
    pub calibration_run: Option<Run>,
    /// Load read from the API pods (`--observe-load`).
    pub observed: Option<ObservedLoad>,
}

/// Decide the size of `sale`, given the status the last reconcile wrote and this pass's inputs.
pub fn decide(sale: &Sale, status: &FlashSaleStatus, inputs: &Inputs) -> Sizing {
    let s = scaling::decide(sale, status, inputs);
    let measured = s.calibration.record.as_ref().filter(|r| s.key.same_pod(r));
    let (measured_per_pod_rps, measured_drain_rps) = (
        measured.map(|r| r.per_pod_rps),
        measured.and_then(|r| r.drain_rps),
    );
    let to_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    Sizing {
        booking_replicas: to_i32(s.booking_replicas),
        per_pod_rps: s.calibration.per_pod_rps,
        calibrated: s.calibration.calibrated,
        calibration_reason: s.calibration.reason.into(),
        calibration_message: s.calibration.message.clone(),
        worker_replicas: to_i32(s.worker_replicas),
        db_pool_size: s.derived.connections.pool,
        postgres_max_connections: s.derived.connections.max_connections,
        kafka_partitions: to_i32(s.derived.partitions.unwrap_or(DEFAULT_PARTITIONS)),
        reason: s.reason,
        message: s.message,
        planned_rps: s.planned_rps,
        requeue_after: s.wake_at.map(|at| until(inputs.now, at)),
        calibration: s.calibration.record,
        calibration_attempt: s.calibration.attempt,
        measured_per_pod_rps,
        measured_drain_rps,
        queue: s.queue.map(|q| q.message()),
        calibration_run: s.calibration.run,
        observed: s.observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::FlashSale;
    use crate::fixtures::{FlashSaleBuilder, sale_from};
    use flashsale_contract::Stage;

    fn size(fs: &FlashSale) -> Sizing {
        decide(
            &sale_from(fs),
            &FlashSaleStatus::default(),
            &Inputs::at(chrono::DateTime::UNIX_EPOCH),
        )
    }

    #[test]
    fn pinned_per_pod_rps_gives_the_roadmap_formula() {
        let fs = FlashSaleBuilder::new("s", Stage::Postgres)
            .target_rps(10_000)
            .per_pod_rps(1_000.0)
            .replicas(1, 100)
            .build();
        let sizing = size(&fs);
        // 10000 / (1000 × 0.7) = 14.28 → 15
        assert_eq!(
            (sizing.booking_replicas, sizing.reason.as_str()),
            (15, "SizedForTarget")
        );
        assert_eq!(
            (sizing.calibrated, sizing.calibration_reason.as_str()),
            (true, "Pinned")
        );
        assert_eq!(sizing.requeue_after, None);
    }

    #[test]
    fn clamped_to_max_says_how_much_the_sale_gets() {
        let fs = FlashSaleBuilder::new("s", Stage::Postgres)
            .target_rps(1_000_000)
            .per_pod_rps(1_000.0)
            .replicas(2, 10)
            .build();
        let sizing = size(&fs);
        assert_eq!(
            (sizing.booking_replicas, sizing.reason.as_str()),
            (10, "ClampedByMaxReplicas")
        );
        assert!(
            sizing.message.contains("only 7000 rps"),
            "{}",
            sizing.message
        );
    }

    #[test]
    fn without_capacity_it_runs_min_replicas_and_calibrates() {
        let sizing = size(
            &FlashSaleBuilder::new("s", Stage::Redis)
                .replicas(3, 10)
                .build(),
        );
        assert_eq!(
            (sizing.booking_replicas, sizing.reason.as_str()),
            (3, "NotCalibrated")
        );
        assert_eq!(
            (sizing.calibrated, sizing.calibration_reason.as_str()),
            (false, "Calibrating")
        );
        assert!(sizing.calibration_run.is_some());
        assert!(sizing.calibration_attempt.is_some());
        assert_eq!(sizing.worker_replicas, 1);
    }

    #[test]
    fn pools_fit_max_connections_at_max_replicas_through_a_rollout() {
        let fs = FlashSaleBuilder::new("s", Stage::Postgres)
            .target_rps(100_000)
            .per_pod_rps(1_000.0)
            .replicas(1, 60)
            .build();
        let sizing = size(&fs);
        // 60 API pods (stage postgres has no worker) + 25% surge, plus the reserve.
        let peak = (60 + 15) * sizing.db_pool_size + crate::capacity::RESERVED_CONNECTIONS;
        assert!(
            peak <= sizing.postgres_max_connections,
            "{peak} > {}",
            sizing.postgres_max_connections
        );
    }

    #[test]
    fn kafka_partitions_cover_the_workers() {
        let mut fs = FlashSaleBuilder::new("s", Stage::Kafka).build();
        fs.spec.booking_app.worker.replicas = Some(9);
        assert_eq!(size(&fs).kafka_partitions, 9);
    }
}
