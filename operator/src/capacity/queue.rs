//! Stage kafka's queue: the API accepts at the target rate, the workers decide behind it. Requests
//! are keyed by event id, so one event's requests share one partition and one worker decides
//! them, in arrival order (first come, first served, and the hot inventory row is locked once per
//! batch instead of being fought over). More workers decide more events at once, never one event
//! faster: a FlashSale is one event, so its queue drains at the rate calibration measured for
//! one worker, whatever the worker count. This module says so with numbers: how many workers are
//! worth running, and how far the queue falls behind at the target.

use chrono::TimeDelta;

use super::{MAX_REPLICAS, pods_for, whole};

/// Events of one FlashSale: `spec.event`.
pub const EVENTS_PER_SALE: u32 = 1;

/// The words of a queue message whose workers do not keep up (a Warning event repeats it).
pub const FALLS_BEHIND: &str = "the queue grows by";

/// What the queue of a sale (or of `plan`'s hypothetical events) needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueRequest {
    pub target_rps: u64,
    /// Decisions per second one worker makes on one event's partition (measured).
    pub drain_rps: f64,
    /// Events the target load is spread over (each is a partition one worker decides).
    pub events: u32,
    /// How long the target load lasts (the sale window), to say how long the queue takes to empty.
    pub peak: Option<TimeDelta>,
}

/// How the queue behaves at the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueuePlan {
    /// Workers that add drain: one per event, as many as the load needs, at least one.
    pub workers: u32,
    /// Decisions per second those workers make together.
    pub drain_rps: f64,
    /// Requests per second the queue grows by at the target (0 when the workers keep up).
    pub growth_rps: f64,
    /// Requests still queued when a peak of `peak` ends.
    pub backlog_at_end: Option<f64>,
    /// How long after the peak the last of them is decided.
    pub drained_after: Option<TimeDelta>,
    pub request: QueueRequest,
}

