//! The sizing decision of one reconcile, and the `Sizing` the builders and the status read:
//! calibration (is a per-pod capacity known?), the capacity math (how many pods for the target,
//! connections, partitions), the sale window (now or minReplicas?) and observed load (more than
//! planned?). `decide` is pure and unit-tested; `observe` (the submodule) is the read of its
//! inputs the pipeline does beside `reconcile::observe`: the calibration attempt's Job and pods,
//! and with `--observe-load` the API pods' request counters.

pub mod observe;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::autoscale::scrape::READ_INTERVAL;
use crate::autoscale::{
    self, AutoscaleDecision, AutoscaleInput, DEFAULT_SCALE_DOWN_COOLDOWN, ObservedLoad, ScaleReason,
};
use crate::calibration::{
    self, Assessment, CalibrationKey, JobState, Observation, describe_resources,
};
use crate::capacity::queue::{EVENTS_PER_SALE, QueuePlan, QueueRequest, plan_queue};
use crate::capacity::{
    self, CapacityError, DEFAULT_MAX_CONNECTIONS_CEILING, DEFAULT_PARTITIONS, Derived,
    DerivedRequest, ReplicaPlan, SizingRequest,
};
use crate::crd::{CalibrationRecord, FlashSaleStatus};
use crate::reconcile::desired::pod;
use crate::reconcile::observe::Observed;
use crate::reconcile::validate::Sale;
use crate::schedule::{self, SaleWindow, WindowDecision, WindowPhase, from_time, until};

/// What `decide` needs beyond the sale and its last status: read by `observe`, or made up by tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub now: DateTime<Utc>,
    /// The `flashsale.dev/recalibrate` annotation.
    pub recalibrate: Option<String>,
    /// The stores of `spec.stage` answer, so a calibration pod can start.
    pub stores_ready: bool,
    pub calibration: Observation,
    /// `None`: load is not followed (`--observe-load` off). `Some(None)`: followed, no rate yet.
    pub load: Option<Option<ObservedLoad>>,
    /// The sale is moving between stages (no calibration meanwhile).
    pub stage_changing: bool,
}

impl Inputs {
    /// Nothing observed yet: the stores answer, no calibration object exists, load not followed.
    pub fn at(now: DateTime<Utc>) -> Self {
        Inputs {
            now,
            recalibrate: None,
            stores_ready: true,
            calibration: Observation {
                server_ready: false,
                job: JobState::Absent,
            },
            load: None,
            stage_changing: false,
        }
    }
}

/// The decision: what the builders build (replicas, pool, `max_connections`, partitions, the
/// calibration objects) and the status reports (reasons, the calibration records, the queue).
#[derive(Debug, Clone, PartialEq)]
pub struct Sizing {
    /// What the sale's measurement must match (stage, image, pod size, SLO, recalibration).
    pub key: CalibrationKey,
    pub booking_replicas: i32,
    pub worker_replicas: i32,
    /// What calibration does this pass: the capacity to size with, the status records, the
    /// objects to keep applied (`run`) and the Calibrated condition.
    pub calibration: Assessment,
    pub window: WindowDecision,
    /// Load read from the API pods (`--observe-load`).
    pub observed: Option<ObservedLoad>,
    /// Connection pool per pod, Postgres `max_connections`, Kafka partitions.
    pub derived: Derived,
    /// Stage kafka with a measured drain rate: the workers worth running and the queue at the target.
    pub queue: Option<QueuePlan>,
    /// CamelCase cause of `booking_replicas` (status.sizing.reason) and a sentence about it.
    pub reason: String,
    pub message: String,
    /// Rps the replicas serve at the target utilization, when the capacity is known.
    pub planned_rps: Option<f64>,
    /// The next instant something changes by itself (window edge, retry, cooldown, next reading).
    pub wake_at: Option<DateTime<Utc>>,
}

impl Sizing {
    /// The measurement valid for the current stage, image, pod size and SLO.
    pub fn measured(&self) -> Option<&CalibrationRecord> {
        self.calibration
            .record
            .as_ref()
            .filter(|r| self.key.same_pod(r))
    }

