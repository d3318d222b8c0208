//! The sizing decision of one reconcile: calibration (is a per-pod capacity known?), the
//! capacity math (how many pods for the target), the sale window (now or minReplicas?) and
//! observed load (more than planned?). `decide` is pure; `observe` gathers its inputs.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::autoscale::scrape::{LoadObserver, READ_INTERVAL, ready_targets};
use crate::autoscale::{
    self, AutoscaleDecision, AutoscaleInput, DEFAULT_SCALE_DOWN_COOLDOWN, ObservedLoad, ScaleReason,
};
use crate::calibration::{
    self, Assessment, CalibrationKey, JobState, Observation, describe_resources,
};
use crate::capacity::queue::{EVENTS_PER_SALE, QueuePlan, QueueRequest, plan_queue};
use crate::capacity::{
    self, CapacityError, DEFAULT_MAX_CONNECTIONS_CEILING, Derived, DerivedRequest, ReplicaPlan,
    SizingRequest,
};
use crate::crd::FlashSaleStatus;
use crate::reconcile::desired::labels::{self, Component};
use crate::reconcile::desired::pod;
use crate::reconcile::observe::Observed;
use crate::reconcile::validate::Sale;
use crate::schedule::{self, SaleWindow, WindowDecision, WindowPhase, from_time};

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

/// The decision, with every intermediate result for status and events.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    /// What the sale's measurement must match (stage, image, pod size, SLO, recalibration).
    pub key: CalibrationKey,
    pub booking_replicas: u32,
    pub worker_replicas: u32,
    pub calibration: Assessment,
    pub replicas: Result<ReplicaPlan, CapacityError>,
    pub window: WindowDecision,
    pub autoscale: Option<AutoscaleDecision>,
    pub observed: Option<ObservedLoad>,
    pub derived: Derived,
    /// Stage kafka with a measured drain rate: the workers worth running and the queue at the target.
    pub queue: Option<QueuePlan>,
    /// CamelCase cause of `booking_replicas` and a sentence about it.
    pub reason: String,
    pub message: String,
    /// Rps the replicas serve at the target utilization, when the capacity is known.
    pub planned_rps: Option<f64>,
    /// The next instant something changes by itself (window edge, retry, cooldown, next reading).
    pub wake_at: Option<DateTime<Utc>>,
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
        resources,
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

pub fn decide(sale: &Sale, previous: &FlashSaleStatus, inputs: &Inputs) -> Scaling {
    let spec = &sale.spec;
    let cap = &spec.capacity;
    let key = calibration_key(sale, inputs.recalibrate.clone());
    let window = schedule::decide(sale.window.as_ref(), inputs.now);
    let hold = calibration_hold(sale, &window, inputs.stage_changing);
    let calibration = calibration::assess(&calibration::Inputs {
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
    Scaling {
        key,
        booking_replicas,
        worker_replicas,
        calibration,
        replicas,
        window,
        autoscale,
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

/// Reads what `decide` needs from the cluster: the calibration attempt's Job pods, and (only
/// with a `LoadObserver`, i.e. `--observe-load`) the API pods' request counters.
pub async fn observe(
    client: &Client,
    sale: &Sale,
    previous: &FlashSaleStatus,
    observed: &Observed,
    recalibrate: Option<String>,
    load: Option<&LoadObserver>,
    now: DateTime<Utc>,
) -> Result<Inputs, kube::Error> {
    let key = calibration_key(sale, recalibrate.clone());
    let settled = sale.spec.capacity.per_pod_rps.is_some()
        || previous
            .calibration
            .as_ref()
            .is_some_and(|r| key.matches_record(r));
    let calibration = if settled {
        Observation {
            server_ready: false,
            job: JobState::Absent,
        }
    } else {
        let attempt = previous
            .calibration_attempt
            .as_ref()
            .filter(|a| key.matches_attempt(a))
            .map_or(1, |a| a.failures + 1);
        calibration::observe::observe(client, sale, observed, &key, attempt).await?
    };
    let load = match load {
        Some(observer) => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &sale.namespace);
            let selector =
                labels::selector(&sale.name, Component::BookingApi, Some(sale.spec.stage))
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
            let targets = ready_targets(
                &pods
                    .list(&ListParams::default().labels(&selector))
                    .await?
                    .items,
            );
            let key = format!("{}/{}", sale.namespace, sale.name);
            Some(observer.observe(&key, &targets, now).await)
        }
        None => None,
    };
    Ok(Inputs {
        now,
        recalibrate,
        stores_ready: stores_ready(sale, observed),
        calibration,
        load,
        stage_changing: false,
    })
}

#[cfg(test)]
#[path = "scaling_tests.rs"]
mod tests;