/// `None` when the drain rate is not a positive, finite number (nothing measured: no plan).
pub fn plan_queue(request: &QueueRequest) -> Option<QueuePlan> {
    let per_worker = request.drain_rps;
    if !(per_worker.is_finite() && per_worker > 0.0) {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // above 2^53 rps a rounding of the target is moot
    let target = request.target_rps as f64;
    let needed = pods_for(target, per_worker).max(1);
    let workers = u32::try_from(needed)
        .unwrap_or(MAX_REPLICAS)
        .min(request.events.max(1))
        .min(MAX_REPLICAS);
    let drain_rps = per_worker * f64::from(workers);
    let growth_rps = (target - drain_rps).max(0.0);
    let (backlog_at_end, drained_after) = match request.peak {
        Some(peak) if growth_rps > 0.0 => {
            let backlog = growth_rps * peak.as_seconds_f64();
            let seconds = (backlog / drain_rps).ceil().min(i64::MAX as f64 / 1000.0);
            (
                Some(backlog),
                Some(TimeDelta::try_seconds(seconds as i64).unwrap_or(TimeDelta::MAX)),
            )
        }
        Some(_) => (Some(0.0), Some(TimeDelta::zero())),
        None => (None, None),
    };
    Some(QueuePlan {
        workers,
        drain_rps,
        growth_rps,
        backlog_at_end,
        drained_after,
        request: *request,
    })
}

impl QueuePlan {
    /// The workers keep up with the target: nothing waits longer than a batch.
    pub fn keeps_up(&self) -> bool {
        self.growth_rps == 0.0
    }

    /// One sentence for status and `plan`.
    pub fn message(&self) -> String {
        let r = &self.request;
        let workers = if self.workers == 1 {
            "1 worker decides".to_string()
        } else {
            format!("{} workers decide", self.workers)
        };
        let events = if r.events == 1 {
            "the event".to_string()
        } else {
            format!("{} events", r.events)
        };
        let head = format!(
            "{workers} {events} in order at {} rps",
            whole(self.drain_rps)
        );
        if self.keeps_up() {
            return format!(
                "{head}: the queue keeps up with the target of {} rps",
                r.target_rps
            );
        }
        let growth = format!(
            "{head}; at the target of {} rps {FALLS_BEHIND} {} rps",
            r.target_rps,
            whole(self.growth_rps)
        );
        match (self.backlog_at_end, self.drained_after, r.peak) {
            (Some(backlog), Some(after), Some(peak)) => format!(
                "{growth}: a {} peak leaves {} requests queued, the last decided {} after it ends",
                human(peak),
                whole(backlog),
                human(after)
            ),
            _ => format!("{growth} ({} per minute)", whole(self.growth_rps * 60.0)),
        }
    }
}

/// `2h5m`, `45s`: the largest two units.
fn human(d: TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) if seconds == 0 => format!("{minutes}m"),
        (0, 0, _) => format!("{minutes}m{seconds}s"),
        (0, _, 0) => format!("{hours}h"),
        (0, _, _) => format!("{hours}h{minutes}m"),
        _ if hours == 0 => format!("{days}d"),
        _ => format!("{days}d{hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        target_rps: u64,
        drain_rps: f64,
        events: u32,
        peak: Option<TimeDelta>,
    ) -> QueueRequest {
        QueueRequest {
            target_rps,
            drain_rps,
            events,
            peak,
        }
    }

    #[test]
    fn one_event_is_one_worker_however_high_the_target() {
        let plan = plan_queue(&request(50_000, 800.0, EVENTS_PER_SALE, None)).unwrap();
        assert_eq!(
            (plan.workers, plan.drain_rps, plan.growth_rps),
            (1, 800.0, 49_200.0)
        );
        assert!(
            plan.message()
                .starts_with("1 worker decides the event in order at 800 rps"),
            "{}",
            plan.message()
        );
        assert!(
            plan.message()
                .ends_with("grows by 49200 rps (2952000 per minute)"),
            "{}",
            plan.message()
        );
    }

    #[test]
    fn a_peak_leaves_a_backlog_and_says_when_it_is_gone() {
        // 2 h at 1000 rps against 800 rps: 200 rps × 7200 s = 1.44M queued, 1800 s to decide.
        let plan = plan_queue(&request(1000, 800.0, 1, Some(TimeDelta::hours(2)))).unwrap();
        assert_eq!(plan.backlog_at_end, Some(1_440_000.0));
        assert_eq!(plan.drained_after, Some(TimeDelta::minutes(30)));
        assert!(
            plan.message().ends_with(
                "a 2h peak leaves 1440000 requests queued, the last decided 30m after it ends"
            ),
            "{}",
            plan.message()
        );
    }

    #[test]
    fn workers_that_keep_up_leave_no_backlog() {
        let plan = plan_queue(&request(500, 800.0, 1, Some(TimeDelta::minutes(10)))).unwrap();
        assert!(plan.keeps_up());
        assert_eq!(
            (plan.backlog_at_end, plan.drained_after),
            (Some(0.0), Some(TimeDelta::zero()))
        );
        assert_eq!(
            plan.message(),
            "1 worker decides the event in order at 800 rps: the queue keeps up with the target of 500 rps"
        );
    }

    #[test]
    fn many_events_spread_over_as_many_workers_as_the_load_needs() {
        // 10000 / 800 = 12.5 → 13 workers, fewer than the 40 events.
        let plan = plan_queue(&request(10_000, 800.0, 40, None)).unwrap();
        assert_eq!(plan.workers, 13);
        assert!(plan.keeps_up());
        // Only 5 events: 5 workers, and the queue grows.
        let plan = plan_queue(&request(10_000, 800.0, 5, None)).unwrap();
        assert_eq!((plan.workers, plan.growth_rps), (5, 6000.0));
    }

    #[test]
    fn no_measurement_no_plan_and_huge_numbers_do_not_overflow() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(plan_queue(&request(1000, bad, 1, None)), None, "{bad}");
        }
        let plan = plan_queue(&request(
            u64::MAX,
            1e-300,
            u32::MAX,
            Some(TimeDelta::days(3650)),
        ))
        .unwrap();
        assert!(plan.workers >= 1 && plan.drained_after.is_some());
        let _ = plan.message();
    }

    #[test]
    fn durations_read_like_a_human_wrote_them() {
        assert_eq!(human(TimeDelta::seconds(45)), "45s");
        assert_eq!(human(TimeDelta::seconds(125)), "2m5s");
        assert_eq!(human(TimeDelta::minutes(125)), "2h5m");
        assert_eq!(human(TimeDelta::hours(50)), "2d2h");
    }
}
