//! Calibration: measuring what one booking-app pod sustains within the sale's p99 SLO. When the
//! spec pins no `capacity.perPodRps` and status holds no measurement for the current stage, image,
//! pod resources and SLO (or `flashsale.dev/recalibrate` changed), the operator runs one scratch
//! booking-app pod and a Job running `booking-app loadgen --find-capacity` against it; the Job's
//! pod returns a `CalibrationResult` (defined in the contract crate, which loadgen writes it
//! from) in its termination message. At stage kafka the sale's own workers decide the scratch
//! pod's requests, so the same result carries their drain rate.
//! This file decides (pure) and names the objects; `objects` builds the pod, Service and Job;
//! `observe` reads the Job.

pub mod objects;
pub mod observe;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use flashsale_contract::CalibrationResult;

pub use crate::crd::CalibrationKey;
use crate::crd::{CalibrationAttempt, CalibrationRecord};
use crate::schedule::{from_time, to_time};

/// Changing this annotation's value asks for a new measurement (e.g. `kubectl annotate fs/x
/// flashsale.dev/recalibrate="$(date +%s)" --overwrite`).
pub const RECALIBRATE_ANNOTATION: &str = "flashsale.dev/recalibrate";

/// First retry delay after a failed calibration; doubled per failure up to `MAX_BACKOFF`.
pub const FIRST_BACKOFF: TimeDelta = TimeDelta::seconds(30);
pub const MAX_BACKOFF: TimeDelta = TimeDelta::minutes(30);

/// How long the scratch pod may take to become Ready before the attempt counts as failed.
pub const SERVER_READY_TIMEOUT: TimeDelta = TimeDelta::minutes(10);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResultError {
    #[error("the loadgen container ended without a termination message")]
    Missing,
    #[error("termination message is not a CalibrationResult: {0}")]
    Unreadable(String),
    #[error("loadgen measured against a p99 SLO of {got} ms, the sale asks for {want} ms")]
    SloMismatch { got: u64, want: u32 },
    #[error(
        "no rate met the SLO: p99 {p99_ms} ms, error rate {error_rate} at the lowest rate tried"
    )]
    NoCapacity { p99_ms: f64, error_rate: f64 },
    #[error("loadgen reported p99 {p99_ms} ms above the {slo_p99_ms} ms SLO")]
    AboveSlo { p99_ms: f64, slo_p99_ms: u32 },
}

/// Reads and checks the loadgen container's termination message (a `CalibrationResult`);
/// anything doubtful is an error, never a guess.
pub fn read_result(message: &str, slo_p99_ms: u32) -> Result<CalibrationResult, ResultError> {
    let message = message.trim();
    if message.is_empty() {
        return Err(ResultError::Missing);
    }
    let result: CalibrationResult =
        serde_json::from_str(message).map_err(|e| ResultError::Unreadable(e.to_string()))?;
    if result.slo_p99_ms != u64::from(slo_p99_ms) {
        return Err(ResultError::SloMismatch {
            got: result.slo_p99_ms,
            want: slo_p99_ms,
        });
    }
    if !(result.per_pod_rps.is_finite() && result.per_pod_rps > 0.0) {
        return Err(ResultError::NoCapacity {
            p99_ms: result.p99_ms,
            error_rate: result.error_rate,
        });
    }
    if !(result.p99_ms.is_finite()
        && result.p99_ms >= 0.0
        && result.p99_ms <= f64::from(slo_p99_ms))
    {
        return Err(ResultError::AboveSlo {
            p99_ms: result.p99_ms,
            slo_p99_ms,
        });
    }
    if let Some(drain) = result.drain_rps.filter(|d| !(d.is_finite() && *d > 0.0)) {
        return Err(ResultError::Unreadable(format!(
            "drainRps {drain} is not a positive rate"
        )));
    }
    Ok(result)
}

impl CalibrationKey {
    /// The record measured this stage, image, pod size and SLO (whatever recalibration asked for).
    pub fn same_pod(&self, record: &CalibrationRecord) -> bool {
        let measured = &record.key;
        self.same_stage(record)
            && measured.image == self.image
            && measured.resources == self.resources
            && measured.slo_p99_ms == self.slo_p99_ms
    }

