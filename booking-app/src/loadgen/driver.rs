//! The two ways to offer load. Closed loop: `concurrency` workers, each sending its next request
//! when the previous one answers. Open loop: requests are due at a fixed rate and latency counts
//! from when each was *due*, so a slow server cannot hide its queueing (coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use super::client::{Answer, ApiClient, booking_body};
use super::conn::{Booker, Endpoint};
use super::invariants::{Attempt, Ledger};
use super::report::{LoadShape, Recorder};

/// Which users book how many tickets: a pure function of the seed and the request's index, so a
/// run is reproducible whatever order its requests happen to leave in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub users: u32,
    pub max_quantity: i32,
    pub seed: u64,
}

impl Workload {
    pub fn attempt(&self, index: u64) -> Attempt {
        let a = splitmix64(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let b = splitmix64(a);
        Attempt {
            index,
            user: (a % u64::from(self.users.max(1))) as u32,
            quantity: 1 + (b % self.max_quantity.max(1) as u64) as i32,
        }
    }
}

pub use super::tokens::user_id;

/// SplitMix64: a tiny, well-mixed, seedable hash (Steele et al.), enough for load shapes.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Open loop: when request `index` is due, counted from the start of the run.
pub fn intended_offset(index: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(index as f64 / rate)
}

/// Open loop: how many requests are due `elapsed` after the start (request 0 is due at once).
pub fn due_by(elapsed: Duration, rate: f64) -> u64 {
    (elapsed.as_secs_f64() * rate).floor() as u64 + 1
}

/// Live counters, read by the progress line while the workers run.
#[derive(Debug, Default)]
pub struct Counters {
    pub done: AtomicU64,
    pub confirmed: AtomicU64,
    pub pending: AtomicU64,
    pub refused: AtomicU64,
    pub errors: AtomicU64,
    pub in_flight: AtomicU64,
}

impl Counters {
    fn count(&self, answer: &Answer) {
        let counter = match answer {
            Answer::Confirmed => &self.confirmed,
            Answer::Pending(_) => &self.pending,
            Answer::Refused(_) => &self.refused,
            Answer::Shed | Answer::Unexpected(_) | Answer::Failed(_) => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// One run: its shape and its phases.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub shape: LoadShape,
    pub warmup: Duration,
    pub duration: Duration,
}

/// Where and how the requests go.
#[derive(Clone)]
pub struct Target {
    pub client: ApiClient,
    pub bookings_url: reqwest::Url,
    /// Set for plain `http`: each worker books on a connection of its own (`conn`).
    pub endpoint: Option<Arc<Endpoint>>,
    pub request_timeout: Duration,
    pub workload: Workload,
    /// Prefix of every idempotency key of this run (`None`: send no key).
    pub key_prefix: Option<Arc<str>>,
}

/// What the workers saw.
pub struct RunOutput {
    /// Measured window only (warm-up excluded).
    pub recorder: Recorder,
    /// Every attempt, warm-up included.
    pub ledger: Ledger,
    /// From the end of warm-up to the last measured answer (at least the planned duration).
    pub window: Duration,
    pub missed_sends: u64,
    /// When the first 202 came back (stage kafka), the start of the drain-rate clock.
    pub first_pending_at: Option<Instant>,
}

/// Recorders the workers share, each worker always the same one. An HDR histogram of this range
/// is ~160 KB: one (two, with the admitted answers) per worker was 80 MB at 256 workers, and
/// recording into it cache misses showed as loadgen's hottest function. A shard is locked only
/// to record (no await inside), so the lock is nearly always free.
const RECORDER_SHARDS: usize = 8;

struct Shared {
    target: Target,
    counters: Arc<Counters>,
    measure_from: Instant,
    recorders: Vec<std::sync::Mutex<Recorder>>,
}

impl Shared {
    /// A worker's own way to book (its connection, opened at its first request).
    fn booker(&self) -> Booker {
        let t = &self.target;
        Booker::new(
            &t.client,
            &t.bookings_url,
            t.endpoint.as_ref(),
            t.request_timeout,
        )
    }
}

struct WorkerOutput {
    /// Index of this worker's recorder in `Shared::recorders`.
    shard: usize,
    ledger: Ledger,
    last_measured: Option<Instant>,
    first_pending_at: Option<Instant>,
}

/// Runs the plan to its end and returns what the workers saw.
pub async fn drive(target: Target, plan: Plan, counters: Arc<Counters>) -> RunOutput {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let recorders = (0..RECORDER_SHARDS)
        .map(|_| std::sync::Mutex::new(Recorder::new()))
        .collect();
    let shared = Arc::new(Shared {
        target,
        counters,
        measure_from,
        recorders,
    });

    let (outputs, missed_sends) = match plan.shape {
        LoadShape::Closed { concurrency } => {
            let next = Arc::new(AtomicU64::new(0));
            let workers = (0..concurrency.max(1)).map(|worker| {
                let shared = shared.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    let mut out = WorkerOutput::new(worker);
                    let mut booker = shared.booker();
                    while Instant::now() < end {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        out.attempt(&shared, &mut booker, index, Instant::now())
                            .await;
                    }
                    out
                })
            });
            (join_all(workers.collect()).await, 0)
        }
        LoadShape::Open {
            rate,
            max_in_flight,
        } => {
            let (tx, rx) = mpsc::channel::<(u64, Instant)>(max_in_flight.max(1));
            let rx = Arc::new(Mutex::new(rx));
            let workers = (0..max_in_flight.max(1)).map(|worker| {
                let shared = shared.clone();
                let rx = rx.clone();
                tokio::spawn(async move {
                    let mut out = WorkerOutput::new(worker);
                    let mut booker = shared.booker();
                    loop {
                        // The lock makes one receiver shared by every worker (a MPMC queue).
                        let job = rx.lock().await.recv().await;
                        let Some((index, intended)) = job else { break };
                        out.attempt(&shared, &mut booker, index, intended).await;
                    }
                    out
                })
            });
            let workers: Vec<_> = workers.collect();
            // Requests due in the window but still unsent this long after it ends are given up
            // on and reported as missed: the offered rate was not offered.
            let give_up = end + plan.duration.min(Duration::from_secs(10));
            let missed = dispatch(tx, start, end, give_up, rate).await;
            (join_all(workers).await, missed)
        }
    };

