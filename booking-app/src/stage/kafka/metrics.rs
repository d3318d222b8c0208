//! Stage kafka's series on `/metrics`: the consumer group's lag and decision rate (exported by API
//! pods and standalone workers alike: any pod can read the group's offsets) and the worker's
//! decisions by outcome.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use super::client::undecided;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// confirmed | sold_out | per_user_limit | duplicate | malformed | invalid | unknown_event
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `worker::kafka_consumer::dead_letter`'s reasons (malformed, invalid_quantity, ...)
    pub reason: &'static str,
}

/// The workers' consumer group as seen from its committed offsets.
#[derive(Debug, Clone)]
pub struct GroupMetrics {
    lag: Family<PartitionLabels, Gauge>,
    lag_total: Gauge,
    rate: Gauge<f64, AtomicU64>,
    last: Arc<std::sync::Mutex<Option<(Instant, i64)>>>,
}

impl GroupMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            lag: Family::default(),
            lag_total: Gauge::default(),
            rate: Gauge::default(),
            last: Arc::default(),
        };
        metrics.register(
            "kafka_consumer_lag",
            "Records of the partition (each the booking requests one API pod accepted together) not yet decided by the worker group",
            this.lag.clone(),
        );
        metrics.register(
            "kafka_consumer_lag_total",
            "Records of the topic (each the booking requests one API pod accepted together) not yet decided by the worker group",
            this.lag_total.clone(),
        );
        metrics.register(
            "kafka_decision_rate",
            "Records per second the worker group decided (committed offsets) over the last interval",
            this.rate.clone(),
        );
        this
    }

    /// Updates the series from the group's committed offsets and the partitions' watermarks.
    pub fn observe(&self, committed: &[Option<i64>], marks: &[(i64, i64)]) {
        let mut total = 0;
        for (p, (c, (low, high))) in committed.iter().zip(marks).enumerate() {
            let lag = undecided(*c, *low, *high);
            total += lag;
            self.lag
                .get_or_create(&PartitionLabels {
                    partition: p as i32,
                })
                .set(lag);
        }
        self.lag_total.set(total);
        let decided: i64 = committed
            .iter()
            .zip(marks)
            .map(|(c, (low, _))| c.unwrap_or(*low).max(*low))
            .sum();
        let now = Instant::now();
        let mut last = self.last.lock().expect("metrics lock poisoned");
        if let Some((at, before)) = *last {
            let seconds = now.duration_since(at).as_secs_f64();
            if seconds > 0.0 {
                self.rate.set((decided - before).max(0) as f64 / seconds);
            }
        }
        *last = Some((now, decided));
    }
}

/// What a worker decided and how long its batches took.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    decisions: Family<OutcomeLabels, Counter>,
    dead_letters: Family<ReasonLabels, Counter>,
    batch_seconds: Histogram,
    commit_failures: Counter,
}

impl WorkerMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            decisions: Family::default(),
            dead_letters: Family::default(),
            // 1 ms .. ~16 s: a batch is one transaction of up to a few thousand requests.
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            commit_failures: Counter::default(),
        };
        metrics.register(
            "kafka_commit_failures",
            "Offset commits after a decided batch that failed (retried; API pods show pending until one succeeds)",
            this.commit_failures.clone(),
        );
        metrics.register(
            "kafka_decisions",
            "Booking requests decided by this worker, by outcome (duplicate: redelivered, changed nothing)",
            this.decisions.clone(),
        );
        metrics.register(
            "kafka_dead_letters",
            "Records this worker did not decide and copied to the dead-letter topic, by reason",
            this.dead_letters.clone(),
        );
        metrics.register(
            "kafka_batch_duration_seconds",
            "Time from a batch's first record to its offset commit",
            this.batch_seconds.clone(),
        );
        this
    }

    pub fn decided(&self, outcome: &str, n: u64) {
        if n > 0 {
            self.decisions
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.to_owned(),
                })
                .inc_by(n);
        }
    }

    pub fn decided_count(&self, outcome: &str) -> u64 {
        self.decisions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .get()
    }

    pub fn dead_lettered(&self, reason: &'static str) {
        self.dead_letters
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn commit_failed(&self) {
        self.commit_failures.inc();
    }

    pub fn batch_took(&self, seconds: f64) {
        self.batch_seconds.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_and_rate_from_offsets() {
        let metrics = Metrics::new();
        let group = GroupMetrics::register(&metrics);
        group.observe(&[Some(10), None], &[(0, 30), (0, 5)]);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"booking_kafka_consumer_lag{partition="0"} 20"#),
            "{text}"
        );
        assert!(
            text.contains(r#"booking_kafka_consumer_lag{partition="1"} 5"#),
            "{text}"
        );
        assert!(
            text.contains("booking_kafka_consumer_lag_total 25"),
            "{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        group.observe(&[Some(30), Some(5)], &[(0, 30), (0, 5)]);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("booking_kafka_consumer_lag_total 0"),
            "{text}"
        );
        let rate: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("booking_kafka_decision_rate "))
            .expect("rate exported")
            .parse()
            .unwrap();
        assert!(rate > 0.0, "25 decisions in a few ms: {rate}");
    }

    #[test]
    fn decisions_by_outcome() {
        let metrics = Metrics::new();
        let worker = WorkerMetrics::register(&metrics);
        worker.decided("confirmed", 3);
        worker.decided("duplicate", 0);
        worker.batch_took(0.01);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"booking_kafka_decisions_total{outcome="confirmed"} 3"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"outcome="duplicate""#),
            "zero counts are not created: {text}"
        );
        assert_eq!(worker.decided_count("confirmed"), 3);
    }
}
