//! The sizing decision the reconciler applies: booking-app and worker replicas, connection pool
//! and partitions. THE one place the capacity engine (issue 7: capacity.rs, calibration.rs,
//! schedule.rs, autoscale.rs) plugs in: replace the body of `decide` with a call into it.
//! Until then: the pinned `capacity.perPodRps` (or a recorded measurement) through
//! `replicas = ceil(targetRps / (perPodRps × targetUtilization))` clamped to [min, max];
//! without either, `minReplicas`, and status says calibration is pending.

use std::time::Duration;

use crate::crd::FlashSaleStatus;
use crate::reconcile::validate::Sale;

/// Postgres `max_connections` of the in-cluster database. Fixed, so scaling booking-app never
/// restarts Postgres; per-pod pools are divided out of it instead.
pub const POSTGRES_MAX_CONNECTIONS: u32 = 200;
/// Connections kept free for migrations, psql and the drain Job.
const RESERVED_CONNECTIONS: u32 = 20;
const MAX_POOL_SIZE: u32 = 16;
const MIN_POOL_SIZE: u32 = 2;
const DEFAULT_PARTITIONS: i32 = 6;

/// What the reconciler builds and reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Sizing {
    pub booking_replicas: i32,
    /// Per-pod capacity behind `booking_replicas`, if known.
    pub per_pod_rps: Option<f64>,
    /// True when `per_pod_rps` came from the spec or a calibration valid for this stage/image.
    pub calibrated: bool,
    pub worker_replicas: i32,
    pub db_pool_size: u32,
    pub postgres_max_connections: u32,
    pub kafka_partitions: i32,
    /// CamelCase cause for status.sizing.reason.
    pub reason: String,
    pub message: String,
    /// Requests per second `booking_replicas` serve at the target utilization.
    pub planned_rps: Option<f64>,
    /// When to reconcile again even if nothing changes (e.g. the sale window opens).
    pub requeue_after: Option<Duration>,
    /// Carried into status: the capacity engine's record of its last measurement.
    pub calibration: Option<crate::crd::CalibrationRecord>,
    pub measured_per_pod_rps: Option<f64>,
}

/// Decide the size of `sale` at its stage, given the status the last reconcile wrote.
pub fn decide(sale: &Sale, status: &FlashSaleStatus) -> Sizing {
    let spec = &sale.spec;
    let cap = &spec.capacity;
    let measured = valid_measurement(sale, status);
    let per_pod = cap.per_pod_rps.or(measured);
    let (booking_replicas, reason, message, planned) = match per_pod {
        Some(per_pod) => {
            let raw = (f64::from(spec.target_rps) / (per_pod * cap.target_utilization)).ceil();
            // f64 → i64 saturates; the clamp keeps the result in [min, max].
            let replicas = (raw as i64).clamp(i64::from(cap.min_replicas), i64::from(cap.max_replicas)) as i32;
            let planned = f64::from(replicas) * per_pod * cap.target_utilization;
            let (reason, message) = if raw > f64::from(cap.max_replicas) {
                ("ClampedToMax", format!("clamped by maxReplicas {}: the sale gets only {planned:.0} rps of {}", cap.max_replicas, spec.target_rps))
            } else if raw < f64::from(cap.min_replicas) {
                ("ClampedToMin", format!("{raw} replicas would serve {} rps; minReplicas is {}", spec.target_rps, cap.min_replicas))
            } else {
                ("Computed", format!("ceil({} / ({per_pod} × {})) = {replicas}", spec.target_rps, cap.target_utilization))
            };
            (replicas, reason, message, Some(planned))
        }
        None => (
            cap.min_replicas,
            "NotCalibrated",
            "no capacity.perPodRps pinned and no calibration recorded for this stage and image: running minReplicas".to_string(),
            None,
        ),
    };
    let worker_replicas = if spec.stage.has_worker() { spec.booking_app.worker.replicas.unwrap_or(1) } else { 0 };
    Sizing {
        booking_replicas,
        per_pod_rps: per_pod,
        calibrated: per_pod.is_some(),
        worker_replicas,
        db_pool_size: spec.booking_app.db_pool_size.unwrap_or_else(|| pool_size(booking_replicas + worker_replicas)),
        postgres_max_connections: POSTGRES_MAX_CONNECTIONS,
        kafka_partitions: spec.kafka.partitions.unwrap_or(DEFAULT_PARTITIONS.max(worker_replicas)),
        reason: reason.to_string(),
        message,
        planned_rps: planned,
        requeue_after: Some(Duration::from_secs(300)),
        calibration: status.calibration.clone(),
        measured_per_pod_rps: status.measured_per_pod_rps,
    }
}

