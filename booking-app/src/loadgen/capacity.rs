//! `--find-capacity`: the highest arrival rate a target sustains within an SLO (p99 latency and
//! error rate). The rate doubles until a step breaks the SLO, then the gap between the best
//! passing and the worst failing rate is bisected. This is the operator's per-pod throughput.

use std::future::Future;

use serde::Serialize;

use super::report::Report;

/// Served slower than this share of the offered rate, a step fails even when latency looks fine:
/// the load was not really offered (the generator or its in-flight cap could not keep up).
const MIN_SERVED_SHARE: f64 = 0.9;

/// The service level a rate must meet to count as sustainable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Slo {
    pub p99_ms: u64,
    pub max_error_rate: f64,
}

/// What one step at a fixed rate measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Measured {
    pub achieved_rps: f64,
    pub p99_ms: f64,
    pub error_rate: f64,
}

impl From<&Report> for Measured {
    fn from(report: &Report) -> Self {
        // Due sends that never left count against the step like errors.
        let offered = report.requests + report.missed_sends;
        Self {
            achieved_rps: report.throughput_rps,
            p99_ms: report.latency_ms.p99,
            error_rate: super::report::error_rate(report.errors + report.missed_sends, offered),
        }
    }
}

/// One step of the search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub rate: f64,
    #[serde(flatten)]
    pub measured: Measured,
    pub pass: bool,
    /// Why the step failed, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breach: Option<String>,
}

/// Why `measured` at `rate` breaks the SLO, or `None` when it holds.
pub fn breach(slo: &Slo, rate: f64, measured: &Measured) -> Option<String> {
    if measured.p99_ms > slo.p99_ms as f64 {
        Some(format!("p99 {:.1} ms > {} ms", measured.p99_ms, slo.p99_ms))
    } else if measured.error_rate > slo.max_error_rate {
        Some(format!(
            "error rate {:.4} > {}",
            measured.error_rate, slo.max_error_rate
        ))
    } else if measured.achieved_rps < rate * MIN_SERVED_SHARE {
        Some(format!(
            "served {:.1} of {:.1} req/s",
            measured.achieved_rps, rate
        ))
    } else {
        None
    }
}

/// Bounds and pace of the search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SearchConfig {
    pub start_rate: f64,
    pub min_rate: f64,
    pub max_rate: f64,
    /// Ramp factor between steps until the first failure.
    pub growth: f64,
    /// Stop refining when the failing rate is within this share above the passing one.
    pub precision: f64,
    pub max_steps: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            start_rate: 100.0,
            min_rate: 1.0,
            max_rate: 1_000_000.0,
            growth: 2.0,
            precision: 0.05,
            max_steps: 20,
        }
    }
}

/// The search's state: the highest rate that passed and the lowest that failed.
#[derive(Debug, Clone)]
pub struct Search {
    config: SearchConfig,
    highest_pass: Option<f64>,
    lowest_fail: Option<f64>,
    steps: usize,
}

impl Search {
    pub fn new(config: SearchConfig) -> Self {
        Self {
            config,
            highest_pass: None,
            lowest_fail: None,
            steps: 0,
        }
    }

    /// The next rate to try, or `None` when the answer is known well enough.
    pub fn next_rate(&self) -> Option<f64> {
        let c = &self.config;
        if self.steps >= c.max_steps {
            return None;
        }
        match (self.highest_pass, self.lowest_fail) {
            (None, None) => Some(c.start_rate.clamp(c.min_rate, c.max_rate)),
            (Some(pass), None) => (pass < c.max_rate).then(|| (pass * c.growth).min(c.max_rate)),
            (None, Some(fail)) => Some(fail / c.growth).filter(|rate| *rate >= c.min_rate),
            (Some(pass), Some(fail)) => {
                (fail > pass * (1.0 + c.precision)).then_some((pass + fail) / 2.0)
            }
        }
    }

    pub fn observe(&mut self, rate: f64, pass: bool) {
        self.steps += 1;
        if pass {
            self.highest_pass = Some(self.highest_pass.map_or(rate, |p| p.max(rate)));
            // A pass at or above an earlier failure shows that failure was noise: ramp on.
            if self.lowest_fail.is_some_and(|f| f <= rate) {
                self.lowest_fail = None;
            }
        } else {
            self.lowest_fail = Some(self.lowest_fail.map_or(rate, |f| f.min(rate)));
            // A failure at or below an earlier pass: believe the failure (sizing errs on the
            // side of more pods).
            if self.highest_pass.is_some_and(|p| p >= rate) {
                self.highest_pass = None;
            }
        }
    }

    /// The highest rate that met the SLO, if any did.
    pub fn capacity(&self) -> Option<f64> {
        self.highest_pass
    }
}

/// The search's answer and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityResult {
    pub slo: Slo,
    /// Highest offered rate that met the SLO (req/s); `None` when even the lowest rate failed.
    pub capacity_rps: Option<f64>,
    pub steps: Vec<Step>,
}

impl CapacityResult {
    /// The step that measured `capacity_rps` (the last one at that rate).
    pub fn best(&self) -> Option<&Step> {
        let capacity = self.capacity_rps?;
        self.steps
            .iter()
            .rev()
            .find(|s| s.pass && s.rate == capacity)
    }
}