    let mut recorder = Recorder::new();
    for shard in &shared.recorders {
        recorder.merge(&shard.lock().expect("no panics while recording"));
    }
    let mut ledger = Ledger::default();
    let mut last = end;
    let mut first_pending_at: Option<Instant> = None;
    for out in outputs {
        ledger.merge(out.ledger);
        if let Some(t) = out.last_measured {
            last = last.max(t);
        }
        if let Some(t) = out.first_pending_at {
            first_pending_at = Some(first_pending_at.map_or(t, |f| f.min(t)));
        }
    }
    let window = last.saturating_duration_since(measure_from);
    RunOutput {
        recorder,
        ledger,
        window,
        missed_sends,
        first_pending_at,
    }
}

/// Feeds the workers request indices at their due times; returns how many due sends never left.
async fn dispatch(
    tx: mpsc::Sender<(u64, Instant)>,
    start: Instant,
    end: Instant,
    give_up: Instant,
    rate: f64,
) -> u64 {
    let total = due_by(end.saturating_duration_since(start), rate);
    let mut next = 0u64;
    while next < total {
        let now = Instant::now();
        if now >= give_up {
            break;
        }
        let due = due_by(now.saturating_duration_since(start), rate).min(total);
        while next < due {
            let intended = start + intended_offset(next, rate);
            // Blocks while every worker is busy and the queue is full: the intended time stays
            // what it was, so the wait shows up in the latency.
            if tx.send((next, intended)).await.is_err() {
                return total - next;
            }
            next += 1;
            if Instant::now() >= give_up {
                return total - next;
            }
        }
        if next < total {
            tokio::time::sleep_until(start + intended_offset(next, rate)).await;
        }
    }
    total - next
}

async fn join_all(handles: Vec<tokio::task::JoinHandle<WorkerOutput>>) -> Vec<WorkerOutput> {
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(out) => outputs.push(out),
            // A worker only panics on a bug; its numbers are lost, the others still count.
            Err(err) => tracing::error!(error = %err, "loadgen worker failed"),
        }
    }
    outputs
}