    /// The record measured this stage (with any image, pod size or SLO): while a new measurement
    /// runs it sizes the sale provisionally, which beats dropping a live sale to minReplicas.
    pub fn same_stage(&self, record: &CalibrationRecord) -> bool {
        record.key.stage == self.stage && record.per_pod_rps.is_finite() && record.per_pod_rps > 0.0
    }

    /// The record answers this key, including the latest recalibration request.
    pub fn matches_record(&self, record: &CalibrationRecord) -> bool {
        self.same_pod(record) && record.key.recalibrate == self.recalibrate
    }

    pub fn matches_attempt(&self, attempt: &CalibrationAttempt) -> bool {
        attempt.key == *self
    }

    /// 8 hex digits naming the calibration objects of this key. FNV-1a: stable across Rust
    /// releases, unlike `DefaultHasher`, so a new operator build finds the objects an old one made.
    pub fn digest(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let text = format!(
            "{}\0{}\0{}\0{}\0{}",
            self.stage,
            self.image,
            self.slo_p99_ms,
            self.recalibrate.as_deref().unwrap_or(""),
            self.resources.as_deref().unwrap_or("")
        );
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{:08x}", hash >> 32)
    }
}

/// Where the kubelet reads a container's termination message (the Kubernetes default).
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Name of the loadgen container, which `observe` reads the result from.
pub const LOADGEN_CONTAINER: &str = "loadgen";

/// `<sale>-cal-<8 hex>`: the digest covers the key and the attempt number, so a retry never
/// meets the previous attempt's objects while they are being deleted. At most 52 characters.
pub fn server_name(sale: &str, key: &CalibrationKey, attempt: u32) -> String {
    format!("{sale}-cal-{}", attempt_digest(key, attempt))
}

/// `<sale>-cal-<8 hex>-lg`, at most 55 characters (a Job's name becomes a label value: <= 63).
pub fn job_name(sale: &str, key: &CalibrationKey, attempt: u32) -> String {
    format!("{}-lg", server_name(sale, key, attempt))
}

/// The part of the objects' names (and the attempt label) that tells keys and attempts apart.
pub fn attempt_digest(key: &CalibrationKey, attempt: u32) -> String {
    CalibrationKey {
        recalibrate: Some(format!(
            "{}#{attempt}",
            key.recalibrate.as_deref().unwrap_or("")
        )),
        ..key.clone()
    }
    .digest()
}

/// `requests cpu=1,memory=256Mi; limits cpu=1,memory=512Mi`: a pod size as the calibration key
/// and status show it (quantities as written; `1` and `1000m` count as different sizes, which
/// costs at most one needless measurement).
pub fn describe_resources(resources: &ResourceRequirements) -> String {
    let list = |name: &str, map: Option<&std::collections::BTreeMap<String, Quantity>>| {
        let items: Vec<String> = map
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.0))
            .collect();
        format!(
            "{name} {}",
            if items.is_empty() {
                "-".to_string()
            } else {
                items.join(",")
            }
        )
    };
    format!(
        "{}; {}",
        list("requests", resources.requests.as_ref()),
        list("limits", resources.limits.as_ref())
    )
}

/// Delay before retry number `failures` (1 = after the first failure): 30 s, 1 min, 2 min, …, 30 min.
pub fn backoff(failures: u32) -> TimeDelta {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * (1_i32 << doublings)).min(MAX_BACKOFF)
}

/// How the calibration Job and its scratch pod look right now.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// No Job for the current attempt exists.
    Absent,
    Running,
    Succeeded(CalibrationResult),
    Failed(String),
}

/// What `observe` found for the current attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub server_ready: bool,
    pub job: JobState,
}

/// Why no calibration may run now, even though the sale needs one: a measurement books against
/// the sale's stores and takes a pod's worth of CPU, so it never runs while the sale is open
/// (or warming up), nor while the sale moves between stages (the old stage still decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Inside the window (warmup included) until this instant.
    Window { until: DateTime<Utc> },
    /// A stage change is under way.
    StageChange,
}

