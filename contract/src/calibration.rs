//! The calibration Job's answer: what `booking-app loadgen --find-capacity
//! --termination-message-path /dev/termination-log` writes and the operator reads back from the
//! pod's termination message.

use serde::{Deserialize, Serialize};

/// One JSON object, `{"perPodRps":4210.5,"sloP99Ms":200,"p99Ms":183.2,"errorRate":0.001}`.
/// Kubernetes keeps at most 4096 bytes of a termination message; this is under 100.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalibrationResult {
    /// Highest arrival rate one pod sustained within the SLO (0 when none did).
    pub per_pod_rps: f64,
    /// The SLO the search used (echoed, so a mismatch is caught).
    pub slo_p99_ms: u64,
    /// p99 latency measured at that rate.
    pub p99_ms: f64,
    /// Share of failed requests at that rate.
    #[serde(default)]
    pub error_rate: f64,
    /// Stage kafka: the fastest the queue behind the pod was emptied (decisions per second,
    /// from the first 202 to the last decision of a step), over every step. A step offered
    /// faster than the workers decide builds a backlog they drain flat out, so this is their
    /// rate; when every step was slower it is a lower bound. Absent where nothing is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_rps: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_camel_case_without_an_absent_drain_rate() {
        let result = CalibrationResult {
            per_pod_rps: 4210.5,
            slo_p99_ms: 200,
            p99_ms: 183.2,
            error_rate: 0.001,
            drain_rps: None,
        };
        let text = r#"{"perPodRps":4210.5,"sloP99Ms":200,"p99Ms":183.2,"errorRate":0.001}"#;
        assert_eq!(serde_json::to_string(&result).unwrap(), text);
        assert_eq!(
            serde_json::from_str::<CalibrationResult>(text).unwrap(),
            result
        );
        let kafka = r#"{"perPodRps":900,"sloP99Ms":200,"p99Ms":80,"errorRate":0,"drainRps":786.5}"#;
        let parsed: CalibrationResult = serde_json::from_str(kafka).unwrap();
        assert_eq!(parsed.drain_rps, Some(786.5));
    }
}
