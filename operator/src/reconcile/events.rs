//! Kubernetes Events for what a user wants to see in `kubectl describe fs`: phase changes and
//! stage switches. Derived from the old and new status (pure), so a reconcile that changes
//! nothing emits nothing.

use kube::runtime::events::{Event, EventType};

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
        let ready = next.conditions.iter().find(|c| c.type_ == super::status::types::READY);
        let note = ready.map(|c| c.message.clone()).filter(|m| !m.is_empty());
        events.push(Event {
            type_: if phase == Phase::Degraded { EventType::Warning } else { EventType::Normal },
            reason: format!("{phase:?}"),
            note,
            action: "Reconcile".into(),
            secondary: None,
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Stage;

    #[test]
    fn no_change_no_event() {
        let s = FlashSaleStatus { phase: Some(Phase::Ready), stage: Some(Stage::Redis), ..Default::default() };
        assert!(transitions(&s, &s).is_empty());
    }

    #[test]
    fn phase_and_stage_changes_are_reported() {
        let before = FlashSaleStatus { phase: Some(Phase::Draining), stage: Some(Stage::Redis), ..Default::default() };
        let after = FlashSaleStatus { phase: Some(Phase::Provisioning), stage: Some(Stage::Kafka), ..Default::default() };
        let reasons: Vec<_> = transitions(&before, &after).into_iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["StageSwitched", "Provisioning"]);
    }

    #[test]
    fn degraded_is_a_warning() {
        let before = FlashSaleStatus { phase: Some(Phase::Ready), ..Default::default() };
        let after = FlashSaleStatus { phase: Some(Phase::Degraded), ..Default::default() };
        assert_eq!(transitions(&before, &after)[0].type_, EventType::Warning);
    }
}
