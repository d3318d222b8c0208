//! loadgen: the instrument that drives a flash sale against a booking-app URL, reports
//! throughput and latency, finds the highest rate within an SLO (the operator's per-pod
//! calibration), and checks afterwards through the API that nothing was oversold or lost.

pub mod args;
pub mod bare;
pub mod capacity;
pub mod client;
pub mod conn;
pub mod driver;
pub mod invariants;
pub mod progress;
pub mod report;
pub mod settle;
pub mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use flashsale_contract::CalibrationResult;
use serde::Serialize;
use uuid::Uuid;

pub use args::LoadgenArgs;
use capacity::{CapacityResult, Measured, SearchConfig, Slo};
use client::{ApiClient, ClientError, EventView};
use driver::{Counters, Plan, Target, Workload};
use invariants::InvariantReport;
use progress::Progress;
use report::{LoadShape, Report};
use settle::{Baseline, SettleOptions};

use crate::domain::{MAX_TICKETS, NewEvent};

/// Exit code when an invariant does not hold.
pub const EXIT_INVARIANTS_VIOLATED: u8 = 2;
/// Exit code when `--find-capacity` found no rate that meets the SLO.
pub const EXIT_NO_CAPACITY: u8 = 3;
/// Tickets of the event a plain run creates when `--tickets` is not given: a sale that sells out.
const DEFAULT_SALE_TICKETS: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("invalid arguments: {0}")]
    Invalid(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The run finished and was reported, but the sale broke an invariant.
    #[error("the sale's invariants do not hold (see the report above)")]
    InvariantsViolated,
    /// The capacity search finished and was reported, but no rate met the SLO.
    #[error("no rate met the SLO")]
    NoCapacity,
}

impl LoadgenError {
    /// The process exit code for this error (documented in `booking-app loadgen --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadgenError::InvariantsViolated => EXIT_INVARIANTS_VIOLATED,
            LoadgenError::NoCapacity => EXIT_NO_CAPACITY,
            _ => 1,
        }
    }
}

/// The exit code for an error `run` returned: loadgen's own codes survive `anyhow`.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(
        err.downcast_ref::<LoadgenError>()
            .map_or(1, LoadgenError::exit_code),
    )
}

impl CapacityResult {
    /// The calibration Job's answer to the operator (written to `--termination-message-path`):
    /// this search's result, and the drain rates its runs measured (one per run, if any).
    pub fn calibration(&self, drain_rates: impl IntoIterator<Item = f64>) -> CalibrationResult {
        // With no passing step, report the lowest rate tried so the operator can say why.
        let step = self
            .best()
            .or_else(|| self.steps.iter().min_by(|a, b| a.rate.total_cmp(&b.rate)));
        CalibrationResult {
            per_pod_rps: self.capacity_rps.unwrap_or(0.0),
            slo_p99_ms: self.slo.p99_ms,
            p99_ms: step.map_or(0.0, |s| s.measured.p99_ms),
            error_rate: step.map_or(0.0, |s| s.measured.error_rate),
            drain_rps: drain_rates
                .into_iter()
                .filter(|r| r.is_finite() && *r > 0.0)
                .reduce(f64::max),
        }
    }
}

/// One measured run and, unless disabled, its invariant check.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub event_id: Uuid,
    pub report: Report,
    pub invariants: Option<InvariantReport>,
}

impl RunResult {
    pub fn violated(&self) -> bool {
        self.invariants.as_ref().is_some_and(|i| !i.ok)
    }
}

/// A capacity search, the calibration result derived from it, and every step's run.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityRun {
    pub capacity: CapacityResult,
    pub calibration: CalibrationResult,
    pub runs: Vec<RunResult>,
}

