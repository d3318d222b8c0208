//! Following observed load during a sale: from the booking-app pods' request counters, the rps
//! each pod really serves; when that exceeds measured capacity × utilization, more pods — never
//! below the calendar's floor, never above maxReplicas, and fewer only after a cooldown.

pub mod scrape;

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::capacity::pods_for;

/// How long after the last change the operator waits before removing pods: a spike that paused
/// for a minute must not find half the pods gone.
pub const DEFAULT_SCALE_DOWN_COOLDOWN: TimeDelta = TimeDelta::minutes(5);

/// One reading of one pod's request counter.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterSample {
    pub pod: String,
    /// Requests served since the pod started (a Prometheus counter).
    pub requests: f64,
    pub at: DateTime<Utc>,
}

/// Load seen across the pods that were read twice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObservedLoad {
    pub pods: u32,
    pub total_rps: f64,
}

impl ObservedLoad {
    pub fn per_pod_rps(&self) -> f64 {
        if self.pods == 0 {
            0.0
        } else {
            self.total_rps / f64::from(self.pods)
        }
    }
}

/// Rates between two rounds of readings. A pod seen only once has no rate yet and is left out;
/// a counter that went down means the pod restarted, so its whole current value is new requests.
pub fn observed_load(
    previous: &[CounterSample],
    current: &[CounterSample],
) -> Option<ObservedLoad> {
    let before: HashMap<&str, &CounterSample> =
        previous.iter().map(|s| (s.pod.as_str(), s)).collect();
    let mut pods = 0u32;
    let mut total_rps = 0.0;
    for now in current {
        let Some(then) = before.get(now.pod.as_str()) else {
            continue;
        };
        let seconds = (now.at - then.at).as_seconds_f64();
        if seconds <= 0.0 || !now.requests.is_finite() || !then.requests.is_finite() {
            continue;
        }
        let served = if now.requests >= then.requests {
            now.requests - then.requests
        } else {
            now.requests
        };
        pods += 1;
        total_rps += served / seconds;
    }
    (pods > 0).then_some(ObservedLoad { pods, total_rps })
}

/// What the autoscaler knows at one reconcile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoscaleInput {
    /// Replicas the operator set last time.
    pub current: u32,
    /// What the calendar and the target ask for (the computed size in the window, else minReplicas).
    pub floor: u32,
    pub max: u32,
    /// Measured (or pinned) rps one pod sustains within the SLO.
    pub per_pod_capacity: f64,
    pub utilization: f64,
    /// `None` when nothing was observed (observing off, or fewer than two readings yet).
    pub observed: Option<ObservedLoad>,
    pub last_scale: Option<DateTime<Utc>>,
    pub cooldown: TimeDelta,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleReason {
    /// The calendar/target size is what is needed.
    Floor,
    /// Observed load needs more than the floor.
    ObservedLoad,
    /// Observed load needs more than maxReplicas allows.
    ClampedByMax,
    /// Fewer would do, but the last change is too recent.
    CoolingDown,
}

impl ScaleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleReason::Floor => "Floor",
            ScaleReason::ObservedLoad => "ObservedLoad",
            ScaleReason::ClampedByMax => "ClampedByMaxReplicas",
            ScaleReason::CoolingDown => "CoolingDown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoscaleDecision {
    pub replicas: u32,
    pub reason: ScaleReason,
    /// When a held scale-down may happen; the reconciler requeues then.
    pub recheck_at: Option<DateTime<Utc>>,
}

