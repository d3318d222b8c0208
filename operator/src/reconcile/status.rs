//! Step 5 of a reconcile: the status, computed from what was observed, never accumulated.
//! Conditions: StoresReady, BookingAppReady, WorkerReady (stages with a worker), StageSettled,
//! Calibrated, and Ready summing them up; `Conflict` (True) while a child's name is taken by a
//! foreign object (see `ownership`), which also makes Ready false. `lastTransitionTime` changes only when a condition's
//! status flips, so an unchanged sale writes an identical status (and no new resourceVersion).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::desired::{booking_app, names};
use super::observe::Observed;
use super::sizing::Sizing;
use super::transition::{LeaveStep, StagePlan};
use super::validate::Sale;
use crate::capacity::queue::QueuePlan;
use crate::crd::{FlashSaleStatus, Phase, SizingStatus};
use crate::error::Error;
use flashsale_contract::Stage;

pub mod types {
    pub const READY: &str = "Ready";
    pub const STORES_READY: &str = "StoresReady";
    pub const BOOKING_APP_READY: &str = "BookingAppReady";
    pub const WORKER_READY: &str = "WorkerReady";
    pub const STAGE_SETTLED: &str = "StageSettled";
    pub const CALIBRATED: &str = "Calibrated";
    /// Only on a sale being deleted: whether its stage's backlog is in Postgres yet.
    pub const DRAINED: &str = "Drained";
    /// Present (True) only while an object in the way of a child is left untouched.
    pub const CONFLICT: &str = "Conflict";
}

/// Reason of the Conflict condition, and of Ready while it holds.
pub const FOREIGN_OBJECT: &str = "ForeignObject";