/// Runs the search, calling `measure(rate)` for each step (the real one drives load; tests pass
/// a simulated latency curve).
pub async fn find_capacity<F, Fut, E>(
    config: SearchConfig,
    slo: Slo,
    mut measure: F,
) -> Result<CapacityResult, E>
where
    F: FnMut(f64) -> Fut,
    Fut: Future<Output = Result<Measured, E>>,
{
    let mut search = Search::new(config);
    let mut steps = Vec::new();
    while let Some(rate) = search.next_rate() {
        let measured = measure(rate).await?;
        let breach = breach(&slo, rate, &measured);
        let pass = breach.is_none();
        tracing::debug!(
            rate,
            p99_ms = measured.p99_ms,
            error_rate = measured.error_rate,
            pass,
            "capacity step"
        );
        search.observe(rate, pass);
        steps.push(Step {
            rate,
            measured,
            pass,
            breach,
        });
    }
    Ok(CapacityResult {
        slo,
        capacity_rps: search.capacity(),
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLO: Slo = Slo {
        p99_ms: 20,
        max_error_rate: 0.01,
    };

    /// A server that saturates at `cap` req/s: p99 grows like an M/M/1 queue's waiting time.
    fn queueing_server(cap: f64) -> impl FnMut(f64) -> std::future::Ready<Result<Measured, ()>> {
        move |rate| {
            let load = rate / cap;
            let p99_ms = if load < 1.0 {
                2.0 / (1.0 - load)
            } else {
                10_000.0
            };
            std::future::ready(Ok(Measured {
                achieved_rps: rate.min(cap),
                p99_ms,
                error_rate: 0.0,
            }))
        }
    }

    fn run(
        config: SearchConfig,
        measure: impl FnMut(f64) -> std::future::Ready<Result<Measured, ()>>,
    ) -> CapacityResult {
        futures::executor::block_on(find_capacity(config, SLO, measure)).unwrap()
    }

    #[test]
    fn finds_the_knee_of_a_queueing_curve_from_below() {
        // p99 = 2 / (1 - r/1000) meets 20 ms up to r = 900 exactly.
        let result = run(
            SearchConfig {
                start_rate: 50.0,
                ..Default::default()
            },
            queueing_server(1000.0),
        );
        let capacity = result.capacity_rps.unwrap();
        assert!(capacity <= 900.0, "capacity {capacity} is above the knee");
        assert!(
            capacity >= 900.0 / 1.05,
            "capacity {capacity} is not within 5% of the knee"
        );
        assert!(result.steps.len() <= 20);
        // The ramp doubles first, and the best step is reported with its measurements.
        let rates: Vec<f64> = result.steps.iter().take(5).map(|s| s.rate).collect();
        assert_eq!(rates, vec![50.0, 100.0, 200.0, 400.0, 800.0]);
        let best = result.best().unwrap();
        assert!(best.pass && best.rate == capacity && best.measured.p99_ms <= 20.0);
        // Away from the knee itself (where floating point decides), every verdict is right.
        let off_knee = result
            .steps
            .iter()
            .filter(|s| (s.rate - 900.0).abs() > 1e-6);
        assert!(
            off_knee.clone().all(|s| s.pass == (s.rate < 900.0)),
            "{:?}",
            result.steps
        );
    }

    #[test]
    fn searches_down_when_the_start_rate_already_fails() {
        let result = run(
            SearchConfig {
                start_rate: 5000.0,
                ..Default::default()
            },
            queueing_server(300.0),
        );
        let capacity = result.capacity_rps.unwrap();
        assert!(
            (270.0 / 1.05..=270.0).contains(&capacity),
            "capacity {capacity}"
        );
    }

    #[test]
    fn errors_break_the_slo_like_latency_does() {
        // Fast, but above 400 req/s one request in ten fails.
        let flaky = |rate: f64| {
            let error_rate = if rate > 400.0 { 0.1 } else { 0.0 };
            std::future::ready(Ok(Measured {
                achieved_rps: rate,
                p99_ms: 1.0,
                error_rate,
            }))
        };
        let result = run(SearchConfig::default(), flaky);
        let capacity = result.capacity_rps.unwrap();
        assert!(
            (400.0 / 1.05..=400.0).contains(&capacity),
            "capacity {capacity}"
        );
        let failed = result.steps.iter().find(|s| !s.pass).unwrap();
        assert!(
            failed.breach.as_deref().unwrap().starts_with("error rate"),
            "{failed:?}"
        );
    }

    #[test]
    fn a_target_that_never_meets_the_slo_has_no_capacity() {
        let hopeless = |_rate: f64| {
            std::future::ready(Ok(Measured {
                achieved_rps: 0.0,
                p99_ms: 500.0,
                error_rate: 1.0,
            }))
        };
        let result = run(
            SearchConfig {
                start_rate: 64.0,
                min_rate: 1.0,
                ..Default::default()
            },
            hopeless,
        );
        assert_eq!(result.capacity_rps, None);
        assert!(result.best().is_none());
        // 64, 32, 16, 8, 4, 2, 1: halving down to the floor, then it gives up.
        assert_eq!(result.steps.len(), 7);
    }

    #[test]
    fn the_ramp_stops_at_the_max_rate() {
        let result = run(
            SearchConfig {
                start_rate: 100.0,
                max_rate: 1000.0,
                ..Default::default()
            },
            queueing_server(1e9),
        );
        assert_eq!(result.capacity_rps, Some(1000.0));
        assert_eq!(result.steps.last().unwrap().rate, 1000.0);
    }

    #[test]
    fn unserved_load_or_missed_sends_fail_a_step() {
        let m = Measured {
            achieved_rps: 500.0,
            p99_ms: 1.0,
            error_rate: 0.0,
        };
        assert_eq!(breach(&SLO, 500.0, &m), None);
        assert!(breach(&SLO, 1000.0, &m).unwrap().starts_with("served"));
        let slow = Measured { p99_ms: 20.5, ..m };
        assert!(breach(&SLO, 500.0, &slow).unwrap().starts_with("p99"));
    }
}