/// Everything `assess` needs.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The FlashSale's name (object names derive from it).
    pub sale: &'a str,
    pub key: &'a CalibrationKey,
    pub pinned: Option<f64>,
    pub record: Option<&'a CalibrationRecord>,
    pub attempt: Option<&'a CalibrationAttempt>,
    /// The stores the scratch pod needs answer (StoresReady).
    pub stores_ready: bool,
    pub observation: &'a Observation,
    pub now: DateTime<Utc>,
    pub hold: Option<Hold>,
}

/// What the reconcile does with calibration this pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Capacity to size with; `None` means calibrate first.
    pub per_pod_rps: Option<f64>,
    /// Status `calibration` (kept when pinned, so unpinning reuses a valid measurement).
    pub record: Option<CalibrationRecord>,
    /// Status `calibrationAttempt`.
    pub attempt: Option<CalibrationAttempt>,
    /// Objects to keep applied; `None` lets the applier delete any leftovers.
    pub run: Option<Run>,
    /// The Calibrated condition.
    pub calibrated: bool,
    pub reason: &'static str,
    pub message: String,
    pub requeue_at: Option<DateTime<Utc>>,
}

/// The calibration objects to apply this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub key: CalibrationKey,
    /// Attempt number (1-based), part of the object names so a retry never meets a dying Job.
    pub attempt: u32,
    /// Create the loadgen Job: only once the scratch pod is Ready, so loadgen measures a warm pod.
    pub with_job: bool,
}