/// One condition before timestamps: (type, ok, reason, message).
type Check = (&'static str, bool, String, String);

/// The status of a sale that validated, from this pass's plan, sizing and observations.
pub fn compute(
    previous: &FlashSaleStatus,
    sale: &Sale,
    plan: &StagePlan,
    sizing: &Sizing,
    observed: &Observed,
    now: &Time,
) -> FlashSaleStatus {
    let checks = vec![
        stores(sale, plan.serving, observed),
        booking_app(sale, plan, observed),
        worker(sale, plan, observed),
        stage_settled(sale, plan),
        calibrated(sizing),
    ];
    let checks: Vec<Check> = checks.into_iter().flatten().collect();
    let conflict: Option<Check> = super::ownership::summary(&observed.conflicts)
        .map(|message| (types::CONFLICT, true, FOREIGN_OBJECT.into(), message));
    let failing = checks.iter().find(|c| !c.1);
    let ready: Check = match (&conflict, failing) {
        (Some((_, _, reason, message)), _) => {
            (types::READY, false, reason.clone(), message.clone())
        }
        (None, None) => (
            types::READY,
            true,
            "SaleReady".into(),
            format!(
                "serving stage {} at {} replicas",
                plan.serving, sizing.booking_replicas
            ),
        ),
        (None, Some((_, _, reason, message))) => {
            (types::READY, false, reason.clone(), message.clone())
        }
    };
    let ok = |t: &str| checks.iter().any(|c| c.0 == t && c.1);
    let phase = if plan.leaving.is_some() {
        Phase::Draining
    } else if conflict.is_some() {
        // Nothing was applied: the sale cannot become ready until the name is free.
        Phase::Degraded
    } else if observed.is_empty() {
        Phase::Pending
    } else if ok(types::STORES_READY)
        && ok(types::BOOKING_APP_READY)
        && checks
            .iter()
            .filter(|c| c.0 == types::WORKER_READY)
            .all(|c| c.1)
    {
        if failing.is_none() {
            Phase::Ready
        } else {
            Phase::Calibrating
        }
    } else if matches!(previous.phase, Some(Phase::Ready | Phase::Degraded)) {
        Phase::Degraded
    } else {
        Phase::Provisioning
    };
    let generation = sale.generation;
    let mut conditions = vec![condition(previous, &ready, generation, now)];
    conditions.extend(
        checks
            .iter()
            .map(|c| condition(previous, c, generation, now)),
    );
    conditions.extend(conflict.map(|c| condition(previous, &c, generation, now)));
    let api = observed.deployment(&names::booking_deployment(&sale.name, plan.serving));
    let last_scale_time = match &previous.sizing {
        Some(s) if previous.desired_replicas == sizing.booking_replicas => {
            s.last_scale_time.clone()
        }
        _ => Some(now.clone()),
    };
    FlashSaleStatus {
        phase: Some(phase),
        stage: Some(plan.serving),
        replicas: api.map_or(0, |w| w.ready),
        desired_replicas: sizing.booking_replicas,
        per_pod_rps: sizing.calibration.per_pod_rps,
        measured_per_pod_rps: sizing.measured().map(|r| r.per_pod_rps),
        measured_drain_rps: sizing.measured().and_then(|r| r.drain_rps),
        calibration: sizing.calibration.record.clone(),
        calibration_attempt: sizing.calibration.attempt.clone(),
        // Whole rps: finer digits would rewrite the status on every reading for nothing.
        observed_rps: sizing.observed.map(|o| o.total_rps.round()),
        observed_per_pod_rps: sizing.observed.map(|o| o.per_pod_rps().round()),
        sizing: Some(SizingStatus {
            reason: sizing.reason.clone(),
            message: sizing.message.clone(),
            planned_rps: sizing.planned_rps.map(f64::round),
            queue: sizing.queue.as_ref().map(QueuePlan::message),
            last_scale_time,
        }),
        endpoint: Some(booking_app::endpoint(sale)),
        event_id: Some(booking_app::sale_event_id(sale).to_string()),
        conditions,
        observed_generation: generation,
    }
}

/// The status of a sale that cannot be served as written: the rest of the last status stays,
/// Ready says why.
pub fn compute_invalid(
    previous: &FlashSaleStatus,
    generation: Option<i64>,
    error: &Error,
    now: &Time,
) -> FlashSaleStatus {
    let ready: Check = (
        types::READY,
        false,
        error.reason().into(),
        error.to_string(),
    );
    let mut conditions: Vec<Condition> = previous
        .conditions
        .iter()
        .filter(|c| c.type_ != types::READY)
        .cloned()
        .collect();
    conditions.insert(0, condition(previous, &ready, generation, now));
    FlashSaleStatus {
        phase: Some(Phase::Degraded),
        conditions,
        observed_generation: generation,
        ..previous.clone()
    }
}

/// The status of a sale being deleted: phase Deleting, a Drained condition saying where the
/// drain stands, and Ready false for the same reason; the rest of the last status stays.
pub fn compute_deleting(
    previous: &FlashSaleStatus,
    generation: Option<i64>,
    step: super::teardown::Teardown,
    now: &Time,
) -> FlashSaleStatus {
    let (drained, reason, message) = step.condition();
    let checks: [Check; 2] = [
        (types::DRAINED, drained, reason.into(), message.clone()),
        (types::READY, false, "Deleting".into(), message),
    ];
    let mut conditions: Vec<Condition> = checks
        .iter()
        .map(|check| condition(previous, check, generation, now))
        .collect();
    conditions.extend(
        previous
            .conditions
            .iter()
            .filter(|c| c.type_ != types::READY && c.type_ != types::DRAINED)
            .cloned(),
    );
    FlashSaleStatus {
        phase: Some(Phase::Deleting),
        conditions,
        observed_generation: generation,
        ..previous.clone()
    }
}

fn condition(
    previous: &FlashSaleStatus,
    (type_, ok, reason, message): &Check,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if *ok { "True" } else { "False" };
    let last_transition_time = previous
        .conditions
        .iter()
        .find(|c| c.type_ == *type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: (*type_).into(),
        status: status.into(),
        reason: reason.clone(),
        message: message.clone(),
        last_transition_time,
        observed_generation: generation,
    }
}

/// StoresReady for `stage` (the serving one).
fn stores(sale: &Sale, stage: Stage, observed: &Observed) -> Option<Check> {
    let (ready, reason, message) = observed.stores(sale, stage);
    Some((types::STORES_READY, ready, reason.into(), message))
}

fn booking_app(sale: &Sale, plan: &StagePlan, observed: &Observed) -> Option<Check> {
    if let Some(leaving) = plan.leaving {
        let message = format!(
            "booking stopped while the sale moves from stage {} to {}",
            leaving.from, leaving.to
        );
        return Some((
            types::BOOKING_APP_READY,
            false,
            "StoppedForStageChange".into(),
            message,
        ));
    }
    let name = names::booking_deployment(&sale.name, plan.serving);
    Some(match observed.deployment(&name) {
        Some(w) if w.is_ready() => (
            types::BOOKING_APP_READY,
            true,
            "AllReplicasReady".into(),
            format!("{}/{} ready", w.ready, w.desired),
        ),
        Some(w) => (
            types::BOOKING_APP_READY,
            false,
            "ReplicasNotReady".into(),
            format!("{} {}/{} ready", name, w.ready, w.desired),
        ),
        None => (
            types::BOOKING_APP_READY,
            false,
            "NotCreated".into(),
            format!("{name} not created yet"),
        ),
    })
}

fn worker(sale: &Sale, plan: &StagePlan, observed: &Observed) -> Option<Check> {
    let stage = plan.leaving.map_or(plan.serving, |l| l.from);
    if !stage.has_worker() {
        return None;
    }
    let name = names::worker_deployment(&sale.name, stage);
    Some(match observed.deployment(&name) {
        Some(w) if w.is_ready() => (
            types::WORKER_READY,
            true,
            "AllReplicasReady".into(),
            format!("{}/{} ready", w.ready, w.desired),
        ),
        Some(w) => (
            types::WORKER_READY,
            false,
            "WorkerNotReady".into(),
            format!("{} {}/{} ready", name, w.ready, w.desired),
        ),
        None => (
            types::WORKER_READY,
            false,
            "NotCreated".into(),
            format!("{name} not created yet"),
        ),
    })
}

fn stage_settled(sale: &Sale, plan: &StagePlan) -> Option<Check> {
    let Some(l) = plan.leaving else {
        return Some((
            types::STAGE_SETTLED,
            true,
            "Serving".into(),
            format!("serving stage {}", plan.serving),
        ));
    };
    let job = names::drain_job(&sale.name, l.from);
    Some(match l.step {
        LeaveStep::StoppingPods { remaining } => (
            types::STAGE_SETTLED,
            false,
            "StoppingOldStage".into(),
            format!(
                "waiting for {remaining} stage-{} booking pods to stop before stage {} starts",
                l.from, l.to
            ),
        ),
        LeaveStep::Draining => (
            types::STAGE_SETTLED,
            false,
            "DrainingBacklog".into(),
            format!(
                "Job {job} is writing the stage-{} backlog to Postgres; stage {} starts when it completes",
                l.from, l.to
            ),
        ),
        LeaveStep::DrainFailed => (
            types::STAGE_SETTLED,
            false,
            "DrainFailed".into(),
            format!(
                "Job {job} failed: booking stays stopped on stage {}; see `kubectl logs job/{job}`, then delete the Job to retry",
                l.from
            ),
        ),
    })
}

/// Pinned, Measured, Calibrating, WaitingForStores or CalibrationFailed (see `crate::calibration`).
fn calibrated(sizing: &Sizing) -> Option<Check> {
    Some((
        types::CALIBRATED,
        sizing.calibration.calibrated,
        sizing.calibration.reason.into(),
        sizing.calibration.message.clone(),
    ))
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