/// A recorded measurement counts only for the stage and image it was taken with.
fn valid_measurement(sale: &Sale, status: &FlashSaleStatus) -> Option<f64> {
    let record = status.calibration.as_ref()?;
    (record.stage == sale.spec.stage && record.image == sale.booking_image && record.per_pod_rps > 0.0)
        .then_some(record.per_pod_rps)
}

/// Split the database's connections over every pod that holds a pool.
fn pool_size(pods: i32) -> u32 {
    let pods = u32::try_from(pods.max(1)).unwrap_or(1);
    ((POSTGRES_MAX_CONNECTIONS - RESERVED_CONNECTIONS) / pods).clamp(MIN_POOL_SIZE, MAX_POOL_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::FlashSale;
    use crate::fixtures::FlashSaleBuilder;
    use crate::reconcile::validate::{Defaults, validate};
    use crate::stage::Stage;

    fn size(fs: &FlashSale) -> Sizing {
        decide(&validate(fs, &Defaults::default()).unwrap(), &fs.status.clone().unwrap_or_default())
    }

    #[test]
    fn pinned_per_pod_rps_gives_the_roadmap_formula() {
        let fs = FlashSaleBuilder::new("s", Stage::Postgres).target_rps(10_000).per_pod_rps(1_000.0).replicas(1, 100).build();
        let sizing = size(&fs);
        // 10000 / (1000 × 0.7) = 14.28 → 15
        assert_eq!(sizing.booking_replicas, 15);
        assert_eq!(sizing.reason, "Computed");
        assert!(sizing.calibrated);
    }

    #[test]
    fn clamped_to_max_says_how_much_the_sale_gets() {
        let fs = FlashSaleBuilder::new("s", Stage::Postgres).target_rps(1_000_000).per_pod_rps(1_000.0).replicas(2, 10).build();
        let sizing = size(&fs);
        assert_eq!(sizing.booking_replicas, 10);
        assert_eq!(sizing.reason, "ClampedToMax");
        assert!(sizing.message.contains("7000 rps"), "{}", sizing.message);
    }

    #[test]
    fn without_capacity_it_runs_min_replicas_and_says_so() {
        let fs = FlashSaleBuilder::new("s", Stage::Redis).replicas(3, 10).build();
        let sizing = size(&fs);
        assert_eq!(sizing.booking_replicas, 3);
        assert_eq!(sizing.reason, "NotCalibrated");
        assert!(!sizing.calibrated);
        assert_eq!(sizing.worker_replicas, 1);
    }

    #[test]
    fn pool_fits_the_database_with_headroom() {
        let fs = FlashSaleBuilder::new("s", Stage::Postgres).target_rps(100_000).per_pod_rps(1_000.0).replicas(1, 60).build();
        let sizing = size(&fs);
        let used = sizing.db_pool_size * u32::try_from(sizing.booking_replicas + sizing.worker_replicas).unwrap();
        assert!(used <= POSTGRES_MAX_CONNECTIONS - RESERVED_CONNECTIONS, "{used}");
    }

    #[test]
    fn kafka_partitions_cover_the_workers() {
        let mut fs = FlashSaleBuilder::new("s", Stage::Kafka).build();
        fs.spec.booking_app.worker.replicas = Some(9);
        assert_eq!(size(&fs).kafka_partitions, 9);
    }

    #[test]
    fn a_measurement_for_another_stage_is_ignored() {
        let mut fs = FlashSaleBuilder::new("s", Stage::Kafka).build();
        fs.status = Some(FlashSaleStatus {
            calibration: Some(crate::crd::CalibrationRecord {
                stage: Stage::Redis,
                image: "img".into(),
                slo_p99_ms: 200,
                per_pod_rps: 500.0,
                measured_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                job: None,
                recalibrate: None,
            }),
            ..FlashSaleStatus::default()
        });
        assert!(!size(&fs).calibrated);
    }
}