/// Runs `booking-app loadgen` to completion and prints its results. A violated invariant or a
/// capacity search with no answer is an error after the report is printed (see `exit_code`).
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let session = Session::new(args)?;
    let a = &session.args;
    if a.find_capacity {
        let found = session.capacity().await?;
        if let Some(path) = &a.termination_message_path {
            let text = serde_json::to_string(&found.calibration)
                .expect("a CalibrationResult always serializes");
            std::fs::write(path, text).map_err(|source| LoadgenError::Write {
                path: path.clone(),
                source,
            })?;
        }
        if a.json {
            println!(
                "{}",
                serde_json::json!({"url": a.url, "seed": a.seed, "result": found})
            );
        } else {
            let slo = found.capacity.slo;
            match found.capacity.capacity_rps {
                Some(rps) => println!(
                    "capacity: {rps:.1} req/s within p99 <= {} ms and error rate <= {} (p99 there {:.2} ms)",
                    slo.p99_ms, slo.max_error_rate, found.calibration.p99_ms
                ),
                None => println!("capacity: no rate met the SLO (p99 <= {} ms)", slo.p99_ms),
            }
            for run in found.runs.iter().filter(|r| r.violated()) {
                if let Some(inv) = &run.invariants {
                    print!("{inv}");
                }
            }
        }
        if found.runs.iter().any(RunResult::violated) {
            return Err(LoadgenError::InvariantsViolated.into());
        }
        if found.capacity.capacity_rps.is_none() {
            return Err(LoadgenError::NoCapacity.into());
        }
    } else {
        let result = session.sale().await?;
        if a.json {
            println!(
                "{}",
                serde_json::json!({"url": a.url, "seed": a.seed, "run": result})
            );
        } else {
            print!("{}", result.report);
            if let Some(inv) = &result.invariants {
                print!("{inv}");
            }
        }
        if result.violated() {
            return Err(LoadgenError::InvariantsViolated.into());
        }
    }
    Ok(())
}

/// loadgen bound to one booking-app: the library entry point (`run` is the CLI around it).
pub struct Session {
    args: LoadgenArgs,
    client: ApiClient,
}

impl Session {
    pub fn new(args: LoadgenArgs) -> Result<Self, LoadgenError> {
        args.validate().map_err(LoadgenError::Invalid)?;
        let tokens = crate::auth::Minter::from_config(&args.auth)
            .and_then(|minter| {
                minter
                    .map(|m| tokens::Tokens::new(m, args.users).map(Arc::new))
                    .transpose()
            })
            .map_err(|e| LoadgenError::Invalid(e.to_string()))?;
        let client = ApiClient::new(
            &args.url,
            args.concurrency as usize,
            args.request_timeout,
            tokens,
        )?;
        Ok(Self { args, client })
    }

    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// One sale at `--concurrency` (closed loop) or `--rate` (open loop), then its check.
    pub async fn sale(&self) -> Result<RunResult, LoadgenError> {
        let a = &self.args;
        let shape = match a.rate {
            Some(rate) => LoadShape::Open {
                rate,
                max_in_flight: a.concurrency as usize,
            },
            None => LoadShape::Closed {
                concurrency: a.concurrency as usize,
            },
        };
        let event = self.event("loadgen sale", DEFAULT_SALE_TICKETS).await?;
        if !a.json {
            println!(
                "loadgen: {} event {} ({} tickets, {} remaining, per-user limit {}), seed {}",
                self.client.base_url(),
                event.id,
                event.tickets,
                event.remaining,
                event
                    .per_user_limit
                    .map_or("none".to_string(), |l| l.to_string()),
                a.seed
            );
        }
        self.measure(shape, event, "sale".into()).await
    }

    /// `--find-capacity`: one open-loop run per step; each step's line is printed as it ends.
    pub async fn capacity(&self) -> Result<CapacityRun, LoadgenError> {
        let a = &self.args;
        let slo = Slo {
            p99_ms: a.slo_p99_ms,
            max_error_rate: a.max_error_rate,
        };
        let config = SearchConfig {
            start_rate: a.rate.unwrap_or(SearchConfig::default().start_rate),
            max_rate: a.max_rate,
            ..SearchConfig::default()
        };
        let runs: Mutex<Vec<RunResult>> = Mutex::new(Vec::new());
        let capacity = capacity::find_capacity(config, slo, |rate| {
            let runs = &runs;
            async move {
                let shape = LoadShape::Open { rate, max_in_flight: a.concurrency as usize };
                // A fresh event per step: every step starts from the same state and none sells out.
                let event = self.event(&format!("loadgen capacity {rate:.0}/s"), MAX_TICKETS).await?;
                let run = self.measure(shape, event, format!("{rate:.0}/s")).await?;
                let measured = Measured::from(&run.report);
                if !a.json {
                    println!(
                        "step {:>10.1} req/s: served {:>10.1} req/s, p99 {:>8.2} ms, errors {:.4}{}",
                        rate,
                        measured.achieved_rps,
                        measured.p99_ms,
                        measured.error_rate,
                        if run.violated() { "  INVARIANTS VIOLATED" } else { "" }
                    );
                }
                runs.lock().expect("no panics while holding it").push(run);
                Ok::<_, LoadgenError>(measured)
            }
        })
        .await?;
        let runs = runs.into_inner().expect("no panics while holding it");
        let drain_rates = runs.iter().filter_map(|r| r.invariants.as_ref()?.drain_rps);
        let calibration = capacity.calibration(drain_rates);
        Ok(CapacityRun {
            capacity,
            calibration,
            runs,
        })
    }

