//! Moving a live sale between stages. Two stages must never decide bookings at once, and a
//! stage that holds accepted work outside Postgres (redis: the write-behind stream; kafka: the
//! undecided requests) must hand all of it to Postgres before the next stage reads Postgres.
//! So: scale the old stage's booking pods to zero, wait until none is left, run the drain Job
//! (`booking-app worker --stage <old> --drain`, which exits 0 once the backlog is empty), and
//! only then start the new stage's pods. Pure: the observations come in as arguments.

use flashsale_contract::Stage;

/// Which stage serves now, and where a stage change stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagePlan {
    /// The stage whose booking pods should run (and that status.stage reports).
    pub serving: Stage,
    pub leaving: Option<Leaving>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaving {
    pub from: Stage,
    pub to: Stage,
    pub step: LeaveStep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveStep {
    /// Old stage's booking pods are being stopped (still running: `remaining`).
    StoppingPods { remaining: usize },
    /// The drain Job runs.
    Draining,
    /// The drain Job gave up (its backoffLimit); the sale stays on the old stage, stopped.
    DrainFailed,
}

/// What the drain Job of a stage reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainState {
    Running,
    Succeeded,
    Failed,
}

/// `target` is spec.stage; `serving` is status.stage (None for a new sale); `old_pods` counts the
/// booking pods of `serving`, terminating ones included; `drain` is the state of its drain Job.
pub fn plan(
    target: Stage,
    serving: Option<Stage>,
    old_pods: usize,
    drain: Option<DrainState>,
) -> StagePlan {
    let steady = StagePlan {
        serving: target,
        leaving: None,
    };
    let Some(from) = serving.filter(|s| *s != target) else {
        return steady;
    };
    let leaving = |step| StagePlan {
        serving: from,
        leaving: Some(Leaving {
            from,
            to: target,
            step,
        }),
    };
    if old_pods > 0 {
        return leaving(LeaveStep::StoppingPods {
            remaining: old_pods,
        });
    }
    if !from.needs_drain() {
        return steady;
    }
    match drain {
        Some(DrainState::Succeeded) => steady,
        Some(DrainState::Failed) => leaving(LeaveStep::DrainFailed),
        Some(DrainState::Running) | None => leaving(LeaveStep::Draining),
    }
}

impl StagePlan {
    /// The stages whose children exist this pass: the serving one, and while leaving, the target
    /// (its stores start early, its booking pods wait).
    pub fn stages(&self) -> Vec<Stage> {
        match self.leaving {
            Some(l) => vec![l.from, l.to],
            None => vec![self.serving],
        }
    }

    /// The drain Job runs once the old stage's pods are gone.
    pub fn drain_job(&self) -> Option<Stage> {
        self.leaving
            .filter(|l| matches!(l.step, LeaveStep::Draining | LeaveStep::DrainFailed))
            .map(|l| l.from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Stage::*;

    #[test]
    fn a_new_sale_serves_its_stage_at_once() {
        assert_eq!(
            plan(Redis, None, 0, None),
            StagePlan {
                serving: Redis,
                leaving: None
            }
        );
    }

    #[test]
    fn leaving_redis_stops_pods_then_drains_then_switches() {
        let stopping = plan(Kafka, Some(Redis), 3, None);
        assert_eq!(stopping.serving, Redis);
        assert_eq!(
            stopping.leaving.unwrap().step,
            LeaveStep::StoppingPods { remaining: 3 }
        );
        assert_eq!(stopping.drain_job(), None);

        let draining = plan(Kafka, Some(Redis), 0, Some(DrainState::Running));
        assert_eq!(draining.leaving.unwrap().step, LeaveStep::Draining);
        assert_eq!(draining.drain_job(), Some(Redis));
        assert_eq!(draining.stages(), vec![Redis, Kafka]);

        assert_eq!(
            plan(Kafka, Some(Redis), 0, None).drain_job(),
            Some(Redis),
            "job not created yet"
        );
        assert_eq!(
            plan(Kafka, Some(Redis), 0, Some(DrainState::Succeeded)),
            StagePlan {
                serving: Kafka,
                leaving: None
            }
        );
    }

    #[test]
    fn a_failed_drain_never_switches() {
        let p = plan(Postgres, Some(Redis), 0, Some(DrainState::Failed));
        assert_eq!(p.serving, Redis);
        assert_eq!(p.leaving.unwrap().step, LeaveStep::DrainFailed);
    }

    #[test]
    fn leaving_postgres_needs_no_drain_only_stopped_pods() {
        assert_eq!(plan(Redis, Some(Postgres), 1, None).serving, Postgres);
        assert_eq!(
            plan(Redis, Some(Postgres), 0, None),
            StagePlan {
                serving: Redis,
                leaving: None
            }
        );
    }

    #[test]
    fn changing_back_mid_drain_resumes_the_old_stage() {
        assert_eq!(
            plan(Redis, Some(Redis), 0, Some(DrainState::Running)),
            StagePlan {
                serving: Redis,
                leaving: None
            }
        );
    }
}
