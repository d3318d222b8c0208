//! Kubernetes Events for what a user wants to see in `kubectl describe fs`: phase changes,
//! stage switches, a new calibration measurement, a stage-kafka queue that will fall behind at
//! the target, and a child's name taken by a foreign object (Conflict). Derived from
//! the old and new status (pure), so a reconcile that changes nothing emits nothing.

use kube::runtime::events::{Event, EventType};

use crate::capacity::queue::FALLS_BEHIND;
use crate::crd::{FlashSaleStatus, Phase};

pub fn transitions(previous: &FlashSaleStatus, next: &FlashSaleStatus) -> Vec<Event> {
    let mut events = vec![];
    if let (Some(from), Some(to)) = (previous.stage, next.stage)
        && from != to
    {
        events.push(Event {
            type_: EventType::Normal,
            reason: "StageSwitched".into(),
            note: Some(format!("now serving stage {to} (was {from})")),
            action: "SwitchStage".into(),
            secondary: None,
        });
    }
    if previous.phase != next.phase
        && let Some(phase) = next.phase
    {
        let ready = next
            .conditions
            .iter()
            .find(|c| c.type_ == super::status::types::READY);
        let note = ready.map(|c| c.message.clone()).filter(|m| !m.is_empty());
        events.push(Event {
            type_: if phase == Phase::Degraded {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: format!("{phase:?}"),
            note,
            action: "Reconcile".into(),
            secondary: None,
        });
    }
    let conflict = |status: &FlashSaleStatus| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == super::status::types::CONFLICT && c.status == "True")
            .map(|c| c.message.clone())
    };
    if let Some(message) = conflict(next).filter(|m| conflict(previous).as_ref() != Some(m)) {
        events.push(Event {
            type_: EventType::Warning,
            reason: "Conflict".into(),
            note: Some(message),
            action: "Apply".into(),
            secondary: None,
        });
    }
    if let Some(record) = next.calibration.as_ref().filter(|record| {
        previous.calibration.as_ref().map(|p| &p.measured_at) != Some(&record.measured_at)
    }) {
        let drain = record
            .drain_rps
            .map(|rps| format!(", its queue drained at {rps:.0} decisions/s"))
            .unwrap_or_default();
        events.push(Event {
            type_: EventType::Normal,
            reason: "Calibrated".into(),
            note: Some(format!(
                "stage {}: one pod serves {:.0} requests/s within p99 {} ms{drain} (Job {})",
                record.key.stage,
                record.per_pod_rps,
                record.key.slo_p99_ms,
                record.job.as_deref().unwrap_or("unknown")
            )),
            action: "Calibrate".into(),
            secondary: None,
        });
    }
    let queue = |status: &FlashSaleStatus| status.sizing.as_ref().and_then(|s| s.queue.clone());
    if let Some(message) =
        queue(next).filter(|m| m.contains(FALLS_BEHIND) && queue(previous).as_ref() != Some(m))
    {
        events.push(Event {
            type_: EventType::Warning,
            reason: "QueueFallsBehind".into(),
            note: Some(message),
            action: "Size".into(),
            secondary: None,
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashsale_contract::Stage;

    #[test]
    fn no_change_no_event() {
        let s = FlashSaleStatus {
            phase: Some(Phase::Ready),
            stage: Some(Stage::Redis),
            ..Default::default()
        };
        assert!(transitions(&s, &s).is_empty());
    }

    #[test]
    fn phase_and_stage_changes_are_reported() {
        let before = FlashSaleStatus {
            phase: Some(Phase::Draining),
            stage: Some(Stage::Redis),
            ..Default::default()
        };
        let after = FlashSaleStatus {
            phase: Some(Phase::Provisioning),
            stage: Some(Stage::Kafka),
            ..Default::default()
        };
        let reasons: Vec<_> = transitions(&before, &after)
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(reasons, ["StageSwitched", "Provisioning"]);
    }

    #[test]
    fn a_queue_that_falls_behind_is_a_warning_once() {
        use crate::crd::SizingStatus;
        let with = |queue: &str| FlashSaleStatus {
            sizing: Some(SizingStatus {
                queue: Some(queue.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let behind = with(
            "1 worker decides the event in order at 800 rps; at the target of 5000 rps the queue grows by 4200 rps (252000 per minute)",
        );
        let events = transitions(&FlashSaleStatus::default(), &behind);
        assert_eq!(
            events
                .iter()
                .map(|e| (e.type_, e.reason.as_str()))
                .collect::<Vec<_>>(),
            [(EventType::Warning, "QueueFallsBehind")]
        );
        assert!(
            transitions(&behind, &behind).is_empty(),
            "not again while nothing changes"
        );
        let keeps_up = with(
            "1 worker decides the event in order at 800 rps: the queue keeps up with the target of 500 rps",
        );
        assert!(transitions(&behind, &keeps_up).is_empty());
    }

    #[test]
    fn a_new_measurement_is_reported_once() {
        use crate::crd::{CalibrationKey, CalibrationRecord};
        let measured = FlashSaleStatus {
            calibration: Some(CalibrationRecord {
                key: CalibrationKey {
                    stage: Stage::Postgres,
                    image: "flashsale/booking-app:local".into(),
                    resources: None,
                    slo_p99_ms: 250,
                    recalibrate: None,
                },
                per_pod_rps: 812.4,
                drain_rps: None,
                measured_at: crate::schedule::to_time(
                    chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
                ),
                job: Some("s-cal-postgres-1-lg".into()),
            }),
            ..Default::default()
        };
        let events = transitions(&FlashSaleStatus::default(), &measured);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "Calibrated");
        assert_eq!(
            events[0].note.as_deref(),
            Some(
                "stage postgres: one pod serves 812 requests/s within p99 250 ms (Job s-cal-postgres-1-lg)"
            )
        );
        assert!(transitions(&measured, &measured).is_empty());
    }

    #[test]
    fn degraded_is_a_warning() {
        let before = FlashSaleStatus {
            phase: Some(Phase::Ready),
            ..Default::default()
        };
        let after = FlashSaleStatus {
            phase: Some(Phase::Degraded),
            ..Default::default()
        };
        assert_eq!(transitions(&before, &after)[0].type_, EventType::Warning);
    }
}