    /// Partitions of the sale's topic (booking-app's `KAFKA_PARTITIONS`).
    pub fn kafka_partitions(&self) -> i32 {
        to_i32(self.derived.partitions.unwrap_or(DEFAULT_PARTITIONS))
    }

    /// When to reconcile again even if nothing changes (the window opens, a retry is due, …).
    pub fn requeue_after(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.wake_at.map(|at| until(now, at))
    }
}

fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The calibration key of the sale as specified now.
pub fn calibration_key(sale: &Sale, recalibrate: Option<String>) -> CalibrationKey {
    let app = &sale.spec.booking_app;
    let mut resources = describe_resources(&pod::pod_resources(app.resources.as_ref()));
    // At stage kafka the result also carries the drain rate of the sale's workers.
    if sale.spec.stage.uses_kafka() {
        resources = format!(
            "{resources} | worker {}",
            describe_resources(&pod::pod_resources(app.worker.resources.as_ref()))
        );
    }
    CalibrationKey {
        stage: sale.spec.stage,
        image: sale.booking_image.clone(),
        resources: Some(resources),
        slo_p99_ms: sale.spec.capacity.slo_p99_ms,
        recalibrate,
    }
}

/// No calibration inside the sale window (warmup included) or during a stage change.
fn calibration_hold(
    sale: &Sale,
    window: &WindowDecision,
    stage_changing: bool,
) -> Option<calibration::Hold> {
    if stage_changing {
        return Some(calibration::Hold::StageChange);
    }
    match (window.phase, &sale.window) {
        (WindowPhase::WarmingUp | WindowPhase::Open, Some(w)) => {
            Some(calibration::Hold::Window { until: w.ends_at() })
        }
        _ => None,
    }
}

fn replica_count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// Decide the size of `sale`, given the status the last reconcile wrote and this pass's inputs.
pub fn decide(sale: &Sale, previous: &FlashSaleStatus, inputs: &Inputs) -> Sizing {
    let spec = &sale.spec;
    let cap = &spec.capacity;
    let key = calibration_key(sale, inputs.recalibrate.clone());
    let window = schedule::decide(sale.window.as_ref(), inputs.now);
    let hold = calibration_hold(sale, &window, inputs.stage_changing);
    let calibration = calibration::assess(&calibration::Evidence {
        sale: &sale.name,
        key: &key,
        pinned: cap.per_pod_rps,
        record: previous.calibration.as_ref(),
        attempt: previous.calibration_attempt.as_ref(),
        stores_ready: inputs.stores_ready,
        observation: &inputs.calibration,
        now: inputs.now,
        hold,
    });
    let (min, max) = (
        replica_count(cap.min_replicas),
        replica_count(cap.max_replicas),
    );
    let replicas = capacity::size_replicas(&SizingRequest {
        target_rps: u64::from(spec.target_rps),
        per_pod_rps: calibration.per_pod_rps,
        utilization: cap.target_utilization,
        min_replicas: min,
        max_replicas: max,
    });
    let sized = replicas.as_ref().map_or(min, |plan| plan.replicas);
    let floor = window.replicas(min, sized);

    let observed = inputs.load.flatten();
    let autoscale = match (&inputs.load, calibration.per_pod_rps) {
        (Some(load), Some(per_pod_capacity)) => Some(autoscale::decide(&AutoscaleInput {
            current: replica_count(previous.desired_replicas),
            floor,
            max,
            per_pod_capacity,
            utilization: cap.target_utilization,
            observed: *load,
            last_scale: previous
                .sizing
                .as_ref()
                .and_then(|s| s.last_scale_time.as_ref())
                .map(from_time),
            cooldown: DEFAULT_SCALE_DOWN_COOLDOWN,
            now: inputs.now,
        })),
        _ => None,
    };
    let booking_replicas = autoscale.map_or(floor, |a| a.replicas);

    let (reason, message) = explain(
        sale,
        &calibration,
        &replicas,
        &window,
        autoscale.as_ref(),
        observed,
        booking_replicas,
    );
    // Stage kafka: the drain rate measured at this stage (provisionally, like the per-pod rate,
    // while a new image or pod size is measured) says how many workers add drain.
    let drain_rps = calibration
        .record
        .as_ref()
        .filter(|r| key.same_stage(r))
        .and_then(|r| r.drain_rps);
    let queue = drain_rps
        .filter(|_| spec.stage.uses_kafka())
        .and_then(|drain_rps| {
            plan_queue(&QueueRequest {
                target_rps: u64::from(spec.target_rps),
                drain_rps,
                events: EVENTS_PER_SALE,
                peak: sale.window.as_ref().map(SaleWindow::length),
            })
        });
    let worker_replicas = match (
        spec.stage.has_worker(),
        spec.booking_app.worker.replicas,
        &queue,
    ) {
        (false, _, _) => 0,
        (true, Some(pinned), _) => replica_count(pinned),
        (true, None, Some(queue)) => queue.workers,
        (true, None, None) => 1,
    };
    let derived = capacity::derive(&DerivedRequest {
        stage: spec.stage,
        api_pods: max,
        workers: worker_replicas,
        workers_any_stage: spec.booking_app.worker.replicas.map_or(1, replica_count),
        pinned_pool: spec.booking_app.db_pool_size,
        pinned_partitions: spec.kafka.partitions.map(replica_count),
        max_connections_ceiling: DEFAULT_MAX_CONNECTIONS_CEILING,
    });
    let planned_rps = calibration
        .per_pod_rps
        .map(|per_pod| f64::from(booking_replicas) * per_pod * cap.target_utilization);
    let next_reading = inputs.load.is_some().then(|| inputs.now + READ_INTERVAL);
    let wake_at = [
        window.next_change,
        calibration.requeue_at,
        autoscale.and_then(|a| a.recheck_at),
        next_reading,
    ]
    .into_iter()
    .flatten()
    .min();
    Sizing {
        key,
        booking_replicas: to_i32(booking_replicas),
        worker_replicas: to_i32(worker_replicas),
        calibration,
        window,
        observed,
        derived,
        queue,
        reason,
        message,
        planned_rps,
        wake_at,
    }
}