impl WorkerOutput {
    fn new(worker: usize) -> Self {
        Self {
            shard: worker % RECORDER_SHARDS,
            ledger: Ledger::default(),
            last_measured: None,
            first_pending_at: None,
        }
    }

    async fn attempt(
        &mut self,
        shared: &Shared,
        booker: &mut Booker,
        index: u64,
        intended: Instant,
    ) {
        let target = &shared.target;
        let attempt = target.workload.attempt(index);
        let body = booking_body(user_id(attempt.user), attempt.quantity);
        let key = target
            .key_prefix
            .as_ref()
            .map(|prefix| idempotency_key(prefix, index));
        shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let bearer = target.client.bearer(attempt.user);
        let answer = booker.book(&body, key.as_deref(), bearer.as_deref()).await;
        let done = Instant::now();
        shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        shared.counters.count(&answer);
        if matches!(answer, Answer::Pending(_)) && self.first_pending_at.is_none() {
            self.first_pending_at = Some(done);
        }
        if intended >= shared.measure_from {
            let mut recorder = shared.recorders[self.shard]
                .lock()
                .expect("no panics while recording");
            recorder.record(done.saturating_duration_since(intended), &answer);
            self.last_measured = Some(done);
        }
        self.ledger.note(attempt, &answer);
    }
}

/// The idempotency key of request `index` of a run.
pub fn idempotency_key(prefix: &str, index: u64) -> String {
    format!("{prefix}-{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spaces_requests_evenly() {
        assert_eq!(intended_offset(0, 100.0), Duration::ZERO);
        assert_eq!(intended_offset(250, 100.0), Duration::from_millis(2500));
        assert_eq!(due_by(Duration::ZERO, 100.0), 1);
        assert_eq!(due_by(Duration::from_millis(9), 100.0), 1);
        assert_eq!(due_by(Duration::from_millis(10), 100.0), 2);
        assert_eq!(due_by(Duration::from_secs(2), 100.0), 201);
        // Every request counted as due by t is scheduled no later than t.
        for ms in [0u64, 1, 7, 33, 999, 1000, 12_345] {
            let t = Duration::from_millis(ms);
            let due = due_by(t, 37.5);
            assert!(intended_offset(due - 1, 37.5) <= t);
            assert!(intended_offset(due, 37.5) > t);
        }
    }

    #[test]
    fn the_workload_is_a_pure_function_of_seed_and_index() {
        let w = Workload {
            users: 50,
            max_quantity: 4,
            seed: 42,
        };
        let first: Vec<_> = (0..1000).map(|i| w.attempt(i)).collect();
        let again: Vec<_> = (0..1000).map(|i| w.attempt(i)).collect();
        assert_eq!(first, again);
        let other_seed = Workload { seed: 43, ..w };
        assert_ne!(
            first,
            (0..1000).map(|i| other_seed.attempt(i)).collect::<Vec<_>>()
        );
        assert!(
            first
                .iter()
                .all(|a| a.user < 50 && (1..=4).contains(&a.quantity))
        );
        // All users and quantities show up: the spread is not degenerate.
        let users: std::collections::HashSet<_> = first.iter().map(|a| a.user).collect();
        let quantities: std::collections::HashSet<_> = first.iter().map(|a| a.quantity).collect();
        assert_eq!(users.len(), 50);
        assert_eq!(quantities.len(), 4);
    }

    #[test]
    fn keys_are_unique_per_index() {
        assert_eq!(idempotency_key("run7", 3), "run7-3");
        assert_ne!(idempotency_key("run7", 3), idempotency_key("run7", 30));
    }
}