    /// The event to book: `--event-id` as it is now, or a new one.
    async fn event(&self, name: &str, default_tickets: i64) -> Result<EventView, LoadgenError> {
        let a = &self.args;
        match a.event_id {
            Some(id) => Ok(self.client.get_event(id).await?),
            None => {
                let new = NewEvent {
                    name: format!("{name} (seed {})", a.seed),
                    tickets: a.tickets.unwrap_or(default_tickets),
                    per_user_limit: a.per_user_limit,
                };
                Ok(self.client.create_event(&new).await?)
            }
        }
    }

    /// Drives one run against `event`, then settles and checks it.
    async fn measure(
        &self,
        shape: LoadShape,
        event: EventView,
        label: String,
    ) -> Result<RunResult, LoadgenError> {
        let a = &self.args;
        // Unique per run, so keys never collide with an earlier run's on the same event.
        let key_prefix: Option<Arc<str>> =
            (!a.no_idempotency_keys).then(|| Arc::from(format!("lg-{}", Uuid::new_v4().simple())));
        let bookings_url = self.client.bookings_url(event.id)?;
        let target = Target {
            client: self.client.clone(),
            endpoint: conn::Endpoint::of(&bookings_url).map(Arc::new),
            request_timeout: a.request_timeout,
            bookings_url,
            workload: Workload {
                users: a.users,
                max_quantity: a.max_quantity,
                seed: a.seed,
            },
            key_prefix: key_prefix.clone(),
        };
        let plan = Plan {
            shape,
            warmup: a.warmup,
            duration: a.duration,
        };
        let counters = Arc::new(Counters::default());
        let progress = Progress::start(counters.clone(), label, a.warmup, !a.no_progress);
        let out = driver::drive(target, plan, counters).await;
        progress.finish();

        let report = Report::new(shape, &out.recorder, out.window, out.missed_sends);
        let invariants = if a.no_invariants {
            None
        } else {
            let baseline = Baseline {
                event: event.clone(),
                first_pending_at: out.first_pending_at,
            };
            let options = SettleOptions {
                pending_timeout: a.pending_timeout,
                concurrency: a.concurrency as usize,
            };
            Some(
                settle::settle(
                    &self.client,
                    &baseline,
                    out.ledger,
                    key_prefix.as_deref(),
                    options,
                )
                .await?,
            )
        };
        Ok(RunResult {
            event_id: event.id,
            report,
            invariants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capacity::Step;

    fn step(rate: f64, p99_ms: f64, pass: bool) -> Step {
        Step {
            rate,
            measured: Measured {
                achieved_rps: rate,
                p99_ms,
                error_rate: 0.0,
            },
            pass,
            breach: None,
        }
    }

    #[test]
    fn the_termination_message_has_the_operators_field_names() {
        let slo = Slo {
            p99_ms: 50,
            max_error_rate: 0.01,
        };
        let result = CapacityResult {
            slo,
            capacity_rps: Some(800.0),
            steps: vec![
                step(400.0, 3.0, true),
                step(800.0, 9.5, true),
                step(1600.0, 900.0, false),
            ],
        };
        let json = serde_json::to_value(result.calibration([])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"perPodRps": 800.0, "sloP99Ms": 50, "p99Ms": 9.5, "errorRate": 0.0})
        );
        // Stage kafka: the fastest drain of any step (a backlog drained flat out).
        let json = serde_json::to_value(result.calibration([390.0, 640.5, 610.0])).unwrap();
        assert_eq!(json["drainRps"], 640.5);
    }

    #[test]
    fn no_capacity_reports_zero_rps_and_the_lowest_step() {
        let result = CapacityResult {
            slo: Slo {
                p99_ms: 5,
                max_error_rate: 0.0,
            },
            capacity_rps: None,
            steps: vec![step(100.0, 80.0, false), step(50.0, 40.0, false)],
        };
        let calibration = result.calibration([f64::NAN, 0.0]);
        assert_eq!(calibration.per_pod_rps, 0.0);
        assert_eq!(calibration.drain_rps, None, "no real drain rate, no field");
        assert_eq!(calibration.p99_ms, 40.0);
    }
}