/// Why `booking_replicas` is what it is, most specific cause first.
fn explain(
    sale: &Sale,
    calibration: &Assessment,
    replicas: &Result<ReplicaPlan, CapacityError>,
    window: &WindowDecision,
    autoscale: Option<&AutoscaleDecision>,
    observed: Option<ObservedLoad>,
    booking_replicas: u32,
) -> (String, String) {
    let min = sale.spec.capacity.min_replicas;
    if let Err(error) = replicas {
        let message = match error {
            CapacityError::NotCalibrated => format!(
                "{error}; running minReplicas ({min}) meanwhile: {}",
                calibration.message
            ),
            _ => error.to_string(),
        };
        return (error.reason().into(), message);
    }
    let at = |t: Option<DateTime<Utc>>| {
        t.map_or_else(|| "-".into(), |t| schedule::to_time(t).0.to_string())
    };
    match window.phase {
        WindowPhase::Scheduled if autoscale.is_none_or(|a| a.reason == ScaleReason::Floor) => {
            return (
                "BeforeWindow".into(),
                format!(
                    "holding minReplicas ({min}) until the warm-up at {}",
                    at(window.next_change)
                ),
            );
        }
        WindowPhase::Ended if autoscale.is_none_or(|a| a.reason == ScaleReason::Floor) => {
            return (
                "AfterWindow".into(),
                "the sale window has ended: back to minReplicas".into(),
            );
        }
        _ => {}
    }
    if let (Some(decision), Some(load)) = (autoscale, observed)
        && decision.reason != ScaleReason::Floor
    {
        let message = format!(
            "{}: observed {:.0} rps per pod over {} pods; {booking_replicas} replicas{}",
            decision.reason.as_str(),
            load.per_pod_rps(),
            load.pods,
            decision.recheck_at.map_or_else(String::new, |t| format!(
                " until the cooldown ends at {}",
                at(Some(t))
            ))
        );
        return (decision.reason.as_str().into(), message);
    }
    match replicas {
        Ok(plan) => (plan.reason().into(), plan.message()),
        Err(error) => (error.reason().into(), error.to_string()),
    }
}

/// The stores of `spec.stage` are up (the same check as the StoresReady condition).
pub fn stores_ready(sale: &Sale, observed: &Observed) -> bool {
    observed.stores(sale, sale.spec.stage).0
}

#[cfg(test)]
mod tests;