/// Scale up at once; scale down only once `cooldown` has passed since the last change.
pub fn decide(input: &AutoscaleInput) -> AutoscaleDecision {
    let floor = input.floor.min(input.max);
    let per_pod = input.per_pod_capacity * input.utilization;
    let needed = match input.observed {
        Some(load) if per_pod.is_finite() && per_pod > 0.0 => pods_for(load.total_rps, per_pod),
        _ => 0,
    };
    let (wanted, reason) = if needed > u64::from(input.max) {
        (input.max, ScaleReason::ClampedByMax)
    } else if needed > u64::from(floor) {
        (
            u32::try_from(needed).unwrap_or(input.max),
            ScaleReason::ObservedLoad,
        )
    } else {
        (floor, ScaleReason::Floor)
    };
    // Above maxReplicas is never right, so that comes down without waiting.
    let current = input.current.min(input.max);
    if wanted >= current {
        return AutoscaleDecision {
            replicas: wanted,
            reason,
            recheck_at: None,
        };
    }
    let cooled_at = input
        .last_scale
        .and_then(|t| t.checked_add_signed(input.cooldown));
    match cooled_at {
        Some(at) if input.now < at => AutoscaleDecision {
            replicas: current,
            reason: ScaleReason::CoolingDown,
            recheck_at: Some(at),
        },
        _ => AutoscaleDecision {
            replicas: wanted,
            reason,
            recheck_at: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn sample(pod: &str, requests: f64, when: &str) -> CounterSample {
        CounterSample {
            pod: pod.into(),
            requests,
            at: at(when),
        }
    }

    /// 10 pods at 4000 rps capacity and 70% utilization: 2800 rps planned per pod.
    fn input(observed_per_pod: Option<f64>) -> AutoscaleInput {
        AutoscaleInput {
            current: 10,
            floor: 10,
            max: 40,
            per_pod_capacity: 4000.0,
            utilization: 0.7,
            observed: observed_per_pod.map(|rps| ObservedLoad {
                pods: 10,
                total_rps: rps * 10.0,
            }),
            last_scale: Some(at("2026-12-01T18:00:00Z")),
            cooldown: TimeDelta::minutes(5),
            now: at("2026-12-01T18:10:00Z"),
        }
    }

    #[test]
    fn load_within_capacity_keeps_the_floor() {
        let decision = decide(&input(Some(2800.0)));
        assert_eq!(
            (decision.replicas, decision.reason),
            (10, ScaleReason::Floor)
        );
    }

    #[test]
    fn load_above_capacity_times_utilization_scales_up_at_once() {
        // 3500 rps per pod on 10 pods = 35000 rps; / 2800 = 12.5 → 13 pods.
        let just_scaled = AutoscaleInput {
            last_scale: Some(at("2026-12-01T18:09:59Z")),
            ..input(Some(3500.0))
        };
        let decision = decide(&just_scaled);
        assert_eq!(
            (decision.replicas, decision.reason),
            (13, ScaleReason::ObservedLoad)
        );
        assert_eq!(decision.recheck_at, None);
    }

    #[test]
    fn never_above_max_replicas() {
        let decision = decide(&input(Some(40_000.0)));
        assert_eq!(
            (decision.replicas, decision.reason),
            (40, ScaleReason::ClampedByMax)
        );
        let over = AutoscaleInput {
            current: 60,
            now: at("2026-12-01T18:01:00Z"),
            ..input(Some(2800.0))
        };
        assert_eq!(
            decide(&over).replicas,
            40,
            "a lowered maxReplicas applies without cooldown"
        );
    }

    #[test]
    fn never_below_the_calendar_floor() {
        let quiet = decide(&AutoscaleInput {
            now: at("2026-12-01T19:00:00Z"),
            ..input(Some(1.0))
        });
        assert_eq!((quiet.replicas, quiet.reason), (10, ScaleReason::Floor));
        // The window opened: the floor rose above the current count, no cooldown applies.
        let opened = decide(&AutoscaleInput {
            current: 2,
            ..input(Some(0.0))
        });
        assert_eq!(opened.replicas, 10);
    }

    #[test]
    fn scale_down_waits_for_the_cooldown() {
        let busy_before = AutoscaleInput {
            current: 20,
            now: at("2026-12-01T18:04:00Z"),
            ..input(Some(100.0))
        };
        let held = decide(&busy_before);
        assert_eq!((held.replicas, held.reason), (20, ScaleReason::CoolingDown));
        assert_eq!(held.recheck_at, Some(at("2026-12-01T18:05:00Z")));
        let cooled = decide(&AutoscaleInput {
            now: at("2026-12-01T18:05:00Z"),
            ..busy_before
        });
        assert_eq!((cooled.replicas, cooled.reason), (10, ScaleReason::Floor));
        let never_scaled = decide(&AutoscaleInput {
            last_scale: None,
            ..busy_before
        });
        assert_eq!(never_scaled.replicas, 10);
    }

    #[test]
    fn scale_down_follows_load_to_what_is_still_needed() {
        // 20 pods serving 36000 rps in total need 13 at 2800 each.
        let observed = Some(ObservedLoad {
            pods: 20,
            total_rps: 36_000.0,
        });
        let decision = decide(&AutoscaleInput {
            current: 20,
            observed,
            ..input(None)
        });
        assert_eq!(
            (decision.replicas, decision.reason),
            (13, ScaleReason::ObservedLoad)
        );
    }

    #[test]
    fn nothing_observed_means_the_floor_after_cooldown() {
        assert_eq!(decide(&input(None)).replicas, 10);
        let was_up = decide(&AutoscaleInput {
            current: 15,
            now: at("2026-12-01T18:01:00Z"),
            ..input(None)
        });
        assert_eq!(was_up.replicas, 15);
    }

    #[test]
    fn broken_capacity_never_divides_by_zero() {
        for capacity in [0.0, f64::NAN, -1.0] {
            let decision = decide(&AutoscaleInput {
                per_pod_capacity: capacity,
                ..input(Some(9000.0))
            });
            assert_eq!(decision.replicas, 10, "{capacity}");
        }
    }

    #[test]
    fn rate_from_two_readings_per_pod() {
        let previous = [
            sample("a", 1000.0, "2026-12-01T18:00:00Z"),
            sample("b", 500.0, "2026-12-01T18:00:00Z"),
        ];
        let current = [
            sample("a", 31_000.0, "2026-12-01T18:00:10Z"),
            sample("b", 10_500.0, "2026-12-01T18:00:10Z"),
            sample("c", 99_999.0, "2026-12-01T18:00:10Z"),
        ];
        let load = observed_load(&previous, &current).unwrap();
        assert_eq!(load.pods, 2, "pod c was read once: no rate yet");
        assert_eq!(load.total_rps, 3000.0 + 1000.0);
        assert_eq!(load.per_pod_rps(), 2000.0);
    }

    #[test]
    fn restarted_pod_counts_from_zero() {
        let previous = [sample("a", 50_000.0, "2026-12-01T18:00:00Z")];
        let current = [sample("a", 2000.0, "2026-12-01T18:00:10Z")];
        assert_eq!(observed_load(&previous, &current).unwrap().total_rps, 200.0);
    }

    #[test]
    fn no_rate_without_two_readings_or_elapsed_time() {
        let only = [sample("a", 10.0, "2026-12-01T18:00:00Z")];
        assert_eq!(observed_load(&[], &only), None);
        assert_eq!(observed_load(&only, &only), None);
        assert_eq!(
            ObservedLoad {
                pods: 0,
                total_rps: 0.0
            }
            .per_pod_rps(),
            0.0
        );
    }
}
