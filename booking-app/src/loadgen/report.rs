//! What a run measured: an HDR latency histogram, answers by status, errors and throughput.
//! Each worker fills its own `Recorder` (no lock on the hot path); they are merged at the end
//! into a `Report`, printed as a table for people or as JSON for machines.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::client::Answer;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, with 3 significant digits.
const LATENCY_MAX_US: u64 = 600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// One worker's measurements.
#[derive(Debug, Clone)]
pub struct Recorder {
    latency_us: Histogram<u64>,
    /// Latency of the admitted answers only (201, 202): under load shedding, what a client that
    /// got in waited, apart from the quick 503s.
    admitted_us: Histogram<u64>,
    answers: BTreeMap<String, u64>,
    requests: u64,
    errors: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        let histogram = || {
            Histogram::new_with_bounds(1, LATENCY_MAX_US, SIGNIFICANT_DIGITS)
                .expect("static histogram bounds are valid")
        };
        Self {
            latency_us: histogram(),
            admitted_us: histogram(),
            answers: BTreeMap::new(),
            requests: 0,
            errors: 0,
        }
    }

    /// Records one finished attempt. Failed attempts are timed too: a timeout is a latency.
    pub fn record(&mut self, latency: Duration, answer: &Answer) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(micros);
        if answer.is_admitted() {
            self.admitted_us.saturating_record(micros);
        }
        // Most answers have a fixed label: counted without allocating one per request.
        match answer.static_label() {
            Some(label) => match self.answers.get_mut(label) {
                Some(count) => *count += 1,
                None => {
                    self.answers.insert(label.to_string(), 1);
                }
            },
            None => *self.answers.entry(answer.label()).or_default() += 1,
        }
        self.requests += 1;
        if answer.is_error() {
            self.errors += 1;
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.latency_us
            .add(&other.latency_us)
            .expect("recorders share their bounds");
        self.admitted_us
            .add(&other.admitted_us)
            .expect("recorders share their bounds");
        for (label, count) in &other.answers {
            *self.answers.entry(label.clone()).or_default() += count;
        }
        self.requests += other.requests;
        self.errors += other.errors;
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds; zeros when it is empty.
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// How the load was offered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum LoadShape {
    /// A fixed number of workers, each sending its next request when the previous one answers.
    Closed { concurrency: usize },
    /// A fixed arrival rate; latency counts from each request's intended send time.
    Open { rate: f64, max_in_flight: usize },
}

impl fmt::Display for LoadShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadShape::Closed { concurrency } => write!(f, "closed loop, {concurrency} workers"),
            LoadShape::Open {
                rate,
                max_in_flight,
            } => {
                write!(
                    f,
                    "open loop, {rate:.0} req/s (at most {max_in_flight} in flight)"
                )
            }
        }
    }
}

/// The measured window of a run, ready to print or serialize.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub shape: LoadShape,
    /// Seconds from the end of warm-up to the last answer of the measured window.
    pub duration_s: f64,
    pub requests: u64,
    /// Answers per second, errors included.
    pub throughput_rps: f64,
    pub latency_ms: Latency,
    /// Latency of the admitted answers (201, 202) alone.
    pub admitted_latency_ms: Latency,
    pub answers: BTreeMap<String, u64>,
    pub errors: u64,
    pub error_rate: f64,
    /// Open loop only: sends that were due inside the window but never left (the generator or
    /// its in-flight cap could not keep up). Non-zero means the offered rate was not offered.
    pub missed_sends: u64,
}

impl Report {
    pub fn new(shape: LoadShape, recorder: &Recorder, window: Duration, missed_sends: u64) -> Self {
        let secs = window.as_secs_f64();
        Self {
            shape,
            duration_s: secs,
            requests: recorder.requests,
            throughput_rps: if secs > 0.0 {
                recorder.requests as f64 / secs
            } else {
                0.0
            },
            latency_ms: Latency::of(&recorder.latency_us),
            admitted_latency_ms: Latency::of(&recorder.admitted_us),
            answers: recorder.answers.clone(),
            errors: recorder.errors,
            error_rate: error_rate(recorder.errors, recorder.requests),
            missed_sends,
        }
    }

    /// Offered rate that never left counts against the run like an error would.
    pub fn offered_rate(&self) -> Option<f64> {
        match self.shape {
            LoadShape::Open { rate, .. } => Some(rate),
            LoadShape::Closed { .. } => None,
        }
    }
}

