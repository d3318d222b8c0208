//! The sale window: from a calendar (startsAt, endsAt, warmup) and the current instant, whether
//! the sale runs at its computed size or at minReplicas, and the next instant that changes, so the
//! reconciler requeues exactly then instead of polling. Time comes from a `Clock` so tests can hold it.

use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::WindowSpec;
use crate::duration::{DurationError, parse_duration};

/// Where "now" comes from: the system in production, a hand-moved clock in tests.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to: window tests hold a sale before its warm-up, then step.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(now: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(now))
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }

    pub fn advance(&self, by: TimeDelta) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("window.endsAt ({ends_at}) must be after window.startsAt ({starts_at})")]
    EndsBeforeStart {
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    },
    #[error("window.warmup must not be negative")]
    NegativeWarmup,
    #[error("window.warmup: {0}")]
    Warmup(#[from] DurationError),
}

/// A Kubernetes timestamp as chrono sees it (k8s-openapi's `Time` wraps a jiff `Timestamp`).
pub fn from_time(time: &Time) -> DateTime<Utc> {
    let nanos = u32::try_from(time.0.subsec_nanosecond()).unwrap_or(0);
    DateTime::from_timestamp(time.0.as_second(), nanos).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A chrono instant as a Kubernetes timestamp (jiff's range is the narrower one: clamp to it).
pub fn to_time(at: DateTime<Utc>) -> Time {
    let at = at.clamp(
        from_time(&Time(k8s_openapi::jiff::Timestamp::MIN)),
        from_time(&Time(k8s_openapi::jiff::Timestamp::MAX)),
    );
    let nanos = i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0);
    Time(
        k8s_openapi::jiff::Timestamp::new(at.timestamp(), nanos)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// A validated sale window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleWindow {
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    warmup: TimeDelta,
}

impl SaleWindow {
    pub fn new(
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        warmup: TimeDelta,
    ) -> Result<Self, WindowError> {
        if ends_at <= starts_at {
            return Err(WindowError::EndsBeforeStart { starts_at, ends_at });
        }
        if warmup < TimeDelta::zero() {
            return Err(WindowError::NegativeWarmup);
        }
        Ok(SaleWindow {
            starts_at,
            ends_at,
            warmup,
        })
    }

    /// The window a FlashSale asks for; a missing warmup is zero.
    pub fn from_spec(spec: &WindowSpec) -> Result<Self, WindowError> {
        let warmup = spec
            .warmup
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .unwrap_or_default();
        Self::new(from_time(&spec.starts_at), from_time(&spec.ends_at), warmup)
    }

    /// When the pods start scaling up: `startsAt − warmup` (the earliest instant for absurd warmups).
    pub fn scale_up_at(&self) -> DateTime<Utc> {
        self.starts_at
            .checked_sub_signed(self.warmup)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// When the doors close.
    pub fn ends_at(&self) -> DateTime<Utc> {
        self.ends_at
    }

    /// How long the doors are open: `endsAt − startsAt` (positive, checked by `new`).
    pub fn length(&self) -> TimeDelta {
        self.ends_at - self.starts_at
    }
}

/// Where a sale is on its calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowPhase {
    /// No window: the sale is always at its computed size.
    Unscheduled,
    /// Before `startsAt − warmup`: held at minReplicas.
    Scheduled,
    /// Between `startsAt − warmup` and `startsAt`: scaled, waiting for the doors to open.
    WarmingUp,
    /// Between `startsAt` and `endsAt`.
    Open,
    /// After `endsAt`: back to minReplicas.
    Ended,
}

impl WindowPhase {
    /// Whether the sale runs at its computed size (otherwise at minReplicas).
    pub fn scaled(self) -> bool {
        matches!(
            self,
            WindowPhase::Unscheduled | WindowPhase::WarmingUp | WindowPhase::Open
        )
    }
}

/// The window's verdict for one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowDecision {
    pub phase: WindowPhase,
    /// The next instant the phase changes; `None` when it never will.
    pub next_change: Option<DateTime<Utc>>,
}

impl WindowDecision {
    /// The replicas the calendar asks for: the computed size inside the window, else the floor.
    pub fn replicas(&self, min_replicas: u32, sized: u32) -> u32 {
        if self.phase.scaled() {
            sized
        } else {
            min_replicas
        }
    }

    /// How long the reconciler waits before looking again, measured from `now`.
    pub fn requeue_after(&self, now: DateTime<Utc>) -> Option<std::time::Duration> {
        self.next_change.map(|at| until(now, at))
    }
}

/// The time from `now` to `at`, zero when `at` has passed.
pub fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> std::time::Duration {
    (at - now).to_std().unwrap_or(std::time::Duration::ZERO)
}

/// Which phase `now` falls in; each boundary belongs to the phase it starts.
pub fn decide(window: Option<&SaleWindow>, now: DateTime<Utc>) -> WindowDecision {
    let Some(window) = window else {
        return WindowDecision {
            phase: WindowPhase::Unscheduled,
            next_change: None,
        };
    };
    let (phase, next_change) = if now < window.scale_up_at() {
        (WindowPhase::Scheduled, Some(window.scale_up_at()))
    } else if now < window.starts_at {
        (WindowPhase::WarmingUp, Some(window.starts_at))
    } else if now < window.ends_at {
        (WindowPhase::Open, Some(window.ends_at))
    } else {
        (WindowPhase::Ended, None)
    };
    WindowDecision { phase, next_change }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn window() -> SaleWindow {
        SaleWindow::new(
            at("2026-12-01T18:00:00Z"),
            at("2026-12-01T20:00:00Z"),
            TimeDelta::minutes(10),
        )
        .unwrap()
    }

    #[test]
    fn before_warmup_holds_min_replicas_and_requeues_exactly_at_startsat_minus_warmup() {
        let now = at("2026-12-01T09:00:00Z");
        let decision = decide(Some(&window()), now);
        assert_eq!(decision.phase, WindowPhase::Scheduled);
        assert_eq!(decision.replicas(2, 358), 2);
        assert_eq!(decision.next_change, Some(at("2026-12-01T17:50:00Z")));
        assert_eq!(
            decision.requeue_after(now),
            Some(std::time::Duration::from_secs(8 * 3600 + 50 * 60))
        );
    }

    #[test]
    fn scale_up_instant_itself_is_scaled() {
        let decision = decide(Some(&window()), at("2026-12-01T17:50:00Z"));
        assert_eq!(decision.phase, WindowPhase::WarmingUp);
        assert_eq!(decision.replicas(2, 358), 358);
        assert_eq!(decision.next_change, Some(at("2026-12-01T18:00:00Z")));
        let a_moment_before = decide(Some(&window()), at("2026-12-01T17:49:59.999Z"));
        assert_eq!(a_moment_before.replicas(2, 358), 2);
    }

    #[test]
    fn open_sale_is_scaled_until_endsat() {
        let decision = decide(Some(&window()), at("2026-12-01T19:59:59Z"));
        assert_eq!(decision.phase, WindowPhase::Open);
        assert_eq!(decision.replicas(2, 358), 358);
        assert_eq!(decision.next_change, Some(at("2026-12-01T20:00:00Z")));
        assert_eq!(
            decide(Some(&window()), at("2026-12-01T18:00:00Z")).phase,
            WindowPhase::Open
        );
    }

    #[test]
    fn after_endsat_back_to_min_replicas_and_no_more_requeues() {
        for now in [at("2026-12-01T20:00:00Z"), at("2027-01-01T00:00:00Z")] {
            let decision = decide(Some(&window()), now);
            assert_eq!(decision.phase, WindowPhase::Ended);
            assert_eq!(decision.replicas(2, 358), 2);
            assert_eq!(decision.requeue_after(now), None);
        }
    }

    #[test]
    fn without_a_window_the_sale_is_always_at_its_computed_size() {
        let decision = decide(None, at("2026-12-01T09:00:00Z"));
        assert_eq!(decision.phase, WindowPhase::Unscheduled);
        assert_eq!(decision.replicas(2, 358), 358);
        assert_eq!(decision.next_change, None);
    }

    #[test]
    fn zero_warmup_scales_at_startsat() {
        let w = SaleWindow::new(
            at("2026-12-01T18:00:00Z"),
            at("2026-12-01T20:00:00Z"),
            TimeDelta::zero(),
        )
        .unwrap();
        assert_eq!(
            decide(Some(&w), at("2026-12-01T17:59:59Z")).next_change,
            Some(at("2026-12-01T18:00:00Z"))
        );
        assert_eq!(
            decide(Some(&w), at("2026-12-01T18:00:00Z")).phase,
            WindowPhase::Open
        );
    }

    #[test]
    fn invalid_windows_are_refused() {
        let start = at("2026-12-01T18:00:00Z");
        assert!(matches!(
            SaleWindow::new(start, start, TimeDelta::zero()),
            Err(WindowError::EndsBeforeStart { .. })
        ));
        assert_eq!(
            SaleWindow::new(start, at("2026-12-01T19:00:00Z"), TimeDelta::minutes(-1)),
            Err(WindowError::NegativeWarmup)
        );
    }

    #[test]
    fn absurd_warmup_does_not_overflow() {
        let w = SaleWindow::new(
            at("2026-12-01T18:00:00Z"),
            at("2026-12-01T20:00:00Z"),
            TimeDelta::MAX,
        )
        .unwrap();
        assert_eq!(w.scale_up_at(), DateTime::<Utc>::MIN_UTC);
        assert_eq!(
            decide(Some(&w), at("2026-01-01T00:00:00Z")).phase,
            WindowPhase::WarmingUp
        );
    }

    #[test]
    fn window_from_the_spec_parses_the_warmup() {
        let spec: WindowSpec = serde_json::from_value(serde_json::json!({
            "startsAt": "2026-12-01T18:00:00Z", "endsAt": "2026-12-01T20:00:00Z", "warmup": "1h30m"
        }))
        .unwrap();
        assert_eq!(
            SaleWindow::from_spec(&spec).unwrap().scale_up_at(),
            at("2026-12-01T16:30:00Z")
        );
        let no_warmup = WindowSpec {
            warmup: None,
            ..spec.clone()
        };
        assert_eq!(
            SaleWindow::from_spec(&no_warmup).unwrap().scale_up_at(),
            at("2026-12-01T18:00:00Z")
        );
        let bad = WindowSpec {
            warmup: Some("soon".into()),
            ..spec
        };
        assert!(matches!(
            SaleWindow::from_spec(&bad),
            Err(WindowError::Warmup(_))
        ));
    }

    #[test]
    fn kubernetes_timestamps_round_trip() {
        let instant = at("2026-12-01T17:50:00.123456789Z");
        assert_eq!(from_time(&to_time(instant)), instant);
        assert_eq!(
            to_time(instant).0.to_string(),
            "2026-12-01T17:50:00.123456789Z"
        );
    }

    #[test]
    fn past_instants_requeue_at_once() {
        assert_eq!(
            until(at("2026-12-01T18:00:01Z"), at("2026-12-01T18:00:00Z")),
            std::time::Duration::ZERO
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(at("2026-12-01T09:00:00Z"));
        assert_eq!(clock.now(), at("2026-12-01T09:00:00Z"));
        clock.advance(TimeDelta::hours(1));
        assert_eq!(clock.now(), at("2026-12-01T10:00:00Z"));
        clock.set(at("2026-12-01T17:50:00Z"));
        assert_eq!(clock.now(), at("2026-12-01T17:50:00Z"));
    }
}
