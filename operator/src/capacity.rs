//! Unit capacity math from the roadmap, made exact: measure what one pod sustains, multiply.
//! Pure functions shared by the reconciler and `flashsale-operator plan`; every input is validated
//! here so a missing or zero measurement becomes "calibrate first", never a division by zero.

mod connections;
mod partitions;
pub mod queue;
pub mod unit;

pub use connections::{
    ConnectionLimit, ConnectionPlan, ConnectionRequest, DEFAULT_MAX_CONNECTIONS_CEILING,
    POSTGRES_DEFAULT_MAX_CONNECTIONS, RESERVED_CONNECTIONS, ROLLOUT_SURGE_PERCENT,
    plan_connections,
};
pub use partitions::{DEFAULT_PARTITIONS, kafka_partitions};
pub use unit::{Derived, DerivedRequest, default_pool, derive};

/// The utilization a sale is sized for when the spec does not say: 30% left for spikes.
pub const DEFAULT_TARGET_UTILIZATION: f64 = 0.7;

/// Kubernetes stores replica counts as int32: every count this module returns fits in one.
pub const MAX_REPLICAS: u32 = i32::MAX as u32;

/// Relative slack when rounding up: `4000 × 0.7` is not exactly 2800 in binary floating point,
/// and a target of exactly 2800 rps must need 1 pod, not 2.
const ROUNDING_SLACK: f64 = 1e-9;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapacityError {
    #[error("no per-pod capacity measured yet: calibrate first (or pin spec.capacity.perPodRps)")]
    NotCalibrated,
    #[error("per-pod capacity must be a positive, finite number of rps, got {0}: calibrate again")]
    InvalidPerPodRps(f64),
    #[error("targetUtilization must be in (0, 1], got {0}")]
    InvalidUtilization(f64),
    #[error(
        "minReplicas ({min}) must not exceed maxReplicas ({max}), and maxReplicas must be at least 1"
    )]
    InvalidBounds { min: u32, max: u32 },
}

impl CapacityError {
    /// CamelCase reason for a condition.
    pub fn reason(&self) -> &'static str {
        match self {
            CapacityError::NotCalibrated => "NotCalibrated",
            CapacityError::InvalidPerPodRps(_) => "InvalidPerPodRps",
            CapacityError::InvalidUtilization(_) => "InvalidUtilization",
            CapacityError::InvalidBounds { .. } => "InvalidReplicaBounds",
        }
    }
}

/// Everything needed to size one tier (booking-app pods, or stage-kafka workers by drain rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizingRequest {
    pub target_rps: u64,
    /// Pinned or measured capacity of one pod; `None` until calibration has measured it.
    pub per_pod_rps: Option<f64>,
    pub utilization: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
}

/// Why the replica count is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizingLimit {
    /// Exactly what the target needs.
    Computed,
    /// minReplicas holds more pods than the target needs.
    ClampedByMin,
    /// maxReplicas allows fewer pods than the target needs: the sale gets less than its target.
    ClampedByMax,
}

/// The sized tier, with enough numbers to explain itself in status and in `plan`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaPlan {
    pub replicas: u32,
    /// What the target needs before clamping (saturates at `u64::MAX`).
    pub required: u64,
    pub limit: SizingLimit,
    pub target_rps: u64,
    pub per_pod_rps: f64,
    pub utilization: f64,
}

impl ReplicaPlan {
    /// Throughput the replicas carry at the target utilization.
    pub fn planned_rps(&self) -> f64 {
        f64::from(self.replicas) * self.per_pod_rps * self.utilization
    }

    /// Throughput the replicas carry flat out, with no headroom left.
    pub fn saturation_rps(&self) -> f64 {
        f64::from(self.replicas) * self.per_pod_rps
    }

