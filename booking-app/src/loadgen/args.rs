//! `booking-app loadgen` flags, with the defaults and constraints documented where they are set.
//! Those the operator's calibration Job passes are named by the contract crate (`flag::*`).

use std::path::PathBuf;
use std::time::Duration;

use flashsale_contract::flag;
use uuid::Uuid;

/// Drive a flash sale against a running booking-app and measure it.
///
/// Closed loop (default): `--concurrency` workers book back to back. Open loop (`--rate`):
/// requests are due at a fixed rate and latency counts from when each was due, with at most
/// `--concurrency` in flight. `--find-capacity` searches the highest rate within the SLO.
/// After the run the sale's invariants are checked through the API; exit codes: 0 ok,
/// 1 error, 2 invariants violated, 3 no rate met the SLO.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Signs a token per simulated user (AUTH_HS256_SECRET_FILE, AUTH_ISSUER, AUTH_AUDIENCE);
    /// without a secret no token is sent (a service with AUTH_DISABLED).
    #[command(flatten)]
    pub auth: crate::auth::AuthConfig,
    /// booking-app base URL (plain HTTP: loopback or in-cluster).
    #[arg(long = flag::URL, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Book against this existing event instead of creating one. The invariant check then
    /// assumes loadgen is the only client booking it during the run.
    #[arg(long)]
    pub event_id: Option<Uuid>,
    /// Tickets of the event loadgen creates [default: 10000; with --find-capacity the largest
    /// event the API accepts, so every step measures booking work rather than sold-out answers].
    #[arg(long, conflicts_with = "event_id")]
    pub tickets: Option<i64>,
    /// Per-user limit of the event loadgen creates (unlimited when absent).
    #[arg(long, conflicts_with = "event_id")]
    pub per_user_limit: Option<i32>,
    /// Distinct users the requests are spread over (`user-0` … `user-N-1`).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub users: u32,
    /// Each request asks for 1..=N tickets.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=i64::from(crate::domain::MAX_QUANTITY)))]
    pub max_quantity: i32,
    /// Closed loop: workers. Open loop: most requests in flight (and connections).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
    /// Open loop at this arrival rate (req/s). With --find-capacity: the first rate tried.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured time (per step with --find-capacity), e.g. `30s`, `1500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse_duration)]
    pub duration: Duration,
    /// Load before measuring (connections, caches, JIT of the stores); not in the report.
    #[arg(long, default_value = "2s", value_parser = crate::duration::parse_duration)]
    pub warmup: Duration,
    /// Print one JSON document on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Seed of the user/quantity sequence: the same seed makes the same requests.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Search the highest open-loop rate that meets --slo-p99-ms and --max-error-rate.
    #[arg(long = flag::FIND_CAPACITY)]
    pub find_capacity: bool,
    /// SLO on the p99 latency, in milliseconds (with --find-capacity).
    #[arg(long = flag::SLO_P99_MS, default_value_t = 100)]
    pub slo_p99_ms: u64,
    /// SLO on the share of requests that fail (5xx, timeouts, unsent) (with --find-capacity).
    #[arg(long, default_value_t = 0.01)]
    pub max_error_rate: f64,
    /// Highest rate --find-capacity tries.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// Write the calibration result here as compact JSON (a Kubernetes termination message).
    #[arg(long = flag::TERMINATION_MESSAGE_PATH, requires = "find_capacity")]
    pub termination_message_path: Option<PathBuf>,
    /// After the run, pending (202) bookings are followed until decided; give up (and report
    /// them unresolved) once none has been decided for this long. A backlog that drains slowly
    /// is waited for; one that stalls is not.
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse_duration)]
    pub pending_timeout: Duration,
    /// Per-request timeout; a timed-out request counts as an error.
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse_duration)]
    pub request_timeout: Duration,
    /// Skip the invariant check (e.g. against a bare endpoint that books nothing).
    #[arg(long)]
    pub no_invariants: bool,
    /// Send no Idempotency-Key; unanswered attempts then widen the invariant's accepted range.
    #[arg(long)]
    pub no_idempotency_keys: bool,
    /// No live progress line.
    #[arg(long = flag::NO_PROGRESS)]
    pub no_progress: bool,
}

impl LoadgenArgs {
    /// Checks the combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(format!("--rate must be a positive number, not {rate}"));
        }
        if self.duration.is_zero() {
            return Err("--duration must be above zero".into());
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return Err("--max-error-rate is a share between 0 and 1".into());
        }
        if let Some(tickets) = self.tickets
            && !(1..=crate::domain::MAX_TICKETS).contains(&tickets)
        {
            return Err(format!(
                "--tickets must be between 1 and {}",
                crate::domain::MAX_TICKETS
            ));
        }
        if self.per_user_limit.is_some_and(|l| l < 1) {
            return Err("--per-user-limit must be at least 1".into());
        }
        if !(self.max_rate.is_finite() && self.max_rate >= 1.0) {
            return Err("--max-rate must be at least 1".into());
        }
        Ok(())
    }
}