/// Errors over attempts; zero attempts is no evidence of errors.
pub fn error_rate(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        errors as f64 / requests as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_ms;
        writeln!(f, "load        {}", self.shape)?;
        writeln!(
            f,
            "measured    {:.1} s, {} requests",
            self.duration_s, self.requests
        )?;
        writeln!(f, "throughput  {:.1} req/s", self.throughput_rps)?;
        writeln!(
            f,
            "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        )?;
        let a = &self.admitted_latency_ms;
        if a != l {
            writeln!(
                f,
                "admitted ms p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (201/202 only)",
                a.p50, a.p90, a.p99, a.p999, a.max
            )?;
        }
        writeln!(
            f,
            "errors      {} ({:.3}%)",
            self.errors,
            self.error_rate * 100.0
        )?;
        if self.missed_sends > 0 {
            writeln!(
                f,
                "missed      {} sends due in the window never left",
                self.missed_sends
            )?;
        }
        writeln!(f, "answers")?;
        for (label, count) in &self.answers {
            let share = if self.requests > 0 {
                *count as f64 * 100.0 / self.requests as f64
            } else {
                0.0
            };
            writeln!(f, "  {label:<24} {count:>10}  {share:>6.2}%")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::client::Refusal;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_follow_the_recorded_distribution() {
        let mut r = Recorder::new();
        for i in 1..=1000 {
            r.record(ms(i), &Answer::Confirmed);
        }
        let report = Report::new(
            LoadShape::Closed { concurrency: 4 },
            &r,
            Duration::from_secs(10),
            0,
        );
        let l = report.latency_ms;
        // HDR keeps 3 significant digits: each value within 0.1% of the exact one.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(l.p50, 500.0), "p50 {}", l.p50);
        assert!(close(l.p90, 900.0), "p90 {}", l.p90);
        assert!(close(l.p99, 990.0), "p99 {}", l.p99);
        assert!(close(l.p999, 999.0), "p99.9 {}", l.p999);
        assert!(close(l.max, 1000.0), "max {}", l.max);
        assert!(close(l.mean, 500.5), "mean {}", l.mean);
        assert_eq!(report.requests, 1000);
        assert!((report.throughput_rps - 100.0).abs() < 1e-9);
    }

    #[test]
    fn errors_and_answers_are_counted_by_kind_and_merged() {
        let mut a = Recorder::new();
        a.record(ms(1), &Answer::Confirmed);
        a.record(ms(2), &Answer::Refused(Refusal::SoldOut));
        let mut b = Recorder::new();
        b.record(ms(3), &Answer::Failed("timeout"));
        b.record(ms(4), &Answer::Unexpected(503));
        b.record(ms(5), &Answer::Confirmed);
        a.merge(&b);
        let report = Report::new(
            LoadShape::Open {
                rate: 5.0,
                max_in_flight: 8,
            },
            &a,
            Duration::from_secs(1),
            2,
        );
        assert_eq!(report.requests, 5);
        assert_eq!(report.errors, 2);
        assert!((report.error_rate - 0.4).abs() < 1e-12);
        assert_eq!(report.answers["201 confirmed"], 2);
        assert_eq!(report.answers["409 sold_out"], 1);
        assert_eq!(report.answers["503"], 1);
        assert_eq!(report.answers["no answer (timeout)"], 1);
        assert_eq!(report.offered_rate(), Some(5.0));
        // Only the two 201s are admitted: their latencies, not the error's or the refusal's.
        let admitted = report.admitted_latency_ms;
        assert!(
            (admitted.max - 5.0).abs() <= 0.005 && (admitted.p50 - 1.0).abs() <= 0.005,
            "{admitted:?}"
        );
        let table = report.to_string();
        assert!(table.contains("missed      2"), "{table}");
        assert!(table.contains("admitted ms p50 1.00"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["mode"], "open");
        let max = json["latency_ms"]["max"].as_f64().unwrap();
        assert!((max - 5.0).abs() <= 0.005, "max {max}");
    }

    #[test]
    fn an_empty_run_reports_zeros_not_nan() {
        let report = Report::new(
            LoadShape::Closed { concurrency: 1 },
            &Recorder::new(),
            Duration::ZERO,
            0,
        );
        assert_eq!(report.throughput_rps, 0.0);
        assert_eq!(report.error_rate, 0.0);
        assert_eq!(report.latency_ms, Latency::default());
    }
}