    /// CamelCase reason for a condition.
    pub fn reason(&self) -> &'static str {
        match self.limit {
            SizingLimit::Computed => "SizedForTarget",
            SizingLimit::ClampedByMin => "ClampedByMinReplicas",
            SizingLimit::ClampedByMax => "ClampedByMaxReplicas",
        }
    }

    /// One sentence for status and events.
    pub fn message(&self) -> String {
        let util = self.utilization * 100.0;
        match self.limit {
            SizingLimit::Computed => format!(
                "{} replicas x {} rps per pod at {util:.0}% utilization carry {} rps for a target of {} rps",
                self.replicas,
                whole(self.per_pod_rps),
                whole(self.planned_rps()),
                self.target_rps
            ),
            SizingLimit::ClampedByMin => format!(
                "clamped by minReplicas: {} replicas run although the target of {} rps needs {}",
                self.replicas, self.target_rps, self.required
            ),
            SizingLimit::ClampedByMax => format!(
                "clamped by maxReplicas: the target of {} rps needs {} replicas, {} are allowed; \
                 the sale will get only {} rps at {util:.0}% utilization ({} rps flat out)",
                self.target_rps,
                self.required,
                self.replicas,
                whole(self.planned_rps()),
                whole(self.saturation_rps())
            ),
        }
    }
}

/// Rps shown to people: whole requests, rounded down so a promise is never overstated (after
/// dropping float noise: 358 × 4000 × 0.7 is 1002399.99… in binary, and means 1002400).
pub(crate) fn whole(rps: f64) -> u64 {
    // `as` saturates for huge values and maps NaN to 0, which is what a display needs.
    ((rps * 1e6).round() / 1e6).floor() as u64
}

/// Checks a utilization fraction: a sale sized for 0% or above 100% makes no sense.
pub fn validate_utilization(utilization: f64) -> Result<f64, CapacityError> {
    if utilization.is_finite() && utilization > 0.0 && utilization <= 1.0 {
        Ok(utilization)
    } else {
        Err(CapacityError::InvalidUtilization(utilization))
    }
}

/// Checks a per-pod capacity; `None` (never measured) asks for calibration.
pub fn validate_per_pod_rps(per_pod_rps: Option<f64>) -> Result<f64, CapacityError> {
    match per_pod_rps {
        None => Err(CapacityError::NotCalibrated),
        Some(rps) if rps.is_finite() && rps > 0.0 => Ok(rps),
        Some(rps) => Err(CapacityError::InvalidPerPodRps(rps)),
    }
}

/// Fewest places an API pod admits at once, whatever its measured capacity.
pub const MIN_IN_FLIGHT: u32 = 16;

/// The in-flight limit of an API pod (booking-app `MAX_IN_FLIGHT`) that keeps what it admits
/// within the SLO: by Little's law a pod serving `per_pod_rps` with `L` requests inside spends
/// `L / per_pod_rps` on each on average, so `L = per_pod_rps × slo / 2` keeps the mean at half
/// the p99 SLO, leaving the other half for the tail. Past that the pod sheds (503 + Retry-After)
/// instead of queueing into timeouts.
pub fn in_flight_limit(per_pod_rps: f64, slo_p99_ms: u32) -> u32 {
    let limit = (per_pod_rps * f64::from(slo_p99_ms) / 2_000.0).ceil();
    if !limit.is_finite() || limit <= 0.0 {
        return MIN_IN_FLIGHT;
    }
    (limit.min(f64::from(u32::MAX)) as u32).max(MIN_IN_FLIGHT)
}

/// How long a request past the limit waits for a place (booking-app `ADMISSION_WAIT_MS`): a
/// quarter of the SLO, so waiting and being served stay inside it.
pub fn admission_wait_ms(slo_p99_ms: u32) -> u32 {
    (slo_p99_ms / 4).max(1)
}

/// `ceil(target / per_pod)` with the rounding slack, saturating instead of overflowing.
/// `per_pod` must be positive; a product that underflowed to 0 saturates too.
pub fn pods_for(target_rps: f64, per_pod_rps: f64) -> u64 {
    let exact = target_rps / per_pod_rps;
    if !exact.is_finite() || exact >= u64::MAX as f64 {
        return u64::MAX;
    }
    let nearest = exact.round();
    let pods = if (exact - nearest).abs() <= ROUNDING_SLACK * nearest.max(1.0) {
        nearest
    } else {
        exact.ceil()
    };
    pods.max(0.0) as u64
}