/// Decides this pass. Every value written to status is stable between passes while nothing
/// changes (no "now" in it unless something happened), so a status write never wakes a loop.
pub fn assess(inputs: &Evidence<'_>) -> Assessment {
    let key = inputs.key;
    let kept = inputs.record.cloned();
    if let Some(pinned) = inputs.pinned {
        return settled(
            Some(pinned),
            kept,
            "Pinned",
            format!("capacity.perPodRps pinned at {pinned} rps: no calibration"),
        );
    }
    if let Some(record) = inputs.record.filter(|r| key.matches_record(r)) {
        let message = format!(
            "{} rps per pod at p99 <= {} ms, measured {} at stage {}",
            record.per_pod_rps, record.key.slo_p99_ms, record.measured_at.0, record.key.stage
        );
        return settled(Some(record.per_pod_rps), kept, "Measured", message);
    }
    // Meanwhile the sale is sized with the last measurement of the same stage (a recalibration
    // the user asked for, or a new image, pod size or SLO): a live sale must not drop to
    // minReplicas for a re-measure. Another stage's number says nothing: minReplicas then.
    let per_pod_rps = inputs
        .record
        .filter(|r| key.same_stage(r))
        .map(|r| r.per_pod_rps);
    let mut attempt = inputs
        .attempt
        .filter(|a| key.matches_attempt(a))
        .cloned()
        .unwrap_or_else(|| fresh_attempt(key));
    let meanwhile = per_pod_rps.map_or_else(String::new, |rps| {
        format!(
            "; sized meanwhile with the previous measurement at stage {}: {rps} rps per pod",
            key.stage
        )
    });
    let pending =
        |attempt: CalibrationAttempt, run: Option<Run>, reason, message: String, requeue_at| {
            Assessment {
                per_pod_rps,
                record: kept.clone(),
                attempt: Some(attempt),
                run,
                calibrated: false,
                reason,
                message: message + &meanwhile,
                requeue_at,
            }
        };
    if let Some(hold) = inputs.hold {
        // A run under way stops (its objects are no longer desired); it starts afresh later.
        attempt.started_at = None;
        let kept = if per_pod_rps.is_some() {
            "the sale keeps its last measurement"
        } else {
            "meanwhile the sale runs at minReplicas (pin capacity.perPodRps to size it now)"
        };
        let (reason, message, requeue_at) = match hold {
            Hold::Window { until } => (
                "WaitingForWindowEnd",
                format!(
                    "calibration waits for the sale window to end at {}: {kept}",
                    to_time(until).0
                ),
                Some(until),
            ),
            Hold::StageChange => (
                "WaitingForStageChange",
                format!("calibration waits for the stage change to finish: {kept}"),
                None,
            ),
        };
        return pending(attempt, None, reason, message, requeue_at);
    }
    if let Some(retry_at) = attempt.retry_at.as_ref().map(from_time) {
        if inputs.now < retry_at {
            let message = format!(
                "calibration failed {} time(s), last: {}; retrying at {}",
                attempt.failures,
                attempt.last_error.as_deref().unwrap_or("unknown"),
                to_time(retry_at).0
            );
            return pending(attempt, None, "CalibrationFailed", message, Some(retry_at));
        }
        attempt.retry_at = None;
        attempt.started_at = None;
    }
    if !inputs.stores_ready {
        return pending(
            attempt,
            None,
            "WaitingForStores",
            "calibration starts once the stores are ready".into(),
            None,
        );
    }
    let number = attempt.failures + 1;
    let started_at = attempt.started_at.as_ref().map_or(inputs.now, from_time);
    attempt.started_at = Some(to_time(started_at));
    let failure = match &inputs.observation.job {
        JobState::Succeeded(result) => {
            let record = CalibrationRecord {
                key: key.clone(),
                per_pod_rps: result.per_pod_rps,
                drain_rps: result.drain_rps,
                measured_at: to_time(inputs.now),
                job: Some(job_name(inputs.sale, key, number)),
            };
            let drain = result.drain_rps.map_or_else(String::new, |d| {
                format!("; the queue drains at {d:.0} decisions/s")
            });
            let message = format!(
                "{} rps per pod at p99 {} ms <= {} ms, measured at stage {}{drain}",
                result.per_pod_rps, result.p99_ms, key.slo_p99_ms, key.stage
            );
            return settled(Some(result.per_pod_rps), Some(record), "Measured", message);
        }
        JobState::Failed(error) => Some(error.clone()),
        JobState::Absent | JobState::Running => (!inputs.observation.server_ready
            && inputs.now - started_at >= SERVER_READY_TIMEOUT)
            .then(|| {
                format!(
                    "the calibration pod was not Ready after {} minutes",
                    SERVER_READY_TIMEOUT.num_minutes()
                )
            }),
    };
    if let Some(error) = failure {
        attempt.failures = number;
        let retry_at = inputs.now + backoff(number);
        attempt.retry_at = Some(to_time(retry_at));
        attempt.last_error = Some(error.clone());
        let message = format!(
            "calibration attempt {number} failed: {error}; retrying at {}",
            to_time(retry_at).0
        );
        return pending(attempt, None, "CalibrationFailed", message, Some(retry_at));
    }
    let with_job = inputs.observation.server_ready;
    let message = if with_job {
        format!(
            "loadgen is finding the rate one pod serves at stage {} with p99 <= {} ms",
            key.stage, key.slo_p99_ms
        )
    } else {
        format!(
            "starting a scratch booking-app pod at stage {} to measure",
            key.stage
        )
    };
    // Without a Ready pod nothing may wake the reconcile in time to notice the timeout.
    let requeue_at = (!with_job).then_some(started_at + SERVER_READY_TIMEOUT);
    pending(
        attempt,
        Some(Run {
            key: key.clone(),
            attempt: number,
            with_job,
        }),
        "Calibrating",
        message,
        requeue_at,
    )
}

fn fresh_attempt(key: &CalibrationKey) -> CalibrationAttempt {
    CalibrationAttempt {
        key: key.clone(),
        failures: 0,
        started_at: None,
        retry_at: None,
        last_error: None,
    }
}

fn settled(
    per_pod_rps: Option<f64>,
    record: Option<CalibrationRecord>,
    reason: &'static str,
    message: String,
) -> Assessment {
    Assessment {
        per_pod_rps,
        record,
        attempt: None,
        run: None,
        calibrated: true,
        reason,
        message,
        requeue_at: None,
    }
}

#[cfg(test)]
mod tests;
