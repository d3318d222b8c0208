//! What the operator and booking-app must agree on, written once: the stages, the names of the
//! settings the operator writes into pods (`env`), the subcommands and flags it runs
//! (`CMD_*`, `flag`), ports and probe paths, the request counter its load observer scrapes, and
//! the calibration result loadgen writes and the operator reads. booking-app declares its
//! settings from these constants and the operator builds pods from them, so a rename is one edit
//! and a drift a compile error. Derives each side needs are features (`schemars`, `clap`,
//! `utoipa`).

mod calibration;
pub mod env;
pub mod flag;
mod stage;

pub use calibration::CalibrationResult;
pub use stage::Stage;

/// Subcommands of the `booking-app` binary the operator runs.
pub const CMD_SERVE: &str = "serve";
pub const CMD_WORKER: &str = "worker";
/// `booking-app loadgen --find-capacity`: the calibration Job.
pub const CMD_LOADGEN: &str = "loadgen";

/// The API port of a booking-app pod (API and probes; `LISTEN_ADDR`'s default port).
pub const HTTP_PORT: u16 = 8080;
pub const HTTP_PORT_NAME: &str = "http";
/// The metrics port the operator gives booking-app pods (`METRICS_LISTEN_ADDR`).
pub const METRICS_PORT: u16 = 9090;
pub const METRICS_PORT_NAME: &str = "metrics";
/// Liveness: the process answers.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness: its stores answer.
pub const READYZ_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";

/// Prefix of every series booking-app exports.
pub const METRICS_PREFIX: &str = "booking";
/// The HTTP request counter as booking-app registers it (under `METRICS_PREFIX`; a counter is
/// exposed with `_total`).
pub const HTTP_REQUESTS: &str = "http_requests";
/// That counter as the operator's load observer finds it in the exposition.
pub const REQUEST_COUNTER: &str = "booking_http_requests_total";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scraped_counter_is_the_registered_one() {
        assert_eq!(
            REQUEST_COUNTER,
            format!("{METRICS_PREFIX}_{HTTP_REQUESTS}_total")
        );
    }
}
