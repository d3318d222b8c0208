//! The FlashSale's status: what the operator observed and decided. Recomputed every reconcile,
//! except the calibration record and the serving stage, which are carried over until replaced.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use flashsale_contract::Stage;

/// Lifecycle of a sale as `kubectl get fs` shows it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, nothing observed yet.
    Pending,
    /// Stores or booking-app pods are starting.
    Provisioning,
    /// Everything runs, but no per-pod capacity is known yet: sized at minReplicas.
    Calibrating,
    /// Moving between stages: the old stage's backlog is being written to Postgres.
    Draining,
    /// Serving at the planned size.
    Ready,
    /// Something that ran is not ready now, or the spec cannot be served.
    Degraded,
    /// Deleted: the booking API is stopped and the stage's backlog drained before the sale and its
    /// children go (the `flashsale.dev/drain` finalizer; condition Drained).
    Deleting,
}

/// Everything here is recomputed each reconcile from what the operator observes, except the
/// calibration record and the serving stage, which are carried over until replaced.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::kubernetes_integer_formats)]
pub struct FlashSaleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The stage the booking pods currently serve; differs from spec.stage while draining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Ready booking-app pods.
    #[serde(default)]
    pub replicas: i32,
    /// Booking-app pods the sizing asks for.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Per-pod capacity the sizing used: pinned in the spec or measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_pod_rps: Option<f64>,
    /// Latest calibration result for the current stage, image, pod size and SLO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_per_pod_rps: Option<f64>,
    /// Stage kafka: decisions per second the sale's queue was drained at when calibrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_drain_rps: Option<f64>,
    /// How measuredPerPodRps was obtained; a measurement is valid only for its stage, image,
    /// pod size and SLO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationRecord>,
    /// The calibration being run or retried, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_attempt: Option<CalibrationAttempt>,
    /// Requests per second the booking pods served recently (sum over pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_rps: Option<f64>,
    /// observedRps divided by ready pods, to compare with perPodRps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_per_pod_rps: Option<f64>,
    /// Why desiredReplicas is what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing: Option<SizingStatus>,
    /// In-cluster URL of the booking API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Id of the sale's event in the booking API (`GET /events/{eventId}`, book with
    /// `POST /events/{eventId}/bookings`); booking-app creates it from spec.event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Ready, StoresReady, BookingAppReady, WorkerReady, StageSettled, Calibrated.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CalibrationRecord {
    pub stage: Stage,
    /// The booking-app image that was measured.
    pub image: String,
    /// Requests and limits of the measured pod (and of the workers, at stage kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<String>,
    /// The p99 latency bound (ms) the measured rate stayed within.
    pub slo_p99_ms: u32,
    /// Requests per second one booking-app pod served within the SLO.
    pub per_pod_rps: f64,
    /// Stage kafka: decisions per second the queue was drained at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_rps: Option<f64>,
    pub measured_at: Time,
    /// The Job that measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The `flashsale.dev/recalibrate` annotation value this measurement answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalibrate: Option<String>,
}

/// A calibration under way or failing, carried between reconciles for its retry backoff.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CalibrationAttempt {
    pub stage: Stage,
    /// The booking-app image being measured.
    pub image: String,
    /// Requests and limits of the pod being measured (and of the workers, at stage kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<String>,
    /// The p99 latency bound (ms) the measurement must stay within.
    pub slo_p99_ms: u32,
    /// The `flashsale.dev/recalibrate` annotation value being answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalibrate: Option<String>,
    /// Failed attempts so far; the current attempt is number failures + 1.
    #[serde(default)]
    pub failures: u32,
    /// When the current attempt's scratch pod was first asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// No new attempt before this instant (exponential backoff after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Time>,
    /// Why the last attempt failed, as the operator saw it (Job, pod or result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SizingStatus {
    /// CamelCase cause: SizedForTarget, ClampedByMinReplicas, ClampedByMaxReplicas, NotCalibrated,
    /// BeforeWindow, AfterWindow, ObservedLoad, CoolingDown.
    pub reason: String,
    /// A sentence for humans, e.g. "clamped by maxReplicas: … the sale will get only 28000 rps …".
    pub message: String,
    /// Requests per second the desired replicas can serve at the target utilization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_rps: Option<f64>,
    /// Stage kafka: workers, the rate they decide the sale's queue at, and what the queue does
    /// at the target, e.g. "1 worker decides the event in order at 786 rps (measured); at the
    /// target of 5000 rps the queue grows by 4214 rps: the 2h window leaves … decided … after".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// When desiredReplicas last changed (for scale-down cooldowns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
}