/// `replicas = ceil(targetRps / (perPodRps × utilization))`, clamped to [minReplicas, maxReplicas].
pub fn size_replicas(request: &SizingRequest) -> Result<ReplicaPlan, CapacityError> {
    let utilization = validate_utilization(request.utilization)?;
    let per_pod_rps = validate_per_pod_rps(request.per_pod_rps)?;
    let (min, max) = (request.min_replicas, request.max_replicas);
    if max == 0 || min > max {
        return Err(CapacityError::InvalidBounds { min, max });
    }
    let max = max.min(MAX_REPLICAS);
    let min = min.min(max);
    #[allow(clippy::cast_precision_loss)] // above 2^53 rps a rounding of the target is moot
    let required = pods_for(request.target_rps as f64, per_pod_rps * utilization);
    let (replicas, limit) = if required > u64::from(max) {
        (max, SizingLimit::ClampedByMax)
    } else if required < u64::from(min) {
        (min, SizingLimit::ClampedByMin)
    } else {
        // In [min, max], so it fits in a u32.
        (
            u32::try_from(required).unwrap_or(max),
            SizingLimit::Computed,
        )
    };
    Ok(ReplicaPlan {
        replicas,
        required,
        limit,
        target_rps: request.target_rps,
        per_pod_rps,
        utilization,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target_rps: u64, per_pod_rps: Option<f64>) -> SizingRequest {
        SizingRequest {
            target_rps,
            per_pod_rps,
            utilization: 0.7,
            min_replicas: 2,
            max_replicas: 500,
        }
    }

    #[test]
    fn roadmap_example_one_million_rps_at_4000_per_pod() {
        let plan = size_replicas(&SizingRequest {
            utilization: 1.0,
            ..request(1_000_000, Some(4000.0))
        })
        .unwrap();
        assert_eq!((plan.replicas, plan.limit), (250, SizingLimit::Computed));
        let plan = size_replicas(&request(1_000_000, Some(4000.0))).unwrap();
        // 1_000_000 / 2800 = 357.14…
        assert_eq!(
            (plan.replicas, plan.required, plan.limit),
            (358, 358, SizingLimit::Computed)
        );
        assert!(plan.planned_rps() >= 1_000_000.0);
        assert_eq!(plan.reason(), "SizedForTarget");
    }

    #[test]
    fn exact_multiples_do_not_round_up_from_float_noise() {
        // 4000 × 0.7 and 3000 × 0.7 are inexact in binary; the answers must still be whole.
        assert_eq!(
            size_replicas(&request(2800 * 7, Some(4000.0)))
                .unwrap()
                .replicas,
            7
        );
        let one = SizingRequest {
            min_replicas: 1,
            ..request(2100, Some(3000.0))
        };
        assert_eq!(size_replicas(&one).unwrap().replicas, 1);
        let just_over = SizingRequest {
            min_replicas: 1,
            ..request(2101, Some(3000.0))
        };
        assert_eq!(size_replicas(&just_over).unwrap().replicas, 2);
        let tenth = SizingRequest {
            utilization: 0.1,
            min_replicas: 1,
            ..request(30, Some(100.0))
        };
        assert_eq!(size_replicas(&tenth).unwrap().replicas, 3);
    }

    #[test]
    fn missing_measurement_asks_for_calibration() {
        assert_eq!(
            size_replicas(&request(1000, None)),
            Err(CapacityError::NotCalibrated)
        );
        assert_eq!(CapacityError::NotCalibrated.reason(), "NotCalibrated");
        assert!(
            CapacityError::NotCalibrated
                .to_string()
                .contains("calibrate first")
        );
    }

    #[test]
    fn zero_negative_or_non_finite_measurement_is_refused_not_divided_by() {
        for bad in [
            0.0,
            -0.0,
            -4000.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let err = size_replicas(&request(1000, Some(bad))).unwrap_err();
            assert!(
                matches!(err, CapacityError::InvalidPerPodRps(_)),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn utilization_must_be_in_zero_exclusive_one_inclusive() {
        for bad in [0.0, -0.5, 1.000_001, 7.0, f64::NAN, f64::INFINITY] {
            let err = size_replicas(&SizingRequest {
                utilization: bad,
                ..request(1000, Some(100.0))
            })
            .unwrap_err();
            assert!(
                matches!(err, CapacityError::InvalidUtilization(_)),
                "{bad}: {err:?}"
            );
        }
        let full = size_replicas(&SizingRequest {
            utilization: 1.0,
            ..request(1000, Some(100.0))
        })
        .unwrap();
        assert_eq!(full.replicas, 10);
        let tiny = SizingRequest {
            utilization: f64::MIN_POSITIVE,
            max_replicas: MAX_REPLICAS,
            ..request(1, Some(1.0))
        };
        assert_eq!(
            size_replicas(&tiny).unwrap().limit,
            SizingLimit::ClampedByMax
        );
    }

    #[test]
    fn bounds_must_be_ordered_and_allow_one_pod() {
        let inverted = SizingRequest {
            min_replicas: 5,
            max_replicas: 4,
            ..request(1000, Some(100.0))
        };
        assert_eq!(
            size_replicas(&inverted),
            Err(CapacityError::InvalidBounds { min: 5, max: 4 })
        );
        let none = SizingRequest {
            min_replicas: 0,
            max_replicas: 0,
            ..request(1000, Some(100.0))
        };
        assert!(matches!(
            size_replicas(&none),
            Err(CapacityError::InvalidBounds { .. })
        ));
        let equal = SizingRequest {
            min_replicas: 3,
            max_replicas: 3,
            ..request(1, Some(100.0))
        };
        assert_eq!(size_replicas(&equal).unwrap().replicas, 3);
    }

    #[test]
    fn clamped_by_max_says_what_the_sale_will_get() {
        let plan = size_replicas(&SizingRequest {
            max_replicas: 100,
            ..request(1_000_000, Some(4000.0))
        })
        .unwrap();
        assert_eq!(
            (plan.replicas, plan.required, plan.limit),
            (100, 358, SizingLimit::ClampedByMax)
        );
        assert_eq!(plan.reason(), "ClampedByMaxReplicas");
        assert_eq!(plan.planned_rps().floor(), 280_000.0);
        let message = plan.message();
        assert!(message.contains("only 280000 rps"), "{message}");
        assert!(message.contains("400000 rps flat out"), "{message}");
    }

    #[test]
    fn clamped_by_min_keeps_the_floor() {
        let plan = size_replicas(&request(100, Some(4000.0))).unwrap();
        assert_eq!(
            (plan.replicas, plan.required, plan.limit),
            (2, 1, SizingLimit::ClampedByMin)
        );
        assert!(plan.message().contains("minReplicas"));
        let zero_target = size_replicas(&SizingRequest {
            min_replicas: 0,
            ..request(0, Some(4000.0))
        })
        .unwrap();
        assert_eq!(
            (zero_target.replicas, zero_target.limit),
            (0, SizingLimit::Computed)
        );
    }

    #[test]
    fn huge_targets_saturate_instead_of_overflowing() {
        let plan = size_replicas(&SizingRequest {
            max_replicas: u32::MAX,
            ..request(u64::MAX, Some(0.001))
        })
        .unwrap();
        assert_eq!(plan.required, u64::MAX);
        assert_eq!(
            plan.replicas, MAX_REPLICAS,
            "replicas must fit Kubernetes' int32"
        );
        assert_eq!(plan.limit, SizingLimit::ClampedByMax);
        assert!(plan.planned_rps().is_finite());
        // The smallest positive capacity times a small utilization underflows to 0: still no division by zero.
        let underflow = SizingRequest {
            utilization: 1e-10,
            ..request(u64::MAX, Some(f64::MIN_POSITIVE))
        };
        assert_eq!(size_replicas(&underflow).unwrap().required, u64::MAX);
        // Large but representable: exact.
        let big = SizingRequest {
            max_replicas: MAX_REPLICAS,
            ..request(10_000_000_000, Some(1.0))
        };
        assert_eq!(size_replicas(&big).unwrap().required, 14_285_714_286);
    }

    #[test]
    fn pods_for_rounds_up_everything_but_float_noise() {
        assert_eq!(pods_for(0.0, 10.0), 0);
        assert_eq!(pods_for(1.0, 10.0), 1);
        assert_eq!(pods_for(10.0, 10.0), 1);
        assert_eq!(pods_for(10.5, 10.0), 2);
        assert_eq!(pods_for(1.0, 0.0), u64::MAX);
    }
}
